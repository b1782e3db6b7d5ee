//! Shared fixtures for the bus integration tests: a fresh database and queue prefix per test, a
//! handler that records its effect in a table without a unique key (so duplicates would show).

#![allow(dead_code, clippy::unwrap_used)] // test support code: a failed unwrap is a failed test

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use sb_bus::{BusConfig, Envelope, HandlerError, consumer::Stats};
use sb_testkit::{TestDb, amqp_url, unique, wait_for};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const TEST_EVENT: &str = "test.thing.happened.v1";

/// The test's event payload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Thing {
    pub n: i64,
}

impl sb_bus::Event for Thing {
    const TYPE: &'static str = TEST_EVENT;
    const PRODUCER: &'static str = "test-producer";
    const DESCRIPTION: &'static str = "a test event";
}
pub const SERVICE: &str = "test-consumer";

pub fn bus_config(tag: &str) -> BusConfig {
    let mut cfg = BusConfig::new(amqp_url());
    cfg.prefix = unique(tag);
    cfg.retry_delays = vec![Duration::from_millis(200), Duration::from_millis(400), Duration::from_millis(800)];
    cfg
}

/// A migrated database with an `effects` table (no unique key: a duplicate effect is a second row).
pub async fn database(tag: &str) -> TestDb {
    let db = TestDb::new(tag).await.expect("create test database");
    sb_bus::MIGRATOR.run(&db.pool).await.expect("bus migrations");
    sqlx::query("CREATE TABLE effects (event_id UUID NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .execute(&db.pool)
        .await
        .expect("effects table");
    db
}

pub async fn effects(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM effects WHERE event_id = $1").bind(id).fetch_one(pool).await.expect("count effects")
}

pub async fn all_effects(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM effects").fetch_one(pool).await.expect("count effects")
}

/// Records the event as an effect; fails transiently `transient_failures` times first, and fails
/// permanently while `reject` is set.
#[derive(Clone, Default)]
pub struct Recorder {
    pub calls: Arc<AtomicUsize>,
    pub transient_failures: usize,
    pub reject: Arc<AtomicBool>,
    /// This one event always fails permanently.
    pub poison: Option<Uuid>,
    /// The Retry-After its transient failures carry (a 429's).
    pub retry_after: Option<Duration>,
    /// The first call sleeps this long before answering (a hung downstream).
    pub stall_first: Option<Duration>,
    /// When each call started.
    pub call_times: Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
}

#[async_trait::async_trait]
impl sb_bus::Handler<Thing> for Recorder {
    async fn handle(&self, event: &Envelope, _thing: Thing, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.call_times.lock().unwrap().push(std::time::Instant::now());
        if let (0, Some(stall)) = (n, self.stall_first) {
            tokio::time::sleep(stall).await;
        }
        if self.reject.load(Ordering::SeqCst) || self.poison == Some(event.id) {
            return Err(HandlerError::permanent("payload rejected: missing email"));
        }
        if n < self.transient_failures {
            return Err(HandlerError::transient_after(format!("downstream 503 (call {})", n + 1), self.retry_after));
        }
        sqlx::query("INSERT INTO effects (event_id) VALUES ($1)").bind(event.id).execute(tx).await?;
        Ok(())
    }
}

/// A running consumer and the handles a test needs.
pub struct Running {
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

pub async fn start_consumer(cfg: &BusConfig, pool: &PgPool, handler: Recorder) -> Running {
    start(sb_bus::Consumer::new(cfg.clone(), SERVICE, pool.clone()).on::<Thing, _>(handler)).await
}

pub async fn start(consumer: sb_bus::Consumer) -> Running {
    let stats = consumer.stats();
    let connected = consumer.connected_flag();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    wait_for(Duration::from_secs(20), "consumer to subscribe", || {
        let c = connected.clone();
        async move { c.load(Ordering::SeqCst).then_some(()) }
    })
    .await;
    Running { stats, shutdown, task }
}

pub async fn publisher(cfg: &BusConfig) -> (lapin::Connection, sb_bus::Publisher) {
    let conn = sb_bus::publisher::connect(cfg, "test publisher").await.expect("connect");
    let p = sb_bus::Publisher::open(&conn, cfg).await.expect("publisher");
    (conn, p)
}

pub fn event(account: Option<Uuid>) -> Envelope {
    let e = Envelope::raw("test-producer", TEST_EVENT, serde_json::json!({"n": 1}));
    match account {
        Some(a) => e.with_account(a),
        None => e,
    }
}

pub async fn wait_total(stats: &Stats, n: u64, what: &str) {
    wait_for(Duration::from_secs(60), what, || async { (stats.total() >= n).then_some(()) }).await;
}

pub async fn cleanup(cfg: &BusConfig) {
    sb_testkit::delete_services_topology(cfg, &[SERVICE]).await;
}
