//! Operator actions on parked messages: depths, inspect, replay and purge.
//!
//! Inspection holds messages unacknowledged on a private channel and releases them when it closes,
//! so looking never removes anything. Replay and selective purge stream through the queue with a
//! bounded window (memory stays flat for any DLQ length); a parked message is acked only after its
//! copy (on the work queue, or back on the DLQ when not selected) was confirmed by the broker.

use futures::StreamExt;
use lapin::{
    Acker, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
        QueuePurgeOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    catalog::SERVICES,
    config::BusConfig,
    envelope::Envelope,
    publisher::{self, Publisher, headers, lstr},
    topology::Names,
};

/// How many replayed copies are in flight before their confirms are awaited.
const PAGE: usize = 500;

/// Waits for a page of copies' confirms, then acks their originals.
async fn settle(page: Vec<(Option<lapin::PublisherConfirm>, Acker)>) -> anyhow::Result<()> {
    for (confirm, acker) in page {
        if let Some(c) = confirm {
            publisher::confirmed(c).await?;
        }
        // `false`: the channel ended under the walk, so the original goes back to the queue.
        anyhow::ensure!(
            acker.ack(BasicAckOptions::default()).await?,
            "the broker closed the walk's channel before every original was removed (copies already sent are applied once); run it again"
        );
    }
    Ok(())
}

/// One queue's name and message count.
#[derive(Debug, Clone, Serialize)]
pub struct QueueDepth {
    pub service: String,
    pub role: String,
    pub queue: String,
    /// `None` when the queue does not exist (the service has never started under this prefix).
    pub messages: Option<u32>,
    /// Consumers attached (`None` when the queue does not exist).
    pub consumers: Option<u32>,
}

/// A parked message as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Parked {
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub account_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub reason: String,
    pub attempts: i64,
    pub failed_at: Option<String>,
    pub routing_key: Option<String>,
    /// The message body: the envelope as JSON, or the raw text when it is not valid JSON.
    pub body: serde_json::Value,
}

/// Which parked messages an action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Event(Uuid),
    Account(Uuid),
    /// Every parked message of one versioned event type (e.g. `billing.access.changed.v1`).
    EventType(String),
}

impl Selector {
    pub fn matches(&self, p: &Parked) -> bool {
        match self {
            Selector::All => true,
            Selector::Event(id) => p.event_id == Some(*id),
            Selector::Account(id) => p.account_id == Some(*id),
            Selector::EventType(t) => p.event_type.as_deref() == Some(t.as_str()),
        }
    }

    /// In words, for confirmations and audit lines: "ALL parked messages of crm-sync".
    pub fn describe(&self, service: &str) -> String {
        match self {
            Selector::All => format!("ALL parked messages of {service}"),
            Selector::Event(id) => format!("the parked message of event {id} in {service}"),
            Selector::Account(id) => format!("every parked message of account {id} in {service}"),
            Selector::EventType(t) => format!("every parked {t} message in {service}"),
        }
    }
}

/// What a replay or purge would touch, looked at without changing anything.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// Parked messages looked at (all of them, unless there were more than the preview's cap).
    pub looked_at: usize,
    /// How many of those the selector matches.
    pub matched: usize,
    /// The first matching ones, oldest first.
    pub messages: Vec<Parked>,
    /// True when the DLQ held more than the preview looks at: `matched` counts only those.
    pub partial: bool,
}

fn describe(d: &Delivery) -> Parked {
    let props = &d.properties;
    let env = Envelope::parse(&d.data).ok();
    let body = serde_json::from_slice(&d.data).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&d.data).into_owned()));
    let reason = publisher::header_str(props, headers::REASON)
        .or_else(|| publisher::death_reason(props).map(|r| format!("broker dead-lettered it: {r}")))
        .unwrap_or_else(|| "unknown".into());
    Parked {
        event_id: env.as_ref().map(|e| e.id),
        event_type: env.as_ref().map(|e| e.event_type.clone()),
        account_id: env.as_ref().and_then(|e| e.account_id),
        user_id: env.as_ref().and_then(|e| e.user_id),
        reason,
        attempts: publisher::header_int(props, headers::ATTEMPT).unwrap_or(0),
        failed_at: publisher::header_str(props, headers::FAILED_AT),
        routing_key: publisher::header_str(props, headers::ROUTING_KEY),
        body,
    }
}

