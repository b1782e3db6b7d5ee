//! Bus throughput and latency against the local RabbitMQ and PostgreSQL, beside a plain-lapin
//! reference on identical quorum queues, and the outbox's commit→consumer latency.
//!
//! Run: `cargo bench -p sb-bus --bench bus`
//!
//! Environment (all optional):
//! - `BENCH_EVENTS` (20000): events per throughput row.
//! - `BENCH_OUTBOX_EVENTS` (2000): events per row of the outbox section.
//! - `BENCH_RATE` (500): events per second in the outbox section.
//! - `BENCH_OUTBOX_BLOCKS` (4): the fixed-rate rows (1b and 3) run as this many interleaved blocks.
//! - `BENCH_WINDOW` (512): outstanding publisher confirms allowed by the pipelined publishers.
//! - `BENCH_PAD` (160): filler characters in each event's `data`, to give a realistic body size.
//! - `BENCH_ROUNDS` (3): rounds of the saturation rows; each row shows its median round.
//! - `BENCH_LATENCY_RATE` (2000), `BENCH_LATENCY_EVENTS` (6000): the below-saturation rows.
//! - `BENCH_CLAIM_EVENTS` (1000000): sent events behind the relay's claim in section 4.
//! - `SB_TEST_AMQP_URL`, `SB_TEST_DATABASE_URL`: as for the integration tests.
//!
//! Every time is taken from one process-wide `std::time::Instant` (microseconds since start);
//! producer and consumer run in this process, so send and receive stamps share a clock.
//! Targets are printed as information; a missed target never fails the run.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures::{StreamExt, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use sb_bus::{
    BusConfig, Consumer, Envelope, Handler, HandlerError, OutboxRelay, Publisher,
    consumer::Stats,
    publisher::{self, TraceHeaders},
    topology::{self, Names},
};
use sb_testkit::{TestDb, amqp_url, unique};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

// Event types of equal length, so every row moves bodies of the same size.
const BUS_TYPE: &str = "bench.bus.v1";
const REF_TYPE: &str = "bench.ref.v1";
const RPG_TYPE: &str = "bench.rpg.v1";
const OBX_TYPE: &str = "bench.obx.v1";
const BUS_SVC: &str = "bench-bus";
const REF_SVC: &str = "bench-ref";
const RPG_SVC: &str = "bench-rpg";
const OBX_SVC: &str = "bench-obx";

const THROUGHPUT_TARGET: f64 = 0.8;
const OUTBOX_ADDED_P99_TARGET_MS: f64 = 10.0;
const CLAIM_TARGET_MS: f64 = 1.0;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Clock, settings, samples
// ---------------------------------------------------------------------------------------------

static EPOCH: OnceLock<(Instant, DateTime<Utc>)> = OnceLock::new();

fn epoch() -> &'static (Instant, DateTime<Utc>) {
    EPOCH.get_or_init(|| (Instant::now(), Utc::now()))
}

/// Microseconds since the benchmark started, from the monotonic clock.
fn now_us() -> u64 {
    epoch().0.elapsed().as_micros() as u64
}

