//! Publishing with publisher confirms and `mandatory`: a publish succeeds only when the broker
//! has taken responsibility for the message.

use std::collections::BTreeMap;

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::{config::BusConfig, envelope::Envelope};

/// Header names the bus sets on messages it moves between queues.
pub mod headers {
    /// How many times the event has failed so far (0 on first delivery).
    pub const ATTEMPT: &str = "x-sb-attempt";
    /// Why the message is on a rung or in the DLQ.
    pub const REASON: &str = "x-sb-reason";
    /// The event's routing key on the events exchange (a rung or DLQ changes the delivery's).
    pub const ROUTING_KEY: &str = "x-sb-routing-key";
    pub const FAILED_AT: &str = "x-sb-failed-at";
    pub const SERVICE: &str = "x-sb-service";
    /// Unix milliseconds before which a retried message must not be handled (a Retry-After
    /// longer than its rung); one back earlier waits again.
    pub const NOT_BEFORE: &str = "x-sb-not-before";
    /// Set when an operator replays a parked message.
    pub const REPLAYED_AT: &str = "x-sb-replayed-at";
    /// On a parked message an operator's walk put back on the DLQ: that walk's id (how the walk
    /// knows it has come round to its own copies).
    pub const WALK: &str = "x-sb-walk";
    /// When the outbox relay claimed the event's row to publish it (RFC 3339, the relay's
    /// clock): how long the event waited in the outbox, for operators and benchmarks.
    pub const RELAYED_AT: &str = "x-sb-relayed-at";
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker returned the message as unroutable ({0})")]
    Unroutable(String),
    #[error("broker refused the message (nack)")]
    Nacked,
}

/// How long opening a connection may take. A broker that accepts TCP but stalls the handshake
/// (seen on an overloaded RabbitMQ) must not hang a consumer or relay forever: it fails, and the
/// caller's reconnect loop tries again.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The largest AMQP frame this client asks for, unless the URL sets `frame_max` itself. lapin
/// keeps a send and a receive buffer of 32 frames per connection: at RabbitMQ's default 128 KiB
/// that is 8 MiB a connection, two thirds of an idle service's memory with its three
/// connections. Our events are a few KiB (a larger one is sent as several frames).
pub const FRAME_MAX: u32 = 32 * 1024;

/// The broker URL with [`FRAME_MAX`] unless it names a `frame_max`.
fn uri_of(url: &str) -> lapin::Result<lapin::uri::AMQPUri> {
    // The parser's message could quote the URL, password included: not passed on.
    let mut uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|_| lapin::Error::from(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the broker URL is not an amqp:// URL")))?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(uri)
}

/// Opens a named connection (the name shows in the management dashboard).
pub async fn connect(cfg: &BusConfig, name: &str) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    let uri = uri_of(&cfg.amqp_url)?;
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, props)).await {
        Ok(res) => res,
        Err(_) => Err(lapin::Error::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out opening the broker connection"))),
    }
}

/// W3C trace context and other string headers carried with an event.
pub type TraceHeaders = BTreeMap<String, String>;

/// AMQP properties for an event: persistent JSON, ids and trace context in headers.
pub fn event_properties(env: &Envelope, extra: &TraceHeaders) -> BasicProperties {
    let mut h = FieldTable::default();
    for (k, v) in extra {
        h.insert(ShortString::from(k.as_str()), AMQPValue::LongString(LongString::from(v.as_str())));
    }
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(env.id.to_string().into())
        .with_correlation_id(env.correlation_id.to_string().into())
        .with_type(env.event_type.as_str().into())
        .with_app_id(env.source.as_str().into())
        .with_timestamp(env.occurred_at.timestamp().max(0) as u64)
        .with_headers(h)
}

/// A channel in confirm mode. Cheap to clone; one per connection is enough.
#[derive(Clone)]
pub struct Publisher {
    ch: Channel,
    exchange: String,
}

