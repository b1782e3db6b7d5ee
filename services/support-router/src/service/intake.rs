//! Intake: a ticket is stored, routed and announced using only local state (the user directory
//! and the plan projection), in one transaction; nothing waits on billing, the CRM or the AI.
//!
//! Double submissions make one ticket: the same idempotency key from the same requester answers
//! the first ticket again; without a key, the same requester's same subject and body within
//! `SUPPORT_ROUTER_DUPLICATE_WINDOW` (10 minutes) is taken for a retried request. Intake first
//! claims the key (or the subject and body) in the transaction that creates the ticket: a
//! concurrent duplicate waits on that one row and then answers the first ticket, while different
//! requests, even one requester's, never wait on each other.

use chrono::Utc;
use sb_bus::events::{TicketMessageAdded, TicketOpened};
use sb_runtime::caller::{Caller, Principal, ServiceContext};
use tracing::info;
use uuid::Uuid;

use super::{Cause, Customer, Result, Support, Viewer, activity, publish};
use crate::{
    domain::{Author, Channel, Clocks, Email, Message, NewTicket, Requester, Ticket, TicketId, TicketStatus, TicketView},
    error::SupportError,
    store::{self, Claim},
};

/// Who is opening a ticket.
#[derive(Debug, Clone)]
pub enum Intake {
    /// A signed-in user through the portal: the ticket is theirs.
    Portal(Customer),
    /// The public contact form (a service acting for itself, for a visitor).
    ContactForm { ctx: ServiceContext, email: Email, name: String },
}

impl Intake {
    /// A signed-in customer's intake (their own account; the proof is taken here). Staff open no
    /// tickets of their own: a ticket is a customer's request.
    pub fn portal(p: Principal) -> std::result::Result<Self, tonic::Status> {
        if p.is_staff() {
            return Err(tonic::Status::permission_denied("tickets are opened by customers (or through the contact form)"));
        }
        let account = Caller::User(p.clone()).read(p.account_id)?;
        Ok(Self::Portal(Customer { principal: p, account }))
    }
}

impl Support {
    /// Opens a ticket (or answers the one a double submission already opened). The answer is the
    /// requester's view: a customer's thread, or, for the contact form, the ticket as submitted.
    pub async fn create_ticket(&self, intake: Intake, new: NewTicket) -> Result<TicketView> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let (requester, channel, cause) = match &intake {
            Intake::Portal(c) => {
                let p = &c.principal;
                store::lock_account(&mut tx, c.account.id(), true).await?;
                let known = store::user(&mut tx, p.user_id).await?;
                let requester = Requester {
                    account_id: Some(c.account.id()),
                    user_id: Some(p.user_id),
                    email: known.as_ref().map(|u| u.email.clone()),
                    name: known.map(|u| u.name).unwrap_or_default(),
                };
                (requester, Channel::Portal, Cause::Request(None))
            }
            Intake::ContactForm { ctx, email, name } => {
                // Linked to an account only when the email is a customer identity told about.
                let known = store::customer_by_email(&mut tx, email).await?;
                if let Some(u) = &known {
                    store::lock_account(&mut tx, u.account_id, true).await?;
                }
                let name = if name.is_empty() { known.as_ref().map(|u| u.name.clone()).unwrap_or_default() } else { name.clone() };
                let requester = Requester {
                    account_id: known.as_ref().map(|u| u.account_id),
                    user_id: known.as_ref().map(|u| u.user_id),
                    email: Some(email.clone()),
                    name,
                };
                (requester, Channel::ContactForm, Cause::Request(ctx.correlation_id))
            }
        };
        let key = requester.key();
        let id = TicketId::new();
        let claim = match &new.idempotency_key {
            Some(k) => store::claim_key(&mut tx, &key, k, id).await?,
            None => store::claim_fingerprint(&mut tx, &key, &new.fingerprint(), id, self.cfg.duplicate_window).await?,
        };
        if let Claim::Earlier(id) = claim {
            let t = store::ticket(&mut tx, id).await?.ok_or(SupportError::NotFound("ticket"))?;
            let view = self.requester_view(&mut tx, t, &intake).await?;
            sb_bus::outbox::commit(tx, crate::SERVICE).await?;
            info!(ticket_id = %id, "double submission: the first ticket answered again");
            metrics::counter!("support_intake_duplicates_total").increment(1);
            return Ok(view);
        }
        if let Intake::ContactForm { ctx, email, .. } = &intake {
            // Counted in this transaction: a refused submission rolls back and is not counted.
            if let Some(ip) = &ctx.client_ip
                && let Err(secs) =
                    store::throttle_take(&mut tx, &format!("ip:{ip}"), self.cfg.contact_max_per_address, self.cfg.contact_window).await?
            {
                return Err(SupportError::Throttled { what: "address", retry_after_secs: secs });
            }
            if let Err(secs) =
                store::throttle_take(&mut tx, &format!("email:{email}"), self.cfg.contact_max_per_email, self.cfg.contact_window).await?
            {
                return Err(SupportError::Throttled { what: "email", retry_after_secs: secs });
            }
        }

