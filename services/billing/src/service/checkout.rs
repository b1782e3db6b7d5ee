//! Checkout and portal sessions — Stripe's, or the embedded local checkout's — and the local
//! checkout's own flow: confirming a session or cancelling a subscription queues the webhooks
//! Stripe would send (in the same transaction), and a sender delivers them to the gateway with no
//! transaction open.

use std::time::Duration;

use chrono::Utc;
use sb_runtime::caller::{ActForAccount, Caller};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Billing, Payments, Result};
use crate::{
    domain::{Checkout, CheckoutStatus, Plan},
    error::BillingError,
    local::{self, LocalCheckout},
    store,
};

/// Local webhooks claimed per delivery round.
const WEBHOOK_BATCH: i64 = 20;
/// The lease of a claimed webhook, per place in its batch: the k-th (from 1) is kept from other
/// senders for (k + 1) × this, longer than posting the k before it and itself can take, so each is
/// settled (sent or rescheduled) before its lease ends — and one whose sender died comes due again
/// that soon (the first after 20 s), not after the whole batch's time.
const WEBHOOK_LEASE_STEP: Duration = local::POST_TIMEOUT;
/// How often the sender looks for due webhooks when nothing wakes it.
const SENDER_POLL: Duration = Duration::from_secs(1);

impl Billing {
    /// `name`, or the default plan when empty.
    fn plan(&self, name: &str) -> Result<Plan> {
        let plans = &self.cfg.plans;
        if name.is_empty() {
            return Ok(plans.default_plan().clone());
        }
        plans.by_name(name).cloned().ok_or_else(|| BillingError::UnknownPlan { plan: name.to_owned(), known: plans.names().join(", ") })
    }

    fn local(&self) -> Result<&LocalCheckout> {
        match &*self.payments {
            Payments::Local(local) => Ok(local),
            Payments::Stripe(_) => Err(BillingError::LocalCheckoutOff),
        }
    }

    /// Starts a checkout for `plan` (the default plan when empty): a Stripe Checkout Session, or a
    /// local one without a Stripe key. The account shows `pending` until the payment is confirmed.
    pub async fn start_checkout(&self, account: ActForAccount, plan: &str, email: &str) -> Result<Checkout> {
        let cfg = &self.cfg;
        let plan = self.plan(plan)?;
        let account = account.id();
        let customer = {
            let mut conn = self.pool.acquire().await?;
            if store::get_access(&mut conn, account).await?.is_some_and(|a| a.status.grants()) {
                return Err(BillingError::AlreadyActive);
            }
            store::customer_for_account(&mut conn, account).await?
            // The connection goes back to the pool before Stripe is asked.
        };
        let now = Utc::now();
        let success_url = format!("{}/billing/local/done", cfg.public_url);
        let cancel_url = format!("{}/billing/local/cancelled", cfg.public_url);
        let (session_id, url, expires_at, local) = match &*self.payments {
            Payments::Stripe(api) => {
                let s = api.create_checkout(account, &plan, customer.as_deref(), Some(email), &success_url, &cancel_url).await?;
                (s.id, s.url, s.expires_at, false)
            }
            Payments::Local(_) => {
                let id = local::new_session_id();
                let url = local::checkout_url(&cfg.public_url, &id);
                (id, url, now + chrono::Duration::hours(24), true)
            }
        };
        let checkout = Checkout {
            session_id,
            account_id: account,
            plan: plan.name,
            price_id: plan.price_id,
            amount: plan.amount,
            currency: crate::domain::CURRENCY.into(),
            url,
            local,
            status: CheckoutStatus::Open,
            success_url,
            cancel_url,
            created_at: now,
            expires_at,
        };
        // Nothing was locked while Stripe answered; the state is checked again before recording.
        let mut tx = self.pool.begin().await?;
        if store::lock_access(&mut tx, account).await?.status.grants() {
            return Err(BillingError::AlreadyActive);
        }
        store::insert_checkout(&mut tx, &checkout).await?;
        self.recompute(&mut tx, account, None).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        metrics::counter!("billing_checkouts_started_total", "kind" => if local { "local" } else { "stripe" }).increment(1);
        Ok(checkout)
    }

