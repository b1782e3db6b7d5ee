//! What support-router does: intake (`intake`), the ticket use cases of customers and staff
//! (`tickets`), and the work that follows events and time (`background`: the user directory and
//! plan projection, re-prioritising on plan changes, the plan refresher, the SLA sweeper).
//!
//! Owns every transaction and outbox write; transports (`grpc`, `events`) authenticate, convert
//! and call in here. Every change to a ticket locks its row first, then writes the ticket, its
//! clocks, thread, activity and events in one transaction. No transaction is open while billing
//! answers.
//!
//! A ticket's events name its requester's email. A portal ticket opened before identity's
//! announcement of the user arrived has none yet: its events are held (`held_events`) and
//! published, in order, when the announcement arrives — intake never waits for it.

mod assist;
mod background;
mod intake;
mod tickets;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sb_bus::{
    Envelope, Event, enqueue,
    events::{self as ev, SlaBreached, TicketMessageAdded, TicketOpened, TicketPrioritised, TicketResolved},
};
use sb_runtime::caller::{Principal, ReadAccount, Staff};
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use self::intake::Intake;
use crate::{
    config::SupportConfig,
    domain::{Activity, Email, SlaClock, Ticket, TicketId, TicketView, UserId, sla::Breach},
    error::SupportError,
    store,
};

pub type Result<T> = std::result::Result<T, SupportError>;

/// Shared by the gRPC service, the bus handlers and the background loops.
#[derive(Clone)]
pub struct Support {
    pool: PgPool,
    cfg: Arc<SupportConfig>,
}

/// A customer (or an admin impersonating one), with the proof they may read their account.
#[derive(Debug, Clone)]
pub struct Customer {
    pub principal: Principal,
    pub account: ReadAccount,
}

/// Who is looking at or acting on tickets.
#[derive(Debug, Clone)]
pub enum Viewer {
    Staff(Staff),
    Customer(Customer),
}

impl Viewer {
    fn principal(&self) -> &Principal {
        match self {
            Viewer::Staff(s) => &s.0,
            Viewer::Customer(c) => &c.principal,
        }
    }

    /// Who the activity log names: the person at the keyboard (an impersonating admin, not the
    /// customer they act as).
    fn actor(&self) -> UserId {
        let p = self.principal();
        p.impersonator.unwrap_or(p.user_id)
    }

    /// Words added to an activity's detail when an admin acts as the customer.
    fn acting_as(&self) -> String {
        let p = self.principal();
        match p.impersonator {
            Some(_) => format!(" (an admin impersonating customer {})", p.user_id),
            None => String::new(),
        }
    }

    /// Whether the viewer may see this ticket at all (others' tickets are "not found").
    fn may_see(&self, t: &Ticket) -> bool {
        match self {
            Viewer::Staff(_) => true,
            Viewer::Customer(c) => t.requester.account_id == Some(c.account.id()),
        }
    }

    /// The view this viewer gets of a ticket.
    fn shape(&self, v: TicketView) -> TicketView {
        match self {
            Viewer::Staff(_) => v,
            Viewer::Customer(_) => v.for_customer(),
        }
    }
}

/// What an event was caused by: its correlation and causation.
#[derive(Clone, Copy)]
enum Cause<'a> {
    /// A call; the outside request's correlation id when the gateway sent one.
    Request(Option<Uuid>),
    /// A bus event being handled.
    Event(&'a Envelope),
    /// A background loop (SLA sweep, plan refresh).
    System,
}

impl Cause<'_> {
    fn envelope<E: Event>(&self, payload: &E) -> Envelope {
        match self {
            Cause::Request(Some(c)) => Envelope::of(payload).with_correlation(*c),
            Cause::Request(None) | Cause::System => Envelope::of(payload),
            Cause::Event(cause) => Envelope::caused_by(cause, payload),
        }
    }
}

/// The events that name a ticket's requester (and may wait for their email).
trait TicketEvent: Event + Serialize + DeserializeOwned {
    fn requester_mut(&mut self) -> &mut ev::Requester;
}

macro_rules! ticket_event {
    ($($t:ty),+) => {
        $(impl TicketEvent for $t {
            fn requester_mut(&mut self) -> &mut ev::Requester {
                &mut self.requester
            }
        })+
    };
}
ticket_event!(TicketOpened, TicketMessageAdded, TicketPrioritised, SlaBreached, TicketResolved);

