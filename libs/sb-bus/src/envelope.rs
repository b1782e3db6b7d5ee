//! The one JSON envelope every Switchboard event travels in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the envelope layout itself (not of any event's `data`).
pub const ENVELOPE_VERSION: u16 = 1;

/// A fact one service publishes for others. `type` carries the event's own version suffix
/// (`billing.access.changed.v1`) and is also the routing key on the events exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Layout version of this envelope; consumers reject versions they do not know.
    pub envelope_version: u16,
    /// UUIDv7: unique per fact, time-ordered; the idempotency key for every consumer.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    /// The service that stated the fact.
    pub source: String,
    /// Shared by every event caused, directly or not, by one outside action (a signup, a webhook).
    pub correlation_id: Uuid,
    /// The event (or request) that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    pub data: serde_json::Value,
}

/// Why bytes off the wire are not an event we can handle.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not a valid event envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("envelope_version {0} is not supported (this build knows {ENVELOPE_VERSION})")]
    UnsupportedVersion(u16),
    #[error("event type {0:?} does not end in a version suffix like `.v1`")]
    UnversionedType(String),
}

impl Envelope {
    /// A new event that starts its own correlation chain.
    pub fn new(source: &str, event_type: &str, data: serde_json::Value) -> Self {
        let id = Uuid::now_v7();
        Self {
            envelope_version: ENVELOPE_VERSION,
            id,
            event_type: event_type.to_owned(),
            occurred_at: Utc::now(),
            source: source.to_owned(),
            correlation_id: id,
            causation_id: None,
            account_id: None,
            user_id: None,
            data,
        }
    }

    /// A new event caused by `cause`: same correlation id, causation = cause's id, same ids known.
    pub fn caused_by(cause: &Envelope, source: &str, event_type: &str, data: serde_json::Value) -> Self {
        Self {
            correlation_id: cause.correlation_id,
            causation_id: Some(cause.id),
            account_id: cause.account_id,
            user_id: cause.user_id,
            ..Self::new(source, event_type, data)
        }
    }

    pub fn with_account(mut self, account_id: Uuid) -> Self {
        self.account_id = Some(account_id);
        self
    }

    pub fn with_user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }

    pub fn with_correlation(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// Parses and checks an envelope received from the broker.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let env: Envelope = serde_json::from_slice(bytes)?;
        if env.envelope_version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(env.envelope_version));
        }
        if !has_version_suffix(&env.event_type) {
            return Err(EnvelopeError::UnversionedType(env.event_type));
        }
        Ok(env)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of plain fields and a serde_json::Value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The routing key on the events exchange: the versioned type itself.
    pub fn routing_key(&self) -> &str {
        &self.event_type
    }
}

/// `a.b.c.v1` → true; `a.b.c` or `a.b.c.vX` → false.
pub fn has_version_suffix(event_type: &str) -> bool {
    event_type.rsplit_once(".v").is_some_and(|(head, n)| !head.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_wire_names() {
        let env =
            Envelope::new("identity", "identity.user.signed_up.v1", serde_json::json!({"email": "a@b.c"})).with_account(Uuid::now_v7());
        let json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(json["type"], "identity.user.signed_up.v1");
        assert_eq!(json["envelope_version"], 1);
        assert!(json.get("causation_id").is_none());
        assert_eq!(Envelope::parse(&env.to_json()).unwrap(), env);
    }

    #[test]
    fn id_is_uuid_v7_and_starts_its_own_correlation() {
        let env = Envelope::new("x", "a.b.v1", serde_json::Value::Null);
        assert_eq!(env.id.get_version_num(), 7);
        assert_eq!(env.correlation_id, env.id);
    }

    #[test]
    fn caused_by_carries_the_chain() {
        let cause = Envelope::new("identity", "identity.user.signed_up.v1", serde_json::Value::Null).with_user(Uuid::now_v7());
        let effect = Envelope::caused_by(&cause, "crm-sync", "crm.contact.synced.v1", serde_json::Value::Null);
        assert_eq!(effect.correlation_id, cause.correlation_id);
        assert_eq!(effect.causation_id, Some(cause.id));
        assert_eq!(effect.user_id, cause.user_id);
        assert_ne!(effect.id, cause.id);
    }

    #[test]
    fn rejects_garbage_unknown_versions_and_unversioned_types() {
        assert!(matches!(Envelope::parse(b"not json"), Err(EnvelopeError::Malformed(_))));
        let mut env = Envelope::new("x", "a.b.v1", serde_json::Value::Null);
        env.envelope_version = 9;
        assert!(matches!(Envelope::parse(&env.to_json()), Err(EnvelopeError::UnsupportedVersion(9))));
        env.envelope_version = 1;
        env.event_type = "a.b".into();
        assert!(matches!(Envelope::parse(&env.to_json()), Err(EnvelopeError::UnversionedType(_))));
    }

    #[test]
    fn version_suffix_rules() {
        assert!(has_version_suffix("billing.access.changed.v1"));
        assert!(has_version_suffix("a.v12"));
        assert!(!has_version_suffix("billing.access.changed"));
        assert!(!has_version_suffix(".v1"));
        assert!(!has_version_suffix("a.vx"));
        assert!(!has_version_suffix("a.v"));
    }
}
