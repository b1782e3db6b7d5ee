//! Consuming a service's work queue: idempotent handling (inbox), the retry ladder and the DLQ.

use std::{
    collections::{HashMap, HashSet},
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt, TryStreamExt};
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use rand::Rng;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    config::BusConfig,
    envelope::Envelope,
    outbox::Backoff,
    publisher::{self, Publisher, headers, lstr},
    topology::{self, Names},
    trace,
};

/// What went wrong in a handler, and so what the bus does with the event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying later (a downstream outage, a timeout, a 5xx or 429): climbs the retry ladder.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (invalid payload, a 4xx validation error): parked in the DLQ at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn transient(e: impl std::fmt::Display) -> Self {
        Self::Transient(e.to_string())
    }
    pub fn permanent(e: impl std::fmt::Display) -> Self {
        Self::Permanent(e.to_string())
    }
}

/// Database errors inside a handler are treated as transient: the database may come back.
impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(format!("database: {e}"))
    }
}

/// Applies one event. It runs inside the transaction that also records the event id in the inbox,
/// so its database effects happen exactly once; write follow-up events with [`crate::outbox::enqueue`]
/// on the same connection.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, event: &Envelope, tx: &mut PgConnection) -> Result<(), HandlerError>;

    /// Whether several events may share one transaction. A batch whose handler fails is rolled
    /// back and re-run one event at a time, so return `false` when the handler has effects outside
    /// the database (HTTP calls, email) that must not be repeated needlessly.
    fn batchable(&self) -> bool {
        true
    }
}

/// How many chunks are handled at once: enough to cover the prefetch window, and at least two so
/// one committing batch never idles the consumer.
fn chunk_concurrency(prefetch: u16, batch_size: u16) -> usize {
    (usize::from(prefetch.max(1)) / usize::from(batch_size.max(1))).max(2)
}

/// What handling needs of the current broker session.
struct Link {
    names: Names,
    publisher: Publisher,
    acks: AckTracker,
}

/// Acknowledges settled deliveries. A contiguous run of settled tags starting at the lowest
/// unacknowledged one goes out as a single `multiple` ack (cheap for quorum queues); a tag settled
/// out of order is acked on its own at once, so one slow handler never holds the prefetch window.
/// Every delivery must be settled through it, never acked directly.
struct AckTracker {
    ch: lapin::Channel,
    state: tokio::sync::Mutex<AckState>,
}

struct AckState {
    /// The lowest tag not yet known settled (tags start at 1 on every channel).
    next: u64,
    /// Settled tags above `next`, and whether each was already acked on its own.
    settled: std::collections::BTreeMap<u64, bool>,
}

impl AckTracker {
    fn new(ch: lapin::Channel) -> Self {
        Self { ch, state: tokio::sync::Mutex::new(AckState { next: 1, settled: Default::default() }) }
    }

    async fn settle(&self, tags: &[u64]) -> lapin::Result<()> {
        // Held across the sends so that acks leave in a consistent order.
        let mut st = self.state.lock().await;
        for &t in tags {
            st.settled.insert(t, false);
        }
        let mut run_end = None;
        loop {
            let next = st.next;
            match st.settled.remove(&next) {
                Some(already_acked) => {
                    if !already_acked {
                        run_end = Some(next);
                    }
                    st.next += 1;
                }
                None => break,
            }
        }
        if let Some(tag) = run_end {
            self.ch.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
        }
        for &t in tags {
            if let Some(acked @ false) = st.settled.get_mut(&t) {
                self.ch.basic_ack(t, BasicAckOptions { multiple: false }).await?;
                *acked = true;
            }
        }
        Ok(())
    }
}

/// A rolled-back batch: its events, and which handler failed how (if one did).
type BatchFailure = (Vec<Parsed>, Option<(usize, HandlerError)>);

/// A delivery whose body is a valid envelope.
struct Parsed {
    delivery: Delivery,
    env: Envelope,
    attempt: usize,
    started: Instant,
}

/// Called after an event's transaction committed and before it is acknowledged.
pub type AfterCommit = Arc<dyn Fn(&Envelope) + Send + Sync>;

