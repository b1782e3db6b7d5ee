//! The AI audit for staff: everything ai-assist drafted for a ticket — failed drafts with why and
//! the guardrails they tripped, each model call with its redacted request and answer, tokens and
//! latency — and the account's token use against the daily budget. Never for customers: AI
//! output reaches a customer only as an agent's approved answer, in the ticket's thread.

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use chrono::{DateTime, Utc};
use sb_proto::{ai::v1 as pb, support::v1 as support_pb};
use serde::Serialize;
use utoipa::ToSchema;

use super::{non_empty, path_id, time};
use crate::{
    AppState,
    auth::{Guarded, StaffSession},
    error::{ApiError, Problem},
};

/// One draft ai-assist made (for a customer message), whatever became of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditDraftOut {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub for_message_id: String,
    /// `pending` (being drafted, or waiting for the model to come back), `ready` (offered to
    /// staff) or `failed` (never offered; kept for audit).
    pub state: String,
    /// `model` or `local`; absent while pending or when nothing was drafted.
    pub source: Option<String>,
    pub model: Option<String>,
    pub summary: Option<String>,
    pub suggested_category: Option<String>,
    pub suggested_urgency: Option<String>,
    pub reply: Option<String>,
    /// For a failed draft: `flagged`, `guardrail`, `budget` or `unavailable`.
    pub failure: Option<String>,
    pub reason: Option<String>,
    /// The output guardrails it tripped, each `rule: detail`.
    pub guard_hits: Vec<String>,
    /// Failed attempts so far (the model down or slow).
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One call to the model, as sent and answered (both redacted before they left or were stored).
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCallOut {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub draft_id: String,
    pub model: String,
    /// `ok`, `transient` (retried later) or `refused`.
    pub outcome: String,
    pub error: Option<String>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub latency_ms: f64,
    /// The chat-completions request body, redacted.
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    pub response: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// What the AI did for a ticket.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketAiAuditOut {
    #[schema(format = Uuid)]
    pub ticket_id: String,
    #[schema(format = Uuid)]
    pub account_id: Option<String>,
    /// Injection rules the customer's text tripped: the model's suggestions are not applied and
    /// a person handles the ticket.
    pub injection_flags: Vec<String>,
    /// Oldest first; empty when nothing was drafted yet.
    pub drafts: Vec<AuditDraftOut>,
    /// Oldest first; empty with the local drafter.
    pub model_calls: Vec<ModelCallOut>,
    /// The account's tokens used today (UTC) and the per-account daily budget (absent while
    /// ai-assist has not seen the ticket).
    pub tokens_today: Option<i64>,
    pub daily_token_budget: Option<i64>,
    /// Always true: a reminder for whoever shows it.
    pub internal: bool,
}

fn draft_out(d: pb::DraftRecord) -> AuditDraftOut {
    AuditDraftOut {
        id: d.id,
        for_message_id: d.for_message_id,
        state: d.state,
        source: non_empty(d.source),
        model: non_empty(d.model),
        summary: non_empty(d.summary),
        suggested_category: non_empty(d.suggested_category),
        suggested_urgency: non_empty(d.suggested_urgency),
        reply: non_empty(d.reply),
        failure: non_empty(d.failure),
        reason: non_empty(d.reason),
        guard_hits: d.guard_hits,
        attempts: d.attempts,
        last_error: non_empty(d.last_error),
        next_attempt_at: time(d.next_attempt_at),
        created_at: time(d.created_at),
        finished_at: time(d.finished_at),
    }
}

fn call_out(c: pb::ModelCall) -> ModelCallOut {
    ModelCallOut {
        id: c.id,
        draft_id: c.draft_id,
        model: c.model,
        outcome: c.outcome,
        error: non_empty(c.error),
        prompt_tokens: c.prompt_tokens,
        completion_tokens: c.completion_tokens,
        latency_ms: c.latency_ms,
        request: serde_json::from_str(&c.request).unwrap_or(serde_json::Value::String(c.request)),
        response: non_empty(c.response),
        at: time(c.at),
    }
}

fn audit_out(a: pb::TicketAudit) -> TicketAiAuditOut {
    TicketAiAuditOut {
        tokens_today: Some(a.tokens_today),
        daily_token_budget: Some(a.daily_token_budget),
        ticket_id: a.ticket_id,
        account_id: non_empty(a.account_id),
        injection_flags: a.injection_flags,
        drafts: a.drafts.into_iter().map(draft_out).collect(),
        model_calls: a.calls.into_iter().map(call_out).collect(),
        internal: true,
    }
}

/// What the AI drafted for a ticket and what it cost (staff): every draft, failed ones with why,
/// and every model call. A ticket the AI has not seen yet has an empty audit.
#[utoipa::path(get, path = "/v1/admin/tickets/{ticket_id}/ai", tag = "admin", security(("session" = [])),
    params(("ticket_id" = uuid::Uuid, Path, description = "ticket UUID")),
    responses((status = 200, body = TicketAiAuditOut), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_ticket_ai(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path(ticket_id): Path<String>,
) -> Result<Json<TicketAiAuditOut>, ApiError> {
    let ticket_id = path_id("ticket", &ticket_id)?;
    let audit = app.ai().get_ticket_audit(app.on_behalf_of(&session, pb::GetTicketAuditRequest { ticket_id: ticket_id.clone() })).await;
    match audit {
        Ok(a) => Ok(Json(audit_out(a.into_inner()))),
        // Not seen by ai-assist (yet): an empty audit for a ticket that exists, else support-router's 404.
        Err(s) if s.code() == tonic::Code::NotFound => {
            let req = app.on_behalf_of(&session, support_pb::GetTicketRequest { ticket_id });
            let view = app.support().get_ticket(req).await.map_err(ApiError::from)?.into_inner();
            let ticket = view.ticket.unwrap_or_default();
            Ok(Json(TicketAiAuditOut {
                ticket_id: ticket.id,
                account_id: non_empty(ticket.account_id),
                injection_flags: vec![],
                drafts: vec![],
                model_calls: vec![],
                tokens_today: None,
                daily_token_budget: None,
                internal: true,
            }))
        }
        Err(s) => Err(ApiError::from(s)),
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/tickets/{ticket_id}/ai", get(get_ticket_ai))
}
