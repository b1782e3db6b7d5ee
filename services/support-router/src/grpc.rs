//! The `switchboard.support.v1.Support` gRPC service: admits the caller by the RPC's guard
//! (`sb_runtime::caller`), checks and converts the input (INVALID_ARGUMENT naming the field, before
//! anything is stored), calls the service and converts its answer for the caller's audience.
//! Nothing else.

use chrono::{DateTime, Utc};
use sb_proto::support::v1 as pb;
use sb_runtime::caller::{AnyCaller, Caller, Guard, Principal, ServiceAuth, Staff, UserCaller};
use secrecy::SecretString;
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        self, Author, Email, Invalid, NewTicket, SlaClock, Ticket, TicketCategory, TicketId, TicketPriority, TicketQueue, TicketStatus,
        TicketView, UserId,
        assist::Draft,
        sla::{BusinessHours, ClockState},
    },
    error::SupportError,
    service::{Customer, Intake, Support, Viewer},
    store::Filter,
};

pub struct SupportService {
    support: Support,
    auth: ServiceAuth,
}

/// Who an answer is for: what of a ticket it may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    Staff,
    Customer,
    /// The public contact form: not even priority, queue, tier or clocks (they would tell a
    /// visitor about the account behind an email).
    ContactForm,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    sb_proto::timestamp(t.timestamp(), t.timestamp_subsec_nanos() as i32)
}

fn err(e: SupportError) -> Status {
    e.into()
}

fn invalid(e: Invalid) -> Status {
    err(SupportError::Invalid(e))
}

fn ticket_id(raw: &str) -> Result<TicketId, Status> {
    raw.parse().map_err(invalid)
}

fn optional_user(field: &'static str, raw: &str) -> Result<Option<UserId>, Status> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    raw.parse().map(Some).map_err(|e: Invalid| invalid(Invalid::new(field, e.message)))
}

fn limit(requested: u32) -> i64 {
    if requested == 0 { 50 } else { i64::from(requested).min(200) }
}

// ---- wire enums ↔ domain words (UNSPECIFIED is `None`; a number the proto does not know is invalid) ----

fn unknown(field: &'static str, v: i32) -> Status {
    invalid(Invalid::new(field, format!("{v} is not a known value")))
}

fn category_in(v: i32) -> Result<Option<TicketCategory>, Status> {
    Ok(match pb::Category::try_from(v).map_err(|_| unknown("category", v))? {
        pb::Category::Unspecified => None,
        pb::Category::Billing => Some(TicketCategory::Billing),
        pb::Category::Technical => Some(TicketCategory::Technical),
        pb::Category::Account => Some(TicketCategory::Account),
        pb::Category::Other => Some(TicketCategory::Other),
    })
}

fn category_pb(c: TicketCategory) -> pb::Category {
    match c {
        TicketCategory::Billing => pb::Category::Billing,
        TicketCategory::Technical => pb::Category::Technical,
        TicketCategory::Account => pb::Category::Account,
        TicketCategory::Other => pb::Category::Other,
    }
}

fn status_in(v: i32) -> Result<Option<TicketStatus>, Status> {
    Ok(match pb::Status::try_from(v).map_err(|_| unknown("status", v))? {
        pb::Status::Unspecified => None,
        pb::Status::New => Some(TicketStatus::New),
        pb::Status::Open => Some(TicketStatus::Open),
        pb::Status::WaitingOnCustomer => Some(TicketStatus::WaitingOnCustomer),
        pb::Status::Resolved => Some(TicketStatus::Resolved),
    })
}

fn status_pb(s: TicketStatus) -> pb::Status {
    match s {
        TicketStatus::New => pb::Status::New,
        TicketStatus::Open => pb::Status::Open,
        TicketStatus::WaitingOnCustomer => pb::Status::WaitingOnCustomer,
        TicketStatus::Resolved => pb::Status::Resolved,
    }
}

