//! The OpenAPI document (`/openapi.json`) and a docs page (`/docs`) that renders it.

use axum::{
    Json, Router,
    http::{HeaderValue, header},
    response::{Html, IntoResponse},
    routing::get,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{
    AppState,
    error::Problem,
    routes::{AccountOut, UserOut, admin, billing, crm, portal, webhook},
};

struct SessionAuth;

impl Modify for SessionAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("session", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard portal API", description = "Errors are application/problem+json with a stable `code`. Authenticate with `Authorization: Bearer <token>` from /v1/login or /v1/signup (or the HttpOnly `sb_session` cookie)."),
    paths(
        status, portal::sign_up, portal::log_in, portal::log_out, portal::get_me, portal::update_me, portal::get_account, portal::get_user,
        admin::list_customers, admin::get_customer, admin::revoke_sessions, admin::impersonate, admin::list_audit, admin::list_mailbox,
        webhook::receive_stripe_webhook,
        billing::get_own_billing, billing::get_account_billing, billing::create_checkout, billing::create_portal,
        billing::local_checkout_page, billing::confirm_local_checkout, billing::local_portal_page, billing::cancel_local_subscription,
        billing::local_done, billing::local_cancelled,
        crm::list_contact_book,
    ),
    components(schemas(Problem, UserOut, AccountOut, webhook::WebhookAckOut)),
    modifiers(&SessionAuth),
    tags((name = "portal", description = "customers' own records"), (name = "admin", description = "staff: agents and admins"),
         (name = "stripe", description = "Stripe webhooks: authenticated by their Stripe-Signature, not a session"),
         (name = "billing", description = "access, checkout and the customer portal; the /billing/local pages stand in for Stripe's when no Stripe key is configured"))
)]
pub struct ApiDoc;

/// The document, with the `/openapi.json` and `/docs` routes themselves listed too.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Switchboard API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js"></script>
<noscript>The machine-readable description is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body></html>"#;

async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

async fn docs() -> impl IntoResponse {
    let mut resp = Html(DOCS_PAGE).into_response();
    // The docs page loads its renderer from the CDN; every other route keeps the strict policy.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src https://cdn.redoc.ly; style-src 'unsafe-inline' https://fonts.googleapis.com; font-src https://fonts.gstatic.com; img-src data: https:; connect-src 'self'; worker-src blob:"),
    );
    resp
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StatusOut {
    pub service: &'static str,
    pub version: &'static str,
    pub status: &'static str,
}

/// The gateway's own status, answered without touching any other service or database (the
/// baseline the `/v1/me` benchmark is compared with).
#[utoipa::path(get, path = "/v1/status", tag = "portal", responses((status = 200, body = StatusOut)))]
pub async fn status() -> Json<StatusOut> {
    Json(StatusOut { service: crate::SERVICE, version: env!("CARGO_PKG_VERSION"), status: "ok" })
}

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json)).route("/docs", get(docs)).route("/v1/status", get(status))
}
