//! The CRM as crm-sync sees it: find a contact by email, create one, update its properties and
//! lifecycle stage. Two implementations: HubSpot's CRM v3 API (`hubspot`), used when a token is
//! configured, and the embedded contact book in crm-sync's own database (`contact_book`).

use std::time::Duration;

use async_trait::async_trait;

/// A CRM contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The CRM's id (HubSpot's `hs_object_id`, the contact book's row id).
    pub id: String,
    /// As stored by the CRM (lower-cased by both).
    pub email: String,
    /// `lifecyclestage` (empty when unset).
    pub lifecycle_stage: String,
}

/// What crm-sync keeps current on a contact. Empty strings are "unknown", not "clear".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactProps {
    /// The user's name (HubSpot `firstname`/`lastname` are filled from it).
    pub name: String,
    pub account_id: String,
    pub account_name: String,
    pub plan: String,
    pub stripe_customer_id: String,
    /// billing's access status: none, pending, active, past_due, revoked.
    pub access_status: String,
    /// The wanted `lifecyclestage` (e.g. `lead`, `customer`, `other`).
    pub lifecycle_stage: String,
}

/// How a CRM call failed, which decides what the bus does with the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrmError {
    /// Worth retrying: 5xx, 429 (with the CRM's Retry-After, if any), timeouts, refused connections.
    #[error("CRM unavailable: {reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// Retrying cannot help: a 4xx validation error; `reason` is the CRM's own message.
    #[error("CRM refused: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait Crm: Send + Sync + 'static {
    /// `hubspot` or `contact_book` (metrics, logs, status).
    fn name(&self) -> &'static str;
    /// The contact with this email (compared case-insensitively), if any.
    async fn find_by_email(&self, email: &str) -> Result<Option<Contact>, CrmError>;
    /// Creates a contact with these properties and stage.
    async fn create(&self, email: &str, props: &ContactProps) -> Result<Contact, CrmError>;
    /// Updates a contact's properties and moves its stage to `props.lifecycle_stage`. HubSpot only
    /// moves a stage forward by itself, so a backward move clears the stage, then sets it.
    async fn update(&self, contact: &Contact, props: &ContactProps) -> Result<Contact, CrmError>;
}

/// HubSpot's default lifecycle stages in their forward order.
pub const STAGE_ORDER: [&str; 8] =
    ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist", "other"];

/// Whether moving from `from` to `to` goes backwards (or sideways to an unknown stage), which
/// HubSpot only accepts after clearing the stage.
pub fn is_backward(from: &str, to: &str) -> bool {
    if from.is_empty() || from == to {
        return false;
    }
    match (STAGE_ORDER.iter().position(|s| *s == from), STAGE_ORDER.iter().position(|s| *s == to)) {
        (Some(f), Some(t)) => t < f,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_moves() {
        assert!(!is_backward("", "lead"));
        assert!(!is_backward("lead", "customer"));
        assert!(!is_backward("customer", "customer"));
        assert!(is_backward("customer", "lead"));
        assert!(!is_backward("customer", "other"), "other is after customer in HubSpot's order");
        assert!(is_backward("other", "customer"));
        assert!(is_backward("customer", "churned"), "a custom stage: clear then set to be safe");
    }
}
