//! Bus settings: broker address, names, retry ladder and consumer limits.

use std::time::Duration;

/// Default ladder: 10s, 1m, 5m, 15m, 1h, 3h, 6h, 12h, 12h — about 34 h in all before parking.
pub const DEFAULT_RETRY_DELAYS: &str = "10s,1m,5m,15m,1h,3h,6h,12h,12h";

#[derive(Clone)]
pub struct BusConfig {
    /// `amqp://user:pass@host:port/vhost`. Treated as a secret: never logged whole.
    pub amqp_url: String,
    /// Prefix of every exchange and queue name, so several deployments (or tests) share a broker.
    pub prefix: String,
    /// Delay of each retry rung, in order. Their sum is how long a transient failure is retried.
    pub retry_delays: Vec<Duration>,
    /// Each rung delay is shortened by up to this fraction at random, so retries spread out.
    pub retry_jitter: f64,
    /// Unacknowledged deliveries per consumer; also how many are handled concurrently.
    pub prefetch: u16,
    /// Up to this many deliveries that arrive together share one transaction (see
    /// `Handler::batchable`); 1 turns batching off.
    pub batch_size: u16,
    /// Broker-side backstop: a message redelivered this many times (crash loops) is parked.
    pub delivery_limit: u32,
    /// Queues unused for this long are deleted by the broker (tests only; None in production).
    pub queue_expires: Option<Duration>,
    /// The longest one handler (or one batch) may run; over it, the event is retried.
    pub handler_timeout: Duration,
}

impl std::fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusConfig")
            .field("amqp_url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("retry_delays", &self.retry_delays)
            .field("retry_jitter", &self.retry_jitter)
            .field("prefetch", &self.prefetch)
            .field("batch_size", &self.batch_size)
            .field("delivery_limit", &self.delivery_limit)
            .field("queue_expires", &self.queue_expires)
            .field("handler_timeout", &self.handler_timeout)
            .finish()
    }
}

impl BusConfig {
    pub fn new(amqp_url: impl Into<String>) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            prefix: "switchboard".into(),
            retry_delays: parse_delays(DEFAULT_RETRY_DELAYS).unwrap_or_default(),
            retry_jitter: 0.2,
            prefetch: 64,
            batch_size: 32,
            delivery_limit: 20,
            queue_expires: None,
            handler_timeout: Duration::from_secs(60),
        }
    }

    /// The broker address with any password replaced, safe for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.amqp_url)
    }
}

/// Replaces the password of `scheme://user:password@host/...` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((creds, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    let user = creds.split_once(':').map_or(creds, |(u, _)| u);
    format!("{scheme}://{user}:***@{host}")
}

/// Parses `"500ms,10s,1m,2h"` into durations. Every rung must be at least 1 ms.
pub fn parse_delays(s: &str) -> Result<Vec<Duration>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(parse_duration(part)?);
    }
    if out.is_empty() {
        return Err("at least one retry delay is required".into());
    }
    Ok(out)
}

/// Parses `250ms`, `10s`, `5m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 500ms, 10s, 5m, 2h"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1_000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(format!("{s:?} has unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    if ms == 0 {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(Duration::from_millis(ms))
}

/// The shortest exact spelling of a duration, used in queue names: 10s, 5m, 1500ms.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ladder_reaches_a_day() {
        let total: Duration = parse_delays(DEFAULT_RETRY_DELAYS).unwrap().iter().sum();
        assert!(total >= Duration::from_secs(24 * 3600), "{total:?}");
    }

    #[test]
    fn durations_parse_and_format_back() {
        for s in ["250ms", "10s", "5m", "2h", "1d", "1500ms", "90s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten s").is_err());
        assert!(parse_delays(" , ").is_err());
        assert_eq!(parse_delays("1s, 2s").unwrap(), vec![Duration::from_secs(1), Duration::from_secs(2)]);
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("postgres://u:p@w@h/db"), "postgres://u:***@h/db");
    }
}
