//! What billing does: applies verified Stripe events to its facts, re-derives an account's access
//! and announces changes through the outbox, starts checkouts, and sweeps ended grace periods.
//! Transport modules (`events`, `grpc`, `local`) call into this one.

use std::sync::Arc;

use chrono::Utc;
use sb_bus::{Envelope, HandlerError, catalog, enqueue};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    SERVICE,
    config::BillingConfig,
    domain::{self, AccessStatus, Fact, REFETCHED_RANK, StripeEvent, status_rank},
    store,
    stripe_api::{self, ApiError, StripeApi},
};

/// Shared by the consumer, the gRPC service and the background loops.
#[derive(Clone)]
pub struct Billing {
    pub pool: PgPool,
    pub cfg: Arc<BillingConfig>,
    /// The real Stripe API when a key is configured; `None` = the embedded local checkout.
    pub stripe: Option<Arc<StripeApi>>,
}

impl From<ApiError> for HandlerError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unavailable(m) => HandlerError::Transient(m),
            ApiError::Refused(m) => HandlerError::Permanent(m),
        }
    }
}

/// Why a checkout could not start.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("{0}")]
    UnknownPlan(String),
    #[error("the account already has an active subscription")]
    AlreadyActive,
    #[error(transparent)]
    Stripe(ApiError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What happened to one Stripe event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Seen before (same event id, or Stripe's duplicate Event object for the same change).
    Duplicate,
    Ignored,
    /// Recorded, but no account is known for its customer yet; applied when one is.
    Unlinked,
}

impl Billing {
    pub fn new(pool: PgPool, cfg: BillingConfig) -> anyhow::Result<Self> {
        let stripe = match &cfg.stripe_api_key {
            Some(key) => Some(Arc::new(StripeApi::new(key, &cfg.stripe_api_base)?)),
            None => None,
        };
        Ok(Self { pool, cfg: Arc::new(cfg), stripe })
    }

    fn plan_for_price(&self, price_id: &str) -> String {
        if price_id.is_empty() { String::new() } else { self.cfg.plans.name_for_price(price_id) }
    }

    /// Starts a checkout for `plan` (the default plan when empty): a Stripe Checkout Session, or a
    /// local one without a Stripe key. The account shows `pending` until the payment is confirmed.
    pub async fn start_checkout(&self, account: Uuid, plan: &str, email: &str) -> Result<store::CheckoutRow, CheckoutError> {
        let cfg = &self.cfg;
        let plan = if plan.is_empty() {
            cfg.plans.default_plan().clone()
        } else {
            cfg.plans.by_name(plan).cloned().ok_or_else(|| {
                let names: Vec<&str> = cfg.plans.0.iter().map(|p| p.name.as_str()).collect();
                CheckoutError::UnknownPlan(format!("plan: unknown plan {plan:?} (one of: {})", names.join(", ")))
            })?
        };
        let mut conn = self.pool.acquire().await?;
        if store::get_access(&mut conn, account).await?.is_some_and(|a| a.status.grants()) {
            return Err(CheckoutError::AlreadyActive);
        }
        let customer = store::customer_for_account(&mut conn, account).await?;
        drop(conn);
        let now = Utc::now();
        let success_url = format!("{}/billing/local/done", cfg.public_url);
        let cancel_url = format!("{}/billing/local/cancelled", cfg.public_url);
        let (id, url, expires_at) = match &self.stripe {
            Some(api) => {
                let s = api
                    .create_checkout(account, &plan, customer.as_deref(), Some(email), &success_url, &cancel_url)
                    .await
                    .map_err(CheckoutError::Stripe)?;
                (s.id, s.url, s.expires_at)
            }
            None => {
                let id = crate::local::new_session_id();
                let url = format!("{}/billing/local/checkout/{id}", cfg.public_url);
                (id, url, now + chrono::Duration::hours(24))
            }
        };
        let row = store::CheckoutRow {
            session_id: id,
            account_id: account,
            plan: plan.name.clone(),
            price_id: plan.price_id.clone(),
            amount: plan.amount,
            currency: "usd".into(),
            url,
            local: self.stripe.is_none(),
            status: "open".into(),
            success_url,
            cancel_url,
            created_at: now,
            expires_at,
        };
        // No lock is held while Stripe answers; the state is checked again before recording.
        let mut tx = self.pool.begin().await?;
        if store::lock_access(&mut tx, account).await?.status.grants() {
            return Err(CheckoutError::AlreadyActive);
        }
        store::insert_checkout(&mut tx, &row).await?;
        self.recompute(&mut tx, account, None).await?;
        tx.commit().await?;
        metrics::counter!("billing_checkouts_started_total", "kind" => if row.local { "local" } else { "stripe" }).increment(1);
        Ok(row)
    }

    /// Applies one verified Stripe event inside the caller's transaction.
    pub async fn apply_event(&self, conn: &mut PgConnection, cause: &Envelope, ev: &StripeEvent) -> Result<Outcome, HandlerError> {
        let object_id = ev.object_id();
        if !store::record_event(conn, &ev.id, &ev.event_type, &object_id, &ev.dedupe_key(), ev.created).await? {
            metrics::counter!("billing_stripe_events_total", "outcome" => "duplicate").increment(1);
            return Ok(Outcome::Duplicate);
        }
        let fact = domain::read(ev).map_err(HandlerError::permanent)?;
        let (customer, hint) = match &fact {
            Fact::Ignored(why) => {
                store::set_outcome(conn, &ev.id, "ignored").await?;
                info!(event_id = %ev.id, event_type = %ev.event_type, why, "Stripe event ignored");
                metrics::counter!("billing_stripe_events_total", "outcome" => "ignored").increment(1);
                return Ok(Outcome::Ignored);
            }
            Fact::CheckoutCompleted { customer, account, .. } => (customer.clone(), *account),
            Fact::Subscription(f) => (f.customer.clone(), domain::account_hint(&ev.object)),
            Fact::Invoice { invoice, .. } => (invoice.customer.clone(), domain::account_hint(&ev.object)),
            Fact::Refund(r) => (r.customer.clone(), None),
        };
        let account = self.resolve_account(conn, &customer, hint).await?;
        match &fact {
            Fact::CheckoutCompleted { session_id, subscription, .. } => {
                let plan = store::complete_checkout(conn, session_id).await?.unwrap_or_default();
                if let Some(sub) = subscription {
                    store::apply_subscription(conn, sub, &plan).await?;
                    self.refetch(conn, &sub.id, ev).await?;
                }
            }
            Fact::Subscription(f) => {
                store::apply_subscription(conn, f, &self.plan_for_price(&f.price_id)).await?;
                self.refetch(conn, &f.id, ev).await?;
            }
            Fact::Invoice { invoice, subscription, failed } => {
                store::apply_invoice(conn, invoice, ev.created, status_rank(&invoice.status)).await?;
                if let Some(sub) = subscription {
                    store::apply_subscription(conn, sub, "").await?;
                    self.refetch(conn, &sub.id, ev).await?;
                }
                if *failed {
                    let data = json!({
                        "stripe_event_id": ev.id, "invoice_id": invoice.id, "subscription_id": invoice.subscription_id,
                        "stripe_customer_id": customer, "amount_due": invoice.amount_due, "currency": invoice.currency,
                        "attempt_count": invoice.attempt_count, "next_payment_attempt": invoice.next_payment_attempt,
                    });
                    self.announce(conn, cause, catalog::BILLING_PAYMENT_FAILED, account, data).await?;
                }
            }
            Fact::Refund(r) => {
                store::apply_refund(conn, r).await?;
                let data = json!({
                    "stripe_event_id": ev.id, "charge_id": r.charge_id, "stripe_customer_id": customer,
                    "amount": r.amount, "amount_refunded": r.amount_refunded, "currency": r.currency,
                    "full": r.amount_refunded >= r.amount,
                });
                self.announce(conn, cause, catalog::BILLING_REFUND_ISSUED, account, data).await?;
            }
            Fact::Ignored(_) => {}
        }
        let outcome = match account {
            Some(account) => {
                self.recompute(conn, account, Some((cause, ev))).await?;
                Outcome::Applied
            }
            None => {
                warn!(event_id = %ev.id, event_type = %ev.event_type, "no account known for this Stripe customer yet; kept for when it is");
                Outcome::Unlinked
            }
        };
        if outcome == Outcome::Unlinked {
            store::set_outcome(conn, &ev.id, "unlinked").await?;
        }
        metrics::counter!("billing_stripe_events_total", "outcome" => if outcome == Outcome::Applied { "applied" } else { "unlinked" })
            .increment(1);
        Ok(outcome)
    }

    /// The account of a Stripe customer: stored link, else the account the object names (linked
    /// now), else, with a Stripe key, the customer's own metadata.
    async fn resolve_account(&self, conn: &mut PgConnection, customer: &str, hint: Option<Uuid>) -> Result<Option<Uuid>, HandlerError> {
        if let Some(account) = store::account_for_customer(conn, customer).await? {
            return Ok(Some(account));
        }
        let found = match (hint, &self.stripe) {
            (Some(a), _) => Some(a),
            (None, Some(api)) => api.customer_account(customer).await?,
            (None, None) => None,
        };
        match found {
            Some(account) => Ok(Some(store::link_customer(conn, customer, account).await?)),
            None => Ok(None),
        }
    }

    /// With a Stripe key, reads the subscription back from Stripe: what it returns is the present,
    /// so it outranks any event of the same second.
    async fn refetch(&self, conn: &mut PgConnection, subscription: &str, ev: &StripeEvent) -> Result<(), HandlerError> {
        let Some(api) = &self.stripe else { return Ok(()) };
        let sub = api.subscription(subscription).await?;
        let fact = stripe_api::fact_from_stripe(&sub, ev.created, REFETCHED_RANK, &ev.id, &ev.event_type);
        store::apply_subscription(conn, &fact, &self.plan_for_price(&fact.price_id)).await?;
        Ok(())
    }

    async fn announce(
        &self,
        conn: &mut PgConnection,
        cause: &Envelope,
        event_type: &str,
        account: Option<Uuid>,
        data: serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        let mut env = Envelope::caused_by(cause, SERVICE, event_type, data);
        if let Some(a) = account {
            env = env.with_account(a);
        }
        enqueue(conn, &env).await
    }

    /// Re-derives an account's access from everything known and, if it moved, records why and
    /// publishes `billing.access.changed.v1` in the same transaction.
    pub async fn recompute(
        &self,
        conn: &mut PgConnection,
        account: Uuid,
        cause: Option<(&Envelope, &StripeEvent)>,
    ) -> Result<AccessStatus, sqlx::Error> {
        let old = store::lock_access(conn, account).await?;
        let now = Utc::now();
        let facts = store::account_facts(conn, account, now).await?;
        let derived = domain::derive(&facts, now, self.cfg.grace_period, self.cfg.refund_policy);
        if !store::update_access(conn, &old, &derived, now).await? {
            return Ok(old.status);
        }
        let customer = store::customer_for_account(conn, account).await?;
        let data = json!({
            "account_id": account,
            "from": old.status.as_str(),
            "to": derived.status.as_str(),
            "plan": derived.plan,
            "entitlements": if derived.status.grants() { self.cfg.plans.entitlements(&derived.plan) } else { Vec::new() },
            "reason": derived.reason,
            "cause_event_id": derived.cause_event_id,
            "cause_event_type": derived.cause_event_type,
            "stripe_customer_id": customer,
            "grace_until": derived.grace_until,
            "since": now,
        });
        let env = match cause {
            Some((env, _)) => Envelope::caused_by(env, SERVICE, catalog::BILLING_ACCESS_CHANGED, data),
            None => Envelope::new(SERVICE, catalog::BILLING_ACCESS_CHANGED, data),
        };
        enqueue(conn, &env.with_account(account)).await?;
        info!(%account, from = old.status.as_str(), to = derived.status.as_str(), plan = %derived.plan, reason = %derived.reason, "access changed");
        metrics::counter!("billing_access_changes_total", "to" => derived.status.as_str()).increment(1);
        if derived.status == AccessStatus::Active
            && let Some((_, ev)) = cause
            && ev.id == derived.cause_event_id
        {
            // Stripe's `created` is whole seconds: this is the founder's payment → access alarm,
            // not a precise latency (the bench measures that).
            let delay = (now - ev.created).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("billing_payment_to_access_seconds").record(delay);
        }
        Ok(derived.status)
    }

    /// Re-derives every account whose grace period has ended (past_due → revoked).
    pub async fn sweep_grace(&self) -> anyhow::Result<usize> {
        let due = store::grace_expired(&self.pool, Utc::now()).await?;
        for account in &due {
            let mut tx = self.pool.begin().await?;
            self.recompute(&mut tx, *account, None).await?;
            tx.commit().await?;
        }
        Ok(due.len())
    }

    /// Runs [`Billing::sweep_grace`] every `sweep_interval` until shutdown.
    pub async fn run_grace_sweeper(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.sweep_grace().await {
                Ok(0) => {}
                Ok(n) => info!(accounts = n, "grace periods ended"),
                Err(e) => warn!(error = %e, "grace sweep failed; will retry"),
            }
        }
    }
}
