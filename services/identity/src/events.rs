//! identity's bus handlers: sending the emails it asked for (`identity.email.requested.v1`), and
//! telling customers about a failed payment or a refund (`billing.payment.failed.v1`,
//! `billing.refund.issued.v1`). They convert and call the service or the mailer; nothing else.
//!
//! With the embedded mailbox the email is stored in the handler's own transaction, so it is stored
//! exactly once and no second connection is taken; over SMTP it is an outside effect, sent with no
//! transaction open.

use sb_bus::{
    Effect, Envelope, Handler, HandlerError,
    events::{
        EmailRequested, PaymentFailed, RefundIssued, SlaBreached, TicketMessageAdded, TicketOpened, TicketPrioritised, TicketResolved,
    },
};
use sb_mail::{MailError, MailboxMailer, Mailer, SmtpMailer};
use sqlx::{PgConnection, PgPool};
use tracing::info;

use crate::{error::IdentityError, service::Identity};

fn mail_failure(transport: &str, e: MailError) -> HandlerError {
    match e {
        MailError::Transient(m) => HandlerError::transient(format!("{transport} unavailable: {m}")),
        MailError::Permanent(m) => HandlerError::permanent(format!("{transport} refused the email: {m}")),
    }
}

fn service_failure(e: IdentityError) -> HandlerError {
    match e {
        IdentityError::Database(e) => e.into(),
        other => HandlerError::permanent(other),
    }
}

/// Stores the email in the embedded mailbox, in the handler's transaction.
pub struct StoreInMailbox;

#[async_trait::async_trait]
impl Handler<EmailRequested> for StoreInMailbox {
    async fn handle(&self, env: &Envelope, req: EmailRequested, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let email = crate::service::email_for(env.id, &req);
        let new = MailboxMailer::store(tx, &email).await.map_err(|e| mail_failure("mailbox", e))?;
        info!(email_id = %email.id, template = %email.template, mailer = "mailbox", duplicate = !new, "email stored");
        metrics::counter!("identity_emails_sent_total", "transport" => "mailbox").increment(1);
        Ok(())
    }
}

/// Sends the email over SMTP (the event id is its Message-ID, so a repeat is recognisable).
pub struct SendOverSmtp(pub SmtpMailer);

#[async_trait::async_trait]
impl Effect<EmailRequested> for SendOverSmtp {
    async fn run(&self, env: &Envelope, req: EmailRequested, _pool: &PgPool, _inbox: &sb_bus::Inbox) -> Result<(), HandlerError> {
        let email = crate::service::email_for(env.id, &req);
        self.0.send(&email).await.map_err(|e| mail_failure("smtp", e))?;
        metrics::counter!("identity_emails_sent_total", "transport" => "smtp").increment(1);
        Ok(())
    }
}

pub struct TellPaymentFailed(pub Identity);

#[async_trait::async_trait]
impl Handler<PaymentFailed> for TellPaymentFailed {
    async fn handle(&self, env: &Envelope, event: PaymentFailed, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.payment_failed(tx, env, &event).await.map(drop).map_err(service_failure)
    }
}

pub struct TellRefundIssued(pub Identity);

#[async_trait::async_trait]
impl Handler<RefundIssued> for TellRefundIssued {
    async fn handle(&self, env: &Envelope, event: RefundIssued, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.refund_issued(tx, env, &event).await.map(drop).map_err(service_failure)
    }
}

/// Emails about support tickets: to the requester (received, answered, escalated, resolved) and
/// to staff (a missed SLA target). Each asks for its email in the handler's transaction.
pub struct TicketEmails(pub Identity);

#[async_trait::async_trait]
impl Handler<TicketOpened> for TicketEmails {
    async fn handle(&self, env: &Envelope, event: TicketOpened, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.ticket_opened(tx, env, &event).await.map_err(service_failure)
    }
}

#[async_trait::async_trait]
impl Handler<TicketMessageAdded> for TicketEmails {
    async fn handle(&self, env: &Envelope, event: TicketMessageAdded, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.ticket_message_added(tx, env, &event).await.map_err(service_failure)
    }
}

#[async_trait::async_trait]
impl Handler<TicketPrioritised> for TicketEmails {
    async fn handle(&self, env: &Envelope, event: TicketPrioritised, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.ticket_prioritised(tx, env, &event).await.map_err(service_failure)
    }
}

#[async_trait::async_trait]
impl Handler<TicketResolved> for TicketEmails {
    async fn handle(&self, env: &Envelope, event: TicketResolved, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.ticket_resolved(tx, env, &event).await.map_err(service_failure)
    }
}

#[async_trait::async_trait]
impl Handler<SlaBreached> for TicketEmails {
    async fn handle(&self, env: &Envelope, event: SlaBreached, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.sla_breached(tx, env, &event).await.map(drop).map_err(service_failure)
    }
}
