//! identity: accounts (tenants), users, roles, sessions and the audit log.
//!
//! Passwords are argon2id hashes; sessions are opaque random tokens stored as SHA-256 hashes with
//! an expiry; logins are throttled per email and per client address. Sign-up writes the account,
//! the user, `identity.user.signed_up.v1` and the welcome email request in one transaction (the
//! outbox), and the email itself is sent by this service's consumer through the retry ladder.
//! Everything is reachable over gRPC (`switchboard.identity.v1.Identity`); each call checks its
//! caller (a user's session or another service's token) itself.

pub mod config;
pub mod domain;
pub mod grpc;
pub mod mail;
pub mod store;

use std::sync::Arc;

use sb_bus::{Consumer, catalog};
use sb_runtime::{Parts, ServiceConfig, ServiceDef};
use sqlx::{PgPool, migrate::Migrator};

pub const SERVICE: &str = "identity";

/// This service's own schema (the bus tables are migrated separately by sb-runtime).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The mailer from configuration: SMTP when `IDENTITY_SMTP_URL` is set, else the embedded mailbox.
pub fn mailer(cfg: &config::IdentityConfig, pool: &PgPool) -> anyhow::Result<Arc<dyn sb_mail::Mailer>> {
    Ok(match &cfg.smtp {
        Some(smtp) => Arc::new(sb_mail::SmtpMailer::new(smtp.clone())?),
        None => Arc::new(sb_mail::MailboxMailer::new(pool.clone())),
    })
}

pub fn parts(config: &ServiceConfig, pool: &PgPool) -> anyhow::Result<Parts> {
    let cfg = config::IdentityConfig::load(config)?;
    let consumer = Consumer::new(config.bus.clone(), SERVICE, pool.clone())
        .on(catalog::IDENTITY_EMAIL_REQUESTED, mail::SendEmail { mailer: mailer(&cfg, pool)? });
    let identity = grpc::IdentityService::new(pool.clone(), cfg, &config.service_token);
    Ok(Parts {
        consumer,
        http: axum::Router::new(),
        grpc: tonic::service::Routes::default().add_service(identity.into_server()),
        tasks: Vec::new(),
    })
}

pub fn def() -> ServiceDef {
    ServiceDef { name: SERVICE, migrator: &MIGRATOR, parts }
}
