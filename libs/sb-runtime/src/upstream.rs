//! Following one outside request through the services: its request id travels with every gRPC
//! call made while serving it, each service logs inside a span that names it, and a failed call
//! is logged with the name of the service that failed, not its address.
//!
//! - The gateway runs each HTTP request in [`serving`] (request id, route); a service runs each
//!   RPC it answers in [`RpcScopeLayer`]'s span (request id, RPC path), so every log line written
//!   while serving it carries the request id.
//! - A client built on an [`Upstream`] channel sends the request id (`x-request-id`) with each
//!   call, logs a failed call with `upstream = "<service>"`, and records the name on the request's
//!   span (its `upstream` field), so the lines that follow — the gateway's "internal error" and
//!   "request failed" — name it too.
//! - The W3C trace context (`traceparent`, `tracestate`) travels the same way: an [`Upstream`]
//!   call carries the current span's, and [`RpcScopeLayer`] makes its `rpc` span a child of it, so
//!   with OpenTelemetry export on (`OTEL_EXPORTER_OTLP_ENDPOINT`) a request, the calls it makes and
//!   the events they publish (the outbox and the bus carry it on, see `sb_bus::trace`) form one
//!   trace.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{body::Body, transport::Channel};
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty, warn};

/// The header (HTTP) and metadata key (gRPC) that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id accepted from outside; anything longer, or with other characters than
/// letters, digits and `-_.:`, is replaced by a new one.
const MAX_REQUEST_ID: usize = 64;

#[derive(Clone)]
struct Scope {
    request_id: http::HeaderValue,
    span: Span,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Whether `id` is fit to be logged and forwarded as a request id.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The W3C trace context in these headers (HTTP or gRPC), for [`sb_bus::trace::continue_trace`].
pub fn trace_headers(headers: &http::HeaderMap) -> sb_bus::publisher::TraceHeaders {
    ["traceparent", "tracestate"].into_iter().filter_map(|k| Some((k.to_owned(), headers.get(k)?.to_str().ok()?.to_owned()))).collect()
}

/// Runs `fut` as the work of the outside request `request_id`, logged inside `span` (which should
/// declare an `upstream` field, see [`Upstream`]). Calls through an [`Upstream`] made while it
/// runs forward the id. Tasks spawned from it do not inherit the scope.
pub async fn serving<F: Future>(request_id: http::HeaderValue, span: Span, fut: F) -> F::Output {
    SCOPE.scope(Scope { request_id, span: span.clone() }, fut.instrument(span)).await
}

/// The request id being served by the current task, if any.
pub fn current_request_id() -> Option<String> {
    SCOPE.try_with(|s| s.request_id.to_str().ok().map(str::to_owned)).ok().flatten()
}

/// gRPC status codes that say the service failed (not the caller): logged as failures.
fn is_server_failure(code: &str) -> bool {
    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
    matches!(code, "2" | "4" | "12" | "13" | "14" | "15")
}

/// A failure status in the headers of a gRPC answer (a trailers-only answer, as every unary
/// error is): `(code, message)`.
fn failure_of(headers: &http::HeaderMap) -> Option<(String, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?;
    if !is_server_failure(code) {
        return None;
    }
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or_default();
    // grpc-message is percent-encoded.
    let message = percent_encoding::percent_decode_str(message).decode_utf8_lossy().into_owned();
    Some((code.to_owned(), message))
}

/// A gRPC channel to another Switchboard service, named for the logs (see the module docs).
#[derive(Clone, Debug)]
pub struct Upstream {
    name: &'static str,
    channel: Channel,
}

impl Upstream {
    pub fn new(name: &'static str, channel: Channel) -> Self {
        Self { name, channel }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl Service<http::Request<Body>> for Upstream {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let scope = SCOPE.try_with(Scope::clone).ok();
        if let Some(s) = &scope {
            req.headers_mut().insert(REQUEST_ID_HEADER, s.request_id.clone());
        }
        for (k, v) in sb_bus::trace::current_headers() {
            if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(k), http::HeaderValue::try_from(v)) {
                req.headers_mut().insert(k, v);
            }
        }
        let rpc = req.uri().path().to_owned();
        let name = self.name;
        let answer = self.channel.call(req);
        Box::pin(async move {
            let answer = answer.await;
            let failed = match &answer {
                Err(e) => {
                    // The transport error's own text names the address; its sources say why.
                    let why = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
                    warn!(upstream = name, rpc, error = why, "upstream unreachable");
                    true
                }
                Ok(resp) => match failure_of(resp.headers()) {
                    Some((code, message)) => {
                        warn!(upstream = name, rpc, grpc_status = code, grpc_message = message, "upstream call failed");
                        true
                    }
                    None => false,
                },
            };
            if failed && let Some(s) = scope {
                s.span.record("upstream", name);
            }
            answer
        })
    }
}

/// Serves each RPC inside a span `rpc` with its path and the caller's request id (when one came
/// with it), forwards that id on any [`Upstream`] call the handler makes, and logs an answer
/// that says the service failed.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcScopeLayer;

impl<S> Layer<S> for RpcScopeLayer {
    type Service = RpcScope<S>;
    fn layer(&self, inner: S) -> RpcScope<S> {
        RpcScope(inner)
    }
}

#[derive(Clone, Debug)]
pub struct RpcScope<S>(S);

impl<S, B> Service<http::Request<B>> for RpcScope<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let id = req.headers().get(REQUEST_ID_HEADER).filter(|v| v.to_str().is_ok_and(is_valid_request_id)).cloned();
        let rpc = req.uri().path().to_owned();
        let span = match &id {
            Some(id) => tracing::info_span!("rpc", rpc, request_id = id.to_str().unwrap_or_default(), upstream = Empty),
            None => tracing::info_span!("rpc", rpc, upstream = Empty),
        };
        sb_bus::trace::continue_trace(&span, &trace_headers(req.headers()));
        let answer = self.0.call(req);
        let work = async move {
            let answer = answer.await;
            if let Ok(resp) = &answer
                && let Some((code, message)) = failure_of(resp.headers())
            {
                warn!(grpc_status = code, grpc_message = message, "rpc failed");
            }
            answer
        };
        match id {
            Some(id) => Box::pin(serving(id, span, work)),
            None => Box::pin(work.instrument(span)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_outside_are_short_plain_tokens() {
        assert!(is_valid_request_id("0b6d3c1e-5f7a-4b1e-9a57-3a1d2f0e9c11"));
        assert!(is_valid_request_id("req_abc.1:2"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id(&"a".repeat(65)));
        assert!(!is_valid_request_id("two words"));
        assert!(!is_valid_request_id("line\nbreak"));
    }

    #[test]
    fn only_statuses_that_blame_the_service_are_failures() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static("13"));
        h.insert("grpc-message", http::HeaderValue::from_static("relation%20%22users%22 does not exist"));
        assert_eq!(failure_of(&h), Some(("13".into(), "relation \"users\" does not exist".into())));
        for user_error in ["0", "3", "5", "6", "7", "9", "16"] {
            h.insert("grpc-status", http::HeaderValue::from_static(user_error));
            assert_eq!(failure_of(&h), None, "grpc-status {user_error}");
        }
        assert_eq!(failure_of(&http::HeaderMap::new()), None);
    }
}