/// An event whose handler failed, after the bus moved it to a rung or the DLQ.
#[derive(Debug, Clone)]
pub struct Failure {
    pub env: Envelope,
    pub reason: String,
    /// Attempts made so far (1 after the first failure).
    pub attempts: usize,
    /// When the next attempt comes (the rung's jittered delay); `None`: parked in the DLQ.
    pub next_attempt_in: Option<Duration>,
}

/// Called (and awaited) for every failed attempt before its delivery is acknowledged, so a service
/// can show "pending, next attempt at ..." or "failed: reason" outside the rolled-back transaction.
pub type OnFailure = Arc<dyn Fn(Failure) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// How one delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    Duplicate,
    Retried,
    Parked,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Retried => "retried",
            Outcome::Parked => "parked",
        }
    }
}

/// Running totals of how deliveries ended, for readiness checks, ops views and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub applied: AtomicU64,
    pub duplicate: AtomicU64,
    pub retried: AtomicU64,
    pub parked: AtomicU64,
}

impl Stats {
    fn count(&self, o: Outcome) {
        let c = match o {
            Outcome::Applied => &self.applied,
            Outcome::Duplicate => &self.duplicate,
            Outcome::Retried => &self.retried,
            Outcome::Parked => &self.parked,
        };
        c.fetch_add(1, Ordering::SeqCst);
    }
    /// Deliveries finished in any way.
    pub fn total(&self) -> u64 {
        [&self.applied, &self.duplicate, &self.retried, &self.parked].iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }
}

