//! billing's bus handlers: verified Stripe events from the gateway (`stripe.event.received.v1`).
//! They convert the payload to the domain's event, call the service and map its error; nothing
//! else.
//!
//! Without a Stripe key the event only touches the database, so it is a [`Handler`] (batchable, in
//! the inbox's transaction). With one, Stripe is asked about the event's objects first, and no
//! transaction may stay open while it answers: an [`Effect`], run with none open.

use sb_bus::{Effect, Envelope, Handler, HandlerError, events::StripeEventReceived};
use sqlx::{PgConnection, PgPool};

use crate::{domain::StripeEvent, error::BillingError, service::Billing, stripe_api::ApiError};

fn stripe_event(ev: StripeEventReceived) -> Result<StripeEvent, HandlerError> {
    StripeEvent::new(ev.id, ev.event_type, ev.created, ev.livemode, ev.data.object)
        .map_err(|e| HandlerError::permanent(format!("unreadable Stripe event: {e}")))
}

/// What the bus does with a failed event: outages climb the retry ladder (waiting at least as
/// long as Stripe asked), everything else is parked with its reason.
fn failure(e: BillingError) -> HandlerError {
    match e {
        BillingError::Stripe(ApiError::Unavailable { reason, retry_after }) => {
            HandlerError::transient_after(format!("Stripe unavailable: {reason}"), retry_after)
        }
        BillingError::Database(e) => e.into(),
        BillingError::Invalid(e) => HandlerError::permanent(format!("unreadable Stripe event: {e}")),
        e @ (BillingError::Stripe(ApiError::Refused(_))
        | BillingError::UnknownPlan { .. }
        | BillingError::AlreadyActive
        | BillingError::NoCustomer
        | BillingError::NoLiveSubscription
        | BillingError::CheckoutExpired
        | BillingError::LocalCheckoutOff
        | BillingError::NothingToRefund(_)
        | BillingError::IdempotencyKeyReused
        | BillingError::NotFound(_)) => HandlerError::permanent(e),
    }
}

/// The embedded default (no Stripe key): applies the event in the inbox's transaction.
pub struct ApplyStripeEvent(pub Billing);

#[async_trait::async_trait]
impl Handler<StripeEventReceived> for ApplyStripeEvent {
    async fn handle(&self, env: &Envelope, event: StripeEventReceived, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let ev = stripe_event(event)?;
        self.0.apply_event(tx, env, &ev).await.map(drop).map_err(failure)
    }
}

/// With a Stripe key: asks Stripe, then applies the event in a short transaction of its own.
pub struct ApplyAskingStripe(pub Billing);

#[async_trait::async_trait]
impl Effect<StripeEventReceived> for ApplyAskingStripe {
    async fn run(&self, env: &Envelope, event: StripeEventReceived, _pool: &PgPool, _inbox: &sb_bus::Inbox) -> Result<(), HandlerError> {
        let ev = stripe_event(event)?;
        self.0.apply_event_asking_stripe(env, &ev).await.map(drop).map_err(failure)
    }
}
