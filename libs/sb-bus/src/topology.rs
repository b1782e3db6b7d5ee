//! Names and idempotent declaration of the exchange and every service's work, delay and DLQ queues.

use std::time::Duration;

use lapin::{
    Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::config::{BusConfig, format_duration};

/// Every name the bus uses for one service under one prefix.
#[derive(Debug, Clone)]
pub struct Names {
    pub exchange: String,
    /// Catches events no queue is bound to, so a publish is never dropped for lack of a consumer.
    pub unrouted_exchange: String,
    pub unrouted_queue: String,
    pub work: String,
    pub dlq: String,
    /// One queue per rung, in ladder order, with the rung's delay.
    pub rungs: Vec<(String, Duration)>,
}

impl Names {
    pub fn new(cfg: &BusConfig, service: &str) -> Self {
        let p = &cfg.prefix;
        Self {
            exchange: format!("{p}.events"),
            unrouted_exchange: format!("{p}.unrouted"),
            unrouted_queue: format!("{p}.unrouted"),
            work: format!("{p}.{service}.work"),
            dlq: format!("{p}.{service}.dlq"),
            rungs: cfg.retry_delays.iter().map(|d| (format!("{p}.{service}.retry.{}", format_duration(*d)), *d)).collect(),
        }
    }

    /// The rung queue names, deduplicated (a ladder may repeat a delay: 12h,12h shares one queue).
    pub fn rung_queues(&self) -> Vec<(&str, Duration)> {
        let mut out: Vec<(&str, Duration)> = Vec::new();
        for (name, d) in &self.rungs {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.as_str(), *d));
            }
        }
        out
    }
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn quorum_args(cfg: &BusConfig) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), s("quorum"));
    if let Some(exp) = cfg.queue_expires {
        t.insert("x-expires".into(), AMQPValue::LongLongInt(exp.as_millis() as i64));
    }
    t
}

/// Dead-letters to `target` through the default exchange, at-least-once (the broker keeps the
/// message until the target confirms it; that strategy requires `reject-publish` overflow).
fn dead_letter_to(t: &mut FieldTable, target: &str) {
    t.insert("x-dead-letter-exchange".into(), s(""));
    t.insert("x-dead-letter-routing-key".into(), s(target));
    t.insert("x-dead-letter-strategy".into(), s("at-least-once"));
    t.insert("x-overflow".into(), s("reject-publish"));
}

/// How many events nobody consumes the unrouted queue keeps (the oldest go first) and for how
/// long: it is for an operator to see what was published without a consumer, not a store.
pub const UNROUTED_MAX_LENGTH: i64 = 10_000;
pub const UNROUTED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Declares the shared exchange (with its alternate exchange and the bounded unrouted queue).
pub async fn declare_exchange(conn: &Connection, cfg: &BusConfig) -> lapin::Result<()> {
    let n = Names::new(cfg, "_");
    let ch = conn.create_channel().await?;
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(n.unrouted_exchange.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
    let mut args = quorum_args(cfg);
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(UNROUTED_MAX_LENGTH));
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(UNROUTED_TTL.as_millis() as i64));
    args.insert("x-overflow".into(), s("drop-head"));
    let ch = match ch.queue_declare(n.unrouted_queue.as_str().into(), QueueDeclareOptions::durable(), args).await {
        Ok(_) => ch,
        // Declared by an older version without the bounds (406 PRECONDITION_FAILED closes the
        // channel): keep using it, and say how to bound it.
        Err(e) => {
            tracing::warn!(queue = %n.unrouted_queue, error = %e,
                "the unrouted queue exists with other arguments; it is used as it is (bound it with a policy: max-length {UNROUTED_MAX_LENGTH}, message-ttl, overflow drop-head)");
            conn.create_channel().await?
        }
    };
    ch.queue_bind(
        n.unrouted_queue.as_str().into(),
        n.unrouted_exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert("alternate-exchange".into(), s(&n.unrouted_exchange));
    ch.exchange_declare(n.exchange.as_str().into(), ExchangeKind::Topic, durable, args).await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

/// Declares one service's work queue (bound to `event_types`), its delay rungs and its DLQ.
/// Safe to call on every start and from every replica: declarations are idempotent.
pub async fn declare_service(conn: &Connection, cfg: &BusConfig, service: &str, event_types: &[&str]) -> lapin::Result<Names> {
    declare_exchange(conn, cfg).await?;
    let ch = conn.create_channel().await?;
    let n = Names::new(cfg, service);
    ch.queue_declare(n.dlq.as_str().into(), QueueDeclareOptions::durable(), quorum_args(cfg)).await?;

    let mut work = quorum_args(cfg);
    work.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(cfg.delivery_limit)));
    dead_letter_to(&mut work, &n.dlq);
    ch.queue_declare(n.work.as_str().into(), QueueDeclareOptions::durable(), work).await?;

    for (rung, delay) in n.rung_queues() {
        let mut args = quorum_args(cfg);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay.as_millis() as i64));
        dead_letter_to(&mut args, &n.work);
        ch.queue_declare(rung.into(), QueueDeclareOptions::durable(), args).await?;
    }
    for ty in event_types {
        ch.queue_bind(
            n.work.as_str().into(),
            n.exchange.as_str().into(),
            ShortString::from(*ty),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    let _ = ch.close(200, "declared".into()).await;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prefix_and_share_repeated_rungs() {
        let mut cfg = BusConfig::new("amqp://x");
        cfg.prefix = "t1".into();
        cfg.retry_delays = vec![Duration::from_secs(1), Duration::from_secs(12 * 3600), Duration::from_secs(12 * 3600)];
        let n = Names::new(&cfg, "crm-sync");
        assert_eq!(n.exchange, "t1.events");
        assert_eq!(n.work, "t1.crm-sync.work");
        assert_eq!(n.dlq, "t1.crm-sync.dlq");
        assert_eq!(n.rungs[1].0, "t1.crm-sync.retry.12h");
        assert_eq!(n.rung_queues().len(), 2);
    }
}
