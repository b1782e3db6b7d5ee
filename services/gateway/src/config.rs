//! The gateway's own settings (`GATEWAY_*`).

use sb_runtime::{ConfigError, ServiceConfig, config::Env};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// identity's gRPC address.
    pub identity_url: String,
    /// billing's gRPC address.
    pub billing_url: String,
    /// crm-sync's gRPC address.
    pub crm_sync_url: String,
    /// support-router's gRPC address.
    pub support_url: String,
    /// ai-assist's gRPC address.
    pub ai_url: String,
    /// Browser origins allowed to call the API with credentials (CORS).
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Mark the session cookie `Secure` (serve over HTTPS).
    pub secure_cookies: bool,
    /// Stripe webhook signing secrets (several during a rotation); `SecretString` keeps them out of
    /// `Debug`.
    pub stripe_webhook_secrets: Vec<SecretString>,
    /// The public local-development secret is among them (always so when none is configured):
    /// warned about at start, and live-mode events must verify with another secret.
    pub dev_webhook_secret: bool,
    /// Largest accepted Stripe webhook body, in bytes.
    pub stripe_webhook_max_bytes: usize,
    /// The RabbitMQ management dashboard, linked from the operations view.
    pub rabbitmq_dashboard_url: String,
    /// How long a `/v1/me` answer is kept for its token (zero: not kept); at most 1 s, the
    /// bound on how late a revoked session may still be answered (see `me_cache`).
    pub me_cache_ttl: std::time::Duration,
}

