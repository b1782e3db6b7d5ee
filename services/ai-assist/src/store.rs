//! ai-assist's SQL, and nothing else.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{
    AccessStatus, AccountId, AccountPlan, CallRecord, DraftRecord, MessageAuthor, ThreadMessage, TicketCategory, TicketContext, TicketId,
    TicketPriority, TicketQueue, Usage, guard::Hit,
};

/// Stores a ticket's context. From a message (no priority, queue or tier): only if the ticket is
/// new. From the opening: fills in what a message could not tell, whichever came first.
pub async fn upsert_ticket(conn: &mut PgConnection, t: &TicketContext, flags: &[String]) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tickets AS t (ticket_id, account_id, subject, flags, category, priority, queue, tier) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (ticket_id) DO UPDATE SET priority = EXCLUDED.priority, queue = EXCLUDED.queue, tier = EXCLUDED.tier
           WHERE EXCLUDED.tier IS NOT NULL AND t.tier IS NULL",
    )
    .bind(t.ticket_id)
    .bind(t.account_id)
    .bind(&t.subject)
    .bind(flags)
    .bind(t.category)
    .bind(t.priority)
    .bind(t.queue)
    .bind(&t.tier)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct TicketRow {
    ticket_id: TicketId,
    account_id: Option<AccountId>,
    subject: String,
    flags: Vec<String>,
    category: TicketCategory,
    priority: Option<TicketPriority>,
    queue: Option<TicketQueue>,
    tier: Option<String>,
}

/// A ticket's context and the injection rules its subject tripped.
pub async fn ticket(conn: &mut PgConnection, id: TicketId) -> sqlx::Result<Option<(TicketContext, Vec<String>)>> {
    let row: Option<TicketRow> =
        sqlx::query_as("SELECT ticket_id, account_id, subject, flags, category, priority, queue, tier FROM tickets WHERE ticket_id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|r| {
        (
            TicketContext {
                ticket_id: r.ticket_id,
                account_id: r.account_id,
                subject: r.subject,
                category: r.category,
                priority: r.priority,
                queue: r.queue,
                tier: r.tier,
            },
            r.flags,
        )
    }))
}

fn author_str(a: MessageAuthor) -> &'static str {
    match a {
        MessageAuthor::Customer => "customer",
        MessageAuthor::Agent => "agent",
    }
}

/// This transaction's commit does not wait for the log to reach disk (`synchronous_commit = off`
/// for it alone); a later durable commit flushes it too.
pub async fn commit_without_flush_wait(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SET LOCAL synchronous_commit = off").execute(conn).await?;
    Ok(())
}

/// What storing a message found: its ticket as stored (with the injection rules its subject
/// tripped) and, for a customer message, the id of the pending draft it opened (`None`: not a
/// customer message, or a redelivery whose draft exists already).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub ticket: TicketContext,
    pub subject_flags: Vec<String>,
    pub new_draft: Option<Uuid>,
}

/// A ticket's columns as stored, and the draft a message opened.
type RecordedRow = (
    TicketId,
    Option<AccountId>,
    String,
    Vec<String>,
    TicketCategory,
    Option<TicketPriority>,
    Option<TicketQueue>,
    Option<String>,
    Option<Uuid>,
);

/// Stores a thread message and what it tells of its ticket in one statement: the ticket (as known,
/// else created from the message), the message, and — for a customer message — a pending draft.
/// A redelivery changes nothing. The ticket's row is locked until the transaction ends, so a
/// concurrent opening or message of the same ticket waits (and is seen) rather than missed.
pub async fn record_message(
    conn: &mut PgConnection,
    known: &TicketContext,
    subject_flags: &[String],
    m: &ThreadMessage,
    open_draft: bool,
) -> sqlx::Result<Recorded> {
    let row: RecordedRow = sqlx::query_as(
        "WITH tk AS (
               INSERT INTO tickets AS t (ticket_id, account_id, subject, flags, category) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (ticket_id) DO UPDATE SET subject = t.subject
               RETURNING ticket_id, account_id, subject, flags, category, priority, queue, tier
             ), msg AS (
               INSERT INTO thread_messages (id, ticket_id, author, body, flags, at) VALUES ($6, $1, $7, $8, $9, $10)
               ON CONFLICT (id) DO NOTHING
             ), d AS (
               INSERT INTO drafts (id, ticket_id, account_id, for_message_id, state)
               SELECT $11, tk.ticket_id, tk.account_id, $6, 'pending' FROM tk WHERE $12
               ON CONFLICT (for_message_id) DO NOTHING
               RETURNING id
             )
             SELECT tk.ticket_id, tk.account_id, tk.subject, tk.flags, tk.category, tk.priority, tk.queue, tk.tier, (SELECT id FROM d)
             FROM tk",
    )
    .bind(known.ticket_id)
    .bind(known.account_id)
    .bind(&known.subject)
    .bind(subject_flags)
    .bind(known.category)
    .bind(m.id)
    .bind(author_str(m.author))
    .bind(&m.body)
    .bind(&m.flags)
    .bind(m.at)
    .bind(Uuid::now_v7())
    .bind(open_draft)
    .fetch_one(conn)
    .await?;
    let (ticket_id, account_id, subject, flags, category, priority, queue, tier, new_draft) = row;
    Ok(Recorded {
        ticket: TicketContext { ticket_id, account_id, subject, category, priority, queue, tier },
        subject_flags: flags,
        new_draft,
    })
}

