//! support-router's SQL: the only module that sees rows. Every function runs on the connection or
//! transaction it is given (the service decides the transaction) and returns domain types.
//!
//! Lock order, everywhere: a ticket's row (`FOR NO KEY UPDATE`, so inserts that reference it
//! still go ahead), then its clocks. The sweeper takes ticket rows the same way, skipping locked
//! ones, so it never waits on (or deadlocks with) a use case.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{
    AccessStatus, AccountId, Activity, Author, Channel, Clocks, DirectoryUser, Email, Message, Note, PlanProjection, QueueCount, Requester,
    Role, SlaClock, Ticket, TicketCategory, TicketId, TicketPriority, TicketQueue, TicketStatus, Tier, UserId,
    assist::{Draft, DraftState},
    sla::{Clock, Phase},
};

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

// ---- the user directory and plan projection ----

/// Records what identity said about a user, unless newer news is known (the role, only ever
/// sent at sign-up, is kept whichever arrives first).
pub async fn save_user(conn: &mut PgConnection, u: &DirectoryUser, as_of: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO directory_users AS d (user_id, account_id, email, name, role, as_of) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id) DO UPDATE SET
           account_id = CASE WHEN EXCLUDED.as_of >= d.as_of THEN EXCLUDED.account_id ELSE d.account_id END,
           email      = CASE WHEN EXCLUDED.as_of >= d.as_of THEN EXCLUDED.email ELSE d.email END,
           name       = CASE WHEN EXCLUDED.as_of >= d.as_of THEN EXCLUDED.name ELSE d.name END,
           role       = COALESCE(EXCLUDED.role, d.role),
           as_of      = GREATEST(EXCLUDED.as_of, d.as_of)",
    )
    .bind(u.user_id)
    .bind(u.account_id)
    .bind(&u.email)
    .bind(&u.name)
    .bind(u.role)
    .bind(as_of)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct UserRow {
    user_id: UserId,
    account_id: AccountId,
    email: Email,
    name: String,
    role: Option<Role>,
}

impl From<UserRow> for DirectoryUser {
    fn from(r: UserRow) -> Self {
        DirectoryUser { user_id: r.user_id, account_id: r.account_id, email: r.email, name: r.name, role: r.role }
    }
}

/// The lock that orders a new ticket against news about its account. What follows news (a user
/// announced, a plan changed: the directory, the plan, re-prioritising the account's open
/// tickets) holds it exclusively; intake holds it shared — new tickets of one account never wait
/// for each other — before it reads the requester and the plan. Whichever comes second sees what
/// the first committed (each statement reads afresh), so a ticket is never routed on a stale plan
/// that its re-prioritising then missed, nor left without its requester's email. Intake takes
/// only this one lock, so it cannot be part of a deadlock.
pub async fn lock_account(conn: &mut PgConnection, account: AccountId, shared: bool) -> sqlx::Result<()> {
    let sql = if shared {
        "SELECT pg_advisory_xact_lock_shared(hashtextextended('support-router account ' || $1::text, 0))"
    } else {
        "SELECT pg_advisory_xact_lock(hashtextextended('support-router account ' || $1::text, 0))"
    };
    sqlx::query(sql).bind(account).execute(conn).await?;
    Ok(())
}

pub async fn user(conn: &mut PgConnection, id: UserId) -> sqlx::Result<Option<DirectoryUser>> {
    let row: Option<UserRow> = sqlx::query_as("SELECT user_id, account_id, email, name, role FROM directory_users WHERE user_id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Into::into))
}

/// The customer user with this email, if identity told of one.
pub async fn customer_by_email(conn: &mut PgConnection, email: &Email) -> sqlx::Result<Option<DirectoryUser>> {
    let row: Option<UserRow> = sqlx::query_as(
        "SELECT user_id, account_id, email, name, role FROM directory_users WHERE email = $1 AND role = 'customer' ORDER BY as_of DESC LIMIT 1",
    )
    .bind(email)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

pub async fn plan(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<Option<PlanProjection>> {
    let row: Option<(String, AccessStatus, DateTime<Utc>)> =
        sqlx::query_as("SELECT plan, access_status, since FROM account_plans WHERE account_id = $1")
            .bind(account)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(plan, status, since)| PlanProjection { plan, status, since }))
}

/// Where a plan projection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanSource {
    Event,
    Billing,
}

