//! What crm-sync does: keeps one CRM contact per customer user current — found by email first,
//! created only when none exists, linked, with the account's plan, Stripe customer id, access
//! status and the lifecycle stage they imply — and records how each sync stands.
//!
//! No transaction or lock is open while the CRM answers or while a request waits for rate budget.
//! A use case first records what the contact should hold in a short transaction (bumping the
//! user's `desired_version`), commits, then writes to the CRM with no connection held, and records
//! the result only if the wanted version did not move meanwhile; if it did, it writes again, so
//! concurrent events converge on the newest state. Duplicate contacts are prevented by the CRM's
//! own uniqueness of emails (HubSpot's 409, the contact book's unique index), not by a lock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sb_bus::{
    Inbox,
    events::{AccessChanged, UserSignedUp, UserUpdated},
};
use sb_runtime::caller::ReadAccount;
use sqlx::PgPool;
use tracing::{debug, info};

use crate::{
    contact_book::{self, BookContact},
    crm::{Contact, ContactProps, Crm, CrmError},
    domain::{self, AccessChange, AccountId, ContactSync, Email, FailedAttempt, Profile, Stages, UserId, Wanted},
    error::CrmSyncError,
    store,
};

type Result<T> = std::result::Result<T, CrmSyncError>;

/// How many times one use case writes a contact whose wanted state keeps moving before it leaves
/// the rest to a later attempt.
pub const MAX_WRITES: usize = 4;

/// Whose contacts a failed event concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    User(UserId),
    Account(AccountId),
}

/// Shared by the gRPC service and the bus handlers.
#[derive(Clone)]
pub struct CrmSync {
    pool: PgPool,
    crm: Arc<dyn Crm>,
    stages: Arc<Stages>,
}

impl CrmSync {
    pub fn new(pool: PgPool, crm: Arc<dyn Crm>, stages: Stages) -> Self {
        Self { pool, crm, stages: Arc::new(stages) }
    }

