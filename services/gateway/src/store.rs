//! The gateway's SQL: the receipts of verified Stripe webhooks (its only state).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A verified webhook as it is recorded.
pub struct Receipt<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub livemode: bool,
    pub stripe_created: DateTime<Utc>,
    pub signed_at: DateTime<Utc>,
    pub body_sha256: &'a [u8],
}

/// Records a receipt and, only if it is new, the event's outbox row: one statement, committed on
/// its own (no BEGIN/COMMIT round trips). `false` when this event id was recorded before (nothing
/// changes).
pub async fn insert_receipt_and_event(pool: &PgPool, r: &Receipt<'_>, event: &sb_bus::outbox::Row) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "WITH receipt AS (
             INSERT INTO stripe_webhook_receipts (event_id, event_type, livemode, stripe_created, signed_at, body_sha256)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (event_id) DO NOTHING
             RETURNING 1)
         INSERT INTO sb_outbox (event_id, event_type, payload, headers) SELECT $7, $8, $9, $10 FROM receipt",
    )
    .bind(r.event_id)
    .bind(r.event_type)
    .bind(r.livemode)
    .bind(r.stripe_created)
    .bind(r.signed_at)
    .bind(r.body_sha256)
    .bind(event.event_id)
    .bind(&event.event_type)
    .bind(&event.payload)
    .bind(&event.headers)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
