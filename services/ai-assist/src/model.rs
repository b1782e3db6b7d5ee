//! The model behind a draft: an OpenAI-compatible chat-completions server through async-openai, or
//! the local drafter. The adapter makes one attempt per call — no retries inside the client: a
//! 429 (with its Retry-After), a 5xx, a timeout or an unreadable answer is a transient error for
//! the bus's retry ladder; any other refusal (a bad key, an unknown model) is permanent.
//!
//! Requests ask for a JSON-schema structured answer (`summary`, `category`, `urgency`, `reply`).

use std::{sync::Arc, task::Poll, time::Duration};

use async_openai::{
    Client,
    config::OpenAIConfig,
    error::OpenAIError,
    middleware::{HttpRequestFactory, ReqwestService},
    types::chat::{
        ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage, CreateChatCompletionRequest, ResponseFormat,
        ResponseFormatJsonSchema,
    },
};
use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::{
    config::ModelSettings,
    domain::{Proposal, Usage, prompt::Prompt},
};

/// Why a call gave no proposal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Worth retrying: rate limited (no sooner than `retry_after`), the server failing, slow or
    /// unreachable, or an answer that did not parse.
    #[error("model unavailable: {reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// Retrying the same request cannot help (bad key, unknown model, quota used up).
    #[error("model refused: {0}")]
    Permanent(String),
}

/// One answer: the proposal, the tokens it cost, and the raw content (for the audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub proposal: Proposal,
    pub usage: Usage,
    pub raw: String,
}

/// A non-success HTTP answer, read by [`OneAttempt`] before async-openai sees it (it would drop
/// the Retry-After header).
#[derive(Debug, thiserror::Error)]
#[error("{status} {message}")]
struct HttpRefusal {
    status: u16,
    retry_after: Option<Duration>,
    /// OpenAI's `error.message` (or the start of the body).
    message: String,
    /// OpenAI's `error.code` / `error.type` (`rate_limit_exceeded`, `insufficient_quota`, ...).
    code: String,
}

/// A tower service that sends once and turns every non-success answer into [`HttpRefusal`].
#[derive(Clone)]
struct OneAttempt(ReqwestService);

impl tower::Service<HttpRequestFactory> for OneAttempt {
    type Response = reqwest13::Response;
    type Error = OpenAIError;
    type Future = BoxFuture<'static, Result<reqwest13::Response, OpenAIError>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), OpenAIError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequestFactory) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let status = res.status();
            if status.is_success() {
                return Ok(res);
            }
            let retry_after = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(3600.0)));
            let body = res.text().await.unwrap_or_default();
            let parsed: Option<serde_json::Value> = serde_json::from_str(&body).ok();
            let err = parsed.as_ref().and_then(|v| v.get("error"));
            let text = |k: &str| err.and_then(|e| e.get(k)).and_then(|v| v.as_str()).map(str::to_owned);
            let message = text("message").unwrap_or_else(|| crate::domain::clip(body.trim(), 200));
            let code = text("code").or_else(|| text("type")).unwrap_or_default();
            Err(OpenAIError::Boxed(Box::new(HttpRefusal { status: status.as_u16(), retry_after, message, code })))
        })
    }
}

/// Something that drafts: the configured model, or (in tests) anything else.
#[async_trait::async_trait]
pub trait Drafter: Send + Sync {
    /// The model's name, as recorded in the audit.
    fn name(&self) -> &str;
    async fn propose(&self, prompt: &Prompt) -> Result<Answer, ModelError>;
}

/// The OpenAI-compatible chat-completions adapter.
pub struct OpenAi {
    client: Client<OpenAIConfig>,
    model: String,
    max_tokens: u32,
}