/// Stores a plan unless a newer one is known (`$1` account, `$2` plan, `$3` status, `$4` since,
/// `$5` source); returns a row only when it stored. A macro so queries stay literal strings.
macro_rules! save_plan_sql {
    () => {
        "INSERT INTO account_plans AS a (account_id, plan, access_status, since, source) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (account_id) DO UPDATE SET plan = EXCLUDED.plan, access_status = EXCLUDED.access_status,
           since = EXCLUDED.since, source = EXCLUDED.source, updated_at = now()
         WHERE a.since < EXCLUDED.since
         RETURNING 1"
    };
}

/// Stores the plan if it is newer than the one known; `true` when it was stored. Locks the
/// account's row until the transaction ends, so concurrent changes of one account apply in turn.
pub async fn save_plan_if_newer(conn: &mut PgConnection, account: AccountId, p: &PlanProjection, source: PlanSource) -> sqlx::Result<bool> {
    let saved: Option<i32> = sqlx::query_scalar(save_plan_sql!())
        .bind(account)
        .bind(&p.plan)
        .bind(p.status)
        .bind(p.since)
        .bind(source_word(source))
        .fetch_optional(conn)
        .await?;
    Ok(saved.is_some())
}

fn source_word(source: PlanSource) -> &'static str {
    match source {
        PlanSource::Event => "event",
        PlanSource::Billing => "billing",
    }
}

/// [`save_plan_if_newer`] and, when it saved, the account's open tickets, in one statement (both
/// read after the caller's account lock). `None`: a newer plan is known, nothing changed.
pub async fn save_plan_and_open_tickets(
    conn: &mut PgConnection,
    account: AccountId,
    p: &PlanProjection,
    source: PlanSource,
) -> sqlx::Result<Option<Vec<TicketId>>> {
    let (saved, open): (bool, Vec<TicketId>) = sqlx::query_as(concat!(
        "WITH saved AS (",
        save_plan_sql!(),
        ") SELECT EXISTS (SELECT 1 FROM saved), ARRAY(SELECT id FROM tickets WHERE account_id = $1 AND status <> 'resolved' ORDER BY id)"
    ))
    .bind(account)
    .bind(&p.plan)
    .bind(p.status)
    .bind(p.since)
    .bind(source_word(source))
    .fetch_one(conn)
    .await?;
    Ok(saved.then_some(open))
}

// ---- tickets ----

