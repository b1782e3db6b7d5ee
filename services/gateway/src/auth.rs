//! Who is calling, as extractors a route names in its signature: the session from
//! `Authorization: Bearer` or the `sb_session` cookie (resolved by identity on every request),
//! and the typed guards `StaffSession` and `AdminSession`, so a route that needs a role cannot
//! forget to check it. The services behind check role and tenant again themselves.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{HeaderMap, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use sb_proto::identity::v1 as pb;
use sb_runtime::caller::{Admin, Caller, Guard, Principal, Role, ServiceContext, Staff};
use tonic::Request;

use crate::{AppState, error::ApiError, routes::time};

pub const SESSION_COOKIE: &str = "sb_session";

/// The end user's address: the socket peer, or the first `X-Forwarded-For` hop when configured.
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl<S> FromRequestParts<S> for ClientIp
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let app = AppState::from_ref(state);
        if app.cfg.trust_forwarded_for {
            let forwarded =
                parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next()).map(str::trim);
            if let Some(ip) = forwarded.filter(|ip| ip.parse::<std::net::IpAddr>().is_ok()) {
                return Ok(Self(ip.to_owned()));
            }
        }
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        Ok(Self(peer.unwrap_or_else(|| "unknown".into())))
    }
}

/// The outside request a call to a service serves: the visitor's address and the request id,
/// which the service logs and carries into the events it publishes (correlation id).
#[derive(Debug, Clone)]
pub struct Origin(pub ServiceContext);

impl<S> FromRequestParts<S> for Origin
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        let correlation_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).and_then(|v| uuid::Uuid::parse_str(v).ok());
        Ok(Self(ServiceContext { client_ip: Some(ip), correlation_id }))
    }
}

/// The caller's session token, for routes where identity authenticates it itself (saves the
/// separate `Authenticate` round trip; the answer is the same 401 when it is bad). `Debug`
/// leaves the token out.
#[derive(Clone)]
pub struct Bearer(pub String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(***)")
    }
}

impl Bearer {
    /// A request to identity on this user's behalf (identity checks the session itself).
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = format!("Bearer {}", self.0).parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        token_from(&parts.headers).filter(|t| !t.is_empty()).map(Bearer).ok_or_else(ApiError::unauthenticated)
    }
}

fn token_from(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The origins whose pages may make state-changing requests with the session cookie: this
/// gateway's own (the `Host` the request was sent to) and the configured CORS origins.
#[derive(Debug, Clone)]
pub struct SameSite {
    allowed: Vec<String>,
}

impl SameSite {
    pub fn new(cors_origins: &[String]) -> Self {
        Self { allowed: cors_origins.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect() }
    }

    /// Whether a request carrying these headers comes from one of our own pages. Browsers send
    /// `Sec-Fetch-Site` (current ones) or `Origin` (every one, on a POST) and a page cannot
    /// forge either; a request with neither is not from a browser page we served.
    fn admits(&self, headers: &HeaderMap) -> bool {
        if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("same-origin") {
            return true;
        }
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.allowed.contains(&origin) {
            return true;
        }
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
        let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        !host.is_empty() && origin_host == Some(host.as_str())
    }
}

/// CSRF protection: a state-changing request (anything but GET, HEAD, OPTIONS) authenticated by
/// the session cookie alone must come from our own pages; otherwise it is refused with 403 before
/// any handler runs. Requests with `Authorization: Bearer` are not affected: a browser never adds
/// that header to a cross-site request by itself. (The cookie is also `SameSite=Strict`.)
pub async fn refuse_cross_site(same_site: std::sync::Arc<SameSite>, req: axum::extract::Request, next: Next) -> Response {
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let headers = req.headers();
    let cookie_only = !headers.contains_key(header::AUTHORIZATION) && token_from(headers).is_some();
    if unsafe_method && cookie_only && !same_site.admits(headers) {
        tracing::warn!(method = %req.method(), path = %req.uri().path(), "cross-site request with the session cookie refused");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "Cross-site request refused",
            Some("a request that changes something with the session cookie must come from this site's own pages".into()),
        )
        .into_response();
    }
    next.run(req).await
}

