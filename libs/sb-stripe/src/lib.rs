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

/// Signing secrets from a comma-separated list (several during a secret rotation).
pub fn parse_secrets(raw: &str) -> Vec<SecretString> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| SecretString::from(s.to_owned())).collect()
}

/// The signing secret the gateway and billing share when none is configured, so the embedded
/// local checkout works with no setup. Public, hence worthless: both services warn when they use
/// it, and the gateway refuses live-mode events verified only by it.
pub const DEV_WEBHOOK_SECRET: &str = "whsec_switchboard_local_development_only";
