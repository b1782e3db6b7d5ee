//! Billing for the portal: the caller's access and billing records, starting a checkout or a
//! customer portal session, and — with no Stripe key configured — the local pages that stand in
//! for Stripe's hosted checkout and portal. billing re-checks role and tenant on every call.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use sb_proto::billing::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{audit_first, bounded, path_id, time};
use crate::{
    AppState,
    auth::{Origin, Session},
    domain::{AccessStatus, access_message, escape, is_checkout_session_id, money},
    error::{ApiError, ApiJson, Problem},
};

/// An account's portal access.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessOut {
    /// `none`, `pending`, `active`, `past_due` or `revoked`.
    pub status: &'static str,
    /// What the status means for the user, e.g. "Pending provisioning: payment not confirmed yet".
    pub message: String,
    pub plan: String,
    pub entitlements: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub reason: String,
    /// The Stripe event behind the current status.
    pub cause_event_id: String,
    pub cause_event_type: String,
    /// While past_due: access ends at this time unless a payment succeeds.
    pub grace_until: Option<DateTime<Utc>>,
    pub stripe_customer_id: String,
}

/// billing's status on the wire; `None` for a value this gateway does not know.
pub fn access_status(s: i32) -> Option<AccessStatus> {
    match pb::AccessStatus::try_from(s).ok()? {
        pb::AccessStatus::None => Some(AccessStatus::None),
        pb::AccessStatus::Pending => Some(AccessStatus::Pending),
        pb::AccessStatus::Active => Some(AccessStatus::Active),
        pb::AccessStatus::PastDue => Some(AccessStatus::PastDue),
        pb::AccessStatus::Revoked => Some(AccessStatus::Revoked),
        pb::AccessStatus::Unspecified => None,
    }
}

/// billing's status as served (`unknown` only if billing sent something this gateway cannot read).
pub fn status_name(s: i32) -> &'static str {
    access_status(s).map_or("unknown", AccessStatus::as_str)
}

impl TryFrom<pb::Access> for AccessOut {
    type Error = anyhow::Error;
    fn try_from(a: pb::Access) -> anyhow::Result<Self> {
        let status = access_status(a.status).ok_or_else(|| anyhow::anyhow!("billing sent access status {}", a.status))?;
        Ok(Self {
            status: status.as_str(),
            message: access_message(status, &a.plan, &a.reason),
            plan: a.plan,
            entitlements: a.entitlements,
            since: time(a.since),
            reason: a.reason,
            cause_event_id: a.cause_event_id,
            cause_event_type: a.cause_event_type,
            grace_until: time(a.grace_until),
            stripe_customer_id: a.stripe_customer_id,
        })
    }
}

/// Shown instead of access when billing cannot be reached (details are logged).
pub const UNAVAILABLE: &str = "billing is unavailable; access status unknown";

