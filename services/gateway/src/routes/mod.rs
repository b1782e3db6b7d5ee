//! The portal's REST API under `/v1`: wire types, handlers and their OpenAPI description.

pub mod admin;
pub mod ai;
pub mod billing;
pub mod crm;
pub mod ops;
pub mod portal;
pub mod support;
pub mod webhook;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sb_proto::identity::v1 as pb;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct UserOut {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub account_id: String,
    pub email: String,
    pub name: String,
    /// `customer`, `agent` or `admin`.
    pub role: &'static str,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountOut {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// Records an admin's action in identity's audit log before it runs, with the caller's session
/// (so the admin is the actor). If it cannot be recorded, the caller must not run the action.
pub async fn audit_first(
    app: &crate::AppState,
    session: &crate::auth::Session,
    action: &str,
    account_id: String,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    let req = pb::RecordAuditRequest { action: action.to_owned(), account_id, detail_json: detail.to_string() };
    app.identity().record_audit(session.request(req)).await.map_err(ApiError::from)?;
    Ok(())
}

/// An optional wire string: empty means absent.
pub fn non_empty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

pub fn time(t: Option<sb_proto::prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

pub fn role_name(r: i32) -> &'static str {
    match pb::Role::try_from(r) {
        Ok(pb::Role::Customer) => "customer",
        Ok(pb::Role::Agent) => "agent",
        Ok(pb::Role::Admin) => "admin",
        // identity never sends these; shown as such rather than guessed.
        Ok(pb::Role::Unspecified) | Err(_) => "unknown",
    }
}

impl From<pb::User> for UserOut {
    fn from(u: pb::User) -> Self {
        Self { id: u.id, account_id: u.account_id, email: u.email, name: u.name, role: role_name(u.role), created_at: time(u.created_at) }
    }
}

impl From<pb::Account> for AccountOut {
    fn from(a: pb::Account) -> Self {
        Self { id: a.id, name: a.name, created_at: time(a.created_at) }
    }
}

/// How long a view waits for a service it only adds to (billing's access, crm-sync's status)
/// before answering without it.
pub const SIDE_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A call whose answer a view can do without, bounded by [`SIDE_CALL_TIMEOUT`].
pub async fn bounded<T>(call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> anyhow::Result<T> {
    Ok(tokio::time::timeout(SIDE_CALL_TIMEOUT, call).await??.into_inner())
}

/// A path id must be a UUID; anything else is a clear 400, not a lookup.
pub fn path_id(kind: &str, raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw).map(|u| u.to_string()).map_err(|_| ApiError::bad_request("invalid_id", format!("{kind} id must be a UUID")))
}
