//! support-router's types and rules, free of I/O: what a ticket is, what input is acceptable,
//! which status moves are allowed (`status`), how a ticket is prioritised and routed (`routing`)
//! and how its SLA clocks run (`sla`).

pub mod assist;
pub mod routing;
pub mod sla;

use chrono::{DateTime, Utc};
pub use sb_types::{
    AccessStatus, AccountId, Email, Invalid, Role, SlaClock, TicketCategory, TicketId, TicketPriority, TicketQueue, TicketStatus, UserId,
    parse_name, parse_reason, parse_subject,
};
use sha2::{Digest, Sha256};

pub use self::sla::Clocks;

/// Longest idempotency key, in characters.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 200;

sb_types::word_enum!(
    /// The support tier of an account's plan: what its tickets' base priority and SLA targets are.
    Tier, "tier" {
        /// No paid access (none, pending, revoked).
        Free = "free",
        /// The plan is not known yet (treated as free until billing answers).
        Unknown = "unknown",
        Standard = "standard",
        Priority = "priority",
    }
);

sb_types::word_enum!(
    /// Where a ticket came from.
    Channel, "channel" {
        /// A signed-in customer, through the portal.
        Portal = "portal",
        /// The public contact form (a visitor who may or may not be a known user).
        ContactForm = "contact_form",
    }
);

sb_types::word_enum!(
    /// Who wrote a public message.
    Author, "author" {
        Customer = "customer",
        Agent = "agent",
    }
);

impl From<Author> for sb_bus::events::MessageAuthor {
    fn from(a: Author) -> Self {
        match a {
            Author::Customer => Self::Customer,
            Author::Agent => Self::Agent,
        }
    }
}

/// What support-router knows of an account's plan (from `billing.access.changed.v1`, or asked of
/// billing when no event has arrived yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanProjection {
    /// The plan's name; empty while none.
    pub plan: String,
    pub status: AccessStatus,
    /// When billing decided it (older news never overwrites newer).
    pub since: DateTime<Utc>,
}

/// A user as identity announced them (`identity.user.signed_up.v1`, `identity.user.updated.v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub email: Email,
    pub name: String,
    /// Unknown when only an update has been seen.
    pub role: Option<Role>,
}

/// Who a ticket is from. A portal requester's email is unknown (`None`) while identity's
/// announcement of them has not arrived; the ticket's events wait for it (see `service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub account_id: Option<AccountId>,
    pub user_id: Option<UserId>,
    pub email: Option<Email>,
    pub name: String,
}

impl Requester {
    /// The key a requester's idempotency keys and retried requests are scoped to.
    pub fn key(&self) -> String {
        match (&self.user_id, &self.email) {
            (Some(user), _) => format!("user:{user}"),
            (None, Some(email)) => format!("email:{email}"),
            (None, None) => "anonymous".to_owned(),
        }
    }

    /// As events name them (`None` while the email is unknown).
    pub fn for_events(&self) -> Option<sb_bus::events::Requester> {
        Some(sb_bus::events::Requester {
            account_id: self.account_id,
            user_id: self.user_id,
            email: self.email.clone()?,
            name: self.name.clone(),
        })
    }
}

/// A ticket with its clocks (not its thread, notes or activity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: TicketId,
    pub requester: Requester,
    pub subject: String,
    pub category: TicketCategory,
    pub status: TicketStatus,
    pub priority: TicketPriority,
    pub queue: TicketQueue,
    pub assignee: Option<UserId>,
    pub tier_at_intake: Tier,
    pub tier_now: Tier,
    pub channel: Channel,
    /// Why it has its priority and queue (staff only).
    pub priority_reasons: Vec<String>,
    /// A person set the priority or queue: automation never lowers it again.
    pub manual_override: bool,
    /// The reason the person gave.
    pub manual_reason: Option<String>,
    /// The first agent answer, if any.
    pub first_answered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub clocks: Clocks,
}

impl Ticket {
    pub fn is_open(&self) -> bool {
        self.status != TicketStatus::Resolved
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: uuid::Uuid,
    pub author: Author,
    pub author_user_id: Option<UserId>,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub id: uuid::Uuid,
    pub author_user_id: UserId,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub id: uuid::Uuid,
    pub at: DateTime<Utc>,
    /// `None` for the system (routing, SLA, plan changes).
    pub actor: Option<UserId>,
    pub action: String,
    pub detail: String,
}

/// A ticket with everything staff may see; customers get [`TicketView::for_customer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketView {
    pub ticket: Ticket,
    pub messages: Vec<Message>,
    pub notes: Vec<Note>,
    pub activity: Vec<Activity>,
    /// AI drafts (staff only), newest first.
    pub drafts: Vec<assist::Draft>,
}

