//! Sends the emails identity requests through the bus (`identity.email.requested.v1`), so an SMTP
//! outage delays mail on the retry ladder and never loses or doubles it.

use std::sync::Arc;

use sb_bus::{Envelope, Handler, HandlerError};
use sb_mail::{Email, MailError, Mailer};
use serde::Deserialize;
use sqlx::PgConnection;

#[derive(Deserialize)]
struct Requested {
    template: String,
    to: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    account_name: String,
}

/// Renders a template into subject and body; an unknown template is a permanent failure.
fn render(r: &Requested) -> Result<(String, String), HandlerError> {
    match r.template.as_str() {
        "welcome" => Ok((
            "Welcome to your portal".to_owned(),
            format!(
                "Hello {},\n\nyour account {} is ready. Sign in to the portal with this email address.\n\n— The team\n",
                if r.name.is_empty() { "there" } else { &r.name },
                r.account_name
            ),
        )),
        other => Err(HandlerError::permanent(format!("unknown email template {other:?}"))),
    }
}

pub struct SendEmail {
    pub mailer: Arc<dyn Mailer>,
}

#[async_trait::async_trait]
impl Handler for SendEmail {
    async fn handle(&self, event: &Envelope, _tx: &mut PgConnection) -> Result<(), HandlerError> {
        let req: Requested =
            serde_json::from_value(event.data.clone()).map_err(|e| HandlerError::permanent(format!("invalid email request: {e}")))?;
        let (subject, text_body) = render(&req)?;
        // The event id is the email's idempotency key (mailbox row id, SMTP Message-ID).
        let email = Email { id: event.id, to: req.to, subject, text_body, template: req.template };
        match self.mailer.send(&email).await {
            Ok(()) => {
                metrics::counter!("identity_emails_sent_total", "transport" => self.mailer.name()).increment(1);
                Ok(())
            }
            Err(MailError::Transient(m)) => Err(HandlerError::Transient(format!("{} unavailable: {m}", self.mailer.name()))),
            Err(MailError::Permanent(m)) => Err(HandlerError::Permanent(format!("{} refused the email: {m}", self.mailer.name()))),
        }
    }

    /// Sending is an outside effect: never re-run because another event in a batch failed.
    fn batchable(&self) -> bool {
        false
    }
}
