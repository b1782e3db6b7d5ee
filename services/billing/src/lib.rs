//! billing: the account ↔ Stripe customer map, subscriptions, invoices, and each account's portal
//! access (none → pending → active → past_due → revoked) with the Stripe event behind every change.
//!
//! Verified Stripe events arrive from the gateway over the bus (`stripe.event.received.v1`) and are
//! applied idempotently (event id and dedupe key) and order-safely (facts carry Stripe's time; older
//! never overwrites newer); access changes go out as `billing.access.changed.v1` through the outbox.
//! gRPC `switchboard.billing.v1.Billing` answers access queries and starts checkout and portal
//! sessions — through Stripe when `SWITCHBOARD_STRIPE_API_KEY` is set, else through the embedded
//! local checkout (`local`), which sends signed Stripe-shaped webhooks to the gateway.
//!
//! Layout (the same in every service): `domain` rules and types, `store` SQL, `service` use cases,
//! `error` the one error type, `grpc` and `events` the transports, `stripe_api` (Stripe) and
//! `local` (the embedded local checkout) the adapters.

pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod local;
pub mod service;
pub mod store;
pub mod stripe_api;

use sb_bus::Consumer;
use sb_runtime::{Parts, ServiceConfig, ServiceDef};
use sqlx::{PgPool, migrate::Migrator};
use tracing::warn;

pub const SERVICE: &str = "billing";

/// This service's own schema (the bus tables are migrated separately by sb-runtime).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

pub fn parts(config: &ServiceConfig, pool: &PgPool) -> anyhow::Result<Parts> {
    let cfg = config::BillingConfig::load(config)?;
    if cfg.local() {
        warn!("no Stripe API key: checkout runs on the embedded local checkout (set SWITCHBOARD_STRIPE_API_KEY for Stripe)");
    }
    let billing = service::Billing::new(pool.clone(), cfg)?;
    let consumer = Consumer::new(config.bus.clone(), SERVICE, pool.clone());
    // With Stripe, each event asks Stripe first: an outside effect, run with no transaction open.
    let consumer = if billing.calls_stripe() {
        consumer.effect(events::ApplyAskingStripe(billing.clone()))
    } else {
        consumer.on(events::ApplyStripeEvent(billing.clone()))
    };
    let grpc = grpc::BillingService::new(billing.clone(), &config.service_token);
    let sweeper = billing.clone();
    let mut parts = Parts::new(consumer).grpc(grpc.into_server()).task(move |stop| sweeper.run_grace_sweeper(stop));
    if !billing.calls_stripe() {
        parts = parts.task(move |stop| billing.run_local_sender(stop));
    }
    Ok(parts)
}

pub fn def() -> ServiceDef {
    ServiceDef { name: SERVICE, migrator: &MIGRATOR, parts }
}
