//! Consuming a service's work queue: idempotent handling (inbox), the retry ladder and the DLQ.

use std::{
    collections::{HashMap, HashSet},
    marker::PhantomData,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use rand::Rng;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    config::BusConfig,
    envelope::{DecodeError, Envelope},
    events::Event,
    outbox::Backoff,
    publisher::{self, Publisher, headers, lstr},
    topology::{self, Names},
    trace,
};

/// What went wrong in a handler, and so what the bus does with the event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying later (a downstream outage, a timeout, a 5xx or 429): climbs the retry
    /// ladder, waiting at least `retry_after` when the outside service said how long.
    #[error("transient: {reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// Retrying cannot help (invalid payload, a 4xx validation error): parked in the DLQ at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn transient(e: impl std::fmt::Display) -> Self {
        Self::Transient { reason: e.to_string(), retry_after: None }
    }
    /// Transient, and the next attempt must not come before `retry_after` (a 429's Retry-After).
    pub fn transient_after(e: impl std::fmt::Display, retry_after: Option<Duration>) -> Self {
        Self::Transient { reason: e.to_string(), retry_after }
    }
    pub fn permanent(e: impl std::fmt::Display) -> Self {
        Self::Permanent(e.to_string())
    }
}

/// Database errors inside a handler are treated as transient: the database may come back.
impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        Self::transient(format!("database: {e}"))
    }
}

/// A payload that does not read as its type cannot be helped by retrying.
impl From<DecodeError> for HandlerError {
    fn from(e: DecodeError) -> Self {
        Self::Permanent(e.to_string())
    }
}

/// Applies one event type's effect on the service's own database. It runs inside the
/// transaction that also records the event id in the inbox, so its effects happen exactly once;
/// write follow-up events with [`crate::outbox::enqueue`] on the same connection. It must not
/// call another system (HTTP, SMTP, gRPC): that is an [`Effect`].
#[async_trait::async_trait]
pub trait Handler<E: Event>: Send + Sync + 'static {
    async fn handle(&self, env: &Envelope, event: E, tx: &mut PgConnection) -> Result<(), HandlerError>;
}

/// Applies one event type's effect on another system (HubSpot, SMTP, Stripe). It runs with no
/// transaction open: it reads and records through `pool` in short transactions of its own (one
/// connection at a time, never one while waiting on the outside system), and must be idempotent,
/// since a crash after the outside call and before the inbox row is committed repeats it. The
/// inbox row is written after it returns `Ok`, unless the effect wrote it itself with
/// [`Inbox::record`] in the transaction that stores its outcome.
#[async_trait::async_trait]
pub trait Effect<E: Event>: Send + Sync + 'static {
    async fn run(&self, env: &Envelope, event: E, pool: &PgPool, inbox: &Inbox) -> Result<(), HandlerError>;
}

/// The inbox entry of the event an [`Effect`] is applying.
pub struct Inbox {
    consumer: String,
    event_id: uuid::Uuid,
    event_type: String,
    state: AtomicU8,
}

const NOT_RECORDED: u8 = 0;
const RECORDED: u8 = 1;
const ALREADY_THERE: u8 = 2;

impl Inbox {
    fn new(consumer: &str, env: &Envelope) -> Self {
        Self { consumer: consumer.to_owned(), event_id: env.id, event_type: env.event_type.clone(), state: AtomicU8::new(NOT_RECORDED) }
    }

    /// Records the event as applied in `tx`, the transaction that stores the effect's outcome, so
    /// both commit together (and the bus does not write the row in a commit of its own after
    /// `run`). Call it only in a transaction the effect commits before returning `Ok`. `false`:
    /// another delivery of the event was applied meanwhile; roll back and return `Ok` (the bus
    /// counts a duplicate).
    pub async fn record(&self, tx: &mut PgConnection) -> Result<bool, sqlx::Error> {
        let fresh = insert_inbox(tx, &self.consumer, self.event_id, &self.event_type).await?;
        self.state.store(if fresh { RECORDED } else { ALREADY_THERE }, Ordering::SeqCst);
        Ok(fresh)
    }
}

