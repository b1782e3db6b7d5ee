//! Test helpers: a fresh PostgreSQL database and a fresh RabbitMQ name prefix per test, and
//! condition polling with a deadline (never a fixed sleep).

pub mod ai_corpus;
pub mod authz;
pub mod hubspot;
pub mod listening;
pub mod logs;
pub mod openai;
pub mod probe;
pub mod proxy;
pub mod report;
pub mod service;
pub mod smtp;
pub mod stripe;

use std::{future::Future, time::Duration};

use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

/// Server URL (any database) used to create and drop test databases.
pub fn admin_url() -> String {
    std::env::var("SB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("SB_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A short unique name for this test's database and queues: `t`, the Unix time it was made (8 hex
/// digits, seconds), 4 random hex digits, `_` and the tag. The time lets
/// `scripts/clean-test-leftovers.sh` remove what an aborted run left behind without touching a run
/// going on beside it.
pub fn unique(tag: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    unique_made_at(tag, secs)
}

/// [`unique`] as if made at `unix_secs` (a test of the leftover cleaner makes an old one).
pub fn unique_made_at(tag: &str, unix_secs: u64) -> String {
    let random = Uuid::new_v4().as_u128() as u16;
    format!("t{:08x}{random:04x}_{}", unix_secs as u32, tag.replace('-', "_"))
}

/// The RabbitMQ management API the tests and `scripts/clean-test-leftovers.sh` use:
/// `SB_TEST_RABBITMQ_API` (default `http://guest:guest@127.0.0.1:15672/api`).
pub fn rabbitmq_api() -> String {
    std::env::var("SB_TEST_RABBITMQ_API").unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672/api".into())
}

/// A database that exists for one test and is dropped when this value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

fn url_for(admin: &str, db: &str) -> String {
    let (base, query) = admin.split_once('?').map_or((admin, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

impl TestDb {
    /// Creates an empty database named after `tag` with a unique suffix.
    pub async fn new(tag: &str) -> anyhow::Result<Self> {
        let name = unique(tag).to_lowercase();
        let mut admin = PgConnection::connect(&admin_url()).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await?;
        admin.close().await?;
        let url = url_for(&admin_url(), &name);
        let pool = PgPoolOptions::new().max_connections(20).connect(&url).await?;
        Ok(Self { name, url, pool })
    }
}

impl TestDb {
    /// Keeps a record of every outbox row, sent or not, in the view `sb_test_outbox`: it has
    /// `sb_outbox`'s columns, with `published_at` set to when the relay's transaction deleted the
    /// row (it deletes a row once the broker confirmed it). Tests read what a service announced
    /// there instead of in `sb_outbox`, whose rows go as soon as they are sent. `sb_outbox` must
    /// exist (the bus's migrations ran). A test-only trigger: it adds one INSERT to each relay
    /// claim, so benchmarks that measure the relay's cost do without it.
    pub async fn keep_sent_outbox(&self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "CREATE TABLE IF NOT EXISTS sb_test_outbox_sent (LIKE sb_outbox)",
            "CREATE OR REPLACE FUNCTION sb_test_keep_sent() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 OLD.published_at := now();
                 INSERT INTO sb_test_outbox_sent VALUES (OLD.*);
                 RETURN OLD;
             END $$",
            "CREATE OR REPLACE TRIGGER sb_test_keep_sent AFTER DELETE ON sb_outbox
             FOR EACH ROW EXECUTE FUNCTION sb_test_keep_sent()",
            "CREATE OR REPLACE VIEW sb_test_outbox AS
             SELECT * FROM sb_outbox WHERE published_at IS NULL UNION ALL SELECT * FROM sb_test_outbox_sent",
        ] {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async; a short-lived thread with its own runtime does the cleanup.
        // It must not wait on the test's pool (its runtime may be the one blocked here): FORCE
        // ends the pool's connections instead.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Reserves a `127.0.0.1` port for a server that starts later (its address must be known before
/// it binds, e.g. by services started first, or a child process's setting). A port from `:0` could
/// be handed to a parallel test's connection meanwhile; these come from below the kernel's
/// ephemeral range, from a process-wide counter that starts at a random place (so one process never
/// hands out a port twice, and other processes are unlikely to meet them), and stay bound until the
/// caller drops the listener just before its server binds.
pub fn reserve_port() -> std::net::TcpListener {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()))
        .unwrap_or(32_768);
    let low = 10_000u32;
    let span = ephemeral_from.saturating_sub(low).max(1);
    let start = (Uuid::new_v4().as_u128() % u128::from(span)) as u32;
    let _ = NEXT.compare_exchange(0, start + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let port = low + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener;
        }
    }
    panic!("no free port between {low} and {ephemeral_from}");
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `rabbitmqctl` with `args` and returns its stdout; panics with its stderr on failure.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl is installed");
    assert!(out.status.success(), "rabbitmqctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes the given queues and, with a prefix, that prefix's exchanges (test cleanup).
pub async fn delete_topology(amqp: &str, prefix: Option<&str>, queues: &[String]) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    // Cleanup never hangs a test: a step the broker does not answer within its time is reported
    // and skipped (CI once saw a queue deletion go unanswered until nextest's 300 s timeout).
    async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> Option<T> {
        let r = tokio::time::timeout(Duration::from_secs(15), f).await;
        if r.is_err() {
            eprintln!("test cleanup: RabbitMQ did not answer {what} within 15 s; left behind");
        }
        r.ok()
    }
    let Some(Ok(conn)) = step("connect", lapin::Connection::connect(amqp, lapin::ConnectionProperties::default())).await else { return };
    if let Some(Ok(ch)) = step("channel.open", conn.create_channel()).await {
        for q in queues {
            let _ = step(&format!("queue.delete {q}"), ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())).await;
        }
        for ex in prefix.map(|p| [format!("{p}.events"), format!("{p}.unrouted")]).into_iter().flatten() {
            let _ = step(&format!("exchange.delete {ex}"), ch.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())).await;
        }
    }
    let _ = step("connection.close", conn.close(200, "cleanup".into())).await;
}

/// One service's queues under `cfg`: work, DLQ and retry rungs.
pub fn service_queues(cfg: &sb_bus::BusConfig, service: &str) -> Vec<String> {
    let n = sb_bus::topology::Names::new(cfg, service);
    let mut queues = vec![n.work.clone(), n.dlq.clone()];
    queues.extend(n.rung_queues().into_iter().map(|(q, _)| q.to_owned()));
    queues
}

/// Deletes every queue and exchange the given services declared under `cfg.prefix` (work, retry
/// rungs, DLQ, the unrouted queue, the exchanges). Tests call it when they stop, so no test leaves
/// quorum queues behind on the shared broker.
pub async fn delete_services_topology(cfg: &sb_bus::BusConfig, services: &[&str]) {
    let mut queues: Vec<String> = services.iter().flat_map(|s| service_queues(cfg, s)).collect();
    queues.push(sb_bus::topology::Names::new(cfg, "_").unrouted_queue);
    delete_topology(&cfg.amqp_url, Some(&cfg.prefix), &queues).await;
}
