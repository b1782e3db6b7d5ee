//! Email adapters for Switchboard.
//!
//! A service asks for an email by publishing `identity.email.requested.v1`; its handler builds an
//! [`Email`] whose [`Email::id`] is that event's id and hands it to a [`Mailer`]. The id is the
//! idempotency key all the way down:
//!
//! - [`MailboxMailer`] (the embedded default) stores the email in the service database table
//!   `sb_mailbox` keyed by that id, so a redelivered event stores nothing new;
//! - [`SmtpMailer`] sends it over plain SMTP with `Message-ID: <{id}@switchboard>`, so a send that
//!   is retried after an ambiguous failure is recognisable (and deduplicated) downstream.
//!
//! Failures are classified for the bus's retry ladder: [`MailError::Transient`] (the SMTP server is
//! down, slow, or answered 4xx: retry later) or [`MailError::Permanent`] (5xx, an address that
//! cannot be parsed: retrying cannot help, park it). An SMTP outage therefore delays mail without
//! losing it. Error strings never contain the SMTP password.
//!
//! TLS (SMTPS / STARTTLS) is not supported yet: this crate talks plain SMTP to a local server or a
//! relay on a trusted network. Adding it is a follow-up (lettre's `tokio1-rustls` feature).

mod mailbox;
mod smtp;

pub use mailbox::{MailboxMailer, StoredEmail};
pub use smtp::{ConfigError, DEFAULT_FROM, DEFAULT_PORT, DEFAULT_TIMEOUT, SmtpConfig, SmtpMailer};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One email to send. `Debug` leaves the body out (it may carry a sign-in or reset link).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// Idempotency key: the id of the bus event that requested this email.
    pub id: Uuid,
    /// The recipient, `user@example.com` or `Name <user@example.com>`.
    pub to: String,
    pub subject: String,
    /// The plain-text body.
    pub text_body: String,
    /// Which template produced it (`welcome`, `password_reset`, ...), for logs and the mailbox.
    pub template: String,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("id", &self.id)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("text_body", &format_args!("<{} bytes>", self.text_body.len()))
            .field("template", &self.template)
            .finish()
    }
}

/// Why an email was not sent, and so what the caller does with the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// Worth retrying later: the server is unreachable, timed out, or answered 4xx.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help: a 5xx reply (bad or unknown mailbox), or an invalid address.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl MailError {
    pub fn is_transient(&self) -> bool {
        matches!(self, MailError::Transient(_))
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, MailError::Permanent(_))
    }

    /// The message without the `transient:`/`permanent:` prefix.
    pub fn message(&self) -> &str {
        match self {
            MailError::Transient(m) | MailError::Permanent(m) => m,
        }
    }
}

/// Sends emails. Implementations must be idempotent per [`Email::id`] as far as they can be.
#[async_trait::async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, email: &Email) -> Result<(), MailError>;

    /// A short name for logs and metrics (`smtp`, `mailbox`).
    fn name(&self) -> &'static str;
}

/// Parses a recipient as lettre does for sending, so that every mailer rejects the same addresses.
pub(crate) fn parse_recipient(to: &str) -> Result<lettre::message::Mailbox, MailError> {
    to.trim().parse::<lettre::message::Mailbox>().map_err(|e| MailError::Permanent(format!("invalid recipient address: {e}")))
}
