//! Identity's SQL: the only module that sees rows.

use chrono::{DateTime, Utc};
use sb_bus::{Envelope, catalog};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{Email, Role, token};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

impl UserRow {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Customer)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A live session resolved from its token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub session_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub impersonator_id: Option<Uuid>,
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub role: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_user_id: Option<Uuid>,
    pub action: String,
    pub target_user_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub detail: serde_json::Value,
}

/// A new session's token (shown once) and expiry.
pub struct NewSession {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// The user columns every query returns (a macro so queries stay literal strings).
macro_rules! user_cols {
    () => {
        "id, account_id, email, name, role, created_at"
    };
}

pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

pub struct SignUp<'a> {
    pub email: &'a Email,
    pub name: &'a str,
    pub account_name: &'a str,
    pub password_hash: &'a str,
    pub session_ttl: chrono::Duration,
    pub client_ip: Option<&'a str>,
    pub correlation_id: Option<Uuid>,
}

/// Creates the account, its first user, a session, the audit entry and both events
/// (`identity.user.signed_up.v1`, the welcome `identity.email.requested.v1`) in one transaction.
/// `Ok(None)` when the email is already taken: nothing is written.
pub async fn sign_up(pool: &PgPool, s: SignUp<'_>) -> Result<Option<(UserRow, AccountRow, NewSession)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let account: AccountRow = sqlx::query_as("INSERT INTO accounts (id, name) VALUES ($1, $2) RETURNING id, name, created_at")
        .bind(Uuid::now_v7())
        .bind(s.account_name)
        .fetch_one(&mut *tx)
        .await?;
    let user: UserRow = match sqlx::query_as(
        "INSERT INTO users (id, account_id, email, name, role, password_hash) VALUES ($1, $2, $3, $4, 'customer', $5)
         RETURNING id, account_id, email, name, role, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(account.id)
    .bind(s.email.as_str())
    .bind(s.name)
    .bind(s.password_hash)
    .fetch_one(&mut *tx)
    .await
    {
        Ok(u) => u,
        Err(e) if is_unique_violation(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let session = create_session(&mut tx, user.id, None, s.session_ttl, s.client_ip).await?;
    audit(&mut tx, Some(user.id), "user.signed_up", Some(user.id), Some(account.id), s.client_ip, serde_json::json!({})).await?;

    let mut signed_up = Envelope::new(
        crate::SERVICE,
        catalog::IDENTITY_USER_SIGNED_UP,
        serde_json::json!({"email": user.email, "name": user.name, "account_name": account.name, "role": user.role}),
    )
    .with_account(account.id)
    .with_user(user.id);
    if let Some(c) = s.correlation_id {
        signed_up = signed_up.with_correlation(c);
    }
    let welcome = Envelope::caused_by(
        &signed_up,
        crate::SERVICE,
        catalog::IDENTITY_EMAIL_REQUESTED,
        serde_json::json!({"template": "welcome", "to": user.email, "name": user.name, "account_name": account.name}),
    );
    sb_bus::enqueue(&mut tx, &signed_up).await?;
    sb_bus::enqueue(&mut tx, &welcome).await?;
    tx.commit().await?;
    Ok(Some((user, account, session)))
}

/// A staff or customer user created by an operator (`identity create-user`) or a test.
pub async fn create_user(
    pool: &PgPool,
    account_name: &str,
    email: &Email,
    name: &str,
    role: Role,
    password_hash: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let account_id: Uuid = sqlx::query_scalar("INSERT INTO accounts (id, name) VALUES ($1, $2) RETURNING id")
        .bind(Uuid::now_v7())
        .bind(account_name)
        .fetch_one(&mut *tx)
        .await?;
    let user = sqlx::query_as(concat!(
        "INSERT INTO users (id, account_id, email, name, role, password_hash) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        user_cols!(),
        ""
    ))
    .bind(Uuid::now_v7())
    .bind(account_id)
    .bind(email.as_str())
    .bind(name)
    .bind(role.as_str())
    .bind(password_hash)
    .fetch_one(&mut *tx)
    .await;
    let user: UserRow = match user {
        Ok(u) => u,
        Err(e) if is_unique_violation(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    audit(&mut tx, None, "user.created_by_operator", Some(user.id), Some(account_id), None, serde_json::json!({"role": role.as_str()}))
        .await?;
    tx.commit().await?;
    Ok(Some(user))
}

pub async fn create_session(
    conn: &mut PgConnection,
    user_id: Uuid,
    impersonator: Option<Uuid>,
    ttl: chrono::Duration,
    client_ip: Option<&str>,
) -> Result<NewSession, sqlx::Error> {
    let token = token::generate();
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO sessions (id, token_hash, user_id, impersonator_id, expires_at, client_ip)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6) RETURNING expires_at",
    )
    .bind(Uuid::now_v7())
    .bind(token::hash(&token))
    .bind(user_id)
    .bind(impersonator)
    .bind(ttl.num_seconds() as f64)
    .bind(client_ip)
    .fetch_one(conn)
    .await?;
    Ok(NewSession { token, expires_at })
}

/// The user and password hash for a login attempt.
pub async fn login_candidate(pool: &PgPool, email: &Email) -> Result<Option<(UserRow, String)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: UserRow,
        password_hash: String,
    }
    let row: Option<Row> = sqlx::query_as(concat!("SELECT ", user_cols!(), ", password_hash FROM users WHERE email = $1"))
        .bind(email.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| (r.user, r.password_hash)))
}

