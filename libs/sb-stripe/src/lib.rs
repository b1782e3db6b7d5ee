//! Stripe's wire format, shared by the gateway (verifies webhooks), billing (its embedded local
//! checkout sends them) and the tests (they send what Stripe sends).
//!
//! - [`signature`]: `Stripe-Signature` verification and signing.
//! - [`objects`]: Stripe API objects (event, checkout session, subscription, invoice, charge,
//!   customer, portal session) built from Stripe's own example fixtures (`fixtures/`, MIT, from
//!   the public `stripe/openapi` repository), with ids, timestamps and statuses set per use, so
//!   what we send and test with has the shape Stripe really sends.

pub mod objects;
pub mod signature;

use secrecy::SecretString;
use serde_json::Value;

/// Signing secrets from a comma-separated list (several during a secret rotation).
pub fn parse_secrets(raw: &str) -> Vec<SecretString> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| SecretString::from(s.to_owned())).collect()
}

/// The signing secret the gateway and billing share when none is configured, so the embedded
/// local checkout works with no setup. Public, hence worthless: both services warn when they use
/// it, and the gateway refuses live-mode events verified only by it.
pub const DEV_WEBHOOK_SECRET: &str = "whsec_switchboard_local_development_only";

/// The envelope of a Stripe `event` object, checked the same way where it enters (the gateway,
/// before accepting it) and where it is applied (billing): an `evt_` id and a `type` (non-empty,
/// at most 255 characters), an integer `created`, an object `data.object`, and `livemode`
/// absent or a boolean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHead {
    pub id: String,
    pub event_type: String,
    /// Unix seconds.
    pub created: i64,
    pub livemode: bool,
}

impl EventHead {
    /// `None` when `v` is not a Stripe event.
    pub fn parse(v: &Value) -> Option<Self> {
        let text = |key: &str| v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 255).map(str::to_owned);
        let id = text("id").filter(|id| id.starts_with("evt_"))?;
        let event_type = text("type")?;
        let created = v.get("created")?.as_i64()?;
        v.pointer("/data/object")?.as_object()?;
        let livemode = match v.get("livemode") {
            None => false,
            Some(l) => l.as_bool()?,
        };
        Some(Self { id, event_type, created, livemode })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(fields: Value) -> Value {
        let checkout = objects::checkout_session(&objects::CheckoutSpec { id: "cs_1", ..Default::default() });
        objects::with(objects::event("evt_1", "checkout.session.completed", 1_700_000_000, checkout), fields)
    }

    #[test]
    fn only_stripe_events_parse() {
        let ok = EventHead::parse(&event(json!({}))).expect("a Stripe event");
        assert_eq!(
            (ok.id.as_str(), ok.event_type.as_str(), ok.created, ok.livemode),
            ("evt_1", "checkout.session.completed", 1_700_000_000, false)
        );
        assert!(EventHead::parse(&event(json!({"livemode": true}))).is_some_and(|e| e.livemode));
        for bad in [
            json!({"id": "cs_1"}),
            json!({"id": 7}),
            json!({"type": null}),
            json!({"type": "x".repeat(256)}),
            json!({"created": "yesterday"}),
            json!({"created": 1.5}),
            json!({"data": {"object": "cs_1"}}),
            json!({"data": {}}),
            json!({"livemode": "no"}),
        ] {
            assert!(EventHead::parse(&event(bad.clone())).is_none(), "{bad}");
        }
        for raw in [json!([]), json!("evt_1"), json!(null)] {
            assert!(EventHead::parse(&raw).is_none());
        }
    }
}
