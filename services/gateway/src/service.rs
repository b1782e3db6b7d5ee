//! What the gateway itself does beyond passing calls on: accept a verified Stripe webhook durably
//! (its receipt and the `stripe.event.received.v1` outbox row committed together). Routes verify
//! and convert; this owns the write.
//!
//! Webhooks that arrive while another commit is under way are committed together, in one
//! statement (group commit): a lone webhook is written at once, as before, and under load each
//! commit carries every webhook that arrived during the previous one. A commit costs PostgreSQL
//! far more than a row, so this is what lets the ack keep pace with a burst on two cores.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sb_bus::{Envelope, events::StripeEventReceived, outbox};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::store::{self, Receipt};

/// Most webhooks committed by one statement.
const MAX_BATCH: usize = 64;
/// Commits under way at once: while one commits, the next batch gathers and is written.
const IN_FLIGHT: usize = 2;
/// Webhooks waiting for a commit before a new one waits for room (backpressure on the handlers).
const QUEUE: usize = 1024;

/// A verified webhook waiting for its commit.
struct Job {
    event_id: String,
    event_type: String,
    livemode: bool,
    stripe_created: DateTime<Utc>,
    signed_at: DateTime<Utc>,
    body_sha256: [u8; 32],
    row: outbox::Row,
    answer: oneshot::Sender<Result<bool, Failure>>,
}

/// Why a webhook was not recorded: the database's error, shared by every webhook of a batch it
/// failed; or [`sqlx::Error::WorkerCrashed`] when the committing task ended under it.
pub type Failure = Arc<sqlx::Error>;

impl Job {
    fn receipt(&self) -> Receipt<'_> {
        Receipt {
            event_id: &self.event_id,
            event_type: &self.event_type,
            livemode: self.livemode,
            stripe_created: self.stripe_created,
            signed_at: self.signed_at,
            body_sha256: &self.body_sha256,
        }
    }
}

/// The gateway's webhook writer: one per [`crate::AppState`]; its committing task starts with the
/// first webhook (and again after one that ended unexpectedly) and ends when the state is dropped.
pub struct Intake {
    pool: PgPool,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Intake {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, queue: Mutex::new(None) }
    }

    /// Records the event (once per event id) and queues it for billing; returns once that is
    /// committed, with whether the event was new. An error means nothing of it was written.
    pub async fn accept(&self, event: StripeEventReceived, body: &[u8], signed_at: DateTime<Utc>) -> Result<bool, Failure> {
        let row = outbox::Row::of(&Envelope::of(&event))?;
        let (answer, answered) = oneshot::channel();
        let job = Job {
            stripe_created: DateTime::from_timestamp(event.created, 0).unwrap_or_default(),
            event_id: event.id,
            event_type: event.event_type,
            livemode: event.livemode,
            signed_at,
            body_sha256: Sha256::digest(body).into(),
            row,
            answer,
        };
        self.queue().send(job).await.map_err(|_| Arc::new(sqlx::Error::WorkerCrashed))?;
        answered.await.map_err(|_| Arc::new(sqlx::Error::WorkerCrashed))?
    }

    /// The committing task's queue, starting the task if there is none or it has ended (a
    /// webhook caught in a task that ended was answered with an error: Stripe retries it).
    fn queue(&self) -> mpsc::Sender<Job> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        match queue.as_ref() {
            Some(q) if !q.is_closed() => q.clone(),
            _ => queue.insert(committer(self.pool.clone())).clone(),
        }
    }
}

/// Starts the task that commits queued webhooks: whatever is waiting (up to [`MAX_BATCH`]) goes
/// into the next statement, with at most [`IN_FLIGHT`] statements under way.
fn committer(pool: PgPool) -> mpsc::Sender<Job> {
    let (queue, mut jobs) = mpsc::channel::<Job>(QUEUE);
    let jobs = futures::stream::poll_fn(move |cx| jobs.poll_recv(cx));
    tokio::spawn(async move {
        jobs.ready_chunks(MAX_BATCH).for_each_concurrent(IN_FLIGHT, |batch| commit(&pool, batch)).await;
    });
    queue
}

/// Commits one batch and answers each of its webhooks. A second delivery of an event id within
/// the batch is answered as a duplicate once the first is committed. If the database refuses
/// a row of the batch, each webhook is tried on its own, so one cannot fail the others.
async fn commit(pool: &PgPool, batch: Vec<Job>) {
    metrics::histogram!("gateway_webhook_commit_batch_size").record(batch.len() as f64);
    let (mut firsts, mut repeats): (Vec<Job>, Vec<Job>) = (Vec::with_capacity(batch.len()), Vec::new());
    for job in batch {
        if firsts.iter().any(|f| f.event_id == job.event_id) {
            repeats.push(job);
        } else {
            firsts.push(job);
        }
    }
    // In one order in every statement, so two statements under way at once never wait for each
    // other's rows crosswise (a deadlock PostgreSQL would break only after a second).
    firsts.sort_unstable_by(|a, b| a.event_id.cmp(&b.event_id));
    let outcome = if firsts.len() == 1 {
        let only = &firsts[0];
        store::insert_receipt_and_event(pool, &only.receipt(), &only.row).await.map(|new| vec![new])
    } else {
        let rows: Vec<(Receipt<'_>, &outbox::Row)> = firsts.iter().map(|j| (j.receipt(), &j.row)).collect();
        store::insert_receipts_and_events(pool, &rows).await
    };
    match outcome {
        Ok(news) => {
            let answered = firsts.into_iter().zip(news);
            let mut any_new = false;
            for (job, new) in answered {
                if new {
                    job.row.enqueued();
                    any_new = true;
                }
                let _ = job.answer.send(Ok(new));
            }
            if any_new {
                outbox::committed(crate::SERVICE);
            }
            for job in repeats {
                let _ = job.answer.send(Ok(false));
            }
        }
        // A row the database refused (a data exception or a constraint): each on its own, so one
        // webhook cannot fail the others. Anything else (timeouts, a lost or refused connection)
        // would fail each of them again, one after another: the whole batch is answered with it.
        Err(sqlx::Error::Database(e)) if refused_row(e.code().as_deref()) && firsts.len() + repeats.len() > 1 => {
            for job in firsts.into_iter().chain(repeats) {
                let new = store::insert_receipt_and_event(pool, &job.receipt(), &job.row).await;
                if matches!(new, Ok(true)) {
                    job.row.enqueued();
                    outbox::committed(crate::SERVICE);
                }
                let _ = job.answer.send(new.map_err(Arc::new));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for job in firsts.into_iter().chain(repeats) {
                let _ = job.answer.send(Err(e.clone()));
            }
        }
    }
}

/// Whether a SQLSTATE says the statement's data was refused (class 22, data exception; class 23,
/// integrity constraint violation) rather than the database being unable to run it now.
fn refused_row(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
}
