//! Stripe webhooks through the real gateway, billing and identity (issue #4; release build, real
//! PostgreSQL and RabbitMQ, the services in this process as in `me.rs`):
//!
//! 1. Webhook ack latency at a fixed rate (open loop, default 500/s): every request a distinct
//!    Stripe event (`customer.subscription.updated` or `invoice.paid` of a random customer, in
//!    Stripe's shape from `sb_stripe::objects`) signed at dispatch, answered once the receipt and
//!    its outbox row are committed; beside `GET /v1/status` (no database) and the same POST with a
//!    bad signature (400: HTTP + HMAC, no database) at the same rate.
//! 2. Payment → access latency at a fixed rate (default 200/s): every payment a signed, paid,
//!    subscription-mode `checkout.session.completed` for a fresh account, from dispatch until the
//!    `billing.access.changed.v1` (to = active) for that account reaches the bench's own queue on
//!    the events exchange; beside the bus hop alone (plain lapin publish with confirms to the same
//!    exchange → consume) at the same rate, with a per-stage breakdown (gateway → its outbox relay
//!    → billing → its outbox relay) from the gateway's receipts, billing's inbox and the events
//!    themselves (`occurred_at`, the relay's `x-sb-relayed-at`).
//!
//! Each part also reports what the whole pipeline spent per Stripe event, from the start of its
//! measured row until everything it caused was applied and sent: CPU ms (the services — this
//! process less the bench's own named threads —, PostgreSQL, RabbitMQ) and WAL bytes
//! (`pg_current_wal_lsn()`, the whole cluster).
//!
//!   cargo bench -p gateway --bench webhook
//!   (BENCH_SECONDS=5, BENCH_ACK_RATE=500, BENCH_ACCESS_RATE=200, BENCH_SERVER_THREADS=<CPUs>,
//!    BENCH_ROUNDS=5: each part's rows are repeated, and each target judged by its worst round;
//!    BENCH_BURST=3000: Stripe events per round of part 3)
//! 3. Billing's sustained apply rate: a burst of distinct `stripe.event.received.v1` events put
//!    on the bus at once (as the gateway's relay would after an outage), timed until billing has
//!    recorded every one.
//! 4. Ack throughput: `BENCH_CONCURRENCY` (16) senders posting signed webhooks back to back,
//!    beside the same durable work done directly with PostgreSQL (the gateway's one statement —
//!    receipt and outbox row — from as many clients, on a scratch database with its schema).
//!
//! Latencies are measured from each request's dispatch (open loop: dispatch never waits for
//! answers, so a stall shows). Every time is an `Instant` of this process, except the breakdown's
//! database stamps (PostgreSQL `now()`, the same host's wall clock, mapped onto the same axis).
//! Each row also shows the CPU it used, in % of the whole machine: this process (the services and
//! the bench), PostgreSQL, RabbitMQ and everything else (other users of the machine).
//! The bench's queues are classic, exclusive and auto-delete (gone with its connection); the
//! services' queues are deleted by `System::stop`. Targets are printed; a miss never fails the run.

#![allow(clippy::unwrap_used)] // a benchmark that cannot set itself up should stop loudly

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use sb_bus::{
    BusConfig, Envelope, Event,
    events::{AccessChanged, StripeEventReceived},
    topology::Names,
};
use sb_stripe::{
    objects::{self, CheckoutSpec, InvoiceSpec, SubscriptionSpec},
    signature::header_value,
};
use sb_testkit::probe::{CpuMeter, CpuTimes, CpuUse, threads_cpu};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// The signing secret billing and the gateway are started with.
const SECRET: &str = "whsec_bench_webhook_signing_secret";
const WRONG_SECRET: &str = "whsec_bench_some_other_endpoint";
const ACK_P99_TARGET_MS: f64 = 20.0;
const ACCESS_P99_TARGET_MS: f64 = 100.0;
const CPU_PER_EVENT_TARGET_MS: f64 = 3.0;
/// Billing must apply Stripe events at twice the ingest target.
const APPLY_RATE_TARGET: f64 = 1000.0;
const WAL_PER_EVENT_TARGET_B: f64 = 4096.0;
/// One unit of closed-loop work (the `i`-th); true when it was done.
type Work = dyn Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync;
/// The gateway must accept webhooks at least this share of the rate PostgreSQL commits their
/// durable work when asked directly.
const ACK_THROUGHPUT_TARGET: f64 = 0.7;
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Clock, settings, statistics
// ---------------------------------------------------------------------------------------------

static EPOCH: OnceLock<(Instant, DateTime<Utc>)> = OnceLock::new();

fn epoch() -> &'static (Instant, DateTime<Utc>) {
    EPOCH.get_or_init(|| (Instant::now(), Utc::now()))
}

/// An instant as milliseconds since the bench started.
fn at_ms(t: Instant) -> f64 {
    t.saturating_duration_since(epoch().0).as_secs_f64() * 1e3
}

/// A wall-clock stamp (PostgreSQL's `now()` on this host) on the same axis as [`at_ms`].
fn wall_ms(t: DateTime<Utc>) -> f64 {
    (t - epoch().1).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

struct Settings {
    secs: u64,
    ack_rate: f64,
    access_rate: f64,
    server_threads: usize,
    cpus: usize,
    rounds: usize,
    burst: usize,
    concurrency: usize,
}

impl Settings {
    fn from_env() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            secs: env_num("BENCH_SECONDS", 5),
            ack_rate: env_num("BENCH_ACK_RATE", 500) as f64,
            access_rate: env_num("BENCH_ACCESS_RATE", 200) as f64,
            // What each service's own `#[tokio::main]` would get on this machine.
            server_threads: env_num("BENCH_SERVER_THREADS", cpus as u64) as usize,
            cpus,
            rounds: env_num("BENCH_ROUNDS", 5) as usize,
            burst: env_num("BENCH_BURST", 3000) as usize,
            concurrency: env_num("BENCH_CONCURRENCY", 16) as usize,
        }
    }
}

