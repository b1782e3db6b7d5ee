//! Public and signed-in portal routes: sign up, log in/out, the caller's own records.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use sb_proto::identity::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AccountOut, UserOut, path_id, time};
use crate::{
    AppState,
    auth::{Bearer, Origin, SESSION_COOKIE, Session},
    error::{ApiError, ApiJson, Problem},
    me_cache::Cached,
};

// `Debug` leaves the password out.
#[derive(Deserialize, ToSchema)]
pub struct SignUpIn {
    pub email: String,
    pub password: String,
    pub name: String,
    /// The customer company; defaults to the person's name.
    #[serde(default)]
    pub account_name: String,
}

// `Debug` leaves the password out.
#[derive(Deserialize, ToSchema)]
pub struct LogInIn {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for SignUpIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignUpIn").field("email", &self.email).field("name", &self.name).field("account_name", &self.account_name).finish()
    }
}

impl std::fmt::Debug for LogInIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogInIn").field("email", &self.email).finish()
    }
}

/// Only these fields can change; anything else in the body (role, account_id, email) is ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProfileIn {
    pub name: Option<String>,
}

// `Debug` leaves the token out.
#[derive(Serialize, ToSchema)]
pub struct SessionOut {
    /// Opaque session token: send as `Authorization: Bearer <token>` (also set as an HttpOnly cookie).
    pub token: String,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub user: Option<UserOut>,
}

impl std::fmt::Debug for SessionOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionOut").field("expires_at", &self.expires_at).field("user", &self.user).finish()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeOut {
    pub user: Option<UserOut>,
    pub account: Option<AccountOut>,
    /// `customer`, `agent` or `admin`.
    pub role: &'static str,
    pub session_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Set while an admin is acting as this user.
    pub impersonated_by: Option<UserOut>,
    /// Portal access from billing (`status` `pending` = checkout started, payment not confirmed
    /// yet). Null, with `access_error`, when billing cannot be reached: the rest still answers.
    pub access: Option<super::billing::AccessOut>,
    pub access_error: Option<&'static str>,
    /// Customers: how their own CRM sync stands (`status` `synced`, `pending` or `failed`, with a
    /// message); null for staff. Null, with `crm_sync_error`, when crm-sync cannot be reached.
    pub crm_sync: Option<super::crm::CrmSyncOut>,
    pub crm_sync_error: Option<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountViewOut {
    pub account: Option<AccountOut>,
    pub users: Vec<UserOut>,
}

impl From<pb::AccountView> for AccountViewOut {
    fn from(v: pb::AccountView) -> Self {
        Self { account: v.account.map(Into::into), users: v.users.into_iter().map(Into::into).collect() }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/signup", post(sign_up))
        .route("/v1/login", post(log_in))
        .route("/v1/logout", post(log_out))
        .route("/v1/me", get(get_me).patch(update_me))
        .route("/v1/accounts/{account_id}", get(get_account))
        .route("/v1/users/{user_id}", get(get_user))
}

fn session_response(app: &AppState, status: StatusCode, grant: pb::SessionGrant) -> Response {
    let max_age = grant.expires_at.as_ref().map_or(0, |e| (e.seconds - chrono::Utc::now().timestamp()).max(0));
    let secure = if app.cfg.secure_cookies { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}", grant.token);
    let out = SessionOut { token: grant.token, expires_at: time(grant.expires_at), user: grant.user.map(Into::into) };
    // Not a secret: tells the portal's script that a session cookie exists (it cannot read the
    // HttpOnly one), so an anonymous visit does not start with a request bound to fail.
    let hint = format!("{SIGNED_IN_COOKIE}=1; Path=/; SameSite=Strict; Max-Age={max_age}{secure}");
    let mut resp = (status, Json(out)).into_response();
    for c in [cookie, hint] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// Set beside the session cookie, readable by the portal's script; holds nothing but `1`.
pub const SIGNED_IN_COOKIE: &str = "sb_signed_in";

/// Create an account and its first user, and sign in.
#[utoipa::path(post, path = "/v1/signup", tag = "portal", request_body = SignUpIn,
    responses((status = 201, body = SessionOut), (status = 409, description = "email already registered", body = Problem),
              (status = 422, body = Problem)))]