/// The ticket columns every query returns (a macro so queries stay literal strings).
macro_rules! ticket_cols {
    () => {
        "t.id, t.account_id, t.requester_user_id, t.requester_email, t.requester_name, t.subject, t.category, t.status, t.priority,
         t.queue, t.assignee_user_id, t.tier_at_intake, t.tier_now, t.channel, t.priority_reasons, t.manual_override, t.manual_reason,
         t.first_answered_at, t.created_at, t.updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct TicketRow {
    id: TicketId,
    account_id: Option<AccountId>,
    requester_user_id: Option<UserId>,
    requester_email: Option<String>,
    requester_name: String,
    subject: String,
    category: TicketCategory,
    status: TicketStatus,
    priority: TicketPriority,
    queue: TicketQueue,
    assignee_user_id: Option<UserId>,
    tier_at_intake: Tier,
    tier_now: Tier,
    channel: Channel,
    priority_reasons: Vec<String>,
    manual_override: bool,
    manual_reason: Option<String>,
    first_answered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TicketRow {
    fn into_ticket(self, clocks: Clocks) -> Ticket {
        Ticket {
            id: self.id,
            requester: Requester {
                account_id: self.account_id,
                user_id: self.requester_user_id,
                // Stored only once parsed; a value that no longer parses reads as unknown.
                email: self.requester_email.and_then(|e| Email::parse(&e).ok()),
                name: self.requester_name,
            },
            subject: self.subject,
            category: self.category,
            status: self.status,
            priority: self.priority,
            queue: self.queue,
            assignee: self.assignee_user_id,
            tier_at_intake: self.tier_at_intake,
            tier_now: self.tier_now,
            channel: self.channel,
            priority_reasons: self.priority_reasons,
            manual_override: self.manual_override,
            manual_reason: self.manual_reason,
            first_answered_at: self.first_answered_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            clocks,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ClockRow {
    ticket_id: TicketId,
    clock: SlaClock,
    phase: Phase,
    target_ms: i64,
    elapsed_ms: i64,
    running_since: Option<DateTime<Utc>>,
    due_at: Option<DateTime<Utc>>,
    stopped_at: Option<DateTime<Utc>>,
    spell: i32,
    breached_at: Option<DateTime<Utc>>,
}

async fn clocks_of(conn: &mut PgConnection, ids: &[TicketId]) -> sqlx::Result<HashMap<TicketId, Clocks>> {
    let rows: Vec<ClockRow> = sqlx::query_as(
        "SELECT ticket_id, clock, phase, target_ms, elapsed_ms, running_since, due_at, stopped_at, spell, breached_at
         FROM sla_clocks WHERE ticket_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let mut out: HashMap<TicketId, Clocks> = HashMap::new();
    for r in rows {
        *out.entry(r.ticket_id).or_default().get_mut(r.clock) = Clock {
            phase: r.phase,
            target_ms: r.target_ms,
            elapsed_ms: r.elapsed_ms,
            running_since: r.running_since,
            due_at: r.due_at,
            stopped_at: r.stopped_at,
            spell: r.spell,
            breached_at: r.breached_at,
        };
    }
    Ok(out)
}

async fn with_clocks(conn: &mut PgConnection, rows: Vec<TicketRow>) -> sqlx::Result<Vec<Ticket>> {
    let ids: Vec<TicketId> = rows.iter().map(|r| r.id).collect();
    let mut clocks = clocks_of(conn, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let c = clocks.remove(&r.id).unwrap_or_default();
            r.into_ticket(c)
        })
        .collect())
}

pub async fn ticket(conn: &mut PgConnection, id: TicketId) -> sqlx::Result<Option<Ticket>> {
    let row: Option<TicketRow> =
        sqlx::query_as(concat!("SELECT ", ticket_cols!(), " FROM tickets t WHERE t.id = $1")).bind(id).fetch_optional(&mut *conn).await?;
    Ok(with_clocks(conn, row.into_iter().collect()).await?.pop())
}

/// The ticket, its row locked until the transaction ends.
pub async fn ticket_for_update(conn: &mut PgConnection, id: TicketId) -> sqlx::Result<Option<Ticket>> {
    let row: Option<TicketRow> = sqlx::query_as(concat!("SELECT ", ticket_cols!(), " FROM tickets t WHERE t.id = $1 FOR NO KEY UPDATE"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(with_clocks(conn, row.into_iter().collect()).await?.pop())
}

/// These tickets, each row locked; tickets another transaction holds are skipped when `skip_locked`.
pub async fn tickets_for_update(conn: &mut PgConnection, ids: &[TicketId], skip_locked: bool) -> sqlx::Result<Vec<Ticket>> {
    let rows: Vec<TicketRow> = if skip_locked {
        sqlx::query_as(concat!(
            "SELECT ",
            ticket_cols!(),
            " FROM tickets t WHERE t.id = ANY($1) ORDER BY t.id FOR NO KEY UPDATE SKIP LOCKED"
        ))
    } else {
        sqlx::query_as(concat!("SELECT ", ticket_cols!(), " FROM tickets t WHERE t.id = ANY($1) ORDER BY t.id FOR NO KEY UPDATE"))
    }
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    with_clocks(conn, rows).await
}

pub async fn insert_ticket(conn: &mut PgConnection, t: &Ticket) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tickets (id, account_id, requester_user_id, requester_email, requester_name, subject,
           category, status, priority, queue, assignee_user_id, tier_at_intake, tier_now, channel, priority_reasons, manual_override,
           manual_reason, first_answered_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(t.id)
    .bind(t.requester.account_id)
    .bind(t.requester.user_id)
    .bind(t.requester.email.as_ref())
    .bind(&t.requester.name)
    .bind(&t.subject)
    .bind(t.category)
    .bind(t.status)
    .bind(t.priority)
    .bind(t.queue)
    .bind(t.assignee)
    .bind(t.tier_at_intake)
    .bind(t.tier_now)
    .bind(t.channel)
    .bind(&t.priority_reasons)
    .bind(t.manual_override)
    .bind(t.manual_reason.as_deref())
    .bind(t.first_answered_at)
    .bind(t.created_at)
    .bind(t.updated_at)
    .execute(&mut *conn)
    .await?;
    save_clocks(conn, t.id, &t.clocks).await
}

/// Writes what changes on a ticket over its life, and its clocks.
pub async fn update_ticket(conn: &mut PgConnection, t: &Ticket) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE tickets SET requester_email = $2, requester_name = $3, status = $4, priority = $5, queue = $6, assignee_user_id = $7,
           tier_now = $8, priority_reasons = $9, manual_override = $10, manual_reason = $11, first_answered_at = $12, updated_at = $13
         WHERE id = $1",
    )
    .bind(t.id)
    .bind(t.requester.email.as_ref())
    .bind(&t.requester.name)
    .bind(t.status)
    .bind(t.priority)
    .bind(t.queue)
    .bind(t.assignee)
    .bind(t.tier_now)
    .bind(&t.priority_reasons)
    .bind(t.manual_override)
    .bind(t.manual_reason.as_deref())
    .bind(t.first_answered_at)
    .bind(t.updated_at)
    .execute(&mut *conn)
    .await?;
    save_clocks(conn, t.id, &t.clocks).await
}

/// Writes the ticket's three clocks in one statement.
async fn save_clocks(conn: &mut PgConnection, id: TicketId, clocks: &Clocks) -> sqlx::Result<()> {
    let all: Vec<(&str, &Clock)> = SlaClock::ALL.iter().map(|c| (c.as_str(), clocks.get(*c))).collect();
    let col = |f: fn(&Clock) -> Option<DateTime<Utc>>| all.iter().map(|(_, c)| f(c)).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO sla_clocks (ticket_id, clock, phase, target_ms, elapsed_ms, running_since, due_at, stopped_at, spell, breached_at)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::timestamptz[], $7::timestamptz[],
                                  $8::timestamptz[], $9::int[], $10::timestamptz[])
         ON CONFLICT (ticket_id, clock) DO UPDATE SET phase = EXCLUDED.phase, target_ms = EXCLUDED.target_ms,
           elapsed_ms = EXCLUDED.elapsed_ms, running_since = EXCLUDED.running_since, due_at = EXCLUDED.due_at,
           stopped_at = EXCLUDED.stopped_at, spell = EXCLUDED.spell, breached_at = EXCLUDED.breached_at",
    )
    .bind(id)
    .bind(all.iter().map(|(name, _)| *name).collect::<Vec<_>>())
    .bind(all.iter().map(|(_, c)| c.phase.as_str()).collect::<Vec<_>>())
    .bind(all.iter().map(|(_, c)| c.target_ms).collect::<Vec<_>>())
    .bind(all.iter().map(|(_, c)| c.elapsed_ms).collect::<Vec<_>>())
    .bind(col(|c| c.running_since))
    .bind(col(|c| c.due_at))
    .bind(col(|c| c.stopped_at))
    .bind(all.iter().map(|(_, c)| c.spell).collect::<Vec<_>>())
    .bind(col(|c| c.breached_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// Which tickets to list (staff filters; a customer's list is their account's).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub account: Option<AccountId>,
    pub queue: Option<TicketQueue>,
    pub status: Option<TicketStatus>,
    pub priority: Option<TicketPriority>,
    pub assignee: Option<UserId>,
    pub open_only: bool,
}

/// Newest activity first.
pub async fn list_tickets(conn: &mut PgConnection, f: &Filter, limit: i64) -> sqlx::Result<Vec<Ticket>> {
    let rows: Vec<TicketRow> = sqlx::query_as(concat!(
        "SELECT ",
        ticket_cols!(),
        " FROM tickets t
         WHERE ($1::uuid IS NULL OR t.account_id = $1) AND ($2::text IS NULL OR t.queue = $2) AND ($3::text IS NULL OR t.status = $3)
           AND ($4::text IS NULL OR t.priority = $4) AND ($5::uuid IS NULL OR t.assignee_user_id = $5)
           AND (NOT $6 OR t.status <> 'resolved')
         ORDER BY t.updated_at DESC, t.id DESC LIMIT $7"
    ))
    .bind(f.account)
    .bind(f.queue)
    .bind(f.status)
    .bind(f.priority)
    .bind(f.assignee)
    .bind(f.open_only)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    with_clocks(conn, rows).await
}

// ---- intake: idempotency, retried requests, throttling ----

/// How a double-submission claim came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The request is new: the ticket it names is to be created in this transaction.
    New,
    /// A duplicate of this earlier ticket.
    Earlier(TicketId),
}

/// Claims `(requester, idempotency key)` for `ticket`. A concurrent claim of the same key waits
/// for this transaction and then finds this ticket.
pub async fn claim_key(conn: &mut PgConnection, requester_key: &str, idempotency_key: &str, ticket: TicketId) -> sqlx::Result<Claim> {
    let claimed: Option<TicketId> = sqlx::query_scalar(
        "INSERT INTO ticket_requests (requester_key, idempotency_key, ticket_id) VALUES ($1, $2, $3)
         ON CONFLICT (requester_key, idempotency_key) DO NOTHING RETURNING ticket_id",
    )
    .bind(requester_key)
    .bind(idempotency_key)
    .bind(ticket)
    .fetch_optional(&mut *conn)
    .await?;
    if claimed.is_some() {
        return Ok(Claim::New);
    }
    let earlier: TicketId = sqlx::query_scalar("SELECT ticket_id FROM ticket_requests WHERE requester_key = $1 AND idempotency_key = $2")
        .bind(requester_key)
        .bind(idempotency_key)
        .fetch_one(conn)
        .await?;
    Ok(Claim::Earlier(earlier))
}

/// Claims `(requester, subject and body)` for `ticket`, unless a ticket claimed it within `window`.
pub async fn claim_fingerprint(
    conn: &mut PgConnection,
    requester_key: &str,
    fingerprint: &str,
    ticket: TicketId,
    window: std::time::Duration,
) -> sqlx::Result<Claim> {
    let claimed: Option<TicketId> = sqlx::query_scalar(
        "INSERT INTO ticket_fingerprints AS f (requester_key, fingerprint, ticket_id, created_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (requester_key, fingerprint) DO UPDATE SET ticket_id = EXCLUDED.ticket_id, created_at = EXCLUDED.created_at
         WHERE f.created_at <= now() - make_interval(secs => $4)
         RETURNING ticket_id",
    )
    .bind(requester_key)
    .bind(fingerprint)
    .bind(ticket)
    .bind(secs(window))
    .fetch_optional(&mut *conn)
    .await?;
    if claimed.is_some() {
        return Ok(Claim::New);
    }
    let earlier: TicketId = sqlx::query_scalar("SELECT ticket_id FROM ticket_fingerprints WHERE requester_key = $1 AND fingerprint = $2")
        .bind(requester_key)
        .bind(fingerprint)
        .fetch_one(conn)
        .await?;
    Ok(Claim::Earlier(earlier))
}

/// Counts one submission for `key` in its fixed window. `Err(seconds)`: over `max`, with the
/// seconds until the window ends (the caller rolls back, so a refused submission is not counted).
pub async fn throttle_take(conn: &mut PgConnection, key: &str, max: i32, window: std::time::Duration) -> sqlx::Result<Result<(), u64>> {
    let (count, left): (i32, i64) = sqlx::query_as(
        "INSERT INTO intake_throttle AS t (key, window_started_at, count) VALUES ($1, now(), 1)
         ON CONFLICT (key) DO UPDATE SET
           count = CASE WHEN t.window_started_at <= now() - make_interval(secs => $2) THEN 1 ELSE t.count + 1 END,
           window_started_at = CASE WHEN t.window_started_at <= now() - make_interval(secs => $2) THEN now() ELSE t.window_started_at END
         RETURNING count, CEIL(EXTRACT(EPOCH FROM (window_started_at + make_interval(secs => $2) - now())))::bigint",
    )
    .bind(key)
    .bind(secs(window))
    .fetch_one(conn)
    .await?;
    Ok(if count > max { Err(left.max(1).unsigned_abs()) } else { Ok(()) })
}

/// Deletes up to `limit` rows of each kind intake no longer needs: idempotency keys older than
/// `keys_for`, fingerprints older than the duplicate window, throttle windows that ended. Returns
/// how many rows went.
pub async fn prune_intake(
    conn: &mut PgConnection,
    keys_for: std::time::Duration,
    duplicate_window: std::time::Duration,
    contact_window: std::time::Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    let mut gone = 0;
    for (sql, age) in [
        (
            "DELETE FROM ticket_requests WHERE ctid = ANY(ARRAY(
               SELECT ctid FROM ticket_requests WHERE created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2))",
            keys_for,
        ),
        (
            "DELETE FROM ticket_fingerprints WHERE ctid = ANY(ARRAY(
               SELECT ctid FROM ticket_fingerprints WHERE created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2))",
            duplicate_window,
        ),
        (
            "DELETE FROM intake_throttle WHERE ctid = ANY(ARRAY(
               SELECT ctid FROM intake_throttle WHERE window_started_at < now() - make_interval(secs => $1) ORDER BY window_started_at LIMIT $2))",
            contact_window,
        ),
    ] {
        gone += sqlx::query(sql).bind(secs(age)).bind(limit).execute(&mut *conn).await?.rows_affected();
    }
    Ok(gone)
}

