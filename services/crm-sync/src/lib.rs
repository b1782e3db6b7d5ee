//! crm-sync: one CRM contact per customer user, with the right lifecycle stage, kept current from
//! `identity.user.signed_up.v1`, `identity.user.updated.v1` and `billing.access.changed.v1`.
//!
//! A contact is found by (normalised) email first and created only when none exists; the CRM's
//! own uniqueness of emails keeps concurrent events for one person to one contact, and no
//! transaction or lock is held while the CRM answers (see `service`). The CRM is HubSpot (CRM v3
//! contacts API, `hubspot`) when `CRM_SYNC_HUBSPOT_TOKEN` is set, else the embedded contact book
//! (`contact_book`). CRM outages are transient failures: the events wait on the retry ladder (no
//! sooner than the CRM's Retry-After; the user-facing flows never wait on the CRM), then in the
//! DLQ; every user's sync status (synced, pending with the next attempt's time, failed with the
//! reason) is kept and answered over gRPC (`switchboard.crm.v1.Crm`). crm-sync publishes no events.
//!
//! Layout (the same in every service): `domain` rules and types, `store` SQL, `service` use cases,
//! `error` the one error type, `grpc` and `events` the transports, `crm` the CRM's trait with its
//! adapters `hubspot` and `contact_book`.

pub mod config;
pub mod contact_book;
pub mod crm;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod hubspot;
pub mod service;
pub mod store;

use std::sync::Arc;

use sb_bus::Consumer;
use sb_runtime::{Parts, ServiceConfig, ServiceDef};
use sqlx::{PgPool, migrate::Migrator};

pub const SERVICE: &str = "crm-sync";

/// This service's own schema (the bus tables are migrated separately by sb-runtime).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The CRM from configuration: HubSpot with a token, else the embedded contact book.
pub fn crm(cfg: &config::CrmConfig, pool: &PgPool) -> anyhow::Result<Arc<dyn crm::Crm>> {
    Ok(match &cfg.hubspot_token {
        Some(token) => Arc::new(hubspot::HubSpot::new(&cfg.hubspot_base_url, token.clone(), cfg.rate_limit, cfg.request_timeout)?),
        None => Arc::new(contact_book::ContactBook::new(pool.clone())),
    })
}

pub fn parts(config: &ServiceConfig, pool: &PgPool) -> anyhow::Result<Parts> {
    let cfg = config::CrmConfig::load(config)?;
    let sync = service::CrmSync::new(pool.clone(), crm(&cfg, pool)?, cfg.stages);
    let consumer = Consumer::new(config.bus.clone(), SERVICE, pool.clone())
        .effect(events::SyncSignedUp(sync.clone()))
        .effect(events::SyncUserUpdated(sync.clone()))
        .effect(events::SyncAccessChanged(sync.clone()))
        .on_failure(events::record_failures(sync.clone()));
    let grpc = grpc::CrmService::new(sync, &config.service_token);
    Ok(Parts::new(consumer).grpc(grpc.into_server()))
}

pub fn def() -> ServiceDef {
    ServiceDef { name: SERVICE, migrator: &MIGRATOR, parts }
}