/// An account's access, bounded so a slow billing never holds up a view (`/v1/me`, the admin
/// customer view).
pub async fn access_of(app: &AppState, session: &Session, account_id: String) -> anyhow::Result<AccessOut> {
    let req = app.on_behalf_of(session, pb::GetAccessRequest { account_id });
    bounded(app.billing().get_access(req)).await?.try_into()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionOut {
    pub id: String,
    pub status: String,
    pub plan: String,
    pub price_id: String,
    pub current_period_end: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceOut {
    pub id: String,
    pub subscription_id: String,
    pub status: String,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub currency: String,
    pub created: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessChangeOut {
    pub from: &'static str,
    pub to: &'static str,
    pub plan: String,
    pub reason: String,
    pub cause_event_id: String,
    pub cause_event_type: String,
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BillingOut {
    pub access: Option<AccessOut>,
    pub subscriptions: Vec<SubscriptionOut>,
    pub invoices: Vec<InvoiceOut>,
    /// Access changes, newest first, each with the Stripe event that caused it.
    pub history: Vec<AccessChangeOut>,
    /// Refunds admins issued, newest first (reason and requester are shown to staff only).
    pub refunds: Vec<RefundOut>,
}

/// A refund an admin asked billing to issue.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundOut {
    /// Billing's id for the refund; also the idempotency key Stripe got.
    #[schema(format = Uuid)]
    pub id: String,
    pub invoice_id: String,
    /// Minor units (cents).
    pub amount: i64,
    pub currency: String,
    /// `requested` (Stripe has not answered yet; asking again with the same key is safe),
    /// `pending`, `requires_action`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    /// Staff only (empty for customers).
    pub reason: String,
    /// The admin who issued it (staff only).
    pub requested_by: String,
    /// Stripe's refund id (`re_...`), once known.
    pub stripe_refund_id: String,
    pub charge_id: String,
    /// Why Stripe refused (status `failed`).
    pub failure: String,
    pub created: Option<DateTime<Utc>>,
}

impl From<pb::Refund> for RefundOut {
    fn from(r: pb::Refund) -> Self {
        Self {
            id: r.id,
            invoice_id: r.invoice_id,
            amount: r.amount,
            currency: r.currency,
            status: r.status,
            reason: r.reason,
            requested_by: r.requested_by,
            stripe_refund_id: r.stripe_refund_id,
            charge_id: r.charge_id,
            failure: r.failure,
            created: time(r.created),
        }
    }
}

/// An admin's refund of a paid invoice's payment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundIn {
    /// The paid invoice (`in_...`) from the account's billing.
    #[schema(pattern = "^in_")]
    pub invoice_id: String,
    /// Minor units (cents); left out (or 0): what is left of the payment.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub amount: i64,
    /// Why (required, at most 500 characters): kept in the audit log, with the refund and in
    /// Stripe's metadata.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

impl From<pb::BillingView> for BillingOut {
    fn from(v: pb::BillingView) -> Self {
        Self {
            access: v.access.and_then(|a| AccessOut::try_from(a).ok()),
            subscriptions: v
                .subscriptions
                .into_iter()
                .map(|s| SubscriptionOut {
                    id: s.id,
                    status: s.status,
                    plan: s.plan,
                    price_id: s.price_id,
                    current_period_end: time(s.current_period_end),
                })
                .collect(),
            invoices: v
                .invoices
                .into_iter()
                .map(|i| InvoiceOut {
                    id: i.id,
                    subscription_id: i.subscription_id,
                    status: i.status,
                    amount_due: i.amount_due,
                    amount_paid: i.amount_paid,
                    currency: i.currency,
                    created: time(i.created),
                })
                .collect(),
            history: v
                .history
                .into_iter()
                .map(|h| AccessChangeOut {
                    from: status_name(h.from),
                    to: status_name(h.to),
                    plan: h.plan,
                    reason: h.reason,
                    cause_event_id: h.cause_event_id,
                    cause_event_type: h.cause_event_type,
                    at: time(h.at),
                })
                .collect(),
            refunds: v.refunds.into_iter().map(RefundOut::from).collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CheckoutIn {
    /// A plan name from `GET /v1/billing/plans`; the default plan when omitted or empty.
    #[serde(default)]
    pub plan: String,
    /// Must be the caller's own account when given.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub account_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutOut {
    pub id: String,
    /// Send the browser here: Stripe's hosted checkout, or the local checkout page.
    pub url: String,
    pub plan: String,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PortalIn {
    /// Must be the caller's own account when given.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub account_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PortalOut {
    pub url: String,
}

/// A plan customers can buy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanOut {
    pub name: String,
    /// Monthly price in minor units (cents).
    pub amount: i64,
    pub currency: String,
    /// What the plan unlocks.
    pub entitlements: Vec<String>,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/billing/plans", get(list_plans))
        .route("/v1/billing", get(get_own_billing))
        .route("/v1/accounts/{account_id}/billing", get(get_account_billing))
        .route("/v1/admin/accounts/{account_id}/billing/export", get(export_account_billing))
        .route("/v1/admin/accounts/{account_id}/billing/refunds", post(refund_payment))
        .route("/v1/billing/checkout", post(create_checkout))
        .route("/v1/billing/portal", post(create_portal))
        .route("/billing/local/checkout/{session_id}", get(local_checkout_page).post(confirm_local_checkout))
        .route("/billing/local/portal", get(local_portal_page))
        .route("/billing/local/portal/cancel", post(cancel_local_subscription))
        .route("/billing/local/done", get(local_done))
        .route("/billing/local/cancelled", get(local_cancelled))
}

/// A JSON body that may be left out entirely (every field has a default).
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    // No body, or `null`, is the same as `{}`.
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "Invalid input", Some(format!("request body: {e}")))
    })
}

/// The account a request targets: the caller's own unless another (allowed for staff reads) is named.
fn target_account(session: &Session, requested: Option<&str>) -> Result<String, ApiError> {
    match requested.filter(|a| !a.is_empty()) {
        Some(raw) => path_id("account", raw),
        None => Ok(session.principal.account_id.to_string()),
    }
}

/// The plans customers can buy, the default first (the one a checkout that names none gets).
#[utoipa::path(get, path = "/v1/billing/plans", tag = "billing", responses((status = 200, body = [PlanOut])))]
pub async fn list_plans(State(app): State<AppState>, Origin(origin): Origin) -> Result<Json<Vec<PlanOut>>, ApiError> {
    let plans = app.billing().list_plans(app.service_request(pb::ListPlansRequest {}, &origin)).await.map_err(ApiError::from)?;
    Ok(Json(
        plans
            .into_inner()
            .plans
            .into_iter()
            .map(|p| PlanOut { name: p.name, amount: p.amount, currency: p.currency, entitlements: p.entitlements })
            .collect(),
    ))
}

/// The plan names a checkout may name (`""` for the default), for the served document.
pub async fn plan_names(app: &AppState) -> anyhow::Result<Vec<String>> {
    let req = app.service_request(pb::ListPlansRequest {}, &Default::default());
    Ok(bounded(app.billing().list_plans(req)).await?.plans.into_iter().map(|p| p.name).collect())
}

/// The caller's access, billing records and access history.
#[utoipa::path(get, path = "/v1/billing", tag = "billing", security(("session" = [])),
    responses((status = 200, body = BillingOut), (status = 401, body = Problem)))]
