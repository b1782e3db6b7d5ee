//! billing's SQL: the only place that sees rows. Every function runs on the connection or
//! transaction it is given and returns domain types; statuses are stored as their words and read
//! back through the domain's parsers (an unknown word is a decode error, never a default).
//!
//! An account's subscriptions, invoices and refunds are read through its customers with
//! `CROSS JOIN LATERAL (… OFFSET 0)`: one index lookup per customer whatever the planner knows.
//! Written as a plain join, a table that has never been analysed (autovacuum off, or lagging
//! behind a burst) is planned as a hash join over a sequential scan of every subscription, which
//! grows with the table (0.9 ms at 4,200 rows against 0.1 ms).

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row, postgres::PgRow};

use crate::domain::{
    Access, AccessChange, AccountFacts, AccountId, Checkout, Derived, DueWebhook, EventOutcome, Invalid, Invoice, InvoiceFact,
    LocalWebhook, RefundFact, RefundRequest, RefundStatus, StoredSubscription, SubscriptionFact,
};

/// A column holding one of the domain's words.
fn word<T: FromStr<Err = Invalid>>(r: &PgRow, column: &str) -> sqlx::Result<T> {
    let raw: String = r.try_get(column)?;
    raw.parse().map_err(|e: Invalid| sqlx::Error::ColumnDecode { index: column.to_owned(), source: Box::new(e) })
}

/// A text column where empty means none.
fn optional_text(r: &PgRow, column: &str) -> sqlx::Result<Option<String>> {
    let raw: String = r.try_get(column)?;
    Ok(Some(raw).filter(|s| !s.is_empty()))
}

/// Whether a Stripe event with this id, or the same change under another id, was recorded.
pub async fn event_seen(conn: &mut PgConnection, id: &str, dedupe_key: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM stripe_events WHERE event_id = $1 OR dedupe_key = $2)")
        .bind(id)
        .bind(dedupe_key)
        .fetch_one(conn)
        .await
}

/// Records an event once (as `applied`; [`set_outcome`] says otherwise). False when its id or its
/// dedupe key was seen before.
pub async fn record_event(
    conn: &mut PgConnection,
    id: &str,
    event_type: &str,
    object_id: &str,
    dedupe_key: &str,
    created: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO stripe_events (event_id, event_type, object_id, dedupe_key, stripe_created, outcome)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(event_type)
    .bind(object_id)
    .bind(dedupe_key)
    .bind(created)
    .bind(EventOutcome::Applied.as_str())
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_outcome(conn: &mut PgConnection, event_id: &str, outcome: EventOutcome) -> sqlx::Result<()> {
    sqlx::query("UPDATE stripe_events SET outcome = $2 WHERE event_id = $1").bind(event_id).bind(outcome.as_str()).execute(conn).await?;
    Ok(())
}

/// The account a Stripe customer is linked to; with `named`, links the customer to it first if it
/// has no link yet (the first link wins). One statement whether it links or not: the insert finds
/// an existing link in the index and writes nothing.
pub async fn resolve_customer(conn: &mut PgConnection, customer: &str, named: Option<AccountId>) -> sqlx::Result<Option<AccountId>> {
    let account = sqlx::query_scalar(
        "WITH linked AS (
             INSERT INTO customers (stripe_customer_id, account_id) SELECT $1, $2 WHERE $2::uuid IS NOT NULL
             ON CONFLICT DO NOTHING RETURNING account_id)
         SELECT account_id FROM linked UNION ALL SELECT account_id FROM customers WHERE stripe_customer_id = $1 LIMIT 1",
    )
    .bind(customer)
    .bind(named)
    .fetch_optional(&mut *conn)
    .await?;
    match (account, named) {
        // Another transaction linked it while this statement ran (its snapshot could not see it).
        (None, Some(named)) => Ok(Some(account_for_customer(conn, customer).await?.unwrap_or(named))),
        (account, _) => Ok(account),
    }
}

pub async fn account_for_customer(conn: &mut PgConnection, customer: &str) -> sqlx::Result<Option<AccountId>> {
    sqlx::query_scalar("SELECT account_id FROM customers WHERE stripe_customer_id = $1").bind(customer).fetch_optional(conn).await
}

