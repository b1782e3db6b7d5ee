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

/// [`insert_receipt_and_event`] for several webhooks in one statement (their event ids distinct):
/// each receipt is recorded, and each outbox row inserted only where its receipt was new. Returns,
/// in input order, whether each was new.
pub async fn insert_receipts_and_events(pool: &PgPool, rows: &[(Receipt<'_>, &sb_bus::outbox::Row)]) -> sqlx::Result<Vec<bool>> {
    let n = rows.len();
    let (mut ids, mut types, mut live, mut created, mut signed, mut digests) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut env_ids, mut env_types, mut payloads, mut headers) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (r, event) in rows {
        ids.push(r.event_id);
        types.push(r.event_type);
        live.push(r.livemode);
        created.push(r.stripe_created);
        signed.push(r.signed_at);
        digests.push(r.body_sha256);
        env_ids.push(event.event_id);
        env_types.push(event.event_type.as_str());
        payloads.push(event.payload.as_str());
        headers.push(&event.headers);
    }
    let new: Vec<String> = sqlx::query_scalar(
        "WITH webhook AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::timestamptz[], $5::timestamptz[], $6::bytea[],
                                  $7::uuid[], $8::text[], $9::text[], $10::jsonb[])
                 AS w (event_id, event_type, livemode, stripe_created, signed_at, body_sha256, env_id, env_type, payload, headers)),
         receipt AS (
             INSERT INTO stripe_webhook_receipts (event_id, event_type, livemode, stripe_created, signed_at, body_sha256)
             SELECT event_id, event_type, livemode, stripe_created, signed_at, body_sha256 FROM webhook
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id),
         queued AS (
             INSERT INTO sb_outbox (event_id, event_type, payload, headers)
             SELECT w.env_id, w.env_type, w.payload, w.headers FROM webhook w JOIN receipt USING (event_id))
         SELECT event_id FROM receipt",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&live)
    .bind(&created)
    .bind(&signed)
    .bind(&digests)
    .bind(&env_ids)
    .bind(&env_types)
    .bind(&payloads)
    .bind(&headers)
    .fetch_all(pool)
    .await?;
    Ok(ids.iter().map(|id| new.iter().any(|n| n == id)).collect())
}
