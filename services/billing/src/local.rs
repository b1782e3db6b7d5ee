//! The embedded default for Stripe: with no Stripe key, checkout and portal sessions are local,
//! and confirming one makes billing do what Stripe would — send correctly signed, Stripe-shaped
//! webhooks to the gateway's `/webhooks/stripe`. Those take exactly the path real Stripe events
//! take (signature check, receipt, bus, this service's consumer), so the whole payment flow runs
//! on one machine and tests it end to end.
//!
//! This module builds the sessions' ids and URLs and the webhooks' bodies, and posts them; the
//! service queues them in the same transaction as the confirmation and delivers them with no
//! transaction open, retrying with backoff until the gateway answers 2xx, as Stripe does.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, distr::Alphanumeric};
use sb_stripe::objects::{self, CheckoutSpec, InvoiceSpec, SubscriptionSpec};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;

use crate::domain::{AccountId, Checkout, LocalWebhook, StoredSubscription};

/// How long posting one webhook to the gateway may take.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// A random suffix like Stripe's ids have.
pub fn random_suffix(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Local checkout session ids; the suffix is also the capability in the page's URL.
pub fn new_session_id() -> String {
    format!("cs_test_local_{}", random_suffix(32))
}

fn suffix_of(session_id: &str) -> &str {
    session_id.trim_start_matches("cs_test_local_")
}

/// The page standing in for Stripe's hosted checkout.
pub fn checkout_url(public_url: &str, session_id: &str) -> String {
    format!("{public_url}/billing/local/checkout/{session_id}")
}

/// The page standing in for Stripe's customer portal.
pub fn portal_url(public_url: &str) -> String {
    format!("{public_url}/billing/local/portal")
}

/// The Stripe customer a local checkout creates, derived from the session so that confirming
/// twice names the same customer.
pub fn customer_for(session_id: &str) -> String {
    format!("cus_local_{}", suffix_of(session_id).chars().take(14).collect::<String>())
}

fn webhook(id: String, event_type: &str, created: i64, object: serde_json::Value) -> LocalWebhook {
    let body = objects::event(&id, event_type, created, object).to_string();
    LocalWebhook { event_id: id, body }
}

/// The webhooks Stripe sends when a subscription checkout is paid: the subscription, its first
/// invoice paid, and the session completed. Ids derive from the session, so confirming twice
/// queues nothing new.
pub fn checkout_paid(session: &Checkout, customer: &str, now: DateTime<Utc>) -> Vec<LocalWebhook> {
    let now = now.timestamp();
    let s = suffix_of(&session.session_id);
    let (sub_id, invoice_id) = (format!("sub_local_{s}"), format!("in_local_{s}"));
    let account = session.account_id.to_string();
    let sub = objects::subscription(&SubscriptionSpec {
        id: &sub_id,
        customer,
        account_id: &account,
        price: &session.price_id,
        status: "active",
        created: now,
        period_end: now + 30 * 86_400,
    });
    let invoice = objects::invoice(&InvoiceSpec {
        id: &invoice_id,
        customer,
        subscription: &sub_id,
        account_id: &account,
        status: "paid",
        created: now,
        amount: session.amount,
        attempt_count: 1,
        price: &session.price_id,
    });
    let completed = objects::checkout_session(&CheckoutSpec {
        id: &session.session_id,
        account_id: &account,
        customer,
        subscription: &sub_id,
        created: now,
        amount_total: session.amount,
        email: "",
    });
    vec![
        webhook(format!("evt_local_{s}_sub"), "customer.subscription.created", now, sub),
        webhook(format!("evt_local_{s}_inv"), "invoice.paid", now, invoice),
        webhook(format!("evt_local_{s}_cs"), "checkout.session.completed", now, completed),
    ]
}

/// The `customer.subscription.deleted` Stripe sends for a cancelled subscription.
pub fn subscription_cancelled(sub: &StoredSubscription, account: AccountId, now: DateTime<Utc>) -> LocalWebhook {
    let now = now.timestamp();
    let object = objects::subscription(&SubscriptionSpec {
        id: &sub.fact.id,
        customer: &sub.fact.customer,
        account_id: &account.to_string(),
        price: &sub.fact.price_id,
        status: "canceled",
        created: now,
        period_end: now,
    });
    let id = format!("evt_local_{}_del", sub.fact.id.trim_start_matches("sub_local_"));
    webhook(id, "customer.subscription.deleted", now, object)
}

/// The charge that paid a local invoice (`in_local_…` → `ch_local_…`).
pub fn charge_for(invoice_id: &str) -> String {
    format!("ch_local_{}", invoice_id.trim_start_matches("in_local_").trim_start_matches("in_"))
}

/// A local refund's id (`re_local_…`), and the `charge.refunded` Stripe sends for it: the
/// charge of `amount` with `amount_refunded` refunded so far (this refund included).
pub fn charge_refunded(invoice_id: &str, customer: &str, amount: i64, amount_refunded: i64, now: DateTime<Utc>) -> (String, LocalWebhook) {
    let suffix = random_suffix(24);
    let charge = objects::charge(&charge_for(invoice_id), customer, amount, amount_refunded, now.timestamp());
    (format!("re_local_{suffix}"), webhook(format!("evt_local_{suffix}_ref"), "charge.refunded", now.timestamp(), charge))
}

/// Stripe-like backoff after `attempts` failed deliveries: 1 s, 2 s, 4 s, ... up to an hour.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs_f64(2f64.powi(attempts.clamp(0, 12)).min(3600.0))
}

/// Posts signed webhooks to the gateway, and wakes the sender loop when some were queued.
pub struct LocalCheckout {
    http: reqwest::Client,
    /// The gateway's `/webhooks/stripe`.
    url: String,
    /// The secret the gateway verifies with (the first of `SWITCHBOARD_STRIPE_WEBHOOK_SECRET`).
    secret: SecretString,
    wake: Notify,
}

impl LocalCheckout {
    pub fn new(url: &str, secret: SecretString) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(POST_TIMEOUT).build()?;
        Ok(Self { http, url: url.to_owned(), secret, wake: Notify::new() })
    }

    /// Something was queued: deliver now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Signs `body` as Stripe does (`Stripe-Signature`, now) and posts it; `Err` says why it was
    /// not accepted.
    pub async fn post(&self, body: &str) -> Result<(), String> {
        let signature = sb_stripe::signature::header_value(self.secret.expose_secret(), Utc::now().timestamp(), body.as_bytes());
        let sent = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("gateway answered {}", r.status())),
            Err(e) => Err(format!("gateway unreachable: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_derive_from_the_session_so_a_second_confirmation_repeats_the_first() {
        let id = new_session_id();
        assert!(id.starts_with("cs_test_local_") && id.len() == "cs_test_local_".len() + 32);
        assert_eq!(customer_for(&id), customer_for(&id));
        assert_eq!(customer_for("cs_test_local_abcdefghijklmnopqrstu"), "cus_local_abcdefghijklmn");
        assert_eq!((backoff(0), backoff(3), backoff(40)), (Duration::from_secs(1), Duration::from_secs(8), Duration::from_secs(3600)));
    }
}
