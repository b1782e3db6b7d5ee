//! Support tickets for the portal (customers: open, follow, reply, close; visitors: the contact
//! form) and for the console (staff: queues, lists, the whole ticket, answer, note, assign,
//! re-prioritise with a reason, resolve, reopen). support-router re-checks role and tenant on
//! every call; the customer routes answer with customer types, which have no field for internal
//! notes, activity, priority reasons or the assignee, so nothing internal can leak through them.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use sb_proto::support::v1 as pb;
use sb_types::{TicketCategory, TicketPriority, TicketQueue, TicketStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{bounded, non_empty, path_id, time};
use crate::{
    AppState,
    auth::{Guarded, Origin, Session, StaffSession},
    domain::{clock_text, ticket_status_words},
    error::{ApiError, ApiJson, ApiQuery, Problem},
};

// ---------------------------------------------------------------------------------------------
// Wire ↔ domain
// ---------------------------------------------------------------------------------------------

fn category_pb(c: TicketCategory) -> i32 {
    (match c {
        TicketCategory::Billing => pb::Category::Billing,
        TicketCategory::Technical => pb::Category::Technical,
        TicketCategory::Account => pb::Category::Account,
        TicketCategory::Other => pb::Category::Other,
    }) as i32
}

fn category_of(c: i32) -> Option<TicketCategory> {
    match pb::Category::try_from(c).ok()? {
        pb::Category::Billing => Some(TicketCategory::Billing),
        pb::Category::Technical => Some(TicketCategory::Technical),
        pb::Category::Account => Some(TicketCategory::Account),
        pb::Category::Other => Some(TicketCategory::Other),
        pb::Category::Unspecified => None,
    }
}

fn status_of(s: i32) -> Option<TicketStatus> {
    match pb::Status::try_from(s).ok()? {
        pb::Status::New => Some(TicketStatus::New),
        pb::Status::Open => Some(TicketStatus::Open),
        pb::Status::WaitingOnCustomer => Some(TicketStatus::WaitingOnCustomer),
        pb::Status::Resolved => Some(TicketStatus::Resolved),
        pb::Status::Unspecified => None,
    }
}

fn status_pb(s: TicketStatus) -> i32 {
    (match s {
        TicketStatus::New => pb::Status::New,
        TicketStatus::Open => pb::Status::Open,
        TicketStatus::WaitingOnCustomer => pb::Status::WaitingOnCustomer,
        TicketStatus::Resolved => pb::Status::Resolved,
    }) as i32
}

fn priority_of(p: i32) -> Option<TicketPriority> {
    match pb::Priority::try_from(p).ok()? {
        pb::Priority::Low => Some(TicketPriority::Low),
        pb::Priority::Normal => Some(TicketPriority::Normal),
        pb::Priority::High => Some(TicketPriority::High),
        pb::Priority::Urgent => Some(TicketPriority::Urgent),
        pb::Priority::Unspecified => None,
    }
}

fn priority_pb(p: TicketPriority) -> i32 {
    (match p {
        TicketPriority::Low => pb::Priority::Low,
        TicketPriority::Normal => pb::Priority::Normal,
        TicketPriority::High => pb::Priority::High,
        TicketPriority::Urgent => pb::Priority::Urgent,
    }) as i32
}

fn queue_of(q: i32) -> Option<TicketQueue> {
    match pb::Queue::try_from(q).ok()? {
        pb::Queue::Billing => Some(TicketQueue::Billing),
        pb::Queue::Technical => Some(TicketQueue::Technical),
        pb::Queue::Account => Some(TicketQueue::Account),
        pb::Queue::HumanReview => Some(TicketQueue::HumanReview),
        pb::Queue::Unspecified => None,
    }
}

fn queue_pb(q: TicketQueue) -> i32 {
    (match q {
        TicketQueue::Billing => pb::Queue::Billing,
        TicketQueue::Technical => pb::Queue::Technical,
        TicketQueue::Account => pb::Queue::Account,
        TicketQueue::HumanReview => pb::Queue::HumanReview,
    }) as i32
}

/// A word support-router sent that this gateway cannot read is a bug on one side: said so.
fn word<T: Copy>(v: Option<T>, name: impl Fn(T) -> &'static str) -> &'static str {
    v.map_or("unknown", name)
}

// ---------------------------------------------------------------------------------------------
// Customers
// ---------------------------------------------------------------------------------------------

/// A ticket as its customer sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketOut {
    #[schema(format = Uuid)]
    pub id: String,
    pub subject: String,
    /// `billing`, `technical`, `account` or `other`.
    pub category: &'static str,
    /// `received`, `waiting_on_us`, `waiting_on_you` or `resolved`.
    pub status: &'static str,
    /// The status in words, e.g. "Waiting on you: we answered and need your reply".
    pub status_text: &'static str,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// One public message as the customer sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    #[schema(format = Uuid)]
    pub id: String,
    /// `you` or `support`.
    pub from: &'static str,
    pub body: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// A ticket and its public thread, as its customer sees them.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketViewOut {
    pub ticket: TicketOut,
    pub messages: Vec<MessageOut>,
}

fn customer_ticket(t: pb::Ticket) -> TicketOut {
    let (status, status_text) = ticket_status_words(status_of(t.status));
    TicketOut {
        id: t.id,
        subject: t.subject,
        category: word(category_of(t.category), TicketCategory::as_str),
        status,
        status_text,
        created_at: time(t.created_at),
        updated_at: time(t.updated_at),
    }
}

fn customer_view(v: pb::TicketView) -> TicketViewOut {
    TicketViewOut {
        ticket: customer_ticket(v.ticket.unwrap_or_default()),
        messages: v
            .messages
            .into_iter()
            .map(|m| MessageOut {
                id: m.id,
                from: if m.author == pb::Author::Agent as i32 { "support" } else { "you" },
                body: m.body,
                created_at: time(m.created_at),
            })
            .collect(),
    }
}

/// A new ticket.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketIn {
    pub subject: String,
    pub body: String,
    pub category: TicketCategory,
}

