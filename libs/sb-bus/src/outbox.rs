//! Transactional outbox: events are written with the state change that causes them and published
//! by a relay that marks a row sent only after the broker confirmed it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use futures::future::join_all;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    config::BusConfig,
    envelope::Envelope,
    publisher::{self, PublishError, Publisher, TraceHeaders},
    trace,
};

/// Records `env` for publication as part of the caller's transaction. Nothing is published unless
/// that transaction commits.
///
/// The relay of `env.source` in this process is told at once; it looks for the row a moment later
/// and keeps looking briefly until the commit shows it, or at once when the producer says the
/// transaction committed ([`committed`]). There is no `NOTIFY`: PostgreSQL serialises the commits
/// of every notifying transaction in the cluster (a global lock held through the WAL flush), which
/// made each service's commits wait for the others'.
pub async fn enqueue(conn: &mut PgConnection, env: &Envelope) -> Result<(), sqlx::Error> {
    let row = Row::of(env)?;
    sqlx::query("INSERT INTO sb_outbox (event_id, event_type, payload, headers) VALUES ($1, $2, $3, $4)")
        .bind(row.event_id)
        .bind(&row.event_type)
        .bind(&row.payload)
        .bind(&row.headers)
        .execute(conn)
        .await?;
    row.enqueued();
    Ok(())
}

/// An envelope as its outbox row, for a producer whose write must be one statement (a CTE that
/// inserts the row only when its own insert happened, run outside a transaction: one round trip
/// instead of BEGIN, two INSERTs and COMMIT). It binds `event_id`, `event_type`, `payload` and
/// `headers` in that order to `INSERT INTO sb_outbox (event_id, event_type, payload, headers)`,
/// calls [`Row::enqueued`] once the statement ran and [`committed`] once it committed.
/// Everything else uses [`enqueue`].
pub struct Row {
    pub event_id: uuid::Uuid,
    pub event_type: String,
    /// The envelope's text, exactly as the relay will publish it (see migration 0003).
    pub payload: String,
    /// The trace context of the current span, carried to the consumer.
    pub headers: serde_json::Value,
    source: String,
}

impl Row {
    pub fn of(env: &Envelope) -> Result<Self, sqlx::Error> {
        Ok(Self {
            event_id: env.id,
            event_type: env.event_type.clone(),
            payload: serde_json::to_string(env).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
            headers: serde_json::to_value(trace::current_headers()).unwrap_or_default(),
            source: env.source.clone(),
        })
    }

    /// Tells this process's relay that the row was written (it watches for the commit) and marks
    /// the task as having enqueued (see [`tracking`]).
    pub fn enqueued(&self) {
        hints(&self.source).enqueued.notify_one();
        let _ = ENQUEUED.try_with(|e| e.set(true));
    }
}

tokio::task_local! {
    /// Whether the future [`tracking`] runs has enqueued anything.
    static ENQUEUED: std::cell::Cell<bool>;
}

/// Runs `f`, telling whether it enqueued an event (on this task): the consumer tells the relay
/// about a commit ([`committed`]) only after handlers that did.
pub async fn tracking<F: std::future::Future>(f: F) -> (F::Output, bool) {
    ENQUEUED
        .scope(std::cell::Cell::new(false), async move {
            let out = f.await;
            (out, ENQUEUED.with(std::cell::Cell::get))
        })
        .await
}

/// Tells the relay of `service` in this process that a transaction which enqueued events has
/// committed, so it claims them now instead of at its next look. Optional (the relay finds
/// committed rows anyway, a few milliseconds later): the consumer calls it after each handler
/// transaction that enqueued, the gateway after a webhook, the services through [`commit`]. A call
/// with nothing enqueued costs the relay one cheap look.
pub fn committed(service: &str) {
    hints(service).committed.notify_one();
}

/// Commits `tx` and tells the relay of `service` in this process ([`committed`]), so that what the
/// transaction enqueued is claimed at once.
pub async fn commit(tx: sqlx::Transaction<'_, sqlx::Postgres>, service: &str) -> Result<(), sqlx::Error> {
    tx.commit().await?;
    committed(service);
    Ok(())
}

