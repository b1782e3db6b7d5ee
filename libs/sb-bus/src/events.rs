//! The payload of every catalog event, one type each, shared by producer and consumer: the
//! producer builds an [`crate::Envelope`] from the value ([`crate::Envelope::of`]) and the consumer
//! reads it back with the same type ([`crate::Envelope::decode`]), so both sides agree on the
//! fields by construction. A payload that does not read as its type is parked with the field
//! named.

use chrono::{DateTime, Utc};
use sb_types::{AccessStatus, AccountId, Email, Role, SlaClock, TicketCategory, TicketId, TicketPriority, TicketQueue, UserId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// A catalog event: its versioned type (also its routing key), the one service that publishes
/// it, what it means, and the ids it names (copied onto the envelope).
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Versioned type and routing key, e.g. `billing.access.changed.v1`.
    const TYPE: &'static str;
    /// The only service allowed to publish it.
    const PRODUCER: &'static str;
    const DESCRIPTION: &'static str;
    /// The payload type's name (`AccessChanged`), for the catalog and its checks.
    const PAYLOAD: &'static str = "";

    fn account_id(&self) -> Option<AccountId> {
        None
    }

    fn user_id(&self) -> Option<UserId> {
        None
    }

    /// Rules beyond the field types (checked when decoding); the message names the field.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

macro_rules! event {
    ($ty:ty, $name:literal, $producer:literal, $desc:literal $(, $($body:tt)*)?) => {
        impl Event for $ty {
            const TYPE: &'static str = $name;
            const PRODUCER: &'static str = $producer;
            const DESCRIPTION: &'static str = $desc;
            const PAYLOAD: &'static str = stringify!($ty);
            $($($body)*)?
        }
    };
}

/// A Stripe `event` object whose `Stripe-Signature` verified, exactly as Stripe sent it: the
/// fields the gateway and billing check are typed, everything else is kept as it came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StripeEventReceived {
    /// `evt_...`
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Unix seconds.
    #[serde(deserialize_with = "whole_number")]
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    pub data: StripeEventData,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StripeEventData {
    /// The Stripe object the event is about (checkout session, subscription, invoice, charge, ...).
    pub object: Map<String, Value>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(holds_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// A whole number, also when written with a zero fraction (`1700000000.0`): JSON has one number
/// type, and JSON Schema's `integer` includes those.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!("{n} is not a whole number"))),
    }
}

impl StripeEventReceived {
    /// Reads a webhook body (`None`: not a Stripe event by [`Event::validate`]'s rules).
    pub fn from_slice(body: &[u8]) -> Option<Self> {
        let ev: Self = serde_json::from_slice(body).ok()?;
        ev.validate().ok()?;
        Some(ev)
    }
}

event! {
    StripeEventReceived,
    "stripe.event.received.v1",
    "gateway",
    "A Stripe webhook whose signature verified; `data` is Stripe's event object, unchanged.",
    fn validate(&self) -> Result<(), String> {
        let text = |v: &str| !v.is_empty() && v.chars().count() <= 255;
        if !(text(&self.id) && self.id.starts_with("evt_")) {
            return Err("id: must be a Stripe event id (evt_...)".into());
        }
        if !text(&self.event_type) {
            return Err("type: must be 1 to 255 characters".into());
        }
        // Unix seconds up to the end of year 9999: what a timestamp can hold.
        if !(0..=253_402_300_799).contains(&self.created) {
            return Err("created: must be a Unix time in seconds (0 to 253402300799)".into());
        }
        // Stripe never sends one, and PostgreSQL cannot store JSON holding one.
        let in_data = self.data.object.iter().chain(&self.data.rest).any(|(k, v)| k.contains('\0') || holds_nul(v));
        if in_data
            || self.rest.iter().any(|(k, v)| k.contains('\0') || holds_nul(v))
            || self.id.contains('\0')
            || self.event_type.contains('\0')
        {
            return Err("holds a NUL character (\\u0000), which Stripe never sends".into());
        }
        Ok(())
    }
}

/// A new account and its first user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSignedUp {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub email: Email,
    pub name: String,
    pub account_name: String,
    pub role: Role,
}

event! {
    UserSignedUp,
    "identity.user.signed_up.v1",
    "identity",
    "A new account and its first user exist; `data` has the ids, email (normalised), name, account name and role.",
    fn account_id(&self) -> Option<AccountId> {
        Some(self.account_id)
    }
    fn user_id(&self) -> Option<UserId> {
        Some(self.user_id)
    }
}

/// A user's profile as it is now, after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpdated {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub email: Email,
    pub name: String,
}

