//! Operations routes (admins): every service's queues with depth and consumers, the parked
//! messages of a DLQ with reason, attempts and the original event, and replay or purge of them —
//! one event, one account's, one event type's or all — with a dry run that shows first what would
//! be touched. Backed by the bus library's DLQ operations (the same ones the `switchboard` CLI
//! runs); each replay and purge is recorded in identity's audit log, before it runs, with the
//! admin as actor: an action that could not be audited does not happen.

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{get, post},
};
use sb_bus::{
    catalog::SERVICES,
    dlq::{Ops, Parked, Preview, QueueDepth, Selector},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    auth::{AdminSession, Guarded},
    error::{ApiError, ApiJson, ApiQuery, Problem},
};

/// At most this many parked messages are looked at by a dry run.
const PREVIEW_CAP: usize = 10_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueOut {
    pub queue: String,
    /// Messages waiting; null when the queue does not exist (the service never ran here).
    pub messages: Option<u32>,
    /// Consumers attached; null when the queue does not exist.
    pub consumers: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceQueuesOut {
    pub service: String,
    pub work: QueueOut,
    /// The retry ladder's delay queues, shortest first.
    pub retry: Vec<QueueOut>,
    /// The parking queue: messages that failed for good or ran out of attempts.
    pub dlq: QueueOut,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpsOverviewOut {
    pub services: Vec<ServiceQueuesOut>,
    /// The RabbitMQ management dashboard (`GATEWAY_RABBITMQ_DASHBOARD_URL`).
    pub dashboard_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedOut {
    #[schema(format = Uuid)]
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    #[schema(format = Uuid)]
    pub account_id: Option<String>,
    #[schema(format = Uuid)]
    pub user_id: Option<String>,
    /// Why it was parked (the handler's error, or the broker's reason).
    pub reason: String,
    /// Attempts made before it was parked.
    pub attempts: i64,
    pub failed_at: Option<String>,
    /// The routing key it was first published with.
    pub routing_key: Option<String>,
    /// The original message: the event envelope, or its raw text when it is not JSON.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

impl From<Parked> for ParkedOut {
    fn from(p: Parked) -> Self {
        ParkedOut {
            event_id: p.event_id.map(|i| i.to_string()),
            event_type: p.event_type,
            account_id: p.account_id.map(|i| i.to_string()),
            user_id: p.user_id.map(|i| i.to_string()),
            reason: p.reason,
            attempts: p.attempts,
            failed_at: p.failed_at,
            routing_key: p.routing_key,
            body: p.body,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ParkedQuery {
    /// At most this many, oldest first (default 50, max 500).
    #[serde(default)]
    pub limit: u32,
}

/// Which parked messages: exactly one of `all`, `event_id`, `account_id`, `event_type`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectIn {
    /// Every parked message of the service.
    #[serde(default)]
    pub all: bool,
    /// The message of one event.
    #[schema(format = Uuid)]
    pub event_id: Option<String>,
    /// The messages of one account.
    #[schema(format = Uuid)]
    pub account_id: Option<String>,
    /// The messages of one versioned event type, e.g. `billing.access.changed.v1`.
    pub event_type: Option<String>,
    /// Only show what would be touched (count and the first 50); nothing changes.
    #[serde(default)]
    pub dry_run: bool,
    /// Purge only: the service's name typed again, as a confirmation.
    pub confirm: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpsActionOut {
    /// True for a dry run: `matched` messages would be touched; nothing changed.
    pub dry_run: bool,
    /// Dry run: how many of the looked-at messages the selection matches. Otherwise how many were
    /// replayed or purged.
    pub matched: usize,
    /// Dry run: parked messages looked at.
    pub looked_at: Option<usize>,
    /// Dry run: the DLQ held more than a dry run looks at (10,000); `matched` counts only those.
    pub partial: Option<bool>,
    /// Dry run: the first matching messages.
    pub messages: Vec<ParkedOut>,
    /// What was selected, in words.
    pub selection: String,
}

pub fn router() -> axum::Router<AppState> {
    Router::new()
        .route("/v1/admin/ops/queues", get(list_queues))
        .route("/v1/admin/ops/services/{service}/parked", get(list_parked))
        .route("/v1/admin/ops/services/{service}/replay", post(replay))
        .route("/v1/admin/ops/services/{service}/purge", post(purge))
}

fn service_name(raw: &str) -> Result<&'static str, ApiError> {
    SERVICES.iter().copied().find(|s| *s == raw).ok_or_else(|| ApiError::not_found("service"))
}

async fn connect(app: &AppState) -> Result<Ops, ApiError> {
    Ops::connect(app.bus().clone()).await.map_err(|e| {
        tracing::warn!(error = %e, upstream = "rabbitmq", "the operations routes cannot reach RabbitMQ");
        ApiError::unavailable(5)
    })
}

fn bus_failed(e: anyhow::Error) -> ApiError {
    tracing::warn!(error = %format!("{e:#}"), upstream = "rabbitmq", "a DLQ operation failed");
    ApiError::unavailable(5)
}

fn queue(d: &QueueDepth) -> QueueOut {
    QueueOut { queue: d.queue.clone(), messages: d.messages, consumers: d.consumers }
}

/// Every service's work, retry and DLQ queues with depth and consumers (admin).
#[utoipa::path(get, path = "/v1/admin/ops/queues", tag = "admin", security(("session" = [])),
    responses((status = 200, body = OpsOverviewOut), (status = 401, body = Problem), (status = 403, body = Problem), (status = 503, body = Problem)))]
pub async fn list_queues(State(app): State<AppState>, Guarded(_, _): AdminSession) -> Result<Json<OpsOverviewOut>, ApiError> {
    let ops = connect(&app).await?;
    let depths = ops.depths(&[]).await;
    ops.close().await;
    let depths = depths.map_err(bus_failed)?;
    let services = SERVICES
        .iter()
        .filter_map(|svc| {
            let mine: Vec<&QueueDepth> = depths.iter().filter(|d| d.service == *svc).collect();
            let work = mine.iter().find(|d| d.role == "work")?;
            let dlq = mine.iter().find(|d| d.role == "dlq")?;
            Some(ServiceQueuesOut {
                service: (*svc).to_owned(),
                work: queue(work),
                retry: mine.iter().filter(|d| d.role == "retry").map(|d| queue(d)).collect(),
                dlq: queue(dlq),
            })
        })
        .collect();
    Ok(Json(OpsOverviewOut { services, dashboard_url: app.cfg.rabbitmq_dashboard_url.clone() }))
}

/// A service's parked messages, oldest first, with reason, attempts and the original event;
/// nothing is removed (admin).
#[utoipa::path(get, path = "/v1/admin/ops/services/{service}/parked", tag = "admin", security(("session" = [])),
    params(("service" = String, Path, description = "gateway, identity, billing, crm-sync, support-router or ai-assist"), ParkedQuery),
    responses((status = 200, body = [ParkedOut]), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 503, body = Problem)))]
pub async fn list_parked(
    State(app): State<AppState>,
    Guarded(_, _): AdminSession,
    Path(service): Path<String>,
    ApiQuery(q): ApiQuery<ParkedQuery>,
) -> Result<Json<Vec<ParkedOut>>, ApiError> {
    let service = service_name(&service)?;
    let limit = match q.limit {
        0 => 50,
        n => n.min(500) as usize,
    };
    let ops = connect(&app).await?;
    let shown = ops.show(service, limit).await;
    ops.close().await;
    Ok(Json(shown.map_err(bus_failed)?.into_iter().map(Into::into).collect()))
}

fn selector(body: &SelectIn) -> Result<Selector, ApiError> {
    let uuid = |what: &str, raw: &str| {
        uuid::Uuid::parse_str(raw).map_err(|_| ApiError::bad_request("invalid_id", format!("{what} must be a UUID")))
    };
    let event_type = body.event_type.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let chosen = usize::from(body.all)
        + usize::from(body.event_id.is_some())
        + usize::from(body.account_id.is_some())
        + usize::from(event_type.is_some());
    if chosen != 1 {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "Invalid input",
            Some("choose exactly one of: all, event_id, account_id, event_type".into()),
        ));
    }
    Ok(match (&body.event_id, &body.account_id, event_type) {
        (Some(id), _, _) => Selector::Event(uuid("event_id", id)?),
        (_, Some(id), _) => Selector::Account(uuid("account_id", id)?),
        (_, _, Some(t)) => Selector::EventType(t.to_owned()),
        _ => Selector::All,
    })
}

