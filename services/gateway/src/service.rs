//! What the gateway itself does beyond passing calls on: accept a verified Stripe webhook durably
//! (its receipt and the `stripe.event.received.v1` outbox row in one statement). Routes verify
//! and convert; this owns the write.

use chrono::{DateTime, Utc};
use sb_bus::{Envelope, events::StripeEventReceived, outbox};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::store::{self, Receipt};

/// Records the event (once per event id) and queues it for billing, in one statement (see
/// [`store::insert_receipt_and_event`]). Returns whether the event was new.
pub async fn accept_stripe_event(pool: &PgPool, event: StripeEventReceived, body: &[u8], signed_at: DateTime<Utc>) -> sqlx::Result<bool> {
    let digest: [u8; 32] = Sha256::digest(body).into();
    let stripe_created = DateTime::from_timestamp(event.created, 0).unwrap_or_default();
    let receipt = Receipt {
        event_id: &event.id,
        event_type: &event.event_type,
        livemode: event.livemode,
        stripe_created,
        signed_at,
        body_sha256: &digest,
    };
    let row = outbox::Row::of(&Envelope::of(&event))?;
    let inserted = store::insert_receipt_and_event(pool, &receipt, &row).await?;
    if inserted {
        row.enqueued();
        outbox::committed(crate::SERVICE);
    }
    Ok(inserted)
}
