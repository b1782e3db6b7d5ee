//! Typed service settings from environment variables, validated at start.
//!
//! Naming: `{SERVICE}_{SETTING}` (e.g. `CRM_SYNC_HTTP_ADDR`). Settings every service shares are
//! read from `{SERVICE}_{SETTING}` first and then `SWITCHBOARD_{SETTING}`, so one deployment-wide
//! value can be overridden for a single service.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use sb_bus::{BusConfig, config::parse_delays};
use secrecy::{ExposeSecret, SecretString};

/// A setting that could not be used; names the variable, never echoes a secret's value.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub reason: String,
}

/// Default (HTTP, gRPC) ports, also listed in the README.
pub fn default_ports(service: &str) -> (u16, u16) {
    match service {
        "gateway" => (8080, 50050),
        "identity" => (8081, 50051),
        "billing" => (8082, 50052),
        "crm-sync" => (8083, 50053),
        "support-router" => (8084, 50054),
        "ai-assist" => (8085, 50055),
        _ => (0, 0),
    }
}

/// Looks a variable up by name.
type Lookup = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Reads settings for one service from a variable source (the process environment by default).
#[derive(Clone)]
pub struct Env {
    prefix: String,
    lookup: Lookup,
}

impl Env {
    pub fn for_service(service: &str) -> Self {
        Self::with_lookup(service, |k| std::env::var(k).ok())
    }

    /// For tests: settings from a closure instead of the process environment.
    pub fn with_lookup(service: &str, lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self { prefix: service.to_uppercase().replace('-', "_"), lookup: std::sync::Arc::new(lookup) }
    }

    pub fn var_name(&self, setting: &str) -> String {
        format!("{}_{setting}", self.prefix)
    }

    fn raw(&self, var: &str) -> Option<(String, String)> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty()).map(|v| (var.to_owned(), v))
    }

    /// A service-only setting: `{SERVICE}_{SETTING}`.
    pub fn own(&self, setting: &str) -> Option<(String, String)> {
        self.raw(&self.var_name(setting))
    }

    /// A shared setting: `{SERVICE}_{SETTING}`, else `SWITCHBOARD_{SETTING}`.
    pub fn shared(&self, setting: &str) -> Option<(String, String)> {
        self.own(setting).or_else(|| self.raw(&format!("SWITCHBOARD_{setting}")))
    }

    /// Any variable by its full name (for standard ones like `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn exact(&self, var: &str) -> Option<String> {
        self.raw(var).map(|(_, v)| v)
    }

    /// Parses a found value, with an error naming the variable. Set `secret` for values that must
    /// not appear in the message.
    pub fn parse<T: FromStr>(found: Option<(String, String)>, default: T, expected: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match found {
            None => Ok(default),
            Some((var, v)) => v.trim().parse().map_err(|e| ConfigError { var, reason: format!("{v:?} is not {expected} ({e})") }),
        }
    }
}

/// A shared duration setting (`10s`, `500ms`, `2m`), or `default`.
fn duration(env: &Env, setting: &str, default: Duration) -> Result<Duration, ConfigError> {
    match env.shared(setting) {
        Some((var, v)) => sb_bus::config::parse_duration(&v).map_err(|reason| ConfigError { var, reason }),
        None => Ok(default),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            _ => Err("use json or pretty".into()),
        }
    }
}

/// Everything a service needs to start, from `{SERVICE}_*` / `SWITCHBOARD_*` variables.
#[derive(Clone)]
pub struct ServiceConfig {
    pub service: &'static str,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub database_url: SecretString,
    pub bus: BusConfig,
    pub log_format: LogFormat,
    pub otlp_endpoint: Option<String>,
    /// How long shutdown waits for in-flight work before giving up.
    pub shutdown_grace: Duration,
    /// Pool size and the time limits of the service's database connections.
    pub db: crate::db::Limits,
    /// Shared secret one Switchboard service presents to another over gRPC
    /// (`x-switchboard-service` metadata).
    pub service_token: SecretString,
    /// Where these settings came from, for the service's own settings (see [`ServiceConfig::env`]).
    source: Env,
}

/// Used when `SWITCHBOARD_SERVICE_TOKEN` is unset, so a local run needs no setup; a service
/// started with it logs a warning. Set a real random value in any shared deployment.
pub const DEV_SERVICE_TOKEN: &str = "switchboard-local-dev-service-token";

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("service", &self.service)
            .field("http_addr", &self.http_addr)
            .field("grpc_addr", &self.grpc_addr)
            .field("database_url", &sb_bus::config::redact_url(self.database_url.expose_secret()))
            .field("bus", &self.bus)
            .field("log_format", &self.log_format)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("db", &self.db)
            .finish()
    }
}

impl ServiceConfig {
    /// The service's own settings (`{SERVICE}_*`) beyond the common ones, from the same source.
    pub fn env(&self) -> Env {
        self.source.clone()
    }

    pub fn from_env(service: &'static str) -> Result<Self, ConfigError> {
        Self::load(service, &Env::for_service(service))
    }

