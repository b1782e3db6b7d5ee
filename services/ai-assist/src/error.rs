//! ai-assist's one error type, and what the bus does with each case (exhaustively: a new case must
//! decide). The model's outages are retried through the ladder, no sooner than a 429 asked; a
//! refusal parks the event (an operator replays it once the key or model is fixed). ai-assist
//! has no gRPC service yet, so there is no status mapping.

use sb_bus::HandlerError;

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
