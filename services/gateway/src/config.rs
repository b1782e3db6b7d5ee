//! The gateway's own settings (`GATEWAY_*`).

use sb_runtime::{ConfigError, ServiceConfig, config::Env};

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// identity's gRPC address.
    pub identity_url: String,
    /// Browser origins allowed to call the API with credentials (CORS).
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Mark the session cookie `Secure` (serve over HTTPS).
    pub secure_cookies: bool,
}

impl GatewayConfig {
    pub fn load(base: &ServiceConfig) -> Result<Self, ConfigError> {
        Self::from(&base.env())
    }

    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let identity_url = env.own("IDENTITY_URL").map_or_else(|| "http://127.0.0.1:50051".to_owned(), |(_, v)| v);
        if !(identity_url.starts_with("http://") || identity_url.starts_with("https://")) {
            return Err(ConfigError { var: env.var_name("IDENTITY_URL"), reason: "must be an http:// or https:// URL".into() });
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
        Ok(Self { identity_url, cors_origins, body_limit, trust_forwarded_for, secure_cookies })
    }
}
