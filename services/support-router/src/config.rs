//! support-router's own settings (`SUPPORT_ROUTER_*`), on top of the common service configuration.
//! Every one has a default; a bad value stops the service at start, naming the variable.

use std::time::Duration;

use sb_runtime::{ConfigError, ServiceConfig, config::Env};

use crate::domain::{
    routing::{self, Rules, SignalWords, TierMap, TierPriorities},
    sla::{BusinessHours, SlaPolicy},
};

#[derive(Debug, Clone)]
pub struct SupportConfig {
    /// billing's gRPC address, asked for the plan of accounts no `billing.access.changed` told about.
    pub billing_url: String,
    /// Longest one call to billing may take.
    pub billing_timeout: Duration,
    /// How often accounts with tickets of an unknown tier are looked for (and billing asked).
    pub plan_refresh_interval: Duration,
    pub rules: Rules,
    pub sla: SlaPolicy,
    pub hours: BusinessHours,
    /// How often running SLA clocks past due are looked for (and the backlog gauges refreshed).
    pub sla_sweep_interval: Duration,
    /// Contact-form tickets allowed per client address, and per email, within `contact_window`.
    pub contact_max_per_address: i32,
    pub contact_max_per_email: i32,
    pub contact_window: Duration,
    /// Without an idempotency key, the same requester's same subject and body within this window
    /// is a retried request (the first ticket is answered).
    pub duplicate_window: Duration,
    /// How long an `Idempotency-Key` answers with its first ticket (then it is forgotten).
    pub idempotency_key_ttl: Duration,
}

fn invalid(var: String) -> impl FnOnce(String) -> ConfigError {
    move |reason| ConfigError { var, reason }
}

/// A duration setting (`30s`, `10m`, `2h`).
fn duration(found: Option<(String, String)>, default: Duration) -> Result<Duration, ConfigError> {
    match found {
        None => Ok(default),
        Some((var, v)) => sb_bus::config::parse_duration(&v).map_err(invalid(var)),
    }
}

/// A setting parsed by `parse`, or `default` (itself in that syntax) when unset.
fn parsed<T>(
    env: &Env,
    found: Option<(String, String)>,
    setting: &str,
    default: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let (var, v) = found.unwrap_or_else(|| (env.var_name(setting), default.to_owned()));
    parse(&v).map_err(invalid(var))
}

fn phrases(found: Option<(String, String)>, default: Vec<String>) -> Result<Vec<String>, ConfigError> {
    match found {
        None => Ok(default),
        Some((var, v)) => routing::parse_phrases(&v).map_err(invalid(var)),
    }
}

fn at_least_one(found: Option<(String, String)>, default: i32) -> Result<i32, ConfigError> {
    let var = found.as_ref().map(|(var, _)| var.clone()).unwrap_or_default();
    match Env::parse(found, default, "a whole number")? {
        n if n < 1 => Err(ConfigError { var, reason: "must be at least 1".into() }),
        n => Ok(n),
    }
}

impl SupportConfig {
    pub fn load(base: &ServiceConfig) -> Result<Self, ConfigError> {
        Self::from(&base.env())
    }

