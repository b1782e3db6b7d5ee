//! crm-sync's own settings (`CRM_SYNC_*`).

use std::time::Duration;

use sb_runtime::{ConfigError, ServiceConfig, config::Env};
use secrecy::SecretString;

#[derive(Debug, Clone)]
pub struct CrmConfig {
    /// HubSpot private-app token; unset = the embedded contact book.
    pub hubspot_token: Option<SecretString>,
    pub hubspot_base_url: String,
    /// Client-side request budget for HubSpot: (requests, per window).
    pub rate_limit: (u32, Duration),
    pub request_timeout: Duration,
    /// Lifecycle stages: before paying, paying, after access ended.
    pub stage_lead: String,
    pub stage_customer: String,
    pub stage_churned: String,
}

impl CrmConfig {
    pub fn load(base: &ServiceConfig) -> Result<Self, ConfigError> {
        Self::from(&base.env())
    }

    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let hubspot_token = env.own("HUBSPOT_TOKEN").map(|(_, v)| SecretString::from(v));
        let (var, hubspot_base_url) =
            env.own("HUBSPOT_BASE_URL").unwrap_or_else(|| (env.var_name("HUBSPOT_BASE_URL"), "https://api.hubapi.com".into()));
        if !(hubspot_base_url.starts_with("http://") || hubspot_base_url.starts_with("https://")) {
            return Err(ConfigError { var, reason: "must be an http:// or https:// URL".into() });
        }
        let rate_limit = match env.own("HUBSPOT_RATE_LIMIT") {
            None => (190, Duration::from_secs(10)),
            Some((var, v)) => parse_rate(&v).ok_or_else(|| ConfigError { var, reason: format!("{v:?} is not like 190/10s") })?,
        };
        let request_timeout = match env.own("HUBSPOT_TIMEOUT") {
            None => Duration::from_secs(10),
            Some((var, v)) => sb_bus::config::parse_duration(&v).map_err(|reason| ConfigError { var, reason })?,
        };
        let stage = |setting: &str, default: &str| -> Result<String, ConfigError> {
            match env.own(setting) {
                None => Ok(default.to_owned()),
                Some((_, v)) if v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Ok(v.to_ascii_lowercase()),
                Some((var, _)) => Err(ConfigError { var, reason: "a lifecycle stage id: letters, digits and _ only".into() }),
            }
        };
        Ok(Self {
            hubspot_token,
            hubspot_base_url: hubspot_base_url.trim_end_matches('/').to_owned(),
            rate_limit,
            request_timeout,
            stage_lead: stage("STAGE_LEAD", "lead")?,
            stage_customer: stage("STAGE_CUSTOMER", "customer")?,
            stage_churned: stage("STAGE_CHURNED", "other")?,
        })
    }
}

/// `190/10s` → (190, 10 s).
pub fn parse_rate(s: &str) -> Option<(u32, Duration)> {
    let (n, per) = s.split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let per = sb_bus::config::parse_duration(per.trim()).ok().filter(|d| !d.is_zero())?;
    Some((n, per))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<CrmConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        CrmConfig::from(&Env::with_lookup("crm-sync", move |k| map.get(k).cloned()))
    }

    #[test]
    fn defaults_and_errors() {
        let c = load(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.hubspot_token.is_none());
        assert_eq!(
            (c.rate_limit.0, c.stage_lead.as_str(), c.stage_customer.as_str(), c.stage_churned.as_str()),
            (190, "lead", "customer", "other")
        );
        assert_eq!(parse_rate("5/1s"), Some((5, Duration::from_secs(1))));
        assert!(load(&[("CRM_SYNC_HUBSPOT_RATE_LIMIT", "lots")]).is_err());
        assert!(load(&[("CRM_SYNC_HUBSPOT_BASE_URL", "api.hubapi.com")]).is_err());
        assert!(load(&[("CRM_SYNC_STAGE_CHURNED", "gone away")]).is_err());
        let c = load(&[("CRM_SYNC_HUBSPOT_TOKEN", "pat-na1-secret-value")]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{c:?}").contains("pat-na1-secret-value"));
    }
}