/// The draft that answers a message, pending again if it had failed only because the model was
/// unavailable (its event was replayed).
pub async fn existing_draft(conn: &mut PgConnection, message: Uuid) -> sqlx::Result<DraftRow> {
    let id: Uuid = sqlx::query_scalar("SELECT id FROM drafts WHERE for_message_id = $1").bind(message).fetch_one(&mut *conn).await?;
    reopen_unavailable(&mut *conn, id).await?;
    draft(conn, id).await?.ok_or(sqlx::Error::RowNotFound)
}

#[derive(serde::Deserialize)]
struct ThreadJson {
    id: Uuid,
    author: String,
    body: String,
    flags: Vec<String>,
    at: DateTime<Utc>,
}

/// Everything drafting reads besides the ticket, in one query: the thread (oldest first), the
/// account's plan and its tokens today.
pub async fn drafting_inputs(
    conn: &mut PgConnection,
    ticket: TicketId,
    account: Option<AccountId>,
) -> sqlx::Result<(Vec<ThreadMessage>, Option<AccountPlan>, i64)> {
    let (thread, plan, status, tokens): (sqlx::types::Json<Vec<ThreadJson>>, Option<String>, Option<AccessStatus>, Option<i64>) =
        sqlx::query_as(
            "SELECT
               (SELECT coalesce(json_agg(json_build_object('id', id, 'author', author, 'body', body, 'flags', flags, 'at', at) ORDER BY at, id), '[]')
                  FROM thread_messages WHERE ticket_id = $1),
               p.plan, p.access_status,
               (SELECT tokens FROM token_use WHERE account_id = $2 AND day = (now() AT TIME ZONE 'UTC')::date)
             FROM (SELECT 1) one LEFT JOIN account_plans p ON p.account_id = $2",
        )
        .bind(ticket)
        .bind(account)
        .fetch_one(conn)
        .await?;
    let thread = thread
        .0
        .into_iter()
        .map(|m| ThreadMessage {
            id: m.id,
            author: if m.author == "agent" { MessageAuthor::Agent } else { MessageAuthor::Customer },
            body: m.body,
            flags: m.flags,
            at: m.at,
        })
        .collect();
    let plan = plan.zip(status).map(|(plan, status)| AccountPlan { plan, status });
    Ok((thread, plan, tokens.unwrap_or(0)))
}

/// Stores the plan if it is newer than the one known.
pub async fn save_plan(
    conn: &mut PgConnection,
    account: AccountId,
    plan: &str,
    status: AccessStatus,
    since: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO account_plans AS p (account_id, plan, access_status, since) VALUES ($1, $2, $3, $4)
         ON CONFLICT (account_id) DO UPDATE SET plan = EXCLUDED.plan, access_status = EXCLUDED.access_status, since = EXCLUDED.since
         WHERE p.since < EXCLUDED.since",
    )
    .bind(account)
    .bind(plan)
    .bind(status)
    .bind(since)
    .execute(conn)
    .await?;
    Ok(())
}

/// A draft's state, as the service needs it to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftRow {
    pub id: Uuid,
    pub ticket_id: TicketId,
    pub account_id: Option<AccountId>,
    pub for_message_id: Uuid,
    pub state: String,
}

