//! ai-assist's bus handlers: the plan projection (`billing.access.changed.v1`) and each ticket's
//! priority, queue and tier (`support.ticket.opened.v1`), both in the inbox transaction, and the
//! drafting effect (`support.ticket.message_added.v1`), which calls a model and so runs with no
//! transaction open.
//! They convert and call the service; nothing else.

use sb_bus::{
    Effect, Envelope, Handler, HandlerError, Inbox,
    events::{AccessChanged, TicketMessageAdded, TicketOpened},
};
use sqlx::{PgConnection, PgPool};

use crate::service::Assist;

pub struct FollowAccessChanged(pub Assist);

#[async_trait::async_trait]
impl Handler<AccessChanged> for FollowAccessChanged {
    async fn handle(&self, _env: &Envelope, event: AccessChanged, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.access_changed(tx, &event).await.map_err(Into::into)
    }
}

pub struct FollowOpened(pub Assist);

#[async_trait::async_trait]
impl Handler<TicketOpened> for FollowOpened {
    async fn handle(&self, _env: &Envelope, event: TicketOpened, tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.ticket_opened(tx, &event).await.map_err(Into::into)
    }
}

pub struct DraftOnMessage(pub Assist);

#[async_trait::async_trait]
impl Effect<TicketMessageAdded> for DraftOnMessage {
    async fn run(&self, env: &Envelope, event: TicketMessageAdded, _pool: &PgPool, inbox: &Inbox) -> Result<(), HandlerError> {
        self.0.message_added(env, &event, inbox).await.map_err(Into::into)
    }
}