fn priority_in(v: i32) -> Result<Option<TicketPriority>, Status> {
    Ok(match pb::Priority::try_from(v).map_err(|_| unknown("priority", v))? {
        pb::Priority::Unspecified => None,
        pb::Priority::Low => Some(TicketPriority::Low),
        pb::Priority::Normal => Some(TicketPriority::Normal),
        pb::Priority::High => Some(TicketPriority::High),
        pb::Priority::Urgent => Some(TicketPriority::Urgent),
    })
}

fn priority_pb(p: TicketPriority) -> pb::Priority {
    match p {
        TicketPriority::Low => pb::Priority::Low,
        TicketPriority::Normal => pb::Priority::Normal,
        TicketPriority::High => pb::Priority::High,
        TicketPriority::Urgent => pb::Priority::Urgent,
    }
}

fn queue_in(v: i32) -> Result<Option<TicketQueue>, Status> {
    Ok(match pb::Queue::try_from(v).map_err(|_| unknown("queue", v))? {
        pb::Queue::Unspecified => None,
        pb::Queue::Billing => Some(TicketQueue::Billing),
        pb::Queue::Technical => Some(TicketQueue::Technical),
        pb::Queue::Account => Some(TicketQueue::Account),
        pb::Queue::HumanReview => Some(TicketQueue::HumanReview),
    })
}

fn queue_pb(q: TicketQueue) -> pb::Queue {
    match q {
        TicketQueue::Billing => pb::Queue::Billing,
        TicketQueue::Technical => pb::Queue::Technical,
        TicketQueue::Account => pb::Queue::Account,
        TicketQueue::HumanReview => pb::Queue::HumanReview,
    }
}

fn clock_state_pb(s: ClockState) -> pb::ClockState {
    match s {
        ClockState::Idle => pb::ClockState::Idle,
        ClockState::Running => pb::ClockState::Running,
        ClockState::Paused => pb::ClockState::Paused,
        ClockState::Hit => pb::ClockState::Hit,
        ClockState::Missed => pb::ClockState::Missed,
    }
}

fn author_pb(a: Author) -> pb::Author {
    match a {
        Author::Customer => pb::Author::Customer,
        Author::Agent => pb::Author::Agent,
    }
}

fn id_or_empty(id: Option<impl ToString>) -> String {
    id.map(|i| i.to_string()).unwrap_or_default()
}

fn ticket_pb(t: &Ticket, audience: Audience, hours: &BusinessHours, now: DateTime<Utc>) -> pb::Ticket {
    let clock = |which: SlaClock| {
        let v = t.clocks.get(which).view(hours, now);
        pb::Clock {
            state: clock_state_pb(v.state) as i32,
            due_at: v.due_at.map(ts),
            stopped_at: v.stopped_at.map(ts),
            target_seconds: v.target_ms / 1000,
        }
    };
    let mut out = pb::Ticket {
        id: t.id.to_string(),
        account_id: id_or_empty(t.requester.account_id),
        requester_user_id: id_or_empty(t.requester.user_id),
        requester_email: t.requester.email.as_ref().map(Email::to_string).unwrap_or_default(),
        requester_name: t.requester.name.clone(),
        subject: t.subject.clone(),
        category: category_pb(t.category) as i32,
        status: status_pb(t.status) as i32,
        priority: priority_pb(t.priority) as i32,
        queue: queue_pb(t.queue) as i32,
        // Customers' views have these cleared by the domain already (`TicketView::for_customer`).
        assignee_user_id: id_or_empty(t.assignee),
        tier_at_intake: t.tier_at_intake.as_str().to_owned(),
        tier_now: t.tier_now.as_str().to_owned(),
        sla: Some(pb::Sla {
            first_response: Some(clock(SlaClock::FirstResponse)),
            next_response: Some(clock(SlaClock::NextResponse)),
            resolution: Some(clock(SlaClock::Resolution)),
        }),
        created_at: Some(ts(t.created_at)),
        updated_at: Some(ts(t.updated_at)),
        priority_reasons: t.priority_reasons.clone(),
        channel: t.channel.as_str().to_owned(),
    };
    match audience {
        Audience::Staff => {}
        Audience::Customer => {
            // Belt and braces: the domain view has cleared them.
            out.assignee_user_id.clear();
            out.priority_reasons.clear();
        }
        Audience::ContactForm => {
            out.assignee_user_id.clear();
            out.priority_reasons.clear();
            out.account_id.clear();
            out.requester_user_id.clear();
            out.priority = pb::Priority::Unspecified as i32;
            out.queue = pb::Queue::Unspecified as i32;
            out.tier_at_intake.clear();
            out.tier_now.clear();
            out.sla = None;
        }
    }
    out
}

