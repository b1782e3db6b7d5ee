//! The embedded default for Stripe: with no Stripe key, checkout and portal sessions are local,
//! and confirming one makes billing do what Stripe would — send correctly signed, Stripe-shaped
//! webhooks to the gateway's `/webhooks/stripe`. Those take exactly the path real Stripe events
//! take (signature check, receipt, bus, this service's consumer), so the whole payment flow runs
//! on one machine and tests it end to end.
//!
//! Webhooks are queued in the database in the same transaction as the confirmation and delivered
//! by a sender loop that retries with backoff until the gateway answers 2xx, as Stripe does.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use rand::{Rng, distr::Alphanumeric};
use sb_stripe::objects::{self, CheckoutSpec, InvoiceSpec, SubscriptionSpec};
use secrecy::ExposeSecret;
use sqlx::PgConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::{service::Billing, store};

/// A random suffix like Stripe's ids have.
pub fn random_suffix(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Local checkout session ids; the suffix is also the capability in the page's URL.
pub fn new_session_id() -> String {
    format!("cs_test_local_{}", random_suffix(32))
}

pub fn suffix_of(session_id: &str) -> &str {
    session_id.trim_start_matches("cs_test_local_")
}

/// Wakes the sender when something was queued.
#[derive(Clone, Default)]
pub struct Sender {
    wake: Arc<Notify>,
}

impl Sender {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Queues the webhooks Stripe sends when a subscription checkout is paid: the subscription,
/// its first invoice paid, and the session completed. Ids derive from the session, so confirming
/// twice queues nothing new.
pub async fn queue_checkout_paid(conn: &mut PgConnection, session: &store::CheckoutRow, customer: &str) -> sqlx::Result<()> {
    let now = Utc::now().timestamp();
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
    let events = [
        (format!("evt_local_{s}_sub"), "customer.subscription.created", sub),
        (format!("evt_local_{s}_inv"), "invoice.paid", invoice),
        (format!("evt_local_{s}_cs"), "checkout.session.completed", completed),
    ];
    for (id, ty, object) in events {
        store::queue_local_webhook(conn, &id, &objects::event(&id, ty, now, object).to_string()).await?;
    }
    Ok(())
}

/// Queues `customer.subscription.deleted` for a cancelled local subscription.
pub async fn queue_subscription_cancelled(
    conn: &mut PgConnection,
    sub: &crate::domain::StoredSubscription,
    account: Uuid,
) -> sqlx::Result<()> {
    let now = Utc::now().timestamp();
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
    store::queue_local_webhook(conn, &id, &objects::event(&id, "customer.subscription.deleted", now, object).to_string()).await
}

/// Delivers queued webhooks to the gateway until shutdown.
pub async fn run_sender(billing: Billing, sender: Sender, shutdown: CancellationToken) {
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "local checkout webhook sender cannot start");
            return;
        }
    };
    loop {
        match deliver_due(&billing, &http).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "local checkout webhooks: database unavailable; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sender.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Sends what is due; returns how many were delivered.
async fn deliver_due(billing: &Billing, http: &reqwest::Client) -> anyhow::Result<usize> {
    let mut tx = billing.pool.begin().await?;
    let due = store::due_local_webhooks(&mut tx, 20).await?;
    let Some(secret) = billing.cfg.webhook_secrets.first() else { return Ok(0) };
    let mut delivered = 0;
    for (id, body, attempts) in due {
        let t = Utc::now().timestamp();
        let signature = sb_stripe::signature::header_value(secret.expose_secret(), t, body.as_bytes());
        let sent = http
            .post(&billing.cfg.local_webhook_url)
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                store::local_webhook_sent(&mut tx, id).await?;
                delivered += 1;
            }
            other => {
                let why = match other {
                    Ok(r) => format!("gateway answered {}", r.status()),
                    Err(e) => format!("gateway unreachable: {e}"),
                };
                // Stripe-like backoff: 1 s, 2 s, 4 s, ... up to an hour.
                let retry_in = 2f64.powi(attempts.min(12)).min(3600.0);
                debug!(webhook = id, retry_in, %why, "local checkout webhook not delivered");
                store::local_webhook_failed(&mut tx, id, retry_in, &why).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(delivered)
}
