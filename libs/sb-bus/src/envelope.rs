//! The one JSON envelope every Switchboard event travels in.

use chrono::{DateTime, Utc};
use sb_types::{AccountId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::events::Event;

/// Version of the envelope layout itself (not of any event's `data`).
pub const ENVELOPE_VERSION: u16 = 1;

/// A fact one service publishes for others. `type` carries the event's own version suffix
/// (`billing.access.changed.v1`) and is also the routing key on the events exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The payload, kept as the JSON text it arrived as: it is read once, straight into its event
    /// type ([`Envelope::decode`]), never into an intermediate tree.
    pub data: Box<RawValue>,
}

impl PartialEq for Envelope {
    fn eq(&self, o: &Self) -> bool {
        (self.envelope_version, self.id, &self.event_type, self.occurred_at, &self.source, self.correlation_id)
            == (o.envelope_version, o.id, &o.event_type, o.occurred_at, &o.source, o.correlation_id)
            && (self.causation_id, self.account_id, self.user_id) == (o.causation_id, o.account_id, o.user_id)
            && self.data.get() == o.data.get()
    }
}

fn raw(v: &impl Serialize) -> Box<RawValue> {
    // A payload type or JSON value is plain data; serialising it cannot fail.
    serde_json::value::to_raw_value(v).unwrap_or_default()
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

/// A payload that does not read as its event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload of {event_type} is not readable: {reason}")]
pub struct DecodeError {
    pub event_type: String,
    pub reason: String,
}

impl Envelope {
    /// A new event that starts its own correlation chain, published by `E`'s producer and naming
    /// the ids the payload names.
    pub fn of<E: Event>(payload: &E) -> Self {
        let id = Uuid::now_v7();
        Self {
            envelope_version: ENVELOPE_VERSION,
            id,
            event_type: E::TYPE.to_owned(),
            occurred_at: Utc::now(),
            source: E::PRODUCER.to_owned(),
            correlation_id: id,
            causation_id: None,
            account_id: payload.account_id().map(AccountId::as_uuid),
            user_id: payload.user_id().map(UserId::as_uuid),
            data: raw(payload),
        }
    }

    /// A new event caused by `cause`: same correlation id, causation = cause's id, and the ids the
    /// cause knew where the payload names none.
    pub fn caused_by<E: Event>(cause: &Envelope, payload: &E) -> Self {
        let env = Self::of(payload);
        Self {
            correlation_id: cause.correlation_id,
            causation_id: Some(cause.id),
            account_id: env.account_id.or(cause.account_id),
            user_id: env.user_id.or(cause.user_id),
            ..env
        }
    }

    /// An envelope around any JSON, for tools and tests that must send what no producer would
    /// (a malformed payload, an unknown type). Services use [`Envelope::of`].
    pub fn raw(source: &str, event_type: &str, data: serde_json::Value) -> Self {
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
            data: raw(&data),
        }
    }

    /// The payload as a JSON tree (tools and tests; services decode it with [`Envelope::decode`]).
    pub fn data_json(&self) -> serde_json::Value {
        serde_json::from_str(self.data.get()).unwrap_or_default()
    }

    /// Reads the payload as `E`. The error names the field that does not fit (`to: unknown
    /// variant ...`), so a parked message says what is wrong with it.
    pub fn decode<E: Event>(&self) -> Result<E, DecodeError> {
        if self.event_type != E::TYPE {
            return Err(DecodeError { event_type: self.event_type.clone(), reason: format!("expected an event of type {}", E::TYPE) });
        }
        // The plain read is the fast path; only a payload that fails is read again to name the field.
        let payload = match serde_json::from_str::<E>(self.data.get()) {
            Ok(p) => p,
            Err(plain) => {
                let reason = match serde_path_to_error::deserialize::<_, E>(&mut serde_json::Deserializer::from_str(self.data.get())) {
                    Err(e) => {
                        let path = e.path().to_string();
                        if path.is_empty() || path == "." { plain.to_string() } else { format!("{path}: {}", e.into_inner()) }
                    }
                    Ok(_) => plain.to_string(),
                };
                return Err(DecodeError { event_type: self.event_type.clone(), reason });
            }
        };
        payload.validate().map_err(|reason| DecodeError { event_type: self.event_type.clone(), reason })?;
        Ok(payload)
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
            Envelope::raw("identity", "identity.user.signed_up.v1", serde_json::json!({"email": "a@b.c"})).with_account(Uuid::now_v7());
        let json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(json["type"], "identity.user.signed_up.v1");
        assert_eq!(json["envelope_version"], 1);
        assert!(json.get("causation_id").is_none());
        assert_eq!(Envelope::parse(&env.to_json()).unwrap(), env);
    }

    #[test]
    fn id_is_uuid_v7_and_starts_its_own_correlation() {
        let env = Envelope::raw("x", "a.b.v1", serde_json::Value::Null);
        assert_eq!(env.id.get_version_num(), 7);
        assert_eq!(env.correlation_id, env.id);
    }

    fn signed_up() -> crate::events::UserSignedUp {
        crate::events::UserSignedUp {
            user_id: sb_types::UserId::new(),
            account_id: sb_types::AccountId::new(),
            email: sb_types::Email::parse("ada@example.com").unwrap(),
            name: "Ada".into(),
            account_name: "Engines".into(),
            role: sb_types::Role::Customer,
        }
    }

    #[test]
    fn typed_envelopes_name_their_producer_ids_and_chain() {
        let payload = signed_up();
        let cause = Envelope::of(&payload);
        assert_eq!((cause.source.as_str(), cause.event_type.as_str()), ("identity", "identity.user.signed_up.v1"));
        assert_eq!(cause.user_id, Some(payload.user_id.as_uuid()));
        assert_eq!(cause.account_id, Some(payload.account_id.as_uuid()));
        let email = crate::events::EmailRequested {
            to: payload.email.clone(),
            name: payload.name.clone(),
            account_id: None,
            user_id: None,
            template: crate::events::EmailTemplate::Welcome { account_name: payload.account_name.clone() },
        };
        let effect = Envelope::caused_by(&cause, &email);
        assert_eq!(effect.correlation_id, cause.correlation_id);
        assert_eq!(effect.causation_id, Some(cause.id));
        assert_eq!(effect.user_id, cause.user_id, "ids the cause knew carry over");
        assert_ne!(effect.id, cause.id);
        assert_eq!(effect.decode::<crate::events::EmailRequested>().unwrap(), email);
        assert_eq!(cause.decode::<crate::events::UserSignedUp>().unwrap(), payload);
    }

    #[test]
    fn an_unreadable_payload_names_the_field() {
        let mut data = serde_json::to_value(signed_up()).unwrap();
        data["role"] = serde_json::json!("root");
        let env = Envelope::raw("identity", "identity.user.signed_up.v1", data.clone());
        let err = env.decode::<crate::events::UserSignedUp>().unwrap_err();
        assert!(err.reason.starts_with("role: unknown variant `root`"), "{err}");
        data.as_object_mut().unwrap().remove("email");
        data["role"] = serde_json::json!("customer");
        let err = Envelope::raw("identity", "identity.user.signed_up.v1", data).decode::<crate::events::UserSignedUp>().unwrap_err();
        assert!(err.reason.contains("missing field `email`"), "{err}");
        let wrong = Envelope::raw("identity", "identity.user.updated.v1", serde_json::json!({}));
        assert!(wrong.decode::<crate::events::UserSignedUp>().is_err());
    }

    #[test]
    fn rejects_garbage_unknown_versions_and_unversioned_types() {
        assert!(matches!(Envelope::parse(b"not json"), Err(EnvelopeError::Malformed(_))));
        let mut env = Envelope::raw("x", "a.b.v1", serde_json::Value::Null);
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