impl TicketView {
    /// AI help for the latest customer message (see [`assist::AiState`]).
    pub fn ai_state(&self) -> assist::AiState {
        let latest = self.messages.iter().rev().find(|m| m.author == Author::Customer).map(|m| m.id);
        assist::AiState::of(latest, &self.drafts)
    }

    /// What a customer may see: the thread only. Notes, activity, the reasons behind the
    /// priority, the assignee and the ids of the agents who answered are taken out here, in one
    /// place, whatever the caller asked for.
    pub fn for_customer(mut self) -> Self {
        self.notes.clear();
        self.activity.clear();
        self.drafts.clear();
        self.ticket.priority_reasons.clear();
        self.ticket.manual_reason = None;
        self.ticket.assignee = None;
        for m in &mut self.messages {
            if m.author == Author::Agent {
                m.author_user_id = None;
            }
        }
        self
    }

    /// What the public contact form gets back: the customer's view of what was submitted, and
    /// nothing that tells a visitor whether the email belongs to an account (no account or user
    /// id, no later messages; the transport leaves out priority, queue, tier and clocks too).
    pub fn for_contact_form(self) -> Self {
        let mut v = self.for_customer();
        v.messages.truncate(1);
        v.ticket.requester.account_id = None;
        v.ticket.requester.user_id = None;
        v
    }
}

/// A ticket as a customer may list it (see [`TicketView::for_customer`]).
pub fn ticket_for_customer(t: Ticket) -> Ticket {
    TicketView { ticket: t, messages: Vec::new(), notes: Vec::new(), activity: Vec::new(), drafts: Vec::new() }.for_customer().ticket
}

/// How one queue stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCount {
    pub queue: TicketQueue,
    pub open: i64,
    pub unanswered: i64,
    pub oldest_unanswered_seconds: i64,
}

/// What a new ticket says, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTicket {
    pub subject: String,
    pub body: String,
    pub category: TicketCategory,
    pub idempotency_key: Option<String>,
}

