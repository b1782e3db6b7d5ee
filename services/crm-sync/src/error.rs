//! crm-sync's one error type, and how each case reaches a gRPC caller (exhaustively: a new case
//! must decide its status). Outages become UNAVAILABLE with a retry hint; bugs INTERNAL, logged
//! and never sent. The bus's mapping (transient or permanent) is in `events`.

use sb_runtime::status;
use tonic::Status;

use crate::{crm::CrmError, domain::Invalid};

#[derive(Debug, thiserror::Error)]
pub enum CrmSyncError {
    /// An input that breaks a rule; the message names the field.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The CRM failed or refused ("CRM unavailable: ...", "CRM refused: ...": what operators read).
    #[error(transparent)]
    Crm(#[from] CrmError),
    /// What a contact should hold kept changing while crm-sync wrote it; a later attempt catches up.
    #[error("the contact kept changing while it was written ({rounds} writes); trying again later")]
    Unsettled { rounds: usize },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<CrmSyncError> for Status {
    fn from(e: CrmSyncError) -> Self {
        match e {
            CrmSyncError::Invalid(e) => Status::invalid_argument(e.to_string()),
            CrmSyncError::Crm(CrmError::Transient { .. }) | CrmSyncError::Unsettled { .. } => {
                status::unavailable("the CRM is unavailable; try again shortly")
            }
            CrmSyncError::Crm(e @ CrmError::Permanent(_)) => status::internal(e),
            CrmSyncError::Database(e) => status::database(&e),
        }
    }
}