/// A message on a visitor's contact form.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactIn {
    pub email: String,
    /// The visitor's name; may be left out or blank.
    #[serde(default)]
    pub name: String,
    pub subject: String,
    pub body: String,
    /// `other` when left out.
    #[serde(default)]
    pub category: Option<TicketCategory>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactOut {
    /// Always `received`.
    pub status: &'static str,
    pub message: &'static str,
}

/// A public message (a customer's reply, an agent's answer) or an internal note.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageIn {
    pub body: String,
}

/// The `Idempotency-Key` header: the same key opens one ticket however often it is sent.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(String::new()) };
    let key = v.to_str().ok().filter(|k| k.bytes().all(|b| (0x20..0x7f).contains(&b)));
    let key = key.ok_or_else(|| ApiError::bad_request("invalid_header", "Idempotency-Key must be visible ASCII"))?.trim();
    if key.is_empty() || key.len() > 200 {
        return Err(ApiError::bad_request("invalid_header", "Idempotency-Key must be 1 to 200 characters"));
    }
    Ok(key.to_owned())
}

/// Opens a ticket for the signed-in customer. Send an `Idempotency-Key` header to make a retry
/// safe (the same key answers with the same ticket); a retried identical request within 10
/// minutes is recognised too.
#[utoipa::path(post, path = "/v1/tickets", tag = "support", security(("session" = [])), request_body = TicketIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters (spaces inside allowed)",
            min_length = 1, max_length = 200, pattern = r"^[!-~]([ -~]*[!-~])?$")),
    responses((status = 201, body = TicketViewOut), (status = 400, description = "a bad Idempotency-Key", body = Problem),
              (status = 403, description = "staff do not open tickets", body = Problem), (status = 422, body = Problem)))]
pub async fn create_ticket(
    State(app): State<AppState>,
    session: Session,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TicketIn>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let req = pb::CreateTicketRequest {
        subject: body.subject,
        body: body.body,
        category: category_pb(body.category),
        idempotency_key,
        ..Default::default()
    };
    let view = app.support().create_ticket(app.on_behalf_of(&session, req)).await.map_err(ApiError::from)?;
    Ok((StatusCode::CREATED, Json(customer_view(view.into_inner()))).into_response())
}