    /// `hubspot` or `contact_book`.
    pub fn crm_name(&self) -> &'static str {
        self.crm.name()
    }

    /// A new customer becomes a lead (staff are not contacts). `at`: when identity signed them up.
    pub async fn signed_up(&self, s: &UserSignedUp, at: DateTime<Utc>) -> Result<()> {
        if !domain::is_contact(s.role) {
            debug!(user_id = %s.user_id, role = %s.role, "staff are not CRM contacts");
            return Ok(());
        }
        let profile = Profile { email: s.email.clone(), name: s.name.clone(), as_of: Some(at) };
        let mut tx = self.pool.begin().await?;
        // The account's row first, then its users' (as everywhere), so transactions never wait
        // on each other in a circle.
        let renamed = store::set_account_name(&mut tx, s.account_id, &s.account_name).await?;
        if !store::insert_user(&mut tx, s.user_id, s.account_id, &profile).await? {
            // Delivered again (a retry), or an update was seen first: the newer profile stays.
            self.apply_profile(&mut tx, s.user_id, &s.email, &s.name, at).await?;
        }
        let users = if renamed { store::want_account_pushed(&mut tx, s.account_id).await? } else { vec![s.user_id] };
        tx.commit().await?;
        for user in users {
            self.push(user).await?;
        }
        Ok(())
    }

    /// A user's new name (or email) goes to their contact. A user crm-sync does not know (staff,
    /// who never were contacts) is left alone.
    pub async fn user_updated(&self, u: &UserUpdated, at: DateTime<Utc>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if !self.apply_profile(&mut tx, u.user_id, &u.email, &u.name, at).await? {
            debug!(user_id = %u.user_id, "profile update for a user who is not a CRM contact");
            return Ok(());
        }
        tx.commit().await?;
        self.push(u.user_id).await
    }

    /// Applies a profile change if it is newer than the known profile; `false`: the user is unknown.
    async fn apply_profile(&self, tx: &mut sqlx::PgConnection, user: UserId, email: &Email, name: &str, at: DateTime<Utc>) -> Result<bool> {
        let Some(known) = store::profile_for_update(tx, user).await? else { return Ok(false) };
        if let Some(next) = known.after(email, name, at) {
            store::save_profile(tx, user, &next).await?;
            if next.differs_for_crm(&known) {
                store::want_user_pushed(tx, user).await?;
            }
        }
        Ok(true)
    }

    /// billing's change of an account's access: plan, customer id, access and stage follow it on
    /// every user's contact, unless a newer change is known already. An account with no user yet
    /// has no contact to write: the event is then recorded as applied (`inbox`) in the transaction
    /// that stores the access, one commit instead of two.
    pub async fn access_changed(&self, c: &AccessChanged, inbox: &Inbox) -> Result<()> {
        let change = AccessChange { to: c.to, plan: c.plan.clone(), stripe_customer_id: c.stripe_customer_id.clone(), since: c.since };
        let mut tx = self.pool.begin().await?;
        let known = store::account_for_update(&mut tx, c.account_id).await?;
        let wanted = match known.after(&change) {
            Some(next) => {
                store::save_access(&mut tx, c.account_id, &next).await?;
                if next.differs_for_crm(&known) { Some(store::want_account_pushed(&mut tx, c.account_id).await?) } else { None }
            }
            None => {
                debug!(account_id = %c.account_id, since = %c.since, "access change older than the known one: ignored");
                None
            }
        };
        let users = match wanted {
            Some(users) => users,
            None => store::users_of_account(&mut tx, c.account_id).await?,
        };
        // `false`: another delivery of this event was applied meanwhile; nothing to do.
        if users.is_empty() && !inbox.record(&mut tx).await? {
            return Ok(());
        }
        tx.commit().await?;
        // Users already in sync (an older change, or a newer one that got there first) are skipped.
        for user in users {
            self.push(user).await?;
        }
        Ok(())
    }

    /// Brings one user's contact to the wanted state (see the module's notes). Holds a pooled
    /// connection only for its short reads and writes, never while the CRM answers.
    async fn push(&self, user: UserId) -> Result<()> {
        let mut trust_link = true;
        for write in 0..MAX_WRITES {
            let wanted = {
                let mut conn = self.pool.acquire().await?;
                store::wanted(&mut conn, user).await?
            };
            let Some(wanted) = wanted else { return Ok(()) };
            // Only the first look may skip: after a write whose version moved, the CRM may hold an
            // older write that landed last, so it is written again.
            if write == 0 && wanted.in_sync() {
                debug!(user_id = %user, "contact already in sync");
                return Ok(());
            }
            let linked = if trust_link { self.linked(&wanted) } else { None };
            let used_link = linked.is_some();
            let stage = wanted.stage(&self.stages).clone();
            let refused = match self.write(&wanted.email, linked, &wanted.props(&self.stages)).await {
                Ok(contact) => {
                    let mut conn = self.pool.acquire().await?;
                    if store::record_written(&mut conn, user, wanted.version, &contact.id, &stage).await? {
                        metrics::counter!("crm_sync_synced_total", "crm" => self.crm.name()).increment(1);
                        info!(user_id = %user, contact = %contact.id, stage = %stage, crm = self.crm.name(), "CRM contact synced");
                        return Ok(());
                    }
                    debug!(user_id = %user, version = wanted.version, "contact changed while it was written; writing again");
                    continue;
                }
                Err(e @ CrmError::Transient { .. }) => return Err(e.into()),
                Err(e @ CrmError::Permanent(_)) => e,
            };
            // A refusal of a write built on what crm-sync knew (the link to a contact since
            // deleted or merged, a stage another writer moved) or on a state that moved meanwhile
            // may be stale: once more with the contact looked up afresh. Otherwise it is final.
            let stale = used_link || self.moved(user, wanted.version).await?;
            if !stale || write + 1 == MAX_WRITES {
                return Err(refused.into());
            }
            debug!(user_id = %user, reason = %refused, "CRM refused a possibly stale write; looking the contact up again");
            trust_link = false;
        }
        Err(CrmSyncError::Unsettled { rounds: MAX_WRITES })
    }

    /// The contact crm-sync linked to the user, with the stage it last wrote there.
    fn linked(&self, w: &Wanted) -> Option<Contact> {
        w.contact.as_ref().map(|c| Contact { id: c.id.clone(), email: w.email.to_string(), lifecycle_stage: c.stage.clone() })
    }

    /// Whether what the user's contact should hold moved past `version`.
    async fn moved(&self, user: UserId, version: i64) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        Ok(store::desired_version(&mut conn, user).await?.is_some_and(|v| v != version))
    }

    /// Writes the contact: the linked one, else the one with this email, else a new one.
    async fn write(&self, email: &Email, linked: Option<Contact>, props: &ContactProps) -> std::result::Result<Contact, CrmError> {
        let existing = match linked {
            Some(c) => Some(c),
            None => self.crm.find_by_email(email.as_str()).await?,
        };
        match existing {
            Some(c) => self.crm.update(&c, props).await,
            None => self.crm.create(email.as_str(), props).await,
        }
    }

    /// Records a failed attempt where operators and the portal see it: "pending until <next
    /// attempt>" or "failed: <reason>", on the contacts it concerned that are not in sync.
    pub async fn record_failure(&self, whose: Whose, f: &FailedAttempt) -> Result<()> {
        let kind = if f.next_attempt_at.is_some() { "retrying" } else { "parked" };
        metrics::counter!("crm_sync_failures_total", "crm" => self.crm.name(), "kind" => kind).increment(1);
        let mut conn = self.pool.acquire().await?;
        match whose {
            Whose::User(user) => store::record_user_failure(&mut conn, user, f).await?,
            Whose::Account(account) => store::record_account_failure(&mut conn, account, f).await?,
        }
        Ok(())
    }

    /// How each user's contact sync stands, for an account the caller may read.
    pub async fn contact_status(&self, account: ReadAccount) -> Result<Vec<ContactSync>> {
        let mut conn = self.pool.acquire().await?;
        Ok(store::contact_syncs(&mut conn, account.id()).await?)
    }

    /// The embedded contact book, newest first (`requested`: page size asked for, 0 = default).
    pub async fn contact_book(&self, query: &str, requested: i32) -> Result<Vec<BookContact>> {
        let mut conn = self.pool.acquire().await?;
        Ok(contact_book::list(&mut conn, query.trim(), domain::book_page_size(requested)).await?)
    }
}