    pub fn load(service: &'static str, env: &Env) -> Result<Self, ConfigError> {
        let (http, grpc) = default_ports(service);
        let localhost = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let http_addr = Env::parse(env.own("HTTP_ADDR"), localhost(http), "a socket address like 127.0.0.1:8080")?;
        let grpc_addr = Env::parse(env.own("GRPC_ADDR"), localhost(grpc), "a socket address like 127.0.0.1:50050")?;

        let db_default = format!("postgres://postgres@127.0.0.1:5432/switchboard_{}", service.replace('-', "_"));
        let database_url = match env.own("DATABASE_URL") {
            Some((var, v)) if !(v.starts_with("postgres://") || v.starts_with("postgresql://")) => {
                return Err(ConfigError { var, reason: "must be a postgres:// URL".into() });
            }
            Some((_, v)) => v,
            None => db_default,
        };

        let mut bus = BusConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f");
        if let Some((var, v)) = env.shared("AMQP_URL") {
            if !(v.starts_with("amqp://") || v.starts_with("amqps://")) {
                return Err(ConfigError { var, reason: "must be an amqp:// URL".into() });
            }
            bus.amqp_url = v;
        }
        if let Some((var, v)) = env.shared("BUS_PREFIX") {
            if !v.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
                return Err(ConfigError { var, reason: format!("{v:?} may only hold letters, digits, - and _") });
            }
            bus.prefix = v;
        }
        if let Some((var, v)) = env.shared("RETRY_DELAYS") {
            bus.retry_delays = parse_delays(&v).map_err(|reason| ConfigError { var, reason })?;
        }
        bus.prefetch = Env::parse(env.shared("PREFETCH"), bus.prefetch, "a number of messages (1-65535)")?;
        if bus.prefetch == 0 {
            return Err(ConfigError { var: "SWITCHBOARD_PREFETCH".into(), reason: "must be at least 1".into() });
        }
        bus.batch_size = Env::parse(env.shared("BATCH_SIZE"), bus.batch_size, "a number of messages (1 turns batching off)")?.max(1);
        if let Some((var, v)) = env.shared("QUEUE_EXPIRES") {
            bus.queue_expires = Some(sb_bus::config::parse_duration(&v).map_err(|reason| ConfigError { var, reason })?);
        }
        bus.delivery_limit = Env::parse(env.shared("DELIVERY_LIMIT"), bus.delivery_limit, "a whole number")?;
        bus.handler_timeout = duration(env, "HANDLER_TIMEOUT", bus.handler_timeout)?;

        let mut db = crate::db::Limits::default();
        db.pool_size = Env::parse(env.shared("DB_POOL_SIZE"), db.pool_size, "a number of connections")?;
        if db.pool_size <= sb_bus::consumer::RESERVED_CONNECTIONS {
            return Err(ConfigError {
                var: env.shared("DB_POOL_SIZE").map_or_else(|| "SWITCHBOARD_DB_POOL_SIZE".into(), |(var, _)| var),
                reason: format!("must be more than {} (that many are kept for reads)", sb_bus::consumer::RESERVED_CONNECTIONS),
            });
        }
        db.statement_timeout = duration(env, "DB_STATEMENT_TIMEOUT", db.statement_timeout)?;
        db.lock_timeout = duration(env, "DB_LOCK_TIMEOUT", db.lock_timeout)?;

        let log_format = Env::parse(env.shared("LOG_FORMAT"), LogFormat::Pretty, "json or pretty")?;
        let shutdown_secs: u64 = Env::parse(env.shared("SHUTDOWN_GRACE_SECS"), 25, "a number of seconds")?;
        let service_token = match env.shared("SERVICE_TOKEN") {
            Some((var, v)) if v.len() < 16 => return Err(ConfigError { var, reason: "must be at least 16 characters".into() }),
            Some((_, v)) => v,
            None => DEV_SERVICE_TOKEN.to_owned(),
        };
        Ok(Self {
            service,
            http_addr,
            grpc_addr,
            database_url: SecretString::from(database_url),
            bus,
            log_format,
            otlp_endpoint: env.exact("OTEL_EXPORTER_OTLP_ENDPOINT"),
            db,
            shutdown_grace: Duration::from_secs(shutdown_secs),
            service_token: SecretString::from(service_token),
            source: env.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::with_lookup("crm-sync", move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_work_on_localhost() {
        let c = ServiceConfig::load("crm-sync", &env(&[])).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8083");
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:50053");
        assert_eq!(c.database_url.expose_secret(), "postgres://postgres@127.0.0.1:5432/switchboard_crm_sync");
        assert_eq!(c.bus.prefix, "switchboard");
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    #[test]
    fn service_value_beats_shared_value() {
        let c = ServiceConfig::load(
            "crm-sync",
            &env(&[("SWITCHBOARD_RETRY_DELAYS", "1s,2s"), ("CRM_SYNC_RETRY_DELAYS", "5s"), ("SWITCHBOARD_LOG_FORMAT", "json")]),
        )
        .unwrap();
        assert_eq!(c.bus.retry_delays, vec![Duration::from_secs(5)]);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = ServiceConfig::load("crm-sync", &env(&[("CRM_SYNC_HTTP_ADDR", "nope")])).unwrap_err();
        assert_eq!(e.var, "CRM_SYNC_HTTP_ADDR");
        let e = ServiceConfig::load("crm-sync", &env(&[("SWITCHBOARD_RETRY_DELAYS", "10 parsecs")])).unwrap_err();
        assert_eq!(e.var, "SWITCHBOARD_RETRY_DELAYS");
        let e = ServiceConfig::load("crm-sync", &env(&[("SWITCHBOARD_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(e.to_string().contains("SWITCHBOARD_LOG_FORMAT"), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_errors_and_debug() {
        let e = ServiceConfig::load("crm-sync", &env(&[("CRM_SYNC_DATABASE_URL", "mysql://u:hunter2@h/db")])).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = ServiceConfig::load("crm-sync", &env(&[("SWITCHBOARD_AMQP_URL", "http://u:hunter2@h")])).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let c = ServiceConfig::load(
            "crm-sync",
            &env(&[("CRM_SYNC_DATABASE_URL", "postgres://u:hunter2@h/db"), ("SWITCHBOARD_AMQP_URL", "amqp://u:hunter2@h")]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
    }
}