/// Ascending latencies in ms.
struct Lat(Vec<f64>);

impl Lat {
    fn new(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Self(v)
    }
    fn p(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0[((self.0.len() as f64 - 1.0) * q).round() as usize]
    }
    fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }
    fn cols(&self) -> String {
        format!("{:>8.2} {:>8.2} {:>8.2} {:>8.2}", self.p(0.5), self.p(0.95), self.p(0.99), self.max())
    }
}

fn cpu_cols(c: &CpuUse) -> String {
    format!("{:>5.0} {:>4.0} {:>4.0} {:>4.0}", c.app, c.db, c.broker, c.other)
}

const CPU_HEAD: &str = " | CPU %: proc   pg   mq  oth";

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

// ---------------------------------------------------------------------------------------------
// Load generation
// ---------------------------------------------------------------------------------------------

/// Spawns `job(i, due)` at `rate` per second, `n` times (open loop: each its own task, dispatch
/// never waits for answers), then collects the results; also returns the achieved dispatch rate.
async fn open_loop<T, F, Fut>(rate: f64, n: usize, mut job: F) -> (Vec<T>, f64)
where
    F: FnMut(usize, Instant) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut last = start;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        last = Instant::now();
        tasks.push(tokio::spawn(job(i, due)));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    let achieved = if n > 1 { (n - 1) as f64 / last.duration_since(start).as_secs_f64().max(1e-9) } else { rate };
    (out, achieved)
}

/// One HTTP exchange: dispatched at `sent`, whole answer read at `done`.
#[derive(Clone, Copy)]
struct Answer {
    sent: Instant,
    done: Instant,
    status: u16,
}

impl Answer {
    fn ms(&self) -> f64 {
        self.done.duration_since(self.sent).as_secs_f64() * 1e3
    }
}

async fn get(client: reqwest::Client, url: Arc<str>, due: Instant) -> Answer {
    // Measured from dispatch: leaves out only the generator's own timer lag.
    let sent = Instant::now().max(due);
    let r = client.get(&*url).send().await.unwrap();
    let status = r.status().as_u16();
    r.bytes().await.unwrap();
    Answer { sent, done: Instant::now(), status }
}

/// POSTs `body` as Stripe does, signed (with `secret`) at dispatch time as Stripe signs every
/// delivery attempt.
async fn post_signed(client: reqwest::Client, url: Arc<str>, body: Vec<u8>, secret: &'static str, due: Instant) -> Answer {
    let signature = header_value(secret, Utc::now().timestamp(), &body);
    let sent = Instant::now().max(due);
    let r = client
        .post(&*url)
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    r.bytes().await.unwrap();
    Answer { sent, done: Instant::now(), status }
}

fn stripe_key() -> String {
    Uuid::new_v4().simple().to_string()[..24].to_owned()
}

/// What Stripe sends about a running customer: a subscription update (even `i`, its metadata
/// naming a fresh account, so billing links it and grants access) or a paid renewal invoice (odd
/// `i`, a customer billing has never seen). Returns (event id, body).
fn renewal_event(i: usize, created: i64) -> (String, Vec<u8>) {
    let k = stripe_key();
    let (customer, sub, evt) = (format!("cus_{k}"), format!("sub_{k}"), format!("evt_{k}"));
    let event = if i.is_multiple_of(2) {
        let account = Uuid::new_v4().to_string();
        let s = objects::subscription(&SubscriptionSpec {
            id: &sub,
            customer: &customer,
            account_id: &account,
            price: "price_switchboard_pro",
            status: "active",
            created: created - 86_400,
            period_end: created + 29 * 86_400,
        });
        objects::event(&evt, "customer.subscription.updated", created, s)
    } else {
        let inv = objects::invoice(&InvoiceSpec {
            id: &format!("in_{k}"),
            customer: &customer,
            subscription: &sub,
            account_id: "",
            status: "paid",
            created,
            amount: 4900,
            attempt_count: 1,
            price: "price_switchboard_pro",
        });
        objects::event(&evt, "invoice.paid", created, inv)
    };
    (evt, serde_json::to_vec(&event).unwrap())
}

/// A paid subscription-mode checkout for `account`, as Stripe sends it when the customer pays.
fn payment_event(account: Uuid, created: i64) -> (String, Vec<u8>) {
    let k = stripe_key();
    let evt = format!("evt_{k}");
    let cs = objects::checkout_session(&CheckoutSpec {
        id: &format!("cs_test_{k}"),
        account_id: &account.to_string(),
        customer: &format!("cus_{k}"),
        subscription: &format!("sub_{k}"),
        created,
        amount_total: 1900,
        email: &format!("buyer-{k}@bench.test"),
    });
    let body = serde_json::to_vec(&objects::event(&evt, "checkout.session.completed", created, cs)).unwrap();
    (evt, body)
}

// ---------------------------------------------------------------------------------------------
// The bench's own queues on the events exchange
// ---------------------------------------------------------------------------------------------

/// An event as it reached the bench's queue.
#[derive(Clone, Copy)]
struct Arrival {
    at: Instant,
    /// The envelope's id.
    id: Uuid,
    /// When the service built the envelope (its clock, just before the outbox INSERT).
    occurred: DateTime<Utc>,
    /// When the relay claimed its outbox row (`x-sb-relayed-at`); none for the bench's own.
    relayed: Option<DateTime<Utc>>,
}

/// First arrival per key.
type Seen = Arc<Mutex<HashMap<String, Arrival>>>;

fn seen_at(seen: &Seen, key: &str) -> Option<Instant> {
    arrival(seen, key).map(|a| a.at)
}

fn arrival(seen: &Seen, key: &str) -> Option<Arrival> {
    seen.lock().unwrap().get(key).copied()
}

fn access_granted(env: &Envelope) -> Option<String> {
    let change = env.decode::<AccessChanged>().ok()?;
    (change.to == sb_types::AccessStatus::Active).then(|| change.account_id.to_string())
}