// ---- thread, notes, activity ----

pub async fn insert_message(conn: &mut PgConnection, ticket: TicketId, m: &Message) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO ticket_messages (id, ticket_id, author, author_user_id, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(m.id)
        .bind(ticket)
        .bind(m.author)
        .bind(m.author_user_id)
        .bind(&m.body)
        .bind(m.created_at)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    author: Author,
    author_user_id: Option<UserId>,
    body: String,
    created_at: DateTime<Utc>,
}

pub async fn messages(conn: &mut PgConnection, ticket: TicketId) -> sqlx::Result<Vec<Message>> {
    let rows: Vec<MessageRow> = sqlx::query_as(
        "SELECT id, author, author_user_id, body, created_at FROM ticket_messages WHERE ticket_id = $1 ORDER BY created_at, id",
    )
    .bind(ticket)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Message { id: r.id, author: r.author, author_user_id: r.author_user_id, body: r.body, created_at: r.created_at })
        .collect())
}

/// The ticket's body: its first message.
pub async fn first_message(conn: &mut PgConnection, ticket: TicketId) -> sqlx::Result<String> {
    let body: Option<String> = sqlx::query_scalar("SELECT body FROM ticket_messages WHERE ticket_id = $1 ORDER BY created_at, id LIMIT 1")
        .bind(ticket)
        .fetch_optional(conn)
        .await?;
    Ok(body.unwrap_or_default())
}

