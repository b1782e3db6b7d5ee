//! crm-sync: one CRM contact per customer user, with the right lifecycle stage, kept current from
//! `identity.user.signed_up.v1` and `billing.access.changed.v1`.
//!
//! A contact is found by (normalised) email first and created only when none exists; concurrent
//! events for one email are serialised by a database lock, so duplicates end in one contact. The
//! CRM is HubSpot (CRM v3 contacts API, `hubspot`) when `CRM_SYNC_HUBSPOT_TOKEN` is set, else the
//! embedded contact book (`contact_book`). CRM outages are transient failures: the events wait on
//! the retry ladder (the user-facing flows never wait on the CRM), then in the DLQ; every user's
//! sync status (synced, pending with the next attempt's time, failed with the reason) is kept and
//! answered over gRPC (`switchboard.crm.v1.Crm`).

pub mod config;
pub mod contact_book;
pub mod crm;
pub mod grpc;
pub mod hubspot;
pub mod service;
pub mod store;

use std::sync::Arc;

use sb_bus::{Consumer, catalog};
use sb_runtime::{Parts, ServiceConfig, ServiceDef};
use sqlx::{PgPool, migrate::Migrator};

pub const SERVICE: &str = "crm-sync";

/// This service's own schema (the bus tables are migrated separately by sb-runtime).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The CRM from configuration: HubSpot with a token, else the embedded contact book.
pub fn crm(cfg: &config::CrmConfig, pool: &PgPool) -> anyhow::Result<Arc<dyn crm::Crm>> {
    Ok(match &cfg.hubspot_token {
        Some(token) => {
            let budget = hubspot::RateBudget::new(cfg.rate_limit.0, cfg.rate_limit.1);
            Arc::new(hubspot::HubSpot::new(&cfg.hubspot_base_url, token.clone(), budget, cfg.request_timeout)?)
        }
        None => Arc::new(contact_book::ContactBook::new(pool.clone())),
    })
}

pub fn parts(config: &ServiceConfig, pool: &PgPool) -> anyhow::Result<Parts> {
    let cfg = config::CrmConfig::load(config)?;
    let sync = service::Sync { pool: pool.clone(), crm: crm(&cfg, pool)?, cfg: Arc::new(cfg) };
    let on_failure = sync.clone();
    let consumer = Consumer::new(config.bus.clone(), SERVICE, pool.clone())
        .on(catalog::IDENTITY_USER_SIGNED_UP, service::SignedUp(sync.clone()))
        .on(catalog::BILLING_ACCESS_CHANGED, service::AccessChanged(sync.clone()))
        .on_failure(Arc::new(move |f| {
            let sync = on_failure.clone();
            Box::pin(async move { sync.record_failure(f).await })
        }));
    Ok(Parts {
        consumer,
        http: axum::Router::new(),
        grpc: tonic::service::Routes::default().add_service(grpc::CrmService::new(sync, &config.service_token).into_server()),
        tasks: Vec::new(),
    })
}

pub fn def() -> ServiceDef {
    ServiceDef { name: SERVICE, migrator: &MIGRATOR, parts }
}
