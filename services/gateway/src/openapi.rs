//! The OpenAPI document (`/openapi.json`); `web` serves the docs page (`/docs`) that renders it.

use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Content, Header, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Schema, Type,
        path::{Operation, ParameterIn},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{
    AppState,
    error::Problem,
    routes::{AccountOut, UserOut, admin, ai, billing, crm, ops, portal, support, webhook},
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
        ops::list_queues, ops::list_parked, ops::replay, ops::purge,
        webhook::receive_stripe_webhook,
        billing::list_plans, billing::get_own_billing, billing::get_account_billing, billing::export_account_billing, billing::refund_payment, billing::create_checkout, billing::create_portal,
        billing::local_checkout_page, billing::confirm_local_checkout, billing::local_portal_page, billing::cancel_local_subscription,
        billing::local_done, billing::local_cancelled,
        crm::list_contact_book,
        support::create_ticket, support::list_own_tickets, support::get_own_ticket, support::reply_own_ticket, support::close_own_ticket,
        support::contact, support::list_queues, support::list_tickets, support::get_ticket, support::answer_ticket, support::add_note,
        support::assign_ticket, support::reprioritise_ticket, support::resolve_ticket, support::reopen_ticket, support::approve_draft,
        support::reject_draft, ai::get_ticket_ai,
    ),
    components(schemas(Problem, UserOut, AccountOut, webhook::WebhookAckOut, sb_types::TicketStatus, sb_types::TicketQueue, sb_types::TicketPriority)),
    modifiers(&SessionAuth),
    tags((name = "portal", description = "customers' own records"), (name = "admin", description = "staff: agents and admins"),
         (name = "stripe", description = "Stripe webhooks: authenticated by their Stripe-Signature, not a session"),
         (name = "billing", description = "access, checkout and the customer portal; the /billing/local pages stand in for Stripe's when no Stripe key is configured"),
         (name = "support", description = "customers' tickets and the public contact form"))
)]
pub struct ApiDoc;

/// The document as the gateway serves it: every operation's error answers are
/// `application/problem+json`, and the answers every route of a kind gives (401 without a session,
/// 400 for a path id that is not a UUID or a query string that does not fit, 413/415/400/422 for
/// request bodies, 503 with `Retry-After` when a service behind is down) are listed where they apply.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    served(&mut doc);
    constrain(&mut doc);
    doc
}

/// The rules identity applies to sign-up and profile fields, from the one place they are defined,
/// so what the document promises is what is checked.
/// (schema, field, pattern, minLength, maxLength)
type Rule = (&'static str, &'static str, Option<&'static str>, Option<usize>, Option<usize>);

fn constrain(doc: &mut utoipa::openapi::OpenApi) {
    let rules: [Rule; 17] = [
        ("SignUpIn", "email", Some(sb_types::Email::PATTERN), None, Some(sb_types::Email::MAX_LEN)),
        ("SignUpIn", "password", None, Some(sb_types::PASSWORD_MIN_CHARS), Some(sb_types::PASSWORD_MAX_CHARS)),
        ("SignUpIn", "name", Some(sb_types::NAME_PATTERN), None, Some(sb_types::NAME_MAX_CHARS)),
        ("SignUpIn", "account_name", Some(sb_types::OPTIONAL_LINE_PATTERN), None, Some(sb_types::NAME_MAX_CHARS)),
        ("ProfileIn", "name", Some(sb_types::NAME_PATTERN), None, Some(sb_types::NAME_MAX_CHARS)),
        ("ImpersonateIn", "reason", Some(sb_types::NAME_PATTERN), None, Some(sb_types::NAME_MAX_CHARS)),
        ("LogInIn", "email", None, None, None),
        ("TicketIn", "subject", Some(sb_types::SUBJECT_PATTERN), None, Some(sb_types::SUBJECT_MAX_CHARS)),
        ("TicketIn", "body", Some(sb_types::BODY_PATTERN), None, Some(sb_types::BODY_MAX_CHARS)),
        ("ContactIn", "subject", Some(sb_types::SUBJECT_PATTERN), None, Some(sb_types::SUBJECT_MAX_CHARS)),
        ("ContactIn", "body", Some(sb_types::BODY_PATTERN), None, Some(sb_types::BODY_MAX_CHARS)),
        ("ContactIn", "email", Some(sb_types::Email::PATTERN), None, Some(sb_types::Email::MAX_LEN)),
        ("ContactIn", "name", Some(sb_types::OPTIONAL_LINE_PATTERN), None, Some(sb_types::NAME_MAX_CHARS)),
        ("MessageIn", "body", Some(sb_types::BODY_PATTERN), None, Some(sb_types::BODY_MAX_CHARS)),
        ("ApproveDraftIn", "body", Some(sb_types::BODY_PATTERN), None, Some(sb_types::BODY_MAX_CHARS)),
        ("PriorityIn", "reason", Some(sb_types::REASON_PATTERN), None, Some(sb_types::REASON_MAX_CHARS)),
        ("ReopenIn", "reason", Some(sb_types::REASON_PATTERN), None, Some(sb_types::REASON_MAX_CHARS)),
    ];
    let Some(components) = doc.components.as_mut() else { return };
    for (schema, field, pattern, min, max) in rules {
        let Some(RefOr::T(Schema::Object(obj))) = components.schemas.get_mut(schema) else { continue };
        let Some(RefOr::T(Schema::Object(prop))) = obj.properties.get_mut(field) else { continue };
        if let Some(p) = pattern {
            prop.pattern = Some(p.to_owned());
        }
        if min.is_some() {
            prop.min_length = min;
        }
        if max.is_some() {
            prop.max_length = max;
        }
    }
}

const PROBLEM_JSON: &str = "application/problem+json";

fn problem(description: &str, retry_after: bool) -> Response {
    let mut r =
        ResponseBuilder::new().description(description).content(PROBLEM_JSON, Content::new(Some(Ref::from_schema_name("Problem")))).build();
    if retry_after {
        let header = Header::new(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)));
        r.headers.insert("Retry-After".into(), header);
    }
    r
}