/// Stands in for a requester whose email is not known yet, in held events only (it is replaced
/// before they are published; `.invalid` can never be delivered to).
fn requester_for_events(t: &Ticket) -> Result<(ev::Requester, bool)> {
    match t.requester.for_events() {
        Some(r) => Ok((r, true)),
        None => {
            let email = Email::parse("pending-requester@support-router.invalid").map_err(|e| SupportError::Internal(e.to_string()))?;
            Ok((
                ev::Requester { account_id: t.requester.account_id, user_id: t.requester.user_id, email, name: t.requester.name.clone() },
                false,
            ))
        }
    }
}

/// Publishes a ticket's event through the outbox, or holds it until the requester's email is known.
async fn publish<E: TicketEvent>(
    conn: &mut PgConnection,
    t: &Ticket,
    cause: Cause<'_>,
    make: impl FnOnce(ev::Requester) -> E,
) -> Result<()> {
    let (requester, known) = requester_for_events(t)?;
    let event = make(requester);
    let env = cause.envelope(&event);
    if known {
        enqueue(conn, &env).await?;
    } else {
        let data = serde_json::to_value(&event).map_err(|e| SupportError::Internal(format!("holding an event: {e}")))?;
        store::hold_event(conn, t.id, E::TYPE, &data, env.correlation_id).await?;
    }
    Ok(())
}

/// Publishes one held event with the requester now known.
async fn release<E: TicketEvent>(
    conn: &mut PgConnection,
    data: serde_json::Value,
    requester: &ev::Requester,
    correlation: Uuid,
) -> Result<()> {
    let mut event: E =
        serde_json::from_value(data).map_err(|e| SupportError::Internal(format!("a held {} is unreadable: {e}", E::TYPE)))?;
    *event.requester_mut() = requester.clone();
    enqueue(conn, &Envelope::of(&event).with_correlation(correlation)).await?;
    Ok(())
}

fn activity(at: DateTime<Utc>, actor: Option<UserId>, action: &str, detail: impl Into<String>) -> Activity {
    Activity { id: Uuid::now_v7(), at, actor, action: action.to_owned(), detail: detail.into() }
}

/// Records breaches found while a use case stopped clocks late, or by the sweeper: an activity
/// line and `support.ticket.sla_breached.v1` each (the caller counts them once committed).
async fn record_breaches(conn: &mut PgConnection, t: &Ticket, breaches: &[Breach], now: DateTime<Utc>, cause: Cause<'_>) -> Result<()> {
    for b in breaches {
        let detail = format!("{} missed its target (due {})", b.clock.as_str().replace('_', " "), b.due_at.format("%Y-%m-%d %H:%M:%S UTC"));
        store::insert_activity(conn, t.id, &activity(now, None, "sla_breached", detail)).await?;
        publish(conn, t, cause, |requester| SlaBreached {
            ticket_id: t.id,
            requester,
            subject: t.subject.clone(),
            clock: b.clock,
            due_at: b.due_at,
            priority: t.priority,
            queue: t.queue,
            assignee: t.assignee,
        })
        .await?;
    }
    Ok(())
}

fn count_breaches(breaches: &[SlaClock]) {
    for c in breaches {
        metrics::counter!("support_sla_breaches_total", "clock" => c.as_str()).increment(1);
    }
}

impl Support {
    pub fn new(pool: PgPool, cfg: SupportConfig) -> Self {
        Self { pool, cfg: Arc::new(cfg) }
    }

    pub fn config(&self) -> &SupportConfig {
        &self.cfg
    }

    /// The ticket with what `viewer` may see of its thread, notes and activity.
    async fn view(&self, conn: &mut PgConnection, t: Ticket, viewer: &Viewer) -> Result<TicketView> {
        let messages = store::messages(conn, t.id).await?;
        let (notes, activity, drafts) = match viewer {
            Viewer::Staff(_) => (store::notes(conn, t.id).await?, store::activity(conn, t.id).await?, store::drafts(conn, t.id).await?),
            // Never read for a customer, so never at risk of being sent to one.
            Viewer::Customer(_) => (Vec::new(), Vec::new(), Vec::new()),
        };
        Ok(viewer.shape(TicketView { ticket: t, messages, notes, activity, drafts }))
    }

    /// A ticket the viewer may see, locked for a change (others' tickets are "not found").
    async fn lock_visible(&self, conn: &mut PgConnection, id: TicketId, viewer: &Viewer) -> Result<Ticket> {
        match store::ticket_for_update(conn, id).await? {
            Some(t) if viewer.may_see(&t) => Ok(t),
            _ => Err(SupportError::NotFound("ticket")),
        }
    }
}