pub async fn insert_note(conn: &mut PgConnection, ticket: TicketId, n: &Note) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO ticket_notes (id, ticket_id, author_user_id, body, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(n.id)
        .bind(ticket)
        .bind(n.author_user_id)
        .bind(&n.body)
        .bind(n.created_at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn notes(conn: &mut PgConnection, ticket: TicketId) -> sqlx::Result<Vec<Note>> {
    let rows: Vec<(Uuid, UserId, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, author_user_id, body, created_at FROM ticket_notes WHERE ticket_id = $1 ORDER BY created_at, id")
            .bind(ticket)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(id, author_user_id, body, created_at)| Note { id, author_user_id, body, created_at }).collect())
}

pub async fn insert_activity(conn: &mut PgConnection, ticket: TicketId, a: &Activity) -> sqlx::Result<()> {
    insert_activities(conn, ticket, std::slice::from_ref(a)).await
}

/// Several activity lines in one statement.
pub async fn insert_activities(conn: &mut PgConnection, ticket: TicketId, lines: &[Activity]) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO ticket_activity (id, ticket_id, at, actor_user_id, action, detail)
         SELECT id, $1, at, actor, action, detail FROM UNNEST($2::uuid[], $3::timestamptz[], $4::uuid[], $5::text[], $6::text[])
           AS l(id, at, actor, action, detail)",
    )
    .bind(ticket)
    .bind(lines.iter().map(|a| a.id).collect::<Vec<_>>())
    .bind(lines.iter().map(|a| a.at).collect::<Vec<_>>())
    .bind(lines.iter().map(|a| a.actor.map(UserId::as_uuid)).collect::<Vec<_>>())
    .bind(lines.iter().map(|a| a.action.as_str()).collect::<Vec<_>>())
    .bind(lines.iter().map(|a| a.detail.as_str()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ActivityRow {
    id: Uuid,
    at: DateTime<Utc>,
    actor_user_id: Option<UserId>,
    action: String,
    detail: String,
}

pub async fn activity(conn: &mut PgConnection, ticket: TicketId) -> sqlx::Result<Vec<Activity>> {
    let rows: Vec<ActivityRow> =
        sqlx::query_as("SELECT id, at, actor_user_id, action, detail FROM ticket_activity WHERE ticket_id = $1 ORDER BY at, id")
            .bind(ticket)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|r| Activity { id: r.id, at: r.at, actor: r.actor_user_id, action: r.action, detail: r.detail }).collect())
}