event! {
    UserUpdated,
    "identity.user.updated.v1",
    "identity",
    "A user's profile changed; `data` has the ids and the profile as it is now (email, name).",
    fn account_id(&self) -> Option<AccountId> {
        Some(self.account_id)
    }
    fn user_id(&self) -> Option<UserId> {
        Some(self.user_id)
    }
}

/// An email to send exactly once; the event id is its idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailRequested {
    pub to: Email,
    /// The recipient's name for the greeting (may be empty).
    #[serde(default)]
    pub name: String,
    pub account_id: Option<AccountId>,
    pub user_id: Option<UserId>,
    #[serde(flatten)]
    pub template: EmailTemplate,
}

/// What an email says, with the values it needs (`template` on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "template", rename_all = "snake_case")]
pub enum EmailTemplate {
    Welcome {
        account_name: String,
    },
    /// A subscription payment failed: update the card before access ends.
    PaymentFailed {
        amount_due: i64,
        currency: String,
        /// When Stripe tries again, if it does.
        next_payment_attempt: Option<DateTime<Utc>>,
    },
    RefundIssued {
        amount_refunded: i64,
        currency: String,
        full: bool,
    },
    /// A ticket was received (contact form or portal).
    TicketReceived {
        ticket_id: TicketId,
        subject: String,
    },
    /// An agent answered a ticket.
    TicketAnswered {
        ticket_id: TicketId,
        subject: String,
        answer: String,
    },
    /// A ticket was judged urgent: a person looks at it first.
    TicketEscalated {
        ticket_id: TicketId,
        subject: String,
    },
    TicketResolved {
        ticket_id: TicketId,
        subject: String,
    },
    /// To staff: a ticket's SLA clock passed its target.
    SlaBreached {
        ticket_id: TicketId,
        subject: String,
        clock: SlaClock,
        due_at: DateTime<Utc>,
        priority: TicketPriority,
        queue: TicketQueue,
    },
}

impl EmailTemplate {
    pub fn name(&self) -> &'static str {
        match self {
            EmailTemplate::Welcome { .. } => "welcome",
            EmailTemplate::PaymentFailed { .. } => "payment_failed",
            EmailTemplate::RefundIssued { .. } => "refund_issued",
            EmailTemplate::TicketReceived { .. } => "ticket_received",
            EmailTemplate::TicketAnswered { .. } => "ticket_answered",
            EmailTemplate::TicketEscalated { .. } => "ticket_escalated",
            EmailTemplate::TicketResolved { .. } => "ticket_resolved",
            EmailTemplate::SlaBreached { .. } => "sla_breached",
        }
    }
}

event! {
    EmailRequested,
    "identity.email.requested.v1",
    "identity",
    "An email is to be sent exactly once (welcome, payment failed, refund issued); `data` has to, name, template and its values.",
    fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
    fn user_id(&self) -> Option<UserId> {
        self.user_id
    }
}

/// An account's portal access moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessChanged {
    pub account_id: AccountId,
    pub from: AccessStatus,
    pub to: AccessStatus,
    /// The plan's name (empty while none is known).
    pub plan: String,
    /// What the plan unlocks while access is granted (empty otherwise).
    pub entitlements: Vec<String>,
    /// Why, in words (e.g. "payment failed; grace until ...").
    pub reason: String,
    /// The Stripe event behind the change (empty for a sweep, e.g. grace ended).
    pub cause_event_id: String,
    pub cause_event_type: String,
    pub stripe_customer_id: Option<String>,
    pub grace_until: Option<DateTime<Utc>>,
    /// When billing decided it; consumers apply a change only if it is newer than what they know.
    pub since: DateTime<Utc>,
}

event! {
    AccessChanged,
    "billing.access.changed.v1",
    "billing",
    "An account's portal access moved (none/pending/active/past_due/revoked); `data` has from, to, plan, entitlements, reason, cause and since.",
    fn account_id(&self) -> Option<AccountId> {
        Some(self.account_id)
    }
}

/// A subscription invoice could not be paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    /// `None` while no account is linked to the Stripe customer yet.
    pub account_id: Option<AccountId>,
    pub stripe_event_id: String,
    pub stripe_customer_id: String,
    pub invoice_id: String,
    pub subscription_id: Option<String>,
    /// Minor units (cents).
    pub amount_due: i64,
    pub currency: String,
    pub attempt_count: i64,
    pub next_payment_attempt: Option<DateTime<Utc>>,
}

event! {
    PaymentFailed,
    "billing.payment.failed.v1",
    "billing",
    "An invoice payment failed; `data` has invoice id, amount, currency, attempt count and next attempt.",
    fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
}

