//! Which queues the broker has, through RabbitMQ's management API: `switchboard queues` shows the
//! retry queues the services declared, whatever retry ladder they run with, rather than the ones
//! this command's own `SWITCHBOARD_RETRY_DELAYS` would name.

use std::time::Duration;

use anyhow::Context as _;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use sb_bus::config::parse_delays;

/// The management API of the broker the services use.
pub struct Management {
    base: String,
    vhost: String,
    user: String,
    password: String,
    http: reqwest::Client,
}

impl Management {
    /// The API at `url` (default: the AMQP URL's host on port 15672), with the user and password
    /// in `url` if it has them, else the AMQP URL's; the virtual host is the AMQP URL's.
    pub fn new(amqp_url: &str, url: Option<&str>) -> anyhow::Result<Self> {
        let amqp: lapin::uri::AMQPUri = amqp_url.parse().map_err(|e| anyhow::anyhow!("the AMQP URL does not parse: {e}"))?;
        let info = amqp.authority.userinfo;
        let (mut user, mut password) = (info.username, info.password);
        let base = match url {
            Some(u) => {
                let mut parsed = reqwest::Url::parse(u).map_err(|e| anyhow::anyhow!("the management URL does not parse: {e}"))?;
                if !parsed.username().is_empty() {
                    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
                    user = decode(parsed.username());
                    password = decode(parsed.password().unwrap_or_default());
                    // Sent as one Authorization header (below), not also from the URL.
                    let _ = parsed.set_username("");
                    let _ = parsed.set_password(None);
                }
                parsed.as_str().trim_end_matches('/').to_owned()
            }
            None => {
                // Beside the broker: https on 15671 for amqps, http on 15672 otherwise.
                let host = &amqp.authority.host;
                let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.clone() };
                match amqp.scheme {
                    lapin::uri::AMQPScheme::AMQPS => format!("https://{host}:15671"),
                    lapin::uri::AMQPScheme::AMQP => format!("http://{host}:15672"),
                }
            }
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        Ok(Self { base, vhost: amqp.vhost, user, password, http })
    }

    /// Where the API is (never with credentials).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The names of every queue of the virtual host.
    pub async fn queue_names(&self) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Queue {
            name: String,
        }
        let vhost = utf8_percent_encode(&self.vhost, NON_ALPHANUMERIC);
        let url = format!("{}/api/queues/{vhost}?columns=name", self.base);
        let resp = self.http.get(&url).basic_auth(&self.user, Some(&self.password)).send().await.context("no answer")?;
        let status = resp.status();
        anyhow::ensure!(status.is_success(), "answered {status}");
        let queues: Vec<Queue> = resp.json().await.context("unreadable answer")?;
        Ok(queues.into_iter().map(|q| q.name).collect())
    }
}

/// The retry queues of `service` among `names` (`<prefix>.<service>.retry.<delay>`), shortest
/// delay first.
pub fn retry_queues(names: &[String], prefix: &str, service: &str) -> Vec<String> {
    let stem = format!("{prefix}.{service}.retry.");
    let mut found: Vec<(Duration, &String)> = names
        .iter()
        .filter_map(|n| {
            let delay = n.strip_prefix(&stem)?;
            Some((parse_delays(delay).ok()?.into_iter().next()?, n))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_queues_are_those_of_the_service_shortest_delay_first() {
        let names: Vec<String> = [
            "p.crm-sync.retry.5m",
            "p.crm-sync.retry.30s",
            "p.crm-sync.work",
            "p.billing.retry.1s",
            "q.crm-sync.retry.1s",
            "p.crm-sync.retry.x",
        ]
        .map(String::from)
        .into();
        assert_eq!(retry_queues(&names, "p", "crm-sync"), ["p.crm-sync.retry.30s", "p.crm-sync.retry.5m"]);
        assert!(retry_queues(&names, "p", "ai-assist").is_empty());
    }

    #[test]
    fn the_api_is_found_beside_the_broker_with_its_credentials() {
        let m = Management::new("amqp://ops:pw@rabbit.internal:5672/prod", None).unwrap();
        assert_eq!(m.url(), "http://rabbit.internal:15672");
        assert_eq!((m.user.as_str(), m.password.as_str(), m.vhost.as_str()), ("ops", "pw", "prod"));
        let m = Management::new("amqp://guest:guest@127.0.0.1:5672/%2f", Some("http://admin:s3cret@dash:15672")).unwrap();
        assert_eq!(m.url(), "http://dash:15672");
        assert_eq!((m.user.as_str(), m.password.as_str()), ("admin", "s3cret"));
        let m = Management::new("amqps://ops:pw@rabbit.internal/prod", None).unwrap();
        assert_eq!(m.url(), "https://rabbit.internal:15671");
        let m = Management::new("amqp://guest:guest@127.0.0.1:5672/%2f", Some("https://dash.example.com/")).unwrap();
        assert_eq!((m.url(), m.vhost.as_str()), ("https://dash.example.com", "/"));
    }
}