async fn insert_inbox(conn: &mut PgConnection, consumer: &str, event_id: uuid::Uuid, event_type: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("INSERT INTO sb_inbox (consumer, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(consumer)
        .bind(event_id)
        .bind(event_type)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

#[async_trait::async_trait]
trait DbDispatch: Send + Sync {
    async fn apply(&self, env: &Envelope, tx: &mut PgConnection) -> Result<(), HandlerError>;
}

#[async_trait::async_trait]
trait EffectDispatch: Send + Sync {
    async fn run(&self, env: &Envelope, pool: &PgPool, inbox: &Inbox) -> Result<(), HandlerError>;
}

struct Typed<E, H> {
    handler: H,
    _event: PhantomData<fn() -> E>,
}

#[async_trait::async_trait]
impl<E: Event, H: Handler<E>> DbDispatch for Typed<E, H> {
    async fn apply(&self, env: &Envelope, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let event = env.decode::<E>()?;
        self.handler.handle(env, event, tx).await
    }
}

#[async_trait::async_trait]
impl<E: Event, H: Effect<E>> EffectDispatch for Typed<E, H> {
    async fn run(&self, env: &Envelope, pool: &PgPool, inbox: &Inbox) -> Result<(), HandlerError> {
        let event = env.decode::<E>()?;
        self.handler.run(env, event, pool, inbox).await
    }
}

/// A registered event type: a database-only handler (batchable) or an outside effect.
#[derive(Clone)]
enum Registered {
    Db(Arc<dyn DbDispatch>),
    Effect(Arc<dyn EffectDispatch>),
}

/// Connections of the service's pool kept for everything but bus handlers (gRPC and HTTP reads,
/// the outbox relay, readiness), so handlers can never take them all.
pub const RESERVED_CONNECTIONS: u32 = 4;

/// How many batches of database-only events are applied at once: enough to cover the prefetch
/// window, and at least two so one committing batch never idles the consumer.
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

/// A session's tasks: the batcher of database-only events, and every delivery handled on its own
/// (effects, early returns, undecodable bodies, events of a failed batch).
struct Singles {
    tasks: TaskTracker,
    /// Ends the session's delivery stream (shutdown, or a task's broker error).
    stop: CancellationToken,
    /// Drops the tasks still running (the session failed).
    abort: CancellationToken,
    /// The first broker error a task met; the session ends with it and reconnects.
    error: std::sync::Mutex<Option<anyhow::Error>>,
}

impl Singles {
    fn new(stop: CancellationToken) -> Self {
        Self { tasks: TaskTracker::new(), stop, abort: CancellationToken::new(), error: std::sync::Mutex::new(None) }
    }

    fn fail(&self, e: anyhow::Error) {
        self.error.lock().expect("error slot").get_or_insert(e);
        self.stop.cancel();
    }

    fn failed(&self) -> bool {
        self.error.lock().expect("error slot").is_some()
    }
}

/// How a delivery is handled.
enum Triaged {
    /// By a database-only handler: batched.
    Db(Parsed),
    /// By an effect (or by nothing registered): on its own.
    Alone(Parsed),
    /// Back from a rung before its not-before time: waits again.
    Early(Delivery, Duration),
    /// Not an envelope: parked with the reason.
    Invalid(Delivery, usize, String),
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
    handlers: HashMap<String, Registered>,
    /// One permit per handler running (a batch counts once): never more than the pool can serve
    /// beside [`RESERVED_CONNECTIONS`], so a handler never waits on the pool for a connection.
    slots: Arc<Semaphore>,
    after_commit: Option<AfterCommit>,
    on_failure: Option<OnFailure>,
    connected: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl Consumer {
    pub fn new(cfg: BusConfig, service: &str, pool: PgPool) -> Self {
        let slots = pool.options().get_max_connections().saturating_sub(RESERVED_CONNECTIONS).max(1);
        Self {
            cfg,
            service: service.to_owned(),
            pool,
            handlers: HashMap::new(),
            slots: Arc::new(Semaphore::new(slots as usize)),
            after_commit: None,
            on_failure: None,
            connected: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(Stats::default()),
        }
    }

    /// Handles events of type `E` with a database-only `handler` (batchable, inside the inbox
    /// transaction); the work queue is bound to `E::TYPE` on the events exchange.
    pub fn on<E: Event, H: Handler<E>>(mut self, handler: H) -> Self {
        self.handlers.insert(E::TYPE.to_owned(), Registered::Db(Arc::new(Typed { handler, _event: PhantomData })));
        self
    }

    /// Handles events of type `E` with an outside `effect`, run with no transaction open.
    pub fn effect<E: Event, H: Effect<E>>(mut self, effect: H) -> Self {
        self.handlers.insert(E::TYPE.to_owned(), Registered::Effect(Arc::new(Typed { handler: effect, _event: PhantomData })));
        self
    }

    /// How many handlers may run at once (see [`RESERVED_CONNECTIONS`]).
    pub fn handler_slots(&self) -> usize {
        self.slots.available_permits()
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
        let names = topology::declare_service(&conn, &self.cfg, &self.service, &self.event_types()).await?;
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
        let singles = Arc::new(Singles::new(shutdown.child_token()));
        // Should this session be dropped (a shutdown's grace period over), its handlers go with it.
        let _abort_on_drop = singles.abort.clone().drop_guard();

        // Database-only events queue for the batcher: few batches in flight, so deliveries pile
        // up into large batches while one commits. Everything else starts at once on a task of
        // its own, so an effect never waits behind a batch or another effect (the prefetch window
        // bounds how many run, the handler slots how many hold a connection).
        let (to_batcher, queued) = futures::channel::mpsc::unbounded::<Parsed>();
        {
            let (this, link, s) = (self.clone(), link.clone(), singles.clone());
            let batch_size = usize::from(self.cfg.batch_size.max(1));
            let in_flight = chunk_concurrency(self.cfg.prefetch, self.cfg.batch_size);
            singles.tasks.spawn(async move {
                let run = queued.ready_chunks(batch_size).for_each_concurrent(in_flight, |batch| {
                    let (this, link, s) = (this.clone(), link.clone(), s.clone());
                    async move {
                        if let Err(e) = this.process_batch(batch, &link, &s).await {
                            s.fail(e);
                        }
                    }
                });
                tokio::select! {
                    _ = s.abort.cancelled() => {}
                    _ = run => {}
                }
            });
        }
        let mut deliveries = std::pin::pin!(deliveries.take_until(singles.stop.clone().cancelled_owned()));
        let mut result = Ok(());
        while let Some(item) = deliveries.next().await {
            match item {
                Ok(delivery) => match self.triage(delivery) {
                    Triaged::Db(p) => {
                        let _ = to_batcher.unbounded_send(p);
                    }
                    alone => self.spawn_alone(alone, &link, &singles),
                },
                Err(e) => {
                    result = Err(anyhow::Error::from(e));
                    break;
                }
            }
        }
        drop(to_batcher);
        self.connected.store(false, Ordering::SeqCst);
        // Handlers still running finish (on shutdown) or are dropped, rolled back and redelivered
        // (the session failed: their acks could not reach the broker anyway).
        singles.tasks.close();
        if result.is_err() || singles.failed() {
            singles.abort.cancel();
        }
        singles.tasks.wait().await;
        result?;
        if let Some(e) = singles.error.lock().expect("error slot").take() {
            return Err(e);
        }
        if shutdown.is_cancelled() {
            // In-flight deliveries are finished; unstarted prefetched ones go back to the queue.
            let _ = conn.close(200, "shutdown".into()).await;
            return Ok(());
        }
        anyhow::bail!("delivery stream ended (connection closed)")
    }

    /// Applies database-only events that arrived together in one transaction (one inbox insert,
    /// one commit). If it fails, the event whose handler failed is routed with that error and the
    /// others are applied one at a time, since the batch's transaction was rolled back.
    async fn process_batch(self: &Arc<Self>, batch: Vec<Parsed>, link: &Arc<Link>, singles: &Arc<Singles>) -> anyhow::Result<()> {
        if batch.len() == 1 {
            let p = batch.into_iter().next().expect("one event");
            return self.process_one(p, link).await;
        }
        if let Err((mut back, failure)) = self.apply_batch(batch, link).await? {
            if let Some((i, err)) = failure {
                let p = back.remove(i);
                self.finish(p, Err(err), link).await?;
            }
            for p in back {
                self.spawn_alone(Triaged::Alone(p), link, singles);
            }
        }
        Ok(())
    }

    /// Handles one delivery on a task of its own.
    fn spawn_alone(self: &Arc<Self>, t: Triaged, link: &Arc<Link>, singles: &Arc<Singles>) {
        let (this, link, s) = (self.clone(), link.clone(), singles.clone());
        singles.tasks.spawn(async move {
            tokio::select! {
                _ = s.abort.cancelled() => {}
                r = this.handle_alone(t, &link) => if let Err(e) = r { s.fail(e) },
            }
        });
    }

    async fn handle_alone(&self, t: Triaged, link: &Link) -> anyhow::Result<()> {
        match t {
            Triaged::Db(p) | Triaged::Alone(p) => self.process_one(p, link).await,
            Triaged::Early(delivery, wait) => {
                self.defer(&delivery, link, wait).await?;
                link.acks.settle(&[delivery.delivery_tag]).await?;
                Ok(())
            }
            Triaged::Invalid(delivery, attempt, reason) => {
                self.park(&delivery, link, attempt, None, &reason).await?;
                link.acks.settle(&[delivery.delivery_tag]).await?;
                self.stats.count(Outcome::Parked);
                metrics::counter!("sb_bus_consumed_total", "service" => self.service.clone(), "type" => "invalid", "outcome" => "parked")
                    .increment(1);
                Ok(())
            }
        }
    }

    /// Decodes a delivery and says how it is handled: an undecodable one is parked, one that came
    /// back from a rung before its not-before time goes back to wait (without counting an attempt).
    fn triage(&self, delivery: Delivery) -> Triaged {
        let attempt = publisher::header_int(&delivery.properties, headers::ATTEMPT).unwrap_or(0).max(0) as usize;
        match Envelope::parse(&delivery.data) {
            Ok(env) => {
                let not_before = publisher::header_int(&delivery.properties, headers::NOT_BEFORE).unwrap_or(0);
                let wait_ms = not_before - chrono::Utc::now().timestamp_millis();
                if wait_ms > 5 {
                    return Triaged::Early(delivery, Duration::from_millis(wait_ms as u64));
                }
                let db = matches!(self.handlers.get(&env.event_type), Some(Registered::Db(_)));
                let p = Parsed { delivery, env, attempt, started: Instant::now() };
                if db { Triaged::Db(p) } else { Triaged::Alone(p) }
            }
            Err(e) => Triaged::Invalid(delivery, attempt, e.to_string()),
        }
    }

    fn span(&self, p: &Parsed) -> tracing::Span {
        let span = info_span!("handle_event", service = %self.service, event.r#type = %p.env.event_type, event.id = %p.env.id, attempt = p.attempt);
        trace::continue_trace(&span, &trace::from_properties(&p.delivery.properties));
        span
    }

    fn timed_out(&self) -> HandlerError {
        HandlerError::transient(format!("handler did not finish within {:?}", self.cfg.handler_timeout))
    }

    /// Applies several events in one transaction. On failure everything is rolled back and the
    /// events are handed back, with the index and error of the handler that failed, if one did.
    async fn apply_batch(&self, batch: Vec<Parsed>, link: &Link) -> anyhow::Result<Result<(), BatchFailure>> {
        let Ok(_slot) = self.slots.acquire().await else { return Ok(Err((batch, None))) };
        let deadline = tokio::time::Instant::now() + self.cfg.handler_timeout;
        let Ok(Ok(mut tx)) = tokio::time::timeout_at(deadline, self.pool.begin()).await else { return Ok(Err((batch, None))) };
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
        // One deadline for the whole batch (one timer, not one per event).
        let run = async {
            for (i, p) in batch.iter().enumerate() {
                // The first delivery of each new id applies it; later copies in the batch are duplicates.
                if !pending.remove(&p.env.id) {
                    continue;
                }
                let Some(Registered::Db(handler)) = self.handlers.get(&p.env.event_type) else { continue };
                match AssertUnwindSafe(handler.apply(&p.env, &mut tx)).catch_unwind().instrument(self.span(p)).await {
                    Ok(Ok(())) => applied[i] = true,
                    Ok(Err(e)) => return Some((i, e)),
                    Err(_) => return Some((i, HandlerError::Permanent("handler panicked".into()))),
                }
            }
            None
        };
        let enqueued = match tokio::time::timeout_at(deadline, crate::outbox::tracking(run)).await {
            Ok((None, enqueued)) => enqueued,
            Ok((Some(failure), _)) => return Ok(Err((batch, Some(failure)))),
            // Over the deadline as a batch: each event gets its own deadline one at a time.
            Err(_) => return Ok(Err((batch, None))),
        };
        if !matches!(tokio::time::timeout_at(deadline, tx.commit()).await, Ok(Ok(()))) {
            // Possibly committed after all; the one-at-a-time path sees the inbox rows if so.
            return Ok(Err((batch, None)));
        }
        if enqueued {
            crate::outbox::committed(&self.service);
        }
        for (p, applied) in batch.iter().zip(applied) {
            self.record(p, if applied { Outcome::Applied } else { Outcome::Duplicate });
        }
        let tags: Vec<u64> = batch.iter().map(|p| p.delivery.delivery_tag).collect();
        link.acks.settle(&tags).await?;
        Ok(Ok(()))
    }

    /// Applies one event on its own.
    async fn process_one(&self, p: Parsed, link: &Link) -> anyhow::Result<()> {
        let result = self.apply(&p.env).instrument(self.span(&p)).await;
        self.finish(p, result, link).await
    }

    /// Runs the event's handler under its deadline. `Ok(false)`: already applied before.
    async fn apply(&self, env: &Envelope) -> Result<bool, HandlerError> {
        let Some(registered) = self.handlers.get(&env.event_type).cloned() else {
            return Err(HandlerError::Permanent(format!("{} has no handler for {}", self.service, env.event_type)));
        };
        let Ok(_slot) = self.slots.acquire().await else { return Err(HandlerError::transient("consumer is stopping")) };
        let run = async {
            match registered {
                Registered::Db(h) => self.apply_db(h.as_ref(), env).await,
                Registered::Effect(h) => self.run_effect(h.as_ref(), env).await,
            }
        };
        match tokio::time::timeout(self.cfg.handler_timeout, AssertUnwindSafe(run).catch_unwind()).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(HandlerError::Permanent("handler panicked".into())),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// A database-only handler in a transaction with the inbox row.
    async fn apply_db(&self, handler: &dyn DbDispatch, env: &Envelope) -> Result<bool, HandlerError> {
        let mut tx = self.pool.begin().await?;
        if !self.record_inbox(&mut tx, env).await? {
            return Ok(false);
        }
        let (applied, enqueued) = crate::outbox::tracking(handler.apply(env, &mut tx)).await;
        applied?;
        tx.commit().await?;
        if enqueued {
            // What the handler enqueued goes out now.
            crate::outbox::committed(&self.service);
        }
        Ok(true)
    }

    /// An outside effect, with no transaction open; the inbox row follows its success.
    async fn run_effect(&self, effect: &dyn EffectDispatch, env: &Envelope) -> Result<bool, HandlerError> {
        let seen: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sb_inbox WHERE consumer = $1 AND event_id = $2)")
            .bind(&self.service)
            .bind(env.id)
            .fetch_one(&self.pool)
            .await?;
        if seen {
            return Ok(false);
        }
        let inbox = Inbox::new(&self.service, env);
        let (ran, enqueued) = crate::outbox::tracking(effect.run(env, &self.pool, &inbox)).await;
        ran?;
        if enqueued {
            // The effect's own transactions have committed: what they enqueued goes out now.
            crate::outbox::committed(&self.service);
        }
        match inbox.state.load(Ordering::SeqCst) {
            RECORDED => Ok(true),
            ALREADY_THERE => Ok(false),
            _ => {
                let mut conn = self.pool.acquire().await?;
                self.record_inbox(&mut conn, env).await?;
                Ok(true)
            }
        }
    }

    /// Records the event id in the inbox; `false` when it was there already.
    async fn record_inbox(&self, conn: &mut PgConnection, env: &Envelope) -> Result<bool, sqlx::Error> {
        insert_inbox(conn, &self.service, env.id, &env.event_type).await
    }

    /// Settles one event given how applying it went: a failure goes to the ladder or the DLQ.
    async fn finish(&self, p: Parsed, result: Result<bool, HandlerError>, link: &Link) -> anyhow::Result<()> {
        let span = self.span(&p);
        async {
            let Parsed { delivery, env, attempt, .. } = &p;
            let (outcome, failure) = match result {
                Ok(true) => (Outcome::Applied, None),
                Ok(false) => (Outcome::Duplicate, None),
                Err(HandlerError::Transient { reason, retry_after }) if *attempt < link.names.rungs.len() => {
                    let wait = self.retry(delivery, link, *attempt, env, &reason, retry_after).await?;
                    (Outcome::Retried, Some((reason, Some(wait))))
                }
                Err(HandlerError::Transient { reason, .. }) => {
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

    /// Moves the message to a rung with a jittered per-message TTL, then acks it here. The rung
    /// is the attempt's, or a later one long enough for `retry_after`; a wait longer than every
    /// rung goes to the longest with a not-before time, and waits again when it comes back early.
    /// Returns how long until the next attempt.
    async fn retry(
        &self,
        delivery: &Delivery,
        link: &Link,
        attempt: usize,
        env: &Envelope,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> anyhow::Result<Duration> {
        let jitter = rand::rng().random_range(0.0..=self.cfg.retry_jitter.clamp(0.0, 0.9));
        let (rung, ttl, wait) = rung_for(&link.names.rungs, attempt, retry_after.unwrap_or_default(), jitter);
        let mut set = vec![
            (headers::ATTEMPT, AMQPValue::LongLongInt((attempt + 1) as i64)),
            (headers::REASON, lstr(reason)),
            (headers::ROUTING_KEY, lstr(env.event_type.clone())),
            (headers::SERVICE, lstr(self.service.clone())),
        ];
        let not_before = (wait > ttl).then(|| chrono::Utc::now().timestamp_millis() + wait.as_millis() as i64);
        if let Some(t) = not_before {
            set.push((headers::NOT_BEFORE, AMQPValue::LongLongInt(t)));
        }
        let remove: &[&str] = if not_before.is_some() { &[] } else { &[headers::NOT_BEFORE] };
        let props = publisher::with_headers(&delivery.properties, &set, remove).with_expiration(ttl.as_millis().max(1).to_string().into());
        link.publisher.send_to_queue(rung, &delivery.data, props).await?;
        info!(rung = %rung, attempt = attempt + 1, wait_ms = wait.as_millis() as u64, %reason, "event failed transiently; retry scheduled");
        Ok(wait)
    }

    /// Sends a message that came back before its not-before time to wait again (no attempt counted).
    async fn defer(&self, delivery: &Delivery, link: &Link, wait: Duration) -> anyhow::Result<()> {
        let (rung, ttl, _) = rung_for(&link.names.rungs, 0, wait, 0.0);
        let props = publisher::with_headers(&delivery.properties, &[], &[]).with_expiration(ttl.as_millis().max(1).to_string().into());
        link.publisher.send_to_queue(rung, &delivery.data, props).await?;
        debug!(rung = %rung, wait_ms = wait.as_millis() as u64, "event back before its not-before time; waiting again");
        Ok(())
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
            &[headers::NOT_BEFORE],
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

/// Which rung a retry waits on, its per-message TTL and the whole wait: the attempt's rung (or a
/// later one at least `at_least` long), its delay shortened by `jitter` but never below
/// `at_least`. With no rung that long, the longest rung's full delay, and the wait stays
/// `at_least` (the caller marks a not-before time).
fn rung_for(rungs: &[(String, Duration)], attempt: usize, at_least: Duration, jitter: f64) -> (&str, Duration, Duration) {
    let last = rungs.len().saturating_sub(1);
    let index = match rungs.iter().position(|(_, d)| *d >= at_least) {
        Some(long_enough) => attempt.min(last).max(long_enough),
        None => last,
    };
    let (name, delay) = &rungs[index];
    let jittered = delay.mul_f64(1.0 - jitter.clamp(0.0, 0.9)).max(Duration::from_millis(1));
    let ttl = jittered.max(at_least).min(*delay);
    (name.as_str(), ttl, ttl.max(at_least))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Vec<(String, Duration)> {
        ["250ms", "500ms", "1s"].iter().map(|d| ((*d).to_owned(), crate::config::parse_duration(d).unwrap_or_default())).collect()
    }

    #[test]
    fn a_retry_waits_at_least_what_the_outside_service_asked() {
        let l = ladder();
        // No Retry-After: the attempt's rung, jittered.
        let (rung, ttl, wait) = rung_for(&l, 1, Duration::ZERO, 0.2);
        assert_eq!((rung, ttl, wait), ("500ms", Duration::from_millis(400), Duration::from_millis(400)));
        // Retry-After 700ms on the first attempt: the 1s rung, never less than 700ms.
        let (rung, ttl, wait) = rung_for(&l, 0, Duration::from_millis(700), 0.5);
        assert_eq!((rung, ttl, wait), ("1s", Duration::from_millis(700), Duration::from_millis(700)));
        // Longer than any rung: the longest, for its full delay; the wait is what was asked.
        let (rung, ttl, wait) = rung_for(&l, 0, Duration::from_secs(2), 0.3);
        assert_eq!((rung, ttl, wait), ("1s", Duration::from_secs(1), Duration::from_secs(2)));
        // A later attempt keeps its own, longer rung.
        assert_eq!(rung_for(&l, 2, Duration::from_millis(100), 0.0).0, "1s");
    }

    #[test]
    fn chunks_cover_the_prefetch_window() {
        assert_eq!(chunk_concurrency(64, 32), 2);
        assert_eq!(chunk_concurrency(64, 1), 64);
        assert_eq!(chunk_concurrency(1, 32), 2);
    }
}
