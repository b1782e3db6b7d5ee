//! `POST /webhooks/stripe`: the only unauthenticated write route. Stripe's signature is the
//! authentication, so nothing is read, parsed or stored before it verifies; 2xx only after the
//! event is durably accepted (receipt + outbox row committed together).
//!
//! Answers carry no detail: every refusal is an empty 400 (the reason goes only to the
//! `stripe_webhook_rejected_total{reason}` metric), an over-size body an empty 413, a database
//! failure an empty 503 (Stripe retries). Neither the body nor the signature header is ever logged.

use std::time::Instant;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::{DateTime, Utc};
use sb_bus::events::StripeEventReceived;
use sb_stripe::signature::{self, Rejection};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::AppState;

pub const PATH: &str = "/webhooks/stripe";
const SIGNATURE_HEADER: &str = "stripe-signature";

/// What Stripe gets back once the event is recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAckOut {
    pub received: bool,
    /// Present (and true) when this event id had already been accepted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

fn empty(status: StatusCode) -> Response {
    status.into_response()
}

fn rejected(reason: &'static str) -> Response {
    metrics::counter!("stripe_webhook_rejected_total", "reason" => reason).increment(1);
    info!(reason, "stripe webhook rejected");
    empty(StatusCode::BAD_REQUEST)
}

fn too_large() -> Response {
    metrics::counter!("stripe_webhook_rejected_total", "reason" => "body_too_large").increment(1);
    info!(reason = "body_too_large", "stripe webhook rejected");
    empty(StatusCode::PAYLOAD_TOO_LARGE)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn unix_now() -> i64 {
    Utc::now().timestamp()
}

/// A Stripe `event` object, as the request body is documented (the route reads the raw bytes).
/// No string or key anywhere in it may hold U+0000 (Stripe never sends one; it is refused).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StripeEventIn {
    /// `evt_...`
    #[schema(pattern = "^evt_", max_length = 255)]
    id: String,
    #[schema(rename = "type", min_length = 1, max_length = 255)]
    event_type: String,
    /// Unix seconds.
    #[schema(minimum = 0, maximum = 253_402_300_799_i64)]
    created: i64,
    /// `false` when left out.
    #[schema(required = false)]
    livemode: bool,
    data: StripeEventDataIn,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StripeEventDataIn {
    /// The Stripe object the event is about.
    object: std::collections::HashMap<String, serde_json::Value>,
}

/// The shape of a `Stripe-Signature` header: a timestamp and one or more signatures.
pub const SIGNATURE_PATTERN: &str = "^t=[0-9]+(,v[0-9]+=[0-9a-f]+)+$";

/// Receives a Stripe webhook: verifies `Stripe-Signature` over the raw body, then records the
/// event and queues `stripe.event.received.v1` in one transaction.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "stripe",
    params(("Stripe-Signature" = String, Header, description = "Stripe's `t=<unix>,v1=<hex hmac>[,v1=...]` signature of the raw body")),
    request_body(content = StripeEventIn, content_type = "application/json", description = "a Stripe `event` object, exactly as Stripe signed it"),
    responses(
        (status = 200, description = "the event is recorded (also for an event id seen before: `duplicate: true`)", body = WebhookAckOut),
        (status = 400, description = "signature missing or invalid, timestamp outside ±5 minutes, not a Stripe event, or a live-mode event verified only by the local-development secret; empty body"),
        (status = 413, description = "body larger than GATEWAY_STRIPE_WEBHOOK_MAX_BYTES; empty body, nothing verified"),
        (status = 503, description = "could not be recorded right now; empty body (Stripe retries)"),
    ))]
pub async fn receive_stripe_webhook(State(app): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let max = app.cfg.stripe_webhook_max_bytes;
    let (parts, body) = req.into_parts();
    // Refuse a declared over-size body before reading any of it.
    if content_length(&parts.headers).is_some_and(|n| n > max as u64) {
        return too_large();
    }
    // The only way a body read up to the limit fails while the sender still listens is the limit
    // itself; a sender that broke off mid-body gets the same answer, which it never reads.
    let Ok(body) = axum::body::to_bytes(body, max).await else {
        return too_large();
    };

    let header = match parts.headers.get(SIGNATURE_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return rejected(Rejection::MalformedHeader.label()),
    };
    let now = unix_now();
    let signed_at = match signature::verify(header, &body, &app.cfg.stripe_webhook_secrets, now) {
        Ok(t) => t,
        Err(r) => return rejected(r.label()),
    };

    let Some(event) = StripeEventReceived::from_slice(&body) else {
        return rejected("invalid_payload");
    };
    // The local-development secret is public: a live-mode event must verify with another one.
    if event.livemode && app.cfg.dev_webhook_secret {
        let real: Vec<SecretString> =
            app.cfg.stripe_webhook_secrets.iter().filter(|s| s.expose_secret() != sb_stripe::DEV_WEBHOOK_SECRET).cloned().collect();
        if signature::verify(header, &body, &real, now).is_err() {
            return rejected("livemode_with_dev_secret");
        }
    }
    let Some(signed_at) = DateTime::from_timestamp(signed_at, 0) else {
        return rejected(Rejection::MalformedHeader.label());
    };

    let (id, event_type) = (event.id.clone(), event.event_type.clone());
    match app.intake.accept(event, &body, signed_at).await {
        Ok(inserted) => {
            let duplicate = !inserted;
            metrics::counter!("stripe_webhook_accepted_total", "duplicate" => if duplicate { "true" } else { "false" }).increment(1);
            metrics::histogram!("stripe_webhook_ack_seconds").record(started.elapsed().as_secs_f64());
            info!(event_id = %id, event_type = %event_type, duplicate, "stripe webhook accepted");
            Json(WebhookAckOut { received: true, duplicate }).into_response()
        }
        Err(e) => {
            // The error names the failing statement or connection, never the bound payload.
            metrics::counter!("stripe_webhook_failed_total").increment(1);
            warn!(error = %e, event_id = %id, event_type = %event_type, "could not record a stripe webhook; answering 503 so Stripe retries");
            empty(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

pub fn router() -> Router<AppState> {
    // The router-wide body limit is for the JSON API; this route enforces its own, larger one.
    Router::new().route(PATH, post(receive_stripe_webhook).layer(DefaultBodyLimit::disable()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules themselves are tested with `StripeEventReceived`; here: what the fixtures build is one.
    #[test]
    fn the_stripe_fixtures_read_as_stripe_events() {
        let checkout = sb_stripe::objects::checkout_session(&sb_stripe::objects::CheckoutSpec { id: "cs_1", ..Default::default() });
        let ev = sb_stripe::objects::event("evt_1", "checkout.session.completed", 1_700_000_000, checkout);
        let ok = StripeEventReceived::from_slice(&serde_json::to_vec(&ev).unwrap_or_default()).expect("a Stripe event");
        assert_eq!((ok.id.as_str(), ok.created), ("evt_1", 1_700_000_000));
        assert_eq!(serde_json::to_value(&ok).unwrap_or_default(), ev, "nothing is lost on the way");
    }
}
