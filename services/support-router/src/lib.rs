//! support-router: tickets with their public thread, internal notes and activity log; priority
//! and queue decided on the server from the account's live plan and the ticket's words, with the
//! reasons kept; SLA clocks in business time.
//!
//! Intake stores the ticket using only local state — a user directory kept from identity's
//! `identity.user.signed_up.v1` / `identity.user.updated.v1`, and each account's plan kept from
//! billing's `billing.access.changed.v1` — and never waits on billing, the CRM or the AI. An account
//! whose plan is not known yet gets tier `unknown` (routed as free) and a background refresher
//! asks billing (`GetAccess`) until it answers, then re-prioritises. Urgent tickets go to human
//! review, which only a person leaves. Every change publishes its event through the outbox in
//! the same transaction (`support.ticket.opened` / `.message_added` / `.prioritised` /
//! `.sla_breached` / `.resolved`); an SLA sweeper records each clock's breach once. Queries and
//! actions are gRPC `switchboard.support.v1.Support`, each RPC admitting its callers by a typed
//! guard; customers see their own account's tickets and never notes, activity, reasons or the
//! assignee.
//!
//! Layout (the same in every service): `domain` rules and types (`domain::routing` the priority
//! rules, `domain::sla` the clocks), `store` SQL, `service` use cases, `error` the one error type,
//! `grpc` and `events` the transports, `billing` the client of billing.

pub mod billing;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod service;
pub mod store;

use sb_bus::Consumer;
use sb_runtime::{Parts, ServiceConfig, ServiceDef};
use sqlx::{PgPool, migrate::Migrator};

pub const SERVICE: &str = "support-router";

/// This service's own schema (the bus tables are migrated separately by sb-runtime).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The handlers, gRPC service and background loops support-router adds to the scaffolding.
pub fn parts(config: &ServiceConfig, pool: &PgPool) -> anyhow::Result<Parts> {
    let cfg = config::SupportConfig::load(config)?;
    let billing = billing::BillingPlans::new(&cfg.billing_url, cfg.billing_timeout, config.service_token.clone())?;
    let support = service::Support::new(pool.clone(), cfg);
    let consumer = Consumer::new(config.bus.clone(), SERVICE, pool.clone())
        .on(events::LearnSignedUp(support.clone()))
        .on(events::LearnUserUpdated(support.clone()))
        .on(events::FollowAccessChanged(support.clone()))
        .on(events::AttachDraft(support.clone()))
        .on(events::RecordFailedDraft(support.clone()));
    let grpc = grpc::SupportService::new(support.clone(), &config.service_token);
    let (sweeper, refresher) = (support.clone(), support);
    Ok(Parts::new(consumer)
        .grpc(grpc.into_server())
        .task(move |stop| sweeper.run_sla_sweeper(stop))
        .task(move |stop| refresher.run_plan_refresher(billing, stop)))
}

pub fn def() -> ServiceDef {
    ServiceDef { name: SERVICE, migrator: &MIGRATOR, parts }
}
