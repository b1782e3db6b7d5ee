//! W3C trace context crosses the bus: a handler runs inside the trace that enqueued its event.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use sb_bus::{Envelope, HandlerError, OutboxRelay};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// Remembers the trace id the handler ran in.
struct TraceSpy(Arc<Mutex<Option<TraceId>>>);

#[async_trait::async_trait]
impl sb_bus::Handler<Thing> for TraceSpy {
    async fn handle(&self, _env: &Envelope, _event: Thing, _tx: &mut PgConnection) -> Result<(), HandlerError> {
        let id = tracing::Span::current().context().span().span_context().trace_id();
        *self.0.lock().unwrap() = Some(id);
        Ok(())
    }
}

// One thread, so the subscriber set below covers the relay and consumer tasks too.
#[tokio::test(flavor = "current_thread")]
async fn a_handler_continues_the_trace_of_the_transaction_that_enqueued_its_event() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let cfg = bus_config("trace");
    let db = database("trace").await;
    db.keep_sent_outbox().await.unwrap();
    let seen = Arc::new(Mutex::new(None));
    let consumer = start(sb_bus::Consumer::new(cfg.clone(), SERVICE, db.pool.clone()).on::<Thing, _>(TraceSpy(seen.clone()))).await;
    let stop = CancellationToken::new();
    tokio::spawn(OutboxRelay::new(db.pool.clone(), cfg.clone(), "test-producer").run(stop.clone()));

    let request = tracing::info_span!("signup request");
    let producer_trace = request.context().span().span_context().trace_id();
    assert_ne!(producer_trace, TraceId::INVALID, "the test's tracer must produce real trace ids");
    async {
        let mut tx = db.pool.begin().await.unwrap();
        sb_bus::enqueue(&mut tx, &event(None)).await.unwrap();
        tx.commit().await.unwrap();
    }
    .instrument(request)
    .await;

    wait_total(&consumer.stats, 1, "the traced event").await;
    assert_eq!(*seen.lock().unwrap(), Some(producer_trace), "the handler ran outside the producer's trace");
    let stored: serde_json::Value = sqlx::query_scalar("SELECT headers FROM sb_test_outbox").fetch_one(&db.pool).await.unwrap();
    assert!(stored["traceparent"].as_str().unwrap().contains(&producer_trace.to_string()));
    stop.cancel();
    consumer.stop().await;
    cleanup(&cfg).await;
}
