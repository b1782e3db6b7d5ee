//! Identity's rules, free of I/O: password policy, names, session tokens, what each email says.

use std::fmt;

use chrono::{DateTime, Utc};
use sb_bus::events::EmailTemplate;
pub use sb_runtime::caller::Principal;
use sha2::{Digest, Sha256};

pub use sb_types::{AccountId, Email, Invalid, Role, UserId, parse_name};

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid::new(field, message)
}

/// A password that meets the policy. Never printed: its Debug is redacted.
pub struct Password(String);

impl Password {
    pub const MIN: usize = sb_types::PASSWORD_MIN_CHARS;
    pub const MAX: usize = sb_types::PASSWORD_MAX_CHARS;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let n = raw.chars().count();
        if n < Self::MIN {
            return Err(invalid("password", format!("must be at least {} characters", Self::MIN)));
        }
        if n > Self::MAX {
            return Err(invalid("password", format!("must be at most {} characters", Self::MAX)));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A person who signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub account_id: AccountId,
    pub email: Email,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A tenant: a customer company, or the founder's own team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A live session resolved from its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: uuid::Uuid,
    pub principal: Principal,
    pub expires_at: DateTime<Utc>,
}

/// A session token, shown to its owner once. `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    pub fn new() -> Self {
        Self(token::generate())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Default for SessionToken {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(***)")
    }
}

/// A new session: its token (shown once) and expiry.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: SessionToken,
    pub expires_at: DateTime<Utc>,
}

/// What sign-up or log-in hands the user.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user: User,
    pub session: NewSession,
}

/// An amount in minor units as people read it: `19.00 USD`.
pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02} {}", abs / 100, abs % 100, currency.to_uppercase())
}

/// An email's subject and plain-text body.
pub fn render(name: &str, template: &EmailTemplate) -> (String, String) {
    let hello = if name.trim().is_empty() { "there" } else { name.trim() };
    match template {
        EmailTemplate::Welcome { account_name } => (
            "Welcome to your portal".to_owned(),
            format!(
                "Hello {hello},\n\nyour account {account_name} is ready. Sign in to the portal with this email address.\n\n— The team\n"
            ),
        ),
        EmailTemplate::PaymentFailed { amount_due, currency, next_payment_attempt } => {
            let next = match next_payment_attempt {
                Some(t) => format!("We will try again on {}.", t.format("%Y-%m-%d")),
                None => "We will not try again automatically.".to_owned(),
            };
            (
                "Your payment did not go through".to_owned(),
                format!(
                    "Hello {hello},\n\nwe could not collect {} for your subscription. {next} Update your payment method in the \
                     billing portal to keep your access.\n\n— The team\n",
                    money(*amount_due, currency)
                ),
            )
        }
        EmailTemplate::RefundIssued { amount_refunded, currency, full } => (
            "Your refund is on its way".to_owned(),
            format!(
                "Hello {hello},\n\nwe refunded {}{}. It can take a few days to show on your statement.\n\n— The team\n",
                money(*amount_refunded, currency),
                if *full { " in full" } else { "" }
            ),
        ),
        EmailTemplate::TicketReceived { ticket_id, subject } => (
            format!("We received your request: {subject}"),
            format!(
                "Hello {hello},\n\nthanks for writing. Your request \"{subject}\" has reached our team (ticket {ticket_id}); we will answer \
                 here and in the portal.\n\n— The team\n"
            ),
        ),
        EmailTemplate::TicketAnswered { ticket_id, subject, answer } => (
            format!("Re: {subject}"),
            format!("Hello {hello},\n\n{answer}\n\n— The team\n(ticket {ticket_id}: reply in the portal to continue)\n"),
        ),
        EmailTemplate::TicketEscalated { ticket_id, subject } => (
            format!("We are on it: {subject}"),
            format!(
                "Hello {hello},\n\nyour request \"{subject}\" (ticket {ticket_id}) needs a person's attention first: someone on our team \
                 is looking at it now.\n\n— The team\n"
            ),
        ),
        EmailTemplate::TicketResolved { ticket_id, subject } => (
            format!("Resolved: {subject}"),
            format!(
                "Hello {hello},\n\nyour request \"{subject}\" (ticket {ticket_id}) is resolved. If anything is still wrong, reply in the \
                 portal and it reopens.\n\n— The team\n"
            ),
        ),
        EmailTemplate::SlaBreached { ticket_id, subject, clock, due_at, priority, queue } => (
            format!("SLA missed ({}): {subject}", clock.as_str().replace('_', " ")),
            format!(
                "Hello {hello},\n\nticket {ticket_id} (\"{subject}\", {priority} priority, {queue} queue) missed its {} target, due \
                 {}.\n",
                clock.as_str().replace('_', " "),
                due_at.format("%Y-%m-%d %H:%M UTC")
            ),
        ),
    }
}

/// Opaque session tokens: 32 random bytes, URL-safe; only their SHA-256 is stored.
pub mod token {
    use base64::Engine;
    use rand::RngCore;

    use super::*;

    pub const PREFIX: &str = "sbs_";

    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn hash(token: &str) -> Vec<u8> {
        Sha256::digest(token.as_bytes()).to_vec()
    }

    /// Cheap shape check before any database work: refuses junk without a lookup.
    pub fn well_formed(token: &str) -> bool {
        token.len() == PREFIX.len() + 43
            && token.starts_with(PREFIX)
            && token[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy_and_redaction() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(257)).is_err());
        let p = Password::parse("correct horse battery").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name("name", "  Ada  ").unwrap(), "Ada");
        assert!(parse_name("name", "   ").is_err());
        assert!(parse_name("name", &"n".repeat(101)).is_err());
        assert!(parse_name("name", "a\u{0}b").is_err());
    }

    #[test]
    fn emails_say_what_happened_in_words() {
        let (subject, body) = render("Ada", &EmailTemplate::Welcome { account_name: "Engines Ltd".into() });
        assert_eq!(subject, "Welcome to your portal");
        assert!(body.starts_with("Hello Ada,") && body.contains("Engines Ltd"), "{body}");
        let (subject, body) =
            render("", &EmailTemplate::PaymentFailed { amount_due: 4900, currency: "usd".into(), next_payment_attempt: None });
        assert_eq!(subject, "Your payment did not go through");
        assert!(body.starts_with("Hello there,") && body.contains("49.00 USD"), "{body}");
        let (_, body) = render("Ada", &EmailTemplate::RefundIssued { amount_refunded: 1905, currency: "eur".into(), full: false });
        assert!(body.contains("19.05 EUR.") && !body.contains("in full"), "{body}");
        let id = sb_types::TicketId::new();
        let (subject, body) =
            render("Ada", &EmailTemplate::TicketAnswered { ticket_id: id, subject: "Invoice".into(), answer: "Fixed it.".into() });
        assert_eq!(subject, "Re: Invoice");
        assert!(body.contains("Fixed it.") && body.contains(&id.to_string()), "{body}");
        assert_eq!(money(-5, "usd"), "-0.05 USD");
        assert_eq!(format!("{:?}", SessionToken::new()), "SessionToken(***)");
    }

    #[test]
    fn tokens_are_random_well_formed_and_hashed() {
        let (a, b) = (token::generate(), token::generate());
        assert_ne!(a, b);
        assert!(token::well_formed(&a), "{a}");
        assert!(!token::well_formed("sbs_short"));
        assert!(!token::well_formed(&a.replace("sbs_", "xxx_")));
        assert_eq!(token::hash(&a).len(), 32);
        assert_ne!(token::hash(&a), token::hash(&b));
    }
}