/// Operator access to the bus under one prefix.
pub struct Ops {
    cfg: BusConfig,
    conn: Connection,
}

impl Ops {
    pub async fn connect(cfg: BusConfig) -> lapin::Result<Self> {
        let conn = publisher::connect(&cfg, "switchboard operator").await?;
        Ok(Self { cfg, conn })
    }

    fn names(&self, service: &str) -> anyhow::Result<Names> {
        anyhow::ensure!(
            SERVICES.contains(&service) || service.starts_with("test-"),
            "unknown service {service:?}; expected one of {}",
            SERVICES.join(", ")
        );
        Ok(Names::new(&self.cfg, service))
    }

    /// Message count of a queue without creating it (`None` if it does not exist).
    async fn count(&self, queue: &str) -> lapin::Result<Option<u32>> {
        Ok(self.stat(queue).await?.map(|(messages, _)| messages))
    }

    /// Message and consumer counts of a queue without creating it (`None` if it does not exist).
    async fn stat(&self, queue: &str) -> lapin::Result<Option<(u32, u32)>> {
        // A passive declare of a missing queue closes the channel, so each check gets its own.
        let ch = self.conn.create_channel().await?;
        let res = ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await;
        let _ = ch.close(200, "".into()).await;
        Ok(res.ok().map(|q| (q.message_count(), q.consumer_count())))
    }

    /// The work, retry and DLQ queues of `service` under this prefix as `(role, queue)`, the retry
    /// queues named from the configured ladder.
    pub fn queues_of(&self, service: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
        let n = self.names(service)?;
        let mut queues = vec![("work", n.work.clone())];
        queues.extend(n.rung_queues().into_iter().map(|(q, _)| ("retry", q.to_owned())));
        queues.push(("dlq", n.dlq.clone()));
        Ok(queues)
    }

    /// Work, retry and DLQ depths for the given services (all six when empty), the retry queues
    /// from the configured ladder.
    pub async fn depths(&self, services: &[&str]) -> anyhow::Result<Vec<QueueDepth>> {
        let services: Vec<&str> = if services.is_empty() { SERVICES.to_vec() } else { services.to_vec() };
        let mut queues = Vec::new();
        for svc in services {
            queues.extend(self.queues_of(svc)?.into_iter().map(|(role, q)| (svc.to_owned(), role, q)));
        }
        self.depths_of(queues).await
    }

