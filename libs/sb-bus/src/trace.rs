//! W3C trace context across the bus: injected into message headers, extracted by consumers.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::publisher::TraceHeaders;

struct MapInjector<'a>(&'a mut TraceHeaders);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a TraceHeaders);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The current span's trace context as `traceparent`/`tracestate` headers (empty when no
/// OpenTelemetry layer is installed).
pub fn current_headers() -> TraceHeaders {
    let mut out = TraceHeaders::new();
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MapInjector(&mut out)));
    out
}

/// Makes `span` a child of the trace described by `headers`, continuing it across services.
pub fn continue_trace(span: &tracing::Span, headers: &TraceHeaders) {
    if headers.is_empty() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&MapExtractor(headers)));
    let _ = span.set_parent(parent);
}

/// The trace headers present on an AMQP message.
pub fn from_properties(props: &lapin::BasicProperties) -> TraceHeaders {
    ["traceparent", "tracestate"].into_iter().filter_map(|k| crate::publisher::header_str(props, k).map(|v| (k.to_owned(), v))).collect()
}
