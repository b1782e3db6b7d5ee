//! CRM sync for the portal: how each user's sync with the CRM stands (crm-sync's
//! `GetContactStatus`), shown in the admin customer view and, for customers, in `/v1/me`; and the
//! embedded contact book for staff. crm-sync re-checks role and tenant on every call.

use axum::{Json, Router, extract::State, routing::get};
use chrono::{DateTime, Utc};
use sb_proto::crm::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{bounded, time};
use crate::{
    AppState,
    auth::{Guarded, Session, StaffSession},
    domain::{Sync, SyncStatus},
    error::{ApiError, ApiQuery, Problem},
};

/// Shown instead of the sync status when crm-sync cannot be reached (details are logged).
pub const UNAVAILABLE: &str = "crm-sync is unavailable; CRM sync status unknown";

/// One user's CRM sync, for staff.
#[derive(Debug, Serialize, ToSchema)]
pub struct CrmContactOut {
    #[schema(format = Uuid)]
    pub user_id: String,
    pub email: String,
    /// The contact's id in the CRM; empty until the first successful sync.
    pub crm_contact_id: String,
    /// The stage last written to the CRM (`lead`, `customer`, ... as configured); empty until
    /// the first successful sync.
    pub lifecycle_stage: String,
    /// `synced`; `pending` (waiting for the CRM: next attempt at `next_attempt_at`); `failed`
    /// (gave up: the event is in crm-sync's DLQ, replayable by an operator).
    pub status: &'static str,
    /// Why the last attempt failed (empty when synced).
    pub last_error: String,
    /// Attempts that failed since the last successful sync.
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub synced_at: Option<DateTime<Utc>>,
    /// `hubspot` or `contact_book`; empty while crm-sync has not seen the user yet.
    pub crm: String,
    /// The same for people, e.g. "CRM sync pending (next attempt 12:03:10Z: HubSpot 503 ...)".
    pub message: String,
}

/// The caller's own CRM sync, for customers (`/v1/me`): no CRM internals.
#[derive(Debug, Serialize, ToSchema)]
pub struct CrmSyncOut {
    /// `synced`, `pending` or `failed`.
    pub status: &'static str,
    /// What it means for the user, e.g. "CRM sync pending: next attempt at 12:03:10Z".
    pub message: String,
}