/// Read your own writes: once a request that may change something (anything but GET, HEAD,
/// OPTIONS) made with a session token has been answered, that token's kept `/v1/me` answer is
/// dropped, so the caller's next `/v1/me` shows what they just did (a checkout started, a profile
/// changed, a logout). Changes made elsewhere show within the cache's second (see `me_cache`).
pub async fn fresh_me_after_changes(cache: crate::me_cache::MeCache, req: axum::extract::Request, next: Next) -> Response {
    let token = if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) { None } else { token_from(req.headers()) };
    let resp = next.run(req).await;
    // After the change, not before: a `/v1/me` running meanwhile may have kept an older answer.
    if let Some(token) = token {
        cache.forget(&token);
    }
    resp
}

/// A signed-in caller: their principal, as identity resolved it from their token.
#[derive(Clone)]
pub struct Session {
    pub bearer: Bearer,
    pub principal: Principal,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("principal", &self.principal).field("expires_at", &self.expires_at).finish()
    }
}

/// identity's principal as the shared caller model's; `None` when identity sent something this
/// gateway cannot read (a role it does not know), which is refused rather than guessed.
pub fn principal_from(p: &pb::Principal) -> Option<Principal> {
    let role = match pb::Role::try_from(p.role).ok()? {
        pb::Role::Customer => Role::Customer,
        pb::Role::Agent => Role::Agent,
        pb::Role::Admin => Role::Admin,
        pb::Role::Unspecified => return None,
    };
    let impersonator = if p.impersonator_id.is_empty() { None } else { Some(p.impersonator_id.parse().ok()?) };
    Some(Principal { user_id: p.user_id.parse().ok()?, account_id: p.account_id.parse().ok()?, role, impersonator })
}

impl Session {
    /// From identity's answer for `bearer`.
    pub fn from_identity(bearer: Bearer, p: &pb::Principal) -> Result<Self, ApiError> {
        let principal = principal_from(p).ok_or_else(|| ApiError::internal("identity sent a principal this gateway cannot read"))?;
        Ok(Self { bearer, principal, expires_at: time(p.expires_at) })
    }

    pub fn is_impersonated(&self) -> bool {
        self.principal.is_impersonated()
    }

    /// A request to identity on this user's behalf (identity re-checks the session).
    pub fn request<T>(&self, msg: T) -> Request<T> {
        self.bearer.request(msg)
    }
}

impl<S> FromRequestParts<S> for Session
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let app = AppState::from_ref(state);
        let bearer = Bearer::from_request_parts(parts, state).await?;
        let Origin(ctx) = Origin::from_request_parts(parts, state).await?;
        let req = app.service_request(pb::AuthenticateRequest { token: bearer.0.clone() }, &ctx);
        let principal = app.identity().authenticate(req).await.map_err(|s| match s.code() {
            tonic::Code::Unauthenticated | tonic::Code::InvalidArgument => ApiError::unauthenticated(),
            _ => ApiError::from(s),
        })?;
        Session::from_identity(bearer, principal.get_ref())
    }
}

/// A session the shared caller model's guard `G` admits (`sb_runtime::caller::Staff`, `Admin`,
/// ...): the same rules the services behind apply. A route that needs a role names it in its
/// signature, so it cannot forget the check; anyone else gets 403.
#[derive(Debug, Clone)]
pub struct Guarded<G>(pub Session, pub G);

impl<S, G> FromRequestParts<S> for Guarded<G>
where
    AppState: FromRef<S>,
    S: Send + Sync,
    G: Guard + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let session = Session::from_request_parts(parts, state).await?;
        let guard = G::admit(Caller::User(session.principal.clone())).map_err(|_| ApiError::forbidden())?;
        Ok(Self(session, guard))
    }
}

/// A support agent or an admin (an impersonation session acts as the customer, so never staff).
pub type StaffSession = Guarded<Staff>;

/// An admin acting as themselves (an impersonation session never has admin powers).
pub type AdminSession = Guarded<Admin>;
