//! Staff routes: customer search and view (agents and admins); session revocation,
//! impersonation, the audit log and the embedded mailbox (admins).

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use sb_proto::identity::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    AccountOut, UserOut,
    billing::{self, AccessOut},
    crm::{self, CrmContactOut},
    path_id,
    portal::SessionOut,
    support, time,
};
use crate::{
    AppState,
    auth::{AdminSession, Guarded, StaffSession},
    error::{ApiError, ApiJson, ApiQuery, Problem},
};

#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchQuery {
    /// Substring of an email, user name or account name (case-insensitive).
    #[serde(default)]
    pub q: String,
    /// At most this many (default 50, max 200).
    #[serde(default)]
    pub limit: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerOut {
    pub account: Option<AccountOut>,
    pub users: Vec<UserOut>,
}

/// One customer, all in one place: account, users, portal access, each user's CRM sync and the
/// open tickets.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerViewOut {
    pub account: Option<AccountOut>,
    pub users: Vec<UserOut>,
    /// Portal access from billing. Null, with `access_error`, when billing cannot be reached.
    pub access: Option<AccessOut>,
    pub access_error: Option<&'static str>,
    /// Each customer user's CRM sync (synced with contact id and stage; pending with the next
    /// attempt's time and the last error; failed with the reason), with a `message` line for
    /// people. Null, with `crm_error`, when crm-sync cannot be reached: the rest still answers.
    pub crm: Option<Vec<CrmContactOut>>,
    pub crm_error: Option<&'static str>,
    /// The account's open tickets with their SLA state. Null, with `tickets_error`, when
    /// support-router cannot be reached.
    pub tickets: Option<Vec<support::StaffTicketOut>>,
    pub tickets_error: Option<&'static str>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ImpersonateIn {
    /// Why (kept in the audit log).
    pub reason: String,
    /// Session lifetime in seconds (default 900, at most the configured maximum).
    #[serde(default)]
    pub ttl_seconds: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedOut {
    pub revoked: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryOut {
    #[schema(format = Uuid)]
    pub id: String,
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// Empty for actions by an operator command.
    #[schema(format = Uuid)]
    pub actor_user_id: Option<String>,
    pub action: String,
    #[schema(format = Uuid)]
    pub target_user_id: Option<String>,
    #[schema(format = Uuid)]
    pub account_id: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Only entries where this user is actor or target.
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub limit: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmailOut {
    #[schema(format = Uuid)]
    pub id: String,
    pub to: String,
    pub subject: String,
    pub text_body: String,
    pub template: String,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct MailboxQuery {
    /// Only emails to this address.
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub limit: u32,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/customers", get(list_customers))
        .route("/v1/admin/customers/{account_id}", get(get_customer))
        .route("/v1/admin/users/{user_id}/revoke-sessions", post(revoke_sessions))
        .route("/v1/admin/users/{user_id}/impersonate", post(impersonate))
        .route("/v1/admin/audit", get(list_audit))
        .route("/v1/admin/mailbox", get(list_mailbox))
}

fn customer(c: pb::CustomerSummary) -> CustomerOut {
    CustomerOut { account: c.account.map(Into::into), users: c.users.into_iter().map(Into::into).collect() }
}

/// Search customers (staff).
#[utoipa::path(get, path = "/v1/admin/customers", tag = "admin", security(("session" = [])), params(SearchQuery),
    responses((status = 200, body = [CustomerOut]), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_customers(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Json<Vec<CustomerOut>>, ApiError> {
    let list = app.identity().list_customers(session.request(pb::ListCustomersRequest { query: q.q, limit: q.limit })).await?;
    Ok(Json(list.into_inner().customers.into_iter().map(customer).collect()))
}

/// One customer (staff): account, users, portal access and each user's CRM sync status.
#[utoipa::path(get, path = "/v1/admin/customers/{account_id}", tag = "admin", security(("session" = [])),
    params(("account_id" = uuid::Uuid, Path, description = "account UUID")),
    responses((status = 200, body = CustomerViewOut), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_customer(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    Path(account_id): Path<String>,
) -> Result<Json<CustomerViewOut>, ApiError> {
    let account_id = path_id("account", &account_id)?;
    let view = app.identity().get_account(session.request(pb::GetAccountRequest { account_id: account_id.clone() })).await?.into_inner();
    // billing and crm-sync only add to the view: each is bounded, and the view answers without it.
    let (access, contacts, tickets) = tokio::join!(
        billing::access_of(&app, &session, account_id.clone()),
        crm::account_status(&app, &session, account_id.clone()),
        support::open_tickets_of(&app, &session, account_id)
    );
    let (tickets, tickets_error) = match tickets {
        Ok(t) => (Some(t), None),
        Err(e) => {
            tracing::warn!(error = %e, "support-router unavailable for the customer view");
            (None, Some(support::UNAVAILABLE))
        }
    };
    let (access, access_error) = match access {
        Ok(a) => (Some(a), None),
        Err(e) => {
            tracing::warn!(error = %e, "billing unavailable for the customer view");
            (None, Some(billing::UNAVAILABLE))
        }
    };
    let (crm, crm_error) = match contacts {
        Ok(contacts) => {
            let mut out: Vec<CrmContactOut> = contacts.into_iter().map(Into::into).collect();
            // Customers crm-sync has not heard of yet are pending too (staff are no CRM contacts).
            for u in view.users.iter().filter(|u| u.role == pb::Role::Customer as i32) {
                if !out.iter().any(|c| c.user_id == u.id) {
                    out.push(CrmContactOut::not_seen(u.id.clone(), u.email.clone()));
                }
            }
            (Some(out), None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "crm-sync unavailable for the customer view");
            (None, Some(crm::UNAVAILABLE))
        }
    };
    Ok(Json(CustomerViewOut {
        account: view.account.map(Into::into),
        users: view.users.into_iter().map(Into::into).collect(),
        access,
        access_error,
        crm,
        crm_error,
        tickets,
        tickets_error,
    }))
}

/// Revoke every session of a user (admin).
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/revoke-sessions", tag = "admin", security(("session" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "user UUID")),
    responses((status = 200, body = RevokedOut), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn revoke_sessions(
    State(app): State<AppState>,
    Guarded(session, _): AdminSession,
    Path(user_id): Path<String>,
) -> Result<Json<RevokedOut>, ApiError> {
    let user_id = path_id("user", &user_id)?;
    let r = app.identity().revoke_sessions(session.request(pb::RevokeSessionsRequest { user_id })).await?;
    Ok(Json(RevokedOut { revoked: r.into_inner().revoked }))
}

/// Act as a customer for a limited time (admin; audited; shown in their `/v1/me`).
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/impersonate", tag = "admin", security(("session" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "user UUID")), request_body = ImpersonateIn,
    responses((status = 201, body = SessionOut), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn impersonate(
    State(app): State<AppState>,
    Guarded(session, _): AdminSession,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<ImpersonateIn>,
) -> Result<Response, ApiError> {
    let user_id = path_id("user", &user_id)?;
    let grant = app
        .identity()
        .impersonate(session.request(pb::ImpersonateRequest { user_id, reason: body.reason, ttl_seconds: body.ttl_seconds }))
        .await?
        .into_inner();
    // No cookie: the admin's own browser session stays theirs; the token is used explicitly.
    let out = SessionOut { token: grant.token, expires_at: time(grant.expires_at), user: grant.user.map(Into::into) };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The audit log, newest first (admin).
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("session" = [])), params(AuditQuery),
    responses((status = 200, body = [AuditEntryOut]), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_audit(
    State(app): State<AppState>,
    Guarded(session, _): AdminSession,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntryOut>>, ApiError> {
    let user_id = match q.user_id.as_deref() {
        Some(id) if !id.is_empty() => path_id("user", id)?,
        _ => String::new(),
    };
    let list = app.identity().list_audit(session.request(pb::ListAuditRequest { user_id, limit: q.limit })).await?;
    Ok(Json(
        list.into_inner()
            .entries
            .into_iter()
            .map(|e| AuditEntryOut {
                id: e.id,
                at: time(e.at),
                actor_user_id: Some(e.actor_user_id).filter(|i| !i.is_empty()),
                action: e.action,
                target_user_id: Some(e.target_user_id).filter(|i| !i.is_empty()),
                account_id: Some(e.account_id).filter(|i| !i.is_empty()),
                detail: serde_json::from_str(&e.detail_json).unwrap_or_default(),
            })
            .collect(),
    ))
}

/// Emails recorded by the embedded mailbox (admin).
#[utoipa::path(get, path = "/v1/admin/mailbox", tag = "admin", security(("session" = [])), params(MailboxQuery),
    responses((status = 200, body = [EmailOut]), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_mailbox(
    State(app): State<AppState>,
    Guarded(session, _): AdminSession,
    ApiQuery(q): ApiQuery<MailboxQuery>,
) -> Result<Json<Vec<EmailOut>>, ApiError> {
    let list = app.identity().list_mailbox(session.request(pb::ListMailboxRequest { to: q.to, limit: q.limit })).await?;
    Ok(Json(
        list.into_inner()
            .emails
            .into_iter()
            .map(|m| EmailOut {
                id: m.id,
                to: m.to,
                subject: m.subject,
                text_body: m.text_body,
                template: m.template,
                created_at: time(m.created_at),
            })
            .collect(),
    ))
}
