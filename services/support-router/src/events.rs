//! support-router's bus handlers: the user directory (`identity.user.signed_up.v1`,
//! `identity.user.updated.v1`), the plan projection (`billing.access.changed.v1`, which
//! re-prioritises the account's open tickets) and AI drafts (`ai.draft.ready.v1`,
//! `ai.draft.failed.v1`, attached as staff-only suggestions). All of them only touch support-router's database, so
//! they run in the inbox transaction: applied exactly once. They convert and call the service.

use sb_bus::{
    Envelope, Handler, HandlerError,
    events::{AccessChanged, AiDraftFailed, AiDraftReady, UserSignedUp, UserUpdated},
};
use sqlx::PgConnection;

use crate::{error::SupportError, service::Support};

fn handler_error(e: SupportError) -> HandlerError {
    match e {
        SupportError::Database(e) => e.into(),
        SupportError::Invalid(_)
        | SupportError::NotFound(_)
        | SupportError::Forbidden(_)
        | SupportError::WrongStatus(_)
        | SupportError::Throttled { .. }
        | SupportError::Internal(_) => HandlerError::permanent(e),
    }
}

pub struct LearnSignedUp(pub Support);

#[async_trait::async_trait]
impl Handler<UserSignedUp> for LearnSignedUp {
    async fn handle(&self, env: &Envelope, event: UserSignedUp, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.user_signed_up(tx, env, &event).await.map(drop).map_err(handler_error)
    }
}

pub struct LearnUserUpdated(pub Support);

#[async_trait::async_trait]
impl Handler<UserUpdated> for LearnUserUpdated {
    async fn handle(&self, env: &Envelope, event: UserUpdated, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.user_updated(tx, env, &event).await.map(drop).map_err(handler_error)
    }
}

pub struct FollowAccessChanged(pub Support);

#[async_trait::async_trait]
impl Handler<AccessChanged> for FollowAccessChanged {
    async fn handle(&self, env: &Envelope, event: AccessChanged, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.access_changed(tx, env, &event).await.map(drop).map_err(handler_error)
    }
}

pub struct AttachDraft(pub Support);

#[async_trait::async_trait]
impl Handler<AiDraftReady> for AttachDraft {
    async fn handle(&self, env: &Envelope, event: AiDraftReady, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.draft_ready(tx, env, &event).await.map_err(handler_error)
    }
}

pub struct RecordFailedDraft(pub Support);

#[async_trait::async_trait]
impl Handler<AiDraftFailed> for RecordFailedDraft {
    async fn handle(&self, env: &Envelope, event: AiDraftFailed, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.draft_failed(tx, env, &event).await.map_err(handler_error)
    }
}
