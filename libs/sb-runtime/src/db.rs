//! The service's own database: created when missing, migrated (bus tables, then the service's).

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    Connection, PgConnection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Creates the database named in `url` if it does not exist (needs CREATEDB on the server).
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let opts: PgConnectOptions = url.parse().context("parsing the database URL")?;
    let name = opts.get_database().unwrap_or("postgres").to_owned();
    if PgConnection::connect_with(&opts).await.is_ok() {
        return Ok(());
    }
    let mut admin = PgConnection::connect_with(&opts.clone().database("postgres"))
        .await
        .context("connecting to PostgreSQL (maintenance database `postgres`)")?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}"))).execute(&mut admin).await {
        Ok(_) => tracing::info!(database = %name, "created database"),
        // Another replica created it first.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
        Err(e) => return Err(e).context(format!("creating database {name}")),
    }
    Ok(())
}

/// A pool on the service's database.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = url.parse().context("parsing the database URL")?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection on checkout by default: a round trip per query. Broken
        // connections surface as query errors instead, which callers already handle.
        .test_before_acquire(false)
        .connect_with(opts)
        .await
        .context("connecting to the service database")
}

/// Runs the bus's migrations (tracked in `_sb_bus_migrations`) and then the service's own.
pub async fn migrate(pool: &PgPool, service: &Migrator) -> anyhow::Result<()> {
    let mut bus = Migrator::with_migrations(sb_bus::MIGRATOR.iter().cloned().collect());
    bus.dangerous_set_table_name("_sb_bus_migrations");
    bus.run(pool).await.context("running bus migrations")?;
    service.run(pool).await.context("running service migrations")?;
    Ok(())
}
