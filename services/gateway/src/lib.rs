//! gateway: the portal's REST API and the Stripe webhook (`routes::webhook`).
//!
//! Every route is authorized here on the server — role and tenant — and again by the service
//! behind it; the browser is never trusted. Errors are `application/problem+json`; requests get an
//! `x-request-id`; bodies are size-limited; CORS admits only configured origins; responses carry
//! security headers. The route-by-viewpoint expectations live in `authz-matrix.json` and are
//! checked by the test suite against the OpenAPI document.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod me_cache;
pub mod openapi;
pub mod routes;
pub mod service;
pub mod store;
pub mod web;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, Method, header},
};
use sb_proto::{
    ai::v1::assist_client::AssistClient, billing::v1::billing_client::BillingClient, crm::v1::crm_client::CrmClient,
    identity::v1::identity_client::IdentityClient, support::v1::support_client::SupportClient,
};
use sb_runtime::{
    Parts, ServiceConfig, ServiceDef,
    caller::{OnBehalfOf, ServiceContext},
    upstream::Upstream,
};
use secrecy::SecretString;
use sqlx::{PgPool, migrate::Migrator};
use tonic::{Request, transport::Channel};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    set_header::SetResponseHeaderLayer,
};

pub const SERVICE: &str = "gateway";

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Shared by every handler. axum hands each request its own clone of the state, so it is one
/// `Arc`: cloning five gRPC clients, a pool and the caches for every request cost about 5 % of
/// the gateway's CPU on a cached `/v1/me`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub cfg: config::GatewayConfig,
    identity: IdentityClient<Upstream>,
    billing: BillingClient<Upstream>,
    crm: CrmClient<Upstream>,
    support: SupportClient<Upstream>,
    ai: AssistClient<Upstream>,
    service_token: SecretString,
    /// The bus, for the admin operations routes (queue depths, parked messages).
    bus: sb_bus::config::BusConfig,
    /// `/v1/me` answers, a second at most per token.
    pub me_cache: me_cache::MeCache,
    /// Writes accepted Stripe webhooks to the gateway's own database (receipts and the outbox),
    /// committing those that arrive together at once.
    pub intake: service::Intake,
}

impl Shared {
    pub fn identity(&self) -> IdentityClient<Upstream> {
        self.identity.clone()
    }

    /// The bus under this deployment's prefix, for the operations routes.
    pub fn bus(&self) -> &sb_bus::config::BusConfig {
        &self.bus
    }

    pub fn billing(&self) -> BillingClient<Upstream> {
        self.billing.clone()
    }

    /// crm-sync (`switchboard.crm.v1.Crm`): each user's CRM sync status and the contact book.
    pub fn crm(&self) -> CrmClient<Upstream> {
        self.crm.clone()
    }

    /// support-router (`switchboard.support.v1.Support`): tickets, queues, SLA clocks.
    pub fn support(&self) -> SupportClient<Upstream> {
        self.support.clone()
    }

    /// ai-assist (`switchboard.ai.v1.Assist`): what the AI drafted for a ticket, and its cost.
    pub fn ai(&self) -> AssistClient<Upstream> {
        self.ai.clone()
    }

    /// A call to a service behind the gateway on behalf of a signed-in user: the service token
    /// plus the user's principal, which the service checks again itself.
    pub fn on_behalf_of<T>(&self, session: &auth::Session, msg: T) -> Request<T> {
        sb_runtime::caller::request(msg, &self.service_token, OnBehalfOf::User(&session.principal))
    }

    /// A call made as the gateway itself, forwarding the visitor's address and the request id.
    pub fn service_request<T>(&self, msg: T, ctx: &ServiceContext) -> Request<T> {
        sb_runtime::caller::request(msg, &self.service_token, OnBehalfOf::Service(ctx))
    }
}