impl Publisher {
    pub async fn open(conn: &Connection, cfg: &BusConfig) -> lapin::Result<Self> {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { ch, exchange: format!("{}.events", cfg.prefix) })
    }

    pub fn channel(&self) -> &Channel {
        &self.ch
    }

    /// Starts publishing an event to the events exchange; await the returned confirm with [`confirmed`].
    pub async fn start_event(&self, body: &[u8], routing_key: &str, props: BasicProperties) -> Result<PublisherConfirm, PublishError> {
        self.start(&self.exchange, routing_key, body, props).await
    }

    /// Publishes an event and waits until the broker confirmed it.
    pub async fn publish(&self, env: &Envelope, trace: &TraceHeaders) -> Result<(), PublishError> {
        let pending = self.start_event(&env.to_json(), env.routing_key(), event_properties(env, trace)).await?;
        confirmed(pending).await
    }

    /// Puts a message straight onto a named queue (rungs, DLQ, replay) and waits for the confirm.
    pub async fn send_to_queue(&self, queue: &str, body: &[u8], props: BasicProperties) -> Result<(), PublishError> {
        let pending = self.start_to_queue(queue, body, props).await?;
        confirmed(pending).await
    }

    /// Starts putting a message onto a named queue; await the returned confirm with [`confirmed`].
    pub async fn start_to_queue(&self, queue: &str, body: &[u8], props: BasicProperties) -> Result<PublisherConfirm, PublishError> {
        self.start("", queue, body, props).await
    }

    async fn start(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<PublisherConfirm, PublishError> {
        Ok(self
            .ch
            .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions { mandatory: true, ..Default::default() }, body, props)
            .await?)
    }
}

/// Waits for a publish's confirm; a return (no queue took it) or a nack is an error.
pub async fn confirmed(pending: PublisherConfirm) -> Result<(), PublishError> {
    match pending.await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(ret)) | Confirmation::Nack(Some(ret)) => Err(PublishError::Unroutable(ret.reply_text.to_string())),
        Confirmation::Nack(None) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Ok(()),
    }
}

/// Reads a string header (long or short string) from AMQP properties.
pub fn header_str(props: &BasicProperties, key: &str) -> Option<String> {
    let v = props.headers().as_ref()?.inner().get(key)?;
    match v {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// When the outbox relay claimed the message's row ([`headers::RELAYED_AT`]); `None` for a message
/// that did not come through an outbox, or whose stamp does not read.
pub fn relayed_at(props: &BasicProperties) -> Option<chrono::DateTime<chrono::Utc>> {
    let stamp = header_str(props, headers::RELAYED_AT)?;
    chrono::DateTime::parse_from_rfc3339(&stamp).ok().map(|t| t.with_timezone(&chrono::Utc))
}

/// Reads an integer header written by us or by the broker.
pub fn header_int(props: &BasicProperties, key: &str) -> Option<i64> {
    let v = props.headers().as_ref()?.inner().get(key)?;
    match v {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Copies `props` with some headers set (string values) and others removed.
pub fn with_headers(props: &BasicProperties, set: &[(&str, AMQPValue)], remove: &[&str]) -> BasicProperties {
    let mut h = props.headers().clone().unwrap_or_default();
    let mut map: BTreeMap<ShortString, AMQPValue> = h.inner().clone();
    for k in remove {
        map.remove(*k);
    }
    for (k, v) in set {
        map.insert(ShortString::from(*k), v.clone());
    }
    h = FieldTable::from(map);
    props.clone().with_headers(h)
}

/// The broker's own dead-letter reason (`x-death[0].reason`), e.g. `delivery_limit` or `expired`.
pub fn death_reason(props: &BasicProperties) -> Option<String> {
    let deaths = props.headers().as_ref()?.inner().get("x-death")?.as_array()?;
    let first = deaths.as_slice().first()?.as_field_table()?;
    match first.inner().get("reason")? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

pub fn lstr(v: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v.into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    #[test]
    fn connections_ask_for_small_frames_unless_the_url_says_otherwise() {
        assert_eq!(uri_of("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap().query.frame_max, Some(FRAME_MAX));
        assert_eq!(uri_of("amqp://127.0.0.1:5672/%2f?frame_max=131072").unwrap().query.frame_max, Some(131_072));
        let e = uri_of("http://u:hunter2@x").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
