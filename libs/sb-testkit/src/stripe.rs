//! A fake Stripe API for tests that speaks Stripe's wire format, so the real client (async-stripe,
//! pointed at [`FakeStripe::base_url`]) runs unchanged against it, with state a test sets and a
//! failure mode that can be switched while it runs.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sb_stripe::objects::{self, SubscriptionSpec};
//! use sb_testkit::stripe::FakeStripe;
//! let stripe = FakeStripe::start().await?;
//! // point the adapter at stripe.base_url() with any `sk_...` key ...
//! stripe.put_subscription(objects::subscription(&SubscriptionSpec { id: "sub_1", customer: "cus_1", status: "active", ..Default::default() }));
//! stripe.fail_next(1, 503); // the next request gets Stripe's 503 api_error
//! let _calls = stripe.requests_to("GET", "/v1/subscriptions/sub_1");
//! # Ok(()) }
//! ```
//!
//! Requests: `application/x-www-form-urlencoded` bodies and query strings with Stripe's nested keys
//! (`line_items[0][price]`, `metadata[account_id]`), recorded decoded as ordered pairs.
//! Authentication: `Authorization: Bearer sk_...` (or `rk_...`; one exact key after
//! [`FakeStripe::require_key`]), else 401. Responses are JSON in Stripe's shapes, built from Stripe's
//! own fixtures (`sb_stripe::objects`); errors are Stripe's `{"error": {"type", "code", "message",
//! "param"}}` with a 4xx/5xx status.
//!
//! Endpoints:
//! - `POST /v1/checkout/sessions` — an `open` session with a `url` on this server and `expires_at` in
//!   24 h; checks what Stripe checks (`mode`, line items for payment/subscription mode, not both
//!   `customer` and `customer_email`, an existing `customer`). `GET /v1/checkout/sessions/{id}`.
//! - `POST /v1/billing_portal/sessions` — needs an existing `customer`.
//! - `GET /v1/subscriptions` — newest `created` first; `status` (`all`, one status, or by default
//!   everything not canceled), `customer`, `price`, `limit` (1–100, default 10), `starting_after`,
//!   `has_more`. `GET /v1/subscriptions/{id}`.
//! - `GET /v1/customers/{id}`.
//! - `GET /v1/invoice_payments` — `invoice` (required), `status`: the payments
//!   [`FakeStripe::put_invoice_payment`] registered.
//! - `POST /v1/refunds` — `payment_intent` or `charge` of a registered payment, `amount` (default:
//!   what is left), `reason`, `metadata`; refuses more than is left (`amount_too_large`) and a
//!   payment refunded in full (`charge_already_refunded`). With an `Idempotency-Key` Stripe's way:
//!   the same key and parameters replay the first answer (`Idempotent-Replayed: true`), the same
//!   key with other parameters is an `idempotency_error`.
//!
//! Unknown ids answer Stripe's `resource_missing` (404 on retrieval, 400 as a parameter); unknown
//! routes answer 404.
//!
//! A slow Stripe: [`FakeStripe::set_delay`] holds every answer back (decided, and recorded, when the
//! request arrives), so a test can watch what billing does while Stripe takes its time.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use sb_stripe::objects::{self, CheckoutSpec};
use serde_json::{Map, Value, json};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query, e.g. `/v1/checkout/sessions`.
    pub path: String,
    /// The decoded query string, in order.
    pub query: Vec<(String, String)>,
    /// The decoded form body, in order (empty for requests without one).
    pub form: Vec<(String, String)>,
    /// The `Content-Type` the request declared.
    pub content_type: Option<String>,
    /// The `Stripe-Version` the client asked for.
    pub stripe_version: Option<String>,
    /// The `Idempotency-Key`, if the client sent one.
    pub idempotency_key: Option<String>,
    /// Whether it carried an accepted API key.
    pub authorized: bool,
    /// The status the fake answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

impl Recorded {
    /// The first value of `key` in the form body, else in the query.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.form.iter().chain(&self.query).find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every form/query key starting with `prefix` (e.g. `line_items[`), for "nothing else was sent" checks.
    pub fn params_under(&self, prefix: &str) -> Vec<(String, String)> {
        self.form.iter().chain(&self.query).filter(|(k, _)| k.starts_with(prefix)).cloned().collect()
    }
}

/// How requests fail, checked before authentication and routing (a Stripe that is down says nothing
/// else).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    status: u16,
    /// How many more requests fail; `None` = until [`FakeStripe::recover`].
    remaining: Option<usize>,
    /// Only requests whose path starts with this fail (`None` = every request).
    path_prefix: Option<String>,
}

/// The first request made with an idempotency key: its path and form, and the answer given.
struct FirstUse {
    path: String,
    form: Vec<(String, String)>,
    answer: Answer,
}

/// An invoice paid through a payment intent and its charge, and how much was refunded of it.
struct PaidInvoice {
    invoice_payment: Value,
    invoice: String,
    payment_intent: String,
    charge: String,
    amount: i64,
    refunded: i64,
}