/// A wall-clock time (e.g. PostgreSQL's `now()` on this host) on the bench clock, in µs. Only
/// used for the outbox breakdown, where one side of the interval is stamped by the database.
fn wall_to_us(t: DateTime<Utc>) -> i64 {
    (t - epoch().1).num_microseconds().unwrap_or(i64::MAX)
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().replace('_', "").parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

struct Settings {
    events: usize,
    outbox_events: usize,
    rate: usize,
    window: usize,
    pad: String,
    warmup: usize,
    rounds: usize,
    outbox_blocks: usize,
    serial_events: usize,
    latency_rate: usize,
    latency_events: usize,
    claim_events: usize,
}

impl Settings {
    fn from_env() -> Self {
        let events = env_num("BENCH_EVENTS", 20_000);
        Self {
            events,
            outbox_events: env_num("BENCH_OUTBOX_EVENTS", 2_000),
            rate: env_num("BENCH_RATE", 500),
            window: env_num("BENCH_WINDOW", 512),
            pad: "x".repeat(env_num("BENCH_PAD", 160)),
            warmup: (events / 10).clamp(1, 1_000),
            rounds: env_num("BENCH_ROUNDS", 3),
            outbox_blocks: env_num("BENCH_OUTBOX_BLOCKS", 4),
            serial_events: events.min(2_000),
            latency_rate: env_num("BENCH_LATENCY_RATE", 2_000),
            latency_events: env_num("BENCH_LATENCY_EVENTS", 6_000),
            claim_events: env_num("BENCH_CLAIM_EVENTS", 1_000_000),
        }
    }
}

/// A new event whose `data.t` is the send time (µs on the bench clock), stamped right now.
fn event(ty: &str, pad: &str) -> Envelope {
    Envelope::raw("bench-producer", ty, serde_json::json!({ "t": now_us(), "pad": pad }))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What consumers saw: (event id, send stamp from `data.t`, receive stamp), in µs.
#[derive(Default)]
struct Samples {
    rows: Mutex<Vec<(Uuid, u64, u64)>>,
}

impl Samples {
    fn record(&self, id: Uuid, sent_us: u64) {
        let recv = now_us();
        lock(&self.rows).push((id, sent_us, recv));
    }
    fn take(&self) -> Vec<(Uuid, u64, u64)> {
        std::mem::take(&mut *lock(&self.rows))
    }
}

/// Nearest-rank percentile of an ascending vector, in milliseconds.
fn pct_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1_000.0
}

/// CPU time (seconds) consumed so far by this process, the broker and PostgreSQL (and the
/// machine), from /proc: the test kit's shared probe.
type Cpu = sb_testkit::probe::CpuTimes;

/// One measured run.
struct Row {
    label: String,
    sent: usize,
    received: usize,
    /// From the first publish until every confirm arrived.
    confirm_secs: f64,
    /// From the first publish until the last delivery was finished (acked).
    e2e_secs: f64,
    /// What the consumer recorded: (id, send stamp, receive stamp), µs.
    raw: Vec<(Uuid, u64, u64)>,
    /// Ascending publish→consume latencies, µs.
    lat_us: Vec<u64>,
    /// CPU used during the run by each component.
    cpu: Option<Cpu>,
    /// min..max e2e msg/s over the rounds this row was picked from (the median round).
    range: Option<(f64, f64)>,
}

impl Row {
    fn e2e_rate(&self) -> f64 {
        self.received as f64 / self.e2e_secs
    }
    fn confirm_rate(&self) -> f64 {
        self.sent as f64 / self.confirm_secs
    }
    fn p50(&self) -> f64 {
        pct_ms(&self.lat_us, 0.50)
    }
    fn p99(&self) -> f64 {
        pct_ms(&self.lat_us, 0.99)
    }
    fn max(&self) -> f64 {
        pct_ms(&self.lat_us, 1.0)
    }

    /// The round with the median end-to-end rate, annotated with the range over all rounds.
    fn median(mut rounds: Vec<Row>) -> Row {
        rounds.sort_by(|a, b| a.e2e_rate().total_cmp(&b.e2e_rate()));
        let lo = rounds.first().map_or(f64::NAN, Row::e2e_rate);
        let hi = rounds.last().map_or(f64::NAN, Row::e2e_rate);
        let mut mid = rounds.swap_remove(rounds.len() / 2);
        if !rounds.is_empty() {
            mid.range = Some((lo, hi));
        }
        mid
    }

    /// Several blocks of one variant as one row (latencies pooled, times and counts summed).
    fn merge(label: String, blocks: Vec<Row>) -> Row {
        let mut out = Row {
            label,
            sent: 0,
            received: 0,
            confirm_secs: 0.0,
            e2e_secs: 0.0,
            raw: Vec::new(),
            lat_us: Vec::new(),
            cpu: Some(Cpu::default()),
            range: None,
        };
        for b in blocks {
            out.sent += b.sent;
            out.received += b.received;
            out.confirm_secs += b.confirm_secs;
            out.e2e_secs += b.e2e_secs;
            out.raw.extend(b.raw);
            out.lat_us.extend(b.lat_us);
            out.cpu = out.cpu.zip(b.cpu).map(|(a, c)| Cpu {
                app: a.app + c.app,
                broker: a.broker + c.broker,
                db: a.db + c.db,
                machine: a.machine + c.machine,
            });
        }
        out.lat_us.sort_unstable();
        out
    }
}

fn print_header() {
    println!(
        "  {:<62} {:>6} {:>9} {:>9} {:>13} {:>7} {:>7} {:>7} | {:>5} {:>6} {:>5}",
        "variant", "msgs", "confirm/s", "e2e msg/s", "e2e range", "p50 ms", "p99 ms", "max ms", "app", "rabbit", "pg"
    );
}

fn print_row(r: &Row) {
    let msgs = if r.received == r.sent { r.sent.to_string() } else { format!("{}/{}", r.received, r.sent) };
    let range = r.range.map_or_else(|| "-".to_owned(), |(lo, hi)| format!("{lo:.0}..{hi:.0}"));
    let per_k = |secs: f64| secs * 1e6 / r.sent.max(1) as f64;
    let cpu = r.cpu.map_or_else(
        || format!("{:>5} {:>6} {:>5}", "-", "-", "-"),
        |c| format!("{:>5.0} {:>6.0} {:>5.0}", per_k(c.app), per_k(c.broker), per_k(c.db)),
    );
    println!(
        "  {:<62} {:>6} {:>9.0} {:>9.0} {:>13} {:>7.1} {:>7.1} {:>7.1} | {cpu}",
        r.label,
        msgs,
        r.confirm_rate(),
        r.e2e_rate(),
        range,
        r.p50(),
        r.p99(),
        r.max()
    );
}

/// Waits until `done()` has advanced by `n` from `base` (or the drain timeout passed).
async fn drain(label: &str, base: u64, n: usize, done: &dyn Fn() -> u64) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while done().saturating_sub(base) < n as u64 {
        if Instant::now() > deadline {
            eprintln!("warning: {label}: only {} of {n} finished after {DRAIN_TIMEOUT:?}", done().saturating_sub(base));
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs `publish` (which sends `n` events) while the consumer behind `done` drains them.
/// Latency here is receive stamp − send stamp carried in `data.t`.
async fn measure(
    label: &str,
    n: usize,
    samples: &Samples,
    done: &dyn Fn() -> u64,
    publish: impl Future<Output = Result<()>>,
) -> Result<Row> {
    samples.take();
    let base = done();
    let cpu_before = Some(Cpu::now());
    let start = Instant::now();
    publish.await.with_context(|| format!("publishing for {label}"))?;
    let confirm_secs = start.elapsed().as_secs_f64();
    drain(label, base, n, done).await;
    let e2e_secs = start.elapsed().as_secs_f64();
    let cpu = cpu_before.map(|b| Cpu::now().since(b));
    let raw = samples.take();
    let mut lat_us: Vec<u64> = raw.iter().map(|(_, sent, recv)| recv.saturating_sub(*sent)).collect();
    lat_us.sort_unstable();
    Ok(Row {
        label: label.to_owned(),
        sent: n,
        received: done().saturating_sub(base) as usize,
        confirm_secs,
        e2e_secs,
        raw,
        lat_us,
        cpu,
        range: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------------------------

/// Our `Publisher`, pipelined: `start_event` + `publisher::confirmed`, at most `window` unconfirmed.
async fn publish_bus_pipelined(p: &Publisher, n: usize, window: usize, ty: &str, pad: &str) -> Result<()> {
    let no_trace = TraceHeaders::new();
    let mut inflight = FuturesUnordered::new();
    for _ in 0..n {
        if inflight.len() >= window
            && let Some(r) = inflight.next().await
        {
            r?;
        }
        let env = event(ty, pad);
        let pending = p.start_event(&env.to_json(), env.routing_key(), publisher::event_properties(&env, &no_trace)).await?;
        inflight.push(publisher::confirmed(pending));
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    Ok(())
}

/// Our `Publisher::publish`, awaited one at a time (the convenience API used in a loop).
async fn publish_bus_serial(p: &Publisher, n: usize, ty: &str, pad: &str) -> Result<()> {
    let no_trace = TraceHeaders::new();
    for _ in 0..n {
        p.publish(&event(ty, pad), &no_trace).await?;
    }
    Ok(())
}

/// Plain lapin on a confirm channel: persistent, mandatory, at most `window` unconfirmed.
async fn publish_lapin_pipelined(ch: &Channel, exchange: &str, n: usize, window: usize, ty: &str, pad: &str) -> Result<()> {
    let mut inflight = FuturesUnordered::new();
    for _ in 0..n {
        if inflight.len() >= window
            && let Some(r) = inflight.next().await
        {
            r?;
        }
        let body = event(ty, pad).to_json();
        let confirm = ch
            .basic_publish(
                exchange.into(),
                ty.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        inflight.push(async move {
            match confirm.await? {
                Confirmation::Ack(None) => Ok(()),
                other => bail!("publish not confirmed: {other:?}"),
            }
        });
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    Ok(())
}

/// One event through our `Publisher` (`start_event` + `confirmed`), for paced runs.
async fn send_one_bus(p: Publisher, ty: &'static str, pad: Arc<String>) -> Result<()> {
    let env = event(ty, &pad);
    let pending = p.start_event(&env.to_json(), env.routing_key(), publisher::event_properties(&env, &TraceHeaders::new())).await?;
    publisher::confirmed(pending).await?;
    Ok(())
}

/// One event through plain lapin (persistent, mandatory, confirmed), for paced runs.
async fn send_one_lapin(ch: Channel, exchange: String, ty: &'static str, pad: Arc<String>) -> Result<()> {
    let body = event(ty, &pad).to_json();
    let confirm = ch
        .basic_publish(
            exchange.into(),
            ty.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            &body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?;
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        other => bail!("publish not confirmed: {other:?}"),
    }
}

/// Emits `m` ticks at `rate` per second, spawning `job()` on each tick (as independent requests
/// would), then waits for all of them.
async fn paced<F, Fut>(m: usize, rate: usize, job: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = Vec::with_capacity(m);
    for _ in 0..m {
        tick.tick().await;
        tasks.push(tokio::spawn(job()));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------------------------

/// The bus handler: records the receive time (it runs inside the inbox transaction, after the
/// inbox INSERT and before COMMIT and ack).
struct Probe(Arc<Samples>);

/// The bench's payload (decoded like any service's): the send stamp and padding.
macro_rules! stamped_event {
    ($name:ident, $ty:expr) => {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct $name {
            t: u64,
            pad: String,
        }
        impl sb_bus::Event for $name {
            const TYPE: &'static str = $ty;
            const PRODUCER: &'static str = "bench-producer";
            const DESCRIPTION: &'static str = "a benchmark event";
        }
        impl Stamped for $name {
            fn sent(&self) -> u64 {
                self.t
            }
        }
    };
}

trait Stamped {
    fn sent(&self) -> u64;
}

stamped_event!(BusStamp, BUS_TYPE);
stamped_event!(OutboxStamp, OBX_TYPE);

#[async_trait::async_trait]
impl<E: sb_bus::Event + Stamped> Handler<E> for Probe {
    async fn handle(&self, env: &Envelope, event: E, _tx: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.record(env.id, event.sent());
        Ok(())
    }
}

struct BusRunning {
    stats: Arc<Stats>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl BusRunning {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn wait_flag(flag: &AtomicBool, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !flag.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The real `sb_bus::Consumer` (it declares its own topology), started and subscribed.
async fn start_bus_consumer<E: sb_bus::Event + Stamped>(
    cfg: &BusConfig,
    service: &str,
    pool: &PgPool,
    samples: Arc<Samples>,
) -> Result<BusRunning> {
    let consumer = Consumer::new(cfg.clone(), service, pool.clone()).on::<E, _>(Probe(samples));
    let stats = consumer.stats();
    let connected = consumer.connected_flag();
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer.run(stop.clone()));
    wait_flag(&connected, "the bus consumer to subscribe").await?;
    Ok(BusRunning { stats, stop, task })
}

/// The fields the reference consumer reads from a body.
#[derive(serde::Deserialize)]
struct RefBody {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    data: RefData,
}

#[derive(serde::Deserialize)]
struct RefData {
    t: u64,
}

struct LapinRunning {
    conn: Connection,
    done: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LapinRunning {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        let _ = self.conn.close(200, "bench done".into()).await;
    }
}

/// One reference delivery: parse, optionally the inbox INSERT in its own transaction (stamping
/// the receive time at the same point as the bus handler does), then the caller acks.
async fn handle_reference(data: &[u8], samples: &Samples, inbox: Option<&(PgPool, String)>) -> Result<()> {
    let body: RefBody = serde_json::from_slice(data)?;
    match inbox {
        None => samples.record(body.id, body.data.t),
        Some((pool, consumer)) => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO sb_inbox (consumer, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(consumer)
                .bind(body.id)
                .bind(&body.event_type)
                .execute(&mut *tx)
                .await?;
            samples.record(body.id, body.data.t);
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Plain lapin consumer: own connection, same prefetch as the bus, manual ack, deliveries handled
/// concurrently up to the prefetch (as `sb_bus::Consumer` does).
async fn start_lapin_consumer(
    cfg: &BusConfig,
    queue: &str,
    samples: Arc<Samples>,
    inbox: Option<(PgPool, String)>,
) -> Result<LapinRunning> {
    let conn = Connection::connect(&cfg.amqp_url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(cfg.prefetch, BasicQosOptions::default()).await?;
    let deliveries = ch
        .basic_consume(queue.into(), format!("bench-{}", Uuid::now_v7()).into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let concurrency = usize::from(cfg.prefetch.max(1));
    let task = tokio::spawn({
        let (done, stop, inbox) = (done.clone(), stop.clone(), Arc::new(inbox));
        async move {
            deliveries
                .take_until(stop.cancelled_owned())
                .for_each_concurrent(concurrency, |delivery| {
                    let (done, samples, inbox) = (done.clone(), samples.clone(), inbox.clone());
                    async move {
                        let Ok(delivery) = delivery else { return };
                        if let Err(e) = handle_reference(&delivery.data, &samples, inbox.as_ref().as_ref()).await {
                            eprintln!("reference consumer: {e:#}");
                            return;
                        }
                        if delivery.acker.ack(BasicAckOptions::default()).await.is_ok() {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
                .await;
        }
    });
    Ok(LapinRunning { conn, done, stop, task })
}

// ---------------------------------------------------------------------------------------------
// Setup and cleanup
// ---------------------------------------------------------------------------------------------

fn bench_config(tag: &str) -> BusConfig {
    let mut cfg = BusConfig::new(amqp_url());
    cfg.prefix = unique(tag);
    // One rung is enough (nothing fails here); queues expire if the cleanup below is skipped.
    cfg.retry_delays = vec![Duration::from_secs(10)];
    cfg
}

async fn database(tag: &str) -> Result<TestDb> {
    let db = TestDb::new(tag).await?;
    sb_bus::MIGRATOR.run(&db.pool).await?;
    Ok(db)
}

async fn cleanup(cfg: &BusConfig, services: &[&str]) {
    let mut queues = Vec::new();
    for svc in services {
        let n = Names::new(cfg, svc);
        queues.extend([n.work.clone(), n.dlq.clone()]);
        queues.extend(n.rung_queues().into_iter().map(|(q, _)| q.to_owned()));
        if !queues.contains(&n.unrouted_queue) {
            queues.push(n.unrouted_queue.clone());
        }
    }
    sb_testkit::delete_topology(&cfg.amqp_url, Some(&cfg.prefix), &queues).await;
}

// ---------------------------------------------------------------------------------------------
// Section 1 + 2: throughput and latency, bus vs plain lapin
// ---------------------------------------------------------------------------------------------

struct ThroughputResults {
    rows: Vec<Row>,
    bus: usize,
    reference: usize,
    reference_pg: usize,
    /// Same three paths at a fixed rate below every path's capacity: reference, bus, reference+PG.
    paced: Vec<Row>,
    /// bus / reference and bus / reference+PG end-to-end rate, per round.
    paired: Vec<f64>,
    paired_pg: Vec<f64>,
}

async fn throughput(s: &Settings) -> Result<ThroughputResults> {
    let cfg = bench_config("bench");
    let result = throughput_rows(s, &cfg).await;
    cleanup(&cfg, &[BUS_SVC, REF_SVC, RPG_SVC]).await;
    result
}

async fn throughput_rows(s: &Settings, cfg: &BusConfig) -> Result<ThroughputResults> {
    let (n, w) = (s.events, s.window);
    let bus_db = database("bench_bus").await?;
    let rpg_db = database("bench_rpg").await?;

    // Consumers first (the bus consumer declares the exchange and its queue); the reference
    // queues are declared by the same `declare_service`, so their arguments are identical.
    let bus_samples = Arc::new(Samples::default());
    let bus = start_bus_consumer::<BusStamp>(cfg, BUS_SVC, &bus_db.pool, bus_samples.clone()).await?;
    let setup_conn = Connection::connect(&cfg.amqp_url, ConnectionProperties::default()).await?;
    let ref_names = topology::declare_service(&setup_conn, cfg, REF_SVC, &[REF_TYPE]).await?;
    let rpg_names = topology::declare_service(&setup_conn, cfg, RPG_SVC, &[RPG_TYPE]).await?;
    let ref_samples = Arc::new(Samples::default());
    let rpg_samples = Arc::new(Samples::default());
    let reference = start_lapin_consumer(cfg, &ref_names.work, ref_samples.clone(), None).await?;
    let reference_pg =
        start_lapin_consumer(cfg, &rpg_names.work, rpg_samples.clone(), Some((rpg_db.pool.clone(), RPG_SVC.to_owned()))).await?;

    // Publishers: ours on its own connection, plain lapin on another.
    let bus_pub_conn = publisher::connect(cfg, "bench bus publisher").await?;
    let bus_pub = Publisher::open(&bus_pub_conn, cfg).await?;
    let lapin_conn = Connection::connect(&cfg.amqp_url, ConnectionProperties::default()).await?;
    let lapin_ch = lapin_conn.create_channel().await?;
    lapin_ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = ref_names.exchange.clone();

    let bus_done = || bus.stats.total();
    let ref_done = || reference.done.load(Ordering::SeqCst);
    let rpg_done = || reference_pg.done.load(Ordering::SeqCst);

    // Warm up every path (connections, PG pools, queue processes); results discarded.
    let wu = s.warmup;
    measure("warm-up", wu, &bus_samples, &bus_done, publish_bus_pipelined(&bus_pub, wu, w, BUS_TYPE, &s.pad)).await?;
    measure("warm-up", wu, &ref_samples, &ref_done, publish_lapin_pipelined(&lapin_ch, &exchange, wu, w, REF_TYPE, &s.pad)).await?;
    measure("warm-up", wu, &rpg_samples, &rpg_done, publish_lapin_pipelined(&lapin_ch, &exchange, wu, w, RPG_TYPE, &s.pad)).await?;

    // Rounds interleave the variants, so drift (checkpoints, WAL segment rolls) hits all alike.
    const LABELS: [&str; 5] = [
        "REFERENCE  lapin pipelined -> lapin consumer, ack only",
        "BUS        Publisher pipelined -> sb_bus::Consumer (PG inbox)",
        "REF+PG     lapin pipelined -> lapin consumer + inbox tx",
        "split      lapin pipelined -> sb_bus::Consumer (PG inbox)",
        "split      Publisher pipelined -> lapin consumer, ack only",
    ];
    let mut rounds: [Vec<Row>; 5] = Default::default();
    for _ in 0..s.rounds {
        let pad = &s.pad;
        rounds[0].push(
            measure(LABELS[0], n, &ref_samples, &ref_done, publish_lapin_pipelined(&lapin_ch, &exchange, n, w, REF_TYPE, pad)).await?,
        );
        rounds[1].push(measure(LABELS[1], n, &bus_samples, &bus_done, publish_bus_pipelined(&bus_pub, n, w, BUS_TYPE, pad)).await?);
        rounds[2].push(
            measure(LABELS[2], n, &rpg_samples, &rpg_done, publish_lapin_pipelined(&lapin_ch, &exchange, n, w, RPG_TYPE, pad)).await?,
        );
        rounds[3].push(
            measure(LABELS[3], n, &bus_samples, &bus_done, publish_lapin_pipelined(&lapin_ch, &exchange, n, w, BUS_TYPE, pad)).await?,
        );
        rounds[4].push(measure(LABELS[4], n, &ref_samples, &ref_done, publish_bus_pipelined(&bus_pub, n, w, REF_TYPE, pad)).await?);
    }
    let (reference_idx, bus_idx, reference_pg_idx) = (0, 1, 2);
    // Per-round bus/reference ratios (each pair ran back to back).
    let paired: Vec<f64> = rounds[1].iter().zip(&rounds[0]).map(|(b, r)| b.e2e_rate() / r.e2e_rate()).collect();
    let paired_pg: Vec<f64> = rounds[1].iter().zip(&rounds[2]).map(|(b, r)| b.e2e_rate() / r.e2e_rate()).collect();
    let mut rows: Vec<Row> = rounds.into_iter().map(Row::median).collect();
    let sn = s.serial_events;
    rows.push(
        measure(
            "info       Publisher::publish awaited serially -> Consumer",
            sn,
            &bus_samples,
            &bus_done,
            publish_bus_serial(&bus_pub, sn, BUS_TYPE, &s.pad),
        )
        .await?,
    );

    // Latency below saturation: the same paths at a fixed rate (each publish its own task), in
    // interleaved blocks so a broker or database stall lands on every variant alike. A short
    // pause first lets the broker and PostgreSQL finish background work from the rows above.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ln, lr) = (s.latency_events, s.latency_rate);
    let blocks = s.outbox_blocks.clamp(1, ln);
    let pad = Arc::new(s.pad.clone());
    let mut paced_blocks: [Vec<Row>; 3] = Default::default();
    for i in 0..blocks {
        let k = ln / blocks + usize::from(i < ln % blocks);
        paced_blocks[0].push(
            measure(
                "ref",
                k,
                &ref_samples,
                &ref_done,
                paced(k, lr, || send_one_lapin(lapin_ch.clone(), exchange.clone(), REF_TYPE, pad.clone())),
            )
            .await?,
        );
        paced_blocks[1]
            .push(measure("bus", k, &bus_samples, &bus_done, paced(k, lr, || send_one_bus(bus_pub.clone(), BUS_TYPE, pad.clone()))).await?);
        paced_blocks[2].push(
            measure(
                "rpg",
                k,
                &rpg_samples,
                &rpg_done,
                paced(k, lr, || send_one_lapin(lapin_ch.clone(), exchange.clone(), RPG_TYPE, pad.clone())),
            )
            .await?,
        );
    }
    let paced_labels = [
        format!("REFERENCE  lapin at {lr}/s -> lapin consumer, ack only"),
        format!("BUS        Publisher at {lr}/s -> sb_bus::Consumer (PG inbox)"),
        format!("REF+PG     lapin at {lr}/s -> lapin consumer + inbox tx"),
    ];
    let paced_rows: Vec<Row> = paced_labels.into_iter().zip(paced_blocks).map(|(label, b)| Row::merge(label, b)).collect();

    let _ = bus_pub_conn.close(200, "bench done".into()).await;
    let _ = lapin_conn.close(200, "bench done".into()).await;
    let _ = setup_conn.close(200, "bench done".into()).await;
    reference.stop().await;
    reference_pg.stop().await;
    bus.stop().await;
    drop((bus_db, rpg_db));
    Ok(ThroughputResults {
        rows,
        bus: bus_idx,
        reference: reference_idx,
        reference_pg: reference_pg_idx,
        paced: paced_rows,
        paired,
        paired_pg,
    })
}

// ---------------------------------------------------------------------------------------------
// Section 3: outbox commit -> consumer latency
// ---------------------------------------------------------------------------------------------

struct OutboxResults {
    direct: Row,
    outbox: Row,
    breakdown: Breakdown,
}

/// Where outbox latency goes, from the relay's claim transaction (the test kit's copy of each
/// sent row: `published_at` = the `now()` of the relay transaction that deleted it).
#[derive(Default)]
struct Breakdown {
    /// Commit → start of the relay transaction that claimed the row, µs (ascending).
    pickup_us: Vec<u64>,
    /// Start of that relay transaction → consumer handler, µs (ascending).
    relay_to_consumer_us: Vec<u64>,
    batches: usize,
    max_batch: usize,
}

fn breakdown(commits: &HashMap<Uuid, u64>, received: &HashMap<Uuid, u64>, published: &[(Uuid, DateTime<Utc>)]) -> Breakdown {
    let mut b = Breakdown::default();
    let mut per_batch: HashMap<DateTime<Utc>, usize> = HashMap::new();
    for (id, at) in published {
        let (Some(commit), Some(recv)) = (commits.get(id), received.get(id)) else { continue };
        let claim = wall_to_us(*at).max(0) as u64;
        b.pickup_us.push(claim.saturating_sub(*commit));
        b.relay_to_consumer_us.push(recv.saturating_sub(claim));
        *per_batch.entry(*at).or_default() += 1;
    }
    b.pickup_us.sort_unstable();
    b.relay_to_consumer_us.sort_unstable();
    b.batches = per_batch.len();
    b.max_batch = per_batch.values().copied().max().unwrap_or(0);
    b
}

async fn outbox(s: &Settings) -> Result<OutboxResults> {
    let cfg = bench_config("bench_obx");
    let result = outbox_rows(s, &cfg).await;
    cleanup(&cfg, &[OBX_SVC]).await;
    result
}

async fn outbox_rows(s: &Settings, cfg: &BusConfig) -> Result<OutboxResults> {
    let (m, rate) = (s.outbox_events, s.rate);
    let producer_db = database("bench_obx_p").await?;
    // The relay deletes sent rows; keep a copy (one INSERT more in its transaction) to read back
    // when each was claimed.
    producer_db.keep_sent_outbox().await?;
    let consumer_db = database("bench_obx_c").await?;
    let samples = Arc::new(Samples::default());
    let consumer = start_bus_consumer::<OutboxStamp>(cfg, OBX_SVC, &consumer_db.pool, samples.clone()).await?;
    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(OutboxRelay::new(producer_db.pool.clone(), cfg.clone(), "bench-producer").run(relay_stop.clone()));
    let pub_conn = publisher::connect(cfg, "bench direct publisher").await?;
    let direct_pub = Publisher::open(&pub_conn, cfg).await?;
    let done = || consumer.stats.total();
    let pad = Arc::new(s.pad.clone());

    // Direct: `Publisher::publish` at the same rate; latency = consumer receive − send stamp in data.t.
    let direct_job = || {
        let (p, pad) = (direct_pub.clone(), pad.clone());
        async move {
            p.publish(&event(OBX_TYPE, &pad), &TraceHeaders::new()).await?;
            Ok(())
        }
    };
    // Outbox: one transaction per event with `enqueue`; the commit time is stamped right after
    // COMMIT returns and kept in a side map by event id (data.t and occurred_at are written before
    // the commit, so they would also count the transaction itself).
    let commits: Arc<Mutex<HashMap<Uuid, u64>>> = Arc::default();
    let outbox_job = || {
        let (pool, pad, commits) = (producer_db.pool.clone(), pad.clone(), commits.clone());
        async move {
            let env = event(OBX_TYPE, &pad);
            let mut tx = pool.begin().await?;
            sb_bus::enqueue(&mut tx, &env).await?;
            // As every producer does: the commit tells this process's relay.
            sb_bus::outbox::commit(tx, &env.source).await?;
            let committed = now_us();
            lock(&commits).insert(env.id, committed);
            Ok(())
        }
    };

    // Warm-up both paths (pool connections, the relay, broker channels).
    let wu = (m / 10).clamp(1, 200);
    measure("warm-up", wu, &samples, &done, paced(wu, rate, direct_job)).await?;
    measure("warm-up", wu, &samples, &done, paced(wu, rate, outbox_job)).await?;
    lock(&commits).clear();

    // Interleaved blocks (direct, outbox, direct, ...) so broker/database hiccups hit both alike.
    let blocks = s.outbox_blocks.clamp(1, m);
    let (mut direct_blocks, mut outbox_blocks) = (Vec::new(), Vec::new());
    for i in 0..blocks {
        let k = m / blocks + usize::from(i < m % blocks);
        direct_blocks.push(measure("direct", k, &samples, &done, paced(k, rate, direct_job)).await?);
        outbox_blocks.push(measure("outbox", k, &samples, &done, paced(k, rate, outbox_job)).await?);
    }
    let direct = Row::merge(format!("DIRECT  Publisher::publish at {rate}/s -> Consumer"), direct_blocks);
    let mut outbox = Row::merge(format!("OUTBOX  enqueue+COMMIT at {rate}/s -> relay -> Consumer"), outbox_blocks);
    // The outbox latency starts at the commit stamp, not at data.t (stamped before BEGIN).
    let commits = std::mem::take(&mut *lock(&commits));
    let received: HashMap<Uuid, u64> = outbox.raw.iter().map(|(id, _, recv)| (*id, *recv)).collect();
    outbox.lat_us = received.iter().filter_map(|(id, recv)| commits.get(id).map(|c| recv.saturating_sub(*c))).collect();
    outbox.lat_us.sort_unstable();

    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM sb_outbox WHERE published_at IS NULL").fetch_one(&producer_db.pool).await?;
    if unsent != 0 {
        eprintln!("warning: {unsent} outbox rows still unpublished");
    }
    let published: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT event_id, published_at FROM sb_test_outbox WHERE published_at IS NOT NULL")
            .fetch_all(&producer_db.pool)
            .await?;
    let breakdown = breakdown(&commits, &received, &published);

    relay_stop.cancel();
    let _ = relay.await;
    let _ = pub_conn.close(200, "bench done".into()).await;
    consumer.stop().await;
    drop((producer_db, consumer_db));
    Ok(OutboxResults { direct, outbox, breakdown })
}

// ---------------------------------------------------------------------------------------------
// Section 4: the relay's claim behind a long history, vacuum off
// ---------------------------------------------------------------------------------------------

/// The relay's statements timed on one outbox (ms, ascending).
struct ClaimTimes {
    /// The claim above the floor (what every look that finds rows runs).
    claim: Vec<f64>,
    /// The once-a-second sweep from the start; its first pass is `first_sweep`.
    sweep: Vec<f64>,
    first_sweep: f64,
    /// Heap size of `sb_outbox`, bytes.
    heap: i64,
}

/// Times the relay's claim on `pool`'s outbox with one row waiting (rolled back each time).
async fn time_claims(pool: &PgPool, reps: usize) -> Result<ClaimTimes> {
    let top: i64 = sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM sb_outbox").fetch_one(pool).await?;
    let floor = (top - 1024).max(0);
    let once = |from: i64| async move {
        let mut tx = pool.begin_with(sb_bus::outbox::CLAIM_BEGIN).await?;
        let t = Instant::now();
        let rows = sqlx::query(sb_bus::outbox::CLAIM).bind(256i64).bind(from).fetch_all(&mut *tx).await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        tx.rollback().await?;
        anyhow::ensure!(rows.len() == 1, "the claim found {} rows, not the one waiting", rows.len());
        anyhow::Ok(ms)
    };
    let first_sweep = once(0).await?;
    let (mut claim, mut sweep) = (Vec::new(), Vec::new());
    for i in 0..reps {
        claim.push(once(floor).await?);
        if i % 10 == 0 {
            sweep.push(once(0).await?);
        }
    }
    claim.sort_by(f64::total_cmp);
    sweep.sort_by(f64::total_cmp);
    let heap = sqlx::query_scalar("SELECT pg_relation_size('sb_outbox')").fetch_one(pool).await?;
    Ok(ClaimTimes { claim, sweep, first_sweep, heap })
}

/// One waiting row, enqueued as a producer does.
async fn one_waiting(pool: &PgPool, pad: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    sb_bus::enqueue(&mut tx, &event(OBX_TYPE, pad)).await?;
    tx.commit().await?;
    Ok(())
}

/// The relay's claim on a fresh outbox, then on one that has sent `s.claim_events` events (rows
/// inserted and deleted as the relay leaves them, with autovacuum off for the table).
async fn claim_history(s: &Settings) -> Result<(ClaimTimes, ClaimTimes, f64)> {
    let db = database("bench_claim").await?;
    sqlx::query("ALTER TABLE sb_outbox SET (autovacuum_enabled = false)").execute(&db.pool).await?;
    one_waiting(&db.pool, &s.pad).await?;
    let fresh = time_claims(&db.pool, 200).await?;
    sqlx::query("DELETE FROM sb_outbox").execute(&db.pool).await?;
    let body = event(OBX_TYPE, &s.pad).to_json();
    let started = Instant::now();
    let chunk = 50_000;
    let mut left = s.claim_events;
    while left > 0 {
        let k = left.min(chunk);
        let top: i64 = sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM sb_outbox").fetch_one(&db.pool).await?;
        sqlx::query("INSERT INTO sb_outbox (event_id, event_type, payload) SELECT gen_random_uuid(), $2, $3 FROM generate_series(1, $1)")
            .bind(k as i64)
            .bind(OBX_TYPE)
            .bind(&body)
            .execute(&db.pool)
            .await?;
        sqlx::query("DELETE FROM sb_outbox WHERE seq > $1").bind(top).execute(&db.pool).await?;
        left -= k;
    }
    let filled = started.elapsed().as_secs_f64();
    one_waiting(&db.pool, &s.pad).await?;
    let after = time_claims(&db.pool, 200).await?;
    drop(db);
    Ok((fresh, after, filled))
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = epoch();
    let s = Settings::from_env();
    let cfg = BusConfig::new(amqp_url());
    let body_bytes = event(BUS_TYPE, &s.pad).to_json().len();
    let pg_version: String = {
        use sqlx::Connection as _;
        let mut admin = PgConnection::connect(&sb_testkit::admin_url()).await?;
        let v = sqlx::query_scalar("SHOW server_version").fetch_one(&mut admin).await?;
        let _ = admin.close().await;
        v
    };
    println!("sb-bus benchmark");
    println!(
        "  broker {} (quorum queues), PostgreSQL {pg_version}, {} CPUs",
        cfg.redacted_url(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  N={} events per row (+{} warm-up per path), body {body_bytes} B, confirm window {}, prefetch {} (BusConfig default)",
        s.events, s.warmup, s.window, cfg.prefetch
    );
    println!(
        "  every row: persistent (delivery_mode 2), mandatory, publisher confirms, manual ack, quorum work queue from topology::declare_service"
    );
    println!("  columns: confirm/s = sent / time to last confirm; e2e msg/s = finished (acked) / time from first publish to last ack;");
    println!(
        "           latency = consumer-side stamp - send stamp; app/rabbit/pg = CPU ms per 1000 msgs of this process / beam.smp / postgres"
    );
    println!(
        "           (at fixed low rates the CPU columns include idle polling and broker busy-waiting: compare rows within a table only)"
    );
    println!();

    let started = Instant::now();
    let tp = throughput(&s).await?;
    println!(
        "1+2. Throughput at saturation (publisher and consumer concurrent; median of {} interleaved rounds, range = min..max e2e msg/s)",
        s.rounds
    );
    print_header();
    for r in &tp.rows {
        print_row(r);
    }
    let (bus, reference, reference_pg) = (&tp.rows[tp.bus], &tp.rows[tp.reference], &tp.rows[tp.reference_pg]);
    let ratio = bus.e2e_rate() / reference.e2e_rate();
    println!();
    println!(
        "  bus / reference throughput      {:>6.2}x   (target >= {THROUGHPUT_TARGET}x: {})",
        ratio,
        verdict(ratio >= THROUGHPUT_TARGET)
    );
    let fmt = |v: &[f64]| v.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ");
    println!("    per round: {}", fmt(&tp.paired));
    println!(
        "  bus / reference+PG throughput   {:>6.2}x   (inbox cost on both sides, so this is our layers only; per round: {})",
        bus.e2e_rate() / reference_pg.e2e_rate(),
        fmt(&tp.paired_pg)
    );
    println!(
        "  p99 at saturation (mostly queueing behind the slower consumer): bus {:.1} ms | reference {:.1} ms | reference+PG {:.1} ms",
        bus.p99(),
        reference.p99(),
        reference_pg.p99()
    );
    println!();
    println!(
        "1b. Latency below saturation ({} events per row at {}/s, one task per publish, {} interleaved blocks)",
        s.latency_events, s.latency_rate, s.outbox_blocks
    );
    print_header();
    for r in &tp.paced {
        print_row(r);
    }
    if let [reference, bus, reference_pg] = &tp.paced[..] {
        println!();
        println!(
            "  p50/p99 bus {:.1}/{:.1} ms | reference {:.1}/{:.1} ms | reference+PG {:.1}/{:.1} ms",
            bus.p50(),
            bus.p99(),
            reference.p50(),
            reference.p99(),
            reference_pg.p50(),
            reference_pg.p99()
        );
    }
    println!();

    let ob = outbox(&s).await?;
    println!(
        "3. Outbox commit->consumer latency ({} events per row at {}/s in {} interleaved blocks; outbox latency = handler stamp - stamp right after COMMIT)",
        s.outbox_events, s.rate, s.outbox_blocks
    );
    print_header();
    print_row(&ob.direct);
    print_row(&ob.outbox);
    let added = ob.outbox.p99() - ob.direct.p99();
    println!();
    println!(
        "  outbox-added p99 = {:.1} - {:.1} = {:.1} ms   (target <= {OUTBOX_ADDED_P99_TARGET_MS} ms: {});  added p50 = {:.1} ms",
        ob.outbox.p99(),
        ob.direct.p99(),
        added,
        verdict(added <= OUTBOX_ADDED_P99_TARGET_MS),
        ob.outbox.p50() - ob.direct.p50()
    );
    let b = &ob.breakdown;
    println!("  breakdown (relay claim = PostgreSQL now() of the relay's claim transaction, same host clock):");
    println!(
        "    commit -> relay claim   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        pct_ms(&b.pickup_us, 0.5),
        pct_ms(&b.pickup_us, 0.99),
        pct_ms(&b.pickup_us, 1.0)
    );
    println!(
        "    relay claim -> handler  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        pct_ms(&b.relay_to_consumer_us, 0.5),
        pct_ms(&b.relay_to_consumer_us, 0.99),
        pct_ms(&b.relay_to_consumer_us, 1.0)
    );
    println!("    relay batches {}  (mean {:.1} rows, max {})", b.batches, b.pickup_us.len() as f64 / b.batches.max(1) as f64, b.max_batch);
    println!();

    let (fresh, after, filled) = claim_history(&s).await?;
    println!(
        "4. The relay's claim with one row waiting, on a fresh outbox and after {} sent events (inserted and deleted in {filled:.0} s, autovacuum off for the table; each claim rolled back)",
        s.claim_events
    );
    let q = |v: &[f64], p: f64| if v.is_empty() { f64::NAN } else { v[((v.len() - 1) as f64 * p).round() as usize] };
    for (label, t) in [("fresh", &fresh), ("after", &after)] {
        println!(
            "  {label:<6} heap {:>7.1} MB | claim above the floor p50 {:.3} ms p99 {:.3} ms max {:.3} ms ({} times) | sweep from the start: first {:.1} ms, then p50 {:.2} ms max {:.2} ms",
            t.heap as f64 / 1e6,
            q(&t.claim, 0.5),
            q(&t.claim, 0.99),
            q(&t.claim, 1.0),
            t.claim.len(),
            t.first_sweep,
            q(&t.sweep, 0.5),
            q(&t.sweep, 1.0)
        );
    }
    let worst = q(&after.claim, 0.99);
    println!(
        "  claim p99 after {} sent events {worst:.3} ms (fresh {:.3} ms)   (target < {CLAIM_TARGET_MS} ms: {})",
        s.claim_events,
        q(&fresh.claim, 0.99),
        verdict(worst < CLAIM_TARGET_MS)
    );
    println!();

    use sb_testkit::report::{Figure, write};
    let figures = [
        // Each round's bus / plain-lapin ratio is already relative to its own same-run reference.
        Figure::at_least("bus / plain lapin throughput (each round)", "x", THROUGHPUT_TARGET, tp.paired.clone()),
        Figure::at_most("outbox commit -> consumer, added p99", "ms", OUTBOX_ADDED_P99_TARGET_MS, vec![added])
            .baseline("direct publish -> consumer p99", ob.direct.p99()),
        Figure::at_most(&format!("relay claim p99 after {} sent events", s.claim_events), "ms", CLAIM_TARGET_MS, vec![worst])
            .baseline("claim p99 on a fresh outbox", q(&fresh.claim, 0.99)),
    ];
    write("bus", &figures)?;
    println!("  total bench time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
