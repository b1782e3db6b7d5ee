//! Identity's own settings (`IDENTITY_*`), on top of the common service configuration.

use std::time::Duration;

use sb_bus::config::parse_duration;
use sb_runtime::{ConfigError, ServiceConfig, config::Env};

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Lifetime of a login session.
    pub session_ttl: Duration,
    /// Longest an admin may impersonate a user in one session.
    pub impersonation_max: Duration,
    /// Failed logins allowed per email within `login_window` before it is blocked for the window.
    pub login_max_failures: i32,
    /// Failed logins allowed per client address within `login_window`.
    pub login_ip_max_failures: i32,
    pub login_window: Duration,
    /// `smtp://user:pass@host:port`; unset means the embedded mailbox.
    pub smtp: Option<sb_mail::SmtpConfig>,
    pub mail_from: String,
}

fn duration(env: &Env, setting: &str, default: &str) -> Result<Duration, ConfigError> {
    match env.own(setting) {
        Some((var, v)) => parse_duration(&v).map_err(|reason| ConfigError { var, reason }),
        None => Ok(parse_duration(default).unwrap_or_default()),
    }
}

fn at_least_two(var: String, v: i32) -> Result<i32, ConfigError> {
    if v < 2 { Err(ConfigError { var, reason: "must be at least 2".into() }) } else { Ok(v) }
}

impl IdentityConfig {
    pub fn load(base: &ServiceConfig) -> Result<Self, ConfigError> {
        Self::from(&base.env())
    }

    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let login_max_failures =
            at_least_two(env.var_name("LOGIN_MAX_FAILURES"), Env::parse(env.own("LOGIN_MAX_FAILURES"), 5, "a whole number")?)?;
        let login_ip_max_failures =
            at_least_two(env.var_name("LOGIN_IP_MAX_FAILURES"), Env::parse(env.own("LOGIN_IP_MAX_FAILURES"), 50, "a whole number")?)?;
        let mail_from = env.own("MAIL_FROM").map_or_else(|| "Switchboard <no-reply@switchboard.local>".to_owned(), |(_, v)| v);
        let smtp = match env.own("SMTP_URL") {
            Some((var, v)) => Some(
                sb_mail::SmtpConfig::from_url(&v).map_err(|e| ConfigError { var, reason: e.to_string() })?.with_from(mail_from.clone()),
            ),
            None => None,
        };
        Ok(Self {
            session_ttl: duration(env, "SESSION_TTL", "12h")?,
            impersonation_max: duration(env, "IMPERSONATION_MAX", "1h")?,
            login_max_failures,
            login_ip_max_failures,
            login_window: duration(env, "LOGIN_WINDOW", "15m")?,
            smtp,
            mail_from,
        })
    }
}
