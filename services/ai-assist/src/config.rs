//! ai-assist's own settings (`AI_ASSIST_*`), on top of the common service configuration. Every one
//! has a default; a bad value stops the service at start, naming the variable. The API key is a
//! secret: kept in a `SecretString`, never logged or echoed.

use std::time::Duration;

use sb_runtime::{ConfigError, ServiceConfig, config::Env};
use secrecy::SecretString;

use crate::domain::{
    guard::{ReplyPolicy, Rules},
    prompt::HelpArticle,
};

/// The help articles that ship with ai-assist (`help/articles.json`).
pub const DEFAULT_ARTICLES: &str = include_str!("../help/articles.json");

/// An OpenAI-compatible chat-completions endpoint.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// e.g. `https://api.openai.com/v1` (the default) or a local server's `/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<SecretString>,
    /// Longest one call may take (then it is retried through the ladder).
    pub timeout: Duration,
    /// Most completion tokens one draft may use.
    pub max_tokens: u32,
}

#[derive(Debug, Clone)]
pub struct AiConfig {
    /// `None`: the local drafter (neither `AI_ASSIST_OPENAI_API_KEY` nor `AI_ASSIST_OPENAI_BASE_URL` set).
    pub model: Option<ModelSettings>,
    /// Tokens (prompt + completion) one account may use per UTC day; then drafts fail as `budget`.
    pub daily_token_budget: i64,
    pub articles: Vec<HelpArticle>,
    pub policy: ReplyPolicy,
    pub rules: Rules,
}

fn invalid(var: String) -> impl FnOnce(String) -> ConfigError {
    move |reason| ConfigError { var, reason }
}

fn list(found: Option<(String, String)>, default: Vec<String>) -> Result<Vec<String>, ConfigError> {
    match found {
        None => Ok(default),
        Some((var, v)) => {
            let items: Vec<String> = v.split(',').map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty()).collect();
            if items.is_empty() { Err(ConfigError { var, reason: "must list at least one value".into() }) } else { Ok(items) }
        }
    }
}

/// Reads and checks the help articles (every link must be https and on an allowed domain).
pub fn parse_articles(json: &str) -> Result<Vec<HelpArticle>, String> {
    let articles: Vec<HelpArticle> = serde_json::from_str(json).map_err(|e| format!("not a JSON list of help articles: {e}"))?;
    for a in &articles {
        if a.title.trim().is_empty() || a.body.trim().is_empty() {
            return Err(format!("the article at {} needs a title and a body", a.url));
        }
        if !a.url.starts_with("https://") {
            return Err(format!("the article \"{}\" must link with https://", a.title));
        }
    }
    Ok(articles)
}

impl AiConfig {
    pub fn load(base: &ServiceConfig) -> Result<Self, ConfigError> {
        Self::from(&base.env())
    }