        let plan = match requester.account_id {
            Some(a) => store::plan(&mut tx, a).await?,
            None => None,
        };
        let decision = self.cfg.rules.decide(&new.subject, &new.body, new.category, plan.as_ref());
        let targets = self.cfg.sla.targets(decision.tier, decision.priority);
        let ticket = Ticket {
            id,
            requester,
            subject: new.subject.clone(),
            category: new.category,
            status: TicketStatus::New,
            priority: decision.priority,
            queue: decision.queue,
            assignee: None,
            tier_at_intake: decision.tier,
            tier_now: decision.tier,
            channel,
            priority_reasons: decision.reasons,
            manual_override: false,
            manual_reason: None,
            first_answered_at: None,
            created_at: now,
            updated_at: now,
            clocks: Clocks::open(&self.cfg.hours, now, targets),
        };
        let (actor, by) = match &intake {
            Intake::Portal(c) => {
                let v = Viewer::Customer(c.clone());
                (Some(v.actor()), format!("through the portal{}", v.acting_as()))
            }
            Intake::ContactForm { .. } => {
                let linked = if ticket.requester.account_id.is_some() {
                    "linked to a known user's account"
                } else {
                    "from an email no known user has"
                };
                (None, format!("through the contact form ({linked})"))
            }
        };
        let first = Message {
            id: Uuid::now_v7(),
            author: Author::Customer,
            author_user_id: ticket.requester.user_id,
            body: new.body.clone(),
            created_at: now,
        };
        let opened = activity(now, actor, "opened", format!("opened {by}; category {}", ticket.category));
        let routed = activity(
            now,
            None,
            "routed",
            format!("priority {}, queue {}: {}", ticket.priority, ticket.queue, ticket.priority_reasons.join("; ")),
        );
        store::insert_ticket(&mut tx, &ticket).await?;
        store::insert_message(&mut tx, ticket.id, &first).await?;
        store::insert_activities(&mut tx, ticket.id, &[opened, routed]).await?;
        publish(&mut tx, &ticket, cause, |requester| TicketOpened {
            ticket_id: ticket.id,
            requester,
            subject: ticket.subject.clone(),
            category: ticket.category,
            priority: ticket.priority,
            queue: ticket.queue,
            tier: ticket.tier_at_intake.as_str().to_owned(),
            channel: ticket.channel.as_str().to_owned(),
        })
        .await?;
        // The body is the thread's first public message, announced like every other one.
        publish(&mut tx, &ticket, cause, |requester| TicketMessageAdded {
            ticket_id: ticket.id,
            requester,
            subject: ticket.subject.clone(),
            message_id: first.id,
            author: first.author.into(),
            author_user_id: first.author_user_id,
            body: first.body.clone(),
            category: Some(ticket.category),
        })
        .await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        info!(ticket_id = %ticket.id, channel = %ticket.channel, priority = %ticket.priority, queue = %ticket.queue, tier = %ticket.tier_at_intake, "ticket opened");
        metrics::counter!("support_tickets_opened_total", "channel" => ticket.channel.as_str()).increment(1);
        let view = TicketView { ticket, messages: vec![first], notes: Vec::new(), activity: Vec::new(), drafts: Vec::new() };
        Ok(match &intake {
            Intake::Portal(_) => view.for_customer(),
            Intake::ContactForm { .. } => view.for_contact_form(),
        })
    }

    /// The requester's view of a ticket a double submission found.
    async fn requester_view(&self, conn: &mut sqlx::PgConnection, t: crate::domain::Ticket, intake: &Intake) -> Result<TicketView> {
        match intake {
            Intake::Portal(c) => self.view(conn, t, &Viewer::Customer(c.clone())).await,
            Intake::ContactForm { .. } => {
                let messages = store::messages(conn, t.id).await?;
                Ok(TicketView { ticket: t, messages, notes: Vec::new(), activity: Vec::new(), drafts: Vec::new() }.for_contact_form())
            }
        }
    }
}
