//! What the portal tells people, without I/O: access and CRM sync states in plain words, amounts,
//! times, and the shapes of ids the gateway accepts in paths.

use chrono::{DateTime, Utc};
pub use sb_types::{AccessStatus, TicketStatus};

/// What an access status means for the user.
pub fn access_message(status: AccessStatus, plan: &str, reason: &str) -> String {
    match status {
        AccessStatus::None => "No subscription yet".to_owned(),
        AccessStatus::Pending => format!("Pending provisioning: {}", if reason.is_empty() { "payment not confirmed yet" } else { reason }),
        AccessStatus::Active => format!("Active on the {plan} plan"),
        AccessStatus::PastDue => "Payment failed: access continues during the grace period".to_owned(),
        AccessStatus::Revoked => format!("Access ended: {reason}"),
    }
}

/// How one user's CRM sync stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    Synced,
    /// Waiting for the CRM (first attempt not made yet, or retrying).
    Pending,
    /// Gave up: the event is in crm-sync's DLQ, replayable by an operator.
    Failed,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "synced",
            SyncStatus::Pending => "pending",
            SyncStatus::Failed => "failed",
        }
    }
}

/// One user's sync as crm-sync reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sync {
    pub status: SyncStatus,
    pub crm: String,
    pub crm_contact_id: String,
    pub lifecycle_stage: String,
    pub last_error: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub synced_at: Option<DateTime<Utc>>,
}

/// A time for a status line: the time of day when it is today (UTC), else date and time.
pub fn when(t: DateTime<Utc>) -> String {
    if t.date_naive() == Utc::now().date_naive() { t.format("%H:%M:%SZ").to_string() } else { t.format("%Y-%m-%d %H:%M:%SZ").to_string() }
}

fn crm_label(crm: &str) -> &str {
    match crm {
        "hubspot" => "HubSpot",
        "contact_book" => "the contact book",
        other => other,
    }
}

impl Sync {
    /// The line staff read, e.g. "CRM sync pending (next attempt 12:03:10Z: HubSpot 503 ...)".
    pub fn staff_line(&self) -> String {
        match self.status {
            SyncStatus::Synced => format!(
                "CRM synced: contact {} in {}, stage {}{}",
                self.crm_contact_id,
                crm_label(&self.crm),
                self.lifecycle_stage,
                self.synced_at.map(|t| format!(" (at {})", when(t))).unwrap_or_default()
            ),
            SyncStatus::Failed => format!(
                "CRM sync failed after {} attempt(s): {} (parked in crm-sync's DLQ; replay it once the cause is fixed)",
                self.attempts,
                if self.last_error.is_empty() { "no reason recorded" } else { &self.last_error }
            ),
            SyncStatus::Pending => match (self.next_attempt_at, self.last_error.is_empty()) {
                (Some(next), false) => format!("CRM sync pending (next attempt {}: {})", when(next), self.last_error),
                (Some(next), true) => format!("CRM sync pending (next attempt {})", when(next)),
                (None, false) => format!("CRM sync pending ({})", self.last_error),
                (None, true) => "CRM sync pending (first attempt not made yet)".to_owned(),
            },
        }
    }

    /// The line a customer reads about their own sync: the state, never the CRM's error text.
    pub fn customer_line(&self) -> String {
        match self.status {
            SyncStatus::Synced => "Synced with our CRM".to_owned(),
            SyncStatus::Failed => "CRM sync failed: waiting for our team to retry it".to_owned(),
            SyncStatus::Pending => match self.next_attempt_at {
                Some(next) => format!("CRM sync pending: next attempt at {}", when(next)),
                None => "CRM sync pending".to_owned(),
            },
        }
    }
}

/// A ticket's status as its customer reads it: a stable word and a sentence.
pub fn ticket_status_words(s: Option<TicketStatus>) -> (&'static str, &'static str) {
    match s {
        Some(TicketStatus::New) => ("received", "Received: we will answer soon"),
        Some(TicketStatus::Open) => ("waiting_on_us", "Waiting on us: we will answer soon"),
        Some(TicketStatus::WaitingOnCustomer) => ("waiting_on_you", "Waiting on you: we answered and need your reply"),
        Some(TicketStatus::Resolved) => ("resolved", "Resolved"),
        None => ("unknown", "Unknown"),
    }
}