fn dry_run(preview: Preview, selection: String) -> OpsActionOut {
    OpsActionOut {
        dry_run: true,
        matched: preview.matched,
        looked_at: Some(preview.looked_at),
        partial: Some(preview.partial),
        messages: preview.messages.into_iter().map(Into::into).collect(),
        selection,
    }
}

/// Records the action in the audit log before it runs; if that fails, the action does not run.
async fn audit(app: &AppState, session: &crate::auth::Session, action: &str, service: &str, which: &Selector) -> Result<(), ApiError> {
    let account_id = match which {
        Selector::Account(id) => id.to_string(),
        _ => String::new(),
    };
    super::audit_first(app, session, action, account_id, serde_json::json!({"service": service, "selection": which.describe(service)}))
        .await
}

/// Puts the selected parked messages back on the service's work queue with a fresh retry ladder
/// (events already applied are acknowledged there without a second effect), or with `dry_run`
/// shows what would be replayed (admin; audited).
#[utoipa::path(post, path = "/v1/admin/ops/services/{service}/replay", tag = "admin", security(("session" = [])),
    params(("service" = String, Path, description = "gateway, identity, billing, crm-sync, support-router or ai-assist")), request_body = SelectIn,
    responses((status = 200, body = OpsActionOut), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn replay(
    State(app): State<AppState>,
    Guarded(session, _): AdminSession,
    Path(service): Path<String>,
    ApiJson(body): ApiJson<SelectIn>,
) -> Result<Json<OpsActionOut>, ApiError> {
    let service = service_name(&service)?;
    run(&app, &session, service, selector(&body)?, body.dry_run, Action::Replay).await
}

/// Deletes the selected parked messages for good, or with `dry_run` shows what would be deleted
/// (admin; audited). `confirm` must repeat the service's name.
#[utoipa::path(post, path = "/v1/admin/ops/services/{service}/purge", tag = "admin", security(("session" = [])),
    params(("service" = String, Path, description = "gateway, identity, billing, crm-sync, support-router or ai-assist")), request_body = SelectIn,
    responses((status = 200, body = OpsActionOut), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn purge(
    State(app): State<AppState>,
    Guarded(session, _): AdminSession,
    Path(service): Path<String>,
    ApiJson(body): ApiJson<SelectIn>,
) -> Result<Json<OpsActionOut>, ApiError> {
    let service = service_name(&service)?;
    let which = selector(&body)?;
    let selection = which.describe(service);
    if !body.dry_run && body.confirm.as_deref() != Some(service) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "confirmation_required",
            "Confirmation required",
            Some(format!("a purge deletes for good: set confirm to {service:?} to delete {selection}")),
        ));
    }
    run(&app, &session, service, which, body.dry_run, Action::Purge).await
}

