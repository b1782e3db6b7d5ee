//! ai-assist's types and rules (no I/O): what it knows of a ticket, the prompt it may build from
//! that (`prompt`, an allow-list), the redaction applied before anything leaves (`redact`), the
//! injection check over customer text (`injection`), the check every draft passes before anyone
//! sees it (`guard`) and the deterministic drafter used when no model is configured (`local`).

pub mod guard;
pub mod injection;
pub mod local;
pub mod prompt;
pub mod redact;

use chrono::{DateTime, Utc};
pub use sb_bus::events::MessageAuthor;
pub use sb_types::{AccessStatus, AccountId, TicketCategory, TicketId, TicketPriority, TicketQueue};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What ai-assist keeps of a ticket: from its first message, completed by
/// `support.ticket.opened.v1` (priority, queue and tier stay unknown until that arrives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketContext {
    pub ticket_id: TicketId,
    pub account_id: Option<AccountId>,
    pub subject: String,
    pub category: TicketCategory,
    pub priority: Option<TicketPriority>,
    pub queue: Option<TicketQueue>,
    /// The support tier at intake (`free`, `paid`, ...).
    pub tier: Option<String>,
}

/// One public message of a ticket's thread, as ai-assist stores it: already redacted, with the
/// injection rules its original text tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadMessage {
    pub id: Uuid,
    pub author: MessageAuthor,
    pub body: String,
    pub flags: Vec<String>,
    pub at: DateTime<Utc>,
}

/// The account's plan as billing last announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPlan {
    pub plan: String,
    pub status: AccessStatus,
}

/// What a drafter (the model or the local one) proposes for a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// For agents: what the customer needs, in a sentence or two.
    pub summary: String,
    /// Advisory: what the ticket seems to be about.
    pub category: TicketCategory,
    /// Advisory: how urgent it seems (support-router may raise a priority with it, never lower).
    pub urgency: TicketPriority,
    /// The reply an agent may send (after review).
    pub reply: String,
}

/// Where a draft came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The configured OpenAI-compatible model.
    Model,
    /// The deterministic local drafter (no model configured).
    Local,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Local => "local",
        }
    }
}

/// Token use of one model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl Usage {
    pub fn total(self) -> i64 {
        i64::from(self.prompt_tokens) + i64::from(self.completion_tokens)
    }
}

/// Cuts `s` to at most `max` characters (on a character boundary), marking the cut.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", s[..i].trim_end()),
    }
}

/// Everything ai-assist did for one ticket, for staff: its drafts (failed ones too, with why),
/// each model call, the injection rules its customer text tripped and the account's token use.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketAudit {
    pub ticket_id: TicketId,
    pub account_id: Option<AccountId>,
    /// Sorted, each rule once.
    pub injection_flags: Vec<String>,
    /// Oldest first.
    pub drafts: Vec<DraftRecord>,
    /// Oldest first.
    pub calls: Vec<CallRecord>,
    pub tokens_today: i64,
    pub daily_token_budget: i64,
}

/// A stored draft as the audit shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftRecord {
    pub id: Uuid,
    pub for_message_id: Uuid,
    /// `pending`, `ready` or `failed`.
    pub state: String,
    pub source: Option<String>,
    pub model: Option<String>,
    pub summary: Option<String>,
    pub suggested_category: Option<TicketCategory>,
    pub suggested_urgency: Option<TicketPriority>,
    pub reply: Option<String>,
    pub failure: Option<String>,
    pub reason: Option<String>,
    pub guard_hits: Vec<guard::Hit>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One model call as the audit shows it (request and answer were redacted before they were sent
/// or stored).
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub id: Uuid,
    pub draft_id: Uuid,
    pub model: String,
    /// `ok`, `transient` or `refused`.
    pub outcome: String,
    pub error: Option<String>,
    pub usage: Usage,
    pub latency_ms: f64,
    pub request: serde_json::Value,
    pub response: Option<String>,
    pub at: DateTime<Utc>,
}
