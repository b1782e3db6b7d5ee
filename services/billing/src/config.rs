//! billing's own settings (`BILLING_*`) and the shared Stripe ones (`SWITCHBOARD_STRIPE_*`).

use std::time::Duration;

use sb_runtime::{ConfigError, ServiceConfig, config::Env};
use secrecy::SecretString;

use crate::domain::{DEFAULT_PLANS, Plans, RefundPolicy};

#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// Stripe secret key; unset = the embedded local checkout stands in for Stripe.
    pub stripe_api_key: Option<SecretString>,
    /// Stripe API base URL (a fake server in tests).
    pub stripe_api_base: String,
    /// Secrets the gateway verifies webhooks with; the local checkout signs with the first.
    pub webhook_secrets: Vec<SecretString>,
    pub plans: Plans,
    /// How long a past_due account keeps access after a failed payment.
    pub grace_period: Duration,
    pub refund_policy: RefundPolicy,
    /// How often expired grace periods are looked for.
    pub sweep_interval: Duration,
    /// Where browsers reach the portal (the gateway); checkout return URLs and local pages hang off it.
    pub public_url: String,
    /// Where the local checkout delivers its webhooks (the gateway's `/webhooks/stripe`).
    pub local_webhook_url: String,
}

impl BillingConfig {
    pub fn load(base: &ServiceConfig) -> Result<Self, ConfigError> {
        Self::from(&base.env())
    }

    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let stripe_api_key = env.shared("STRIPE_API_KEY").map(|(var, v)| {
            if v.starts_with("sk_") || v.starts_with("rk_") {
                Ok(SecretString::from(v))
            } else {
                Err(ConfigError { var, reason: "must be a Stripe secret or restricted key (sk_... or rk_...)".into() })
            }
        });
        let stripe_api_key = stripe_api_key.transpose()?;
        let stripe_api_base = url(env, "STRIPE_API_BASE", env.shared("STRIPE_API_BASE"), "https://api.stripe.com")?;
        let webhook_secrets = match env.shared("STRIPE_WEBHOOK_SECRET") {
            Some((_, v)) if !sb_stripe::parse_secrets(&v).is_empty() => sb_stripe::parse_secrets(&v),
            Some((var, _)) => return Err(ConfigError { var, reason: "lists no secret".into() }),
            None if stripe_api_key.is_some() => {
                return Err(ConfigError {
                    var: "SWITCHBOARD_STRIPE_WEBHOOK_SECRET".into(),
                    reason: "must be set when a Stripe API key is (the endpoint's signing secret, whsec_...)".into(),
                });
            }
            None => vec![SecretString::from(sb_stripe::DEV_WEBHOOK_SECRET)],
        };
        let plans = match env.own("PLANS") {
            Some((var, v)) => Plans::parse(&v).map_err(|reason| ConfigError { var, reason })?,
            None => Plans::parse(DEFAULT_PLANS).map_err(|reason| ConfigError { var: env.var_name("PLANS"), reason })?,
        };
        let grace_period = duration(env.own("GRACE_PERIOD"), Duration::from_secs(7 * 86_400))?;
        let sweep_interval = duration(env.own("GRACE_SWEEP_INTERVAL"), Duration::from_secs(60))?;
        let refund_policy = Env::parse(env.own("REFUND_POLICY"), RefundPolicy::Full, "full, any or never")?;
        let public_url = url(env, "PUBLIC_URL", env.shared("PUBLIC_URL"), "http://127.0.0.1:8080")?;
        let local_webhook_url = url(env, "LOCAL_WEBHOOK_URL", env.own("LOCAL_WEBHOOK_URL"), &format!("{public_url}/webhooks/stripe"))?;
        Ok(Self {
            stripe_api_key,
            stripe_api_base,
            webhook_secrets,
            plans,
            grace_period,
            refund_policy,
            sweep_interval,
            public_url,
            local_webhook_url,
        })
    }

    /// Whether the embedded local checkout stands in for Stripe.
    pub fn local(&self) -> bool {
        self.stripe_api_key.is_none()
    }
}

fn url(env: &Env, setting: &str, found: Option<(String, String)>, default: &str) -> Result<String, ConfigError> {
    let (var, v) = found.unwrap_or_else(|| (env.var_name(setting), default.to_owned()));
    if !(v.starts_with("http://") || v.starts_with("https://")) {
        return Err(ConfigError { var, reason: "must be an http:// or https:// URL".into() });
    }
    Ok(v.trim_end_matches('/').to_owned())
}

fn duration(found: Option<(String, String)>, default: Duration) -> Result<Duration, ConfigError> {
    match found {
        None => Ok(default),
        Some((var, v)) => sb_bus::config::parse_duration(&v).map_err(|e| ConfigError { var, reason: e }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<BillingConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        BillingConfig::from(&Env::with_lookup("billing", move |k| map.get(k).cloned()))
    }

    #[test]
    fn defaults_are_the_embedded_local_checkout() {
        let c = load(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.local());
        assert_eq!(c.webhook_secrets.len(), 1);
        assert_eq!(c.local_webhook_url, "http://127.0.0.1:8080/webhooks/stripe");
        assert_eq!(c.plans.default_plan().name, "starter");
    }

    #[test]
    fn bad_values_name_the_variable_and_hide_secrets() {
        let e = load(&[("SWITCHBOARD_STRIPE_API_KEY", "pk_live_wrongkind")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("SWITCHBOARD_STRIPE_API_KEY") && !e.contains("pk_live_wrongkind"), "{e}");
        let e = load(&[("SWITCHBOARD_STRIPE_API_KEY", "sk_test_123")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("SWITCHBOARD_STRIPE_WEBHOOK_SECRET"), "a real key needs a real webhook secret: {e}");
        assert!(load(&[("BILLING_PLANS", "nope")]).is_err());
        assert!(load(&[("BILLING_GRACE_PERIOD", "soon")]).is_err());
        assert!(load(&[("BILLING_REFUND_POLICY", "sometimes")]).is_err());
        let ok = load(&[("SWITCHBOARD_STRIPE_API_KEY", "sk_test_123"), ("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.webhook_secrets.iter().map(|s| s.expose_secret().to_owned()).collect::<Vec<_>>(), ["whsec_a", "whsec_b"]);
        assert!(!format!("{ok:?}").contains("sk_test_123"));
    }
}
