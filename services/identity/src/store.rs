//! Identity's SQL: the only module that sees rows. Every function runs on the connection or
//! transaction it is given (the service decides the transaction) and returns domain types.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Account, AccountId, Email, NewSession, Principal, Role, Session, SessionToken, User, UserId, token};

#[derive(sqlx::FromRow)]
struct UserRow {
    id: UserId,
    account_id: AccountId,
    email: Email,
    name: String,
    role: Role,
    created_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User { id: r.id, account_id: r.account_id, email: r.email, name: r.name, role: r.role, created_at: r.created_at }
    }
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: AccountId,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Self {
        Account { id: r.id, name: r.name, created_at: r.created_at }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_user_id: Option<UserId>,
    pub action: String,
    pub target_user_id: Option<UserId>,
    pub account_id: Option<AccountId>,
    pub detail: serde_json::Value,
}

/// What happened, by whom, to whom: a new audit line.
pub struct Audit<'a> {
    pub actor: Option<UserId>,
    pub action: &'a str,
    pub target: Option<UserId>,
    pub account: Option<AccountId>,
    pub client_ip: Option<&'a str>,
    pub detail: serde_json::Value,
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

pub async fn insert_account(conn: &mut PgConnection, name: &str) -> sqlx::Result<Account> {
    let row: AccountRow = sqlx::query_as("INSERT INTO accounts (id, name) VALUES ($1, $2) RETURNING id, name, created_at")
        .bind(AccountId::new())
        .bind(name)
        .fetch_one(conn)
        .await?;
    Ok(row.into())
}

/// A new user; `None` when the email is taken (the transaction is then aborted: roll it back).
pub async fn insert_user(
    conn: &mut PgConnection,
    account: AccountId,
    email: &Email,
    name: &str,
    role: Role,
    password_hash: &str,
) -> sqlx::Result<Option<User>> {
    let row = sqlx::query_as::<_, UserRow>(concat!(
        "INSERT INTO users (id, account_id, email, name, role, password_hash) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        user_cols!()
    ))
    .bind(UserId::new())
    .bind(account)
    .bind(email)
    .bind(name)
    .bind(role)
    .bind(password_hash)
    .fetch_one(conn)
    .await;
    match row {
        Ok(u) => Ok(Some(u.into())),
        Err(e) if is_unique_violation(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn insert_session(
    conn: &mut PgConnection,
    user: UserId,
    impersonator: Option<UserId>,
    ttl: chrono::Duration,
    client_ip: Option<&str>,
) -> sqlx::Result<NewSession> {
    let token = SessionToken::new();
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO sessions (id, token_hash, user_id, impersonator_id, expires_at, client_ip)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6) RETURNING expires_at",
    )
    .bind(Uuid::now_v7())
    .bind(token::hash(token.expose()))
    .bind(user)
    .bind(impersonator)
    .bind(ttl.num_seconds() as f64)
    .bind(client_ip)
    .fetch_one(conn)
    .await?;
    Ok(NewSession { token, expires_at })
}

/// The user and password hash for a login attempt.
pub async fn login_candidate(conn: &mut PgConnection, email: &Email) -> sqlx::Result<Option<(User, String)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: UserRow,
        password_hash: String,
    }
    let row: Option<Row> = sqlx::query_as(concat!("SELECT ", user_cols!(), ", password_hash FROM users WHERE email = $1"))
        .bind(email)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| (r.user.into(), r.password_hash)))
}

/// A live (unexpired, unrevoked) session by token.
pub async fn session_by_token(conn: &mut PgConnection, token: &str) -> sqlx::Result<Option<Session>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        session_id: Uuid,
        expires_at: DateTime<Utc>,
        impersonator_id: Option<UserId>,
        user_id: UserId,
        account_id: AccountId,
        role: Role,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT s.id AS session_id, s.expires_at, s.impersonator_id, u.id AS user_id, u.account_id, u.role
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()",
    )
    .bind(token::hash(token))
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Session {
        id: r.session_id,
        principal: Principal { user_id: r.user_id, account_id: r.account_id, role: r.role, impersonator: r.impersonator_id },
        expires_at: r.expires_at,
    }))
}

pub async fn revoke_session(conn: &mut PgConnection, session_id: Uuid) -> sqlx::Result<bool> {
    let n =
        sqlx::query("UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL").bind(session_id).execute(conn).await?;
    Ok(n.rows_affected() == 1)
}