/// A live (unexpired, unrevoked) session by token.
pub async fn session_by_token(pool: &PgPool, token: &str) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id AS session_id, s.expires_at, s.impersonator_id, u.id AS user_id, u.account_id, u.role
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()",
    )
    .bind(token::hash(token))
    .fetch_optional(pool)
    .await
}

pub async fn revoke_session(pool: &PgPool, session_id: Uuid) -> Result<bool, sqlx::Error> {
    let n =
        sqlx::query("UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL").bind(session_id).execute(pool).await?;
    Ok(n.rows_affected() == 1)
}

pub async fn revoke_user_sessions(conn: &mut PgConnection, user_id: Uuid) -> Result<u64, sqlx::Error> {
    let n = sqlx::query("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(n.rows_affected())
}

pub async fn user(pool: &PgPool, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1")).bind(id).fetch_optional(pool).await
}

pub async fn account(pool: &PgPool, id: Uuid) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at FROM accounts WHERE id = $1").bind(id).fetch_optional(pool).await
}

pub async fn account_users(pool: &PgPool, account_id: Uuid) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE account_id = $1 ORDER BY created_at"))
        .bind(account_id)
        .fetch_all(pool)
        .await
}

/// Renames the user and announces it (`identity.user.updated.v1`) in one transaction.
pub async fn update_name(pool: &PgPool, user_id: Uuid, name: &str) -> Result<Option<UserRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let user: Option<UserRow> =
        sqlx::query_as(concat!("UPDATE users SET name = $2, updated_at = now() WHERE id = $1 RETURNING ", user_cols!(), ""))
            .bind(user_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(u) = &user {
        let env = Envelope::new(crate::SERVICE, catalog::IDENTITY_USER_UPDATED, serde_json::json!({"name": u.name, "email": u.email}))
            .with_account(u.account_id)
            .with_user(u.id);
        sb_bus::enqueue(&mut tx, &env).await?;
        audit(&mut tx, Some(u.id), "user.profile_updated", Some(u.id), Some(u.account_id), None, serde_json::json!({"fields": ["name"]}))
            .await?;
    }
    tx.commit().await?;
    Ok(user)
}

/// Customer accounts whose account name or any user's email or name contains `query`.
pub async fn search_customers(pool: &PgPool, query: &str, limit: i64) -> Result<Vec<AccountRow>, sqlx::Error> {
    let pattern = format!("%{}%", query.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    sqlx::query_as(
        "SELECT a.id, a.name, a.created_at FROM accounts a
         WHERE EXISTS (SELECT 1 FROM users u WHERE u.account_id = a.id AND u.role = 'customer')
           AND (a.name ILIKE $1 OR EXISTS (SELECT 1 FROM users u WHERE u.account_id = a.id AND (u.email ILIKE $1 OR u.name ILIKE $1)))
         ORDER BY a.created_at DESC LIMIT $2",
    )
    .bind(pattern)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn audit(
    conn: &mut PgConnection,
    actor: Option<Uuid>,
    action: &str,
    target: Option<Uuid>,
    account: Option<Uuid>,
    client_ip: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_log (id, actor_user_id, action, target_user_id, account_id, client_ip, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(Uuid::now_v7())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(account)
        .bind(client_ip)
        .bind(detail)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn list_audit(pool: &PgPool, user: Option<Uuid>, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor_user_id, action, target_user_id, account_id, detail FROM audit_log
         WHERE $1::uuid IS NULL OR actor_user_id = $1 OR target_user_id = $1
         ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Login throttling: failures per key in a window; a key over the limit is blocked until the
/// window ends. Returns the seconds left on a block, if any.
pub async fn throttle_blocked(pool: &PgPool, keys: &[String]) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(CEIL(EXTRACT(EPOCH FROM (blocked_until - now()))))::bigint FROM login_throttle WHERE key = ANY($1) AND blocked_until > now()")
        .bind(keys)
        .fetch_one(pool)
        .await
}

pub async fn throttle_failure(pool: &PgPool, key: &str, max_failures: i32, window: chrono::Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_throttle AS t (key, failures, window_started_at) VALUES ($1, 1, now())
         ON CONFLICT (key) DO UPDATE SET
           failures = CASE WHEN t.window_started_at < now() - make_interval(secs => $3) THEN 1 ELSE t.failures + 1 END,
           window_started_at = CASE WHEN t.window_started_at < now() - make_interval(secs => $3) THEN now() ELSE t.window_started_at END,
           blocked_until = CASE
             WHEN t.window_started_at >= now() - make_interval(secs => $3) AND t.failures + 1 >= $2
             THEN now() + make_interval(secs => $3) ELSE t.blocked_until END",
    )
    .bind(key)
    .bind(max_failures)
    .bind(window.num_seconds() as f64)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn throttle_reset(pool: &PgPool, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_throttle WHERE key = $1").bind(key).execute(pool).await?;
    Ok(())
}
