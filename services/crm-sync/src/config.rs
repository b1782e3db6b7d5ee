//! crm-sync's own settings (`CRM_SYNC_*`).

use std::time::Duration;

use sb_runtime::{ConfigError, ServiceConfig, config::Env};
use secrecy::SecretString;

use crate::{
    domain::{LifecycleStage, Stages},
    hubspot::{DEFAULT_BASE_URL, RateBudget},
};

#[derive(Debug, Clone)]
pub struct CrmConfig {
    /// HubSpot private-app token; unset = the embedded contact book.
    pub hubspot_token: Option<SecretString>,
    pub hubspot_base_url: String,
    /// Client-side request budget for HubSpot.
    pub rate_limit: RateBudget,
    pub request_timeout: Duration,
    /// The CRM's lifecycle stage ids: before paying, paying, after access ended.
    pub stages: Stages,
}

impl CrmConfig {
    pub fn load(base: &ServiceConfig) -> Result<Self, ConfigError> {
        Self::from(&base.env())
    }

    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let hubspot_token = env.own("HUBSPOT_TOKEN").map(|(_, v)| SecretString::from(v));
        let (var, hubspot_base_url) =
            env.own("HUBSPOT_BASE_URL").unwrap_or_else(|| (env.var_name("HUBSPOT_BASE_URL"), DEFAULT_BASE_URL.into()));
        if !(hubspot_base_url.starts_with("http://") || hubspot_base_url.starts_with("https://")) {
            return Err(ConfigError { var, reason: "must be an http:// or https:// URL".into() });
        }
        let rate_limit = match env.own("HUBSPOT_RATE_LIMIT") {
            None => RateBudget::default(),
            Some((var, v)) => RateBudget::parse(&v).map_err(|reason| ConfigError { var, reason })?,
        };
        let request_timeout = match env.own("HUBSPOT_TIMEOUT") {
            None => Duration::from_secs(10),
            Some((var, v)) => sb_bus::config::parse_duration(&v).map_err(|reason| ConfigError { var, reason })?,
        };
        let defaults = Stages::default();
        let stage = |setting: &str, default: LifecycleStage| -> Result<LifecycleStage, ConfigError> {
            match env.own(setting) {
                None => Ok(default),
                Some((var, v)) => LifecycleStage::parse(&v).map_err(|e| ConfigError { var, reason: e.message }),
            }
        };
        Ok(Self {
            hubspot_token,
            hubspot_base_url: hubspot_base_url.trim_end_matches('/').to_owned(),
            rate_limit,
            request_timeout,
            stages: Stages {
                lead: stage("STAGE_LEAD", defaults.lead)?,
                customer: stage("STAGE_CUSTOMER", defaults.customer)?,
                churned: stage("STAGE_CHURNED", defaults.churned)?,
            },
        })
    }
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
        assert_eq!(c.rate_limit, RateBudget::new(190, Duration::from_secs(10)));
        assert_eq!(c.stages, Stages::default());
        let c = load(&[("CRM_SYNC_HUBSPOT_RATE_LIMIT", "5/1s"), ("CRM_SYNC_STAGE_CHURNED", "Churned")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.rate_limit, c.stages.churned.as_str()), (RateBudget::new(5, Duration::from_secs(1)), "churned"));
        assert!(load(&[("CRM_SYNC_HUBSPOT_RATE_LIMIT", "lots")]).is_err());
        assert!(load(&[("CRM_SYNC_HUBSPOT_BASE_URL", "api.hubapi.com")]).is_err());
        assert!(load(&[("CRM_SYNC_STAGE_CHURNED", "gone away")]).is_err());
        let c = load(&[("CRM_SYNC_HUBSPOT_TOKEN", "pat-na1-secret-value")]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{c:?}").contains("pat-na1-secret-value"));
    }
}