pub async fn sign_up(State(app): State<AppState>, Origin(origin): Origin, ApiJson(body): ApiJson<SignUpIn>) -> Result<Response, ApiError> {
    let req = pb::SignUpRequest { email: body.email, password: body.password, name: body.name, account_name: body.account_name };
    let grant = app.identity().sign_up(app.service_request(req, &origin)).await.map_err(|s| {
        if s.code() == tonic::Code::AlreadyExists {
            ApiError::new(
                StatusCode::CONFLICT,
                "email_taken",
                "Email already registered",
                Some("an account with this email already exists; sign in instead".into()),
            )
        } else {
            ApiError::from(s)
        }
    })?;
    Ok(session_response(&app, StatusCode::CREATED, grant.into_inner()))
}

/// Exchange email and password for a session.
#[utoipa::path(post, path = "/v1/login", tag = "portal", request_body = LogInIn,
    responses((status = 200, body = SessionOut), (status = 401, body = Problem),
              (status = 429, description = "too many failed attempts; see Retry-After", body = Problem)))]
pub async fn log_in(State(app): State<AppState>, Origin(origin): Origin, ApiJson(body): ApiJson<LogInIn>) -> Result<Response, ApiError> {
    let req = app.service_request(pb::LogInRequest { email: body.email, password: body.password }, &origin);
    let grant = app.identity().log_in(req).await.map_err(ApiError::from)?;
    Ok(session_response(&app, StatusCode::OK, grant.into_inner()))
}

/// End the current session.
#[utoipa::path(post, path = "/v1/logout", tag = "portal", security(("session" = [])),
    responses((status = 204), (status = 401, body = Problem)))]
pub async fn log_out(State(app): State<AppState>, headers: HeaderMap, session: Session) -> Result<Response, ApiError> {
    app.identity().log_out(session.request(pb::LogOutRequest {})).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    // A session presented as `Authorization: Bearer` (an API client, or an admin's tab acting as
    // a customer) ends alone: the browser's own cookie session is another one and stays.
    if !headers.contains_key(header::AUTHORIZATION) {
        let ended = [
            format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            format!("{SIGNED_IN_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0"),
        ];
        for c in ended {
            if let Ok(v) = HeaderValue::from_str(&c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }
    Ok(resp)
}

/// The caller: user, account, role, who is impersonating them, if anyone, their portal access
/// and (customers) how their CRM sync stands.
#[utoipa::path(get, path = "/v1/me", tag = "portal", security(("session" = [])),
    responses((status = 200, body = MeOut), (status = 401, body = Problem)))]
pub async fn get_me(State(app): State<AppState>, bearer: Bearer) -> Result<Response, ApiError> {
    // An answer made less than a second ago for this very token (see `me_cache`).
    match app.me_cache.get(&bearer.0) {
        Cached::Fresh(body) => return Ok(json_body(body)),
        Cached::Aging(body) => {
            let app = app.clone();
            tokio::spawn(async move {
                match answer_me(&app, bearer.clone()).await {
                    Ok(_) => {}
                    // The session ended: its answer goes now, not when it would have expired.
                    Err(e) if e.status == StatusCode::UNAUTHORIZED => app.me_cache.forget(&bearer.0),
                    // It expires on its own; the next request asks again.
                    Err(e) => tracing::debug!(error = %e.code, "refreshing a kept /v1/me answer failed"),
                }
            });
            return Ok(json_body(body));
        }
        Cached::Missing => {}
    }
    let token = bearer.0.clone();
    Ok(json_body(app.me_cache.answer(&token, || answer_me(&app, bearer)).await?))
}

