//! crm-sync's SQL over its own state (`crm_users`, `crm_accounts`): the only module that sees
//! those rows. Every function runs one statement or two on the connection or transaction it is
//! given (the service decides the transaction) and returns domain types.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{
    AccessStatus, AccountId, AccountState, ContactSync, Email, FailedAttempt, LifecycleStage, LinkedContact, Profile, SyncStatus, UserId,
    Wanted,
};

/// Records a user who signed up: a new row the CRM should hear about. `false`: known already.
pub async fn insert_user(conn: &mut PgConnection, user: UserId, account: AccountId, profile: &Profile) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO crm_users (user_id, account_id, email, name, profile_as_of, status, desired_version, synced_version)
         VALUES ($1, $2, $3, $4, $5, 'pending', 1, 0)
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user)
    .bind(account)
    .bind(&profile.email)
    .bind(&profile.name)
    .bind(profile.as_of)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A known user's profile, locked until the transaction ends.
pub async fn profile_for_update(conn: &mut PgConnection, user: UserId) -> sqlx::Result<Option<Profile>> {
    let row: Option<(Email, String, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT email, name, profile_as_of FROM crm_users WHERE user_id = $1 FOR UPDATE")
            .bind(user)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(email, name, as_of)| Profile { email, name, as_of }))
}

pub async fn save_profile(conn: &mut PgConnection, user: UserId, profile: &Profile) -> sqlx::Result<()> {
    sqlx::query("UPDATE crm_users SET email = $2, name = $3, profile_as_of = $4, updated_at = now() WHERE user_id = $1")
        .bind(user)
        .bind(&profile.email)
        .bind(&profile.name)
        .bind(profile.as_of)
        .execute(conn)
        .await?;
    Ok(())
}

/// The CRM should hold something new for this user: a write is due.
pub async fn want_user_pushed(conn: &mut PgConnection, user: UserId) -> sqlx::Result<()> {
    sqlx::query("UPDATE crm_users SET desired_version = desired_version + 1, status = 'pending', updated_at = now() WHERE user_id = $1")
        .bind(user)
        .execute(conn)
        .await?;
    Ok(())
}

/// The CRM should hold something new for every user of this account. Returns the users, as
/// [`users_of_account`] does.
pub async fn want_account_pushed(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<Vec<UserId>> {
    sqlx::query_scalar(
        "WITH pushed AS (
             UPDATE crm_users SET desired_version = desired_version + 1, status = 'pending', updated_at = now() WHERE account_id = $1
             RETURNING user_id, email)
         SELECT user_id FROM pushed ORDER BY email, user_id",
    )
    .bind(account)
    .fetch_all(conn)
    .await
}

/// Sets an account's name (from its sign-up). `true` when it changed.
pub async fn set_account_name(conn: &mut PgConnection, account: AccountId, name: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO crm_accounts (account_id, account_name) VALUES ($1, $2)
         ON CONFLICT (account_id) DO UPDATE SET account_name = EXCLUDED.account_name, updated_at = now()
         WHERE crm_accounts.account_name IS DISTINCT FROM EXCLUDED.account_name",
    )
    .bind(account)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    account_name: String,
    plan: String,
    access_status: AccessStatus,
    stripe_customer_id: String,
    as_of: Option<DateTime<Utc>>,
}

impl From<AccountRow> for AccountState {
    fn from(r: AccountRow) -> Self {
        AccountState {
            name: r.account_name,
            plan: r.plan,
            access: r.access_status,
            stripe_customer_id: Some(r.stripe_customer_id).filter(|c| !c.is_empty()),
            as_of: r.as_of,
        }
    }
}

/// What is known about an account (created empty if nothing is), locked until the transaction ends.
/// One statement when the account is known or new to this transaction; two when another
/// transaction created it meanwhile (the first statement's snapshot cannot see that row).
pub async fn account_for_update(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<AccountState> {
    let row: Option<AccountRow> = sqlx::query_as(
        "WITH created AS (
             INSERT INTO crm_accounts (account_id) VALUES ($1) ON CONFLICT (account_id) DO NOTHING
             RETURNING account_name, plan, access_status, stripe_customer_id, as_of),
         known AS (
             SELECT account_name, plan, access_status, stripe_customer_id, as_of FROM crm_accounts WHERE account_id = $1 FOR UPDATE)
         SELECT * FROM created UNION ALL SELECT * FROM known",
    )
    .bind(account)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(row.into());
    }
    let row: AccountRow = sqlx::query_as(
        "SELECT account_name, plan, access_status, stripe_customer_id, as_of FROM crm_accounts WHERE account_id = $1 FOR UPDATE",
    )
    .bind(account)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// Stores billing's view of an account (the name is the sign-up's, kept as is).
