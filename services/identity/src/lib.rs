//! identity: accounts (tenants), users, roles, sessions and the audit log.
//!
//! Passwords are argon2id hashes, computed a few at a time; sessions are opaque random tokens
//! stored as SHA-256 hashes with an expiry; logins are throttled per email and per client address.
//! Sign-up writes the account, the user, `identity.user.signed_up.v1` and the welcome email request
//! in one transaction (the outbox), and the email itself is sent by this service's consumer
//! through the retry ladder; so are the notices of failed payments and refunds billing announces.
//! Everything is reachable over gRPC (`switchboard.identity.v1.Identity`); each call checks its
//! caller (a user's session or another service's token) itself.
//!
//! Layout (the same in every service): `domain` rules and types, `store` SQL, `service` use cases,
//! `error` the one error type, `grpc` and `events` the transports, `password` the hasher.

pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod password;
pub mod service;
pub mod store;

use sb_bus::Consumer;
use sb_runtime::{Parts, ServiceConfig, ServiceDef};
use sqlx::{PgPool, migrate::Migrator};

pub const SERVICE: &str = "identity";

/// This service's own schema (the bus tables are migrated separately by sb-runtime).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

pub fn parts(config: &ServiceConfig, pool: &PgPool) -> anyhow::Result<Parts> {
    let cfg = config::IdentityConfig::load(config)?;
    // The founder's alarm on login failures (k8s/monitoring/alerts.yml) reads these from the start.
    for reason in ["bad_credentials", "throttled"] {
        metrics::counter!("identity_login_failures_total", "reason" => reason).increment(0);
    }
    let smtp = cfg.smtp.clone();
    let identity = service::Identity::new(pool.clone(), cfg);
    let consumer = Consumer::new(config.bus.clone(), SERVICE, pool.clone())
        .on(events::TellPaymentFailed(identity.clone()))
        .on(events::TellRefundIssued(identity.clone()))
        .on::<sb_bus::events::TicketOpened, _>(events::TicketEmails(identity.clone()))
        .on::<sb_bus::events::TicketMessageAdded, _>(events::TicketEmails(identity.clone()))
        .on::<sb_bus::events::TicketPrioritised, _>(events::TicketEmails(identity.clone()))
        .on::<sb_bus::events::TicketResolved, _>(events::TicketEmails(identity.clone()))
        .on::<sb_bus::events::SlaBreached, _>(events::TicketEmails(identity.clone()));
    // SMTP when `IDENTITY_SMTP_URL` is set, else the embedded mailbox.
    let consumer = match smtp {
        Some(smtp) => consumer.effect(events::SendOverSmtp(sb_mail::SmtpMailer::new(smtp)?)),
        None => consumer.on(events::StoreInMailbox),
    };
    let grpc = grpc::IdentityService::new(identity, &config.service_token);
    Ok(Parts::new(consumer).grpc(grpc.into_server()))
}

pub fn def() -> ServiceDef {
    ServiceDef { name: SERVICE, migrator: &MIGRATOR, parts }
}
