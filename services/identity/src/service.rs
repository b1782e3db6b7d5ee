//! What identity does: sign-up, log-in and sessions, profiles, the staff views, impersonation and
//! the emails it sends. Owns every transaction and outbox write; transports (`grpc`, `events`)
//! authenticate, convert and call in here. No connection is held while a password hashes.

use std::sync::Arc;

use sb_bus::{
    Envelope, enqueue,
    events::{
        EmailRequested, EmailTemplate, MessageAuthor, PaymentFailed, RefundIssued, Requester, SlaBreached, TicketMessageAdded,
        TicketOpened, TicketPrioritised, TicketResolved, UserSignedUp, UserUpdated,
    },
};
use sb_runtime::caller::{Admin, Caller, ReadAccount, ServiceContext, Staff};
use sb_types::TicketQueue;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tracing::info;
use uuid::Uuid;

use crate::{
    config::IdentityConfig,
    domain::{self, Account, AccountId, Email, Grant, Password, Principal, Role, Session, User, UserId, token},
    error::IdentityError,
    password::Hasher,
    store::{self, Audit, AuditRecord},
};

type Result<T> = std::result::Result<T, IdentityError>;

/// Actions other services' admin routes record through [`Identity::record_audit`].
pub const RECORDED_ACTIONS: &[&str] = &["ops.replay", "ops.purge", "billing.refund", "billing.export"];

/// A sign-up, checked against the rules.
#[derive(Debug)]
pub struct SignUp {
    pub email: Email,
    pub password: Password,
    pub name: String,
    /// The customer company (the person's name when none is given).
    pub account_name: String,
}

/// The caller's own records.
#[derive(Debug, Clone)]
pub struct Me {
    pub user: User,
    pub account: Option<Account>,
    pub impersonator: Option<User>,
}

/// Shared by the gRPC service, the bus handlers and the operator command.
#[derive(Clone)]
pub struct Identity {
    pool: PgPool,
    cfg: Arc<IdentityConfig>,
    hasher: Hasher,
}

fn chrono_ttl(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(12))
}

impl Identity {
    pub fn new(pool: PgPool, cfg: IdentityConfig) -> Self {
        Self { pool, cfg: Arc::new(cfg), hasher: Hasher::per_cpu() }
    }

