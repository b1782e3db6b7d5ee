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
    auth::Session,
    error::{ApiError, ApiQuery, Problem},
};

/// Shown instead of the sync status when crm-sync cannot be reached (details are logged).
pub const UNAVAILABLE: &str = "crm-sync is unavailable; CRM sync status unknown";

/// One user's CRM sync, for staff.
#[derive(Debug, Serialize, ToSchema)]
pub struct CrmContactOut {
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

pub fn status_name(s: i32) -> &'static str {
    match pb::SyncStatus::try_from(s) {
        Ok(pb::SyncStatus::Synced) => "synced",
        Ok(pb::SyncStatus::Pending) => "pending",
        Ok(pb::SyncStatus::Failed) => "failed",
        Ok(pb::SyncStatus::Unspecified) | Err(_) => "unknown",
    }
}

/// A time for a status line: the time of day when it is today (UTC), else date and time.
fn when(t: DateTime<Utc>) -> String {
    if t.date_naive() == Utc::now().date_naive() { t.format("%H:%M:%SZ").to_string() } else { t.format("%Y-%m-%d %H:%M:%SZ").to_string() }
}

fn crm_label(crm: &str) -> &str {
    match crm {
        "hubspot" => "HubSpot",
        "contact_book" => "the contact book",
        other => other,
    }
}

impl From<pb::ContactStatus> for CrmContactOut {
    fn from(c: pb::ContactStatus) -> Self {
        let status = status_name(c.status);
        let (next_attempt_at, synced_at) = (time(c.next_attempt_at), time(c.synced_at));
        let message = match status {
            "synced" => format!(
                "CRM synced: contact {} in {}, stage {}{}",
                c.crm_contact_id,
                crm_label(&c.crm),
                c.lifecycle_stage,
                synced_at.map(|t| format!(" (at {})", when(t))).unwrap_or_default()
            ),
            "failed" => format!(
                "CRM sync failed after {} attempt(s): {} (parked in crm-sync's DLQ; replay it once the cause is fixed)",
                c.attempts,
                if c.last_error.is_empty() { "no reason recorded" } else { &c.last_error }
            ),
            _ => match (next_attempt_at, c.last_error.is_empty()) {
                (Some(next), false) => format!("CRM sync pending (next attempt {}: {})", when(next), c.last_error),
                (Some(next), true) => format!("CRM sync pending (next attempt {})", when(next)),
                (None, false) => format!("CRM sync pending ({})", c.last_error),
                (None, true) => "CRM sync pending (first attempt not made yet)".to_owned(),
            },
        };
        Self {
            user_id: c.user_id,
            email: c.email,
            crm_contact_id: c.crm_contact_id,
            lifecycle_stage: c.lifecycle_stage,
            status,
            last_error: c.last_error,
            attempts: c.attempts,
            next_attempt_at,
            synced_at,
            crm: c.crm,
            message,
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
            status: "pending",
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
    let Some(c) = c else { return CrmSyncOut { status: "pending", message: "CRM sync pending".to_owned() } };
    let status = status_name(c.status);
    let message = match status {
        "synced" => "Synced with our CRM".to_owned(),
        "failed" => "CRM sync failed: waiting for our team to retry it".to_owned(),
        _ => match time(c.next_attempt_at) {
            Some(next) => format!("CRM sync pending: next attempt at {}", when(next)),
            None => "CRM sync pending".to_owned(),
        },
    };
    CrmSyncOut { status, message }
}

/// Every user's sync status for an account, bounded so a slow crm-sync never holds up a view.
pub async fn account_status(app: &AppState, session: &Session, account_id: String) -> anyhow::Result<Vec<pb::ContactStatus>> {
    let req = app.on_behalf_of(session, pb::GetContactStatusRequest { account_id }).map_err(|_| anyhow::anyhow!("no usable principal"))?;
    Ok(bounded(app.crm().get_contact_status(req)).await?.contacts)
}

/// The caller's own sync status (their user row of their account).
pub async fn own_status(app: &AppState, session: &Session) -> anyhow::Result<CrmSyncOut> {
    let contacts = account_status(app, session, session.principal.account_id.clone()).await?;
    Ok(for_customer(contacts.iter().find(|c| c.user_id == session.principal.user_id)))
}

/// The embedded contact book, newest first (staff). Empty when HubSpot is the CRM.
#[utoipa::path(get, path = "/v1/admin/contact-book", tag = "admin", security(("session" = [])), params(ContactBookQuery),
    responses((status = 200, body = [BookContactOut]), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 503, body = Problem)))]
pub async fn list_contact_book(
    State(app): State<AppState>,
    session: Session,
    ApiQuery(q): ApiQuery<ContactBookQuery>,
) -> Result<Json<Vec<BookContactOut>>, ApiError> {
    session.require_staff()?;
    let limit = i32::try_from(q.limit.min(500)).unwrap_or(500);
    let req = app.on_behalf_of(&session, pb::ListContactBookRequest { query: q.q, limit })?;
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

    fn status(s: pb::SyncStatus, error: &str, next: Option<i64>) -> pb::ContactStatus {
        pb::ContactStatus {
            user_id: "u1".into(),
            email: "ada@example.com".into(),
            crm_contact_id: if s == pb::SyncStatus::Synced { "501".into() } else { String::new() },
            lifecycle_stage: if s == pb::SyncStatus::Synced { "lead".into() } else { String::new() },
            status: s as i32,
            last_error: error.into(),
            attempts: if error.is_empty() { 0 } else { 2 },
            next_attempt_at: next.map(|t| sb_proto::timestamp(t, 0)),
            crm: "hubspot".into(),
            ..Default::default()
        }
    }

    #[test]
    fn staff_lines_say_what_happened_and_what_comes_next() {
        let next = Utc::now() + chrono::Duration::seconds(30);
        let pending = CrmContactOut::from(status(pb::SyncStatus::Pending, "HubSpot 503: down", Some(next.timestamp())));
        assert_eq!(pending.status, "pending");
        assert_eq!(pending.message, format!("CRM sync pending (next attempt {}: HubSpot 503: down)", when(next)));
        let failed = CrmContactOut::from(status(pb::SyncStatus::Failed, "HubSpot 400: INVALID_EMAIL", None));
        assert!(failed.message.starts_with("CRM sync failed after 2 attempt(s): HubSpot 400: INVALID_EMAIL"), "{}", failed.message);
        let synced = CrmContactOut::from(status(pb::SyncStatus::Synced, "", None));
        assert_eq!(synced.message, "CRM synced: contact 501 in HubSpot, stage lead");
        let later = DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default();
        assert_eq!(when(later), "2030-03-17 17:46:40Z");
        let now = Utc::now();
        assert_eq!(when(now), now.format("%H:%M:%SZ").to_string(), "today: the time of day only");
    }

    #[test]
    fn customers_never_see_the_crms_error_text() {
        let next = Utc::now() + chrono::Duration::seconds(30);
        let c = status(pb::SyncStatus::Pending, "HubSpot 503: upstream connect error", Some(next.timestamp()));
        let out = for_customer(Some(&c));
        assert_eq!((out.status, out.message), ("pending", format!("CRM sync pending: next attempt at {}", when(next))));
        let out = for_customer(Some(&status(pb::SyncStatus::Failed, "HubSpot 400: secret detail", None)));
        assert!(out.status == "failed" && !out.message.contains("secret detail"), "{}", out.message);
        assert_eq!(for_customer(None).status, "pending");
        assert_eq!(for_customer(Some(&status(pb::SyncStatus::Synced, "", None))).message, "Synced with our CRM");
    }
}