pub async fn customer_for_account(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT stripe_customer_id FROM customers WHERE account_id = $1 ORDER BY created_at DESC LIMIT 1")
        .bind(account)
        .fetch_optional(conn)
        .await
}

/// Applies a subscription fact in one statement: a new subscription is inserted; a stored one
/// takes the fact's state only if the fact is newer ((as_of, rank) order), keeps the newest
/// payment time whatever the order, and fills in what it lacked (an invoice event names no price)
/// from an older fact. The grace period counts from the first failure of a past_due spell,
/// whatever order the failures arrive in; a spell ends when the subscription is no longer past_due.
/// Every expression reads the row as it is once locked, so concurrent facts never undo each other.
pub async fn apply_subscription(conn: &mut PgConnection, f: &SubscriptionFact, plan: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO subscriptions AS s (id, stripe_customer_id, status, plan, price_id, current_period_end, as_of, rank,
                                         last_paid_at, cause_event_id, cause_event_type)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (id) DO UPDATE SET
             status = CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN $3 ELSE s.status END,
             as_of = CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN $7 ELSE s.as_of END,
             rank = CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN $8 ELSE s.rank END,
             cause_event_id = CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN $10 ELSE s.cause_event_id END,
             cause_event_type = CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN $11 ELSE s.cause_event_type END,
             plan = CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN COALESCE(NULLIF($4, ''), s.plan)
                         ELSE COALESCE(NULLIF(s.plan, ''), $4) END,
             price_id = CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN COALESCE(NULLIF($5, ''), s.price_id)
                             ELSE COALESCE(NULLIF(s.price_id, ''), $5) END,
             current_period_end = CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN COALESCE($6, s.current_period_end)
                                       ELSE COALESCE(s.current_period_end, $6) END,
             updated_at = CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN now() ELSE s.updated_at END,
             last_paid_at = GREATEST(s.last_paid_at, $9),
             past_due_since = CASE
                 WHEN (CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN $3 ELSE s.status END) NOT IN ('past_due', 'unpaid') THEN NULL
                 WHEN $3 IN ('past_due', 'unpaid') THEN LEAST(COALESCE(s.past_due_since, $7), $7)
                 ELSE COALESCE(s.past_due_since, CASE WHEN (s.as_of, s.rank) < ($7, $8) THEN $7 ELSE s.as_of END) END",
    )
    .bind(&f.id)
    .bind(&f.customer)
    .bind(f.status.as_str())
    .bind(plan)
    .bind(&f.price_id)
    .bind(f.current_period_end)
    .bind(f.as_of)
    .bind(f.rank)
    .bind(f.paid_at)
    .bind(&f.cause_event_id)
    .bind(&f.cause_event_type)
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies an invoice fact stated at `as_of` if it is newer than the stored one ((as_of, rank) order).
pub async fn apply_invoice(conn: &mut PgConnection, inv: &InvoiceFact, as_of: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO invoices (id, stripe_customer_id, subscription_id, status, amount_due, amount_paid, currency, attempt_count, as_of, rank)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, amount_due = EXCLUDED.amount_due,
             amount_paid = EXCLUDED.amount_paid, attempt_count = EXCLUDED.attempt_count, as_of = EXCLUDED.as_of, rank = EXCLUDED.rank
         WHERE (invoices.as_of, invoices.rank) < (EXCLUDED.as_of, EXCLUDED.rank)",
    )
    .bind(&inv.id)
    .bind(&inv.customer)
    .bind(inv.subscription_id.as_deref().unwrap_or(""))
    .bind(inv.status.as_str())
    .bind(inv.amount_due)
    .bind(inv.amount_paid)
    .bind(&inv.currency)
    .bind(i32::try_from(inv.attempt_count).unwrap_or(i32::MAX))
    .bind(as_of)
    .bind(inv.status.rank())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn apply_refund(conn: &mut PgConnection, r: &RefundFact) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO refunds (charge_id, stripe_customer_id, amount, amount_refunded, currency, as_of, cause_event_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (charge_id) DO UPDATE SET amount_refunded = EXCLUDED.amount_refunded, as_of = EXCLUDED.as_of,
             cause_event_id = EXCLUDED.cause_event_id
         WHERE refunds.amount_refunded < EXCLUDED.amount_refunded",
    )
    .bind(&r.charge_id)
    .bind(&r.customer)
    .bind(r.amount)
    .bind(r.amount_refunded)
    .bind(&r.currency)
    .bind(r.as_of)
    .bind(&r.cause_event_id)
    .execute(conn)
    .await?;
    Ok(())
}