/// The API router with its middleware: request ids, body limit, CORS, security headers.
pub fn api(
    cfg: config::GatewayConfig,
    service_token: SecretString,
    pool: PgPool,
    bus: sb_bus::config::BusConfig,
) -> anyhow::Result<Router> {
    let channel = |url: &str| -> anyhow::Result<Channel> {
        Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .connect_lazy())
    };
    let identity = IdentityClient::new(Upstream::new("identity", channel(&cfg.identity_url)?));
    let billing = BillingClient::new(Upstream::new("billing", channel(&cfg.billing_url)?));
    let crm = CrmClient::new(Upstream::new("crm-sync", channel(&cfg.crm_sync_url)?));
    let support = SupportClient::new(Upstream::new("support-router", channel(&cfg.support_url)?));
    let ai = AssistClient::new(Upstream::new("ai-assist", channel(&cfg.ai_url)?));
    let cors_origins = cfg.cors_origins.clone();
    let origins: Vec<HeaderValue> = cfg.cors_origins.iter().filter_map(|o| o.parse().ok()).collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key")])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600));
    let body_limit = cfg.body_limit;
    let me_cache = me_cache::MeCache::new(cfg.me_cache_ttl);
    let intake = service::Intake::new(pool.clone());
    let shared = Shared { cfg, identity, billing, crm, support, ai, service_token, bus, me_cache: me_cache.clone(), intake };
    let state = AppState(Arc::new(shared));
    let headers = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=63072000; includeSubDomains"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
    ];
    let mut router = Router::new()
        .merge(routes::portal::router())
        .merge(routes::admin::router())
        .merge(routes::ops::router())
        .merge(routes::ai::router())
        .merge(routes::billing::router())
        .merge(routes::crm::router())
        .merge(routes::support::router())
        .merge(routes::webhook::router())
        .merge(openapi::router())
        .merge(web::router())
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit));
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)));
    }
    let csrf = Arc::new(auth::SameSite::new(&cors_origins));
    Ok(router
        .layer(axum::middleware::from_fn(move |req, next| auth::fresh_me_after_changes(me_cache.clone(), req, next)))
        .layer(axum::middleware::from_fn(move |req, next| auth::refuse_cross_site(csrf.clone(), req, next)))
        .layer(cors)
        .layer(axum::middleware::from_fn(request_scope)))
}

/// Every request is served under a request id — the caller's `x-request-id` when it is a plain
/// token of at most 64 characters, a new UUID otherwise — answered in the response's
/// `x-request-id`, inside a span `request` with the id, method and route: every log line written
/// while serving it carries them, gRPC calls made for it forward the id to the service's own logs,
/// and a failed call names the service (`upstream`, see `sb_runtime::upstream`). A 5xx answer is
/// logged once more, as "request failed", with its status. The span starts a trace of its own: a
/// `traceparent` from the internet is not trusted (it could choose the sampling of our traces).
async fn request_scope(mut req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use sb_runtime::upstream::{REQUEST_ID_HEADER, is_valid_request_id};
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .filter(|v| v.to_str().is_ok_and(is_valid_request_id))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a header value"));
    req.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %req.method(),
        route = route.as_deref().unwrap_or("(no route)"),
        upstream = tracing::field::Empty,
    );
    let mut resp = sb_runtime::upstream::serving(id.clone(), span.clone(), next.run(req)).await;
    if resp.status().is_server_error() {
        span.in_scope(|| tracing::warn!(status = resp.status().as_u16(), "request failed"));
    }
    resp.headers_mut().insert(REQUEST_ID_HEADER, id);
    resp
}

pub fn parts(config: &ServiceConfig, pool: &PgPool) -> anyhow::Result<Parts> {
    let cfg = config::GatewayConfig::load(config)?;
    if cfg.dev_webhook_secret {
        tracing::warn!(
            "the Stripe webhook secrets include the public local-development one (SWITCHBOARD_STRIPE_WEBHOOK_SECRET unset?): \
             live-mode events must verify with another secret; set the endpoint's real signing secret in any shared deployment"
        );
    }
    // The founder's alarms (k8s/monitoring/alerts.yml) read these from the start, at zero.
    metrics::counter!("stripe_webhook_failed_total").increment(0);
    metrics::counter!("stripe_webhook_accepted_total", "duplicate" => "false").increment(0);
    for reason in [
        "missing_header",
        "malformed_header",
        "no_v1_signature",
        "timestamp_out_of_tolerance",
        "signature_mismatch",
        "invalid_payload",
        "livemode_with_dev_secret",
        "body_too_large",
    ] {
        metrics::counter!("stripe_webhook_rejected_total", "reason" => reason).increment(0);
    }
    let mut parts = Parts::bare(config, pool);
    parts.http = api(cfg, config.service_token.clone(), pool.clone(), config.bus.clone())?;
    Ok(parts)
}

pub fn def() -> ServiceDef {
    ServiceDef { name: SERVICE, migrator: &MIGRATOR, parts }
}