fn view_pb(v: &TicketView, audience: Audience, hours: &BusinessHours) -> pb::TicketView {
    let now = Utc::now();
    let staff = audience == Audience::Staff;
    pb::TicketView {
        ticket: Some(ticket_pb(&v.ticket, audience, hours, now)),
        messages: v
            .messages
            .iter()
            .map(|m| pb::Message {
                id: m.id.to_string(),
                author: author_pb(m.author) as i32,
                author_user_id: if staff || m.author == Author::Customer { id_or_empty(m.author_user_id) } else { String::new() },
                body: m.body.clone(),
                created_at: Some(ts(m.created_at)),
            })
            .collect(),
        notes: if staff {
            v.notes
                .iter()
                .map(|n| pb::Note {
                    id: n.id.to_string(),
                    author_user_id: n.author_user_id.to_string(),
                    body: n.body.clone(),
                    created_at: Some(ts(n.created_at)),
                })
                .collect()
        } else {
            Vec::new()
        },
        activity: if staff {
            v.activity
                .iter()
                .map(|a| pb::Activity {
                    id: a.id.to_string(),
                    at: Some(ts(a.at)),
                    actor_user_id: id_or_empty(a.actor),
                    action: a.action.clone(),
                    detail: a.detail.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
        drafts: if staff { v.drafts.iter().map(draft_pb).collect() } else { Vec::new() },
        ai_state: if staff { v.ai_state().as_str().to_owned() } else { String::new() },
    }
}

fn draft_pb(d: &Draft) -> pb::Draft {
    pb::Draft {
        id: d.id.to_string(),
        for_message_id: d.for_message_id.to_string(),
        state: d.state.as_str().to_owned(),
        summary: d.summary.clone(),
        suggested_category: d.suggested_category.map_or(pb::Category::Unspecified, category_pb) as i32,
        suggested_urgency: d.suggested_urgency.map_or(pb::Priority::Unspecified, priority_pb) as i32,
        reply: d.reply.clone(),
        source: d.source.clone(),
        model: d.model.clone(),
        reason: d.reason.clone(),
        created_at: Some(ts(d.created_at)),
        decided_by: id_or_empty(d.decided_by),
        decided_at: d.decided_at.map(ts),
        sent_message_id: id_or_empty(d.sent_message_id),
    }
}

fn draft_id(raw: &str) -> Result<uuid::Uuid, Status> {
    uuid::Uuid::parse_str(raw.trim()).map_err(|_| invalid(Invalid::new("draft_id", "must be a draft id (a UUID)")))
}

/// A signed-in user as a viewer of tickets: staff, or a customer of their own account.
fn viewer(p: Principal) -> Result<(Viewer, Audience), Status> {
    if p.is_staff() {
        return Ok((Viewer::Staff(Staff::admit(Caller::User(p))?), Audience::Staff));
    }
    let account = Caller::User(p.clone()).read(p.account_id)?;
    Ok((Viewer::Customer(Customer { principal: p, account }), Audience::Customer))
}

impl SupportService {
    pub fn new(support: Support, service_token: &SecretString) -> Self {
        Self { support, auth: ServiceAuth::new(service_token) }
    }

    pub fn into_server(self) -> pb::support_server::SupportServer<Self> {
        pb::support_server::SupportServer::new(self)
    }

    fn hours(&self) -> &BusinessHours {
        &self.support.config().hours
    }

    fn answer(&self, v: &TicketView, audience: Audience) -> Response<pb::TicketView> {
        Response::new(view_pb(v, audience, self.hours()))
    }
}

#[tonic::async_trait]
impl pb::support_server::Support for SupportService {
    async fn create_ticket(&self, req: Request<pb::CreateTicketRequest>) -> Result<Response<pb::TicketView>, Status> {
        let AnyCaller(caller) = self.auth.authorize(&req)?;
        let r = req.into_inner();
        let subject = domain::parse_subject(&r.subject).map_err(invalid)?;
        let body = domain::parse_body(&r.body).map_err(invalid)?;
        let idempotency_key = domain::parse_idempotency_key(&r.idempotency_key).map_err(invalid)?;
        let category = category_in(r.category)?;
        let (intake, category, audience) = match caller {
            Caller::User(p) => {
                let category =
                    category.ok_or_else(|| invalid(Invalid::new("category", "is required (billing, technical, account or other)")))?;
                (Intake::portal(p)?, category, Audience::Customer)
            }
            Caller::Service(ctx) => {
                let email = Email::parse(&r.contact_email).map_err(|e| invalid(Invalid::new("contact_email", e.message)))?;
                let name = sb_types::parse_optional_line("contact_name", &r.contact_name, sb_types::NAME_MAX_CHARS).map_err(invalid)?;
                let name = name.unwrap_or_default();
                (Intake::ContactForm { ctx, email, name }, category.unwrap_or(TicketCategory::Other), Audience::ContactForm)
            }
        };
        let view = self.support.create_ticket(intake, NewTicket { subject, body, category, idempotency_key }).await.map_err(err)?;
        Ok(self.answer(&view, audience))
    }

    async fn list_tickets(&self, req: Request<pb::ListTicketsRequest>) -> Result<Response<pb::TicketList>, Status> {
        let UserCaller(p) = self.auth.authorize(&req)?;
        let (viewer, audience) = viewer(p)?;
        let r = req.into_inner();
        let filter = Filter {
            account: if r.account_id.trim().is_empty() { None } else { Some(r.account_id.parse().map_err(invalid)?) },
            queue: queue_in(r.queue)?,
            status: status_in(r.status)?,
            priority: priority_in(r.priority)?,
            assignee: optional_user("assignee_user_id", &r.assignee_user_id)?,
            open_only: r.open_only,
        };
        let tickets = self.support.list_tickets(&viewer, filter, limit(r.limit)).await.map_err(err)?;
        let now = Utc::now();
        Ok(Response::new(pb::TicketList { tickets: tickets.iter().map(|t| ticket_pb(t, audience, self.hours(), now)).collect() }))
    }

    async fn get_ticket(&self, req: Request<pb::GetTicketRequest>) -> Result<Response<pb::TicketView>, Status> {
        let UserCaller(p) = self.auth.authorize(&req)?;
        let (viewer, audience) = viewer(p)?;
        let view = self.support.ticket(&viewer, ticket_id(&req.get_ref().ticket_id)?).await.map_err(err)?;
        Ok(self.answer(&view, audience))
    }

    async fn add_message(&self, req: Request<pb::AddMessageRequest>) -> Result<Response<pb::TicketView>, Status> {
        let UserCaller(p) = self.auth.authorize(&req)?;
        let (viewer, audience) = viewer(p)?;
        let r = req.into_inner();
        let id = ticket_id(&r.ticket_id)?;
        let body = domain::parse_body(&r.body).map_err(invalid)?;
        let view = self.support.add_message(&viewer, id, body).await.map_err(err)?;
        Ok(self.answer(&view, audience))
    }

    async fn add_note(&self, req: Request<pb::AddNoteRequest>) -> Result<Response<pb::TicketView>, Status> {
        let staff: Staff = self.auth.authorize(&req)?;
        let r = req.into_inner();
        let id = ticket_id(&r.ticket_id)?;
        let body = domain::parse_body(&r.body).map_err(invalid)?;
        let view = self.support.add_note(&staff, id, body).await.map_err(err)?;
        Ok(self.answer(&view, Audience::Staff))
    }

    async fn assign(&self, req: Request<pb::AssignRequest>) -> Result<Response<pb::TicketView>, Status> {
        let staff: Staff = self.auth.authorize(&req)?;
        let r = req.into_inner();
        let id = ticket_id(&r.ticket_id)?;
        let assignee = optional_user("assignee_user_id", &r.assignee_user_id)?;
        let view = self.support.assign(&staff, id, assignee).await.map_err(err)?;
        Ok(self.answer(&view, Audience::Staff))
    }

    async fn reprioritise(&self, req: Request<pb::ReprioritiseRequest>) -> Result<Response<pb::TicketView>, Status> {
        let staff: Staff = self.auth.authorize(&req)?;
        let r = req.into_inner();
        let id = ticket_id(&r.ticket_id)?;
        let (priority, queue) = (priority_in(r.priority)?, queue_in(r.queue)?);
        let reason = domain::parse_reason(&r.reason).map_err(invalid)?;
        let view = self.support.reprioritise(&staff, id, priority, queue, reason).await.map_err(err)?;
        Ok(self.answer(&view, Audience::Staff))
    }

    async fn resolve(&self, req: Request<pb::ResolveRequest>) -> Result<Response<pb::TicketView>, Status> {
        let UserCaller(p) = self.auth.authorize(&req)?;
        let (viewer, audience) = viewer(p)?;
        let view = self.support.resolve(&viewer, ticket_id(&req.get_ref().ticket_id)?).await.map_err(err)?;
        Ok(self.answer(&view, audience))
    }

    async fn reopen(&self, req: Request<pb::ReopenRequest>) -> Result<Response<pb::TicketView>, Status> {
        let staff: Staff = self.auth.authorize(&req)?;
        let r = req.into_inner();
        let id = ticket_id(&r.ticket_id)?;
        let reason = if r.reason.trim().is_empty() { None } else { Some(domain::parse_reason(&r.reason).map_err(invalid)?) };
        let view = self.support.reopen(&staff, id, reason).await.map_err(err)?;
        Ok(self.answer(&view, Audience::Staff))
    }

    async fn approve_draft(&self, req: Request<pb::ApproveDraftRequest>) -> Result<Response<pb::TicketView>, Status> {
        let staff: Staff = self.auth.authorize(&req)?;
        let r = req.into_inner();
        let id = ticket_id(&r.ticket_id)?;
        let draft = draft_id(&r.draft_id)?;
        let body = if r.body.trim().is_empty() { None } else { Some(domain::parse_body(&r.body).map_err(invalid)?) };
        let view = self.support.approve_draft(&staff, id, draft, body).await.map_err(err)?;
        Ok(self.answer(&view, Audience::Staff))
    }

    async fn reject_draft(&self, req: Request<pb::RejectDraftRequest>) -> Result<Response<pb::TicketView>, Status> {
        let staff: Staff = self.auth.authorize(&req)?;
        let r = req.into_inner();
        let id = ticket_id(&r.ticket_id)?;
        let draft = draft_id(&r.draft_id)?;
        let reason = if r.reason.trim().is_empty() { None } else { Some(domain::parse_reason(&r.reason).map_err(invalid)?) };
        let view = self.support.reject_draft(&staff, id, draft, reason).await.map_err(err)?;
        Ok(self.answer(&view, Audience::Staff))
    }

    async fn list_queues(&self, req: Request<pb::ListQueuesRequest>) -> Result<Response<pb::QueueList>, Status> {
        let staff: Staff = self.auth.authorize(&req)?;
        let counts = self.support.queues(&staff).await.map_err(err)?;
        Ok(Response::new(pb::QueueList {
            queues: counts
                .iter()
                .map(|c| pb::QueueCount {
                    queue: queue_pb(c.queue) as i32,
                    open: u32::try_from(c.open).unwrap_or(u32::MAX),
                    unanswered: u32::try_from(c.unanswered).unwrap_or(u32::MAX),
                    oldest_unanswered_seconds: c.oldest_unanswered_seconds,
                })
                .collect(),
        }))
    }
}
