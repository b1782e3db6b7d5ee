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

/// How long statements, lock waits and idle transactions may last on a service's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections in the pool (bus handlers get all but `sb_bus::consumer::RESERVED_CONNECTIONS`).
    pub pool_size: u32,
    /// Waiting for a free connection.
    pub acquire_timeout: Duration,
    /// One statement (`statement_timeout`).
    pub statement_timeout: Duration,
    /// Waiting for a row or table lock (`lock_timeout`).
    pub lock_timeout: Duration,
    /// A transaction left open doing nothing (`idle_in_transaction_session_timeout`): a safety net
    /// that ends the session of a transaction forgotten across a slow outside call.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            pool_size: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(15),
            lock_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(60),
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Whether a database error means "unavailable right now" (down, restarting, overloaded, a pool,
/// statement or lock wait over its limit, a conflict worth retrying) rather than a bug.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // 08: connection exception; 53: insufficient resources; 57014 statement timeout;
            // 57P0x: shutting down / cannot connect now; 55P03 lock timeout; 40001/40P01 retryable conflicts.
            c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57P0")
                || ["57014", "55P03", "40001", "40P01"].contains(&c.as_ref())
        }),
        _ => false,
    }
}

/// A read-only transaction on one snapshot: every read in it sees the same committed state, so a
/// view assembled from several queries never shows half of a change.
pub async fn snapshot(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await
}

/// A pool on the service's database, every connection with the statement, lock and idle limits.
pub async fn connect(url: &str, limits: Limits) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = url.parse().context("parsing the database URL")?;
    let opts = opts.options([
        ("statement_timeout", millis(limits.statement_timeout)),
        ("lock_timeout", millis(limits.lock_timeout)),
        ("idle_in_transaction_session_timeout", millis(limits.idle_in_transaction_timeout)),
    ]);
    PgPoolOptions::new()
        .max_connections(limits.pool_size)
        .acquire_timeout(limits.acquire_timeout)
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
