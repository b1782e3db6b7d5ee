//! A fake OpenAI-compatible chat-completions server for tests. It speaks the wire format — the
//! request (`model`, `messages`, `response_format`), the `chat.completion` answer with `usage`,
//! and OpenAI's error bodies `{"error": {"message", "type", "param", "code"}}` — so the real
//! adapter (ai-assist's async-openai client, pointed at [`FakeOpenAi::base_url`]) runs unchanged.
//! It keeps every request it received and can be told to fail while it runs.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sb_testkit::openai::FakeOpenAi;
//! let ai = FakeOpenAi::start().await?;
//! // point the adapter at ai.base_url() with the key ai.key() ...
//! ai.reply_with(r#"{"summary":"s","category":"billing","urgency":"normal","reply":"Hello"}"#);
//! ai.fail_next(1, 429); // with Retry-After: 1 and a rate_limit_exceeded body
//! ai.malformed_next(1); // a 200 whose body is not JSON
//! ai.set_latency(std::time::Duration::from_secs(5)); // a slow model
//! assert!(ai.requests().is_empty());
//! # Ok(()) }
//! ```
//!
//! `POST /v1/chat/completions` (bearer key, else 401 `invalid_api_key`; an unknown model 404
//! `model_not_found`; no messages 400 `invalid_request_error`). The answer's `content` is the next
//! scripted reply, else what [`FakeOpenAi::answer_with`] computes from the request, else a fixed
//! proposal. Token counts are about a token per four characters, as OpenAI's are for English.

use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::listening::Listening;

/// The key a new fake accepts.
pub const DEFAULT_KEY: &str = "sk-fake-openai-test-key-0000";
/// The model a new fake serves (others are 404 `model_not_found`).
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// The answer used when nothing else is set: a harmless proposal.
pub const DEFAULT_CONTENT: &str = r#"{"summary":"The customer asks a question.","category":"other","urgency":"normal","reply":"Hello,\n\nThanks for your message. A member of our team will follow up here.\n\nBest regards,\nThe support team"}"#;

type AnswerFn = Arc<dyn Fn(&Value) -> String + Send + Sync>;

struct State_ {
    key: Option<String>,
    models: Vec<String>,
    scripted: VecDeque<String>,
    answer: Option<AnswerFn>,
    failures: VecDeque<u16>,
    fail_always: Option<u16>,
    malformed: usize,
    retry_after_secs: u64,
    latency: Duration,
    requests: Vec<Value>,
}

struct Shared {
    state: Mutex<State_>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FakeOpenAi {
    shared: Arc<Shared>,
    server: Listening,
}

impl FakeOpenAi {
    pub async fn start() -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State_ {
                key: Some(DEFAULT_KEY.to_owned()),
                models: vec![DEFAULT_MODEL.to_owned()],
                scripted: VecDeque::new(),
                answer: None,
                failures: VecDeque::new(),
                fail_always: None,
                malformed: 0,
                retry_after_secs: 1,
                latency: Duration::ZERO,
                requests: Vec::new(),
            }),
        });
        let server = Listening::start(Router::new().fallback(handle).with_state(shared.clone())).await?;
        Ok(Self { shared, server })
    }

    /// `http://127.0.0.1:<port>/v1`: the API base to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.addr())
    }

    pub fn key(&self) -> String {
        self.shared.lock().key.clone().unwrap_or_default()
    }

    /// Accepts any request, with or without a key (a local server).
    pub fn accept_any_key(&self) {
        self.shared.lock().key = None;
    }

    /// The next answers' content, in order (then back to [`Self::answer_with`] or the default).
    pub fn reply_with(&self, content: &str) {
        self.shared.lock().scripted.push_back(content.to_owned());
    }

    /// Computes each answer's content from the request body.
    pub fn answer_with(&self, f: impl Fn(&Value) -> String + Send + Sync + 'static) {
        self.shared.lock().answer = Some(Arc::new(f));
    }

    /// The next `n` requests get `status` with OpenAI's error body (429 with `Retry-After`).
    pub fn fail_next(&self, n: usize, status: u16) {
        self.shared.lock().failures.extend(std::iter::repeat_n(status, n));
    }

    /// Every request gets `status` until [`Self::recover`].
    pub fn fail_always(&self, status: u16) {
        self.shared.lock().fail_always = Some(status);
    }

    /// The next `n` requests get a 200 whose body is cut off mid-JSON.
    pub fn malformed_next(&self, n: usize) {
        self.shared.lock().malformed += n;
    }

    /// Seconds a 429 asks to wait (`Retry-After`).
    pub fn set_retry_after(&self, secs: u64) {
        self.shared.lock().retry_after_secs = secs;
    }

    /// Every answer comes this much later.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// No more failures, no latency.
    pub fn recover(&self) {
        let mut st = self.shared.lock();
        st.failures.clear();
        st.fail_always = None;
        st.malformed = 0;
        st.latency = Duration::ZERO;
    }

    /// Every request body received so far (also the refused ones), oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.lock().requests.clone()
    }

    /// Stops listening: connections are refused until [`Self::restart`].
    pub async fn stop(&self) {
        self.server.stop().await;
    }

    /// Listens again on the same port.
    pub async fn restart(&self) -> io::Result<()> {
        self.server.restart().await
    }
}

fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    let body = json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn tokens(s: &str) -> u64 {
    (s.chars().count() as u64).div_ceil(4).max(1)
}

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let (latency, failure, malformed, retry_after) = {
        let mut st = shared.lock();
        st.requests.push(parsed.clone().unwrap_or(Value::Null));
        let failure = st.failures.pop_front().or(st.fail_always);
        let malformed = failure.is_none() && st.malformed > 0;
        if malformed {
            st.malformed -= 1;
        }
        (st.latency, failure, malformed, st.retry_after_secs)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = failure {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return match status {
            429 => {
                let mut r =
                    error(code, "Rate limit reached for requests. Please try again later.", "requests", Some("rate_limit_exceeded"));
                r.headers_mut().insert("retry-after", retry_after.into());
                r
            }
            500..=599 => error(code, "The server had an error while processing your request. Sorry about that!", "server_error", None),
            _ => error(code, "The request was refused.", "invalid_request_error", None),
        };
    }
    if method != Method::POST || uri.path() != "/v1/chat/completions" {
        return error(StatusCode::NOT_FOUND, &format!("Invalid URL ({method} {})", uri.path()), "invalid_request_error", None);
    }
    let key = shared.lock().key.clone();
    if let Some(key) = key {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided.", "invalid_request_error", Some("invalid_api_key"));
        }
    }
    let Some(req) = parsed else {
        return error(StatusCode::BAD_REQUEST, "We could not parse the JSON body of your request.", "invalid_request_error", None);
    };
    let model = req.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !shared.lock().models.contains(&model) {
        let msg = format!("The model `{model}` does not exist or you do not have access to it.");
        return error(StatusCode::NOT_FOUND, &msg, "invalid_request_error", Some("model_not_found"));
    }
    let messages = req.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    if messages.is_empty() || messages.iter().any(|m| m.get("role").and_then(Value::as_str).is_none()) {
        return error(
            StatusCode::BAD_REQUEST,
            "'messages' must be a non-empty array of messages with a role.",
            "invalid_request_error",
            None,
        );
    }
    if malformed {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], r#"{"id":"chatcmpl-cut","object":"chat.compl"#)
            .into_response();
    }
    let content = {
        let mut st = shared.lock();
        match st.scripted.pop_front() {
            Some(c) => c,
            None => match st.answer.clone() {
                Some(f) => {
                    drop(st);
                    f(&req)
                }
                None => DEFAULT_CONTENT.to_owned(),
            },
        }
    };
    let prompt: u64 = messages.iter().filter_map(|m| m.get("content").and_then(Value::as_str)).map(tokens).sum();
    let completion = tokens(&content);
    let body = json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": format!("{model}-2024-07-18"),
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content, "refusal": null, "annotations": [] },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
            "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0 }
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake"
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
