//! support-router: tickets, queues and SLA clocks.
//!
//! Runs on the shared scaffolding: its own database and migrations, the bus consumer (work queue,
//! retry ladder, DLQ), the outbox relay, health/readiness/metrics over HTTP, gRPC with health,
//! reflection and `switchboard.ops.v1.Ops`. Its own handlers, routes and RPCs arrive with its issue.

use sb_runtime::{Parts, ServiceConfig, ServiceDef};
use sqlx::{PgPool, migrate::Migrator};

pub const SERVICE: &str = "support-router";

/// This service's own schema (the bus tables are migrated separately by sb-runtime).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The handlers, HTTP routes and gRPC services support-router adds to the scaffolding.
pub fn parts(config: &ServiceConfig, pool: &PgPool) -> anyhow::Result<Parts> {
    Ok(Parts::bare(config, pool))
}

pub fn def() -> ServiceDef {
    ServiceDef { name: SERVICE, migrator: &MIGRATOR, parts }
}
