//! What billing does: applies verified Stripe events to its facts, re-derives an account's access
//! and announces changes through the outbox, answers access queries, starts checkout and portal
//! sessions (Stripe's or the embedded local checkout's), sweeps ended grace periods and reconciles
//! with Stripe. Owns every transaction and outbox write; the transports (`grpc`, `events`) check
//! the caller, convert and call in here.
//!
//! No transaction or pooled connection is held while Stripe (or the gateway, for the local
//! checkout's webhooks) answers: what Stripe is asked comes first, then one short transaction.

mod apply;
mod checkout;
mod reconcile;
mod refund;

use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;
use sb_bus::{Envelope, enqueue, events::AccessChanged};
use sb_runtime::caller::ReadAccount;
use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};

pub use self::reconcile::{Drift, Report};
use crate::{
    config::BillingConfig,
    domain::{self, Access, AccessChange, AccessStatus, AccountId, Invoice, RefundRequest, StoredSubscription, StripeEvent},
    error::BillingError,
    local::LocalCheckout,
    store,
    stripe_api::StripeApi,
};

type Result<T> = std::result::Result<T, BillingError>;

/// Where checkout and portal sessions come from, and whether Stripe can be asked about events.
/// An enum rather than one trait over both adapters: they do different things (Stripe is asked
/// about every event; the local checkout sends webhooks and has pages of its own), and each use
/// case says what it does with which.
pub enum Payments {
    /// The real Stripe API (`SWITCHBOARD_STRIPE_API_KEY` set).
    Stripe(StripeApi),
    /// The embedded local checkout: local sessions, signed webhooks to the gateway.
    Local(LocalCheckout),
}

/// An account's access as a caller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountAccess {
    pub account_id: AccountId,
    /// `None` until something happened (no checkout started).
    pub access: Option<Access>,
    /// What the plan unlocks while access is granted.
    pub entitlements: Vec<String>,
    pub stripe_customer_id: Option<String>,
}

/// An account's billing: access, subscriptions, invoices and the history of access changes.
#[derive(Debug, Clone)]
pub struct BillingView {
    pub access: AccountAccess,
    pub subscriptions: Vec<StoredSubscription>,
    /// Newest first, at most 50.
    pub invoices: Vec<Invoice>,
    /// Newest first, at most 50.
    pub history: Vec<AccessChange>,
    /// Refunds admins asked for, newest first, at most 50.
    pub refunds: Vec<RefundRequest>,
}

/// Shared by the consumer, the gRPC service, the background loops and `billing reconcile`.
#[derive(Clone)]
pub struct Billing {
    pool: PgPool,
    cfg: Arc<BillingConfig>,
    payments: Arc<Payments>,
}

/// Accounts re-derived per grace sweep round.
const SWEEP_BATCH: i64 = 500;

impl Billing {
    pub fn new(pool: PgPool, cfg: BillingConfig) -> anyhow::Result<Self> {
        let payments = match &cfg.stripe_api_key {
            Some(key) => Payments::Stripe(StripeApi::new(key, &cfg.stripe_api_base)?),
            None => {
                let secret = cfg.webhook_secrets.first().cloned().context("the local checkout needs a webhook secret to sign with")?;
                Payments::Local(LocalCheckout::new(&cfg.local_webhook_url, secret)?)
            }
        };
        Ok(Self { pool, cfg: Arc::new(cfg), payments: Arc::new(payments) })
    }

    /// Whether Stripe's API is used (and so asked about every event's objects).
    pub fn calls_stripe(&self) -> bool {
        match *self.payments {
            Payments::Stripe(_) => true,
            Payments::Local(_) => false,
        }
    }

    fn account_access(&self, account: AccountId, access: Option<Access>, stripe_customer_id: Option<String>) -> AccountAccess {
        let entitlements = access.as_ref().map(|a| self.cfg.plans.granted(a.status, &a.plan)).unwrap_or_default();
        AccountAccess { account_id: account, access, entitlements, stripe_customer_id }
    }

    /// The account's access (one query: this answers every `/v1/me`).
    /// The plans customers can buy, the default first.
    pub fn plans(&self) -> &[crate::domain::Plan] {
        &self.cfg.plans.0
    }

    pub async fn access(&self, account: ReadAccount) -> Result<AccountAccess> {
        let mut conn = self.pool.acquire().await?;
        let (access, customer) = store::access_with_customer(&mut conn, account.id()).await?;
        Ok(self.account_access(account.id(), access, customer))
    }

    /// The account's access, subscriptions, invoices and history.
    pub async fn billing(&self, account: ReadAccount) -> Result<BillingView> {
        let account = account.id();
        let mut conn = self.pool.acquire().await?;
        let (access, customer) = store::access_with_customer(&mut conn, account).await?;
        let subscriptions = store::subscriptions(&mut conn, account).await?;
        let invoices = store::invoices(&mut conn, account, 50).await?;
        let history = store::history(&mut conn, account, 50).await?;
        let refunds = store::refund_requests(&mut conn, account, 50).await?;
        Ok(BillingView { access: self.account_access(account, access, customer), subscriptions, invoices, history, refunds })
    }

    /// Re-derives an account's access from everything known and, if it moved, records why and
    /// publishes `billing.access.changed.v1` in the same transaction.
    async fn recompute(
        &self,
        conn: &mut PgConnection,
        account: AccountId,
        cause: Option<(&Envelope, &StripeEvent)>,
    ) -> std::result::Result<AccessStatus, sqlx::Error> {
        let old = store::lock_access(conn, account).await?;
        let now = Utc::now();
        let (facts, stripe_customer_id) = store::account_facts(conn, account, now).await?;
        let derived = domain::derive(&facts, now, self.cfg.grace_period, self.cfg.refund_policy);
        if !store::update_access(conn, &old, &derived, now).await? {
            return Ok(old.status);
        }
        let change = AccessChanged {
            account_id: account,
            from: old.status,
            to: derived.status,
            plan: derived.plan.clone(),
            entitlements: self.cfg.plans.granted(derived.status, &derived.plan),
            reason: derived.reason.clone(),
            cause_event_id: derived.cause_event_id.clone(),
            cause_event_type: derived.cause_event_type.clone(),
            stripe_customer_id,
            grace_until: derived.grace_until,
            since: now,
        };
        let env = match cause {
            Some((cause, _)) => Envelope::caused_by(cause, &change),
            None => Envelope::of(&change),
        };
        enqueue(conn, &env).await?;
        info!(%account, from = %old.status, to = %derived.status, plan = %derived.plan, reason = %derived.reason, "access changed");
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

    /// Re-derives every account whose grace period has ended (past_due → revoked), each in a
    /// short transaction of its own.
    pub async fn sweep_grace(&self) -> Result<usize> {
        let due = store::grace_expired(&mut *self.pool.acquire().await?, Utc::now(), SWEEP_BATCH).await?;
        for account in &due {
            let mut tx = self.pool.begin().await?;
            self.recompute(&mut tx, *account, None).await?;
            sb_bus::outbox::commit(tx, crate::SERVICE).await?;
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