/// `/v1/me` as the services answer it now, kept for the token when complete.
async fn answer_me(app: &AppState, bearer: Bearer) -> Result<axum::body::Bytes, ApiError> {
    let checked = std::time::Instant::now();
    // identity authenticates the token itself in GetMe; no separate Authenticate call.
    let me = app.identity().get_me(bearer.request(pb::GetMeRequest {})).await.map_err(ApiError::from)?.into_inner();
    let principal = me.principal.unwrap_or_default();
    let session = Session::from_identity(bearer, &principal)?;
    // billing and crm-sync are asked at the same time, each bounded: neither can fail or hold up
    // /v1/me. Staff are not CRM contacts: crm-sync is only asked for customers.
    let is_customer = session.principal.role == sb_runtime::caller::Role::Customer;
    let crm_sync = async { if is_customer { Some(super::crm::own_status(app, &session).await) } else { None } };
    let (access, crm_sync) = tokio::join!(super::billing::access_of(app, &session, principal.account_id.clone()), crm_sync);
    let (access, access_error) = match access {
        Ok(a) => (Some(a), None),
        Err(e) => {
            tracing::warn!(error = %e, "billing unavailable for /v1/me");
            (None, Some(super::billing::UNAVAILABLE))
        }
    };
    let (crm_sync, crm_sync_error) = match crm_sync {
        None => (None, None),
        Some(Ok(s)) => (Some(s), None),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "crm-sync unavailable for /v1/me");
            (None, Some(super::crm::UNAVAILABLE))
        }
    };
    let complete = access_error.is_none() && crm_sync_error.is_none();
    let me = MeOut {
        user: me.user.map(Into::into),
        account: me.account.map(Into::into),
        role: super::role_name(principal.role),
        session_expires_at: time(principal.expires_at),
        impersonated_by: me.impersonator.map(Into::into),
        access,
        access_error,
        crm_sync,
        crm_sync_error,
    };
    let body = axum::body::Bytes::from(serde_json::to_vec(&me).map_err(|e| ApiError::internal(format!("/v1/me answer: {e}")))?);
    // A degraded answer is not kept: the next request asks again.
    if complete {
        app.me_cache.put(&session.bearer.0, checked, body.clone());
    }
    Ok(body)
}

fn json_body(body: axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// Change the caller's own profile (only `name`; other fields are ignored).
#[utoipa::path(patch, path = "/v1/me", tag = "portal", security(("session" = [])), request_body = ProfileIn,
    responses((status = 200, body = UserOut), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn update_me(
    State(app): State<AppState>,
    session: Session,
    ApiJson(body): ApiJson<ProfileIn>,
) -> Result<Json<UserOut>, ApiError> {
    let user = app.identity().update_profile(session.request(pb::UpdateProfileRequest { name: body.name })).await?;
    Ok(Json(user.into_inner().into()))
}

/// An account and its users: the caller's own, or any for staff.
#[utoipa::path(get, path = "/v1/accounts/{account_id}", tag = "portal", security(("session" = [])),
    params(("account_id" = uuid::Uuid, Path, description = "account UUID")),
    responses((status = 200, body = AccountViewOut), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_account(
    State(app): State<AppState>,
    session: Session,
    Path(account_id): Path<String>,
) -> Result<Json<AccountViewOut>, ApiError> {
    let account_id = path_id("account", &account_id)?;
    let view = app.identity().get_account(session.request(pb::GetAccountRequest { account_id })).await?;
    Ok(Json(view.into_inner().into()))
}

/// A user: of the caller's own account, or any for staff.
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "portal", security(("session" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "user UUID")),
    responses((status = 200, body = UserOut), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_user(State(app): State<AppState>, session: Session, Path(user_id): Path<String>) -> Result<Json<UserOut>, ApiError> {
    let user_id = path_id("user", &user_id)?;
    let user = app.identity().get_user(session.request(pb::GetUserRequest { user_id })).await?;
    Ok(Json(user.into_inner().into()))
}