#[derive(Default)]
struct Store {
    /// In insertion order; listed newest `created` first.
    subscriptions: Vec<(String, Value)>,
    customers: HashMap<String, Value>,
    checkout_sessions: Vec<Value>,
    portal_sessions: Vec<Value>,
    payments: Vec<PaidInvoice>,
    refunds: Vec<Value>,
    /// Idempotency key → the request first made with it and the answer given.
    idempotent: HashMap<String, FirstUse>,
    requests: Vec<Recorded>,
    failure: Option<Failure>,
    required_key: Option<String>,
    /// Seconds a 429 asks the client to wait (`Retry-After`).
    retry_after: u64,
    /// How long every answer is held back.
    delay: Duration,
    counter: u64,
}

struct Shared {
    state: Mutex<Store>,
    /// `http://127.0.0.1:<port>`, for the URLs sessions carry.
    base: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake server, listening on `127.0.0.1:<free port>` until [`FakeStripe::shutdown`] or drop.
pub struct FakeStripe {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    serve: Option<JoinHandle<()>>,
}

impl FakeStripe {
    /// Binds `127.0.0.1:0` and starts serving: no objects, no failures, any `sk_`/`rk_` key.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { state: Mutex::new(Store { retry_after: 1, ..Store::default() }), base: format!("http://{addr}") });
        let (stop, mut stop_rx) = watch::channel(false);
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let serve = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(Self { addr, shared, stop, serve: Some(serve) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the API base to configure (async-stripe wants it with a trailing
    /// `/`, as it appends `v1/...`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Accepts only this exact key from now on (default: any `sk_...` or `rk_...`).
    pub fn require_key(&self, key: &str) {
        self.shared.lock().required_key = Some(key.to_owned());
    }

    /// Adds a subscription object (e.g. from `sb_stripe::objects::subscription`), or replaces the
    /// one with the same `id` in place.
    pub fn put_subscription(&self, subscription: Value) {
        let id = id_of(&subscription);
        let mut st = self.shared.lock();
        match st.subscriptions.iter_mut().find(|(i, _)| *i == id) {
            Some(slot) => slot.1 = subscription,
            None => st.subscriptions.push((id, subscription)),
        }
    }

    /// Sets fields of a stored subscription (`objects::with`); false if there is none with `id`.
    pub fn update_subscription(&self, id: &str, fields: Value) -> bool {
        let mut st = self.shared.lock();
        match st.subscriptions.iter_mut().find(|(i, _)| i == id) {
            Some(slot) => {
                slot.1 = objects::with(slot.1.take(), fields);
                true
            }
            None => false,
        }
    }

    pub fn remove_subscription(&self, id: &str) -> bool {
        let mut st = self.shared.lock();
        let before = st.subscriptions.len();
        st.subscriptions.retain(|(i, _)| i != id);
        st.subscriptions.len() != before
    }

    pub fn subscription(&self, id: &str) -> Option<Value> {
        self.shared.lock().subscriptions.iter().find(|(i, _)| i == id).map(|(_, v)| v.clone())
    }

    /// Adds or replaces (by `id`) a customer object (e.g. from `sb_stripe::objects::customer`).
    pub fn put_customer(&self, customer: Value) {
        let id = id_of(&customer);
        self.shared.lock().customers.insert(id, customer);
    }

    pub fn remove_customer(&self, id: &str) -> bool {
        self.shared.lock().customers.remove(id).is_some()
    }

    /// The next `n` requests (any route) get `status` with Stripe's error body for it: `api_error`
    /// (and `Stripe-Should-Retry: true`) for 5xx, `rate_limit` (and `Retry-After`) for 429,
    /// `invalid_request_error` otherwise. Replaces any earlier failure mode.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.set_failure((n > 0).then_some(Failure { status, remaining: Some(n), path_prefix: None }));
    }

    /// Like [`FakeStripe::fail_next`], counting only requests whose path starts with `path_prefix`
    /// (e.g. `/v1/customers/`); others are served normally.
    pub fn fail_next_on(&self, path_prefix: &str, n: usize, status: u16) {
        self.set_failure((n > 0).then(|| Failure { status, remaining: Some(n), path_prefix: Some(path_prefix.to_owned()) }));
    }

    /// Every request gets `status` until [`FakeStripe::recover`].
    pub fn fail_always(&self, status: u16) {
        self.set_failure(Some(Failure { status, remaining: None, path_prefix: None }));
    }

    /// Every request whose path starts with `path_prefix` gets `status` until [`FakeStripe::recover`].
    pub fn fail_always_on(&self, path_prefix: &str, status: u16) {
        self.set_failure(Some(Failure { status, remaining: None, path_prefix: Some(path_prefix.to_owned()) }));
    }

    /// Serves normally again.
    pub fn recover(&self) {
        self.set_failure(None);
    }

    fn set_failure(&self, failure: Option<Failure>) {
        self.shared.lock().failure = failure;
    }

    /// The `Retry-After` seconds a 429 carries (default 1).
    pub fn set_retry_after(&self, secs: u64) {
        self.shared.lock().retry_after = secs;
    }

    /// Holds every answer back by `delay` (zero: answer at once, the default). The answer is decided
    /// and the request recorded when it arrives, so [`FakeStripe::requests`] shows requests still
    /// waiting for theirs.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Every request so far, oldest first (failed and refused ones included).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The requests with this method and exact path.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.shared.lock().requests.iter().filter(|r| r.method == method && r.path == path).cloned().collect()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The checkout sessions created so far, as returned.
    pub fn checkout_sessions(&self) -> Vec<Value> {
        self.shared.lock().checkout_sessions.clone()
    }

    /// Records that `invoice` was paid `amount` through payment intent `payment_intent` (charge
    /// `charge`), as Stripe's `invoice_payments` list shows it.
    pub fn put_invoice_payment(&self, invoice: &str, payment_intent: &str, charge: &str, amount: i64) {
        let mut st = self.shared.lock();
        st.counter += 1;
        let id = format!("inpay_fake{:06}", st.counter);
        st.payments.push(PaidInvoice {
            invoice_payment: objects::invoice_payment(&id, invoice, payment_intent, amount, now()),
            invoice: invoice.to_owned(),
            payment_intent: payment_intent.to_owned(),
            charge: charge.to_owned(),
            amount,
            refunded: 0,
        });
    }

    /// The refunds created so far, as returned (a replayed answer is not a new refund).
    pub fn refunds(&self) -> Vec<Value> {
        self.shared.lock().refunds.clone()
    }

    /// The portal sessions created so far, as returned.
    pub fn portal_sessions(&self) -> Vec<Value> {
        self.shared.lock().portal_sessions.clone()
    }

    /// Stops listening; the port is free once this returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(serve) = self.serve.take() {
            serve.abort();
            let _ = serve.await;
        }
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(serve) = self.serve.take() {
            serve.abort();
        }
    }
}

fn id_of(object: &Value) -> String {
    object.get("id").and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn decode(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// A Stripe error answer.
struct StripeError {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
    param: Option<String>,
}

impl StripeError {
    fn invalid(status: u16, code: Option<&'static str>, message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    fn missing_param(param: &str) -> Self {
        Self::invalid(400, Some("parameter_missing"), format!("Missing required param: {param}."), Some(param))
    }

    fn no_such(what: &str, id: &str, status: u16, param: &str) -> Self {
        Self::invalid(status, Some("resource_missing"), format!("No such {what}: '{id}'"), Some(param))
    }

    fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".into(), json!(self.kind));
        error.insert("message".into(), json!(self.message));
        if let Some(code) = self.code {
            error.insert("code".into(), json!(code));
            error.insert("doc_url".into(), json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-"))));
        }
        if let Some(param) = &self.param {
            error.insert("param".into(), json!(param));
        }
        json!({ "error": error })
    }
}

/// The answer to one request: status, JSON body, extra headers.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl From<StripeError> for Answer {
    fn from(e: StripeError) -> Self {
        Self { status: e.status, body: e.body(), headers: Vec::new() }
    }
}

fn ok(body: Value) -> Answer {
    Answer { status: StatusCode::OK, body, headers: Vec::new() }
}

fn failure_answer(status: u16, retry_after: u64) -> Answer {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut headers = Vec::new();
    let error = if status == 429 {
        headers.push(("retry-after", retry_after.to_string()));
        StripeError {
            status: code,
            kind: "invalid_request_error",
            code: Some("rate_limit"),
            message: "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.".into(),
            param: None,
        }
    } else if status >= 500 {
        headers.push(("stripe-should-retry", "true".into()));
        StripeError {
            status: code,
            kind: "api_error",
            code: None,
            message: "An unknown error occurred (fake Stripe is failing on purpose).".into(),
            param: None,
        }
    } else {
        StripeError {
            status: code,
            kind: "invalid_request_error",
            code: None,
            message: format!("Fake Stripe refuses this request ({status})."),
            param: None,
        }
    };
    let mut answer = Answer::from(error);
    answer.headers = headers;
    answer
}

fn authorized(headers: &HeaderMap, required: Option<&str>) -> Result<(), StripeError> {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(StripeError::invalid(
            401,
            None,
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth.",
            None,
        ));
    };
    let key = value.strip_prefix("Bearer ").unwrap_or("").trim();
    let ok = match required {
        Some(r) => key == r,
        None => key.starts_with("sk_") || key.starts_with("rk_"),
    };
    if ok {
        Ok(())
    } else {
        let shown: String = key.chars().take(8).collect();
        Err(StripeError::invalid(401, None, format!("Invalid API Key provided: {shown}****"), None))
    }
}

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = header_str(header::CONTENT_TYPE.as_str());
    let form = if content_type.as_deref().is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        decode(&body)
    } else {
        Vec::new()
    };
    let mut rec = Recorded {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: decode(uri.query().unwrap_or("").as_bytes()),
        form,
        content_type,
        stripe_version: header_str("stripe-version"),
        idempotency_key: header_str("idempotency-key"),
        authorized: false,
        status: 0,
        at: Instant::now(),
    };
    let answer = {
        let mut st = shared.lock();
        st.counter += 1;
        let failing = match &mut st.failure {
            Some(f) if f.path_prefix.as_deref().is_none_or(|p| rec.path.starts_with(p)) => {
                let status = f.status;
                if let Some(n) = f.remaining.as_mut() {
                    *n -= 1;
                    if *n == 0 {
                        st.failure = None;
                    }
                }
                Some(status)
            }
            _ => None,
        };
        let answer = match failing {
            Some(status) => failure_answer(status, st.retry_after),
            None => match authorized(&headers, st.required_key.as_deref()) {
                Err(e) => e.into(),
                Ok(()) => {
                    rec.authorized = true;
                    route(&mut st, &rec, &shared.base).unwrap_or_else(Answer::from)
                }
            },
        };
        rec.status = answer.status.as_u16();
        let request_id = format!("req_fake{:08}", st.counter);
        st.requests.push(rec);
        (answer, request_id, st.delay)
    };
    let (answer, request_id, delay) = answer;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = (answer.status, [(header::CONTENT_TYPE, "application/json")], answer.body.to_string()).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("request-id", v);
    }
    for (name, value) in answer.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    response
}

