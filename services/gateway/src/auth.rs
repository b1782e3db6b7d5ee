//! Who is calling: the session from `Authorization: Bearer` or the `sb_session` cookie, resolved
//! by identity on every request. Roles are checked here and again by the service behind.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{HeaderMap, request::Parts},
};
use sb_proto::identity::v1 as pb;
use tonic::Request;

use crate::{AppState, error::ApiError};

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

/// A signed-in caller.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub principal: pb::Principal,
}

impl Session {
    pub fn role(&self) -> pb::Role {
        pb::Role::try_from(self.principal.role).unwrap_or(pb::Role::Unspecified)
    }

    pub fn is_impersonated(&self) -> bool {
        !self.principal.impersonator_id.is_empty()
    }

    /// Support agents and admins.
    pub fn require_staff(&self) -> Result<(), ApiError> {
        match self.role() {
            pb::Role::Agent | pb::Role::Admin => Ok(()),
            pb::Role::Customer | pb::Role::Unspecified => Err(ApiError::forbidden()),
        }
    }

    /// Admins acting as themselves (an impersonation session never has admin powers).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role() {
            pb::Role::Admin if !self.is_impersonated() => Ok(()),
            pb::Role::Admin | pb::Role::Agent | pb::Role::Customer | pb::Role::Unspecified => Err(ApiError::forbidden()),
        }
    }

    /// The principal forwarded to services that trust the gateway's service token (billing, ...).
    pub fn principal_for_services(&self) -> Option<sb_runtime::caller::Principal> {
        let role = match self.role() {
            pb::Role::Customer => sb_runtime::caller::Role::Customer,
            pb::Role::Agent => sb_runtime::caller::Role::Agent,
            pb::Role::Admin => sb_runtime::caller::Role::Admin,
            pb::Role::Unspecified => return None,
        };
        Some(sb_runtime::caller::Principal {
            user_id: uuid::Uuid::parse_str(&self.principal.user_id).ok()?,
            account_id: uuid::Uuid::parse_str(&self.principal.account_id).ok()?,
            role,
            impersonated: self.is_impersonated(),
        })
    }

    /// A request to a service on this user's behalf (the service re-checks the session).
    pub fn request<T>(&self, msg: T) -> Request<T> {
        Bearer(self.token.clone()).request(msg)
    }
}

/// Just the caller's session token, for routes where the service behind authenticates it itself
/// (saves the separate `Authenticate` round trip; the answer is the same 401 when it is bad).
#[derive(Debug, Clone)]
pub struct Bearer(pub String);

impl Bearer {
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

impl<S> FromRequestParts<S> for Session
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let app = AppState::from_ref(state);
        let Bearer(token) = Bearer::from_request_parts(parts, state).await?;
        let ip = ClientIp::from_request_parts(parts, state).await?;
        let req = app.service_request(pb::AuthenticateRequest { token: token.clone() }, &ip);
        let principal = app.identity().authenticate(req).await.map_err(|s| match s.code() {
            tonic::Code::Unauthenticated | tonic::Code::InvalidArgument => ApiError::unauthenticated(),
            _ => ApiError::from(s),
        })?;
        Ok(Session { token, principal: principal.into_inner() })
    }
}