/// The caller's account's tickets, newest first.
#[utoipa::path(get, path = "/v1/tickets", tag = "support", security(("session" = [])),
    responses((status = 200, body = [TicketOut])))]
pub async fn list_own_tickets(State(app): State<AppState>, session: Session) -> Result<Json<Vec<TicketOut>>, ApiError> {
    let req =
        app.on_behalf_of(&session, pb::ListTicketsRequest { account_id: session.principal.account_id.to_string(), ..Default::default() });
    let list = app.support().list_tickets(req).await.map_err(ApiError::from)?;
    Ok(Json(list.into_inner().tickets.into_iter().map(customer_ticket).collect()))
}

/// One of the caller's account's tickets with its public thread (others: 404).
#[utoipa::path(get, path = "/v1/tickets/{ticket_id}", tag = "support", security(("session" = [])),
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 200, body = TicketViewOut), (status = 404, body = Problem)))]
pub async fn get_own_ticket(
    State(app): State<AppState>,
    session: Session,
    Path(ticket_id): Path<String>,
) -> Result<Json<TicketViewOut>, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let view = app.support().get_ticket(app.on_behalf_of(&session, pb::GetTicketRequest { ticket_id })).await;
    let view = view.map_err(ApiError::from)?.into_inner();
    Ok(Json(customer_view(view)))
}

/// Replies on one of the caller's account's tickets (a resolved one reopens).
#[utoipa::path(post, path = "/v1/tickets/{ticket_id}/messages", tag = "support", security(("session" = [])), request_body = MessageIn,
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 201, body = TicketViewOut), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn reply_own_ticket(
    State(app): State<AppState>,
    session: Session,
    Path(ticket_id): Path<String>,
    ApiJson(body): ApiJson<MessageIn>,
) -> Result<Response, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let req = app.on_behalf_of(&session, pb::AddMessageRequest { ticket_id, body: body.body });
    let view = app.support().add_message(req).await.map_err(ApiError::from)?.into_inner();
    Ok((StatusCode::CREATED, Json(customer_view(view))).into_response())
}

/// Closes one of the caller's account's tickets (the problem is solved).
#[utoipa::path(post, path = "/v1/tickets/{ticket_id}/close", tag = "support", security(("session" = [])),
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 200, body = TicketViewOut), (status = 404, body = Problem), (status = 409, description = "already resolved", body = Problem)))]
pub async fn close_own_ticket(
    State(app): State<AppState>,
    session: Session,
    Path(ticket_id): Path<String>,
) -> Result<Json<TicketViewOut>, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let view = app.support().resolve(app.on_behalf_of(&session, pb::ResolveRequest { ticket_id })).await;
    Ok(Json(customer_view(view.map_err(ApiError::from)?.into_inner())))
}

/// The public contact form: a visitor who is not signed in writes to support. Throttled per
/// address and per email (429 with `Retry-After`). The ticket is linked to an account only when
/// the email belongs to a user Switchboard knows.
#[utoipa::path(post, path = "/v1/contact", tag = "support", request_body = ContactIn,
    responses((status = 202, body = ContactOut), (status = 429, description = "too many messages; see Retry-After", body = Problem)))]
pub async fn contact(State(app): State<AppState>, Origin(origin): Origin, ApiJson(body): ApiJson<ContactIn>) -> Result<Response, ApiError> {
    let req = pb::CreateTicketRequest {
        subject: body.subject,
        body: body.body,
        category: category_pb(body.category.unwrap_or(TicketCategory::Other)),
        contact_email: body.email,
        contact_name: body.name,
        ..Default::default()
    };
    app.support().create_ticket(app.service_request(req, &origin)).await.map_err(ApiError::from)?;
    // Nothing about the ticket itself: the visitor is not signed in.
    let out = ContactOut { status: "received", message: "Thanks: your message reached our team; we answer by email." };
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}

// ---------------------------------------------------------------------------------------------
// Staff
// ---------------------------------------------------------------------------------------------

/// One SLA clock.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClockOut {
    /// `idle`, `running`, `paused`, `hit` or `missed`.
    pub state: &'static str,
    pub due_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// The target in seconds of business time.
    pub target_seconds: i64,
    /// In words, e.g. "running: due 14:05:00Z".
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlaOut {
    pub first_response: ClockOut,
    pub next_response: ClockOut,
    pub resolution: ClockOut,
}