pub async fn get_own_billing(State(app): State<AppState>, session: Session) -> Result<Json<BillingOut>, ApiError> {
    let account_id = session.principal.account_id.to_string();
    let view = app.billing().get_billing(app.on_behalf_of(&session, pb::GetBillingRequest { account_id })).await?;
    Ok(Json(view.into_inner().into()))
}

/// An account's billing: the caller's own, or any for staff (others get 404).
#[utoipa::path(get, path = "/v1/accounts/{account_id}/billing", tag = "billing", security(("session" = [])),
    params(("account_id" = uuid::Uuid, Path, description = "account UUID")),
    responses((status = 200, body = BillingOut), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_account_billing(
    State(app): State<AppState>,
    session: Session,
    Path(account_id): Path<String>,
) -> Result<Json<BillingOut>, ApiError> {
    let account_id = path_id("account", &account_id)?;
    let view = app.billing().get_billing(app.on_behalf_of(&session, pb::GetBillingRequest { account_id })).await?;
    Ok(Json(view.into_inner().into()))
}

/// A spreadsheet cell as written: one that a spreadsheet would run as a formula (`=`, `+`, `-`,
/// `@`, tab, carriage return first) gets a leading `'`, so an exported Stripe or plan value can
/// never execute in the admin's spreadsheet.
fn cell(v: &str) -> String {
    match v.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{v}"),
        _ => v.to_owned(),
    }
}

/// The account's billing records as CSV, one line per invoice and per access change.
pub fn billing_csv(view: &BillingOut) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["record", "at", "id", "status", "plan", "amount_due", "amount_paid", "currency", "detail"])?;
    let at = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    for i in &view.invoices {
        w.write_record([
            "invoice".to_owned(),
            at(i.created),
            cell(&i.id),
            cell(&i.status),
            String::new(),
            i.amount_due.to_string(),
            i.amount_paid.to_string(),
            cell(&i.currency),
            cell(&format!("subscription {}", i.subscription_id)),
        ])?;
    }
    for h in &view.history {
        w.write_record([
            "access_change".to_owned(),
            at(h.at),
            cell(&h.cause_event_id),
            format!("{} -> {}", h.from, h.to),
            cell(&h.plan),
            String::new(),
            String::new(),
            String::new(),
            cell(&format!("{} ({})", h.reason, h.cause_event_type)),
        ])?;
    }
    for r in &view.refunds {
        w.write_record([
            "refund".to_owned(),
            at(r.created),
            cell(&r.id),
            cell(&r.status),
            String::new(),
            String::new(),
            (-r.amount).to_string(),
            cell(&r.currency),
            cell(&format!("invoice {} ({}): {}", r.invoice_id, r.stripe_refund_id, r.reason)),
        ])?;
    }
    Ok(w.into_inner()?)
}