impl OpenAi {
    pub fn new(s: &ModelSettings) -> anyhow::Result<Self> {
        // reqwest 0.13 finds rustls's process-wide provider (ring, as elsewhere in the workspace).
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest13::Client::builder().timeout(s.timeout).connect_timeout(s.timeout.min(Duration::from_secs(5))).build()?;
        let mut config = OpenAIConfig::new().with_api_base(&s.base_url);
        if let Some(key) = &s.api_key {
            config = config.with_api_key(key.expose_secret());
        }
        let client = Client::with_config(config).with_http_service(OneAttempt(ReqwestService::new(http)));
        Ok(Self { client, model: s.model.clone(), max_tokens: s.max_tokens })
    }

    fn request(&self, prompt: &Prompt) -> CreateChatCompletionRequest {
        CreateChatCompletionRequest {
            model: self.model.clone(),
            messages: vec![
                ChatCompletionRequestSystemMessage { content: prompt.system.clone().into(), name: None }.into(),
                ChatCompletionRequestUserMessage { content: prompt.user.clone().into(), name: None }.into(),
            ],
            max_completion_tokens: Some(self.max_tokens),
            temperature: Some(0.2),
            response_format: Some(ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: Some("A summary, an advisory category and urgency, and a reply draft".into()),
                    name: "ticket_draft".into(),
                    schema: schema(),
                    strict: Some(true),
                },
            }),
            ..Default::default()
        }
    }
}

/// The structured answer's JSON schema (strict mode: every property required, no others).
pub fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["summary", "category", "urgency", "reply"],
        "properties": {
            "summary": { "type": "string" },
            "category": { "type": "string", "enum": ["billing", "technical", "account", "other"] },
            "urgency": { "type": "string", "enum": ["low", "normal", "high", "urgent"] },
            "reply": { "type": "string" }
        }
    })
}

fn classify(e: OpenAIError) -> ModelError {
    match e {
        OpenAIError::Boxed(b) => match b.downcast::<HttpRefusal>() {
            Ok(r) => {
                let reason = format!("HTTP {}: {}", r.status, crate::domain::redact::redact(&r.message).text);
                match r.status {
                    // OpenAI answers 429 for an exhausted quota too: retrying does not help.
                    429 if r.code == "insufficient_quota" => ModelError::Permanent(reason),
                    408 | 409 | 425 | 429 | 500..=599 => ModelError::Transient { reason, retry_after: r.retry_after },
                    _ => ModelError::Permanent(reason),
                }
            }
            Err(other) => ModelError::Transient { reason: other.to_string(), retry_after: None },
        },
        OpenAIError::Reqwest(e) => {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "transport error"
            };
            ModelError::Transient { reason: what.to_owned(), retry_after: None }
        }
        OpenAIError::ApiError(a) => {
            ModelError::Permanent(format!("HTTP {}: {}", a.status_code, crate::domain::redact::redact(&a.api_error.message).text))
        }
        OpenAIError::JSONDeserialize(e, _) => ModelError::Transient { reason: format!("unreadable answer: {e}"), retry_after: None },
        other => ModelError::Transient { reason: crate::domain::redact::redact(&other.to_string()).text, retry_after: None },
    }
}

#[async_trait::async_trait]
impl Drafter for OpenAi {
    fn name(&self) -> &str {
        &self.model
    }

    async fn propose(&self, prompt: &Prompt) -> Result<Answer, ModelError> {
        let res = self.client.chat().create(self.request(prompt)).await.map_err(classify)?;
        let usage = res
            .usage
            .as_ref()
            .map_or_else(Usage::default, |u| Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens });
        let choice = res
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::Transient { reason: "an answer with no choice".into(), retry_after: None })?;
        if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
            return Err(ModelError::Permanent(format!("the model declined: {}", crate::domain::clip(&refusal, 200))));
        }
        let raw = choice.message.content.unwrap_or_default();
        let proposal: Proposal = serde_json::from_str(&raw)
            .map_err(|e| ModelError::Transient { reason: format!("the answer is not the requested JSON: {e}"), retry_after: None })?;
        Ok(Answer { proposal, usage, raw })
    }
}

/// A shared drafter.
pub type SharedDrafter = Arc<dyn Drafter>;