/// A ticket as staff see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaffTicketOut {
    #[schema(format = Uuid)]
    pub id: String,
    /// Null for a contact-form ticket from an unknown email.
    #[schema(format = Uuid)]
    pub account_id: Option<String>,
    #[schema(format = Uuid)]
    pub requester_user_id: Option<String>,
    pub requester_email: String,
    pub requester_name: String,
    pub subject: String,
    pub category: &'static str,
    /// `new`, `open`, `waiting_on_customer` or `resolved`.
    pub status: &'static str,
    /// What the customer sees.
    pub customer_status: &'static str,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: &'static str,
    /// `billing`, `technical`, `account` or `human_review`.
    pub queue: &'static str,
    #[schema(format = Uuid)]
    pub assignee_user_id: Option<String>,
    pub tier_at_intake: String,
    pub tier_now: String,
    /// `portal` or `contact_form`.
    pub channel: String,
    /// Why it has its priority and queue (internal).
    pub priority_reasons: Vec<String>,
    pub sla: Option<SlaOut>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaffMessageOut {
    #[schema(format = Uuid)]
    pub id: String,
    /// `customer` or `agent`.
    pub author: &'static str,
    #[schema(format = Uuid)]
    pub author_user_id: Option<String>,
    pub body: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// An internal note: staff only, never shown to the customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoteOut {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub author_user_id: String,
    pub body: String,
    pub created_at: Option<DateTime<Utc>>,
    /// Always true: a reminder for whoever shows it.
    pub internal: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityOut {
    #[schema(format = Uuid)]
    pub id: String,
    pub at: Option<DateTime<Utc>>,
    /// Null for the system (routing, SLA, plan changes).
    #[schema(format = Uuid)]
    pub actor_user_id: Option<String>,
    pub action: String,
    pub detail: String,
}

/// An AI draft: a suggestion only staff see. It reaches the customer only when an agent approves
/// it (as drafted or edited), as that agent's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DraftOut {
    #[schema(format = Uuid)]
    pub id: String,
    /// The customer message it answers.
    #[schema(format = Uuid)]
    pub for_message_id: String,
    /// `offered` (may be approved or rejected), `approved`, `rejected`, `superseded`, `refused` (a
    /// guardrail stopped it; kept for audit), `flagged` (possible prompt injection: a person
    /// handles the ticket) or `unavailable` (the model could not be used).
    pub state: String,
    pub summary: String,
    /// Advisory.
    pub suggested_category: Option<&'static str>,
    /// Advisory: it may raise the ticket's priority, never lower it or leave human review.
    pub suggested_urgency: Option<&'static str>,
    pub reply: String,
    /// `model` or `local`.
    pub source: String,
    pub model: String,
    /// Why it is refused, flagged, unavailable or rejected.
    pub reason: String,
    pub created_at: Option<DateTime<Utc>>,
    #[schema(format = Uuid)]
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The answer an approval sent.
    #[schema(format = Uuid)]
    pub sent_message_id: Option<String>,
    /// Always true: a reminder for whoever shows it.
    pub internal: bool,
}

/// The whole ticket, for staff: thread, internal notes, activity log and AI drafts.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaffTicketViewOut {
    pub ticket: StaffTicketOut,
    pub messages: Vec<StaffMessageOut>,
    pub notes: Vec<NoteOut>,
    pub activity: Vec<ActivityOut>,
    /// AI help for the latest customer message: `pending` ("AI draft pending"), `ready`,
    /// `unavailable` ("AI draft unavailable": agents answer by hand) or `flagged`.
    pub ai_state: String,
    /// Newest first.
    pub drafts: Vec<DraftOut>,
}

/// Approve an AI draft: `{}` sends it as drafted, `{"body": ...}` edited.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveDraftIn {
    /// The edited answer (1 to 10,000 characters, not blank); left out: as drafted.
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueOut {
    pub queue: &'static str,
    pub open: u32,
    pub unanswered: u32,
    pub oldest_unanswered_seconds: i64,
}