/// An account's billing history as CSV (admin; audited): its latest 50 invoices and 50 access
/// changes, each access change with the Stripe event behind it.
#[utoipa::path(get, path = "/v1/admin/accounts/{account_id}/billing/export", tag = "admin", security(("session" = [])),
    params(("account_id" = uuid::Uuid, Path, description = "account UUID")),
    responses((status = 200, description = "CSV with a header line", content_type = "text/csv", body = String),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn export_account_billing(
    State(app): State<AppState>,
    crate::auth::Guarded(session, _): crate::auth::AdminSession,
    Path(account_id): Path<String>,
) -> Result<Response, ApiError> {
    let account_id = path_id("account", &account_id)?;
    let view: BillingOut = app
        .billing()
        .get_billing(app.on_behalf_of(&session, pb::GetBillingRequest { account_id: account_id.clone() }))
        .await?
        .into_inner()
        .into();
    let detail = serde_json::json!({"invoices": view.invoices.len(), "access_changes": view.history.len(), "refunds": view.refunds.len()});
    audit_first(&app, &session, "billing.export", account_id.clone(), detail).await?;
    let body = billing_csv(&view).map_err(ApiError::internal)?;
    let disposition = format!("attachment; filename=\"billing-{account_id}.csv\"");
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// The `Idempotency-Key` a refund request carries: the same key again answers the first refund.
/// Without one every request is a new refund (what is left to refund still bounds it).
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(uuid::Uuid::new_v4().to_string()),
        Some(v) => v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic()))
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "Invalid input",
                    Some("Idempotency-Key: 1 to 255 printable ASCII characters".into()),
                )
            }),
    }
}

/// Refunds a paid invoice's payment, in full or in part (admin; audited; never while acting as a
/// customer): billing records the refund, then asks Stripe with an idempotency key (or, with no
/// Stripe key, refunds through the local checkout). Send an `Idempotency-Key` header: the same
/// key again (a double click, a retry after a timeout) answers the first refund and never refunds
/// twice. Access follows Stripe's `charge.refunded` per billing's refund policy.
#[utoipa::path(post, path = "/v1/admin/accounts/{account_id}/billing/refunds", tag = "admin", security(("session" = [])),
    params(("account_id" = uuid::Uuid, Path, description = "account UUID"),
           ("Idempotency-Key" = Option<String>, Header, description = "one per intended refund (1-255 characters)")),
    request_body = RefundIn,
    responses((status = 201, description = "recorded; `status` says whether Stripe made it", body = RefundOut),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, description = "the account has no such invoice", body = Problem),
              (status = 409, description = "nothing left to refund", body = Problem), (status = 415, body = Problem),
              (status = 422, body = Problem), (status = 503, description = "Stripe or billing unavailable; retry with the same key", body = Problem)))]
pub async fn refund_payment(
    State(app): State<AppState>,
    crate::auth::Guarded(session, _): crate::auth::AdminSession,
    Path(account_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefundIn>,
) -> Result<Response, ApiError> {
    let account_id = path_id("account", &account_id)?;
    let idempotency_key = idempotency_key(&headers)?;
    // What can be checked here is, before anything is audited (billing checks again).
    let invalid =
        |detail: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "Invalid input", Some(detail.to_owned()));
    if !body.invoice_id.starts_with("in_") {
        return Err(invalid("invoice_id: must be a Stripe invoice id (in_...)"));
    }
    if body.reason.trim().is_empty() || body.reason.chars().count() > 500 {
        return Err(invalid("reason: say why the payment is refunded (1 to 500 characters)"));
    }
    if body.amount < 0 {
        return Err(invalid("amount: a positive number of cents, or 0 (or left out) for what is left"));
    }
    let detail = serde_json::json!({
        "invoice_id": body.invoice_id, "amount": body.amount, "reason": body.reason, "idempotency_key": idempotency_key,
    });
    audit_first(&app, &session, "billing.refund", account_id.clone(), detail).await?;
    let req =
        pb::RefundPaymentRequest { account_id, invoice_id: body.invoice_id, amount: body.amount, reason: body.reason, idempotency_key };
    let refund = app.billing().refund_payment(app.on_behalf_of(&session, req)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(RefundOut::from(refund))).into_response())
}