fn route(st: &mut Store, rec: &Recorded, base: &str) -> Result<Answer, StripeError> {
    let segments: Vec<&str> = rec.path.trim_start_matches('/').split('/').collect();
    match (rec.method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "checkout", "sessions"]) => create_checkout(st, rec, base),
        ("GET", ["v1", "checkout", "sessions", id]) => st
            .checkout_sessions
            .iter()
            .find(|s| s.get("id").and_then(Value::as_str) == Some(id))
            .cloned()
            .map(ok)
            .ok_or_else(|| StripeError::no_such("checkout.session", id, 404, "session")),
        ("POST", ["v1", "billing_portal", "sessions"]) => create_portal(st, rec, base),
        ("GET", ["v1", "subscriptions"]) => list_subscriptions(st, rec),
        ("GET", ["v1", "subscriptions", id]) => st
            .subscriptions
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, v)| ok(v.clone()))
            .ok_or_else(|| StripeError::no_such("subscription", id, 404, "id")),
        ("GET", ["v1", "invoice_payments"]) => list_invoice_payments(st, rec),
        ("POST", ["v1", "refunds"]) => idempotent(st, rec, create_refund),
        ("GET", ["v1", "customers", id]) => {
            st.customers.get(*id).cloned().map(ok).ok_or_else(|| StripeError::no_such("customer", id, 404, "id"))
        }
        _ => Err(StripeError::invalid(
            404,
            None,
            format!(
                "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
                rec.method, rec.path
            ),
            None,
        )),
    }
}