fn clock(c: Option<pb::Clock>) -> ClockOut {
    let c = c.unwrap_or_default();
    let state = match pb::ClockState::try_from(c.state) {
        Ok(pb::ClockState::Idle) => "idle",
        Ok(pb::ClockState::Running) => "running",
        Ok(pb::ClockState::Paused) => "paused",
        Ok(pb::ClockState::Hit) => "hit",
        Ok(pb::ClockState::Missed) => "missed",
        Ok(pb::ClockState::Unspecified) | Err(_) => "unknown",
    };
    let (due_at, stopped_at) = (time(c.due_at), time(c.stopped_at));
    ClockOut { state, due_at, stopped_at, target_seconds: c.target_seconds, text: clock_text(state, due_at, stopped_at) }
}

fn staff_ticket(t: pb::Ticket) -> StaffTicketOut {
    let status = status_of(t.status);
    let sla = t.sla.map(|s| SlaOut {
        first_response: clock(s.first_response),
        next_response: clock(s.next_response),
        resolution: clock(s.resolution),
    });
    StaffTicketOut {
        id: t.id,
        account_id: non_empty(t.account_id),
        requester_user_id: non_empty(t.requester_user_id),
        requester_email: t.requester_email,
        requester_name: t.requester_name,
        subject: t.subject,
        category: word(category_of(t.category), TicketCategory::as_str),
        status: word(status, TicketStatus::as_str),
        customer_status: ticket_status_words(status).0,
        priority: word(priority_of(t.priority), TicketPriority::as_str),
        queue: word(queue_of(t.queue), TicketQueue::as_str),
        assignee_user_id: non_empty(t.assignee_user_id),
        tier_at_intake: t.tier_at_intake,
        tier_now: t.tier_now,
        channel: t.channel,
        priority_reasons: t.priority_reasons,
        sla,
        created_at: time(t.created_at),
        updated_at: time(t.updated_at),
    }
}

fn draft_out(d: pb::Draft) -> DraftOut {
    DraftOut {
        id: d.id,
        for_message_id: d.for_message_id,
        state: d.state,
        summary: d.summary,
        suggested_category: category_of(d.suggested_category).map(TicketCategory::as_str),
        suggested_urgency: priority_of(d.suggested_urgency).map(TicketPriority::as_str),
        reply: d.reply,
        source: d.source,
        model: d.model,
        reason: d.reason,
        created_at: time(d.created_at),
        decided_by: non_empty(d.decided_by),
        decided_at: time(d.decided_at),
        sent_message_id: non_empty(d.sent_message_id),
        internal: true,
    }
}

fn staff_view(v: pb::TicketView) -> StaffTicketViewOut {
    StaffTicketViewOut {
        ai_state: v.ai_state,
        drafts: v.drafts.into_iter().map(draft_out).collect(),
        ticket: staff_ticket(v.ticket.unwrap_or_default()),
        messages: v
            .messages
            .into_iter()
            .map(|m| StaffMessageOut {
                id: m.id,
                author: if m.author == pb::Author::Agent as i32 { "agent" } else { "customer" },
                author_user_id: non_empty(m.author_user_id),
                body: m.body,
                created_at: time(m.created_at),
            })
            .collect(),
        notes: v
            .notes
            .into_iter()
            .map(|n| NoteOut { id: n.id, author_user_id: n.author_user_id, body: n.body, created_at: time(n.created_at), internal: true })
            .collect(),
        activity: v
            .activity
            .into_iter()
            .map(|a| ActivityOut {
                id: a.id,
                at: time(a.at),
                actor_user_id: non_empty(a.actor_user_id),
                action: a.action,
                detail: a.detail,
            })
            .collect(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TicketQuery {
    pub queue: Option<TicketQueue>,
    pub status: Option<TicketStatus>,
    pub priority: Option<TicketPriority>,
    /// Only tickets assigned to this agent.
    #[param(format = Uuid)]
    pub assignee_user_id: Option<String>,
    /// Only this account's tickets.
    #[param(format = Uuid)]
    pub account_id: Option<String>,
    /// Only tickets not resolved.
    #[serde(default)]
    pub open: bool,
    /// At most this many (default 50, max 200).
    #[serde(default)]
    pub limit: u32,
}

/// Assign a ticket: to the given agent, to the caller when left out, nobody when null.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignIn {
    #[serde(default, deserialize_with = "present")]
    #[schema(format = Uuid)]
    pub assignee_user_id: Option<Option<String>>,
}

/// `user_id` if it names an agent or an admin (identity's answer); 422 otherwise.
async fn staff_member(app: &AppState, session: &Session, user_id: String) -> Result<String, ApiError> {
    let invalid = |why: &str| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "Invalid input", Some(format!("assignee_user_id: {why}")))
    };
    if user_id == session.principal.user_id.to_string() {
        return Ok(user_id);
    }
    let user = match app.identity().get_user(session.request(sb_proto::identity::v1::GetUserRequest { user_id: user_id.clone() })).await {
        Ok(u) => u.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Err(invalid("no such user")),
        Err(s) => return Err(s.into()),
    };
    match super::role_name(user.role) {
        "agent" | "admin" => Ok(user_id),
        _ => Err(invalid("is not an agent or admin")),
    }
}