fn subscription_row(r: &PgRow) -> sqlx::Result<StoredSubscription> {
    Ok(StoredSubscription {
        fact: SubscriptionFact {
            id: r.try_get("id")?,
            customer: r.try_get("stripe_customer_id")?,
            status: word(r, "status")?,
            price_id: r.try_get("price_id")?,
            current_period_end: r.try_get("current_period_end")?,
            as_of: r.try_get("as_of")?,
            rank: r.try_get("rank")?,
            paid_at: None,
            cause_event_id: r.try_get("cause_event_id")?,
            cause_event_type: r.try_get("cause_event_type")?,
        },
        plan: r.try_get("plan")?,
        last_paid_at: r.try_get("last_paid_at")?,
        past_due_since: r.try_get("past_due_since")?,
    })
}

pub async fn subscriptions(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<Vec<StoredSubscription>> {
    let rows = sqlx::query(
        "SELECT s.* FROM customers c CROSS JOIN LATERAL (SELECT * FROM subscriptions WHERE stripe_customer_id = c.stripe_customer_id OFFSET 0) s
         WHERE c.account_id = $1 ORDER BY s.as_of DESC, s.id",
    )
    .bind(account)
    .fetch_all(conn)
    .await?;
    rows.iter().map(subscription_row).collect()
}

/// A refund as `json_agg` spells its row.
#[derive(serde::Deserialize)]
struct RefundJson {
    charge_id: String,
    stripe_customer_id: String,
    amount: i64,
    amount_refunded: i64,
    currency: String,
    as_of: DateTime<Utc>,
    cause_event_id: String,
}

/// Everything [`crate::domain::derive`] needs of an account, and its newest Stripe customer, in
/// one statement: a row per subscription (one row with no subscription columns when it has none),
/// each carrying the account's refunds (as JSON: rare and few), its newest open checkout and its
/// customer.
pub async fn account_facts(
    conn: &mut PgConnection,
    account: AccountId,
    now: DateTime<Utc>,
) -> sqlx::Result<(AccountFacts, Option<String>)> {
    let rows = sqlx::query(
        "SELECT k.refunds, k.checkout_id, k.checkout_at, k.customer, s.*
         FROM (SELECT (SELECT COALESCE(json_agg(r ORDER BY r.as_of DESC), '[]'::json)
                       FROM customers c
                       CROSS JOIN LATERAL (SELECT * FROM refunds WHERE stripe_customer_id = c.stripe_customer_id OFFSET 0) r
                       WHERE c.account_id = $1) AS refunds,
                      o.session_id AS checkout_id, o.created_at AS checkout_at,
                      (SELECT stripe_customer_id FROM customers WHERE account_id = $1 ORDER BY created_at DESC LIMIT 1) AS customer
               FROM (SELECT 1) one
               LEFT JOIN LATERAL (SELECT session_id, created_at FROM checkouts
                                  WHERE account_id = $1 AND status = 'open' AND expires_at > $2
                                  ORDER BY created_at DESC LIMIT 1) o ON true) k
         LEFT JOIN LATERAL (SELECT sub.* FROM customers c
                            CROSS JOIN LATERAL (SELECT * FROM subscriptions WHERE stripe_customer_id = c.stripe_customer_id OFFSET 0) sub
                            WHERE c.account_id = $1) s ON true
         ORDER BY s.as_of DESC, s.id",
    )
    .bind(account)
    .bind(now)
    .fetch_all(conn)
    .await?;
    let first = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let refunds: sqlx::types::Json<Vec<RefundJson>> = first.try_get("refunds")?;
    let refunds = refunds
        .0
        .into_iter()
        .map(|r| RefundFact {
            charge_id: r.charge_id,
            customer: r.stripe_customer_id,
            amount: r.amount,
            amount_refunded: r.amount_refunded,
            currency: r.currency,
            as_of: r.as_of,
            cause_event_id: r.cause_event_id,
        })
        .collect();
    let checkout: Option<String> = first.try_get("checkout_id")?;
    let open_checkout = match checkout {
        Some(id) => Some((id, first.try_get("checkout_at")?)),
        None => None,
    };
    let customer = first.try_get("customer")?;
    let mut subscriptions = Vec::with_capacity(rows.len());
    for r in &rows {
        if r.try_get::<Option<String>, _>("id")?.is_some() {
            subscriptions.push(subscription_row(r)?);
        }
    }
    Ok((AccountFacts { subscriptions, refunds, open_checkout }, customer))
}

fn access_row(r: &PgRow) -> sqlx::Result<Access> {
    Ok(Access {
        account_id: r.try_get("account_id")?,
        status: r.try_get("status")?,
        plan: r.try_get("plan")?,
        since: r.try_get("since")?,
        reason: r.try_get("reason")?,
        cause_event_id: r.try_get("cause_event_id")?,
        cause_event_type: r.try_get("cause_event_type")?,
        grace_until: r.try_get("grace_until")?,
    })
}

/// The account's access row, locked for this transaction (created as `none` if missing), so
/// concurrent changes to one account are applied one after the other. A row lock, not a rewrite of
/// the row: an existing account costs one statement and no new row version.
pub async fn lock_access(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<Access> {
    const LOCK: &str = "SELECT * FROM access WHERE account_id = $1 FOR UPDATE";
    if let Some(row) = sqlx::query(LOCK).bind(account).fetch_optional(&mut *conn).await? {
        return access_row(&row);
    }
    // A row this transaction inserts is locked by it until it ends.
    let inserted = sqlx::query("INSERT INTO access (account_id, status) VALUES ($1, 'none') ON CONFLICT DO NOTHING RETURNING *")
        .bind(account)
        .fetch_optional(&mut *conn)
        .await?;
    match inserted {
        Some(row) => access_row(&row),
        // Another transaction created it meanwhile: wait for it and lock what it left.
        None => access_row(&sqlx::query(LOCK).bind(account).fetch_one(conn).await?),
    }
}

pub async fn get_access(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<Option<Access>> {
    sqlx::query("SELECT * FROM access WHERE account_id = $1").bind(account).fetch_optional(conn).await?.as_ref().map(access_row).transpose()
}

/// The account's access (if any) and its newest Stripe customer, in one query.
pub async fn access_with_customer(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<(Option<Access>, Option<String>)> {
    let row = sqlx::query(
        "SELECT a.*, c.stripe_customer_id AS customer
         FROM (SELECT $1::uuid AS id) k
         LEFT JOIN access a ON a.account_id = k.id
         LEFT JOIN LATERAL (SELECT stripe_customer_id FROM customers WHERE account_id = k.id ORDER BY created_at DESC LIMIT 1) c ON true",
    )
    .bind(account)
    .fetch_one(conn)
    .await?;
    let customer: Option<String> = row.try_get("customer")?;
    let has_access: Option<AccountId> = row.try_get("account_id")?;
    Ok((if has_access.is_some() { Some(access_row(&row)?) } else { None }, customer))
}

/// Stores a derived access; a change of status or plan starts a new `since` and is recorded in
/// the history. Returns whether status or plan changed.
pub async fn update_access(conn: &mut PgConnection, old: &Access, d: &Derived, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let changed = old.status != d.status || old.plan != d.plan;
    if !changed {
        // Same status: keep since and cause, but follow a moved grace deadline.
        if old.grace_until != d.grace_until {
            sqlx::query("UPDATE access SET grace_until = $2, updated_at = now() WHERE account_id = $1")
                .bind(old.account_id)
                .bind(d.grace_until)
                .execute(conn)
                .await?;
        }
        return Ok(false);
    }
    sqlx::query(
        "WITH moved AS (
             UPDATE access SET status = $2, plan = $3, since = $4, reason = $5, cause_event_id = $6, cause_event_type = $7,
                    grace_until = $8, updated_at = now() WHERE account_id = $1)
         INSERT INTO access_changes (account_id, from_status, to_status, plan, reason, cause_event_id, cause_event_type, at)
         VALUES ($1, $9, $2, $3, $5, $6, $7, $4)",
    )
    .bind(old.account_id)
    .bind(d.status)
    .bind(&d.plan)
    .bind(now)
    .bind(&d.reason)
    .bind(&d.cause_event_id)
    .bind(&d.cause_event_type)
    .bind(d.grace_until)
    .bind(old.status)
    .execute(conn)
    .await?;
    Ok(true)
}

/// Accounts whose grace period has ended but are still past_due (at most `limit`).
pub async fn grace_expired(conn: &mut PgConnection, now: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<AccountId>> {
    sqlx::query_scalar("SELECT account_id FROM access WHERE status = 'past_due' AND grace_until <= $1 LIMIT $2")
        .bind(now)
        .bind(limit)
        .fetch_all(conn)
        .await
}

pub async fn history(conn: &mut PgConnection, account: AccountId, limit: i64) -> sqlx::Result<Vec<AccessChange>> {
    let rows = sqlx::query("SELECT * FROM access_changes WHERE account_id = $1 ORDER BY id DESC LIMIT $2")
        .bind(account)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AccessChange {
                from: r.try_get("from_status")?,
                to: r.try_get("to_status")?,
                plan: r.try_get("plan")?,
                reason: r.try_get("reason")?,
                cause_event_id: r.try_get("cause_event_id")?,
                cause_event_type: r.try_get("cause_event_type")?,
                at: r.try_get("at")?,
            })
        })
        .collect()
}

pub async fn invoices(conn: &mut PgConnection, account: AccountId, limit: i64) -> sqlx::Result<Vec<Invoice>> {
    let rows = sqlx::query(
        "SELECT i.* FROM customers c CROSS JOIN LATERAL (SELECT * FROM invoices WHERE stripe_customer_id = c.stripe_customer_id OFFSET 0) i
         WHERE c.account_id = $1 ORDER BY i.as_of DESC LIMIT $2",
    )
    .bind(account)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(invoice_row).collect()
}

fn invoice_row(r: &PgRow) -> sqlx::Result<Invoice> {
    Ok(Invoice {
        id: r.try_get("id")?,
        subscription_id: optional_text(r, "subscription_id")?,
        status: word(r, "status")?,
        amount_due: r.try_get("amount_due")?,
        amount_paid: r.try_get("amount_paid")?,
        currency: r.try_get("currency")?,
        as_of: r.try_get("as_of")?,
    })
}

fn checkout_row(r: &PgRow) -> sqlx::Result<Checkout> {
    Ok(Checkout {
        session_id: r.try_get("session_id")?,
        account_id: r.try_get("account_id")?,
        plan: r.try_get("plan")?,
        price_id: r.try_get("price_id")?,
        amount: r.try_get("amount")?,
        currency: r.try_get("currency")?,
        url: r.try_get("url")?,
        local: r.try_get("local")?,
        status: word(r, "status")?,
        success_url: r.try_get("success_url")?,
        cancel_url: r.try_get("cancel_url")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

pub async fn insert_checkout(conn: &mut PgConnection, c: &Checkout) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO checkouts (session_id, account_id, plan, price_id, amount, currency, url, local, status, success_url, cancel_url, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&c.session_id)
    .bind(c.account_id)
    .bind(&c.plan)
    .bind(&c.price_id)
    .bind(c.amount)
    .bind(&c.currency)
    .bind(&c.url)
    .bind(c.local)
    .bind(c.status.as_str())
    .bind(&c.success_url)
    .bind(&c.cancel_url)
    .bind(c.created_at)
    .bind(c.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A checkout session; with `lock`, locked for this transaction.
pub async fn checkout(conn: &mut PgConnection, session_id: &str, lock: bool) -> sqlx::Result<Option<Checkout>> {
    let sql =
        if lock { "SELECT * FROM checkouts WHERE session_id = $1 FOR UPDATE" } else { "SELECT * FROM checkouts WHERE session_id = $1" };
    sqlx::query(sql).bind(session_id).fetch_optional(conn).await?.as_ref().map(checkout_row).transpose()
}

/// Marks a checkout this service started complete (Stripe says it was paid); returns its plan.
pub async fn complete_checkout(conn: &mut PgConnection, session_id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "UPDATE checkouts SET status = 'complete', completed_at = COALESCE(completed_at, now()) WHERE session_id = $1 RETURNING plan",
    )
    .bind(session_id)
    .fetch_optional(conn)
    .await
}

/// Queues a signed webhook for the local checkout's sender (idempotent by event id).
pub async fn queue_local_webhook(conn: &mut PgConnection, w: &LocalWebhook) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO local_webhooks (event_id, body) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING")
        .bind(&w.event_id)
        .bind(&w.body)
        .execute(conn)
        .await?;
    Ok(())
}

/// Claims up to `limit` due local webhooks, oldest first, in one statement: each is leased (its
/// next attempt pushed ahead: the k-th of the batch, from 1, by (k + 1) × `step`, as the sender
/// posts them one after another), so no other sender takes it while this one delivers it with no
/// transaction open; one that is never settled comes due again when its lease ends.
pub async fn claim_local_webhooks(conn: &mut PgConnection, limit: i64, step: Duration) -> sqlx::Result<Vec<DueWebhook>> {
    let mut due: Vec<DueWebhook> = sqlx::query_as::<_, (i64, String, i32)>(
        "WITH locked AS (SELECT id FROM local_webhooks WHERE next_attempt_at <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED),
              ranked AS (SELECT id, row_number() OVER (ORDER BY id) AS k FROM locked)
         UPDATE local_webhooks w SET next_attempt_at = now() + make_interval(secs => $2 * (ranked.k + 1))
         FROM ranked WHERE w.id = ranked.id
         RETURNING w.id, w.body, w.attempts",
    )
    .bind(limit)
    .bind(step.as_secs_f64())
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|(id, body, attempts)| DueWebhook { id, body, attempts })
    .collect();
    due.sort_by_key(|w| w.id);
    Ok(due)
}

pub async fn local_webhook_sent(conn: &mut PgConnection, id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM local_webhooks WHERE id = $1").bind(id).execute(conn).await?;
    Ok(())
}

pub async fn local_webhook_failed(conn: &mut PgConnection, id: i64, retry_in: Duration, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE local_webhooks SET attempts = attempts + 1, last_error = $3,
                next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
    )
    .bind(id)
    .bind(retry_in.as_secs_f64())
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// The account's newest subscription that has not ended (for the local portal's cancel).
pub async fn live_subscription(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<Option<StoredSubscription>> {
    let row = sqlx::query(
        "SELECT s.* FROM customers c CROSS JOIN LATERAL (SELECT * FROM subscriptions WHERE stripe_customer_id = c.stripe_customer_id OFFSET 0) s
         WHERE c.account_id = $1 AND s.status NOT IN ('canceled', 'incomplete_expired') ORDER BY s.as_of DESC LIMIT 1",
    )
    .bind(account)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(subscription_row).transpose()
}

/// Every subscription billing knows, for reconciliation.
pub async fn all_subscriptions(conn: &mut PgConnection) -> sqlx::Result<Vec<StoredSubscription>> {
    let rows = sqlx::query("SELECT * FROM subscriptions ORDER BY id").fetch_all(conn).await?;
    rows.iter().map(subscription_row).collect()
}

/// The account's invoice `id` with its Stripe customer, locked until the transaction ends
/// (refunds of one payment are decided one at a time). `None` when the account has no such invoice.
pub async fn lock_account_invoice(conn: &mut PgConnection, account: AccountId, id: &str) -> sqlx::Result<Option<(Invoice, String)>> {
    let row = sqlx::query(
        "SELECT i.* FROM invoices i JOIN customers c USING (stripe_customer_id)
         WHERE i.id = $1 AND c.account_id = $2 FOR UPDATE OF i",
    )
    .bind(id)
    .bind(account)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(|r| Ok((invoice_row(r)?, r.try_get("stripe_customer_id")?))).transpose()
}

/// What refunds of the invoice's payment take (or may still take), in minor units.
pub async fn refunds_counted(conn: &mut PgConnection, invoice_id: &str) -> sqlx::Result<i64> {
    let counted: Vec<&str> = RefundStatus::ALL.iter().filter(|s| s.counts()).map(|s| s.as_str()).collect();
    sqlx::query_scalar("SELECT COALESCE(SUM(amount), 0)::bigint FROM refund_requests WHERE invoice_id = $1 AND status = ANY($2)")
        .bind(invoice_id)
        .bind(&counted)
        .fetch_one(conn)
        .await
}

fn refund_request_row(r: &PgRow) -> sqlx::Result<RefundRequest> {
    Ok(RefundRequest {
        id: r.try_get("id")?,
        idempotency_key: r.try_get("idempotency_key")?,
        account_id: r.try_get("account_id")?,
        invoice_id: r.try_get("invoice_id")?,
        amount: r.try_get("amount")?,
        currency: r.try_get("currency")?,
        reason: r.try_get("reason")?,
        requested_by: r.try_get("requested_by")?,
        status: word(r, "status")?,
        stripe_refund_id: optional_text(r, "stripe_refund_id")?,
        charge_id: optional_text(r, "charge_id")?,
        failure: optional_text(r, "failure")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Records a refund request unless one with its idempotency key exists. True when recorded.
pub async fn insert_refund_request(conn: &mut PgConnection, r: &RefundRequest) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO refund_requests (id, idempotency_key, account_id, invoice_id, amount, currency, reason, requested_by, status,
             stripe_refund_id, charge_id, failure, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(r.id)
    .bind(&r.idempotency_key)
    .bind(r.account_id)
    .bind(&r.invoice_id)
    .bind(r.amount)
    .bind(&r.currency)
    .bind(&r.reason)
    .bind(r.requested_by)
    .bind(r.status.as_str())
    .bind(r.stripe_refund_id.as_deref().unwrap_or(""))
    .bind(r.charge_id.as_deref().unwrap_or(""))
    .bind(r.failure.as_deref().unwrap_or(""))
    .bind(r.created_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn refund_request_by_key(conn: &mut PgConnection, key: &str) -> sqlx::Result<Option<RefundRequest>> {
    let row = sqlx::query("SELECT * FROM refund_requests WHERE idempotency_key = $1").bind(key).fetch_optional(conn).await?;
    row.as_ref().map(refund_request_row).transpose()
}

/// Stripe's answer to a refund request (or its refusal, as `failed` with Stripe's words). A
/// settled request is never moved back.
pub async fn refund_answered(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    status: RefundStatus,
    stripe_refund_id: &str,
    charge_id: &str,
    failure: &str,
) -> sqlx::Result<Option<RefundRequest>> {
    let row = sqlx::query(
        "UPDATE refund_requests SET status = $2, stripe_refund_id = $3, charge_id = $4, failure = $5, asking_until = NULL, updated_at = now()
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(stripe_refund_id)
    .bind(charge_id)
    .bind(failure)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(refund_request_row).transpose()
}

/// Takes the turn to ask Stripe about a request still `requested`, for `lease` (a concurrent
/// attempt for the same request then waits instead of asking too). False when another attempt
/// has the turn.
pub async fn claim_refund_turn(conn: &mut PgConnection, id: uuid::Uuid, lease: Duration) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE refund_requests SET asking_until = now() + make_interval(secs => $2), updated_at = now()
         WHERE id = $1 AND status = 'requested' AND (asking_until IS NULL OR asking_until < now())",
    )
    .bind(id)
    .bind(lease.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stripe did not answer: the next attempt may ask at once.
pub async fn release_refund_turn(conn: &mut PgConnection, id: uuid::Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE refund_requests SET asking_until = NULL, updated_at = now() WHERE id = $1").bind(id).execute(conn).await?;
    Ok(())
}

/// The account's refund requests, newest first.
pub async fn refund_requests(conn: &mut PgConnection, account: AccountId, limit: i64) -> sqlx::Result<Vec<RefundRequest>> {
    let rows = sqlx::query("SELECT * FROM refund_requests WHERE account_id = $1 ORDER BY created_at DESC LIMIT $2")
        .bind(account)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(refund_request_row).collect()
}
