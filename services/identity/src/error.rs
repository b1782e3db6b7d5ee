//! Identity's one error type, and how each case reaches a caller over gRPC (exhaustively: a new
//! case must decide its status). Outages become UNAVAILABLE with a retry hint; bugs INTERNAL,
//! logged and never sent.

use sb_runtime::status;
use tonic::Status;

use crate::domain::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// An input that breaks a rule; the message names the field.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Unknown email or wrong password (never says which).
    #[error("wrong email or password")]
    WrongCredentials,
    #[error("too many failed logins; try again later")]
    Throttled { retry_after_secs: u64 },
    #[error("session is invalid or has expired")]
    SessionInvalid,
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<anyhow::Error> for IdentityError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(format!("{e:#}"))
    }
}

impl From<IdentityError> for Status {
    fn from(e: IdentityError) -> Self {
        let msg = e.to_string();
        match e {
            IdentityError::Invalid(_) => Status::invalid_argument(msg),
            IdentityError::EmailTaken => Status::already_exists(msg),
            IdentityError::WrongCredentials | IdentityError::SessionInvalid => Status::unauthenticated(msg),
            IdentityError::Throttled { retry_after_secs } => status::with_retry_after(Status::resource_exhausted(msg), retry_after_secs),
            IdentityError::NotFound(_) => Status::not_found(msg),
            IdentityError::Forbidden(_) => Status::permission_denied(msg),
            IdentityError::Database(e) => status::database(&e),
            IdentityError::Internal(cause) => status::internal(cause),
        }
    }
}