/// `Some(None)` for an explicit null, `None` when the field is left out.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A new priority and/or queue, with the reason (kept in the activity log).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityIn {
    pub priority: Option<TicketPriority>,
    pub queue: Option<TicketQueue>,
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReopenIn {
    /// Why, for the activity log; may be left out.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Each queue with its open and unanswered tickets and the oldest unanswered one's age (staff).
#[utoipa::path(get, path = "/v1/admin/queues", tag = "admin", security(("session" = [])),
    responses((status = 200, body = [QueueOut]), (status = 403, body = Problem)))]
pub async fn list_queues(State(app): State<AppState>, Guarded(session, _): StaffSession) -> Result<Json<Vec<QueueOut>>, ApiError> {
    let list = app.support().list_queues(app.on_behalf_of(&session, pb::ListQueuesRequest {})).await;
    let list = list.map_err(ApiError::from)?.into_inner();
    Ok(Json(
        list.queues
            .into_iter()
            .map(|q| QueueOut {
                queue: word(queue_of(q.queue), TicketQueue::as_str),
                open: q.open,
                unanswered: q.unanswered,
                oldest_unanswered_seconds: q.oldest_unanswered_seconds,
            })
            .collect(),
    ))
}

/// Tickets, filtered (staff).
#[utoipa::path(get, path = "/v1/admin/tickets", tag = "admin", security(("session" = [])), params(TicketQuery),
    responses((status = 200, body = [StaffTicketOut]), (status = 403, body = Problem)))]
pub async fn list_tickets(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    ApiQuery(q): ApiQuery<TicketQuery>,
) -> Result<Json<Vec<StaffTicketOut>>, ApiError> {
    let id = |kind: &str, v: Option<String>| v.filter(|v| !v.is_empty()).map(|v| path_id(kind, &v)).transpose();
    let req = pb::ListTicketsRequest {
        queue: q.queue.map_or(0, queue_pb),
        status: q.status.map_or(0, status_pb),
        priority: q.priority.map_or(0, priority_pb),
        assignee_user_id: id("assignee user", q.assignee_user_id)?.unwrap_or_default(),
        account_id: id("account", q.account_id)?.unwrap_or_default(),
        open_only: q.open,
        limit: q.limit.min(200),
    };
    let list = app.support().list_tickets(app.on_behalf_of(&session, req)).await.map_err(ApiError::from)?;
    Ok(Json(list.into_inner().tickets.into_iter().map(staff_ticket).collect()))
}

/// The whole ticket: thread, internal notes, activity with every priority decision (staff).
#[utoipa::path(get, path = "/v1/admin/tickets/{ticket_id}", tag = "admin", security(("session" = [])),
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 200, body = StaffTicketViewOut), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_ticket(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path(ticket_id): Path<String>,
) -> Result<Json<StaffTicketViewOut>, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let view = app.support().get_ticket(app.on_behalf_of(&session, pb::GetTicketRequest { ticket_id })).await;
    Ok(Json(staff_view(view.map_err(ApiError::from)?.into_inner())))
}

