//! The event catalog: every event type Switchboard publishes, who states it, and what it means.
//!
//! The list is built from the payload types in [`crate::events`], so it cannot disagree with what
//! producers send and consumers read. `switchboard catalog` prints it for operators and the
//! README's event table is checked against it by a test. Every type listed here has a consumer
//! (an event nobody consumes is not published).

use crate::events::{
    AccessChanged, AiDraftFailed, AiDraftReady, EmailRequested, Event, PaymentFailed, RefundIssued, SlaBreached, StripeEventReceived,
    TicketMessageAdded, TicketOpened, TicketPrioritised, TicketResolved, UserSignedUp, UserUpdated,
};

/// The six services, in the order they are started and listed.
pub const SERVICES: [&str; 6] = ["gateway", "identity", "billing", "crm-sync", "support-router", "ai-assist"];

/// One event type in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    /// Versioned type, also the routing key: `billing.access.changed.v1`.
    pub event_type: &'static str,
    /// The only service allowed to publish it.
    pub producer: &'static str,
    pub description: &'static str,
    /// The payload type in `sb_bus::events` that producer and consumers share.
    pub payload: &'static str,
}

const fn spec<E: Event>() -> EventSpec {
    EventSpec { event_type: E::TYPE, producer: E::PRODUCER, description: E::DESCRIPTION, payload: E::PAYLOAD }
}

/// Every event type, grouped by producer.
pub const CATALOG: &[EventSpec] = &[
    spec::<StripeEventReceived>(),
    spec::<UserSignedUp>(),
    spec::<UserUpdated>(),
    spec::<EmailRequested>(),
    spec::<AccessChanged>(),
    spec::<PaymentFailed>(),
    spec::<RefundIssued>(),
    spec::<TicketOpened>(),
    spec::<TicketMessageAdded>(),
    spec::<TicketPrioritised>(),
    spec::<SlaBreached>(),
    spec::<TicketResolved>(),
    spec::<AiDraftReady>(),
    spec::<AiDraftFailed>(),
];

/// The catalog entry for a versioned type, if it is one of ours.
pub fn spec_of(event_type: &str) -> Option<&'static EventSpec> {
    CATALOG.iter().find(|s| s.event_type == event_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::has_version_suffix;

    #[test]
    fn every_type_is_versioned_unique_and_produced_by_a_known_service() {
        let mut seen = std::collections::HashSet::new();
        for s in CATALOG {
            assert!(has_version_suffix(s.event_type), "{} lacks .vN", s.event_type);
            assert!(seen.insert(s.event_type), "{} listed twice", s.event_type);
            assert!(SERVICES.contains(&s.producer), "{} has unknown producer", s.event_type);
            assert!(!s.payload.is_empty(), "{} names its payload type", s.event_type);
        }
        assert_eq!(spec_of(AccessChanged::TYPE).map(|s| s.producer), Some("billing"));
        assert!(spec_of("nope.v1").is_none());
    }
}