/// Starts a checkout for the caller's own account (customers only; never while impersonating).
/// Access shows `pending` until Stripe confirms the payment.
#[utoipa::path(post, path = "/v1/billing/checkout", tag = "billing", security(("session" = [])), request_body(content = Option<CheckoutIn>, description = "optional: the default plan for the caller's own account when left out"),
    responses((status = 201, body = CheckoutOut), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, description = "already subscribed", body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn create_checkout(State(app): State<AppState>, session: Session, body: Bytes) -> Result<Response, ApiError> {
    let body: CheckoutIn = optional_json(&body)?;
    let account_id = target_account(&session, body.account_id.as_deref())?;
    let req = pb::CreateCheckoutSessionRequest { account_id, plan: body.plan, customer_email: String::new() };
    let s = app.billing().create_checkout_session(app.on_behalf_of(&session, req)).await?.into_inner();
    let out = CheckoutOut { id: s.id, url: s.url, plan: s.plan, expires_at: time(s.expires_at) };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// A customer portal session (manage payment method, cancel) for the caller's own account.
#[utoipa::path(post, path = "/v1/billing/portal", tag = "billing", security(("session" = [])), request_body(content = Option<PortalIn>, description = "optional: the caller's own account when left out"),
    responses((status = 200, body = PortalOut), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, description = "no billing account yet", body = Problem)))]
pub async fn create_portal(State(app): State<AppState>, session: Session, body: Bytes) -> Result<Json<PortalOut>, ApiError> {
    let body: PortalIn = optional_json(&body)?;
    let account_id = target_account(&session, body.account_id.as_deref())?;
    let p = app.billing().create_portal_session(app.on_behalf_of(&session, pb::CreatePortalSessionRequest { account_id })).await?;
    Ok(Json(PortalOut { url: p.into_inner().url }))
}

/// The local pages: plain HTML with the portal's stylesheet and no script, under the portal's
/// Content-Security-Policy (nothing inline).
fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title} · Switchboard</title>\
         <link rel=\"stylesheet\" href=\"{css}\"></head><body><header class=\"top\"><a class=\"brand\" href=\"/app/\">Switchboard</a></header>\
         <main>{body}</main></body></html>",
        css = crate::web::stylesheet(),
    );
    let mut resp = Html(html).into_response();
    resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(crate::web::PAGE_CSP));
    resp
}

fn session_path(raw: &str) -> Result<String, ApiError> {
    if is_checkout_session_id(raw) { Ok(raw.to_owned()) } else { Err(ApiError::not_found("checkout session")) }
}

/// The local checkout page (embedded default, no Stripe key): what Stripe's hosted checkout
/// would show, with one button that pays.
#[utoipa::path(get, path = "/billing/local/checkout/{session_id}", tag = "billing", security(("session" = [])),
    params(("session_id" = String, Path, description = "local checkout session id (cs_test_local_...)")),
    responses((status = 200, description = "HTML page", content_type = "text/html"), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 409, description = "Stripe is configured", body = Problem)))]