/// Answers the customer (public; emailed to them) (staff).
#[utoipa::path(post, path = "/v1/admin/tickets/{ticket_id}/messages", tag = "admin", security(("session" = [])), request_body = MessageIn,
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 201, body = StaffTicketViewOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn answer_ticket(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path(ticket_id): Path<String>,
    ApiJson(body): ApiJson<MessageIn>,
) -> Result<Response, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let view = app.support().add_message(app.on_behalf_of(&session, pb::AddMessageRequest { ticket_id, body: body.body })).await;
    let view = staff_view(view.map_err(ApiError::from)?.into_inner());
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Adds an internal note, never shown to the customer (staff).
#[utoipa::path(post, path = "/v1/admin/tickets/{ticket_id}/notes", tag = "admin", security(("session" = [])), request_body = MessageIn,
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 201, body = StaffTicketViewOut), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn add_note(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path(ticket_id): Path<String>,
    ApiJson(body): ApiJson<MessageIn>,
) -> Result<Response, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let view = app.support().add_note(app.on_behalf_of(&session, pb::AddNoteRequest { ticket_id, body: body.body })).await;
    let view = staff_view(view.map_err(ApiError::from)?.into_inner());
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Assigns the ticket (staff).
#[utoipa::path(post, path = "/v1/admin/tickets/{ticket_id}/assign", tag = "admin", security(("session" = [])), request_body = AssignIn,
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 200, body = StaffTicketViewOut), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn assign_ticket(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path(ticket_id): Path<String>,
    ApiJson(body): ApiJson<AssignIn>,
) -> Result<Json<StaffTicketViewOut>, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let assignee_user_id = match body.assignee_user_id {
        None => session.principal.user_id.to_string(),
        Some(None) => String::new(),
        Some(Some(id)) => staff_member(&app, &session, path_id("assignee user", &id)?).await?,
    };
    let view = app.support().assign(app.on_behalf_of(&session, pb::AssignRequest { ticket_id, assignee_user_id })).await;
    Ok(Json(staff_view(view.map_err(ApiError::from)?.into_inner())))
}

/// Sets priority and/or queue with a reason: the only way out of human review (staff).
#[utoipa::path(post, path = "/v1/admin/tickets/{ticket_id}/priority", tag = "admin", security(("session" = [])), request_body = PriorityIn,
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 200, body = StaffTicketViewOut), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn reprioritise_ticket(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path(ticket_id): Path<String>,
    ApiJson(body): ApiJson<PriorityIn>,
) -> Result<Json<StaffTicketViewOut>, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let req = pb::ReprioritiseRequest {
        ticket_id,
        priority: body.priority.map_or(0, priority_pb),
        queue: body.queue.map_or(0, queue_pb),
        reason: body.reason,
    };
    let view = app.support().reprioritise(app.on_behalf_of(&session, req)).await;
    Ok(Json(staff_view(view.map_err(ApiError::from)?.into_inner())))
}

/// Resolves the ticket (staff).
#[utoipa::path(post, path = "/v1/admin/tickets/{ticket_id}/resolve", tag = "admin", security(("session" = [])),
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 200, body = StaffTicketViewOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn resolve_ticket(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path(ticket_id): Path<String>,
) -> Result<Json<StaffTicketViewOut>, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let view = app.support().resolve(app.on_behalf_of(&session, pb::ResolveRequest { ticket_id })).await;
    Ok(Json(staff_view(view.map_err(ApiError::from)?.into_inner())))
}

/// Reopens a resolved ticket, with the reason (staff).
#[utoipa::path(post, path = "/v1/admin/tickets/{ticket_id}/reopen", tag = "admin", security(("session" = [])), request_body = ReopenIn,
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 200, body = StaffTicketViewOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn reopen_ticket(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path(ticket_id): Path<String>,
    ApiJson(body): ApiJson<ReopenIn>,
) -> Result<Json<StaffTicketViewOut>, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let reason = match body.reason {
        None => String::new(),
        Some(r) => sb_types::parse_reason(&r)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "Invalid input", Some(e.to_string())))?,
    };
    let view = app.support().reopen(app.on_behalf_of(&session, pb::ReopenRequest { ticket_id, reason })).await;
    Ok(Json(staff_view(view.map_err(ApiError::from)?.into_inner())))
}