pub async fn save_access(conn: &mut PgConnection, account: AccountId, state: &AccountState) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE crm_accounts SET plan = $2, access_status = $3, stripe_customer_id = $4, as_of = $5, updated_at = now()
         WHERE account_id = $1",
    )
    .bind(account)
    .bind(&state.plan)
    .bind(state.access)
    .bind(state.stripe_customer_id.as_deref().unwrap_or_default())
    .bind(state.as_of)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn users_of_account(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<Vec<UserId>> {
    sqlx::query_scalar("SELECT user_id FROM crm_users WHERE account_id = $1 ORDER BY email, user_id").bind(account).fetch_all(conn).await
}

#[derive(sqlx::FromRow)]
struct WantedRow {
    user_id: UserId,
    account_id: AccountId,
    email: Email,
    name: String,
    crm_contact_id: Option<String>,
    lifecycle_stage: String,
    desired_version: i64,
    synced_version: i64,
    account_name: Option<String>,
    plan: Option<String>,
    access_status: Option<AccessStatus>,
    stripe_customer_id: Option<String>,
    as_of: Option<DateTime<Utc>>,
}

/// What the CRM should hold for a user, and what is known of their contact.
pub async fn wanted(conn: &mut PgConnection, user: UserId) -> sqlx::Result<Option<Wanted>> {
    let row: Option<WantedRow> = sqlx::query_as(
        "SELECT u.user_id, u.account_id, u.email, u.name, u.crm_contact_id, u.lifecycle_stage, u.desired_version, u.synced_version,
                a.account_name, a.plan, a.access_status, a.stripe_customer_id, a.as_of
         FROM crm_users u LEFT JOIN crm_accounts a ON a.account_id = u.account_id
         WHERE u.user_id = $1",
    )
    .bind(user)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| {
        let account = match r.access_status {
            Some(access) => AccountState {
                name: r.account_name.unwrap_or_default(),
                plan: r.plan.unwrap_or_default(),
                access,
                stripe_customer_id: r.stripe_customer_id.filter(|c| !c.is_empty()),
                as_of: r.as_of,
            },
            None => AccountState::default(),
        };
        Wanted {
            user_id: r.user_id,
            account_id: r.account_id,
            email: r.email,
            name: r.name,
            account,
            contact: r.crm_contact_id.map(|id| LinkedContact { id, stage: r.lifecycle_stage }),
            version: r.desired_version,
            synced_version: r.synced_version,
        }
    }))
}

pub async fn desired_version(conn: &mut PgConnection, user: UserId) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT desired_version FROM crm_users WHERE user_id = $1").bind(user).fetch_optional(conn).await
}

/// Records that the CRM holds `version` of the user's contact, as `contact_id` at `stage`, if
/// that is still the version wanted. `false`: it moved while the CRM answered (only the link to
/// the contact is recorded then).
pub async fn record_written(
    conn: &mut PgConnection,
    user: UserId,
    version: i64,
    contact_id: &str,
    stage: &LifecycleStage,
) -> sqlx::Result<bool> {
    let synced = sqlx::query(
        "UPDATE crm_users SET crm_contact_id = $3, lifecycle_stage = $4, status = 'synced', synced_version = $2, last_error = '',
                attempts = 0, next_attempt_at = NULL, synced_at = now(), updated_at = now()
         WHERE user_id = $1 AND desired_version = $2",
    )
    .bind(user)
    .bind(version)
    .bind(contact_id)
    .bind(stage.as_str())
    .execute(&mut *conn)
    .await?;
    if synced.rows_affected() == 1 {
        return Ok(true);
    }
    sqlx::query("UPDATE crm_users SET crm_contact_id = $2, updated_at = now() WHERE user_id = $1")
        .bind(user)
        .bind(contact_id)
        .execute(conn)
        .await?;
    Ok(false)
}

/// Records a failed attempt on a user whose contact is not in sync (one that is has nothing
/// pending, whatever failed).
pub async fn record_user_failure(conn: &mut PgConnection, user: UserId, f: &FailedAttempt) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE crm_users SET status = $2, last_error = $3, attempts = $4, next_attempt_at = $5, updated_at = now()
         WHERE user_id = $1 AND synced_version < desired_version",
    )
    .bind(user)
    .bind(f.status())
    .bind(&f.reason)
    .bind(f.attempts)
    .bind(f.next_attempt_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`record_user_failure`] for every user of an account.
pub async fn record_account_failure(conn: &mut PgConnection, account: AccountId, f: &FailedAttempt) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE crm_users SET status = $2, last_error = $3, attempts = $4, next_attempt_at = $5, updated_at = now()
         WHERE account_id = $1 AND synced_version < desired_version",
    )
    .bind(account)
    .bind(f.status())
    .bind(&f.reason)
    .bind(f.attempts)
    .bind(f.next_attempt_at)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct SyncRow {
    user_id: UserId,
    account_id: AccountId,
    email: Email,
    crm_contact_id: Option<String>,
    lifecycle_stage: String,
    status: SyncStatus,
    last_error: String,
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    synced_at: Option<DateTime<Utc>>,
}

impl From<SyncRow> for ContactSync {
    fn from(r: SyncRow) -> Self {
        ContactSync {
            user_id: r.user_id,
            account_id: r.account_id,
            email: r.email,
            crm_contact_id: r.crm_contact_id,
            lifecycle_stage: r.lifecycle_stage,
            status: r.status,
            last_error: r.last_error,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            synced_at: r.synced_at,
        }
    }
}

/// How each user's contact sync stands, for one account.
pub async fn contact_syncs(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<Vec<ContactSync>> {
    let rows: Vec<SyncRow> = sqlx::query_as(
        "SELECT user_id, account_id, email, crm_contact_id, lifecycle_stage, status, last_error, attempts, next_attempt_at, synced_at
         FROM crm_users WHERE account_id = $1 ORDER BY email, user_id",
    )
    .bind(account)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(ContactSync::from).collect())
}