/// What tells a service's relay (in this process) that an event was enqueued, and that a
/// transaction committed: one pair per producing service, so several services in one process
/// (tests, benchmarks) do not wake each other.
#[derive(Default)]
struct Hints {
    enqueued: Notify,
    committed: Notify,
}

fn hints(service: &str) -> Arc<Hints> {
    static HINTS: OnceLock<Mutex<HashMap<String, Arc<Hints>>>> = OnceLock::new();
    let mut hints = HINTS.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    hints.entry(service.to_owned()).or_default().clone()
}

/// After a hint, the relay looks at these intervals until it is hinted again (each hint starts
/// over): the transaction that enqueued usually commits within a few milliseconds. Producers that
/// tell the relay when they commit ([`committed`], [`commit`]) have their rows claimed at once.
const WATCH: [Duration; 10] = [
    Duration::from_millis(1),
    Duration::from_millis(1),
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(2),
    Duration::from_millis(4),
    Duration::from_millis(8),
    Duration::from_millis(16),
    Duration::from_millis(32),
    Duration::from_millis(64),
];

/// How far below the highest sequence number seen a claim starts: a transaction that took its
/// number earlier but commits later (concurrent producers) is still found if it is fewer than this
/// many rows behind. Anything further behind, and rows waiting for a retry, are found by the sweep.
const WINDOW: i64 = 1024;

/// How often the relay also looks at every unpublished row (out-of-order stragglers, retries due).
const SWEEP: Duration = Duration::from_secs(1);

/// Committed events not yet confirmed by the broker (the backlog operators watch).
pub async fn pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM sb_outbox WHERE published_at IS NULL").fetch_one(pool).await
}

/// The backlog and the age in seconds of its oldest event (0 when there is none): an event the
/// broker has not taken for minutes is the founder's alarm, whatever the count.
pub async fn backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
         FROM sb_outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await
}

/// How the relay opens its claiming transaction, and its claim (`$1` batch size, `$2` floor):
/// public so a benchmark can time the very statements on a large outbox.
pub const CLAIM_BEGIN: &str = "BEGIN; SET LOCAL enable_bitmapscan = off";
pub const CLAIM: &str = "SELECT seq, event_type, payload, headers, attempts FROM sb_outbox
     WHERE published_at IS NULL AND seq > $2 AND next_attempt_at <= now()
     ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED";

/// Publishes committed outbox rows in commit order. Several relays (replicas) may run at once:
/// rows are claimed with `FOR UPDATE SKIP LOCKED`.
pub struct OutboxRelay {
    pool: PgPool,
    cfg: BusConfig,
    name: String,
    /// Enqueues and commits in this process for this service.
    hints: Arc<Hints>,
    batch: i64,
    /// How often to look for rows without a hint (another process's rows, retry backoff).
    poll: Duration,
}

#[derive(sqlx::FromRow)]
struct Claimed {
    seq: i64,
    event_type: String,
    payload: String,
    headers: sqlx::types::Json<TraceHeaders>,
    attempts: i32,
}

impl OutboxRelay {
    pub fn new(pool: PgPool, cfg: BusConfig, service: &str) -> Self {
        Self { pool, cfg, name: format!("{service} outbox relay"), hints: hints(service), batch: 256, poll: Duration::from_millis(500) }
    }

