//! Applying a verified Stripe event: idempotently (event id and dedupe key) and order-safely
//! (facts carry Stripe's time; older never overwrites newer), then re-deriving the account's
//! access. With a Stripe key, Stripe is asked first about the event's objects (the subscription as
//! it is now; the customer's account when nothing else names it), with no connection held while it
//! answers; everything is then written in one short transaction.

use sb_bus::{
    Envelope, enqueue,
    events::{PaymentFailed, RefundIssued},
};
use sqlx::PgConnection;
use tracing::{info, warn};

use super::{Billing, Payments, Result};
use crate::{
    domain::{self, AccountId, EventOutcome, Fact, REFETCHED_RANK, StripeEvent, SubscriptionFact},
    store,
    stripe_api::{StripeApi, fact_from_stripe},
};

/// What Stripe said about an event's objects, asked before any transaction opened.
#[derive(Debug, Default)]
struct StripeAnswers {
    /// The account in the customer's metadata (asked only when no link or object named one).
    customer_account: Option<AccountId>,
    /// The event's subscription as Stripe has it now: it outranks any event of the same second.
    subscription: Option<SubscriptionFact>,
}

fn count(outcome: EventOutcome) {
    metrics::counter!("billing_stripe_events_total", "outcome" => outcome.as_str()).increment(1);
}

impl Billing {
    /// Applies a verified Stripe event in the caller's transaction (the bus's inbox transaction),
    /// touching only the database: the embedded default, where there is no Stripe to ask.
    pub async fn apply_event(&self, tx: &mut PgConnection, cause: &Envelope, ev: &StripeEvent) -> Result<EventOutcome> {
        let fact = domain::read(ev)?;
        self.apply(tx, cause, ev, &fact, &StripeAnswers::default()).await
    }

    /// Asks Stripe about the event's objects (no connection held while it answers), then applies
    /// the event and the answers in one short transaction. Idempotent: a repeat finds the event
    /// recorded and changes nothing.
    pub async fn apply_event_asking_stripe(&self, cause: &Envelope, ev: &StripeEvent) -> Result<EventOutcome> {
        let fact = domain::read(ev)?;
        let answers = match &*self.payments {
            Payments::Stripe(api) => self.ask_stripe(api, ev, &fact).await?,
            Payments::Local(_) => StripeAnswers::default(),
        };
        let mut tx = self.pool.begin().await?;
        let outcome = self.apply(&mut tx, cause, ev, &fact, &answers).await?;
        sb_bus::outbox::commit(tx, crate::SERVICE).await?;
        Ok(outcome)
    }

    async fn ask_stripe(&self, api: &StripeApi, ev: &StripeEvent, fact: &Fact) -> Result<StripeAnswers> {
        // Ignored events ask nothing.
        let Ok((customer, named)) = fact.about(ev) else { return Ok(StripeAnswers::default()) };
        let (seen, linked) = {
            let mut conn = self.pool.acquire().await?;
            let seen = store::event_seen(&mut conn, &ev.id, &ev.dedupe_key()).await?;
            let linked = if seen || named.is_some() { None } else { store::account_for_customer(&mut conn, customer).await? };
            (seen, linked)
            // The connection goes back to the pool here, before Stripe is asked.
        };
        if seen {
            // A repeat: the transaction records it as a duplicate without Stripe's help.
            return Ok(StripeAnswers::default());
        }
        let customer_account = match (named, linked) {
            (None, None) => api.customer_account(customer).await?,
            _ => None,
        };
        let subscription = match fact.subscription() {
            Some(sub) => {
                let now = api.subscription(&sub.id).await?;
                Some(fact_from_stripe(&now, ev.created, REFETCHED_RANK, &ev.id, &ev.event_type)?)
            }
            None => None,
        };
        Ok(StripeAnswers { customer_account, subscription })
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        cause: &Envelope,
        ev: &StripeEvent,
        fact: &Fact,
        answers: &StripeAnswers,
    ) -> Result<EventOutcome> {
        if !store::record_event(conn, &ev.id, &ev.event_type, &ev.object_id(), &ev.dedupe_key(), ev.created).await? {
            count(EventOutcome::Duplicate);
            return Ok(EventOutcome::Duplicate);
        }
        let (customer, named) = match fact.about(ev) {
            Ok(about) => about,
            Err(why) => {
                store::set_outcome(conn, &ev.id, EventOutcome::Ignored).await?;
                info!(event_id = %ev.id, event_type = %ev.event_type, why, "Stripe event ignored");
                count(EventOutcome::Ignored);
                return Ok(EventOutcome::Ignored);
            }
        };
        let account = store::resolve_customer(conn, customer, named.or(answers.customer_account)).await?;
        let plans = &self.cfg.plans;
        match fact {
            Fact::CheckoutCompleted { session_id, subscription, .. } => {
                let plan = store::complete_checkout(conn, session_id).await?.unwrap_or_default();
                if let Some(sub) = subscription {
                    store::apply_subscription(conn, sub, &plan).await?;
                }
            }
            Fact::Subscription(f) => {
                store::apply_subscription(conn, f, &plans.name_for_price(&f.price_id)).await?;
            }
            Fact::Invoice { invoice, subscription, failed } => {
                store::apply_invoice(conn, invoice, ev.created).await?;
                if let Some(sub) = subscription {
                    store::apply_subscription(conn, sub, &plans.name_for_price(&sub.price_id)).await?;
                }
                if *failed {
                    let failed = PaymentFailed {
                        account_id: account,
                        stripe_event_id: ev.id.clone(),
                        stripe_customer_id: customer.to_owned(),
                        invoice_id: invoice.id.clone(),
                        subscription_id: invoice.subscription_id.clone(),
                        amount_due: invoice.amount_due,
                        currency: invoice.currency.clone(),
                        attempt_count: invoice.attempt_count,
                        next_payment_attempt: invoice.next_payment_attempt,
                    };
                    enqueue(conn, &Envelope::caused_by(cause, &failed)).await?;
                }
            }
            Fact::Refund(r) => {
                store::apply_refund(conn, r).await?;
                let refund = RefundIssued {
                    account_id: account,
                    stripe_event_id: ev.id.clone(),
                    stripe_customer_id: customer.to_owned(),
                    charge_id: r.charge_id.clone(),
                    amount: r.amount,
                    amount_refunded: r.amount_refunded,
                    currency: r.currency.clone(),
                    full: r.full(),
                };
                enqueue(conn, &Envelope::caused_by(cause, &refund)).await?;
            }
            // Recorded above as ignored; `about` names nobody for it.
            Fact::Ignored(_) => {}
        }
        if let Some(now) = &answers.subscription {
            store::apply_subscription(conn, now, &plans.name_for_price(&now.price_id)).await?;
        }
        let outcome = match account {
            Some(account) => {
                self.recompute(conn, account, Some((cause, ev))).await?;
                EventOutcome::Applied
            }
            None => {
                warn!(event_id = %ev.id, event_type = %ev.event_type, "no account known for this Stripe customer yet; kept for when it is");
                store::set_outcome(conn, &ev.id, EventOutcome::Unlinked).await?;
                EventOutcome::Unlinked
            }
        };
        count(outcome);
        Ok(outcome)
    }
}
