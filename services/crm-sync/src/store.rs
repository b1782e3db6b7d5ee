//! crm-sync's SQL: the only place that sees rows.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use uuid::Uuid;

/// A user as crm-sync knows them, with their sync state.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub email: String,
    pub name: String,
    pub crm_contact_id: Option<String>,
    pub lifecycle_stage: String,
    pub status: String,
    pub last_error: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub synced_at: Option<DateTime<Utc>>,
}

fn user_row(r: &PgRow) -> sqlx::Result<UserRow> {
    Ok(UserRow {
        user_id: r.try_get("user_id")?,
        account_id: r.try_get("account_id")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
        crm_contact_id: r.try_get("crm_contact_id")?,
        lifecycle_stage: r.try_get("lifecycle_stage")?,
        status: r.try_get("status")?,
        last_error: r.try_get("last_error")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        synced_at: r.try_get("synced_at")?,
    })
}

/// Records a user (from their sign-up); an existing row keeps its link and state.
pub async fn upsert_user(conn: &mut PgConnection, user: Uuid, account: Uuid, email: &str, name: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO crm_users (user_id, account_id, email, name) VALUES ($1, $2, lower($3), $4)
         ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name, updated_at = now()",
    )
    .bind(user)
    .bind(account)
    .bind(email)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// Serialises work on one email across handlers and replicas until the transaction ends, so
/// concurrent events for one person never create two contacts.
pub async fn lock_email(conn: &mut PgConnection, email: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('crm-sync:' || lower($1), 0))").bind(email).execute(conn).await?;
    Ok(())
}

pub async fn user(conn: &mut PgConnection, user: Uuid) -> sqlx::Result<Option<UserRow>> {
    sqlx::query("SELECT * FROM crm_users WHERE user_id = $1").bind(user).fetch_optional(conn).await?.as_ref().map(user_row).transpose()
}

pub async fn users_of_account(conn: &mut PgConnection, account: Uuid) -> sqlx::Result<Vec<UserRow>> {
    let rows = sqlx::query("SELECT * FROM crm_users WHERE account_id = $1 ORDER BY email").bind(account).fetch_all(conn).await?;
    rows.iter().map(user_row).collect()
}

pub async fn mark_synced(conn: &mut PgConnection, user: Uuid, contact_id: &str, stage: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE crm_users SET crm_contact_id = $2, lifecycle_stage = $3, status = 'synced', last_error = '', attempts = 0,
                next_attempt_at = NULL, synced_at = now(), updated_at = now() WHERE user_id = $1",
    )
    .bind(user)
    .bind(contact_id)
    .bind(stage)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failed attempt outside the handler's (rolled back) transaction: pending with the
/// next attempt's time, or failed (parked) with the reason. Creates the row for a sign-up that
/// never got through.
#[allow(clippy::too_many_arguments)] // one row's worth of columns; a struct would only rename them
pub async fn mark_failed(
    pool: &PgPool,
    user: Uuid,
    account: Uuid,
    email: &str,
    name: &str,
    reason: &str,
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO crm_users (user_id, account_id, email, name, status, last_error, attempts, next_attempt_at)
         VALUES ($1, $2, lower($3), $4, $5, $6, $7, $8)
         ON CONFLICT (user_id) DO UPDATE SET status = EXCLUDED.status, last_error = EXCLUDED.last_error,
             attempts = EXCLUDED.attempts, next_attempt_at = EXCLUDED.next_attempt_at, updated_at = now()",
    )
    .bind(user)
    .bind(account)
    .bind(email)
    .bind(name)
    .bind(if next_attempt_at.is_some() { "pending" } else { "failed" })
    .bind(reason)
    .bind(attempts)
    .bind(next_attempt_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks every user of an account pending again (a billing change not synced yet).
pub async fn mark_account_failed(
    pool: &PgPool,
    account: Uuid,
    reason: &str,
    attempts: i32,
    next: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE crm_users SET status = $2, last_error = $3, attempts = $4, next_attempt_at = $5, updated_at = now() WHERE account_id = $1",
    )
    .bind(account)
    .bind(if next.is_some() { "pending" } else { "failed" })
    .bind(reason)
    .bind(attempts)
    .bind(next)
    .execute(pool)
    .await?;
    Ok(())
}

/// What billing said last about an account.
#[derive(Debug, Clone, Default)]
pub struct AccountRow {
    pub account_name: String,
    pub plan: String,
    pub access_status: String,
    pub stripe_customer_id: String,
}

pub async fn set_account_name(conn: &mut PgConnection, account: Uuid, name: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO crm_accounts (account_id, account_name) VALUES ($1, $2)
         ON CONFLICT (account_id) DO UPDATE SET account_name = EXCLUDED.account_name, updated_at = now()",
    )
    .bind(account)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies billing's view of an account if it is newer than the stored one. Returns whether it was.
pub async fn apply_access(
    conn: &mut PgConnection,
    account: Uuid,
    plan: &str,
    status: &str,
    customer: &str,
    as_of: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO crm_accounts (account_id, plan, access_status, stripe_customer_id, as_of) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (account_id) DO UPDATE SET plan = EXCLUDED.plan, access_status = EXCLUDED.access_status,
             stripe_customer_id = COALESCE(NULLIF(EXCLUDED.stripe_customer_id, ''), crm_accounts.stripe_customer_id),
             as_of = EXCLUDED.as_of, updated_at = now()
         WHERE crm_accounts.as_of IS NULL OR crm_accounts.as_of <= EXCLUDED.as_of",
    )
    .bind(account)
    .bind(plan)
    .bind(status)
    .bind(customer)
    .bind(as_of)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn account(conn: &mut PgConnection, account: Uuid) -> sqlx::Result<AccountRow> {
    let row: Option<(String, String, String, String)> =
        sqlx::query_as("SELECT account_name, plan, access_status, stripe_customer_id FROM crm_accounts WHERE account_id = $1")
            .bind(account)
            .fetch_optional(conn)
            .await?;
    Ok(row.map_or_else(AccountRow::default, |(account_name, plan, access_status, stripe_customer_id)| AccountRow {
        account_name,
        plan,
        access_status,
        stripe_customer_id,
    }))
}

/// A contact of the embedded contact book, for staff.
#[derive(Debug, Clone)]
pub struct BookRow {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub account_id: String,
    pub account_name: String,
    pub plan: String,
    pub stripe_customer_id: String,
    pub access_status: String,
    pub lifecycle_stage: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn contact_book(pool: &PgPool, query: &str, limit: i64) -> sqlx::Result<Vec<BookRow>> {
    let rows = sqlx::query(
        "SELECT * FROM contact_book
         WHERE $1 = '' OR email ILIKE '%' || $1 || '%' OR name ILIKE '%' || $1 || '%' OR account_name ILIKE '%' || $1 || '%'
         ORDER BY id DESC LIMIT $2",
    )
    .bind(query)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(BookRow {
                id: r.try_get("id")?,
                email: r.try_get("email")?,
                name: r.try_get("name")?,
                account_id: r.try_get("account_id")?,
                account_name: r.try_get("account_name")?,
                plan: r.try_get("plan")?,
                stripe_customer_id: r.try_get("stripe_customer_id")?,
                access_status: r.try_get("access_status")?,
                lifecycle_stage: r.try_get("lifecycle_stage")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}