/// Stripe's idempotency: a POST with a key seen before replays the first answer when the path and
/// parameters are the same, and is refused when they are not.
fn idempotent(
    st: &mut Store,
    rec: &Recorded,
    create: fn(&mut Store, &Recorded) -> Result<Answer, StripeError>,
) -> Result<Answer, StripeError> {
    let Some(key) = rec.idempotency_key.clone() else { return create(st, rec) };
    if let Some(FirstUse { path, form, answer }) = st.idempotent.get(&key) {
        if *path != rec.path || *form != rec.form {
            let mut e = StripeError::invalid(
                400,
                None,
                format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                ),
                None,
            );
            e.kind = "idempotency_error";
            return Err(e);
        }
        let mut replay = answer.clone();
        replay.headers.push(("idempotent-replayed", "true".into()));
        return Ok(replay);
    }
    let answer = create(st, rec).unwrap_or_else(Answer::from);
    st.idempotent.insert(key, FirstUse { path: rec.path.clone(), form: rec.form.clone(), answer: answer.clone() });
    Ok(answer)
}

fn list_invoice_payments(st: &Store, rec: &Recorded) -> Result<Answer, StripeError> {
    let invoice = rec.param("invoice").ok_or_else(|| StripeError::missing_param("invoice"))?;
    let status = rec.param("status");
    let data: Vec<Value> = st
        .payments
        .iter()
        .filter(|p| p.invoice == invoice && status.is_none_or(|s| s == "paid"))
        .map(|p| p.invoice_payment.clone())
        .collect();
    Ok(ok(objects::list("/v1/invoice_payments", data, false)))
}

fn create_refund(st: &mut Store, rec: &Recorded) -> Result<Answer, StripeError> {
    let found = match (rec.param("payment_intent"), rec.param("charge")) {
        (Some(pi), _) => st
            .payments
            .iter()
            .position(|p| p.payment_intent == pi)
            .ok_or_else(|| StripeError::no_such("payment_intent", pi, 400, "payment_intent")),
        (None, Some(ch)) => {
            st.payments.iter().position(|p| p.charge == ch).ok_or_else(|| StripeError::no_such("charge", ch, 400, "charge"))
        }
        (None, None) => Err(StripeError::invalid(
            400,
            Some("parameter_missing"),
            "One of the following params should be provided for this request: payment_intent or charge.",
            None,
        )),
    }?;
    let amount = match rec.param("amount") {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .ok()
                .filter(|a| *a > 0)
                .ok_or_else(|| StripeError::invalid(400, Some("parameter_invalid_integer"), "Invalid positive integer", Some("amount")))?,
        ),
    };
    if let Some(reason) = rec.param("reason")
        && !matches!(reason, "duplicate" | "fraudulent" | "requested_by_customer")
    {
        return Err(StripeError::invalid(
            400,
            None,
            "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
            Some("reason"),
        ));
    }
    let p = &st.payments[found];
    let left = p.amount - p.refunded;
    if left <= 0 {
        return Err(StripeError::invalid(
            400,
            Some("charge_already_refunded"),
            format!("Charge {} has already been refunded.", p.charge),
            None,
        ));
    }
    let amount = amount.unwrap_or(left);
    if amount > left {
        return Err(StripeError::invalid(
            400,
            Some("amount_too_large"),
            format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"),
            Some("amount"),
        ));
    }
    st.counter += 1;
    let id = format!("re_fake{:06}", st.counter);
    let p = &mut st.payments[found];
    p.refunded += amount;
    let refund = objects::with(
        objects::refund(&id, &p.charge, Some(&p.payment_intent), amount, "succeeded", now()),
        json!({"metadata": metadata(rec, "metadata"), "reason": opt(rec.param("reason"))}),
    );
    st.refunds.push(refund.clone());
    Ok(ok(refund))
}