/// Adds `status` to the operation unless it documents that status already.
fn add(op: &mut Operation, status: &str, description: &str, retry_after: bool) {
    op.responses.responses.entry(status.to_owned()).or_insert_with(|| RefOr::T(problem(description, retry_after)));
}

fn served(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        // Stripe's webhook answers with empty bodies by design (see its route).
        let problem_answers = path != webhook::PATH;
        for op in [&mut item.get, &mut item.post, &mut item.patch, &mut item.put, &mut item.delete].into_iter().flatten() {
            for resp in op.responses.responses.iter_mut().filter(|(code, _)| code.as_str() >= "400").map(|(_, r)| r) {
                if let RefOr::T(r) = resp
                    && let Some(content) = r.content.shift_remove("application/json")
                {
                    r.content.insert(PROBLEM_JSON.to_owned(), content);
                }
            }
            if !problem_answers {
                // The signature header's shape, so generated requests look like Stripe's.
                for p in op.parameters.iter_mut().flatten().filter(|p| p.name == "Stripe-Signature") {
                    if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
                        o.pattern = Some(webhook::SIGNATURE_PATTERN.to_owned());
                    }
                }
                continue;
            }
            let params = op.parameters.as_deref().unwrap_or_default();
            let (in_path, in_query) =
                (params.iter().any(|p| p.parameter_in == ParameterIn::Path), params.iter().any(|p| p.parameter_in == ParameterIn::Query));
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add(op, "401", "no valid session", false);
            }
            if in_path {
                add(op, "400", "a path id that is not a UUID", false);
            }
            if in_query {
                add(op, "400", "a query string that does not fit its parameters", false);
            }
            if op.request_body.as_ref().is_some_and(|b| b.content.contains_key("application/json")) {
                add(op, "400", "malformed JSON", false);
                add(op, "413", "request body larger than GATEWAY_BODY_LIMIT_BYTES", false);
                add(op, "415", "a body without `Content-Type: application/json`", false);
                add(op, "422", "JSON of the wrong shape", false);
            }
            if path.as_str() != "/v1/status" {
                add(op, "503", "a service behind the gateway is unavailable; retry after the time given", true);
            }
        }
    }
}

/// The document, with the plan names billing sells today as the values a checkout may name (left
/// open, and said so, when billing cannot be asked).
async fn openapi_json(State(app): State<AppState>) -> impl IntoResponse {
    let mut doc = document();
    let plans = billing::plan_names(&app).await;
    if let Some(RefOr::T(Schema::Object(checkout))) = doc.components.as_mut().and_then(|c| c.schemas.get_mut("CheckoutIn"))
        && let Some(RefOr::T(Schema::Object(plan))) = checkout.properties.get_mut("plan")
    {
        match plans {
            Ok(names) => plan.enum_values = Some(std::iter::once(String::new()).chain(names).map(serde_json::Value::String).collect()),
            Err(e) => tracing::warn!(error = %e, "billing unavailable: /openapi.json lists no plan names"),
        }
    }
    Json(doc)
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
    Router::new().route("/openapi.json", get(openapi_json)).route("/v1/status", get(status))
}
