//! ai-assist's one error type, what the bus does with each case and how each reaches a gRPC
//! caller (exhaustively: a new case must decide both). The model's outages are retried through
//! the ladder, no sooner than a 429 asked; a refusal parks the event (an operator replays it once
//! the key or model is fixed). Over gRPC, outages are UNAVAILABLE with a retry hint.

use sb_bus::HandlerError;
use sb_runtime::status;
use tonic::Status;

use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum AssistError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<AssistError> for HandlerError {
    fn from(e: AssistError) -> Self {
        match e {
            AssistError::Model(ModelError::Transient { retry_after, .. }) => HandlerError::transient_after(e, retry_after),
            AssistError::Model(ModelError::Permanent(_)) | AssistError::NotFound(_) => HandlerError::permanent(e),
            AssistError::Database(e) => e.into(),
        }
    }
}

impl From<AssistError> for Status {
    fn from(e: AssistError) -> Self {
        match e {
            AssistError::NotFound(_) => Status::not_found(e.to_string()),
            AssistError::Database(e) => status::database(&e),
            // No RPC calls the model; should one, its details stay in the log.
            AssistError::Model(e) => status::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn each_case_has_its_code() {
        assert_eq!(Status::from(AssistError::NotFound("ticket")).code(), Code::NotFound);
        assert_eq!(Status::from(AssistError::Database(sqlx::Error::PoolTimedOut)).code(), Code::Unavailable);
        let internal = Status::from(AssistError::Model(ModelError::Permanent("key sk_live_x refused".into())));
        assert_eq!((internal.code(), internal.message()), (Code::Internal, "internal error"));
    }
}