/// `metadata[k]=v` (or `<prefix>[metadata][k]=v`) pairs as an object.
fn metadata(rec: &Recorded, prefix: &str) -> Value {
    let mut out = Map::new();
    for (k, v) in &rec.form {
        if let Some(key) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('[')).and_then(|r| r.strip_suffix(']')) {
            out.insert(key.to_owned(), json!(v));
        }
    }
    Value::Object(out)
}

fn opt(v: Option<&str>) -> Value {
    v.filter(|s| !s.is_empty()).map_or(Value::Null, |s| json!(s))
}

fn create_checkout(st: &mut Store, rec: &Recorded, base: &str) -> Result<Answer, StripeError> {
    let mode = rec.param("mode").ok_or_else(|| StripeError::missing_param("mode"))?;
    if !matches!(mode, "payment" | "setup" | "subscription") {
        return Err(StripeError::invalid(
            400,
            Some("parameter_invalid_string"),
            "Invalid mode: must be one of payment, setup, or subscription",
            Some("mode"),
        ));
    }
    let has_items = rec.form.iter().any(|(k, _)| k.starts_with("line_items["));
    if mode != "setup" && !has_items {
        return Err(StripeError::invalid(
            400,
            None,
            format!("You must provide at least one line item for {mode} mode."),
            Some("line_items"),
        ));
    }
    let customer = rec.param("customer");
    let email = rec.param("customer_email");
    if customer.is_some() && email.is_some() {
        return Err(StripeError::invalid(
            400,
            None,
            "You may only specify one of these parameters: customer, customer_email.",
            Some("customer"),
        ));
    }
    if let Some(c) = customer
        && !st.customers.contains_key(c)
    {
        return Err(StripeError::no_such("customer", c, 400, "customer"));
    }
    st.counter += 1;
    let id = format!("cs_test_fake{:06}{}", st.counter, &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let created = now();
    let spec = CheckoutSpec { id: &id, created, ..Default::default() };
    let session = objects::with(
        objects::checkout_session(&spec),
        json!({
            "mode": mode, "status": "open", "payment_status": "unpaid",
            "client_reference_id": opt(rec.param("client_reference_id")),
            "customer": opt(customer), "customer_email": opt(email),
            "metadata": metadata(rec, "metadata"),
            "success_url": opt(rec.param("success_url")), "cancel_url": opt(rec.param("cancel_url")),
            "subscription": null, "payment_intent": null, "invoice": null,
            "amount_subtotal": null, "amount_total": null, "currency": null,
            "expires_at": created + 86_400,
            "url": format!("{base}/c/pay/{id}"),
        }),
    );
    st.checkout_sessions.push(session.clone());
    Ok(ok(session))
}

fn create_portal(st: &mut Store, rec: &Recorded, base: &str) -> Result<Answer, StripeError> {
    let customer = rec.param("customer").ok_or_else(|| StripeError::missing_param("customer"))?;
    if !st.customers.contains_key(customer) {
        return Err(StripeError::no_such("customer", customer, 400, "customer"));
    }
    st.counter += 1;
    let id = format!("bps_fake{:06}", st.counter);
    let url = format!("{base}/p/session/{id}");
    let session = objects::with(
        objects::portal_session(&id, customer, &url, rec.param("return_url").unwrap_or(""), now()),
        json!({"return_url": opt(rec.param("return_url"))}),
    );
    st.portal_sessions.push(session.clone());
    Ok(ok(session))
}

const STATUSES: [&str; 8] = ["incomplete", "incomplete_expired", "trialing", "active", "past_due", "unpaid", "canceled", "paused"];

fn list_subscriptions(st: &Store, rec: &Recorded) -> Result<Answer, StripeError> {
    let limit = match rec.param("limit") {
        None => 10,
        Some(l) => l.parse::<usize>().ok().filter(|l| (1..=100).contains(l)).ok_or_else(|| {
            StripeError::invalid(400, Some("parameter_invalid_integer"), "Invalid integer: limit must be between 1 and 100", Some("limit"))
        })?,
    };
    let status = rec.param("status");
    if let Some(s) = status
        && s != "all"
        && s != "ended"
        && !STATUSES.contains(&s)
    {
        return Err(StripeError::invalid(
            400,
            None,
            format!("Invalid status: must be one of {}, all, or ended", STATUSES.join(", ")),
            Some("status"),
        ));
    }
    let customer = rec.param("customer");
    let price = rec.param("price");
    // Newest first, like Stripe (later insertions first among equal `created`).
    let mut all: Vec<&(String, Value)> = st.subscriptions.iter().rev().collect();
    all.sort_by_key(|(_, v)| std::cmp::Reverse(v.get("created").and_then(Value::as_i64).unwrap_or(0)));
    let matching: Vec<&(String, Value)> = all
        .into_iter()
        .filter(|(_, v)| {
            let s = v.get("status").and_then(Value::as_str).unwrap_or("");
            let status_ok = match status {
                None => s != "canceled",
                Some("all") => true,
                Some("ended") => matches!(s, "canceled" | "incomplete_expired"),
                Some(want) => s == want,
            };
            let customer_ok = customer.is_none_or(|c| objects_id(v.get("customer")) == Some(c));
            let price_ok = price.is_none_or(|p| {
                v.pointer("/items/data")
                    .and_then(Value::as_array)
                    .is_some_and(|items| items.iter().any(|i| objects_id(i.get("price")) == Some(p)))
            });
            status_ok && customer_ok && price_ok
        })
        .collect();
    let start = match rec.param("starting_after") {
        None => 0,
        Some(after) => {
            let pos = matching.iter().position(|(i, _)| i == after);
            match pos {
                Some(p) => p + 1,
                None if st.subscriptions.iter().any(|(i, _)| i == after) => matching.len(),
                None => return Err(StripeError::no_such("subscription", after, 400, "starting_after")),
            }
        }
    };
    let page: Vec<Value> = matching.iter().skip(start).take(limit).map(|(_, v)| v.clone()).collect();
    let has_more = start + page.len() < matching.len();
    Ok(ok(objects::list("/v1/subscriptions", page, has_more)))
}

/// An id that may be expanded into an object.
fn objects_id(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use sb_stripe::objects::SubscriptionSpec;
    use stripe_billing::{
        billing_portal_session::CreateBillingPortalSession,
        subscription::{ListSubscription, ListSubscriptionStatus, RetrieveSubscription},
    };
    use stripe_checkout::checkout_session::{CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData};
    use stripe_core::customer::{RetrieveCustomer, RetrieveCustomerReturned};
    use stripe_shared::{CheckoutSessionMode, SubscriptionStatus};

    use super::*;

    fn client(stripe: &FakeStripe, key: &str) -> stripe::Client {
        // The way billing builds it: the base with a trailing slash.
        stripe::ClientBuilder::new(key).url(format!("{}/", stripe.base_url())).build().unwrap()
    }

    fn sub(id: &str, customer: &str, status: &str, created: i64) -> Value {
        objects::subscription(&SubscriptionSpec {
            id,
            customer,
            account_id: "0190b6a4-0000-7000-8000-000000000001",
            price: "price_switchboard_pro",
            status,
            created,
            period_end: created + 30 * 86_400,
        })
    }

    fn stripe_status(e: &stripe::StripeError) -> Option<(u16, Option<String>, Option<String>)> {
        match e {
            stripe::StripeError::Stripe(err, status) => {
                Some((*status, err.message.clone(), err.code.as_ref().map(|c| c.as_str().to_owned())))
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn the_real_client_reads_every_answer() {
        let stripe = FakeStripe::start().await.unwrap();
        let c = client(&stripe, "sk_test_fake_123");
        for (i, status) in STATUSES.iter().enumerate() {
            stripe.put_subscription(sub(&format!("sub_{status}"), "cus_1", status, 1_700_000_000 + i as i64));
        }
        stripe.put_customer(objects::customer("cus_1", "ada@example.com", "0190b6a4-0000-7000-8000-000000000001", 1_700_000_000));

        for status in STATUSES {
            let s = RetrieveSubscription::new(format!("sub_{status}")).send(&c).await.unwrap();
            assert_eq!(s.status.as_str(), status);
            assert_eq!(s.customer.id().as_str(), "cus_1");
            assert_eq!(s.items.data[0].price.id.as_str(), "price_switchboard_pro");
            assert_eq!(s.metadata.get("account_id").map(String::as_str), Some("0190b6a4-0000-7000-8000-000000000001"));
        }
        assert!(matches!(RetrieveSubscription::new("sub_active").send(&c).await.unwrap().status, SubscriptionStatus::Active));
        match RetrieveCustomer::new("cus_1").send(&c).await.unwrap() {
            RetrieveCustomerReturned::Customer(cus) => {
                assert_eq!(cus.metadata.unwrap().get("account_id").map(String::as_str), Some("0190b6a4-0000-7000-8000-000000000001"))
            }
            RetrieveCustomerReturned::DeletedCustomer(_) => panic!("not deleted"),
        }
        let missing = RetrieveCustomer::new("cus_nope").send(&c).await.unwrap_err();
        assert_eq!(stripe_status(&missing), Some((404, Some("No such customer: 'cus_nope'".into()), Some("resource_missing".into()))));
        let missing = RetrieveSubscription::new("sub_nope").send(&c).await.unwrap_err();
        assert_eq!(stripe_status(&missing).map(|s| s.0), Some(404));

        // Checkout: the form arrives decoded with Stripe's nested keys; the answer parses.
        let item = CreateCheckoutSessionLineItems { price: Some("price_switchboard_pro".into()), quantity: Some(1), ..Default::default() };
        let mut data = CreateCheckoutSessionSubscriptionData::new();
        data.metadata = Some(HashMap::from([("account_id".to_owned(), "acc".to_owned())]));
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .client_reference_id("acc")
            .metadata(HashMap::from([("account_id".to_owned(), "acc".to_owned())]))
            .subscription_data(data)
            .line_items(vec![item])
            .success_url("https://portal.example/done")
            .cancel_url("https://portal.example/cancelled")
            .customer_email("ada@example.com")
            .send(&c)
            .await
            .unwrap();
        assert!(session.url.as_deref().unwrap().starts_with(&stripe.base_url()), "{:?}", session.url);
        assert!(session.expires_at > now());
        assert_eq!(session.client_reference_id.as_deref(), Some("acc"));
        let sent = stripe.requests_to("POST", "/v1/checkout/sessions");
        assert_eq!(sent.len(), 1);
        let r = &sent[0];
        assert_eq!(r.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
        assert!(r.stripe_version.is_some() && r.authorized && r.status == 200);
        for (k, v) in [
            ("mode", "subscription"),
            ("client_reference_id", "acc"),
            ("line_items[0][price]", "price_switchboard_pro"),
            ("line_items[0][quantity]", "1"),
            ("metadata[account_id]", "acc"),
            ("subscription_data[metadata][account_id]", "acc"),
            ("success_url", "https://portal.example/done"),
            ("customer_email", "ada@example.com"),
        ] {
            assert_eq!(r.param(k), Some(v), "{k} in {:?}", r.form);
        }
        assert_eq!(stripe.checkout_sessions().len(), 1);
        let both = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Setup)
            .customer("cus_1")
            .customer_email("x@example.com")
            .send(&c)
            .await
            .unwrap_err();
        assert_eq!(stripe_status(&both).map(|s| s.0), Some(400));
        let unknown = CreateCheckoutSession::new().mode(CheckoutSessionMode::Setup).customer("cus_nope").send(&c).await.unwrap_err();
        assert_eq!(stripe_status(&unknown).map(|s| (s.0, s.2)), Some((400, Some("resource_missing".into()))));

        let portal = CreateBillingPortalSession::new().customer("cus_1").return_url("https://portal.example/me").send(&c).await.unwrap();
        assert!(portal.url.starts_with(&stripe.base_url()));
        assert_eq!(portal.return_url.as_deref(), Some("https://portal.example/me"));
        assert!(CreateBillingPortalSession::new().customer("cus_nope").send(&c).await.is_err());
    }

    #[tokio::test]
    async fn lists_paginate_newest_first_and_filter_by_status() {
        let stripe = FakeStripe::start().await.unwrap();
        let c = client(&stripe, "sk_test_fake_123");
        for i in 0..150 {
            stripe.put_subscription(sub(
                &format!("sub_{i:03}"),
                "cus_1",
                if i % 10 == 0 { "canceled" } else { "active" },
                1_700_000_000 + i,
            ));
        }
        let first = ListSubscription::new().status(ListSubscriptionStatus::All).limit(100).send(&c).await.unwrap();
        assert_eq!((first.data.len(), first.has_more), (100, true));
        assert_eq!(first.data[0].id.as_str(), "sub_149", "newest first");
        let last = first.data.last().unwrap().id.to_string();
        let second = ListSubscription::new().status(ListSubscriptionStatus::All).limit(100).starting_after(last).send(&c).await.unwrap();
        assert_eq!((second.data.len(), second.has_more), (50, false));
        assert_eq!(second.data.last().unwrap().id.as_str(), "sub_000");
        let r = stripe.requests_to("GET", "/v1/subscriptions").pop().unwrap();
        assert_eq!((r.param("status"), r.param("limit"), r.param("starting_after")), (Some("all"), Some("100"), Some("sub_050")));
        // Without a status Stripe leaves canceled ones out.
        let default = ListSubscription::new().limit(100).send(&c).await.unwrap();
        assert!(default.data.iter().all(|s| s.status.as_str() != "canceled") && default.has_more);
        let canceled = ListSubscription::new().status(ListSubscriptionStatus::Canceled).limit(100).send(&c).await.unwrap();
        assert_eq!((canceled.data.len(), canceled.has_more), (15, false));
        assert!(ListSubscription::new().starting_after("sub_nope").send(&c).await.is_err());
        assert!(ListSubscription::new().limit(101).send(&c).await.is_err());

        assert!(stripe.update_subscription("sub_149", json!({"status": "past_due"})));
        assert_eq!(RetrieveSubscription::new("sub_149").send(&c).await.unwrap().status.as_str(), "past_due");
        assert!(stripe.remove_subscription("sub_149") && stripe.subscription("sub_149").is_none());
    }

    #[tokio::test]
    async fn a_slow_stripe_records_at_once_and_answers_late() {
        let stripe = FakeStripe::start().await.unwrap();
        stripe.put_subscription(sub("sub_1", "cus_1", "active", 1));
        stripe.set_delay(Duration::from_millis(300));
        let c = client(&stripe, "sk_test_fake_123");
        let started = Instant::now();
        let call = tokio::spawn(async move { RetrieveSubscription::new("sub_1").send(&c).await.map(|s| s.id.to_string()) });
        while stripe.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!call.is_finished(), "recorded before it is answered");
        assert_eq!(call.await.unwrap().unwrap(), "sub_1");
        assert!(started.elapsed() >= Duration::from_millis(300));
        let r = &stripe.requests()[0];
        assert!(r.at >= started && r.at - started < Duration::from_millis(300), "{r:?}");
        stripe.shutdown().await;
    }

    #[tokio::test]
    async fn keys_are_checked_and_failures_switch() {
        let stripe = FakeStripe::start().await.unwrap();
        stripe.put_subscription(sub("sub_1", "cus_1", "active", 1));
        let bad = RetrieveSubscription::new("sub_1").send(&client(&stripe, "pk_test_public")).await.unwrap_err();
        assert_eq!(stripe_status(&bad).map(|s| s.0), Some(401));
        let web = reqwest::Client::new();
        let none = web.get(format!("{}/v1/subscriptions/sub_1", stripe.base_url())).send().await.unwrap();
        assert_eq!(none.status(), 401);
        let body: Value = none.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(!stripe.requests()[0].authorized);

        let c = client(&stripe, "sk_test_fake_123");
        stripe.fail_next(2, 503);
        for _ in 0..2 {
            let e = RetrieveSubscription::new("sub_1").send(&c).await.unwrap_err();
            assert_eq!(stripe_status(&e).map(|s| s.0), Some(503));
        }
        assert!(RetrieveSubscription::new("sub_1").send(&c).await.is_ok(), "recovers after n failures");

        stripe.fail_always(500);
        for _ in 0..3 {
            assert!(RetrieveSubscription::new("sub_1").send(&c).await.is_err());
        }
        stripe.recover();
        assert!(RetrieveSubscription::new("sub_1").send(&c).await.is_ok());

        // Only one endpoint failing.
        stripe.put_customer(objects::customer("cus_1", "", "", 1));
        stripe.fail_next_on("/v1/customers/", 1, 502);
        assert!(RetrieveSubscription::new("sub_1").send(&c).await.is_ok(), "other paths are served");
        let e = RetrieveCustomer::new("cus_1").send(&c).await.unwrap_err();
        assert_eq!(stripe_status(&e).map(|s| s.0), Some(502));
        assert!(RetrieveCustomer::new("cus_1").send(&c).await.is_ok());
        stripe.fail_always_on("/v1/customers/", 503);
        assert!(RetrieveCustomer::new("cus_1").send(&c).await.is_err() && RetrieveCustomer::new("cus_1").send(&c).await.is_err());
        assert!(RetrieveSubscription::new("sub_1").send(&c).await.is_ok());
        stripe.recover();
        assert!(RetrieveCustomer::new("cus_1").send(&c).await.is_ok());

        stripe.set_retry_after(7);
        stripe.fail_next(1, 429);
        let limited = web.get(format!("{}/v1/subscriptions/sub_1", stripe.base_url())).bearer_auth("sk_test_x").send().await.unwrap();
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));
        let body: Value = limited.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limit");

        stripe.require_key("sk_test_only_this");
        assert!(RetrieveSubscription::new("sub_1").send(&c).await.is_err());
        assert!(RetrieveSubscription::new("sub_1").send(&client(&stripe, "sk_test_only_this")).await.is_ok());
        let unknown = web.get(format!("{}/v1/nope", stripe.base_url())).bearer_auth("sk_test_only_this").send().await.unwrap();
        assert_eq!(unknown.status(), 404);
        stripe.shutdown().await;
    }

    #[tokio::test]
    async fn refunds_replay_under_their_idempotency_key_and_never_exceed_the_payment() {
        let stripe = FakeStripe::start().await.unwrap();
        stripe.put_invoice_payment("in_1", "pi_1", "ch_1", 900);
        let web = reqwest::Client::new();
        let refund = |key: &'static str, form: &'static [(&'static str, &'static str)]| {
            web.post(format!("{}/v1/refunds", stripe.base_url())).bearer_auth("sk_test_x").header("idempotency-key", key).form(form).send()
        };
        let listed: Value = web
            .get(format!("{}/v1/invoice_payments?invoice=in_1&status=paid", stripe.base_url()))
            .bearer_auth("sk_test_x")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed["data"][0]["payment"]["payment_intent"], "pi_1");

        let first = refund("k1", &[("payment_intent", "pi_1"), ("amount", "400")]).await.unwrap();
        assert_eq!(first.status(), 200);
        let first: Value = first.json().await.unwrap();
        assert_eq!(
            (first["charge"].as_str(), first["amount"].as_i64(), first["status"].as_str()),
            (Some("ch_1"), Some(400), Some("succeeded"))
        );
        let again = refund("k1", &[("payment_intent", "pi_1"), ("amount", "400")]).await.unwrap();
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
        let other = refund("k1", &[("payment_intent", "pi_1"), ("amount", "100")]).await.unwrap();
        assert_eq!(other.status(), 400);
        assert_eq!(other.json::<Value>().await.unwrap()["error"]["type"], "idempotency_error");
        assert_eq!(stripe.refunds().len(), 1);

        let too_much = refund("k2", &[("payment_intent", "pi_1"), ("amount", "600")]).await.unwrap();
        assert_eq!(too_much.json::<Value>().await.unwrap()["error"]["code"], "amount_too_large");
        let rest: Value = refund("k3", &[("charge", "ch_1")]).await.unwrap().json().await.unwrap();
        assert_eq!(rest["amount"], 500);
        let none_left = refund("k4", &[("payment_intent", "pi_1")]).await.unwrap();
        assert_eq!(none_left.json::<Value>().await.unwrap()["error"]["code"], "charge_already_refunded");
        assert_eq!(stripe.refunds().len(), 2);
    }
}