/// A charge was refunded (in full or in part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundIssued {
    pub account_id: Option<AccountId>,
    pub stripe_event_id: String,
    pub stripe_customer_id: String,
    pub charge_id: String,
    /// The charge's amount and how much of it is refunded so far (minor units).
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub full: bool,
}

event! {
    RefundIssued,
    "billing.refund.issued.v1",
    "billing",
    "A charge was refunded; `data` has charge id, amount, amount refunded, currency and whether in full.",
    fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
}

/// Who a ticket is from, as every support event names them (for the emails identity sends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// `None` for a contact-form ticket whose email belongs to no known user.
    pub account_id: Option<AccountId>,
    pub user_id: Option<UserId>,
    pub email: Email,
    pub name: String,
}

/// A ticket was opened and routed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketOpened {
    pub ticket_id: TicketId,
    pub requester: Requester,
    pub subject: String,
    pub category: TicketCategory,
    pub priority: TicketPriority,
    pub queue: TicketQueue,
    /// The support tier of the account's plan (`free`, ...).
    pub tier: String,
    /// `portal` or `contact_form`.
    pub channel: String,
}

event! {
    TicketOpened,
    "support.ticket.opened.v1",
    "support-router",
    "A ticket was opened and routed; `data` has the ticket id, requester, subject, category, priority, queue, tier and channel.",
    fn account_id(&self) -> Option<AccountId> {
        self.requester.account_id
    }
    fn user_id(&self) -> Option<UserId> {
        self.requester.user_id
    }
}

/// Who wrote a public message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageAuthor {
    Customer,
    Agent,
}

/// A public message was added to a ticket's thread (a customer's reply or an agent's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketMessageAdded {
    pub ticket_id: TicketId,
    pub requester: Requester,
    pub subject: String,
    pub message_id: uuid::Uuid,
    pub author: MessageAuthor,
    pub author_user_id: Option<UserId>,
    /// The message itself (public: the customer sees it in their thread).
    pub body: String,
    /// The ticket's category (so a consumer needs no other event to act on the message; absent
    /// from messages published before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<TicketCategory>,
}

event! {
    TicketMessageAdded,
    "support.ticket.message_added.v1",
    "support-router",
    "A public message joined a ticket's thread; `data` has the ticket id, requester, author and the message (agents' answers are emailed to the customer).",
    fn account_id(&self) -> Option<AccountId> {
        self.requester.account_id
    }
    fn user_id(&self) -> Option<UserId> {
        self.requester.user_id
    }
}

/// A ticket's priority or queue changed (by routing, a plan change, or a person).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketPrioritised {
    pub ticket_id: TicketId,
    pub requester: Requester,
    pub subject: String,
    pub from_priority: TicketPriority,
    pub to_priority: TicketPriority,
    pub from_queue: TicketQueue,
    pub to_queue: TicketQueue,
    /// Why, in words (internal: never shown to the customer).
    pub reasons: Vec<String>,
    /// The person who changed it; `None` for routing rules.
    pub by: Option<UserId>,
}

event! {
    TicketPrioritised,
    "support.ticket.prioritised.v1",
    "support-router",
    "A ticket's priority or queue changed; `data` has from/to priority and queue, the reasons and who (none for the rules).",
    fn account_id(&self) -> Option<AccountId> {
        self.requester.account_id
    }
}

/// One of a ticket's SLA clocks passed its target (published once per clock and spell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaBreached {
    pub ticket_id: TicketId,
    pub requester: Requester,
    pub subject: String,
    pub clock: SlaClock,
    pub due_at: DateTime<Utc>,
    pub priority: TicketPriority,
    pub queue: TicketQueue,
    pub assignee: Option<UserId>,
}

event! {
    SlaBreached,
    "support.ticket.sla_breached.v1",
    "support-router",
    "A ticket's SLA clock passed its target; `data` has the clock, when it was due, priority, queue and assignee (staff are emailed).",
    fn account_id(&self) -> Option<AccountId> {
        self.requester.account_id
    }
}

/// A ticket was resolved (by an agent) or closed (by its customer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketResolved {
    pub ticket_id: TicketId,
    pub requester: Requester,
    pub subject: String,
    pub by: Option<UserId>,
    pub by_customer: bool,
}

event! {
    TicketResolved,
    "support.ticket.resolved.v1",
    "support-router",
    "A ticket was resolved by an agent or closed by its customer; `data` has the ticket id, requester and who.",
    fn account_id(&self) -> Option<AccountId> {
        self.requester.account_id
    }
    fn user_id(&self) -> Option<UserId> {
        self.requester.user_id
    }
}

/// Where an AI draft came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftSource {
    /// The configured OpenAI-compatible model.
    Model,
    /// The deterministic local drafter (no model configured).
    Local,
}

