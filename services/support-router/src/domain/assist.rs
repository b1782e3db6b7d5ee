//! AI help on a ticket, as support-router keeps it: ai-assist's drafts attached as suggestions only
//! staff see, and the rules for what a suggestion may do. Code, not prompt text, decides:
//! - a draft is offered only if it repeats no internal note of the ticket;
//! - a suggested urgency may raise a priority, never lower one, and never changes a priority a
//!   person set; urgent moves a ticket into human review, nothing moves one out;
//! - a ticket flagged for prompt injection goes to human review, and its suggestions are not
//!   applied;
//! - a draft reaches the customer only when an agent approves it (as is or edited), once.

use chrono::{DateTime, Utc};
use sb_types::{TicketCategory, TicketPriority, TicketQueue, UserId};
use uuid::Uuid;

sb_types::word_enum!(
    /// Where one draft stands.
    DraftState, "draft state" {
        /// Passed every guardrail; an agent may approve or reject it.
        Offered = "offered",
        /// Sent to the customer as an agent's answer (possibly edited).
        Approved = "approved",
        Rejected = "rejected",
        /// A newer draft for the ticket arrived before anyone decided on this one.
        Superseded = "superseded",
        /// Refused here (it repeated an internal note) or by ai-assist's guardrails.
        Refused = "refused",
        /// The customer's text tripped the injection check: a person handles the ticket.
        Flagged = "flagged",
        /// The model could not be used (outage, refusal, budget).
        Unavailable = "unavailable",
    }
);

/// One draft from ai-assist, as staff see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub id: Uuid,
    /// The customer message it answers.
    pub for_message_id: Uuid,
    pub state: DraftState,
    pub summary: String,
    pub suggested_category: Option<TicketCategory>,
    pub suggested_urgency: Option<TicketPriority>,
    pub reply: String,
    /// `model` or `local` (empty when nothing was drafted).
    pub source: String,
    pub model: String,
    /// Why it is refused, flagged or unavailable.
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub decided_by: Option<UserId>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The agent's answer an approval sent.
    pub sent_message_id: Option<Uuid>,
}

impl Draft {
    /// A draft with nothing proposed (what a failure records); fill in the rest with `..`.
    pub fn bare(id: Uuid, for_message_id: Uuid, state: DraftState, reason: String, created_at: DateTime<Utc>) -> Self {
        Self {
            id,
            for_message_id,
            state,
            summary: String::new(),
            suggested_category: None,
            suggested_urgency: None,
            reply: String::new(),
            source: String::new(),
            model: String::new(),
            reason,
            created_at,
            decided_by: None,
            decided_at: None,
            sent_message_id: None,
        }
    }
}

/// What the ticket shows about AI help for its latest customer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiState {
    /// "AI draft pending": ai-assist has not answered yet (or is retrying).
    Pending,
    /// A draft is offered (or was decided on).
    Ready,
    /// "AI draft unavailable": refused, over budget or the model could not be used.
    Unavailable,
    /// Flagged for prompt injection: a person handles it.
    Flagged,
}

impl AiState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Unavailable => "unavailable",
            Self::Flagged => "flagged",
        }
    }

    /// The state for the latest customer message, from the ticket's drafts.
    pub fn of(latest_customer_message: Option<Uuid>, drafts: &[Draft]) -> Self {
        let Some(m) = latest_customer_message else { return Self::Ready };
        match drafts.iter().filter(|d| d.for_message_id == m).max_by_key(|d| d.created_at).map(|d| d.state) {
            None => Self::Pending,
            Some(DraftState::Flagged) => Self::Flagged,
            Some(DraftState::Refused | DraftState::Unavailable) => Self::Unavailable,
            Some(DraftState::Offered | DraftState::Approved | DraftState::Rejected | DraftState::Superseded) => Self::Ready,
        }
    }
}

/// What a suggested urgency does to a ticket: `Some((priority, queue))` when it raises the
/// priority. Never lowers, never touches a person's choice, never leaves human review; urgent goes
/// to human review.
pub fn raise(
    priority: TicketPriority,
    queue: TicketQueue,
    manual: bool,
    suggested: TicketPriority,
) -> Option<(TicketPriority, TicketQueue)> {
    if manual || suggested <= priority {
        return None;
    }
    let queue = if suggested == TicketPriority::Urgent { TicketQueue::HumanReview } else { queue };
    Some((suggested, queue))
}

/// Words of `s`, lowercase, letters and digits only.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Whether `reply` repeats an internal note: the whole of a short note, or any run of eight words
/// of a longer one.
pub fn repeats_note(reply: &str, notes: &[&str]) -> bool {
    const RUN: usize = 8;
    let reply = format!(" {} ", words(reply).join(" "));
    notes.iter().any(|n| {
        let w = words(n);
        if w.is_empty() {
            return false;
        }
        if w.len() <= RUN {
            return w.len() >= 3 && reply.contains(&format!(" {} ", w.join(" ")));
        }
        w.windows(RUN).any(|run| reply.contains(&format!(" {} ", run.join(" "))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_only_raise_and_never_leave_human_review() {
        use TicketPriority::*;
        assert_eq!(raise(Normal, TicketQueue::Billing, false, High), Some((High, TicketQueue::Billing)));
        assert_eq!(raise(High, TicketQueue::Billing, false, Normal), None);
        assert_eq!(raise(Normal, TicketQueue::Billing, true, Urgent), None);
        assert_eq!(raise(High, TicketQueue::Technical, false, Urgent), Some((Urgent, TicketQueue::HumanReview)));
        assert_eq!(raise(Urgent, TicketQueue::HumanReview, false, Low), None);
        assert_eq!(raise(Low, TicketQueue::HumanReview, false, High), Some((High, TicketQueue::HumanReview)));
    }

    #[test]
    fn notes_repeated_in_a_reply_are_found() {
        let notes = ["Customer is on the watch list; do not refund without manager sign-off", "VIP"];
        assert!(repeats_note("Hello! Customer is on the watch list; do not refund without manager sign-off.", &notes));
        assert!(!repeats_note("Hello, our billing team will review the charge.", &notes));
        assert!(repeats_note("FYI: a known bug in export", &["known bug in export"]));
    }
}
