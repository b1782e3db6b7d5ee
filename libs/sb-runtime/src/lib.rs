//! Shared service scaffolding: typed env config, telemetry, database bootstrap, the HTTP and gRPC
//! servers every service exposes, and the `main` all six binaries share.

pub mod app;
pub mod caller;
pub mod config;
pub mod db;
pub mod status;
pub mod telemetry;
pub mod upstream;

use std::process::ExitCode;

pub use app::{App, BackgroundTask, Parts};
pub use config::{ConfigError, ServiceConfig};
use secrecy::ExposeSecret;
use sqlx::{PgPool, migrate::Migrator};
use tokio_util::sync::CancellationToken;

/// How a service describes itself to the shared `main`.
pub struct ServiceDef {
    pub name: &'static str,
    pub migrator: &'static Migrator,
    /// Registers the service's handlers, routes and RPCs; a [`ConfigError`] here stops the
    /// service at start like any other bad setting.
    pub parts: fn(&ServiceConfig, &PgPool) -> anyhow::Result<Parts>,
}

/// Creates and migrates the service database, returning a pool on it.
pub async fn prepare_database(config: &ServiceConfig, def: &ServiceDef) -> anyhow::Result<PgPool> {
    let url = config.database_url.expose_secret();
    db::ensure_database(url).await?;
    // Six services of 16 connections fit PostgreSQL's default 100.
    let pool = db::connect(url, config.db).await?;
    db::migrate(&pool, def.migrator).await?;
    Ok(pool)
}

/// Starts a service from its definition; cancels `shutdown` ends it gracefully.
pub async fn start(config: ServiceConfig, def: &ServiceDef) -> anyhow::Result<App> {
    let pool = prepare_database(&config, def).await?;
    // Installed before the parts, so metrics they register at start (at zero) are kept.
    telemetry::metrics_handle();
    let parts = (def.parts)(&config, &pool)?;
    App::build(config, pool, parts).await
}

/// For tests: a service started in-process from explicit settings (`{SERVICE}_*`,
/// `SWITCHBOARD_*`), e.g. with `..._HTTP_ADDR=127.0.0.1:0` and a test database.
pub async fn start_with_vars(def: &ServiceDef, vars: &[(String, String)]) -> anyhow::Result<App> {
    let map: std::collections::HashMap<String, String> = vars.iter().cloned().collect();
    let env = config::Env::with_lookup(def.name, move |k| map.get(k).cloned());
    start(ServiceConfig::load(def.name, &env)?, def).await
}

/// Cancels the token on SIGTERM or Ctrl-C.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
}

const USAGE: &str = "usage: <service> [serve|migrate|--help|--version]
  serve     (default) run the service until SIGTERM/Ctrl-C
  migrate   create the service database if missing, apply migrations, exit
Configuration comes from environment variables; see the README's configuration table.";

/// The whole `main` of a service binary.
pub async fn main(def: ServiceDef) -> ExitCode {
    let cmd = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    match cmd.as_str() {
        "serve" | "migrate" => {}
        "-h" | "--help" | "help" => {
            println!("{}\n{USAGE}", def.name);
            return ExitCode::SUCCESS;
        }
        "-V" | "--version" => {
            println!("{} {}", def.name, env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("{}: unknown command {other:?}\n{USAGE}", def.name);
            return ExitCode::from(2);
        }
    }
    let config = match ServiceConfig::from_env(def.name) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", def.name);
            return ExitCode::from(2);
        }
    };
    let _telemetry = match telemetry::init(def.name, config.log_format, config.otlp_endpoint.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{}: telemetry setup failed: {e:#}", def.name);
            return ExitCode::from(2);
        }
    };
    if config.service_token.expose_secret() == config::DEV_SERVICE_TOKEN && cmd == "serve" {
        tracing::warn!(
            service = def.name,
            "SWITCHBOARD_SERVICE_TOKEN is not set; using the local development token (set a random one in any shared deployment)"
        );
    }
    let result = if cmd == "migrate" {
        prepare_database(&config, &def).await.map(|_| tracing::info!(service = def.name, "migrations applied"))
    } else {
        serve(config, &def).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("{}: {e}", def.name);
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(service = def.name, error = format!("{e:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServiceConfig, def: &ServiceDef) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let app = start(config, def).await?;
    app.run(shutdown).await
}