impl GatewayConfig {
    pub fn load(base: &ServiceConfig) -> Result<Self, ConfigError> {
        Self::from(&base.env())
    }

    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let grpc_url = |setting: &str, default: &str| {
            let url = env.own(setting).map_or_else(|| default.to_owned(), |(_, v)| v);
            if url.starts_with("http://") || url.starts_with("https://") {
                Ok(url)
            } else {
                Err(ConfigError { var: env.var_name(setting), reason: "must be an http:// or https:// URL".into() })
            }
        };
        let identity_url = grpc_url("IDENTITY_URL", "http://127.0.0.1:50051")?;
        let billing_url = grpc_url("BILLING_URL", "http://127.0.0.1:50052")?;
        let crm_sync_url = grpc_url("CRM_SYNC_URL", "http://127.0.0.1:50053")?;
        let support_url = grpc_url("SUPPORT_URL", "http://127.0.0.1:50054")?;
        let ai_url = grpc_url("AI_URL", "http://127.0.0.1:50055")?;
        let rabbitmq_dashboard_url = env.own("RABBITMQ_DASHBOARD_URL").map_or_else(|| "http://127.0.0.1:15672".to_owned(), |(_, v)| v);
        if !(rabbitmq_dashboard_url.starts_with("http://") || rabbitmq_dashboard_url.starts_with("https://")) {
            return Err(ConfigError { var: env.var_name("RABBITMQ_DASHBOARD_URL"), reason: "must be an http:// or https:// URL".into() });
        }
        let cors_origins = match env.own("CORS_ORIGINS") {
            Some((var, v)) => {
                let list: Vec<String> = v.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect();
                if let Some(bad) = list.iter().find(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.contains('*')) {
                    return Err(ConfigError {
                        var,
                        reason: format!("{bad:?} is not an origin like https://portal.example.com (no wildcards)"),
                    });
                }
                list
            }
            None => vec!["http://localhost:8080".into(), "http://127.0.0.1:8080".into()],
        };
        let body_limit = Env::parse(env.own("BODY_LIMIT_BYTES"), 64 * 1024, "a number of bytes")?;
        let trust_forwarded_for = Env::parse(env.own("TRUST_FORWARDED_FOR"), false, "true or false")?;
        let secure_cookies = Env::parse(env.own("SECURE_COOKIES"), false, "true or false")?;
        let stripe_webhook_secrets = match env.shared("STRIPE_WEBHOOK_SECRET") {
            Some((var, v)) => {
                let list = sb_stripe::parse_secrets(&v);
                if list.is_empty() {
                    return Err(ConfigError { var, reason: "must hold at least one signing secret (comma-separated)".into() });
                }
                list
            }
            None => sb_stripe::parse_secrets(sb_stripe::DEV_WEBHOOK_SECRET),
        };
        let dev_webhook_secret = stripe_webhook_secrets.iter().any(|s| s.expose_secret() == sb_stripe::DEV_WEBHOOK_SECRET);
        let stripe_webhook_max_bytes = Env::parse(env.own("STRIPE_WEBHOOK_MAX_BYTES"), 512 * 1024, "a number of bytes")?;
        if stripe_webhook_max_bytes == 0 {
            return Err(ConfigError { var: env.var_name("STRIPE_WEBHOOK_MAX_BYTES"), reason: "must be at least 1".into() });
        }
        let me_cache_ttl = match env.own("ME_CACHE_TTL") {
            Some((_, v)) if matches!(v.trim(), "0" | "0s" | "0ms" | "off") => std::time::Duration::ZERO,
            Some((var, v)) => {
                let ttl = sb_bus::config::parse_duration(&v).map_err(|reason| ConfigError { var: var.clone(), reason })?;
                if ttl > std::time::Duration::from_secs(1) {
                    return Err(ConfigError {
                        var,
                        reason: format!(
                            "{v:?} is too long: at most 1s, so a revoked session is refused within a second (0 turns the cache off)"
                        ),
                    });
                }
                ttl
            }
            None => std::time::Duration::from_secs(1),
        };
        Ok(Self {
            identity_url,
            billing_url,
            crm_sync_url,
            support_url,
            ai_url,
            cors_origins,
            body_limit,
            trust_forwarded_for,
            secure_cookies,
            stripe_webhook_secrets,
            dev_webhook_secret,
            stripe_webhook_max_bytes,
            rabbitmq_dashboard_url,
            me_cache_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        GatewayConfig::from(&Env::with_lookup("gateway", move |k| map.get(k).cloned()))
    }

    fn exposed(c: &GatewayConfig) -> Vec<&str> {
        c.stripe_webhook_secrets.iter().map(|s| s.expose_secret()).collect()
    }

    #[test]
    fn the_me_cache_keeps_answers_a_second_at_most() {
        assert_eq!(load(&[]).unwrap().me_cache_ttl, std::time::Duration::from_secs(1));
        assert_eq!(load(&[("GATEWAY_ME_CACHE_TTL", "250ms")]).unwrap().me_cache_ttl, std::time::Duration::from_millis(250));
        assert!(load(&[("GATEWAY_ME_CACHE_TTL", "0s")]).unwrap().me_cache_ttl.is_zero());
        let e = load(&[("GATEWAY_ME_CACHE_TTL", "5s")]).unwrap_err();
        assert_eq!(e.var, "GATEWAY_ME_CACHE_TTL");
        assert!(e.reason.contains("at most 1s"), "{}", e.reason);
        assert_eq!(load(&[("GATEWAY_ME_CACHE_TTL", "soon")]).unwrap_err().var, "GATEWAY_ME_CACHE_TTL");
    }

    #[test]
    fn without_a_webhook_secret_the_public_dev_secret_is_used_and_flagged() {
        let c = load(&[]).unwrap();
        assert_eq!(exposed(&c), [sb_stripe::DEV_WEBHOOK_SECRET]);
        assert!(c.dev_webhook_secret);
        assert_eq!(c.stripe_webhook_max_bytes, 524_288);
    }

    #[test]
    fn webhook_secrets_are_shared_comma_separated_and_overridable_for_the_gateway() {
        let c = load(&[("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b")]).unwrap();
        assert_eq!(exposed(&c), ["whsec_a", "whsec_b"]);
        assert!(!c.dev_webhook_secret);
        let c = load(&[("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", "whsec_a"), ("GATEWAY_STRIPE_WEBHOOK_SECRET", "whsec_gw")]).unwrap();
        assert_eq!(exposed(&c), ["whsec_gw"]);
        let c = load(&[("GATEWAY_STRIPE_WEBHOOK_SECRET", &format!("whsec_real,{}", sb_stripe::DEV_WEBHOOK_SECRET))]).unwrap();
        assert!(c.dev_webhook_secret, "the public secret is flagged even beside a real one");
    }

    #[test]
    fn service_addresses_default_to_the_local_ports_and_must_be_urls() {
        let c = load(&[]).unwrap();
        assert_eq!(
            (c.identity_url.as_str(), c.billing_url.as_str(), c.crm_sync_url.as_str()),
            ("http://127.0.0.1:50051", "http://127.0.0.1:50052", "http://127.0.0.1:50053")
        );
        let c = load(&[("GATEWAY_CRM_SYNC_URL", "http://crm-sync:50053")]).unwrap();
        assert_eq!(c.crm_sync_url, "http://crm-sync:50053");
        let e = load(&[("GATEWAY_CRM_SYNC_URL", "crm-sync:50053")]).unwrap_err();
        assert_eq!(e.var, "GATEWAY_CRM_SYNC_URL");
    }

    #[test]
    fn bad_webhook_settings_name_the_variable_and_never_echo_the_secret() {
        let e = load(&[("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", " , ,")]).unwrap_err();
        assert_eq!(e.var, "SWITCHBOARD_STRIPE_WEBHOOK_SECRET");
        let e = load(&[("GATEWAY_STRIPE_WEBHOOK_MAX_BYTES", "lots")]).unwrap_err();
        assert_eq!(e.var, "GATEWAY_STRIPE_WEBHOOK_MAX_BYTES");
        let e = load(&[("GATEWAY_STRIPE_WEBHOOK_MAX_BYTES", "0")]).unwrap_err();
        assert_eq!(e.var, "GATEWAY_STRIPE_WEBHOOK_MAX_BYTES");
        let c = load(&[("GATEWAY_STRIPE_WEBHOOK_SECRET", "whsec_canary_5b7e"), ("GATEWAY_STRIPE_WEBHOOK_MAX_BYTES", "1000")]).unwrap();
        assert_eq!(c.stripe_webhook_max_bytes, 1000);
        assert!(!format!("{c:?}").contains("whsec_canary_5b7e"), "Debug must not print the secret");
    }
}
