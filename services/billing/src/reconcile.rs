//! Reconciliation: lists every subscription from the Stripe API and repairs drift in billing's
//! state (missed or failed webhooks, manual changes in Stripe's dashboard). What Stripe returns is
//! the present, so it is applied stamped with the time of the listing: events older than that,
//! arriving later, cannot undo it.

use chrono::Utc;
use uuid::Uuid;

use crate::{
    domain::REFETCHED_RANK,
    service::Billing,
    store,
    stripe_api::{ApiError, fact_from_stripe},
};

/// One difference between Stripe and billing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub subscription_id: String,
    pub stripe_customer_id: String,
    pub account_id: Option<Uuid>,
    /// Billing's status, `None` when billing did not know the subscription.
    pub ours: Option<String>,
    pub stripe: String,
    pub repaired: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checked: usize,
    pub drift: Vec<Drift>,
    /// Subscriptions billing knows that Stripe did not list (reported, never deleted).
    pub unknown_to_stripe: Vec<String>,
}

/// Compares billing with Stripe; with `apply`, repairs each drift and re-derives the account's
/// access (publishing `billing.access.changed.v1` where it moves).
pub async fn run(billing: &Billing, apply: bool) -> anyhow::Result<Report> {
    let api = billing.stripe.as_ref().ok_or_else(|| {
        anyhow::anyhow!("reconciliation reads the Stripe API: set SWITCHBOARD_STRIPE_API_KEY (and SWITCHBOARD_STRIPE_API_BASE for a non-default endpoint)")
    })?;
    let listed = api.all_subscriptions().await.map_err(|e| match e {
        ApiError::Unavailable(m) | ApiError::Refused(m) => anyhow::anyhow!("listing subscriptions from Stripe: {m}"),
    })?;
    let ours = store::all_subscriptions(&billing.pool).await?;
    let now = Utc::now();
    let mut report = Report { checked: listed.len(), ..Default::default() };
    for sub in &listed {
        let fact = fact_from_stripe(sub, now, REFETCHED_RANK, "", "reconciliation");
        let stored = ours.iter().find(|o| o.fact.id == fact.id);
        let same = stored.is_some_and(|o| o.fact.status == fact.status && (fact.price_id.is_empty() || o.fact.price_id == fact.price_id));
        if same {
            continue;
        }
        let mut tx = billing.pool.begin().await?;
        let mut account = store::account_for_customer(&mut tx, &fact.customer).await?;
        if account.is_none() {
            let hint = sub.metadata.get("account_id").and_then(|a| Uuid::parse_str(a).ok());
            let found = match hint {
                Some(a) => Some(a),
                // A customer Stripe does not know names no account; Stripe being unavailable stops
                // the run (repaired without its account, the subscription would no longer differ
                // and later runs would never link it).
                None => match api.customer_account(&fact.customer).await {
                    Ok(a) => a,
                    Err(ApiError::Refused(_)) => None,
                    Err(ApiError::Unavailable(m)) => anyhow::bail!("reading customer {} from Stripe: {m}", fact.customer),
                },
            };
            if let Some(a) = found {
                account = Some(store::link_customer(&mut tx, &fact.customer, a).await?);
            }
        }
        let mut drift = Drift {
            subscription_id: fact.id.clone(),
            stripe_customer_id: fact.customer.clone(),
            account_id: account,
            ours: stored.map(|o| o.fact.status.clone()),
            stripe: fact.status.clone(),
            repaired: false,
        };
        if apply {
            let plan = if fact.price_id.is_empty() { String::new() } else { billing.cfg.plans.name_for_price(&fact.price_id) };
            store::apply_subscription(&mut tx, &fact, &plan).await?;
            if let Some(a) = account {
                billing.recompute(&mut tx, a, None).await?;
            }
            tx.commit().await?;
            drift.repaired = true;
        }
        report.drift.push(drift);
    }
    report.unknown_to_stripe =
        ours.iter().filter(|o| !listed.iter().any(|s| s.id.as_str() == o.fact.id)).map(|o| o.fact.id.clone()).collect();
    Ok(report)
}