    /// Runs until `shutdown`, reconnecting to the broker and the database as needed.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            match self.session(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    let wait = backoff.next();
                    warn!(relay = %self.name, error = %e, retry_in_ms = wait.as_millis() as u64, "outbox relay interrupted");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        info!(relay = %self.name, "outbox relay stopped");
    }

    async fn session(&self, shutdown: &CancellationToken, backoff: &mut Backoff) -> anyhow::Result<()> {
        let conn = publisher::connect(&self.cfg, &self.name).await?;
        crate::topology::declare_exchange(&conn, &self.cfg).await?;
        let publisher = Publisher::open(&conn, &self.cfg).await?;
        debug!(relay = %self.name, "outbox relay connected");
        // The first look also clears what an earlier version left (see `cleanup`).
        let mut last_cleanup: Option<tokio::time::Instant> = None;
        // When to look next, and the next step of `WATCH` after that look (`WATCH.len()`: none,
        // poll slowly). A hint brings the next look forward; it never puts one off, so a steady
        // stream of hints cannot keep the relay from looking.
        let mut next_look = tokio::time::Instant::now();
        let mut step = WATCH.len();
        // Claims start above `floor` (see `WINDOW`); a sweep starts at 0.
        let mut floor = 0i64;
        let mut last_sweep = tokio::time::Instant::now();
        let mut sweep = true;
        // Whether the last look found rows: while rows keep coming, claim at once; after an
        // empty look (waiting for a commit), check cheaply first.
        let mut busy = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // One last drain so committed events are not left for the next start.
                    let _ = self.publish_batch(&publisher, 0).await;
                    let _ = conn.close(200, "shutdown".into()).await;
                    return Ok(());
                }
                _ = self.hints.enqueued.notified() => {
                    // Not committed yet, most likely: look after the first step.
                    step = 0;
                    next_look = next_look.min(tokio::time::Instant::now() + WATCH[0]);
                    continue;
                }
                _ = self.hints.committed.notified() => {
                    // A commit was told: look straight away, not through the timer (which rounds
                    // up to its next millisecond tick). While an enqueue is being watched for, its
                    // row is there now, so claim at once; a commit told after the watch ended (a
                    // long transaction) gets the cheap look first. The watch goes on, for
                    // enqueues whose commit is not told.
                    busy |= step < WATCH.len();
                }
                _ = tokio::time::sleep_until(next_look) => {}
            }
            if !conn.status().connected() {
                anyhow::bail!("broker connection lost");
            }
            if last_sweep.elapsed() >= SWEEP {
                sweep = true;
            }
            // Drain everything due: above the floor, or everything on a sweep.
            let mut from = if sweep { 0 } else { floor };
            if from > 0 && !busy && !self.any_above(from).await? {
                // Nothing committed yet: one cheap read instead of a claiming transaction.
            } else {
                busy = false;
                loop {
                    let (claimed, highest) = self.publish_batch(&publisher, from).await?;
                    floor = floor.max(highest - WINDOW);
                    busy |= claimed > 0;
                    if claimed < self.batch as usize {
                        break;
                    }
                    from = highest;
                }
                if sweep {
                    sweep = false;
                    last_sweep = tokio::time::Instant::now();
                }
            }
            backoff.reset();
            if last_cleanup.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
                self.cleanup().await;
                last_cleanup = Some(tokio::time::Instant::now());
            }
            let wait = match WATCH.get(step) {
                Some(&w) => {
                    step += 1;
                    w
                }
                None => self.poll,
            };
            next_look = tokio::time::Instant::now() + wait;
        }
    }

    /// Whether any unpublished row lies above `floor` (one statement, no transaction).
    async fn any_above(&self, floor: i64) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sb_outbox WHERE published_at IS NULL AND seq > $1)")
            .bind(floor)
            .fetch_one(&self.pool)
            .await
    }

    /// Publishes up to one batch of due rows numbered above `floor`; returns how many rows it
    /// claimed and the highest number among them (0 when none).
    async fn publish_batch(&self, publisher: &Publisher, floor: i64) -> anyhow::Result<(usize, i64)> {
        // A plain index scan, not a bitmap one: it marks the entries of rows published since the
        // last vacuum as dead the first time it passes them and skips them afterwards, so a sweep
        // stays cheap however far a vacuum lags (about 1.5 ms over 300,000 such entries, against
        // 13-26 ms for a bitmap scan, which visits every one of their rows every time).
        let mut tx = self.pool.begin_with(CLAIM_BEGIN).await?;
        // The index holds only unpublished rows, in sequence order: the scan starts at `floor`.
        let rows: Vec<Claimed> = sqlx::query_as(CLAIM).bind(self.batch).bind(floor).fetch_all(&mut *tx).await?;
        let Some(highest) = rows.last().map(|r| r.seq) else {
            return Ok((0, 0));
        };
        let relayed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        // Pipeline every publish on the confirm channel, then collect the confirms.
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let env: Envelope = match serde_json::from_str(&row.payload) {
                Ok(env) => env,
                Err(e) => {
                    pending.push(Err(format!("stored payload is not an envelope: {e}")));
                    continue;
                }
            };
            let mut headers = row.headers.0.clone();
            headers.insert(publisher::headers::RELAYED_AT.to_owned(), relayed_at.clone());
            let props = publisher::event_properties(&env, &headers);
            match publisher.start_event(row.payload.as_bytes(), &row.event_type, props).await {
                Ok(p) => pending.push(Ok(p)),
                Err(PublishError::Broker(e)) => return Err(e.into()),
                Err(e) => pending.push(Err(e.to_string())),
            }
        }
        let results = join_all(pending.into_iter().map(|p| async move {
            match p {
                Ok(confirm) => publisher::confirmed(confirm).await,
                Err(msg) => Err(PublishError::Unroutable(msg)),
            }
        }))
        .await;
        let mut sent = Vec::new();
        for (row, res) in rows.iter().zip(results) {
            match res {
                Ok(()) => sent.push(row.seq),
                Err(PublishError::Broker(e)) => return Err(e.into()),
                Err(e) => {
                    // Kept, retried with backoff, visible to operators in the table and the logs.
                    let delay = Duration::from_secs(2u64.saturating_pow(row.attempts.clamp(0, 6) as u32));
                    warn!(relay = %self.name, seq = row.seq, event_type = %row.event_type, error = %e, "outbox row not accepted by broker; will retry");
                    metrics::counter!("sb_outbox_publish_failures_total").increment(1);
                    sqlx::query(
                        "UPDATE sb_outbox SET attempts = attempts + 1, last_error = $2,
                         next_attempt_at = now() + make_interval(secs => $3) WHERE seq = $1",
                    )
                    .bind(row.seq)
                    .bind(e.to_string())
                    .bind(delay.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        if !sent.is_empty() {
            // Sent rows are deleted, not marked: marking wrote a second copy of every row (and
            // two index entries) and kept it until a cleanup, and on a database where vacuum lags
            // those copies pile up. The event now lives in its consumers' queues.
            let lag: Vec<f64> = sqlx::query_scalar(
                "DELETE FROM sb_outbox WHERE seq = ANY($1)
                 RETURNING EXTRACT(EPOCH FROM (now() - created_at))::float8",
            )
            .bind(&sent)
            .fetch_all(&mut *tx)
            .await?;
            for l in lag {
                metrics::histogram!("sb_outbox_publish_lag_seconds").record(l);
            }
            metrics::counter!("sb_outbox_published_total").increment(sent.len() as u64);
        }
        tx.commit().await?;
        Ok((rows.len(), highest))
    }

    /// Deletes rows marked sent instead of deleted: relays before the deletion (up to 7 days'
    /// worth) and any still running during a rolling upgrade.
    async fn cleanup(&self) {
        let res = sqlx::query("DELETE FROM sb_outbox WHERE published_at IS NOT NULL").execute(&self.pool).await;
        if let Err(e) = res {
            warn!(relay = %self.name, error = %e, "outbox cleanup failed");
        }
    }
}

/// Exponential backoff for reconnects: 100 ms doubling to 5 s.
#[derive(Default)]
pub(crate) struct Backoff(u32);

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let ms = 100u64.saturating_mul(1 << self.0.min(6)).min(5_000);
        self.0 += 1;
        Duration::from_millis(ms)
    }
    pub(crate) fn reset(&mut self) {
        self.0 = 0;
    }
}
