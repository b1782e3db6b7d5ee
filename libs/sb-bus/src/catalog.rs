//! The event catalog: every event type Switchboard publishes, who states it, and what it means.
//!
//! This list is the contract between services. `switchboard catalog` prints it for operators and
//! the README's event table is checked against it by a test.

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
}

macro_rules! catalog {
    ($($name:ident = $ty:literal from $producer:literal : $desc:literal;)*) => {
        $(
            #[doc = $desc]
            pub const $name: &str = $ty;
        )*
        /// Every event type, grouped by producer.
        pub const CATALOG: &[EventSpec] = &[
            $(EventSpec { event_type: $ty, producer: $producer, description: $desc },)*
        ];
    };
}

catalog! {
    STRIPE_EVENT_RECEIVED = "stripe.event.received.v1" from "gateway":
        "A Stripe webhook whose signature verified; `data` is Stripe's event object, unchanged.";
    IDENTITY_USER_SIGNED_UP = "identity.user.signed_up.v1" from "identity":
        "A new account and its first user exist; `data` has email (normalised), name, account name.";
    IDENTITY_USER_UPDATED = "identity.user.updated.v1" from "identity":
        "A user's profile changed; `data` has the changed fields.";
    IDENTITY_EMAIL_REQUESTED = "identity.email.requested.v1" from "identity":
        "An email is to be sent exactly once (welcome, reset); `data` has template, to, variables.";
    BILLING_ACCESS_CHANGED = "billing.access.changed.v1" from "billing":
        "An account's portal access moved (none/pending/active/past_due/revoked); `data` has from, to, plan, cause.";
    BILLING_PAYMENT_FAILED = "billing.payment.failed.v1" from "billing":
        "An invoice payment failed; `data` has invoice id, amount, attempt count, next attempt.";
    BILLING_REFUND_ISSUED = "billing.refund.issued.v1" from "billing":
        "A charge was refunded; `data` has charge id, amount, currency.";
    CRM_CONTACT_SYNCED = "crm.contact.synced.v1" from "crm-sync":
        "The CRM contact for a user is current; `data` has crm_contact_id and lifecycle stage.";
    CRM_SYNC_FAILED = "crm.sync.failed.v1" from "crm-sync":
        "A CRM sync gave up after the retry ladder or failed permanently; `data` has reason.";
    SUPPORT_TICKET_OPENED = "support.ticket.opened.v1" from "support-router":
        "A ticket was opened and routed; `data` has ticket id, queue, plan, priority.";
    SUPPORT_TICKET_ESCALATED = "support.ticket.escalated.v1" from "support-router":
        "A ticket breached its SLA clock or was escalated by hand; `data` has ticket id, reason.";
    AI_DRAFT_READY = "ai.draft.ready.v1" from "ai-assist":
        "A reply draft or summary awaits human approval; `data` has ticket id, draft id, kind.";
}

/// The catalog entry for a versioned type, if it is one of ours.
pub fn spec(event_type: &str) -> Option<&'static EventSpec> {
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
        }
        assert_eq!(spec(BILLING_ACCESS_CHANGED).map(|s| s.producer), Some("billing"));
        assert!(spec("nope.v1").is_none());
    }
}