    /// Depths of the given `(service, role, queue)`s, in that order.
    pub async fn depths_of(&self, queues: Vec<(String, &'static str, String)>) -> anyhow::Result<Vec<QueueDepth>> {
        let mut out = Vec::with_capacity(queues.len());
        for (service, role, queue) in queues {
            let stat = self.stat(&queue).await?;
            out.push(QueueDepth { service, role: role.to_owned(), queue, messages: stat.map(|s| s.0), consumers: stat.map(|s| s.1) });
        }
        Ok(out)
    }

    /// Up to `limit` parked messages of `service`, oldest first, left in place.
    pub async fn show(&self, service: &str, limit: usize) -> anyhow::Result<Vec<Parked>> {
        let n = self.names(service)?;
        // Looked at unacknowledged on a private channel; closing it puts them back.
        let ch = self.conn.create_channel().await?;
        let mut out = Vec::new();
        while out.len() < limit {
            match ch.basic_get(n.dlq.as_str().into(), BasicGetOptions { no_ack: false }).await? {
                Some(m) => out.push(describe(&m.delivery)),
                None => break,
            }
        }
        ch.close(200, "released".into()).await?;
        // A quorum queue takes the released messages back a moment after the close: wait for
        // them (briefly), so that a count taken next includes what was just shown.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while !out.is_empty() && tokio::time::Instant::now() < deadline {
            if self.count(&n.dlq).await?.is_none_or(|c| c as usize >= out.len()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(out)
    }

    /// What a replay or purge with `which` would touch: looks at up to `cap` parked messages
    /// (unacknowledged, on a private channel; closing it puts them all back, so nothing moves)
    /// and returns how many match, with the first `limit` of them.
    pub async fn preview(&self, service: &str, which: &Selector, limit: usize, cap: usize) -> anyhow::Result<Preview> {
        let n = self.names(service)?;
        let ch = self.conn.create_channel().await?;
        let mut preview = Preview { looked_at: 0, matched: 0, messages: Vec::new(), partial: false };
        loop {
            if preview.looked_at >= cap {
                preview.partial = ch.basic_get(n.dlq.as_str().into(), BasicGetOptions { no_ack: false }).await?.is_some();
                break;
            }
            let Some(m) = ch.basic_get(n.dlq.as_str().into(), BasicGetOptions { no_ack: false }).await? else { break };
            preview.looked_at += 1;
            let parked = describe(&m.delivery);
            if which.matches(&parked) {
                preview.matched += 1;
                if preview.messages.len() < limit {
                    preview.messages.push(parked);
                }
            }
        }
        ch.close(200, "previewed".into()).await?;
        Ok(preview)
    }

    /// Walks every message in `queue` once, in order, streaming on a private channel with a
    /// bounded window: each message's body is dropped once `visit` has seen it, so memory stays
    /// flat whatever the queue's length. `visit` (given this walk's id) starts the publish of a
    /// copy (to the work queue, or back to the tail of `queue` with the id in `x-sb-walk` to keep
    /// it) or returns no publish (the message is deleted); the original is acked only after its
    /// copy's confirm. The walk ends when its own first copy comes round, or when the queue is
    /// empty — not at a count taken at the start, which a quorum queue may report stale.
    async fn walk<F, Fut>(&self, queue: &str, mut visit: F) -> anyhow::Result<usize>
    where
        F: FnMut(Delivery, &str) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<(Option<lapin::PublisherConfirm>, Acker, bool)>>,
    {
        // Not a reason to stop when it says 0: right after another walk (a replay or purge just
        // before this one) a quorum queue can report 0 while it holds that walk's copies. An
        // empty queue costs the short wait below instead.
        let Some(total) = self.count(queue).await? else {
            return Ok(0); // no such queue (the service never ran here)
        };
        let ch = self.conn.create_channel().await?;
        ch.basic_qos((2 * PAGE) as u16, BasicQosOptions::default()).await?;
        let walk_id = Uuid::now_v7().to_string();
        let tag = format!("switchboard-operator-{walk_id}");
        let mut deliveries =
            ch.basic_consume(queue.into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
        let mut page = Vec::with_capacity(PAGE);
        let mut selected = 0;
        let mut walked = 0;
        loop {
            // Past the count taken at the start, more only comes if that count was stale: wait
            // briefly. Before it, a busy broker may take a while. Either way, when nothing comes,
            // stop only if nothing is left to come (another operator may have emptied the queue).
            let patience = if walked < total { std::time::Duration::from_secs(5) } else { std::time::Duration::from_millis(250) };
            let delivery = match tokio::time::timeout(patience, deliveries.next()).await {
                Ok(Some(delivery)) => delivery?,
                Ok(None) => break,
                Err(_) if self.count(queue).await?.unwrap_or(0) == 0 => break,
                Err(_) => continue,
            };
            if publisher::header_str(&delivery.properties, headers::WALK).as_deref() == Some(walk_id.as_str()) {
                // Come round to this walk's own copies: every message was seen once. This one
                // goes back now (applied before the consumer's cancel below is answered);
                // whatever else was prefetched goes back when the channel closes.
                delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
                break;
            }
            walked += 1;
            let (confirm, acker, counted) = visit(delivery, &walk_id).await?;
            selected += usize::from(counted);
            page.push((confirm, acker));
            if page.len() >= PAGE {
                settle(std::mem::take(&mut page)).await?;
            }
        }
        settle(page).await?;
        // The acks above are only sent. Cancelling the consumer is a round trip on the same
        // channel, answered after the broker has handled them: closing right after the last ack
        // let a busy broker hand the whole last page back as unacknowledged (the originals stayed
        // parked although their copies were replayed).
        ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await?;
        // Closing returns what the window prefetched beyond the walk.
        ch.close(200, "walked".into()).await?;
        Ok(selected)
    }

    /// Moves the selected parked messages back onto the service's work queue, with a fresh ladder.
    /// Returns how many were replayed. Events already applied are acknowledged there without
    /// effect. Streams: publishes are confirmed a page at a time, and a parked message is acked
    /// only after its copy's confirm, so nothing is lost if the operator's connection drops.
    pub async fn replay(&self, service: &str, which: Selector) -> anyhow::Result<usize> {
        let n = self.names(service)?;
        let publisher = Publisher::open(&self.conn, &self.cfg).await?;
        let (work, dlq) = (n.work.clone(), n.dlq.clone());
        self.walk(&n.dlq, |d, walk| {
            let (publisher, work, dlq, which, walk) = (publisher.clone(), work.clone(), dlq.clone(), which.clone(), walk.to_owned());
            let keep_props = publisher::with_headers(&d.properties, &[(headers::WALK, lstr(walk.clone()))], &[]);
            async move {
                if !which.matches(&describe(&d)) {
                    let keep = publisher.start_to_queue(&dlq, &d.data, keep_props).await?;
                    return Ok((Some(keep), d.acker, false));
                }
                // The copy carries this walk's id too: if the service parks it again while the
                // walk is still going (it fails the same way), the walk meets it at the DLQ's tail
                // as one of its own and ends there, instead of replaying it over and over.
                let props = publisher::with_headers(
                    &d.properties,
                    &[
                        (headers::ATTEMPT, AMQPValue::LongLongInt(0)),
                        (headers::REPLAYED_AT, lstr(chrono::Utc::now().to_rfc3339())),
                        (headers::WALK, lstr(walk)),
                    ],
                    &[
                        headers::REASON,
                        headers::FAILED_AT,
                        headers::NOT_BEFORE,
                        "x-death",
                        "x-first-death-exchange",
                        "x-first-death-queue",
                        "x-first-death-reason",
                        "x-last-death-exchange",
                        "x-last-death-queue",
                        "x-last-death-reason",
                    ],
                );
                let confirm = publisher.start_to_queue(&work, &d.data, props).await?;
                Ok((Some(confirm), d.acker, true))
            }
        })
        .await
    }

    /// Deletes the selected parked messages for good. Returns how many were deleted.
    pub async fn purge(&self, service: &str, which: Selector) -> anyhow::Result<usize> {
        let n = self.names(service)?;
        if which == Selector::All {
            let ch = self.conn.create_channel().await?;
            let count = ch.queue_purge(n.dlq.as_str().into(), QueuePurgeOptions::default()).await?;
            ch.close(200, "purged".into()).await?;
            return Ok(count as usize);
        }
        let publisher = Publisher::open(&self.conn, &self.cfg).await?;
        let dlq = n.dlq.clone();
        self.walk(&n.dlq, |d, walk| {
            let (publisher, dlq, which) = (publisher.clone(), dlq.clone(), which.clone());
            let keep_props = publisher::with_headers(&d.properties, &[(headers::WALK, lstr(walk.to_owned()))], &[]);
            async move {
                if which.matches(&describe(&d)) {
                    return Ok((None, d.acker, true));
                }
                let keep = publisher.start_to_queue(&dlq, &d.data, keep_props).await?;
                Ok((Some(keep), d.acker, false))
            }
        })
        .await
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}