    /// With every `IDENTITY_*` setting at its default (the operator command's and tests' users).
    pub fn with_defaults(pool: PgPool) -> anyhow::Result<Self> {
        let cfg = IdentityConfig::from(&sb_runtime::config::Env::with_lookup(crate::SERVICE, |_| None))?;
        Ok(Self::new(pool, cfg))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the account, its first user, a session, the audit entry and both events
    /// (`identity.user.signed_up.v1`, the welcome `identity.email.requested.v1`) in one
    /// transaction. The email being taken writes nothing.
    pub async fn sign_up(&self, ctx: &ServiceContext, s: SignUp) -> Result<Grant> {
        let hash = self.hasher.hash(&s.password).await?;
        let mut tx = self.pool.begin().await?;
        let account = store::insert_account(&mut tx, &s.account_name).await?;
        let user =
            store::insert_user(&mut tx, account.id, &s.email, &s.name, Role::Customer, &hash).await?.ok_or(IdentityError::EmailTaken)?;
        let session = store::insert_session(&mut tx, user.id, None, chrono_ttl(self.cfg.session_ttl), ctx.client_ip.as_deref()).await?;
        let audit = Audit {
            actor: Some(user.id),
            action: "user.signed_up",
            target: Some(user.id),
            account: Some(account.id),
            client_ip: ctx.client_ip.as_deref(),
            detail: json!({}),
        };
        store::audit(&mut tx, audit).await?;
        let mut signed_up = Envelope::of(&UserSignedUp {
            user_id: user.id,
            account_id: account.id,
            email: user.email.clone(),
            name: user.name.clone(),
            account_name: account.name.clone(),
            role: user.role,
        });
        if let Some(c) = ctx.correlation_id {
            signed_up = signed_up.with_correlation(c);
        }
        let welcome = Envelope::caused_by(
            &signed_up,
            &EmailRequested {
                to: user.email.clone(),
                name: user.name.clone(),
                account_id: Some(account.id),
                user_id: Some(user.id),
                template: EmailTemplate::Welcome { account_name: account.name.clone() },
            },
        );
        enqueue(&mut tx, &signed_up).await?;
        enqueue(&mut tx, &welcome).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        info!(user_id = %user.id, account_id = %account.id, "signed up");
        Ok(Grant { user, session })
    }

    /// Checks an email and password, throttled per email and per client address.
    pub async fn log_in(&self, ctx: &ServiceContext, email: &str, password: String) -> Result<Grant> {
        let Ok(email) = Email::parse(email) else { return Err(IdentityError::WrongCredentials) };
        let email_key = format!("email:{email}");
        let ip_key = ctx.client_ip.as_ref().map(|ip| format!("ip:{ip}"));
        let keys: Vec<String> = std::iter::once(email_key.clone()).chain(ip_key.clone()).collect();
        let candidate = {
            let mut conn = self.pool.acquire().await?;
            if let Some(secs) = store::throttle_blocked(&mut conn, &keys).await? {
                metrics::counter!("identity_login_failures_total", "reason" => "throttled").increment(1);
                return Err(IdentityError::Throttled { retry_after_secs: secs.max(1) as u64 });
            }
            store::login_candidate(&mut conn, &email).await?
            // The connection goes back to the pool before the password is checked.
        };
        let (user, hash) = match candidate {
            Some((u, h)) => (Some(u), Some(h)),
            None => (None, None),
        };
        let ok = self.hasher.verify(password, hash).await;
        let mut conn = self.pool.acquire().await?;
        let Some(user) = user.filter(|_| ok) else {
            metrics::counter!("identity_login_failures_total", "reason" => "bad_credentials").increment(1);
            let window = chrono_ttl(self.cfg.login_window);
            store::throttle_failure(&mut conn, &email_key, self.cfg.login_max_failures, window).await?;
            if let Some(ip_key) = &ip_key {
                store::throttle_failure(&mut conn, ip_key, self.cfg.login_ip_max_failures, window).await?;
            }
            return Err(IdentityError::WrongCredentials);
        };
        store::throttle_reset(&mut conn, &email_key).await?;
        drop(conn);
        let mut tx = self.pool.begin().await?;
        let session = store::insert_session(&mut tx, user.id, None, chrono_ttl(self.cfg.session_ttl), ctx.client_ip.as_deref()).await?;
        let audit = Audit {
            actor: Some(user.id),
            action: "session.created",
            target: Some(user.id),
            account: Some(user.account_id),
            client_ip: ctx.client_ip.as_deref(),
            detail: json!({}),
        };
        store::audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Grant { user, session })
    }

    /// The live session a token names (`None`: unknown, expired, revoked or malformed).
    pub async fn authenticate(&self, token: &str) -> Result<Option<Session>> {
        if !token::well_formed(token) {
            return Ok(None);
        }
        let mut conn = self.pool.acquire().await?;
        Ok(store::session_by_token(&mut conn, token).await?)
    }