/// An SLA clock in words for the console, e.g. "running: due 14:05:00Z".
pub fn clock_text(state: &str, due_at: Option<DateTime<Utc>>, stopped_at: Option<DateTime<Utc>>) -> String {
    let due = due_at.map(when).unwrap_or_default();
    match state {
        "idle" => "not started".to_owned(),
        "running" if due_at.is_some_and(|d| d < Utc::now()) => format!("running, overdue since {due}"),
        "running" => format!("running: due {due}"),
        "paused" => format!("paused while waiting on the customer (due {due} if it ran on)"),
        "hit" => format!("hit{}", stopped_at.map(|t| format!(" at {}", when(t))).unwrap_or_default()),
        "missed" => format!("missed: was due {due}"),
        other => other.to_owned(),
    }
}

/// An amount in minor units as people read it: `19.00 USD`.
pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02} {}", abs / 100, abs % 100, currency.to_uppercase())
}

/// Text safe to put in HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A Stripe checkout session id (`cs_...`): letters, digits and `_`, at most 128 characters.
pub fn is_checkout_session_id(raw: &str) -> bool {
    raw.starts_with("cs_") && raw.len() <= 128 && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(status: SyncStatus, error: &str, next: Option<DateTime<Utc>>) -> Sync {
        Sync {
            status,
            crm: "hubspot".into(),
            crm_contact_id: if status == SyncStatus::Synced { "501".into() } else { String::new() },
            lifecycle_stage: if status == SyncStatus::Synced { "lead".into() } else { String::new() },
            last_error: error.into(),
            attempts: if error.is_empty() { 0 } else { 2 },
            next_attempt_at: next,
            synced_at: None,
        }
    }

    #[test]
    fn staff_lines_say_what_happened_and_what_comes_next() {
        let next = Utc::now() + chrono::Duration::seconds(30);
        let pending = sync(SyncStatus::Pending, "HubSpot 503: down", Some(next));
        assert_eq!(pending.staff_line(), format!("CRM sync pending (next attempt {}: HubSpot 503: down)", when(next)));
        let failed = sync(SyncStatus::Failed, "HubSpot 400: INVALID_EMAIL", None);
        assert!(
            failed.staff_line().starts_with("CRM sync failed after 2 attempt(s): HubSpot 400: INVALID_EMAIL"),
            "{}",
            failed.staff_line()
        );
        assert_eq!(sync(SyncStatus::Synced, "", None).staff_line(), "CRM synced: contact 501 in HubSpot, stage lead");
        let later = DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default();
        assert_eq!(when(later), "2030-03-17 17:46:40Z");
        let now = Utc::now();
        assert_eq!(when(now), now.format("%H:%M:%SZ").to_string(), "today: the time of day only");
    }

    #[test]
    fn customers_never_see_the_crms_error_text() {
        let next = Utc::now() + chrono::Duration::seconds(30);
        let c = sync(SyncStatus::Pending, "HubSpot 503: upstream connect error", Some(next));
        assert_eq!(c.customer_line(), format!("CRM sync pending: next attempt at {}", when(next)));
        let failed = sync(SyncStatus::Failed, "HubSpot 400: secret detail", None);
        assert!(!failed.customer_line().contains("secret detail"));
        assert_eq!(sync(SyncStatus::Synced, "", None).customer_line(), "Synced with our CRM");
    }

    #[test]
    fn words_for_access_amounts_and_ids() {
        assert_eq!(access_message(AccessStatus::Pending, "", ""), "Pending provisioning: payment not confirmed yet");
        assert_eq!(access_message(AccessStatus::Active, "pro", ""), "Active on the pro plan");
        assert_eq!(money(1900, "usd"), "19.00 USD");
        assert_eq!(escape("<a href='x'>"), "&lt;a href=&#39;x&#39;&gt;");
        assert!(is_checkout_session_id("cs_test_local_abc123"));
        assert!(!is_checkout_session_id("cs_../etc") && !is_checkout_session_id("pi_123"));
    }
}
