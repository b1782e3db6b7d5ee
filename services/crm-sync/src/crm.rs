//! The CRM as crm-sync sees it: find a contact by email, create one, update its properties and
//! lifecycle stage. Two adapters: HubSpot's CRM v3 API (`hubspot`), used when a token is
//! configured, and the embedded contact book in crm-sync's own database (`contact_book`).

use std::time::Duration;

use async_trait::async_trait;

pub use crate::domain::ContactProps;

/// A CRM contact, as the CRM holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The CRM's id (HubSpot's `hs_object_id`, the contact book's row id).
    pub id: String,
    /// As stored by the CRM (lower-cased by both).
    pub email: String,
    /// `lifecyclestage` (empty when unset); the CRM's own word, so not necessarily one of ours.
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

/// A CRM. Every method is safe to repeat, and none needs a lock held by the caller: the CRM's own
/// uniqueness of emails keeps concurrent writers to one contact.
#[async_trait]
pub trait Crm: Send + Sync + 'static {
    /// `hubspot` or `contact_book` (metrics, logs, status).
    fn name(&self) -> &'static str;
    /// The contact with this email (compared case-insensitively), if any.
    async fn find_by_email(&self, email: &str) -> Result<Option<Contact>, CrmError>;
    /// Creates a contact with these properties and stage. When one with this email exists (another
    /// writer created it first), that one is the answer, with these properties written to it.
    async fn create(&self, email: &str, props: &ContactProps) -> Result<Contact, CrmError>;
    /// Updates a contact's properties and moves its stage to `props.lifecycle_stage`. HubSpot only
    /// moves a stage forward by itself, so a backward move clears the stage, then sets it.
    async fn update(&self, contact: &Contact, props: &ContactProps) -> Result<Contact, CrmError>;
}