// ---- events held for an unknown requester ----

pub async fn hold_event(
    conn: &mut PgConnection,
    ticket: TicketId,
    event_type: &str,
    data: &serde_json::Value,
    correlation: Uuid,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO held_events (ticket_id, event_type, data, correlation_id) VALUES ($1, $2, $3, $4)")
        .bind(ticket)
        .bind(event_type)
        .bind(data)
        .bind(correlation)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes and returns the ticket's held events, oldest first.
pub async fn take_held(conn: &mut PgConnection, ticket: TicketId) -> sqlx::Result<Vec<(String, serde_json::Value, Uuid)>> {
    let rows: Vec<(i64, String, serde_json::Value, Uuid)> =
        sqlx::query_as("SELECT seq, event_type, data, correlation_id FROM held_events WHERE ticket_id = $1 ORDER BY seq")
            .bind(ticket)
            .fetch_all(&mut *conn)
            .await?;
    sqlx::query("DELETE FROM held_events WHERE ticket_id = $1").bind(ticket).execute(conn).await?;
    Ok(rows.into_iter().map(|(_, t, d, c)| (t, d, c)).collect())
}

/// The user's tickets whose requester email is not known yet.
pub async fn tickets_awaiting_requester(conn: &mut PgConnection, user: UserId) -> sqlx::Result<Vec<TicketId>> {
    sqlx::query_scalar("SELECT id FROM tickets WHERE requester_user_id = $1 AND requester_email IS NULL ORDER BY id")
        .bind(user)
        .fetch_all(conn)
        .await
}

// ---- background work ----

pub async fn open_tickets_of(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<Vec<TicketId>> {
    sqlx::query_scalar("SELECT id FROM tickets WHERE account_id = $1 AND status <> 'resolved' ORDER BY id")
        .bind(account)
        .fetch_all(conn)
        .await
}

/// Accounts with open tickets of an unknown tier (their plan was not known at intake).
pub async fn accounts_of_unknown_tier(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<AccountId>> {
    sqlx::query_scalar(
        "SELECT account_id FROM tickets WHERE status <> 'resolved' AND tier_now = 'unknown' AND account_id IS NOT NULL
         GROUP BY account_id ORDER BY min(created_at) LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Tickets with a running clock past due whose breach is not recorded yet.
pub async fn overdue_tickets(conn: &mut PgConnection, now: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<TicketId>> {
    sqlx::query_scalar(
        "SELECT ticket_id FROM sla_clocks WHERE phase = 'running' AND breached_at IS NULL AND due_at <= $1
         GROUP BY ticket_id ORDER BY min(due_at) LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Each queue's open tickets, how many wait for a first answer, and the oldest of those.
pub async fn queue_counts(conn: &mut PgConnection) -> sqlx::Result<Vec<QueueCount>> {
    let rows: Vec<(TicketQueue, i64, i64, Option<f64>)> = sqlx::query_as(
        "SELECT queue, count(*), count(*) FILTER (WHERE first_answered_at IS NULL),
                EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE first_answered_at IS NULL))::float8
         FROM tickets WHERE status <> 'resolved' GROUP BY queue",
    )
    .fetch_all(conn)
    .await?;
    Ok(TicketQueue::ALL
        .iter()
        .map(|q| {
            let found = rows.iter().find(|r| r.0 == *q);
            QueueCount {
                queue: *q,
                open: found.map_or(0, |r| r.1),
                unanswered: found.map_or(0, |r| r.2),
                oldest_unanswered_seconds: found.and_then(|r| r.3).map_or(0, |s| s.max(0.0) as i64),
            }
        })
        .collect())
}

// ---- AI drafts ----

#[derive(sqlx::FromRow)]
struct DraftRow {
    id: Uuid,
    for_message_id: Uuid,
    state: DraftState,
    summary: String,
    suggested_category: Option<TicketCategory>,
    suggested_urgency: Option<TicketPriority>,
    reply: String,
    source: String,
    model: String,
    reason: String,
    created_at: DateTime<Utc>,
    decided_by: Option<UserId>,
    decided_at: Option<DateTime<Utc>>,
    sent_message_id: Option<Uuid>,
}

impl From<DraftRow> for Draft {
    fn from(r: DraftRow) -> Self {
        Draft {
            id: r.id,
            for_message_id: r.for_message_id,
            state: r.state,
            summary: r.summary,
            suggested_category: r.suggested_category,
            suggested_urgency: r.suggested_urgency,
            reply: r.reply,
            source: r.source,
            model: r.model,
            reason: r.reason,
            created_at: r.created_at,
            decided_by: r.decided_by,
            decided_at: r.decided_at,
            sent_message_id: r.sent_message_id,
        }
    }
}

macro_rules! draft_cols {
    () => {
        "id, for_message_id, state, summary, suggested_category, suggested_urgency, reply, source, model, reason, created_at, decided_by,
         decided_at, sent_message_id"
    };
}

/// Stores a draft from ai-assist (a redelivery changes nothing); `false` when it was known.
pub async fn insert_draft(conn: &mut PgConnection, ticket: TicketId, d: &Draft) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO ticket_drafts (id, ticket_id, for_message_id, state, summary, suggested_category, suggested_urgency, reply, source,
           model, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(d.id)
    .bind(ticket)
    .bind(d.for_message_id)
    .bind(d.state)
    .bind(&d.summary)
    .bind(d.suggested_category)
    .bind(d.suggested_urgency)
    .bind(&d.reply)
    .bind(&d.source)
    .bind(&d.model)
    .bind(&d.reason)
    .bind(d.created_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The ticket's drafts still offered, other than `except`, become superseded.
pub async fn supersede_drafts(conn: &mut PgConnection, ticket: TicketId, except: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE ticket_drafts SET state = 'superseded' WHERE ticket_id = $1 AND state = 'offered' AND id <> $2")
        .bind(ticket)
        .bind(except)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn drafts(conn: &mut PgConnection, ticket: TicketId) -> sqlx::Result<Vec<Draft>> {
    let rows: Vec<DraftRow> =
        sqlx::query_as(concat!("SELECT ", draft_cols!(), " FROM ticket_drafts WHERE ticket_id = $1 ORDER BY created_at DESC, id DESC"))
            .bind(ticket)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// One draft of a ticket, locked until the transaction ends.
pub async fn draft_for_update(conn: &mut PgConnection, ticket: TicketId, id: Uuid) -> sqlx::Result<Option<Draft>> {
    let row: Option<DraftRow> =
        sqlx::query_as(concat!("SELECT ", draft_cols!(), " FROM ticket_drafts WHERE ticket_id = $1 AND id = $2 FOR UPDATE"))
            .bind(ticket)
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(Into::into))
}

/// Records a person's decision on a draft.
pub async fn decide_draft(
    conn: &mut PgConnection,
    id: Uuid,
    state: DraftState,
    by: UserId,
    reason: Option<&str>,
    sent_message_id: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE ticket_drafts SET state = $2, decided_by = $3, decided_at = now(), sent_message_id = $4, reason = COALESCE($5, reason)
         WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(by)
    .bind(sent_message_id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// The ticket's newest customer message.
pub async fn latest_customer_message(conn: &mut PgConnection, ticket: TicketId) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM ticket_messages WHERE ticket_id = $1 AND author = 'customer' ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(ticket)
    .fetch_optional(conn)
    .await
}