pub async fn draft(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<DraftRow>> {
    let row: Option<(Uuid, TicketId, Option<AccountId>, Uuid, String)> =
        sqlx::query_as("SELECT id, ticket_id, account_id, for_message_id, state FROM drafts WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(id, ticket_id, account_id, for_message_id, state)| DraftRow { id, ticket_id, account_id, for_message_id, state }))
}

/// The pending draft for a customer message, if there is one.
pub async fn pending_for_message(conn: &mut PgConnection, message: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT id FROM drafts WHERE for_message_id = $1 AND state = 'pending'").bind(message).fetch_optional(conn).await
}

/// A finished draft: what was proposed (also for a failed one, kept for audit) and the outcome.
#[derive(Debug, Clone)]
pub struct Finished<'a> {
    pub ready: bool,
    pub source: &'a str,
    pub model: &'a str,
    pub summary: Option<&'a str>,
    pub category: Option<TicketCategory>,
    pub urgency: Option<TicketPriority>,
    pub reply: Option<&'a str>,
    pub failure: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub hits: &'a [Hit],
}

/// The draft's columns a finish sets ($2 to $11, after the id as $1).
macro_rules! finish_set {
    () => {
        "state = $2, source = $3, model = $4, summary = $5, suggested_category = $6, suggested_urgency = $7, reply = $8,
         failure = $9, reason = $10, guard_hits = $11, next_attempt_at = NULL, finished_at = clock_timestamp()"
    };
}

/// Binds a finish's values as `finish_set!` expects them.
fn bind_finish<'q, O>(
    q: sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    id: Uuid,
    f: &'q Finished<'q>,
) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    q.bind(id)
        .bind(if f.ready { "ready" } else { "failed" })
        .bind(f.source)
        .bind(f.model)
        .bind(f.summary)
        .bind(f.category)
        .bind(f.urgency)
        .bind(f.reply)
        .bind(f.failure)
        .bind(f.reason)
        .bind(serde_json::to_value(f.hits).unwrap_or_default())
}

/// Finishes a pending draft; `false` when it was finished already (a redelivery).
pub async fn finish_draft(conn: &mut PgConnection, id: Uuid, f: &Finished<'_>) -> sqlx::Result<bool> {
    let sql =
        concat!("WITH f AS (UPDATE drafts SET ", finish_set!(), " WHERE id = $1 AND state = 'pending' RETURNING 1) SELECT count(*) FROM f");
    let finished: i64 = bind_finish(sqlx::query_scalar(sql), id, f).fetch_one(conn).await?;
    Ok(finished == 1)
}

/// Finishes a pending draft drafted by the model, with the call's audit row and its tokens on the
/// account's budget, in one statement; `false` (and nothing written) when the draft was finished
/// already (a redelivery).
pub async fn finish_drafted(conn: &mut PgConnection, id: Uuid, f: &Finished<'_>, c: &Call<'_>) -> sqlx::Result<bool> {
    let sql = concat!(
        "WITH f AS (
           UPDATE drafts SET ",
        finish_set!(),
        " WHERE id = $1 AND state = 'pending' RETURNING id, ticket_id, account_id
         ), c AS (
           INSERT INTO model_calls (id, draft_id, ticket_id, account_id, model, request, response, prompt_tokens, completion_tokens,
             latency_ms, outcome, error)
           SELECT $12, f.id, f.ticket_id, f.account_id, $13, $14, $15, $16, $17, $18, $19, $20 FROM f
         ), t AS (
           INSERT INTO token_use (account_id, day, tokens)
           SELECT f.account_id, (now() AT TIME ZONE 'UTC')::date, $16::bigint + $17::bigint FROM f WHERE f.account_id IS NOT NULL
           ON CONFLICT (account_id, day) DO UPDATE SET tokens = token_use.tokens + EXCLUDED.tokens
         )
         SELECT count(*) FROM f"
    );
    let finished: i64 = bind_call(bind_finish(sqlx::query_scalar(sql), id, f).bind(Uuid::now_v7()), c).fetch_one(conn).await?;
    Ok(finished == 1)
}

/// Records a failed attempt on a pending draft (what the ticket shows while it waits).
pub async fn record_attempt(conn: &mut PgConnection, draft: Uuid, error: &str, next_attempt_at: Option<DateTime<Utc>>) -> sqlx::Result<()> {
    sqlx::query("UPDATE drafts SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1 AND state = 'pending'")
        .bind(draft)
        .bind(error)
        .bind(next_attempt_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// A draft that failed because the model was unavailable is pending again (its event was
/// replayed from the dead-letter queue).
pub async fn reopen_unavailable(conn: &mut PgConnection, draft: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE drafts SET state = 'pending', failure = NULL, reason = NULL, source = NULL, model = NULL, finished_at = NULL
         WHERE id = $1 AND state = 'failed' AND failure = 'unavailable'",
    )
    .bind(draft)
    .execute(conn)
    .await?;
    Ok(())
}

/// One model call for the audit.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub draft_id: Uuid,
    pub ticket_id: TicketId,
    pub account_id: Option<AccountId>,
    pub model: &'a str,
    pub request: &'a serde_json::Value,
    pub response: Option<&'a str>,
    pub usage: Usage,
    pub latency_ms: f64,
    pub outcome: &'a str,
    pub error: Option<&'a str>,
}

/// Binds a call's audit values: model, request, response, prompt and completion tokens, latency,
/// outcome, error (eight parameters, in that order).
fn bind_call<'q, O>(
    q: sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    c: &'q Call<'q>,
) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    q.bind(c.model)
        .bind(c.request)
        .bind(c.response)
        .bind(i32::try_from(c.usage.prompt_tokens).unwrap_or(i32::MAX))
        .bind(i32::try_from(c.usage.completion_tokens).unwrap_or(i32::MAX))
        .bind(c.latency_ms)
        .bind(c.outcome)
        .bind(c.error)
}