fn stripe_event_id(env: &Envelope) -> Option<String> {
    env.decode::<StripeEventReceived>().ok().map(|e| e.id)
}

fn envelope_id(env: &Envelope) -> Option<String> {
    Some(env.id.to_string())
}

/// Declares `queue` (classic, non-durable, exclusive, auto-delete: no `x-expires`, gone with the
/// connection whatever happens), binds it to `routing_key` and records each delivery's arrival
/// (stamped first thing) under `pick(envelope)`.
async fn listen(
    conn: &Connection,
    exchange: &str,
    queue: &str,
    routing_key: &str,
    pick: fn(&Envelope) -> Option<String>,
) -> (Channel, Seen) {
    let ch = conn.create_channel().await.unwrap();
    let opts = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    ch.queue_declare(queue.into(), opts, FieldTable::default()).await.unwrap();
    ch.queue_bind(queue.into(), exchange.into(), routing_key.into(), QueueBindOptions::default(), FieldTable::default()).await.unwrap();
    let mut deliveries = ch
        .basic_consume(
            queue.into(),
            format!("bench-{queue}").as_str().into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let seen: Seen = Arc::default();
    tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Some(Ok(d)) = deliveries.next().await {
                let at = Instant::now();
                let Ok(env) = Envelope::parse(&d.data) else { continue };
                if let Some(key) = pick(&env) {
                    let a = Arrival { at, id: env.id, occurred: env.occurred_at, relayed: sb_bus::publisher::relayed_at(&d.properties) };
                    seen.lock().unwrap().entry(key).or_insert(a);
                }
            }
        }
    });
    (ch, seen)
}

/// The bench's consumers, on their own runtime and connection.
struct Observer {
    conn: Connection,
    channels: Vec<(Channel, String)>,
    access: Seen,
    received: Seen,
    hop: Seen,
}

impl Observer {
    async fn start(cfg: BusConfig, hop_key: String) -> Self {
        let exchange = Names::new(&cfg, "_").exchange;
        let conn = Connection::connect(&cfg.amqp_url, ConnectionProperties::default()).await.unwrap();
        let p = &cfg.prefix;
        let (qa, qr, qh) = (format!("{p}.bench.access"), format!("{p}.bench.received"), format!("{p}.bench.hop"));
        let (ca, access) = listen(&conn, &exchange, &qa, AccessChanged::TYPE, access_granted).await;
        let (cr, received) = listen(&conn, &exchange, &qr, StripeEventReceived::TYPE, stripe_event_id).await;
        let (ch, hop) = listen(&conn, &exchange, &qh, &hop_key, envelope_id).await;
        Self { conn, channels: vec![(ca, qa), (cr, qr), (ch, qh)], access, received, hop }
    }

    async fn stop(self) {
        for (ch, q) in &self.channels {
            let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
        let _ = self.conn.close(200, "bench done".into()).await;
    }
}

/// Plain lapin on a confirm channel: persistent, mandatory, to the events exchange under a
/// routing key only the bench's hop queue is bound to.
struct Hop {
    conn: Connection,
    ch: Channel,
    exchange: Arc<str>,
    key: Arc<str>,
}

impl Hop {
    async fn open(cfg: &BusConfig, key: &str) -> Self {
        let conn = Connection::connect(&cfg.amqp_url, ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        Self { conn, ch, exchange: Names::new(cfg, "_").exchange.into(), key: key.into() }
    }

    /// A body the size and shape of a `billing.access.changed.v1` envelope.
    fn envelope() -> Envelope {
        let data = json!({
            "account_id": Uuid::new_v4(), "from": "none", "to": "active", "plan": "starter",
            "entitlements": ["portal"], "reason": "subscription active",
            "cause_event_id": format!("evt_{}", stripe_key()), "cause_event_type": "checkout.session.completed",
            "stripe_customer_id": format!("cus_{}", stripe_key()), "grace_until": null, "since": Utc::now(),
        });
        Envelope::raw("bench", "bench.hop.v1", data).with_account(Uuid::new_v4())
    }

    /// Publishes one event; returns its key and dispatch time once the broker confirmed it.
    fn send(&self, due: Instant) -> impl Future<Output = (String, Instant)> + Send + 'static {
        let (ch, exchange, key) = (self.ch.clone(), self.exchange.clone(), self.key.clone());
        let env = Self::envelope();
        async move {
            let body = env.to_json();
            let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
            let sent = Instant::now().max(due);
            let confirm = ch
                .basic_publish(
                    (&*exchange).into(),
                    (&*key).into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    props,
                )
                .await
                .unwrap();
            assert!(matches!(confirm.await.unwrap(), Confirmation::Ack(None)), "hop publish not confirmed");
            (env.id.to_string(), sent)
        }
    }

    async fn close(self) {
        let _ = self.conn.close(200, "bench done".into()).await;
    }
}

/// Waits until every key is in `seen` (or the timeout passed); returns how many are.
async fn wait_arrivals(seen: &Seen, keys: &[String]) -> usize {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let n = {
            let s = seen.lock().unwrap();
            keys.iter().filter(|k| s.contains_key(*k)).count()
        };
        if n == keys.len() || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The services' databases (the bench's own small pools, for settling and the breakdown)
// ---------------------------------------------------------------------------------------------

struct Dbs {
    gateway: PgPool,
    billing: PgPool,
}

impl Dbs {
    async fn open(sys: &common::System) -> Self {
        let pool = |url: String| async move { sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap() };
        Self { gateway: pool(sys.gateway.db.url.clone()).await, billing: pool(sys.billing.db.url.clone()).await }
    }

