//! Reconciliation: lists every subscription from the Stripe API and repairs drift in billing's
//! state (missed or failed webhooks, manual changes in Stripe's dashboard). What Stripe returns is
//! the present, so it is applied stamped with the time of the listing: events older than that,
//! arriving later, cannot undo it. Stripe is asked with no connection held; each repair is one
//! short transaction.
//!
//! An operator command (`billing reconcile`): its errors go to a terminal with their context, so
//! it returns `anyhow` errors rather than [`crate::error::BillingError`].

use anyhow::{Context as _, anyhow, bail};
use chrono::Utc;

use super::{Billing, Payments};
use crate::{
    domain::{AccountId, REFETCHED_RANK, SubscriptionStatus, metadata_account},
    store,
    stripe_api::{ApiError, fact_from_stripe},
};

/// One difference between Stripe and billing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub subscription_id: String,
    pub stripe_customer_id: String,
    pub account_id: Option<AccountId>,
    /// Billing's status, `None` when billing did not know the subscription.
    pub ours: Option<SubscriptionStatus>,
    pub stripe: SubscriptionStatus,
    pub repaired: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checked: usize,
    pub drift: Vec<Drift>,
    /// Subscriptions billing knows that Stripe did not list (reported, never deleted).
    pub unknown_to_stripe: Vec<String>,
}

impl Billing {
    /// Compares billing with Stripe; with `apply`, repairs each drift and re-derives the account's
    /// access (publishing `billing.access.changed.v1` where it moves).
    pub async fn reconcile(&self, apply: bool) -> anyhow::Result<Report> {
        let Payments::Stripe(api) = &*self.payments else {
            bail!(
                "reconciliation reads the Stripe API: set SWITCHBOARD_STRIPE_API_KEY (and SWITCHBOARD_STRIPE_API_BASE for a non-default endpoint)"
            );
        };
        let listed = api.all_subscriptions().await.map_err(|e| anyhow!("listing subscriptions from Stripe: {e}"))?;
        let ours = store::all_subscriptions(&mut *self.pool.acquire().await?).await?;
        let now = Utc::now();
        let mut report = Report { checked: listed.len(), ..Default::default() };
        for sub in &listed {
            let fact =
                fact_from_stripe(sub, now, REFETCHED_RANK, "", "reconciliation").with_context(|| format!("subscription {}", sub.id))?;
            let stored = ours.iter().find(|o| o.fact.id == fact.id);
            let same =
                stored.is_some_and(|o| o.fact.status == fact.status && (fact.price_id.is_empty() || o.fact.price_id == fact.price_id));
            if same {
                continue;
            }
            let linked = store::account_for_customer(&mut *self.pool.acquire().await?, &fact.customer).await?;
            // Not linked yet: the subscription's metadata, else the customer's (asked with no
            // connection held). A customer Stripe does not know names no account; Stripe being
            // unavailable stops the run (repaired without its account, the subscription would no
            // longer differ and later runs would never link it).
            let named = match (linked, metadata_account(&sub.metadata)) {
                (Some(_), _) => None,
                (None, Some(account)) => Some(account),
                (None, None) => match api.customer_account(&fact.customer).await {
                    Ok(account) => account,
                    Err(ApiError::Refused(_)) => None,
                    Err(e @ ApiError::Unavailable { .. }) => bail!("reading customer {} from Stripe: {e}", fact.customer),
                },
            };
            let mut drift = Drift {
                subscription_id: fact.id.clone(),
                stripe_customer_id: fact.customer.clone(),
                account_id: linked.or(named),
                ours: stored.map(|o| o.fact.status),
                stripe: fact.status,
                repaired: false,
            };
            if apply {
                let mut tx = self.pool.begin().await?;
                let account = match (linked, named) {
                    (None, Some(named)) => store::resolve_customer(&mut tx, &fact.customer, Some(named)).await?,
                    (linked, _) => linked,
                };
                store::apply_subscription(&mut tx, &fact, &self.cfg.plans.name_for_price(&fact.price_id)).await?;
                if let Some(account) = account {
                    self.recompute(&mut tx, account, None).await?;
                }
                sb_bus::outbox::commit(tx, crate::SERVICE).await?;
                drift.account_id = account;
                drift.repaired = true;
            }
            report.drift.push(drift);
        }
        report.unknown_to_stripe =
            ours.iter().filter(|o| !listed.iter().any(|s| s.id.as_str() == o.fact.id)).map(|o| o.fact.id.clone()).collect();
        Ok(report)
    }
}
