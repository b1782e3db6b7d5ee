//! ai-assist: ticket summaries and reply drafts for human approval, with guardrails in code.
//!
//! It reads public ticket events only (`support.ticket.opened.v1`, `.message_added.v1`) and the
//! plan projection (`billing.access.changed.v1`), so internal notes never reach it; it stores
//! customer text only redacted. For each customer message it drafts — through an OpenAI-compatible
//! model (async-openai) when one is configured, else the deterministic local drafter — from an
//! allow-list of fields, after redaction and an injection check; every draft passes the output
//! guard before `ai.draft.ready.v1` offers it to staff, else `ai.draft.failed.v1` says why. It has
//! no tool that changes anything: support-router decides what a suggestion may do, and only an
//! agent's approval sends a reply. gRPC `switchboard.ai.v1.Assist` answers staff with a ticket's
//! audit: every draft (failed ones with why), every model call, tokens used against the budget.
//!
//! Layout (the same in every service): `domain` rules and types (`redact`, `injection`, `prompt`,
//! `guard`, `local`), `store` SQL, `service` use cases, `error` the one error type, `grpc` and
//! `events` the transports, `model` the model adapter.

pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod model;
pub mod service;
pub mod store;

use std::sync::Arc;

use sb_bus::Consumer;
use sb_runtime::{Parts, ServiceConfig, ServiceDef};
use sqlx::{PgPool, migrate::Migrator};

use crate::service::{Assist, Engine};

pub const SERVICE: &str = "ai-assist";

/// This service's own schema (the bus tables are migrated separately by sb-runtime).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The drafter the configuration selects.
pub fn engine(cfg: &config::AiConfig) -> anyhow::Result<Engine> {
    Ok(match &cfg.model {
        None => Engine::Local,
        Some(m) => Engine::Model(Arc::new(model::OpenAi::new(m)?)),
    })
}

/// The handlers ai-assist adds to the scaffolding — the plan projection, and a draft for every
/// customer message — and its gRPC service.
pub fn parts(config: &ServiceConfig, pool: &PgPool) -> anyhow::Result<Parts> {
    let cfg = config::AiConfig::load(config)?;
    let engine = engine(&cfg)?;
    let assist = Assist::new(pool.clone(), cfg, engine);
    let consumer = Consumer::new(config.bus.clone(), SERVICE, pool.clone())
        .on(events::FollowAccessChanged(assist.clone()))
        .on(events::FollowOpened(assist.clone()))
        .effect(events::DraftOnMessage(assist.clone()))
        .on_failure(assist.on_failure());
    let grpc = grpc::AssistService::new(assist, &config.service_token);
    Ok(Parts::new(consumer).grpc(grpc.into_server()))
}

pub fn def() -> ServiceDef {
    ServiceDef { name: SERVICE, migrator: &MIGRATOR, parts }
}