    /// Waits until both outboxes are published and billing has recorded `stripe_events` events,
    /// so one row's backlog does not land on the next.
    async fn settle(&self, stripe_events: usize) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let pending = "SELECT count(*) FROM sb_outbox WHERE published_at IS NULL";
        loop {
            let gw: i64 = sqlx::query_scalar(pending).fetch_one(&self.gateway).await.unwrap();
            let bl: i64 = sqlx::query_scalar(pending).fetch_one(&self.billing).await.unwrap();
            let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events").fetch_one(&self.billing).await.unwrap();
            if gw == 0 && bl == 0 && seen as usize >= stripe_events {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "warning: not settled after {SETTLE_TIMEOUT:?}: outbox pending gateway {gw}, billing {bl}; billing saw {seen}/{stripe_events}"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the last commits' background work (WAL flush, hint bits) pass before the next row.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// The gateway's receipts: Stripe event id → start of the webhook's statement (its `now()`,
    /// when the receipt and the outbox row were written).
    async fn gateway_receipts(&self) -> HashMap<String, DateTime<Utc>> {
        let rows: Vec<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT event_id, received_at FROM stripe_webhook_receipts").fetch_all(&self.gateway).await.unwrap();
        rows.into_iter().collect()
    }

    /// billing's inbox: envelope id → start of the handler's transaction.
    async fn billing_inbox(&self) -> HashMap<Uuid, DateTime<Utc>> {
        let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as("SELECT event_id, processed_at FROM sb_inbox WHERE event_type = $1")
            .bind(StripeEventReceived::TYPE)
            .fetch_all(&self.billing)
            .await
            .unwrap();
        rows.into_iter().collect()
    }

    /// WAL bytes PostgreSQL has written so far (the whole cluster).
    async fn wal(&self) -> i64 {
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8").fetch_one(&self.gateway).await.unwrap()
    }

    async fn close(self) {
        self.gateway.close().await;
        self.billing.close().await;
    }
}

/// Threads of the bench itself (load generator, its consumers), not of the services.
const BENCH_THREADS: &str = "bench-";

/// What the whole pipeline spends from a row's start until all it caused is applied and sent.
struct Spent {
    cpu: CpuTimes,
    bench: f64,
    wal: i64,
}

impl Spent {
    async fn start(dbs: &Dbs) -> Self {
        Self { cpu: CpuTimes::now(), bench: threads_cpu(BENCH_THREADS), wal: dbs.wal().await }
    }

    /// Prints CPU ms and WAL bytes per event over `events`; returns (CPU ms, WAL bytes) per event.
    /// The services' CPU is this process's less the bench's own threads (lapin's I/O threads of
    /// the bench's connections, unnamed, stay in it).
    async fn report(self, dbs: &Dbs, events: usize) -> (f64, f64) {
        let (cpu, wal) = (CpuTimes::now().since(self.cpu), dbs.wal().await - self.wal);
        let bench = threads_cpu(BENCH_THREADS) - self.bench;
        let per = |secs: f64| secs * 1e3 / events.max(1) as f64;
        let services = (cpu.app - bench).max(0.0);
        let total = per(services + cpu.db + cpu.broker);
        let wal = wal as f64 / events.max(1) as f64;
        println!(
            "    pipeline per Stripe event, row start -> all applied and sent ({events} events): CPU {total:.2} ms (services {:.2}, PostgreSQL {:.2}, RabbitMQ {:.2}; the bench's load generator {:.2} more); WAL {wal:.0} B",
            per(services),
            per(cpu.db),
            per(cpu.broker),
            per(bench)
        );
        (total, wal)
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// One round's figures: the measured p99, its same-round baseline's p99, whether every request
/// or event made it, and what the pipeline spent per event (CPU ms, WAL bytes).
struct RoundFigures {
    p99: f64,
    baseline_p99: f64,
    complete: bool,
    cpu_ms: f64,
    wal_bytes: f64,
}

struct Ctx<'a> {
    s: &'a Settings,
    client: reqwest::Client,
    status_url: Arc<str>,
    webhook_url: Arc<str>,
    dbs: Dbs,
    /// Distinct Stripe events the gateway accepted so far (what billing must have seen).
    accepted: usize,
}

fn header(label: &str, outcome: &str) {
    println!(
        "  {label:<56} {:>6} {:>7} {outcome:>10} {:>8} {:>8} {:>8} {:>8}{CPU_HEAD}",
        "n", "rate/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
}

/// One table line; `cpu` is blank for sub-rows that share their parent's CPU figures.
fn line(label: &str, n: usize, rate: f64, outcome: &str, lat: &Lat, cpu: Option<&CpuUse>) {
    let cpu = cpu.map_or_else(String::new, |c| format!(" |        {}", cpu_cols(c)));
    println!("  {label:<56} {n:>6} {rate:>7.0} {outcome:>10} {}{cpu}", lat.cols());
}

fn answers_col(answers: &[Answer], want: u16) -> (String, usize) {
    let bad = answers.iter().filter(|a| a.status != want).count();
    let col = if bad == 0 { format!("all {want}") } else { format!("{bad} not {want}") };
    (col, bad)
}

fn row(label: &str, answers: &[Answer], rate: f64, want: u16, cpu: &CpuUse) -> (Lat, usize) {
    let lat = Lat::new(answers.iter().map(Answer::ms).collect());
    let (col, bad) = answers_col(answers, want);
    line(label, answers.len(), rate, &col, &lat, Some(cpu));
    (lat, bad)
}

impl Ctx<'_> {
    async fn status_row(&self, n: usize) -> (Vec<Answer>, f64) {
        let (client, url) = (self.client.clone(), self.status_url.clone());
        open_loop(self.s.ack_rate, n, |_, due| get(client.clone(), url.clone(), due)).await
    }

    /// `n` distinct renewal events; returns (event ids, answers, achieved rate).
    async fn webhook_row(&mut self, n: usize, secret: &'static str) -> (Vec<String>, Vec<Answer>, f64) {
        let created = Utc::now().timestamp();
        let (ids, bodies): (Vec<String>, Vec<Vec<u8>>) = (0..n).map(|i| renewal_event(i, created)).unzip();
        let (client, url) = (self.client.clone(), self.webhook_url.clone());
        let mut bodies = bodies.into_iter();
        let (answers, rate) =
            open_loop(self.s.ack_rate, n, |_, due| post_signed(client.clone(), url.clone(), bodies.next().unwrap(), secret, due)).await;
        self.accepted += answers.iter().filter(|a| a.status == 200).count();
        (ids, answers, rate)
    }

    /// Part 1, one round: ack latency beside its baselines.
    async fn ack(&mut self, round: usize) -> RoundFigures {
        let (n, warm) = ((self.s.ack_rate * self.s.secs as f64) as usize, self.s.ack_rate as usize);
        if round == 0 {
            // Warm-up: a second of each request kind (connections, pools, prepared statements).
            self.status_row(warm).await;
            self.webhook_row(warm, WRONG_SECRET).await;
            self.webhook_row(warm, SECRET).await;
            self.dbs.settle(self.accepted).await;
        }

        println!(
            "1. Webhook ack latency, round {}/{}: open loop at {:.0}/s for {} s per row, from dispatch to the whole answer",
            round + 1,
            self.s.rounds,
            self.s.ack_rate,
            self.s.secs
        );
        header("request", "answers");
        let cpus = self.s.cpus;
        let meter = CpuMeter::start();
        let (status, rate) = self.status_row(n).await;
        let (status_lat, _) = row("GET /v1/status             (baseline: HTTP, no DB)", &status, rate, 200, &meter.stop(cpus));
        if round == 0 {
            let meter = CpuMeter::start();
            let (_, bad_sig, rate) = self.webhook_row(n, WRONG_SECRET).await;
            row("POST /webhooks/stripe bad signature (baseline: HMAC, 400)", &bad_sig, rate, 400, &meter.stop(cpus));
        }
        let spent = Spent::start(&self.dbs).await;
        let meter = CpuMeter::start();
        let (ids, acks, rate) = self.webhook_row(n, SECRET).await;
        let cpu = meter.stop(cpus);
        let billing_seen: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events").fetch_one(&self.dbs.billing).await.unwrap();
        let (lat, bad) = row("POST /webhooks/stripe signed (receipt + outbox commit)", &acks, rate, 200, &cpu);

        // Where an ack's time goes: until the webhook transaction began (HTTP, verification,
        // pool), and from then to the answer (inserts, COMMIT, response).
        let receipts = self.dbs.gateway_receipts().await;
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for (id, a) in ids.iter().zip(&acks) {
            if let Some(begun) = receipts.get(id) {
                before.push(wall_ms(*begun) - at_ms(a.sent));
                after.push(at_ms(a.done) - wall_ms(*begun));
            }
        }
        println!("    breakdown of the signed row ({} matched; PostgreSQL now() = start of the webhook's statement):", before.len());
        println!("      {:<52} {}", "dispatch -> webhook statement begins", Lat::new(before).cols());
        println!("      {:<52} {}", "statement begins -> answer read (INSERTs, COMMIT)", Lat::new(after).cols());
        println!(
            "    billing applies these events meanwhile (same machine): it had recorded {billing_seen} of the {} accepted so far when the row ended",
            self.accepted
        );
        self.dbs.settle(self.accepted).await;
        let (cpu_ms, wal_bytes) = spent.report(&self.dbs, acks.len() - bad).await;
        let met = lat.p(0.99) <= ACK_P99_TARGET_MS && bad == 0;
        println!(
            "  round {}: signed webhook ack p99 <= {ACK_P99_TARGET_MS} ms at {:.0}/s, all 200 -> {}   (p99 {:.2} ms, {bad} not 200)",
            round + 1,
            self.s.ack_rate,
            verdict(met),
            lat.p(0.99)
        );
        println!();
        RoundFigures { p99: lat.p(0.99), baseline_p99: status_lat.p(0.99), complete: bad == 0, cpu_ms, wal_bytes }
    }

    /// Part 4, one round: webhooks accepted per second with `s.concurrency` senders back to
    /// back (closed loop), beside the same durable work done directly with PostgreSQL: the
    /// gateway's own statement (`gateway::store::insert_receipt_and_event`: the receipt and the
    /// outbox row of the same kind of event, built the same way) from as many clients on a
    /// scratch database with the gateway's schema. Returns (acks/s, direct commits/s).
    async fn throughput(&mut self, round: usize, direct: &PgPool) -> (f64, f64) {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let (senders, secs) = (self.s.concurrency, Duration::from_secs(self.s.secs));
        let created = Utc::now().timestamp();
        let closed_loop = |work: Arc<Work>| async move {
            let (next, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let start = Instant::now();
            let tasks: Vec<_> = (0..senders)
                .map(|_| {
                    let (work, next, done) = (work.clone(), next.clone(), done.clone());
                    tokio::spawn(async move {
                        while start.elapsed() < secs {
                            if work(next.fetch_add(1, Relaxed)).await {
                                done.fetch_add(1, Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            (done.load(Relaxed), done.load(Relaxed) as f64 / start.elapsed().as_secs_f64())
        };
        let (client, url) = (self.client.clone(), self.webhook_url.clone());
        let (accepted, acks) = closed_loop(Arc::new(move |i| {
            let (client, url) = (client.clone(), url.clone());
            Box::pin(async move { post_signed(client, url, renewal_event(i, created).1, SECRET, Instant::now()).await.status == 200 })
        }))
        .await;
        self.accepted += accepted;
        self.dbs.settle(self.accepted).await;
        let pool = direct.clone();
        let (_, commits) = closed_loop(Arc::new(move |i| {
            let pool = pool.clone();
            Box::pin(async move {
                let body = renewal_event(i, created).1;
                let event: StripeEventReceived = serde_json::from_slice(&body).unwrap();
                let digest: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&body)).into();
                let receipt = gateway::store::Receipt {
                    event_id: &event.id,
                    event_type: &event.event_type,
                    livemode: event.livemode,
                    stripe_created: DateTime::from_timestamp(event.created, 0).unwrap_or_default(),
                    signed_at: Utc::now(),
                    body_sha256: &digest,
                };
                let row = sb_bus::outbox::Row::of(&Envelope::of(&event)).unwrap();
                gateway::store::insert_receipt_and_event(&pool, &receipt, &row).await.unwrap()
            })
        }))
        .await;
        // The scratch tables start each round empty, as the gateway's outbox stays (its relay
        // deletes what it sent).
        sqlx::query("TRUNCATE stripe_webhook_receipts, sb_outbox").execute(direct).await.unwrap();
        println!(
            "4. Ack throughput, round {}/{}: {senders} senders back to back for {} s -> gateway {acks:.0} webhooks/s accepted; \
             the same statement straight to PostgreSQL {commits:.0}/s -> {:.2}x",
            round + 1,
            self.s.rounds,
            secs.as_secs(),
            acks / commits
        );
        (acks, commits)
    }

    /// Part 3, one round: billing's apply rate over a burst of `s.burst` Stripe events put on the
    /// bus at once (pipelined publishes with confirms), until billing has recorded all of them.
    async fn apply_rate(&mut self, round: usize, cfg: &BusConfig) -> f64 {
        let n = self.s.burst;
        let created = Utc::now().timestamp();
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let (_, body) = renewal_event(i, created);
                let event: StripeEventReceived = serde_json::from_slice(&body).unwrap();
                Envelope::of(&event).to_json()
            })
            .collect();
        let before: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events").fetch_one(&self.dbs.billing).await.unwrap();
        let conn = Connection::connect(&cfg.amqp_url, ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let exchange = Names::new(cfg, "_").exchange;
        let started = Instant::now();
        let mut confirms = Vec::with_capacity(n);
        for body in &bodies {
            let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
            let publish = BasicPublishOptions { mandatory: true, ..Default::default() };
            confirms
                .push(ch.basic_publish(exchange.as_str().into(), StripeEventReceived::TYPE.into(), publish, body, props).await.unwrap());
        }
        for c in confirms {
            assert!(matches!(c.await.unwrap(), Confirmation::Ack(None)), "burst publish not confirmed");
        }
        let published = started.elapsed();
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut seen = before;
        while (seen - before) < n as i64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen = sqlx::query_scalar("SELECT count(*) FROM stripe_events").fetch_one(&self.dbs.billing).await.unwrap();
        }
        let took = started.elapsed();
        let _ = conn.close(200, "bench done".into()).await;
        self.accepted += n;
        let applied = (seen - before) as usize;
        let rate = if applied == n { n as f64 / took.as_secs_f64() } else { f64::NAN };
        println!(
            "3. Billing apply rate, round {}/{}: {n} Stripe events on the bus at once (published in {:.2} s), all recorded by billing after {:.2} s -> {rate:.0} events/s{}",
            round + 1,
            self.s.rounds,
            published.as_secs_f64(),
            took.as_secs_f64(),
            if applied == n { String::new() } else { format!(" (only {applied} of {n} recorded)") }
        );
        self.dbs.settle(self.accepted).await;
        rate
    }

    /// `n` payments for fresh accounts: (account, Stripe event id, answer) in dispatch order.
    async fn payments(&mut self, n: usize) -> (Vec<(String, String, Answer)>, f64) {
        let created = Utc::now().timestamp();
        let accounts: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        let events: Vec<(String, Vec<u8>)> = accounts.iter().map(|a| payment_event(*a, created)).collect();
        let ids: Vec<String> = events.iter().map(|(id, _)| id.clone()).collect();
        let (client, url) = (self.client.clone(), self.webhook_url.clone());
        let mut bodies = events.into_iter().map(|(_, b)| b);
        let (answers, rate) =
            open_loop(self.s.access_rate, n, |_, due| post_signed(client.clone(), url.clone(), bodies.next().unwrap(), SECRET, due)).await;
        self.accepted += answers.iter().filter(|a| a.status == 200).count();
        let out = accounts.iter().zip(ids).zip(answers).map(|((a, id), ans)| (a.to_string(), id, ans)).collect();
        (out, rate)
    }

    /// Part 2, one round: payment → access beside the bus hop alone.
    async fn access(&mut self, round: usize, obs: &Observer, hop: &Hop) -> RoundFigures {
        let rate = self.s.access_rate;
        let (n, warm) = ((rate * self.s.secs as f64) as usize, rate as usize);
        if round == 0 {
            // Warm-up: a second of each path.
            let (w, _) = self.payments(warm).await;
            wait_arrivals(&obs.access, &w.iter().map(|(a, _, _)| a.clone()).collect::<Vec<_>>()).await;
            let (w, _) = open_loop(rate, warm, |_, due| hop.send(due)).await;
            wait_arrivals(&obs.hop, &w.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()).await;
            self.dbs.settle(self.accepted).await;
        }

        println!(
            "2. Payment -> access latency, round {}/{}: open loop at {rate:.0}/s for {} s per row, from dispatch until the event reaches the bench's queue",
            round + 1,
            self.s.rounds,
            self.s.secs
        );
        header("path", "arrived");
        let cpus = self.s.cpus;
        // Baseline: the bus hop alone.
        let meter = CpuMeter::start();
        let (sent, hop_rate) = open_loop(rate, n, |_, due| hop.send(due)).await;
        let keys: Vec<String> = sent.iter().map(|(k, _)| k.clone()).collect();
        let arrived = wait_arrivals(&obs.hop, &keys).await;
        let cpu = meter.stop(cpus);
        let hop_lat = Lat::new(sent.iter().filter_map(|(k, t)| seen_at(&obs.hop, k).map(|r| at_ms(r) - at_ms(*t))).collect());
        line("bus hop alone (lapin publish+confirm -> lapin consumer)", n, hop_rate, &format!("{arrived}/{n}"), &hop_lat, Some(&cpu));
        self.dbs.settle(self.accepted).await;

        // The payments.
        let spent = Spent::start(&self.dbs).await;
        let meter = CpuMeter::start();
        let (pays, pay_rate) = self.payments(n).await;
        let accounts: Vec<String> = pays.iter().map(|(a, _, _)| a.clone()).collect();
        let granted = wait_arrivals(&obs.access, &accounts).await;
        let cpu = meter.stop(cpus);
        let ids: Vec<String> = pays.iter().map(|(_, id, _)| id.clone()).collect();
        let on_bus = wait_arrivals(&obs.received, &ids).await;
        let answers: Vec<Answer> = pays.iter().map(|(_, _, a)| *a).collect();
        let (acol, bad) = answers_col(&answers, 200);
        let ack = Lat::new(answers.iter().map(Answer::ms).collect());
        line("  webhook ack (200)", n, pay_rate, &acol, &ack, None);
        // From dispatch to arrival, keyed by Stripe event id (received) or account (access).
        let since = |seen: &Seen, by_account: bool| -> Lat {
            Lat::new(
                pays.iter()
                    .filter_map(|(account, id, a)| seen_at(seen, if by_account { account } else { id }).map(|r| at_ms(r) - at_ms(a.sent)))
                    .collect(),
            )
        };
        let bus_lat = since(&obs.received, false);
        line("  -> stripe.event.received.v1 (gateway + outbox relay)", n, pay_rate, &format!("{on_bus}/{n}"), &bus_lat, None);
        let access = since(&obs.access, true);
        line("PAYMENT -> billing.access.changed.v1 to=active", n, pay_rate, &format!("{granted}/{n}"), &access, Some(&cpu));

        self.dbs.settle(self.accepted).await;
        let (cpu_ms, wal_bytes) = spent.report(&self.dbs, n - bad).await;
        self.breakdown(&pays, obs).await;

        let met = access.p(0.99) <= ACCESS_P99_TARGET_MS && granted == n && bad == 0;
        println!(
            "  round {}: payment -> access p99 <= {ACCESS_P99_TARGET_MS} ms at {rate:.0}/s, all arrive -> {}   (p99 {:.2} ms, {granted}/{n} arrived; bus hop alone p50/p99 {:.2}/{:.2} ms)",
            round + 1,
            verdict(met),
            access.p(0.99),
            hop_lat.p(0.5),
            hop_lat.p(0.99)
        );
        println!();
        RoundFigures { p99: access.p(0.99), baseline_p99: hop_lat.p(0.99), complete: granted == n && bad == 0, cpu_ms, wal_bytes }
    }

    /// Per-stage times of the measured payments, from the services' own stamps.
    async fn breakdown(&self, pays: &[(String, String, Answer)], obs: &Observer) {
        let receipts = self.dbs.gateway_receipts().await;
        let inbox = self.dbs.billing_inbox().await;
        let mut st: [Vec<f64>; 8] = Default::default();
        // How many payments shared each relay claim / consumer transaction.
        let (mut gw_claims, mut bl_txs, mut bl_claims) = (HashMap::new(), HashMap::new(), HashMap::new());
        let mut complete = 0;
        for (account, id, a) in pays {
            let (Some(begun), Some(g), Some(b)) = (receipts.get(id), arrival(&obs.received, id), arrival(&obs.access, account)) else {
                continue;
            };
            let (Some(g_claim), Some(b_begin), Some(b_claim)) = (g.relayed, inbox.get(&g.id), b.relayed) else {
                continue;
            };
            complete += 1;
            *gw_claims.entry(g_claim).or_insert(0) += 1;
            *bl_txs.entry(*b_begin).or_insert(0) += 1;
            *bl_claims.entry(b_claim).or_insert(0) += 1;
            let t = [
                at_ms(a.sent),
                wall_ms(*begun),
                wall_ms(g.occurred),
                wall_ms(g_claim),
                at_ms(g.at),
                wall_ms(*b_begin),
                wall_ms(b.occurred),
                wall_ms(b_claim),
                at_ms(b.at),
            ];
            for (i, v) in st.iter_mut().enumerate() {
                v.push(t[i + 1] - t[i]);
            }
        }
        let labels = [
            "gateway: dispatch -> webhook statement (HTTP, verify)",
            "gateway: statement begins -> enveloped (clocks)",
            "gateway: enveloped -> relay claims (INSERT,COMMIT,wake)",
            "gateway relay claim -> stripe.event.received on bench q",
            "billing: on the bus -> handler tx begins (consumer)",
            "billing: handler tx begins -> access decided (queries)",
            "billing: decided -> relay claims (INSERT,COMMIT,wake)",
            "billing relay claim -> access.changed on bench queue",
        ];
        println!(
            "    stage breakdown of the {complete} payments (statement / tx begins = PostgreSQL now(); enveloped, decided, relay claim = the service's clock; same host):"
        );
        for (label, v) in labels.iter().zip(st) {
            println!("      {label:<56} {}", Lat::new(v).cols());
        }
        let max = |m: &HashMap<DateTime<Utc>, usize>| m.values().copied().max().unwrap_or(0);
        println!(
            "    gateway relay: {} claims (max {} rows) | billing consumer: {} transactions (max {} events) | billing relay: {} claims (max {} rows)",
            gw_claims.len(),
            max(&gw_claims),
            bl_txs.len(),
            max(&bl_txs),
            bl_claims.len(),
            max(&bl_claims)
        );
    }
}

fn main() {
    let _ = epoch();
    let s = Settings::from_env();
    // Services, load generator and the bench's consumers on separate runtimes, so the generator's
    // timers and the arrival stamps do not queue behind the servers' tasks (all share the cores).
    let servers = tokio::runtime::Builder::new_multi_thread().worker_threads(s.server_threads).enable_all().build().unwrap();
    // Named, so the pipeline's CPU can be told from the bench's own (`BENCH_THREADS`).
    let clients = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("bench-load").enable_all().build().unwrap();
    let observer = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("bench-obs").enable_all().build().unwrap();
    let secret = [("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", SECRET)];
    // The relay's real cost: no test copy of each sent outbox row.
    sb_testkit::service::keep_sent_outbox(false);
    let sys = servers.block_on(common::start_with(&[], &secret, &secret));
    let mut cfg = BusConfig::new(sb_testkit::amqp_url());
    cfg.prefix = sys.prefix.clone();
    let hop_key = format!("bench.hop.{}.v1", Uuid::new_v4().simple());

    let (ack_rounds, access_rounds, apply_rates) = clients.block_on(async {
        let dbs = Dbs::open(&sys).await;
        let pg_version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&dbs.gateway).await.unwrap();
        println!(
            "gateway Stripe webhook benchmark (release; identity + billing + gateway in this process on one runtime with {} worker thread(s), \
             the load generator on another (1 thread), the bench's AMQP consumers on a third (1 thread), AMQP I/O on lapin's thread per connection; PostgreSQL {pg_version}, broker {}; {} CPUs)",
            s.server_threads,
            cfg.redacted_url(),
            s.cpus
        );
        println!(
            "  every webhook a distinct Stripe event signed at dispatch; open loop (dispatch never waits for answers); warm-up: 1 s of each row first"
        );
        println!(
            "  CPU % = share of the whole machine during the row: proc = this process (services + bench), pg = PostgreSQL, mq = RabbitMQ, oth = the rest"
        );
        println!();
        let mut ctx = Ctx {
            s: &s,
            client: reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap(),
            status_url: sys.url("/v1/status").into(),
            webhook_url: sys.url("/webhooks/stripe").into(),
            dbs,
            accepted: 0,
        };
        let mut acks = Vec::new();
        for round in 0..s.rounds {
            acks.push(ctx.ack(round).await);
        }
        // The bench's consumers start after part 1, so its rows route nowhere extra.
        let obs = observer.spawn(Observer::start(cfg.clone(), hop_key.clone())).await.unwrap();
        let hop = Hop::open(&cfg, &hop_key).await;
        let mut pays = Vec::new();
        for round in 0..s.rounds {
            pays.push(ctx.access(round, &obs, &hop).await);
        }
        hop.close().await;
        observer.spawn(obs.stop()).await.unwrap();
        println!();
        let mut rates = Vec::new();
        for round in 0..s.rounds {
            rates.push(ctx.apply_rate(round, &cfg).await);
        }
        println!();
        let scratch = sb_testkit::TestDb::new("direct").await.unwrap();
        sb_runtime::db::migrate(&scratch.pool, &gateway::MIGRATOR).await.unwrap();
        // As the gateway's own pool: no ping before each checkout.
        let direct = sqlx::postgres::PgPoolOptions::new()
            .max_connections(s.concurrency as u32)
            .test_before_acquire(false)
            .connect(&scratch.url)
            .await
            .unwrap();
        let mut throughputs = Vec::new();
        for round in 0..s.rounds {
            throughputs.push(ctx.throughput(round, &direct).await);
        }
        direct.close().await;
        ctx.dbs.close().await;
        (acks, pays, (rates, throughputs))
    });
    let (apply_rates, throughputs) = apply_rates;
    servers.block_on(sys.stop());
    summary(&s, &ack_rounds, &access_rounds, &apply_rates, &throughputs);
}

/// The targets over every round (the worst round decides), printed and written to the report.
fn summary(s: &Settings, acks: &[RoundFigures], pays: &[RoundFigures], apply_rates: &[f64], throughputs: &[(f64, f64)]) {
    use sb_testkit::report::{Figure, write};
    let col = |rs: &[RoundFigures], f: fn(&RoundFigures) -> f64| rs.iter().map(f).collect::<Vec<f64>>();
    // A round that lost or refused anything counts as not met whatever its latency.
    let p99 = |r: &RoundFigures| if r.complete { r.p99 } else { f64::NAN };
    let worst = |v: Vec<f64>| v.into_iter().fold(f64::NEG_INFINITY, f64::max);
    let figures = [
        Figure::at_most(&format!("webhook ack p99 at {:.0}/s", s.ack_rate), "ms", ACK_P99_TARGET_MS, col(acks, p99))
            .baseline("GET /v1/status p99, same rate", worst(col(acks, |r| r.baseline_p99))),
        Figure::at_most(&format!("payment -> access p99 at {:.0}/s", s.access_rate), "ms", ACCESS_P99_TARGET_MS, col(pays, p99))
            .baseline("bus hop alone p99, same rate", worst(col(pays, |r| r.baseline_p99))),
        // Per event of the ack rows (renewals at the ingest rate, as billing applies them); the
        // payment rows' figures (each also an access change for four consumers) are printed above.
        Figure::at_most("pipeline CPU per Stripe event (ack rows)", "ms", CPU_PER_EVENT_TARGET_MS, col(acks, |r| r.cpu_ms)),
        Figure::at_most("pipeline WAL per Stripe event (ack rows)", "B", WAL_PER_EVENT_TARGET_B, col(acks, |r| r.wal_bytes)),
        Figure::at_least("billing apply rate (burst on the bus)", "events/s", APPLY_RATE_TARGET, apply_rates.to_vec())
            .baseline("ingest target", s.ack_rate),
        // Already a ratio to the same-run baseline (each round's rates are printed in part 4).
        Figure::at_least(
            "ack throughput / direct PostgreSQL",
            "x",
            ACK_THROUGHPUT_TARGET,
            throughputs.iter().map(|(a, d)| a / d).collect(),
        ),
    ];
    println!();
    println!("  summary over {} rounds (worst round):", s.rounds);
    for f in &figures {
        println!(
            "    {:<40} worst {:>9} {:<3} target {:<12} -> {}",
            f.name,
            sb_testkit::report::num(f.worst()),
            f.unit,
            f.target_text(),
            verdict(f.met())
        );
    }
    write("webhook", &figures).unwrap();
}