/// ai-assist drafted a reply for a ticket; every guardrail passed. Staff-only: the customer sees
/// nothing of it until an agent approves a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiDraftReady {
    pub ticket_id: TicketId,
    pub account_id: Option<AccountId>,
    pub draft_id: uuid::Uuid,
    /// The customer message the draft answers.
    pub for_message_id: uuid::Uuid,
    /// For agents: what the customer needs.
    pub summary: String,
    /// Advisory.
    pub suggested_category: TicketCategory,
    /// Advisory: support-router may raise a priority with it, never lower one, and never moves a
    /// ticket out of human review.
    pub suggested_urgency: TicketPriority,
    pub reply: String,
    pub source: DraftSource,
    /// The model's name (`local` for the local drafter).
    pub model: String,
}

event! {
    AiDraftReady,
    "ai.draft.ready.v1",
    "ai-assist",
    "A reply draft passed every guardrail; `data` has the ticket, the message it answers, a summary, the advisory category and urgency, and the draft (for staff only).",
    fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
}

/// Why no draft is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftFailure {
    /// The customer's text tripped the prompt-injection check: no model was asked; a person
    /// must handle the ticket.
    Flagged,
    /// The draft broke a guardrail (kept by ai-assist for audit, never offered).
    Guardrail,
    /// The account's daily token budget is used up.
    Budget,
    /// The model could not be reached or refused, and the retries ran out.
    Unavailable,
}

/// ai-assist offers no draft for a ticket's message, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiDraftFailed {
    pub ticket_id: TicketId,
    pub account_id: Option<AccountId>,
    pub draft_id: uuid::Uuid,
    pub for_message_id: uuid::Uuid,
    pub failure: DraftFailure,
    /// In words, for staff (the rules that matched; never the customer's text or a secret).
    pub reason: String,
}

event! {
    AiDraftFailed,
    "ai.draft.failed.v1",
    "ai-assist",
    "No draft is offered for a ticket's message: flagged for prompt injection, refused by a guardrail, over budget, or the model unavailable; `data` has the ticket, the message and the reason.",
    fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn email_templates_travel_flat_with_their_name() {
        let e = EmailRequested {
            to: Email::parse("ada@example.com").unwrap(),
            name: "Ada".into(),
            account_id: None,
            user_id: None,
            template: EmailTemplate::Welcome { account_name: "Engines".into() },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["template"], "welcome");
        assert_eq!(v["account_name"], "Engines");
        assert_eq!(serde_json::from_value::<EmailRequested>(v).unwrap(), e);
        let unknown = json!({"to": "ada@example.com", "template": "password_reset", "account_id": null, "user_id": null});
        assert!(serde_json::from_value::<EmailRequested>(unknown).unwrap_err().to_string().contains("password_reset"));
    }

    #[test]
    fn stripe_events_keep_every_field_and_refuse_what_is_not_one() {
        let raw = json!({"id": "evt_1", "object": "event", "type": "invoice.paid", "created": 1_700_000_000, "livemode": false,
            "api_version": "2024-06-20", "data": {"object": {"id": "in_1", "object": "invoice"}, "previous_attributes": {}}});
        let ev = StripeEventReceived::from_slice(raw.to_string().as_bytes()).unwrap();
        assert_eq!(serde_json::to_value(&ev).unwrap(), raw);
        assert_eq!(ev.data.object["id"], "in_1");
        let with = |k: &str, v: Value| {
            let mut r = raw.clone();
            r[k] = v;
            StripeEventReceived::from_slice(r.to_string().as_bytes())
        };
        assert!(with("id", json!("cs_1")).is_none());
        assert!(with("id", json!(7)).is_none());
        assert!(with("type", json!("x".repeat(256))).is_none());
        assert!(with("type", json!("")).is_none());
        assert!(with("created", json!("yesterday")).is_none());
        assert!(with("created", json!(1.5)).is_none());
        assert_eq!(with("created", json!(1_700_000_000.0)).map(|e| e.created), Some(1_700_000_000));
        assert!(with("livemode", json!("no")).is_none());
        assert!(with("data", json!({"object": "in_1"})).is_none());
        assert!(with("data", json!({})).is_none());
        assert!(with("livemode", json!(true)).is_some_and(|e| e.livemode));
        assert!(with("data", json!({"object": {"name": ["a\u{0}b"]}})).is_none(), "a NUL is refused, not stored");
        assert!(with("data", json!({"object": {"name": "a\\u0000b"}})).is_some(), "a backslash and u0000 are just text");
        for bad in [&b"[]"[..], b"\"evt_1\"", b"{not json", b""] {
            assert!(StripeEventReceived::from_slice(bad).is_none());
        }
    }
}
