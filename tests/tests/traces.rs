//! One trace per flow: with OpenTelemetry export on, a sign-up, a payment and a ticket each form
//! one trace across the services — the HTTP request, the gRPC calls it makes, the events those
//! publish through the outbox and RabbitMQ, and the consumers that handle them. The six debug
//! binaries export to an OTLP receiver in this test, which follows each flow's parent chain.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value::Value},
    trace::v1::Span,
};
use sb_testkit::wait_for;
use system_tests::{Six, pay, sign_up};

/// A span as received, with the service that exported it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attrs.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An OTLP/gRPC trace receiver, as an OpenTelemetry collector would be.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs.resource.as_ref().and_then(|r| attr(&r.attributes, "service.name")).unwrap_or_default();
            for ss in rs.scope_spans {
                got.extend(ss.spans.into_iter().map(|span| Received { service: service.clone(), span }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    async fn start() -> (Self, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = Self::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await.unwrap();
        });
        (receiver, port)
    }

    /// The chains from the spans `leaf` picks up to their roots (leaf first), of those whose
    /// every parent has arrived.
    fn chains(&self, leaf: impl Fn(&Received) -> bool) -> Vec<Vec<Received>> {
        let got = self.0.lock().unwrap();
        let by_id: HashMap<(&[u8], &[u8]), &Received> =
            got.iter().map(|r| ((r.span.trace_id.as_slice(), r.span.span_id.as_slice()), r)).collect();
        let mut chains = Vec::new();
        'leaves: for start in got.iter().filter(|r| leaf(r)) {
            let mut chain = vec![start.clone()];
            let mut at = start;
            while !at.span.parent_span_id.is_empty() {
                let Some(parent) = by_id.get(&(at.span.trace_id.as_slice(), at.span.parent_span_id.as_slice())) else { continue 'leaves };
                chain.push((*parent).clone());
                at = parent;
            }
            chains.push(chain);
        }
        chains
    }
}

/// "service span-name" from leaf to root, for messages.
fn describe(chain: &[Received]) -> Vec<String> {
    chain.iter().map(|r| format!("{} {}", r.service, r.span.name)).collect()
}

/// Waits for the chain from a `consumer` span handling `event_type` to its root, and checks it
/// passes the spans `through` (service, span name) and ends at the gateway's `route`.
async fn flow(receiver: &Receiver, consumer: &str, event_type: &str, through: &[(&str, &str)], route: &str) {
    let chain = wait_for(Duration::from_secs(30), &format!("the trace of {event_type} handled by {consumer}"), || {
        let chains = receiver
            .chains(|r| r.service == consumer && r.span.name == "handle_event" && r.attr("event.type").as_deref() == Some(event_type));
        // The chain that reached the gateway's request on `route` (a parent may still be on its way).
        let chain = chains
            .into_iter()
            .find(|c| c.last().is_some_and(|root| root.service == "gateway" && root.attr("route").as_deref() == Some(route)));
        async move { chain }
    })
    .await;
    let root = chain.last().unwrap();
    assert_eq!((root.span.name.as_str(), root.attr("route").as_deref()), ("request", Some(route)), "{:?}", describe(&chain));
    for (service, name) in through {
        assert!(chain.iter().any(|r| r.service == *service && r.span.name == *name), "{service} {name} in {:?}", describe(&chain));
    }
    let services: std::collections::HashSet<&str> = chain.iter().map(|r| r.service.as_str()).collect();
    assert!(services.len() >= 3, "across at least three services: {:?}", describe(&chain));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signup_a_payment_and_a_ticket_each_form_one_trace_across_the_services() {
    let (receiver, port) = Receiver::start().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), format!("http://127.0.0.1:{port}")),
        // Export every 100 ms instead of 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ];
    let mut six = Six::start_with("debug", &otel);
    six.wait_ready().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = six.gateway_url.clone();

    let token = sign_up(&http, &base, "traced@example.com").await.expect("sign-up");
    flow(&receiver, "crm-sync", "identity.user.signed_up.v1", &[("identity", "rpc")], "/v1/signup").await;

    assert!(pay(&http, &base, &token).await, "local checkout paid");
    flow(&receiver, "crm-sync", "billing.access.changed.v1", &[("billing", "handle_event")], "/webhooks/stripe").await;

    let ticket = serde_json::json!({"subject": "Export", "body": "How do I export my invoices?", "category": "billing"});
    assert_eq!(http.post(format!("{base}/v1/tickets")).bearer_auth(&token).json(&ticket).send().await.unwrap().status(), 201);
    flow(&receiver, "ai-assist", "support.ticket.opened.v1", &[("support-router", "rpc")], "/v1/tickets").await;

    six.kill_and_clean_up(0).await;
}
