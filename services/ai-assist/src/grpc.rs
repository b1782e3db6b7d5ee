//! The `switchboard.ai.v1.Assist` gRPC service: admits only staff (`sb_runtime::caller::Staff` —
//! AI output is never a customer's to read until an agent sends it), checks the input, calls the
//! service and converts its answer. Nothing else.

use chrono::{DateTime, Utc};
use sb_proto::ai::v1 as pb;
use sb_runtime::caller::{ServiceAuth, Staff};
use secrecy::SecretString;
use tonic::{Request, Response, Status};

use crate::{
    domain::{CallRecord, DraftRecord, TicketAudit, TicketId},
    service::Assist,
};

pub struct AssistService {
    assist: Assist,
    auth: ServiceAuth,
}

impl AssistService {
    pub fn new(assist: Assist, service_token: &SecretString) -> Self {
        Self { assist, auth: ServiceAuth::new(service_token) }
    }

    pub fn into_server(self) -> pb::assist_server::AssistServer<Self> {
        pb::assist_server::AssistServer::new(self)
    }
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    sb_proto::timestamp(t.timestamp(), t.timestamp_subsec_nanos() as i32)
}

fn ticket_id(raw: &str) -> Result<TicketId, Status> {
    raw.trim().parse().map_err(|_| Status::invalid_argument("ticket_id: must be a UUID"))
}

fn draft_pb(d: DraftRecord) -> pb::DraftRecord {
    pb::DraftRecord {
        id: d.id.to_string(),
        for_message_id: d.for_message_id.to_string(),
        state: d.state,
        source: d.source.filter(|s| s != "none").unwrap_or_default(),
        model: d.model.unwrap_or_default(),
        summary: d.summary.unwrap_or_default(),
        suggested_category: d.suggested_category.map(|c| c.as_str().to_owned()).unwrap_or_default(),
        suggested_urgency: d.suggested_urgency.map(|p| p.as_str().to_owned()).unwrap_or_default(),
        reply: d.reply.unwrap_or_default(),
        failure: d.failure.unwrap_or_default(),
        reason: d.reason.unwrap_or_default(),
        guard_hits: d.guard_hits.into_iter().map(|h| format!("{}: {}", h.rule, h.detail)).collect(),
        attempts: u32::try_from(d.attempts).unwrap_or(0),
        last_error: d.last_error.unwrap_or_default(),
        next_attempt_at: d.next_attempt_at.map(ts),
        created_at: Some(ts(d.created_at)),
        finished_at: d.finished_at.map(ts),
    }
}

fn call_pb(c: CallRecord) -> pb::ModelCall {
    pb::ModelCall {
        id: c.id.to_string(),
        draft_id: c.draft_id.to_string(),
        model: c.model,
        outcome: c.outcome,
        error: c.error.unwrap_or_default(),
        prompt_tokens: c.usage.prompt_tokens,
        completion_tokens: c.usage.completion_tokens,
        latency_ms: c.latency_ms,
        request: c.request.to_string(),
        response: c.response.unwrap_or_default(),
        at: Some(ts(c.at)),
    }
}

fn audit_pb(a: TicketAudit) -> pb::TicketAudit {
    pb::TicketAudit {
        ticket_id: a.ticket_id.to_string(),
        account_id: a.account_id.map(|id| id.to_string()).unwrap_or_default(),
        injection_flags: a.injection_flags,
        drafts: a.drafts.into_iter().map(draft_pb).collect(),
        calls: a.calls.into_iter().map(call_pb).collect(),
        tokens_today: a.tokens_today,
        daily_token_budget: a.daily_token_budget,
    }
}

#[tonic::async_trait]
impl pb::assist_server::Assist for AssistService {
    async fn get_ticket_audit(&self, req: Request<pb::GetTicketAuditRequest>) -> Result<Response<pb::TicketAudit>, Status> {
        let Staff(_) = self.auth.authorize(&req)?;
        let ticket = ticket_id(&req.get_ref().ticket_id)?;
        let audit = self.assist.ticket_audit(ticket).await?;
        Ok(Response::new(audit_pb(audit)))
    }
}