/// A service's consumer. Register handlers with [`Consumer::on`], then [`Consumer::run`].
pub struct Consumer {
    cfg: BusConfig,
    service: String,
    pool: PgPool,
    handlers: HashMap<String, Arc<dyn Handler>>,
    after_commit: Option<AfterCommit>,
    on_failure: Option<OnFailure>,
    connected: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl Consumer {
    pub fn new(cfg: BusConfig, service: &str, pool: PgPool) -> Self {
        Self {
            cfg,
            service: service.to_owned(),
            pool,
            handlers: HashMap::new(),
            after_commit: None,
            on_failure: None,
            connected: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(Stats::default()),
        }
    }

    /// Handles `event_type` (versioned, e.g. `identity.user.signed_up.v1`) with `handler`; the work
    /// queue is bound to it on the events exchange.
    pub fn on(mut self, event_type: &str, handler: impl Handler) -> Self {
        self.handlers.insert(event_type.to_owned(), Arc::new(handler));
        self
    }

    /// Runs `hook` after each applied event's commit, before its ack (metrics, tests).
    pub fn on_failure(mut self, hook: OnFailure) -> Self {
        self.on_failure = Some(hook);
        self
    }

    pub fn after_commit(mut self, hook: AfterCommit) -> Self {
        self.after_commit = Some(hook);
        self
    }

    /// True while the consumer holds a live subscription on its work queue.
    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn event_types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Consumes until `shutdown`; then stops taking deliveries, finishes those in flight and returns.
    /// Reconnects with backoff when the broker or the connection goes away.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            let res = this.clone().session(shutdown.clone(), &mut backoff).await;
            this.connected.store(false, Ordering::SeqCst);
            match res {
                Ok(()) => break,
                Err(e) => {
                    let wait = backoff.next();
                    warn!(service = %this.service, error = %e, retry_in_ms = wait.as_millis() as u64, "consumer interrupted; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        info!(service = %this.service, "consumer stopped");
    }

    async fn session(self: Arc<Self>, shutdown: CancellationToken, backoff: &mut Backoff) -> anyhow::Result<()> {
        let conn = publisher::connect(&self.cfg, &format!("{} consumer", self.service)).await?;
        let setup = conn.create_channel().await?;
        let names = topology::declare_service(&setup, &self.cfg, &self.service, &self.event_types()).await?;
        let publisher = Publisher::open(&conn, &self.cfg).await?;
        let ch = conn.create_channel().await?;
        ch.basic_qos(self.cfg.prefetch, BasicQosOptions::default()).await?;
        let deliveries = ch
            .basic_consume(
                names.work.as_str().into(),
                format!("{}-{}", self.service, uuid::Uuid::now_v7()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.connected.store(true, Ordering::SeqCst);
        backoff.reset();
        info!(service = %self.service, queue = %names.work, "consuming");
        let link = Arc::new(Link { names, publisher, acks: AckTracker::new(ch.clone()) });

        let result = deliveries
            .take_until(shutdown.clone().cancelled_owned())
            .ready_chunks(usize::from(self.cfg.batch_size.max(1)))
            .map(Ok::<_, anyhow::Error>)
            // Few chunks in flight, so deliveries pile up into large batches while one commits;
            // within a chunk, events that cannot share a transaction still run concurrently.
            .try_for_each_concurrent(chunk_concurrency(self.cfg.prefetch, self.cfg.batch_size), |chunk| {
                let this = self.clone();
                let link = link.clone();
                async move { this.process_chunk(chunk, &link).await }
            })
            .await;
        self.connected.store(false, Ordering::SeqCst);
        if shutdown.is_cancelled() {
            // In-flight deliveries are finished; unstarted prefetched ones go back to the queue.
            let _ = conn.close(200, "shutdown".into()).await;
            return Ok(());
        }
        result?;
        anyhow::bail!("delivery stream ended (connection closed)")
    }

    /// Handles the deliveries that were ready together. Batchable events share one transaction
    /// (one inbox insert, one commit); the rest, and any batch that fails, go one at a time.
    async fn process_chunk(&self, chunk: Vec<lapin::Result<Delivery>>, link: &Link) -> anyhow::Result<()> {
        let mut broken = None;
        let mut parsed = Vec::with_capacity(chunk.len());
        for item in chunk {
            match item {
                Ok(delivery) => {
                    if let Some(p) = self.parse(delivery, link).await? {
                        parsed.push(p);
                    }
                }
                Err(e) => broken = Some(e),
            }
        }
        let (batch, mut single): (Vec<Parsed>, Vec<Parsed>) =
            parsed.into_iter().partition(|p| self.handlers.get(&p.env.event_type).is_some_and(|h| h.batchable()));
        let mut failed = None;
        if batch.len() > 1 {
            if let Err((back, failure)) = self.apply_batch(batch, link).await? {
                // The event whose handler failed is routed with that error; the others are
                // re-applied one at a time, since the batch's transaction was rolled back.
                let mut back = back;
                if let Some((i, err)) = failure {
                    failed = Some((back.remove(i), err));
                }
                single.extend(back);
            }
        } else {
            single.extend(batch);
        }
        if let Some((p, err)) = failed {
            self.finish(p, Err(err), link).await?;
        }
        futures::future::try_join_all(single.into_iter().map(|p| self.process_one(p, link))).await?;
        match broken {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Decodes a delivery; an undecodable one is parked at once and `None` returned.
    async fn parse(&self, delivery: Delivery, link: &Link) -> anyhow::Result<Option<Parsed>> {
        let attempt = publisher::header_int(&delivery.properties, headers::ATTEMPT).unwrap_or(0).max(0) as usize;
        match Envelope::parse(&delivery.data) {
            Ok(env) => Ok(Some(Parsed { delivery, env, attempt, started: Instant::now() })),
            Err(e) => {
                self.park(&delivery, link, attempt, None, &e.to_string()).await?;
                link.acks.settle(&[delivery.delivery_tag]).await?;
                self.stats.count(Outcome::Parked);
                metrics::counter!("sb_bus_consumed_total", "service" => self.service.clone(), "type" => "invalid", "outcome" => "parked")
                    .increment(1);
                Ok(None)
            }
        }
    }

    fn span(&self, p: &Parsed) -> tracing::Span {
        let span = info_span!("handle_event", service = %self.service, event.r#type = %p.env.event_type, event.id = %p.env.id, attempt = p.attempt);
        trace::continue_trace(&span, &trace::from_properties(&p.delivery.properties));
        span
    }

    /// Applies several events in one transaction. On failure everything is rolled back and the
    /// events are handed back, with the index and error of the handler that failed, if one did.
    async fn apply_batch(&self, batch: Vec<Parsed>, link: &Link) -> anyhow::Result<Result<(), BatchFailure>> {
        let Ok(mut tx) = self.pool.begin().await else { return Ok(Err((batch, None))) };
        let ids: Vec<uuid::Uuid> = batch.iter().map(|p| p.env.id).collect();
        let types: Vec<&str> = batch.iter().map(|p| p.env.event_type.as_str()).collect();
        let fresh: Result<Vec<uuid::Uuid>, _> = sqlx::query_scalar(
            "INSERT INTO sb_inbox (consumer, event_id, event_type)
             SELECT $1, id, ty FROM UNNEST($2::uuid[], $3::text[]) AS t(id, ty)
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(&self.service)
        .bind(&ids)
        .bind(&types)
        .fetch_all(&mut *tx)
        .await;
        let Ok(fresh) = fresh else { return Ok(Err((batch, None))) };
        let mut pending: HashSet<uuid::Uuid> = fresh.into_iter().collect();
        let mut applied = vec![false; batch.len()];
        for (i, p) in batch.iter().enumerate() {
            // The first delivery of each new id applies it; later copies in the batch are duplicates.
            if !pending.remove(&p.env.id) {
                continue;
            }
            let handler = &self.handlers[&p.env.event_type];
            let res = AssertUnwindSafe(handler.handle(&p.env, &mut tx)).catch_unwind().instrument(self.span(p)).await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Ok(Err((batch, Some((i, e))))),
                Err(_) => return Ok(Err((batch, Some((i, HandlerError::Permanent("handler panicked".into())))))),
            }
            applied[i] = true;
        }
        if tx.commit().await.is_err() {
            // Possibly committed after all; the one-at-a-time path sees the inbox rows if so.
            return Ok(Err((batch, None)));
        }
        for (p, applied) in batch.iter().zip(applied) {
            self.record(p, if applied { Outcome::Applied } else { Outcome::Duplicate });
        }
        let tags: Vec<u64> = batch.iter().map(|p| p.delivery.delivery_tag).collect();
        link.acks.settle(&tags).await?;
        Ok(Ok(()))
    }

    /// Applies one event in its own transaction.
    async fn process_one(&self, p: Parsed, link: &Link) -> anyhow::Result<()> {
        let result = self.apply(&p.env).instrument(self.span(&p)).await;
        self.finish(p, result, link).await
    }

    /// Settles one event given how applying it went: a failure goes to the ladder or the DLQ.
    async fn finish(&self, p: Parsed, result: Result<bool, HandlerError>, link: &Link) -> anyhow::Result<()> {
        let span = self.span(&p);
        async {
            let Parsed { delivery, env, attempt, .. } = &p;
            let (outcome, failure) = match result {
                Ok(true) => (Outcome::Applied, None),
                Ok(false) => (Outcome::Duplicate, None),
                Err(HandlerError::Transient(reason)) if *attempt < link.names.rungs.len() => {
                    let delay = self.retry(delivery, link, *attempt, env, &reason).await?;
                    (Outcome::Retried, Some((reason, Some(delay))))
                }
                Err(HandlerError::Transient(reason)) => {
                    let why = format!("retries exhausted after {} attempts: {reason}", attempt + 1);
                    self.park(delivery, link, attempt + 1, Some(env), &why).await?;
                    (Outcome::Parked, Some((why, None)))
                }
                Err(HandlerError::Permanent(reason)) => {
                    self.park(delivery, link, attempt + 1, Some(env), &reason).await?;
                    (Outcome::Parked, Some((reason, None)))
                }
            };
            if let (Some(hook), Some((reason, next_attempt_in))) = (&self.on_failure, failure) {
                hook(Failure { env: env.clone(), reason, attempts: attempt + 1, next_attempt_in }).await;
            }
            self.record(&p, outcome);
            link.acks.settle(&[p.delivery.delivery_tag]).await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Records how a delivery ended (its ack follows; a retried or parked message was copied to
    /// its rung or the DLQ, with a confirm, before this).
    fn record(&self, p: &Parsed, outcome: Outcome) {
        if outcome == Outcome::Applied {
            if let Some(hook) = &self.after_commit {
                hook(&p.env);
            }
            let age = (chrono::Utc::now() - p.env.occurred_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics::histogram!("sb_bus_event_age_seconds", "service" => self.service.clone()).record(age.max(0.0));
        }
        self.stats.count(outcome);
        debug!(outcome = outcome.as_str(), "event handled");
        metrics::counter!("sb_bus_consumed_total", "service" => self.service.clone(), "type" => p.env.event_type.clone(), "outcome" => outcome.as_str()).increment(1);
        metrics::histogram!("sb_bus_handle_seconds", "service" => self.service.clone()).record(p.started.elapsed().as_secs_f64());
    }

    /// Runs the handler in a transaction with the inbox row. `Ok(false)`: already applied before.
    async fn apply(&self, env: &Envelope) -> Result<bool, HandlerError> {
        let Some(handler) = self.handlers.get(&env.event_type) else {
            return Err(HandlerError::Permanent(format!("{} has no handler for {}", self.service, env.event_type)));
        };
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query("INSERT INTO sb_inbox (consumer, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(&self.service)
            .bind(env.id)
            .bind(&env.event_type)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !fresh {
            return Ok(false);
        }
        let handled = AssertUnwindSafe(handler.handle(env, &mut tx)).catch_unwind().await;
        match handled {
            Ok(Ok(())) => {
                tx.commit().await?;
                Ok(true)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(HandlerError::Permanent("handler panicked".into())),
        }
    }

    /// Moves the message to the next rung with a jittered per-message TTL, then acks it here.
    async fn retry(&self, delivery: &Delivery, link: &Link, attempt: usize, env: &Envelope, reason: &str) -> anyhow::Result<Duration> {
        let (rung, delay) = &link.names.rungs[attempt];
        let jitter = rand::rng().random_range(0.0..=self.cfg.retry_jitter.clamp(0.0, 0.9));
        let ttl_ms = ((delay.as_millis() as f64) * (1.0 - jitter)).max(1.0) as u64;
        let props = publisher::with_headers(
            &delivery.properties,
            &[
                (headers::ATTEMPT, AMQPValue::LongLongInt((attempt + 1) as i64)),
                (headers::REASON, lstr(reason)),
                (headers::ROUTING_KEY, lstr(env.event_type.clone())),
                (headers::SERVICE, lstr(self.service.clone())),
            ],
            &[],
        )
        .with_expiration(ttl_ms.to_string().into());
        link.publisher.send_to_queue(rung, &delivery.data, props).await?;
        info!(rung = %rung, attempt = attempt + 1, ttl_ms, %reason, "event failed transiently; retry scheduled");
        Ok(Duration::from_millis(ttl_ms))
    }

    /// Parks the message in the service's DLQ with the reason, then acks it here.
    async fn park(&self, delivery: &Delivery, link: &Link, attempts: usize, env: Option<&Envelope>, reason: &str) -> anyhow::Result<()> {
        let routing_key = env.map_or_else(|| delivery.routing_key.to_string(), |e| e.event_type.clone());
        let props = publisher::with_headers(
            &delivery.properties,
            &[
                (headers::ATTEMPT, AMQPValue::LongLongInt(attempts as i64)),
                (headers::REASON, lstr(reason)),
                (headers::ROUTING_KEY, lstr(routing_key)),
                (headers::SERVICE, lstr(self.service.clone())),
                (headers::FAILED_AT, lstr(chrono::Utc::now().to_rfc3339())),
            ],
            &[],
        );
        // A rung's per-message TTL must not follow the message into the DLQ.
        let props = lapin::BasicProperties::default()
            .with_headers(props.headers().clone().unwrap_or_default())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(delivery.properties.message_id().clone().unwrap_or_default())
            .with_type(delivery.properties.kind().clone().unwrap_or_default());
        link.publisher.send_to_queue(&link.names.dlq, &delivery.data, props).await?;
        metrics::counter!("sb_bus_parked_total", "service" => self.service.clone()).increment(1);
        warn!(dlq = %link.names.dlq, attempts, %reason, "event parked in DLQ");
        Ok(())
    }
}