/// A contact of the embedded contact book (the CRM when no HubSpot token is configured).
#[derive(Debug, Serialize, ToSchema)]
pub struct BookContactOut {
    pub id: String,
    pub email: String,
    pub name: String,
    pub account_id: String,
    pub account_name: String,
    pub plan: String,
    pub stripe_customer_id: String,
    /// billing's access status when last synced (`none`, `active`, ...).
    pub access_status: String,
    pub lifecycle_stage: String,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ContactBookQuery {
    /// Substring of an email, name or account name (case-insensitive); empty = all, newest first.
    #[serde(default)]
    pub q: String,
    /// At most this many (default 50, max 500).
    #[serde(default)]
    pub limit: u32,
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/contact-book", get(list_contact_book))
}

/// crm-sync's sync state on the wire; `None` for a value this gateway does not know.
fn sync_status(s: i32) -> Option<SyncStatus> {
    match pb::SyncStatus::try_from(s).ok()? {
        pb::SyncStatus::Synced => Some(SyncStatus::Synced),
        pb::SyncStatus::Pending => Some(SyncStatus::Pending),
        pb::SyncStatus::Failed => Some(SyncStatus::Failed),
        pb::SyncStatus::Unspecified => None,
    }
}

fn sync_of(c: &pb::ContactStatus) -> Sync {
    Sync {
        // A state this gateway cannot read is shown as still pending, never as synced.
        status: sync_status(c.status).unwrap_or(SyncStatus::Pending),
        crm: c.crm.clone(),
        crm_contact_id: c.crm_contact_id.clone(),
        lifecycle_stage: c.lifecycle_stage.clone(),
        last_error: c.last_error.clone(),
        attempts: c.attempts,
        next_attempt_at: time(c.next_attempt_at),
        synced_at: time(c.synced_at),
    }
}

impl From<pb::ContactStatus> for CrmContactOut {
    fn from(c: pb::ContactStatus) -> Self {
        let sync = sync_of(&c);
        Self {
            status: sync.status.as_str(),
            message: sync.staff_line(),
            next_attempt_at: sync.next_attempt_at,
            synced_at: sync.synced_at,
            user_id: c.user_id,
            email: c.email,
            crm_contact_id: c.crm_contact_id,
            lifecycle_stage: c.lifecycle_stage,
            last_error: c.last_error,
            attempts: c.attempts,
            crm: c.crm,
        }
    }
}

impl CrmContactOut {
    /// A customer crm-sync has no row for yet (its sign-up event is still on its way).
    pub fn not_seen(user_id: String, email: String) -> Self {
        Self {
            user_id,
            email,
            crm_contact_id: String::new(),
            lifecycle_stage: String::new(),
            status: SyncStatus::Pending.as_str(),
            last_error: String::new(),
            attempts: 0,
            next_attempt_at: None,
            synced_at: None,
            crm: String::new(),
            message: "CRM sync pending (crm-sync has not received this user's sign-up yet)".to_owned(),
        }
    }
}

/// What a customer sees about their own sync: the state, never the CRM's error text.
fn for_customer(c: Option<&pb::ContactStatus>) -> CrmSyncOut {
    match c.map(sync_of) {
        Some(sync) => CrmSyncOut { status: sync.status.as_str(), message: sync.customer_line() },
        None => CrmSyncOut { status: SyncStatus::Pending.as_str(), message: "CRM sync pending".to_owned() },
    }
}

/// Every user's sync status for an account, bounded so a slow crm-sync never holds up a view.
pub async fn account_status(app: &AppState, session: &Session, account_id: String) -> anyhow::Result<Vec<pb::ContactStatus>> {
    let req = app.on_behalf_of(session, pb::GetContactStatusRequest { account_id });
    Ok(bounded(app.crm().get_contact_status(req)).await?.contacts)
}

/// The caller's own sync status (their user row of their account).
pub async fn own_status(app: &AppState, session: &Session) -> anyhow::Result<CrmSyncOut> {
    let contacts = account_status(app, session, session.principal.account_id.to_string()).await?;
    let me = session.principal.user_id.to_string();
    Ok(for_customer(contacts.iter().find(|c| c.user_id == me)))
}

/// The embedded contact book, newest first (staff). Empty when HubSpot is the CRM.
#[utoipa::path(get, path = "/v1/admin/contact-book", tag = "admin", security(("session" = [])), params(ContactBookQuery),
    responses((status = 200, body = [BookContactOut]), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 503, body = Problem)))]
pub async fn list_contact_book(
    State(app): State<AppState>,
    Guarded(session, _): StaffSession,
    ApiQuery(q): ApiQuery<ContactBookQuery>,
) -> Result<Json<Vec<BookContactOut>>, ApiError> {
    let limit = i32::try_from(q.limit.min(500)).unwrap_or(500);
    let req = app.on_behalf_of(&session, pb::ListContactBookRequest { query: q.q, limit });
    let list = app.crm().list_contact_book(req).await?.into_inner();
    Ok(Json(
        list.contacts
            .into_iter()
            .map(|c| BookContactOut {
                id: c.id,
                email: c.email,
                name: c.name,
                account_id: c.account_id,
                account_name: c.account_name,
                plan: c.plan,
                stripe_customer_id: c.stripe_customer_id,
                access_status: c.access_status,
                lifecycle_stage: c.lifecycle_stage,
                created_at: time(c.created_at),
                updated_at: time(c.updated_at),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_from_crm_sync_reads_as_the_same_words_for_staff_and_customers() {
        let c = pb::ContactStatus {
            status: pb::SyncStatus::Failed as i32,
            last_error: "HubSpot 400: secret detail".into(),
            attempts: 3,
            ..Default::default()
        };
        let staff = CrmContactOut::from(c.clone());
        assert_eq!(staff.status, "failed");
        assert!(staff.message.contains("secret detail"), "staff see the reason: {}", staff.message);
        let customer = for_customer(Some(&c));
        assert!(customer.status == "failed" && !customer.message.contains("secret detail"), "{}", customer.message);
        let unknown = pb::ContactStatus { status: 99, ..Default::default() };
        assert_eq!(CrmContactOut::from(unknown).status, "pending", "an unreadable state is never shown as synced");
        assert_eq!(for_customer(None).status, "pending");
    }
}