    pub async fn log_out(&self, session: &Session) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        store::revoke_session(&mut conn, session.id).await?;
        Ok(())
    }

    /// The caller's user, account and impersonator.
    pub async fn me(&self, p: &Principal) -> Result<Me> {
        let mut conn = self.pool.acquire().await?;
        let user = store::user(&mut conn, p.user_id).await?.ok_or(IdentityError::SessionInvalid)?;
        let account = store::account(&mut conn, p.account_id).await?;
        let impersonator = match p.impersonator {
            Some(id) => store::user(&mut conn, id).await?,
            None => None,
        };
        Ok(Me { user, account, impersonator })
    }

    /// Renames the caller (the only field a user may change) and announces it.
    pub async fn update_profile(&self, p: &Principal, name: Option<String>) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let Some(name) = name else {
            return store::user(&mut tx, p.user_id).await?.ok_or(IdentityError::SessionInvalid);
        };
        let name = domain::parse_name("name", &name)?;
        let user = store::update_name(&mut tx, p.user_id, &name).await?.ok_or(IdentityError::SessionInvalid)?;
        let updated = UserUpdated { user_id: user.id, account_id: user.account_id, email: user.email.clone(), name: user.name.clone() };
        enqueue(&mut tx, &Envelope::of(&updated)).await?;
        let audit = Audit {
            actor: Some(user.id),
            action: "user.profile_updated",
            target: Some(user.id),
            account: Some(user.account_id),
            client_ip: None,
            detail: json!({"fields": ["name"]}),
        };
        store::audit(&mut tx, audit).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        Ok(user)
    }

    /// A user the caller may see (their own account's, or any for staff); others are "not found",
    /// so ids cannot be probed.
    pub async fn user(&self, caller: &Caller, id: UserId) -> Result<User> {
        let mut conn = self.pool.acquire().await?;
        let user = store::user(&mut conn, id).await?.ok_or(IdentityError::NotFound("user"))?;
        caller.read(user.account_id).map_err(|_| IdentityError::NotFound("user"))?;
        Ok(user)
    }

    /// An account and its users.
    pub async fn account(&self, account: ReadAccount) -> Result<(Account, Vec<User>)> {
        let mut conn = self.pool.acquire().await?;
        let found = store::account(&mut conn, account.id()).await?.ok_or(IdentityError::NotFound("account"))?;
        let users = store::users_of(&mut conn, &[account.id()]).await?;
        Ok((found, users))
    }

    /// Customer accounts matching `query`, each with its users (two queries, whatever the count).
    pub async fn list_customers(&self, _staff: &Staff, query: &str, limit: i64) -> Result<Vec<(Account, Vec<User>)>> {
        let mut conn = self.pool.acquire().await?;
        let accounts = store::search_customers(&mut conn, query, limit).await?;
        let ids: Vec<_> = accounts.iter().map(|a| a.id).collect();
        let mut users = store::users_of(&mut conn, &ids).await?;
        Ok(accounts
            .into_iter()
            .map(|a| {
                let (mine, rest): (Vec<User>, Vec<User>) = std::mem::take(&mut users).into_iter().partition(|u| u.account_id == a.id);
                users = rest;
                (a, mine)
            })
            .collect())
    }

    /// Ends every live session of a user.
    pub async fn revoke_sessions(&self, admin: &Admin, id: UserId) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let target = store::user(&mut tx, id).await?.ok_or(IdentityError::NotFound("user"))?;
        let revoked = store::revoke_user_sessions(&mut tx, target.id).await?;
        let audit = Audit {
            actor: Some(admin.0.user_id),
            action: "sessions.revoked",
            target: Some(target.id),
            account: Some(target.account_id),
            client_ip: None,
            detail: json!({"revoked": revoked}),
        };
        store::audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// A time-limited session as a customer, for an admin, with the reason audited.
    pub async fn impersonate(&self, admin: &Admin, id: UserId, reason: &str, ttl_seconds: u32) -> Result<Grant> {
        let reason = domain::parse_name("reason", reason)?;
        let max = self.cfg.impersonation_max.as_secs();
        let ttl = match u64::from(ttl_seconds) {
            0 => 900.min(max),
            t if t > max => return Err(domain::Invalid::new("ttl_seconds", format!("at most {max}")).into()),
            t => t,
        };
        let mut tx = self.pool.begin().await?;
        let target = store::user(&mut tx, id).await?.ok_or(IdentityError::NotFound("user"))?;
        if target.role != Role::Customer {
            return Err(IdentityError::Forbidden("only customers can be impersonated"));
        }
        let session = store::insert_session(&mut tx, target.id, Some(admin.0.user_id), chrono::Duration::seconds(ttl as i64), None).await?;
        let audit = Audit {
            actor: Some(admin.0.user_id),
            action: "impersonation.started",
            target: Some(target.id),
            account: Some(target.account_id),
            client_ip: None,
            detail: json!({"reason": reason, "ttl_seconds": ttl}),
        };
        store::audit(&mut tx, audit).await?;
        tx.commit().await?;
        info!(admin = %admin.0.user_id, target = %target.id, ttl, "impersonation started");
        Ok(Grant { user: target, session })
    }

    pub async fn audit_log(&self, _admin: &Admin, user: Option<UserId>, limit: i64) -> Result<Vec<AuditRecord>> {
        let mut conn = self.pool.acquire().await?;
        Ok(store::list_audit(&mut conn, user, limit).await?)
    }

    /// Records an action an admin takes through another service (an operator action on parked
    /// messages, a refund, an export) in the audit log, with the admin as actor. Only the actions
    /// in [`RECORDED_ACTIONS`]; the detail is a JSON object of at most 4 KiB.
    pub async fn record_audit(&self, admin: &Admin, action: &str, account: Option<AccountId>, detail: &str) -> Result<AuditRecord> {
        let action = RECORDED_ACTIONS
            .iter()
            .find(|a| **a == action)
            .ok_or_else(|| domain::Invalid::new("action", format!("must be one of {}", RECORDED_ACTIONS.join(", "))))?;
        if detail.len() > 4096 {
            return Err(domain::Invalid::new("detail_json", "at most 4096 bytes").into());
        }
        let detail: serde_json::Value = match serde_json::from_str(detail) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => return Err(domain::Invalid::new("detail_json", "must be a JSON object").into()),
        };
        let audit = Audit { actor: Some(admin.0.user_id), action, target: None, account, client_ip: None, detail };
        let record = store::audit(&mut *self.pool.acquire().await?, audit).await?;
        info!(admin = %admin.0.user_id, action, "action recorded in the audit log");
        Ok(record)
    }

    pub async fn mailbox(&self, _admin: &Admin, to: Option<&str>, limit: i64) -> Result<Vec<sb_mail::StoredEmail>> {
        Ok(sb_mail::MailboxMailer::list(&self.pool, limit, to).await?)
    }

    /// A staff or customer user created by an operator (`identity create-user`) or a test.
    pub async fn create_user(&self, account_name: &str, email: &Email, name: &str, role: Role, password: &Password) -> Result<User> {
        let account_name = domain::parse_name("account", account_name)?;
        let name = domain::parse_name("name", name)?;
        let hash = self.hasher.hash(password).await?;
        let mut tx = self.pool.begin().await?;
        let account = store::insert_account(&mut tx, &account_name).await?;
        let user = store::insert_user(&mut tx, account.id, email, &name, role, &hash).await?.ok_or(IdentityError::EmailTaken)?;
        let audit = Audit {
            actor: None,
            action: "user.created_by_operator",
            target: Some(user.id),
            account: Some(account.id),
            client_ip: None,
            detail: json!({"role": role.as_str()}),
        };
        store::audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Asks for an email to every customer user of the account behind `cause` (in the handler's
    /// transaction, so it is asked exactly once).
    async fn email_customers(
        &self,
        tx: &mut PgConnection,
        cause: &Envelope,
        account: Option<domain::AccountId>,
        template: EmailTemplate,
    ) -> Result<usize> {
        // No account linked to the Stripe customer yet: nobody to tell.
        let Some(account) = account else { return Ok(0) };
        let users = store::users_of(tx, &[account]).await?;
        let customers: Vec<User> = users.into_iter().filter(|u| u.role == Role::Customer).collect();
        for u in &customers {
            let email = EmailRequested {
                to: u.email.clone(),
                name: u.name.clone(),
                account_id: Some(u.account_id),
                user_id: Some(u.id),
                template: template.clone(),
            };
            enqueue(tx, &Envelope::caused_by(cause, &email)).await?;
        }
        Ok(customers.len())
    }

    /// A failed payment: the account's customers are told, with the amount and what happens next.
    pub async fn payment_failed(&self, tx: &mut PgConnection, cause: &Envelope, p: &PaymentFailed) -> Result<usize> {
        let template = EmailTemplate::PaymentFailed {
            amount_due: p.amount_due,
            currency: p.currency.clone(),
            next_payment_attempt: p.next_payment_attempt,
        };
        self.email_customers(tx, cause, p.account_id, template).await
    }

    /// A refund: the account's customers get a receipt.
    pub async fn refund_issued(&self, tx: &mut PgConnection, cause: &Envelope, r: &RefundIssued) -> Result<usize> {
        let template = EmailTemplate::RefundIssued { amount_refunded: r.amount_refunded, currency: r.currency.clone(), full: r.full };
        self.email_customers(tx, cause, r.account_id, template).await
    }
}

impl Identity {
    /// Asks for one email to a ticket's requester (in the handler's transaction).
    async fn email_requester(&self, tx: &mut PgConnection, cause: &Envelope, r: &Requester, template: EmailTemplate) -> Result<()> {
        let email = EmailRequested { to: r.email.clone(), name: r.name.clone(), account_id: r.account_id, user_id: r.user_id, template };
        enqueue(tx, &Envelope::caused_by(cause, &email)).await?;
        Ok(())
    }

    /// The requester hears that their ticket arrived.
    pub async fn ticket_opened(&self, tx: &mut PgConnection, cause: &Envelope, t: &TicketOpened) -> Result<()> {
        let template = EmailTemplate::TicketReceived { ticket_id: t.ticket_id, subject: t.subject.clone() };
        self.email_requester(tx, cause, &t.requester, template).await
    }

    /// An agent's answer is emailed to the requester (their own replies are not echoed back).
    pub async fn ticket_message_added(&self, tx: &mut PgConnection, cause: &Envelope, m: &TicketMessageAdded) -> Result<()> {
        match m.author {
            MessageAuthor::Agent => {
                let template = EmailTemplate::TicketAnswered { ticket_id: m.ticket_id, subject: m.subject.clone(), answer: m.body.clone() };
                self.email_requester(tx, cause, &m.requester, template).await
            }
            MessageAuthor::Customer => Ok(()),
        }
    }

    /// A ticket moved into human review: the requester hears a person looks at it first.
    pub async fn ticket_prioritised(&self, tx: &mut PgConnection, cause: &Envelope, p: &TicketPrioritised) -> Result<()> {
        if p.to_queue != TicketQueue::HumanReview || p.from_queue == TicketQueue::HumanReview {
            return Ok(());
        }
        let template = EmailTemplate::TicketEscalated { ticket_id: p.ticket_id, subject: p.subject.clone() };
        self.email_requester(tx, cause, &p.requester, template).await
    }

    /// Resolved by an agent: the requester hears it (a customer who closed it knows already).
    pub async fn ticket_resolved(&self, tx: &mut PgConnection, cause: &Envelope, r: &TicketResolved) -> Result<()> {
        if r.by_customer {
            return Ok(());
        }
        let template = EmailTemplate::TicketResolved { ticket_id: r.ticket_id, subject: r.subject.clone() };
        self.email_requester(tx, cause, &r.requester, template).await
    }

    /// A missed SLA target: the assignee is told, or every agent and admin when nobody is.
    pub async fn sla_breached(&self, tx: &mut PgConnection, cause: &Envelope, b: &SlaBreached) -> Result<usize> {
        let staff = store::staff_users(tx).await?;
        let assignee: Vec<&User> = staff.iter().filter(|u| Some(u.id) == b.assignee).collect();
        let to = if assignee.is_empty() { staff.iter().collect() } else { assignee };
        for u in &to {
            let template = EmailTemplate::SlaBreached {
                ticket_id: b.ticket_id,
                subject: b.subject.clone(),
                clock: b.clock,
                due_at: b.due_at,
                priority: b.priority,
                queue: b.queue,
            };
            let email =
                EmailRequested { to: u.email.clone(), name: u.name.clone(), account_id: Some(u.account_id), user_id: Some(u.id), template };
            enqueue(tx, &Envelope::caused_by(cause, &email)).await?;
        }
        Ok(to.len())
    }
}

/// The email an `identity.email.requested.v1` event asks for; the event id is its idempotency key.
pub fn email_for(event_id: Uuid, req: &EmailRequested) -> sb_mail::Email {
    let (subject, text_body) = domain::render(&req.name, &req.template);
    sb_mail::Email { id: event_id, to: req.to.to_string(), subject, text_body, template: req.template.name().to_owned() }
}