#[derive(Clone, Copy)]
enum Action {
    Replay,
    Purge,
}

/// A replay or purge: the dry run (nothing moves, nothing to audit), or the audit entry first and
/// then the walk.
async fn run(
    app: &AppState,
    session: &crate::auth::Session,
    service: &'static str,
    which: Selector,
    dry: bool,
    action: Action,
) -> Result<Json<OpsActionOut>, ApiError> {
    let selection = which.describe(service);
    let (audited, verb) = match action {
        Action::Replay => ("ops.replay", "replaying"),
        Action::Purge => ("ops.purge", "purging"),
    };
    let ops = connect(app).await?;
    let out = if dry {
        ops.preview(service, &which, 50, PREVIEW_CAP).await.map(|p| dry_run(p, selection))
    } else {
        if let Err(e) = audit(app, session, audited, service, &which).await {
            ops.close().await;
            return Err(e);
        }
        tracing::info!(service, selection = %selection, "{verb} parked messages (admin)");
        let done = match action {
            Action::Replay => ops.replay(service, which).await,
            Action::Purge => ops.purge(service, which).await,
        };
        done.map(|n| OpsActionOut { dry_run: false, matched: n, looked_at: None, partial: None, messages: vec![], selection })
    };
    ops.close().await;
    Ok(Json(out.map_err(bus_failed)?))
}
