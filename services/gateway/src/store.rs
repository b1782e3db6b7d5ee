//! The gateway's SQL: the receipts of verified Stripe webhooks (its only state).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// A verified webhook as it is recorded.
pub struct Receipt<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub livemode: bool,
    pub stripe_created: DateTime<Utc>,
    pub signed_at: DateTime<Utc>,
    pub body_sha256: &'a [u8],
}

/// Records a receipt; `false` when this event id was recorded before (nothing changes).
pub async fn insert_receipt(conn: &mut PgConnection, r: &Receipt<'_>) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO stripe_webhook_receipts (event_id, event_type, livemode, stripe_created, signed_at, body_sha256)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(r.event_id)
    .bind(r.event_type)
    .bind(r.livemode)
    .bind(r.stripe_created)
    .bind(r.signed_at)
    .bind(r.body_sha256)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
