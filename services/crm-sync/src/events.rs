//! crm-sync's bus handlers: `identity.user.signed_up.v1`, `identity.user.updated.v1` and
//! `billing.access.changed.v1`, and the failure hook that shows how a sync stands. They convert
//! and call the service; nothing else.
//!
//! All three are outside effects (the CRM, even the embedded contact book, is another system): they
//! run with no transaction open, and the service records state in short transactions of its own.
//! An unreadable payload (e.g. an access change whose `to` is no known status) is parked by the
//! bus with a reason naming the field.

use std::sync::Arc;

use chrono::Utc;
use sb_bus::{
    Effect, Envelope, Failure, HandlerError, OnFailure,
    events::{AccessChanged, UserSignedUp, UserUpdated},
};
use sqlx::PgPool;
use tracing::warn;

use crate::{
    crm::CrmError,
    domain::FailedAttempt,
    error::CrmSyncError,
    service::{CrmSync, Whose},
};

/// What the bus does with a failure: retry (no sooner than the CRM asked) or park.
pub fn handler_error(e: CrmSyncError) -> HandlerError {
    match e {
        // "CRM unavailable: ...", "CRM refused: ...": what operators read in the status and the DLQ.
        CrmSyncError::Crm(CrmError::Transient { retry_after, .. }) => HandlerError::transient_after(e, retry_after),
        CrmSyncError::Crm(CrmError::Permanent(_)) | CrmSyncError::Invalid(_) => HandlerError::permanent(e),
        CrmSyncError::Unsettled { .. } => HandlerError::transient(e),
        CrmSyncError::Database(e) => e.into(),
    }
}

pub struct SyncSignedUp(pub CrmSync);

#[async_trait::async_trait]
impl Effect<UserSignedUp> for SyncSignedUp {
    async fn run(&self, env: &Envelope, event: UserSignedUp, _pool: &PgPool, _inbox: &sb_bus::Inbox) -> Result<(), HandlerError> {
        self.0.signed_up(&event, env.occurred_at).await.map_err(handler_error)
    }
}

pub struct SyncUserUpdated(pub CrmSync);

#[async_trait::async_trait]
impl Effect<UserUpdated> for SyncUserUpdated {
    async fn run(&self, env: &Envelope, event: UserUpdated, _pool: &PgPool, _inbox: &sb_bus::Inbox) -> Result<(), HandlerError> {
        self.0.user_updated(&event, env.occurred_at).await.map_err(handler_error)
    }
}

pub struct SyncAccessChanged(pub CrmSync);

#[async_trait::async_trait]
impl Effect<AccessChanged> for SyncAccessChanged {
    async fn run(&self, _env: &Envelope, event: AccessChanged, _pool: &PgPool, inbox: &sb_bus::Inbox) -> Result<(), HandlerError> {
        self.0.access_changed(&event, inbox).await.map_err(handler_error)
    }
}

/// Records every failed attempt ("pending until <next attempt>", "failed: <reason>") on the
/// contacts the event concerned: its user's, else its account's users'.
pub fn record_failures(sync: CrmSync) -> OnFailure {
    Arc::new(move |f: Failure| {
        let sync = sync.clone();
        Box::pin(async move {
            let whose = match (f.env.user_id, f.env.account_id) {
                (Some(user), _) => Whose::User(user.into()),
                (None, Some(account)) => Whose::Account(account.into()),
                (None, None) => return,
            };
            let next_attempt_at = f.next_attempt_in.and_then(|d| chrono::Duration::from_std(d).ok()).map(|d| Utc::now() + d);
            let attempt = FailedAttempt { reason: f.reason, attempts: i32::try_from(f.attempts).unwrap_or(i32::MAX), next_attempt_at };
            if let Err(e) = sync.record_failure(whose, &attempt).await {
                warn!(error = %e, "could not record a failed CRM sync");
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_crm_retry_after_reaches_the_retry_ladder() {
        let limited = CrmError::Transient { reason: "HubSpot rate limit".into(), retry_after: Some(Duration::from_secs(2)) };
        match handler_error(limited.into()) {
            HandlerError::Transient { reason, retry_after } => {
                assert_eq!((reason.as_str(), retry_after), ("CRM unavailable: HubSpot rate limit", Some(Duration::from_secs(2))));
            }
            other => panic!("{other:?}"),
        }
        let refused = handler_error(CrmError::Permanent("Property values were not valid".into()).into());
        assert!(matches!(refused, HandlerError::Permanent(r) if r == "CRM refused: Property values were not valid"));
        assert!(matches!(handler_error(CrmSyncError::Unsettled { rounds: 4 }), HandlerError::Transient { retry_after: None, .. }));
    }
}
