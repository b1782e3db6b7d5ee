//! The bus handler: verified Stripe events from the gateway (`stripe.event.received.v1`).

use async_trait::async_trait;
use sb_bus::{Envelope, Handler, HandlerError};
use sqlx::PgConnection;

use crate::{domain::StripeEvent, service::Billing};

pub struct StripeEvents {
    pub billing: Billing,
}

#[async_trait]
impl Handler for StripeEvents {
    async fn handle(&self, event: &Envelope, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let ev = StripeEvent::parse(&event.data).map_err(HandlerError::permanent)?;
        self.billing.apply_event(tx, event, &ev).await.map(|_| ())
    }

    /// With a Stripe key the handler calls Stripe (refetch): not worth repeating because another
    /// event in a batch failed. Without one it only touches the database.
    fn batchable(&self) -> bool {
        self.billing.stripe.is_none()
    }
}
