//! Switchboard's event bus: one envelope and catalog, idempotent topology, a transactional outbox,
//! inbox-deduplicated consumers, a retry ladder of delay queues and a per-service DLQ.

pub mod catalog;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod envelope;
pub mod events;
pub mod outbox;
pub mod publisher;
pub mod topology;
pub mod trace;

pub use config::BusConfig;
pub use consumer::{Consumer, Effect, Failure, Handler, HandlerError, Inbox, OnFailure};
pub use envelope::{DecodeError, Envelope};
pub use events::Event;
pub use outbox::{OutboxRelay, enqueue};
pub use publisher::Publisher;

/// Migrations for the bus's own tables (outbox, inbox); every service runs them at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