/// Sends an offered AI draft as the caller's answer, as drafted or edited (staff). Approving an
/// approved draft again sends nothing and answers with the ticket.
#[utoipa::path(post, path = "/v1/admin/tickets/{ticket_id}/drafts/{draft_id}/approve", tag = "admin", security(("session" = [])),
    request_body = ApproveDraftIn,
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID"), ("draft_id" = uuid::Uuid, Path, description = "draft UUID")),
    responses((status = 200, body = StaffTicketViewOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn approve_draft(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path((ticket_id, draft_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ApproveDraftIn>,
) -> Result<Json<StaffTicketViewOut>, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let draft_id = path_id("draft", &draft_id)?;
    // Left out: as drafted. Given, it must be a real answer (a blank one is refused, not taken
    // as "as drafted").
    let body = match body.body {
        None => String::new(),
        Some(b) => sb_types::parse_body("body", &b)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "Invalid input", Some(e.to_string())))?,
    };
    let view = app.support().approve_draft(app.on_behalf_of(&session, pb::ApproveDraftRequest { ticket_id, draft_id, body })).await;
    Ok(Json(staff_view(view.map_err(ApiError::from)?.into_inner())))
}

/// Turns an offered AI draft down, with an optional reason (staff).
#[utoipa::path(post, path = "/v1/admin/tickets/{ticket_id}/drafts/{draft_id}/reject", tag = "admin", security(("session" = [])),
    request_body = ReopenIn,
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID"), ("draft_id" = uuid::Uuid, Path, description = "draft UUID")),
    responses((status = 200, body = StaffTicketViewOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn reject_draft(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path((ticket_id, draft_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ReopenIn>,
) -> Result<Json<StaffTicketViewOut>, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let draft_id = path_id("draft", &draft_id)?;
    let reason = match body.reason {
        None => String::new(),
        Some(r) => sb_types::parse_reason(&r)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "Invalid input", Some(e.to_string())))?,
    };
    let view = app.support().reject_draft(app.on_behalf_of(&session, pb::RejectDraftRequest { ticket_id, draft_id, reason })).await;
    Ok(Json(staff_view(view.map_err(ApiError::from)?.into_inner())))
}

/// Shown instead of the tickets when support-router cannot be reached (details are logged).
pub const UNAVAILABLE: &str = "support-router is unavailable; tickets unknown";

/// An account's open tickets with their SLA state, bounded so a slow support-router never holds
/// up the customer view.
pub async fn open_tickets_of(app: &AppState, session: &Session, account_id: String) -> anyhow::Result<Vec<StaffTicketOut>> {
    let req = app.on_behalf_of(session, pb::ListTicketsRequest { account_id, open_only: true, limit: 50, ..Default::default() });
    Ok(bounded(app.support().list_tickets(req)).await?.tickets.into_iter().map(staff_ticket).collect())
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tickets", post(create_ticket).get(list_own_tickets))
        .route("/v1/tickets/{ticket_id}", get(get_own_ticket))
        .route("/v1/tickets/{ticket_id}/messages", post(reply_own_ticket))
        .route("/v1/tickets/{ticket_id}/close", post(close_own_ticket))
        .route("/v1/contact", post(contact))
        .route("/v1/admin/queues", get(list_queues))
        .route("/v1/admin/tickets", get(list_tickets))
        .route("/v1/admin/tickets/{ticket_id}", get(get_ticket))
        .route("/v1/admin/tickets/{ticket_id}/messages", post(answer_ticket))
        .route("/v1/admin/tickets/{ticket_id}/notes", post(add_note))
        .route("/v1/admin/tickets/{ticket_id}/assign", post(assign_ticket))
        .route("/v1/admin/tickets/{ticket_id}/priority", post(reprioritise_ticket))
        .route("/v1/admin/tickets/{ticket_id}/resolve", post(resolve_ticket))
        .route("/v1/admin/tickets/{ticket_id}/reopen", post(reopen_ticket))
        .route("/v1/admin/tickets/{ticket_id}/drafts/{draft_id}/approve", post(approve_draft))
        .route("/v1/admin/tickets/{ticket_id}/drafts/{draft_id}/reject", post(reject_draft))
}