    /// With every setting at its default.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from(&Env::with_lookup(crate::SERVICE, |_| None))
    }

    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let billing_url = parsed(env, env.own("BILLING_URL"), "BILLING_URL", "http://127.0.0.1:50052", |v| {
            if v.starts_with("http://") || v.starts_with("https://") {
                Ok(v.trim_end_matches('/').to_owned())
            } else {
                Err("must be an http:// or https:// URL".into())
            }
        })?;
        let defaults = SignalWords::default();
        let words = SignalWords {
            login: phrases(env.own("SIGNALS_LOGIN"), defaults.login)?,
            payment: phrases(env.own("SIGNALS_PAYMENT"), defaults.payment)?,
            outage: phrases(env.own("SIGNALS_OUTAGE"), defaults.outage)?,
            security: phrases(env.own("SIGNALS_SECURITY"), defaults.security)?,
        };
        let rules = Rules {
            tiers: parsed(env, env.own("TIERS"), "TIERS", routing::DEFAULT_TIERS, TierMap::parse)?,
            base: parsed(env, env.own("TIER_PRIORITIES"), "TIER_PRIORITIES", "", TierPriorities::parse)?,
            words,
        };
        Ok(Self {
            billing_url,
            billing_timeout: duration(env.own("BILLING_TIMEOUT"), Duration::from_secs(2))?,
            plan_refresh_interval: duration(env.own("PLAN_REFRESH_INTERVAL"), Duration::from_secs(10))?,
            rules,
            sla: parsed(env, env.own("SLA"), "SLA", crate::domain::sla::DEFAULT_SLA, SlaPolicy::parse)?,
            hours: parsed(env, env.own("BUSINESS_HOURS"), "BUSINESS_HOURS", "24/7", BusinessHours::parse)?,
            sla_sweep_interval: duration(env.own("SLA_SWEEP_INTERVAL"), Duration::from_secs(30))?,
            contact_max_per_address: at_least_one(env.own("CONTACT_MAX_PER_ADDRESS"), 20)?,
            contact_max_per_email: at_least_one(env.own("CONTACT_MAX_PER_EMAIL"), 5)?,
            contact_window: duration(env.own("CONTACT_WINDOW"), Duration::from_secs(3600))?,
            duplicate_window: duration(env.own("DUPLICATE_WINDOW"), Duration::from_secs(600))?,
            idempotency_key_ttl: duration(env.own("IDEMPOTENCY_KEY_TTL"), Duration::from_secs(24 * 3600))?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use sb_types::TicketPriority;

    use super::*;
    use crate::domain::Tier;

    fn load(vars: &[(&str, &str)]) -> Result<SupportConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        SupportConfig::from(&Env::with_lookup("support-router", move |k| map.get(k).cloned()))
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.billing_url, "http://127.0.0.1:50052");
        assert_eq!(c.hours, BusinessHours::always());
        assert_eq!(c.sla, SlaPolicy::default());
        assert_eq!(c.rules, Rules::default());
        assert_eq!((c.contact_max_per_address, c.contact_max_per_email, c.contact_window), (20, 5, Duration::from_secs(3600)));
        assert_eq!((c.sla_sweep_interval, c.duplicate_window), (Duration::from_secs(30), Duration::from_secs(600)));
    }

    #[test]
    fn settings_override_and_bad_values_name_the_variable() {
        let c = load(&[
            ("SUPPORT_ROUTER_TIERS", "team:priority"),
            ("SUPPORT_ROUTER_TIER_PRIORITIES", "free:normal"),
            ("SUPPORT_ROUTER_SIGNALS_LOGIN", "blocked"),
            ("SUPPORT_ROUTER_BUSINESS_HOURS", "mon-fri 09:00-17:00"),
        ])
        .unwrap();
        assert_eq!(c.rules.base.of(Tier::Free), TicketPriority::Normal);
        assert_eq!(c.rules.words.login, ["blocked"]);
        assert_ne!(c.hours, BusinessHours::always());
        for (var, value) in [
            ("SUPPORT_ROUTER_BILLING_URL", "127.0.0.1:50052"),
            ("SUPPORT_ROUTER_TIERS", "pro"),
            ("SUPPORT_ROUTER_TIER_PRIORITIES", "free:asap"),
            ("SUPPORT_ROUTER_SIGNALS_SECURITY", ","),
            ("SUPPORT_ROUTER_SLA", "free:1h"),
            ("SUPPORT_ROUTER_BUSINESS_HOURS", "weekdays"),
            ("SUPPORT_ROUTER_SLA_SWEEP_INTERVAL", "often"),
            ("SUPPORT_ROUTER_CONTACT_MAX_PER_EMAIL", "0"),
        ] {
            let e = load(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{e}");
        }
    }
}