/// Records one call that gave no draft (transient or refused).
pub async fn insert_call(conn: &mut PgConnection, c: &Call<'_>) -> sqlx::Result<()> {
    let q = sqlx::query_scalar(
        "INSERT INTO model_calls (id, draft_id, ticket_id, account_id, model, request, response, prompt_tokens, completion_tokens,
           latency_ms, outcome, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING 1",
    );
    let _: i32 = bind_call(q.bind(Uuid::now_v7()).bind(c.draft_id).bind(c.ticket_id).bind(c.account_id), c).fetch_one(conn).await?;
    Ok(())
}

/// Tokens the account used today (UTC).
pub async fn tokens_today(conn: &mut PgConnection, account: AccountId) -> sqlx::Result<i64> {
    let used: Option<i64> =
        sqlx::query_scalar("SELECT tokens FROM token_use WHERE account_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date")
            .bind(account)
            .fetch_optional(conn)
            .await?;
    Ok(used.unwrap_or(0))
}

// ---- the audit ----

#[derive(sqlx::FromRow)]
struct DraftAuditRow {
    id: Uuid,
    for_message_id: Uuid,
    state: String,
    source: Option<String>,
    model: Option<String>,
    summary: Option<String>,
    suggested_category: Option<TicketCategory>,
    suggested_urgency: Option<TicketPriority>,
    reply: Option<String>,
    failure: Option<String>,
    reason: Option<String>,
    guard_hits: sqlx::types::Json<Vec<Hit>>,
    attempts: i32,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

/// Every draft of a ticket, oldest first.
pub async fn drafts_of(conn: &mut PgConnection, ticket: TicketId) -> sqlx::Result<Vec<DraftRecord>> {
    let rows: Vec<DraftAuditRow> = sqlx::query_as(
        "SELECT id, for_message_id, state, source, model, summary, suggested_category, suggested_urgency, reply, failure, reason,
           guard_hits, attempts, last_error, next_attempt_at, created_at, finished_at
         FROM drafts WHERE ticket_id = $1 ORDER BY created_at, id",
    )
    .bind(ticket)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DraftRecord {
            id: r.id,
            for_message_id: r.for_message_id,
            state: r.state,
            source: r.source,
            model: r.model,
            summary: r.summary,
            suggested_category: r.suggested_category,
            suggested_urgency: r.suggested_urgency,
            reply: r.reply,
            failure: r.failure,
            reason: r.reason,
            guard_hits: r.guard_hits.0,
            attempts: r.attempts,
            last_error: r.last_error,
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
            finished_at: r.finished_at,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct CallRow {
    id: Uuid,
    draft_id: Uuid,
    model: String,
    outcome: String,
    error: Option<String>,
    prompt_tokens: i32,
    completion_tokens: i32,
    latency_ms: f64,
    request: serde_json::Value,
    response: Option<String>,
    at: DateTime<Utc>,
}

/// Every model call made for a ticket, oldest first.
pub async fn calls_of(conn: &mut PgConnection, ticket: TicketId) -> sqlx::Result<Vec<CallRecord>> {
    let rows: Vec<CallRow> = sqlx::query_as(
        "SELECT id, draft_id, model, outcome, error, prompt_tokens, completion_tokens, latency_ms, request, response, at
         FROM model_calls WHERE ticket_id = $1 ORDER BY at, id",
    )
    .bind(ticket)
    .fetch_all(conn)
    .await?;
    let tokens = |n: i32| u32::try_from(n).unwrap_or(0);
    Ok(rows
        .into_iter()
        .map(|r| CallRecord {
            id: r.id,
            draft_id: r.draft_id,
            model: r.model,
            outcome: r.outcome,
            error: r.error,
            usage: Usage { prompt_tokens: tokens(r.prompt_tokens), completion_tokens: tokens(r.completion_tokens) },
            latency_ms: r.latency_ms,
            request: r.request,
            response: r.response,
            at: r.at,
        })
        .collect())
}

/// The injection rules a ticket's customer text tripped (its subject and its customer messages),
/// each once, sorted.
pub async fn injection_flags(conn: &mut PgConnection, ticket: TicketId) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT f FROM (
           SELECT unnest(flags) AS f FROM tickets WHERE ticket_id = $1
           UNION ALL
           SELECT unnest(flags) FROM thread_messages WHERE ticket_id = $1 AND author = 'customer'
         ) x ORDER BY f",
    )
    .bind(ticket)
    .fetch_all(conn)
    .await
}