impl NewTicket {
    /// Same requester, same subject and body: a retried request (see `service::create_ticket`).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.subject.as_bytes());
        h.update([0u8]);
        h.update(self.body.as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn too_long(field: &'static str, max: usize) -> Invalid {
    Invalid::new(field, format!("is longer than {max} characters"))
}

/// A message's or note's text (the rules are sb-types', which the gateway's schema publishes).
pub fn parse_body(raw: &str) -> Result<String, Invalid> {
    sb_types::parse_body("body", raw)
}

/// An optional idempotency key (empty: none).
pub fn parse_idempotency_key(raw: &str) -> Result<Option<String>, Invalid> {
    let k = raw.trim();
    if k.is_empty() {
        return Ok(None);
    }
    if k.chars().any(char::is_control) {
        return Err(Invalid::new("idempotency_key", "contains control characters"));
    }
    if k.chars().count() > IDEMPOTENCY_KEY_MAX_CHARS {
        return Err(too_long("idempotency_key", IDEMPOTENCY_KEY_MAX_CHARS));
    }
    Ok(Some(k.to_owned()))
}

/// The status moves, each refused with a message that says why (FAILED_PRECONDITION).
pub mod status {
    use super::TicketStatus;

    /// What a customer's reply does: the ticket waits on us again; a resolved ticket is reopened
    /// (`true`).
    pub fn customer_reply(from: TicketStatus) -> (TicketStatus, bool) {
        (TicketStatus::Open, from == TicketStatus::Resolved)
    }

    /// An agent's answer hands the ticket to the customer. A resolved ticket is reopened first
    /// (explicitly: answering is not a way to reopen by accident).
    pub fn agent_answer(from: TicketStatus) -> Result<TicketStatus, String> {
        match from {
            TicketStatus::Resolved => Err("the ticket is resolved; reopen it before answering".into()),
            TicketStatus::New | TicketStatus::Open | TicketStatus::WaitingOnCustomer => Ok(TicketStatus::WaitingOnCustomer),
        }
    }

    pub fn resolve(from: TicketStatus) -> Result<TicketStatus, String> {
        match from {
            TicketStatus::Resolved => Err("the ticket is already resolved".into()),
            TicketStatus::New | TicketStatus::Open | TicketStatus::WaitingOnCustomer => Ok(TicketStatus::Resolved),
        }
    }

    pub fn reopen(from: TicketStatus) -> Result<TicketStatus, String> {
        match from {
            TicketStatus::Resolved => Ok(TicketStatus::Open),
            TicketStatus::New | TicketStatus::Open | TicketStatus::WaitingOnCustomer => {
                Err(format!("only a resolved ticket can be reopened; this one is {from}"))
            }
        }
    }

    /// A resolved ticket keeps the priority and queue it was resolved with.
    pub fn reprioritise(from: TicketStatus) -> Result<(), String> {
        match from {
            TicketStatus::Resolved => Err("the ticket is resolved; reopen it before changing its priority or queue".into()),
            TicketStatus::New | TicketStatus::Open | TicketStatus::WaitingOnCustomer => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn subjects_are_one_bounded_line() {
        assert_eq!(parse_subject("  Help  ").unwrap(), "Help");
        assert_eq!(parse_subject("   ").unwrap_err().to_string(), "subject: is required");
        assert!(parse_subject("a\nb").unwrap_err().to_string().starts_with("subject: contains control characters"));
        assert_eq!(parse_subject(&"x".repeat(200)).unwrap().len(), 200);
        assert_eq!(parse_subject(&"x".repeat(201)).unwrap_err().to_string(), "subject: is longer than 200 characters");
        // Characters, not bytes.
        assert!(parse_subject(&"é".repeat(200)).is_ok());
    }

    #[test]
    fn bodies_allow_lines_but_not_other_control_characters() {
        assert_eq!(parse_body(" line one\nline two\t \n").unwrap(), "line one\nline two");
        assert!(parse_body("a\0b").unwrap_err().to_string().starts_with("body: contains control characters"));
        assert_eq!(parse_body("").unwrap_err().to_string(), "body: is required");
        assert!(parse_body(&"x".repeat(10_000)).is_ok());
        assert_eq!(parse_body(&"x".repeat(10_001)).unwrap_err().to_string(), "body: is longer than 10000 characters");
        assert_eq!(parse_reason("two\nlines").unwrap_err().what, "reason");
        assert_eq!(parse_idempotency_key("  ").unwrap(), None);
        assert_eq!(parse_idempotency_key(&"k".repeat(201)).unwrap_err().what, "idempotency_key");
    }

    #[test]
    fn status_moves() {
        use TicketStatus::*;
        assert_eq!(status::customer_reply(WaitingOnCustomer), (Open, false));
        assert_eq!(status::customer_reply(Resolved), (Open, true));
        assert_eq!(status::agent_answer(New).unwrap(), WaitingOnCustomer);
        assert!(status::agent_answer(Resolved).unwrap_err().contains("reopen it"));
        assert_eq!(status::resolve(Resolved).unwrap_err(), "the ticket is already resolved");
        assert_eq!(status::reopen(Open).unwrap_err(), "only a resolved ticket can be reopened; this one is open");
        assert_eq!(status::reopen(Resolved).unwrap(), Open);
        assert!(status::reprioritise(Resolved).is_err() && status::reprioritise(New).is_ok());
    }

    #[test]
    fn the_customer_view_has_no_internals() {
        let now = Utc::now();
        let agent = UserId::new();
        let ticket = Ticket {
            id: TicketId::new(),
            requester: Requester { account_id: Some(AccountId::new()), user_id: None, email: None, name: String::new() },
            subject: "s".into(),
            category: TicketCategory::Other,
            status: TicketStatus::New,
            priority: TicketPriority::Low,
            queue: TicketQueue::Technical,
            assignee: Some(agent),
            tier_at_intake: Tier::Free,
            tier_now: Tier::Free,
            channel: Channel::Portal,
            priority_reasons: vec!["tier free".into()],
            manual_override: true,
            manual_reason: Some("VIP".into()),
            first_answered_at: None,
            created_at: now,
            updated_at: now,
            clocks: Clocks::default(),
        };
        let view = TicketView {
            ticket,
            messages: vec![Message {
                id: uuid::Uuid::now_v7(),
                author: Author::Agent,
                author_user_id: Some(agent),
                body: "hi".into(),
                created_at: now,
            }],
            notes: vec![Note { id: uuid::Uuid::now_v7(), author_user_id: agent, body: "internal".into(), created_at: now }],
            activity: vec![Activity { id: uuid::Uuid::now_v7(), at: now, actor: None, action: "opened".into(), detail: "d".into() }],
            drafts: Vec::new(),
        }
        .for_customer();
        assert!(view.notes.is_empty() && view.activity.is_empty() && view.ticket.priority_reasons.is_empty());
        assert_eq!((view.ticket.assignee, view.ticket.manual_reason, view.messages[0].author_user_id), (None, None, None));
    }
}
