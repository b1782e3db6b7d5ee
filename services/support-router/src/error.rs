//! support-router's one error type, and how each case reaches a caller over gRPC (exhaustively: a
//! new case must decide its status). Outages become UNAVAILABLE with a retry hint; bugs INTERNAL,
//! logged and never sent.

use sb_runtime::status;
use tonic::Status;

use crate::domain::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// An input that breaks a rule; the message names the field. Nothing was stored.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Unknown, or not the caller's to see (never says which).
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    /// A status move the ticket's status does not allow ("the ticket is already resolved").
    #[error("{0}")]
    WrongStatus(String),
    #[error("too many contact-form tickets from this {what}; try again later")]
    Throttled { what: &'static str, retry_after_secs: u64 },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<anyhow::Error> for SupportError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(format!("{e:#}"))
    }
}

impl From<SupportError> for Status {
    fn from(e: SupportError) -> Self {
        let msg = e.to_string();
        match e {
            SupportError::Invalid(_) => Status::invalid_argument(msg),
            SupportError::NotFound(_) => Status::not_found(msg),
            SupportError::Forbidden(_) => Status::permission_denied(msg),
            SupportError::WrongStatus(_) => Status::failed_precondition(msg),
            SupportError::Throttled { retry_after_secs, .. } => status::with_retry_after(Status::resource_exhausted(msg), retry_after_secs),
            SupportError::Database(e) => status::database(&e),
            SupportError::Internal(cause) => status::internal(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn each_case_has_its_code_and_no_internals_leak() {
        assert_eq!(Status::from(SupportError::Invalid(Invalid::new("subject", "is required"))).message(), "subject: is required");
        assert_eq!(Status::from(SupportError::NotFound("ticket")).code(), Code::NotFound);
        assert_eq!(Status::from(SupportError::WrongStatus("the ticket is already resolved".into())).code(), Code::FailedPrecondition);
        let throttled = Status::from(SupportError::Throttled { what: "email", retry_after_secs: 42 });
        assert_eq!(throttled.code(), Code::ResourceExhausted);
        assert_eq!(throttled.metadata().get(status::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("42"));
        let internal = Status::from(SupportError::Internal("secret detail".into()));
        assert_eq!((internal.code(), internal.message()), (Code::Internal, "internal error"));
        assert_eq!(Status::from(SupportError::Database(sqlx::Error::PoolTimedOut)).code(), Code::Unavailable);
    }
}