    /// Where the account's customer manages their subscription: a Stripe portal session, or the
    /// local portal page. Needs a Stripe customer (a completed checkout).
    pub async fn portal_session(&self, account: ActForAccount) -> Result<String> {
        let customer = {
            let mut conn = self.pool.acquire().await?;
            store::customer_for_account(&mut conn, account.id()).await?.ok_or(BillingError::NoCustomer)?
        };
        let public_url = &self.cfg.public_url;
        match &*self.payments {
            Payments::Stripe(api) => Ok(api.create_portal(&customer, &format!("{public_url}/v1/me")).await?),
            Payments::Local(_) => Ok(local::portal_url(public_url)),
        }
    }

    /// A local checkout session the caller may see (another account's is "not found", so session
    /// ids cannot be probed).
    pub async fn local_checkout(&self, caller: &Caller, session_id: &str) -> Result<Checkout> {
        self.local()?;
        let mut conn = self.pool.acquire().await?;
        let found = store::checkout(&mut conn, session_id, false).await?.filter(|c| c.local);
        let checkout = found.ok_or(BillingError::NotFound("checkout session"))?;
        caller.read(checkout.account_id).map_err(|_| BillingError::NotFound("checkout session"))?;
        Ok(checkout)
    }

    /// Pays a local checkout session: queues the webhooks Stripe sends for a paid subscription
    /// checkout and wakes the sender. Paying a paid session again changes nothing; an expired one
    /// is refused. Returns the session as it was.
    pub async fn complete_local_checkout(&self, account: ActForAccount, session_id: &str) -> Result<Checkout> {
        let local = self.local()?;
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let found = store::checkout(&mut tx, session_id, true).await?.filter(|c| c.local && c.account_id == account.id());
        let checkout = found.ok_or(BillingError::NotFound("checkout session"))?;
        match checkout.status_at(now) {
            CheckoutStatus::Open => {}
            CheckoutStatus::Complete => return Ok(checkout),
            CheckoutStatus::Expired => return Err(BillingError::CheckoutExpired),
        }
        let customer = match store::customer_for_account(&mut tx, checkout.account_id).await? {
            Some(existing) => existing,
            None => local::customer_for(&checkout.session_id),
        };
        for webhook in local::checkout_paid(&checkout, &customer, now) {
            store::queue_local_webhook(&mut tx, &webhook).await?;
        }
        tx.commit().await?;
        local.wake();
        Ok(checkout)
    }

    /// Cancels the account's live local subscription (as Stripe's portal would): queues
    /// `customer.subscription.deleted`. Returns the subscription's id.
    pub async fn cancel_local_subscription(&self, account: ActForAccount) -> Result<String> {
        let local = self.local()?;
        let mut tx = self.pool.begin().await?;
        let sub = store::live_subscription(&mut tx, account.id()).await?.ok_or(BillingError::NoLiveSubscription)?;
        store::queue_local_webhook(&mut tx, &local::subscription_cancelled(&sub, account.id(), Utc::now())).await?;
        tx.commit().await?;
        local.wake();
        Ok(sub.fact.id)
    }

    /// Posts the local webhooks that are due to the gateway: claimed (leased) in one statement,
    /// each posted with no connection held, each outcome recorded on its own. Returns how many
    /// were delivered.
    pub async fn deliver_local_webhooks(&self) -> Result<usize> {
        let local = self.local()?;
        let due = store::claim_local_webhooks(&mut *self.pool.acquire().await?, WEBHOOK_BATCH, WEBHOOK_LEASE_STEP).await?;
        let mut delivered = 0;
        for webhook in due {
            let posted = local.post(&webhook.body).await;
            let mut conn = self.pool.acquire().await?;
            match posted {
                Ok(()) => {
                    store::local_webhook_sent(&mut conn, webhook.id).await?;
                    delivered += 1;
                }
                Err(why) => {
                    let retry_in = local::backoff(webhook.attempts);
                    debug!(webhook = webhook.id, retry_in_secs = retry_in.as_secs(), %why, "local checkout webhook not delivered");
                    store::local_webhook_failed(&mut conn, webhook.id, retry_in, &why).await?;
                }
            }
        }
        Ok(delivered)
    }

    /// Delivers the local checkout's webhooks until shutdown (returns at once with Stripe configured).
    pub async fn run_local_sender(self, shutdown: CancellationToken) {
        let Ok(local) = self.local() else { return };
        while !shutdown.is_cancelled() {
            match self.deliver_local_webhooks().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => warn!(error = %e, "local checkout webhooks: delivery failed; will retry"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = local.woken() => {}
                _ = tokio::time::sleep(SENDER_POLL) => {}
            }
        }
    }
}