    /// With every setting at its default (the local drafter).
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from(&Env::with_lookup(crate::SERVICE, |_| None))
    }

    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let api_key = env.own("OPENAI_API_KEY").map(|(_, v)| SecretString::from(v));
        let base_url = match env.own("OPENAI_BASE_URL") {
            None => None,
            Some((var, v)) if v.starts_with("http://") || v.starts_with("https://") => Some((var, v.trim_end_matches('/').to_owned())),
            Some((var, _)) => return Err(ConfigError { var, reason: "must be an http:// or https:// URL".into() }),
        };
        let timeout = match env.own("OPENAI_TIMEOUT") {
            None => Duration::from_secs(30),
            Some((var, v)) => sb_bus::config::parse_duration(&v).map_err(invalid(var))?,
        };
        let max_tokens: u32 = Env::parse(env.own("MAX_TOKENS"), 600, "a whole number of tokens")?;
        let model = if api_key.is_some() || base_url.is_some() {
            Some(ModelSettings {
                base_url: base_url.map_or_else(|| "https://api.openai.com/v1".to_owned(), |(_, u)| u),
                model: env.own("OPENAI_MODEL").map_or_else(|| "gpt-4o-mini".to_owned(), |(_, m)| m),
                api_key,
                timeout,
                max_tokens,
            })
        } else {
            None
        };
        let daily_token_budget: i64 = Env::parse(env.own("DAILY_TOKEN_BUDGET"), 50_000, "a whole number of tokens")?;
        let articles = match env.own("HELP_ARTICLES") {
            None => parse_articles(DEFAULT_ARTICLES).map_err(invalid(env.var_name("HELP_ARTICLES")))?,
            Some((var, path)) => {
                let json = std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError { var: var.clone(), reason: format!("cannot read {path}: {e}") })?;
                parse_articles(&json).map_err(invalid(var))?
            }
        };
        let defaults = ReplyPolicy::default();
        let mut link_domains = list(env.own("LINK_DOMAINS"), defaults.link_domains)?;
        // The articles' own hosts are always allowed.
        for a in &articles {
            if let Some(host) = a.url.split("://").nth(1).and_then(|r| r.split('/').next())
                && !link_domains.iter().any(|d| d == host)
            {
                link_domains.push(host.to_lowercase());
            }
        }
        let policy = ReplyPolicy {
            statement: env.own("REPLY_POLICY").map_or(defaults.statement, |(_, v)| v),
            link_domains,
            allowed_emails: list(env.own("SUPPORT_EMAILS"), defaults.allowed_emails)?,
            forbidden: defaults.forbidden,
            max_reply_chars: defaults.max_reply_chars,
        };
        let rules = Rules::compile(&policy).map_err(invalid(env.var_name("REPLY_POLICY")))?;
        Ok(Self { model, daily_token_budget, articles, policy, rules })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<AiConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        AiConfig::from(&Env::with_lookup("ai-assist", move |k| map.get(k).cloned()))
    }

    #[test]
    fn defaults_are_the_local_drafter_with_the_shipped_articles() {
        let c = load(&[]).unwrap();
        assert!(c.model.is_none());
        assert!(c.articles.len() >= 5);
        assert_eq!(c.daily_token_budget, 50_000);
        assert!(c.policy.link_domains.contains(&"help.switchboard.example".to_owned()));
    }

    #[test]
    fn a_key_or_a_base_url_selects_the_model() {
        let c = load(&[("AI_ASSIST_OPENAI_API_KEY", "sk-test-abcdefghijklmnop")]).unwrap();
        let m = c.model.unwrap();
        assert_eq!((m.base_url.as_str(), m.model.as_str()), ("https://api.openai.com/v1", "gpt-4o-mini"));
        assert_eq!(m.api_key.unwrap().expose_secret(), "sk-test-abcdefghijklmnop");
        let c = load(&[("AI_ASSIST_OPENAI_BASE_URL", "http://127.0.0.1:9/v1/"), ("AI_ASSIST_OPENAI_MODEL", "llama")]).unwrap();
        let m = c.model.unwrap();
        assert_eq!((m.base_url.as_str(), m.model.as_str()), ("http://127.0.0.1:9/v1", "llama"));
        assert!(m.api_key.is_none());
    }

    #[test]
    fn bad_values_name_the_variable_and_never_echo_the_key() {
        for (var, value) in [
            ("AI_ASSIST_OPENAI_BASE_URL", "api.openai.com"),
            ("AI_ASSIST_OPENAI_TIMEOUT", "soon"),
            ("AI_ASSIST_MAX_TOKENS", "-1"),
            ("AI_ASSIST_DAILY_TOKEN_BUDGET", "lots"),
            ("AI_ASSIST_HELP_ARTICLES", "/nonexistent/articles.json"),
            ("AI_ASSIST_LINK_DOMAINS", ","),
        ] {
            let e = load(&[(var, value), ("AI_ASSIST_OPENAI_API_KEY", "sk-secret-canary-1234567890")]).unwrap_err();
            assert_eq!(e.var, var, "{e}");
            assert!(!e.to_string().contains("canary"), "{e}");
        }
        assert!(format!("{:?}", load(&[("AI_ASSIST_OPENAI_API_KEY", "sk-secret-canary-1234567890")]).unwrap()).find("canary").is_none());
    }
}