pub async fn revoke_user_sessions(conn: &mut PgConnection, user: UserId) -> sqlx::Result<u64> {
    let n = sqlx::query("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()")
        .bind(user)
        .execute(conn)
        .await?;
    Ok(n.rows_affected())
}

pub async fn user(conn: &mut PgConnection, id: UserId) -> sqlx::Result<Option<User>> {
    let row: Option<UserRow> =
        sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1")).bind(id).fetch_optional(conn).await?;
    Ok(row.map(Into::into))
}

pub async fn account(conn: &mut PgConnection, id: AccountId) -> sqlx::Result<Option<Account>> {
    let row: Option<AccountRow> =
        sqlx::query_as("SELECT id, name, created_at FROM accounts WHERE id = $1").bind(id).fetch_optional(conn).await?;
    Ok(row.map(Into::into))
}

/// The users of these accounts, oldest first.
pub async fn users_of(conn: &mut PgConnection, accounts: &[AccountId]) -> sqlx::Result<Vec<User>> {
    let rows: Vec<UserRow> = sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE account_id = ANY($1) ORDER BY created_at"))
        .bind(accounts)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Support agents and admins, oldest first.
pub async fn staff_users(conn: &mut PgConnection) -> sqlx::Result<Vec<User>> {
    let rows: Vec<UserRow> =
        sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE role IN ('agent', 'admin') ORDER BY created_at"))
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn update_name(conn: &mut PgConnection, user: UserId, name: &str) -> sqlx::Result<Option<User>> {
    let row: Option<UserRow> =
        sqlx::query_as(concat!("UPDATE users SET name = $2, updated_at = now() WHERE id = $1 RETURNING ", user_cols!()))
            .bind(user)
            .bind(name)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(Into::into))
}

/// Customer accounts whose account name or any user's email or name contains `query`, newest first.
pub async fn search_customers(conn: &mut PgConnection, query: &str, limit: i64) -> sqlx::Result<Vec<Account>> {
    let pattern = format!("%{}%", query.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let rows: Vec<AccountRow> = sqlx::query_as(
        "SELECT a.id, a.name, a.created_at FROM accounts a
         WHERE EXISTS (SELECT 1 FROM users u WHERE u.account_id = a.id AND u.role = 'customer')
           AND (a.name ILIKE $1 OR EXISTS (SELECT 1 FROM users u WHERE u.account_id = a.id AND (u.email ILIKE $1 OR u.name ILIKE $1)))
         ORDER BY a.created_at DESC LIMIT $2",
    )
    .bind(pattern)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn audit(conn: &mut PgConnection, a: Audit<'_>) -> sqlx::Result<AuditRecord> {
    sqlx::query_as(
        "INSERT INTO audit_log (id, actor_user_id, action, target_user_id, account_id, client_ip, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, at, actor_user_id, action, target_user_id, account_id, detail",
    )
    .bind(Uuid::now_v7())
    .bind(a.actor)
    .bind(a.action)
    .bind(a.target)
    .bind(a.account)
    .bind(a.client_ip)
    .bind(a.detail)
    .fetch_one(conn)
    .await
}

pub async fn list_audit(conn: &mut PgConnection, user: Option<UserId>, limit: i64) -> sqlx::Result<Vec<AuditRecord>> {
    sqlx::query_as(
        "SELECT id, at, actor_user_id, action, target_user_id, account_id, detail FROM audit_log
         WHERE $1::uuid IS NULL OR actor_user_id = $1 OR target_user_id = $1
         ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Login throttling: failures per key in a window; a key over the limit is blocked until the
/// window ends. Returns the seconds left on a block, if any.
pub async fn throttle_blocked(conn: &mut PgConnection, keys: &[String]) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT max(CEIL(EXTRACT(EPOCH FROM (blocked_until - now()))))::bigint FROM login_throttle WHERE key = ANY($1) AND blocked_until > now()")
        .bind(keys)
        .fetch_one(conn)
        .await
}

pub async fn throttle_failure(conn: &mut PgConnection, key: &str, max_failures: i32, window: chrono::Duration) -> sqlx::Result<()> {
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
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn throttle_reset(conn: &mut PgConnection, key: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM login_throttle WHERE key = $1").bind(key).execute(conn).await?;
    Ok(())
}