pub async fn local_checkout_page(
    State(app): State<AppState>,
    session: Session,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    let session_id = session_path(&session_id)?;
    let c = app.billing().get_local_checkout(app.on_behalf_of(&session, pb::GetLocalCheckoutRequest { session_id })).await?.into_inner();
    let action = match c.status.as_str() {
        "open" => format!(
            "<form method=\"post\" action=\"/billing/local/checkout/{id}\"><button type=\"submit\">Pay {amount}</button></form>",
            id = escape(&c.id),
            amount = escape(&money(c.amount, &c.currency))
        ),
        "complete" => "<p>This checkout is paid.</p>".to_owned(),
        _ => "<p>This checkout session has expired. Start a new one from the portal.</p>".to_owned(),
    };
    let body = format!(
        "<div class=\"card\"><h1>Switchboard checkout</h1><p>Plan <strong>{plan}</strong>: {amount} per month.</p>{action}\
         <p class=\"muted small\">Local checkout: no Stripe key is configured, so no card is charged. Paying sends the same signed \
         webhooks Stripe would send to this gateway.</p><p><a href=\"{cancel}\">Cancel</a></p></div>",
        plan = escape(&c.plan),
        amount = escape(&money(c.amount, &c.currency)),
        cancel = escape(&c.cancel_url),
    );
    Ok(page("Checkout", &body))
}

/// Pays a local checkout session; billing then sends the signed webhooks to `/webhooks/stripe`.
#[utoipa::path(post, path = "/billing/local/checkout/{session_id}", tag = "billing", security(("session" = [])),
    params(("session_id" = String, Path, description = "local checkout session id (cs_test_local_...)")),
    responses((status = 303, description = "paid; redirects to the success page"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn confirm_local_checkout(
    State(app): State<AppState>,
    session: Session,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    let session_id = session_path(&session_id)?;
    let req = pb::CompleteLocalCheckoutRequest { session_id };
    let c = app.billing().complete_local_checkout(app.on_behalf_of(&session, req)).await?.into_inner();
    Ok(Redirect::to(&c.success_url).into_response())
}

/// The local customer portal (embedded default): the subscription and a cancel button.
#[utoipa::path(get, path = "/billing/local/portal", tag = "billing", security(("session" = [])),
    responses((status = 200, description = "HTML page", content_type = "text/html"), (status = 401, body = Problem)))]
pub async fn local_portal_page(State(app): State<AppState>, session: Session) -> Result<Response, ApiError> {
    let account_id = session.principal.account_id.to_string();
    let view: BillingOut =
        app.billing().get_billing(app.on_behalf_of(&session, pb::GetBillingRequest { account_id })).await?.into_inner().into();
    let live = view.subscriptions.iter().find(|s| s.status != "canceled" && s.status != "incomplete_expired");
    let status = view.access.as_ref().map_or_else(String::new, |a| a.message.clone());
    let action = match live {
        Some(s) => format!(
            "<p>Subscription {id}: {status} ({plan}).</p><form method=\"post\" action=\"/billing/local/portal/cancel\">\
             <button type=\"submit\">Cancel subscription</button></form>",
            id = escape(&s.id),
            status = escape(&s.status),
            plan = escape(&s.plan)
        ),
        None => "<p>No active subscription.</p>".to_owned(),
    };
    let body = format!("<div class=\"card\"><h1>Billing portal</h1><p>{}</p>{action}</div>", escape(&status));
    Ok(page("Billing portal", &body))
}

/// Cancels the caller's local subscription (billing sends `customer.subscription.deleted`).
#[utoipa::path(post, path = "/billing/local/portal/cancel", tag = "billing", security(("session" = [])),
    responses((status = 303, description = "cancelled; back to the portal page"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel_local_subscription(State(app): State<AppState>, session: Session) -> Result<Response, ApiError> {
    let account_id = session.principal.account_id.to_string();
    app.billing().cancel_local_subscription(app.on_behalf_of(&session, pb::CancelLocalSubscriptionRequest { account_id })).await?;
    Ok(Redirect::to("/billing/local/portal").into_response())
}

/// Where a paid checkout returns to.
#[utoipa::path(get, path = "/billing/local/done", tag = "billing",
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn local_done() -> Response {
    page(
        "Payment received",
        "<div class=\"card\"><h1>Payment received</h1><p>Your access is being provisioned and is usually active within a second. \
         <a href=\"/app/\">Back to your dashboard</a>.</p></div>",
    )
}

/// Where an abandoned checkout returns to.
#[utoipa::path(get, path = "/billing/local/cancelled", tag = "billing",
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn local_cancelled() -> Response {
    page(
        "Checkout cancelled",
        "<div class=\"card\"><h1>Checkout cancelled</h1><p>Nothing was charged.</p><p><a href=\"/app/\">Back to your dashboard</a></p></div>",
    )
}
