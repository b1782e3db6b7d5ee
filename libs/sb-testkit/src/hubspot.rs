//! A fake HubSpot CRM v3 contacts API for tests that speaks HubSpot's wire format, so the real
//! adapter (crm-sync's `HubSpot`, pointed at [`FakeHubSpot::base_url`]) runs unchanged against it,
//! with HubSpot's rules, a request log, and failure modes that can be switched while it runs.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sb_testkit::hubspot::FakeHubSpot;
//! let hubspot = FakeHubSpot::start().await?;
//! // point the adapter at hubspot.base_url() with the token hubspot.token() ...
//! hubspot.put_contact("Ada@Example.com", &[("lifecyclestage", "lead")]);
//! hubspot.fail_next(2, 503); // the next two requests get 503
//! hubspot.stop().await; // nothing listens on the port: connections are refused
//! hubspot.restart().await?; // the same port, the same contacts
//! assert_eq!(hubspot.contact_count(), 1);
//! # Ok(()) }
//! ```
//!
//! Endpoints (JSON bodies, `Authorization: Bearer <token>` else 401 `INVALID_AUTHENTICATION`):
//! - `POST /crm/v3/objects/contacts/search` — `filterGroups` (OR of groups, AND of filters; at most
//!   5 groups of 6 filters) with `EQ`, `NEQ`, `IN`, `NOT_IN`, `HAS_PROPERTY`, `NOT_HAS_PROPERTY`
//!   (string comparisons case-insensitive, as HubSpot's are), `properties`, `sorts` (one
//!   `propertyName`/`direction`), `limit` (1–200, default 10) and `after` → `{"total", "results",
//!   "paging"?}`. Without `properties` the defaults HubSpot returns for contacts.
//! - `POST /crm/v3/objects/contacts` `{"properties": {...}}` → 201 with the object.
//! - `GET /crm/v3/objects/contacts/{id}` (`?properties=a,b`, `?idProperty=email`) → 200 or 404.
//! - `PATCH /crm/v3/objects/contacts/{id}` (`?idProperty=email`) `{"properties": {...}}` → 200.
//!
//! Objects are `{"id", "properties", "createdAt", "updatedAt", "archived": false}`; ids are numeric
//! strings, equal to the `hs_object_id` property. Errors are HubSpot's `{"status": "error",
//! "message", "correlationId", "category"}`.
//!
//! HubSpot's rules, enforced:
//! - `email` is unique, compared case-insensitively, and stored lower-cased; creating (or
//!   changing a contact to) a taken email is a 409 `CONFLICT` "Contact already exists. Existing
//!   ID: <id>".
//! - An invalid email is a 400 `VALIDATION_ERROR` (`INVALID_EMAIL`); an unknown property is a 400
//!   (`PROPERTY_DOESNT_EXIST`): the standard contact properties and crm-sync's custom ones exist,
//!   others only after [`FakeHubSpot::define_property`].
//! - `lifecyclestage` is one of HubSpot's default stages (plus [`FakeHubSpot::define_stage`]) and
//!   only moves forward: setting an earlier stage than the stored one is a 400 `VALIDATION_ERROR`
//!   unless the stage was cleared (`""`) first. (Real HubSpot sometimes ignores such a move
//!   silently; the fake is stricter so a missing clear fails loudly.)
//!
//! Failure modes are checked before authentication and routing (a HubSpot that is down says
//! nothing else): [`FakeHubSpot::fail_next`] / [`FakeHubSpot::fail_always`] (any status; 429 comes
//! with `Retry-After`), [`FakeHubSpot::hang_next`] / [`FakeHubSpot::hang_always`] (the request is
//! accepted and never answered until [`FakeHubSpot::recover`] or [`FakeHubSpot::stop`]),
//! [`FakeHubSpot::limit_rate`] (HubSpot's own rolling-window limit: 429 beyond it),
//! [`FakeHubSpot::set_latency`] (every answer comes that much later: a slow HubSpot) and
//! [`FakeHubSpot::stop`] (connections refused) / [`FakeHubSpot::restart`] (back on the same port,
//! with the same contacts).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::listening::Listening;

/// The token a new fake accepts (change it with [`FakeHubSpot::set_token`]).
pub const DEFAULT_TOKEN: &str = "pat-na1-fake-0000-token";

const CONTACTS: &str = "/crm/v3/objects/contacts";

/// HubSpot's default lifecycle stages, in their forward order.
pub const DEFAULT_STAGES: [&str; 8] =
    ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist", "other"];

/// Contact properties that exist in a new fake portal: HubSpot's standard ones that matter here,
/// its read-only system ones, and the custom properties crm-sync writes.
pub const DEFAULT_PROPERTIES: [&str; 22] = [
    "email",
    "firstname",
    "lastname",
    "company",
    "phone",
    "website",
    "jobtitle",
    "lifecyclestage",
    "hs_lead_status",
    "hubspot_owner_id",
    "createdate",
    "lastmodifieddate",
    "hs_object_id",
    "switchboard_account_id",
    "switchboard_user_id",
    "switchboard_plan",
    "switchboard_access_status",
    "stripe_customer_id",
    "city",
    "country",
    "state",
    "zip",
];

/// Set by HubSpot itself; a write to them is refused.
const READ_ONLY: [&str; 3] = ["createdate", "lastmodifieddate", "hs_object_id"];

/// What a search returns for a contact without `properties`.
const DEFAULT_SEARCH_PROPERTIES: [&str; 6] = ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"];

/// One contact as the fake stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeContact {
    /// Numeric, as a string (also the `hs_object_id` property).
    pub id: String,
    /// Every property with a value (never empty strings: clearing removes the property).
    pub properties: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

impl FakeContact {
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    /// The stored (lower-cased) email, or "".
    pub fn email(&self) -> &str {
        self.prop("email").unwrap_or("")
    }

    /// The `lifecyclestage`, or "" when unset.
    pub fn lifecycle_stage(&self) -> &str {
        self.prop("lifecyclestage").unwrap_or("")
    }

    fn to_json(&self, only: Option<&[String]>) -> Value {
        let props: Map<String, Value> = match only {
            None => self.properties.iter().map(|(k, v)| (k.clone(), json!(v))).collect(),
            Some(names) => {
                let mut m: Map<String, Value> =
                    names.iter().map(|n| (n.clone(), self.properties.get(n).map_or(Value::Null, |v| json!(v)))).collect();
                // HubSpot always includes these three.
                for always in ["createdate", "hs_object_id", "lastmodifieddate"] {
                    m.insert(always.to_owned(), self.properties.get(always).map_or(Value::Null, |v| json!(v)));
                }
                m
            }
        };
        json!({"id": self.id, "properties": props, "createdAt": self.created_at, "updatedAt": self.updated_at, "archived": false})
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `POST`, `PATCH`, ...
    pub method: String,
    /// The path without the query, e.g. `/crm/v3/objects/contacts/search`.
    pub path: String,
    /// The decoded query string, in order.
    pub query: Vec<(String, String)>,
    /// The JSON body (None when there was none or it was not JSON).
    pub body: Option<Value>,
    /// Whether it carried the accepted token.
    pub authorized: bool,
    /// The status the fake answered (0 while the request is still in flight, e.g. hanging).
    pub status: u16,
    /// When the fake received it.
    pub at: Instant,
}

impl Recorded {
    /// `body.properties.<name>` as a string, if sent.
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.body.as_ref()?.get("properties")?.get(name)?.as_str()
    }

    /// The names of the properties the body sets, sorted.
    pub fn prop_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .body
            .as_ref()
            .and_then(|b| b.get("properties"))
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Status(u16),
    Hang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failure {
    fault: Fault,
    /// How many more requests fail; `None` = until [`FakeHubSpot::recover`].
    remaining: Option<usize>,
}

struct Store {
    contacts: BTreeMap<u64, FakeContact>,
    by_email: HashMap<String, u64>,
    next_id: u64,
    token: String,
    properties: BTreeSet<String>,
    stages: Vec<String>,
    requests: Vec<Recorded>,
    /// Sequence number of `requests[0]` (grows with [`FakeHubSpot::clear_requests`]).
    first_seq: usize,
    failure: Option<Failure>,
    retry_after_secs: u64,
    rate_limit: Option<(usize, Duration)>,
    served: VecDeque<Instant>,
    latency: Duration,
}

impl Store {
    fn new() -> Self {
        Self {
            contacts: BTreeMap::new(),
            by_email: HashMap::new(),
            next_id: 1001,
            token: DEFAULT_TOKEN.to_owned(),
            properties: DEFAULT_PROPERTIES.iter().map(|p| (*p).to_owned()).collect(),
            stages: DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
            requests: Vec::new(),
            first_seq: 0,
            failure: None,
            retry_after_secs: 1,
            rate_limit: None,
            served: VecDeque::new(),
            latency: Duration::ZERO,
        }
    }

    fn take_fault(&mut self) -> Option<Fault> {
        let f = self.failure.as_mut()?;
        let fault = f.fault;
        if let Some(n) = f.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.failure = None;
            }
        }
        Some(fault)
    }

    /// HubSpot's own rolling window: Some(seconds to wait) when this request is over it.
    fn over_rate_limit(&mut self, now: Instant) -> Option<u64> {
        let (max, per) = self.rate_limit?;
        while self.served.front().is_some_and(|t| now.duration_since(*t) >= per) {
            self.served.pop_front();
        }
        if self.served.len() >= max {
            let wait = self.served.front().map_or(per, |t| per.saturating_sub(now.duration_since(*t)));
            return Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        self.served.push_back(now);
        None
    }

    fn stage_index(&self, stage: &str) -> Option<usize> {
        self.stages.iter().position(|s| s == stage)
    }

    fn insert(&mut self, mut properties: BTreeMap<String, String>) -> FakeContact {
        let id = self.next_id;
        self.next_id += 1;
        let now = now_iso();
        properties.retain(|_, v| !v.is_empty());
        properties.insert("hs_object_id".into(), id.to_string());
        properties.insert("createdate".into(), now.clone());
        properties.insert("lastmodifieddate".into(), now.clone());
        if let Some(email) = properties.get("email") {
            self.by_email.insert(email.clone(), id);
        }
        let c = FakeContact { id: id.to_string(), properties, created_at: now.clone(), updated_at: now };
        self.contacts.insert(id, c.clone());
        c
    }

    fn find(&self, id_or_email: &str, by_email: bool) -> Option<u64> {
        if by_email {
            self.by_email.get(&id_or_email.trim().to_lowercase()).copied()
        } else {
            id_or_email.parse::<u64>().ok().filter(|id| self.contacts.contains_key(id))
        }
    }
}

struct Shared {
    state: Mutex<Store>,
    /// Bumped by `recover` and `stop`: hanging requests end.
    release: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release_hangs(&self) {
        self.release.send_modify(|g| *g += 1);
    }
}

/// The fake server, listening on `127.0.0.1:<free port>` until [`FakeHubSpot::stop`],
/// [`FakeHubSpot::shutdown`] or drop.
pub struct FakeHubSpot {
    shared: Arc<Shared>,
    server: Listening,
}

impl FakeHubSpot {
    /// Binds `127.0.0.1:0` and starts serving: no contacts, no failures, token [`DEFAULT_TOKEN`].
    pub async fn start() -> io::Result<Self> {
        let (release, _) = watch::channel(0);
        let shared = Arc::new(Shared { state: Mutex::new(Store::new()), release });
        let server = Listening::start(Router::new().fallback(handle).with_state(shared.clone())).await?;
        Ok(Self { shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:<port>`: the API base to configure (the adapter appends `/crm/v3/...`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The private-app token this fake accepts.
    pub fn token(&self) -> String {
        self.shared.lock().token.clone()
    }

    /// Accepts only this token from now on.
    pub fn set_token(&self, token: &str) {
        self.shared.lock().token = token.to_owned();
    }

    /// Makes a custom contact property exist (writing an unknown one is a 400).
    pub fn define_property(&self, name: &str) {
        self.shared.lock().properties.insert(name.to_owned());
    }

    /// Adds a custom lifecycle stage after the existing ones (e.g. `churned`).
    pub fn define_stage(&self, stage: &str) {
        let mut st = self.shared.lock();
        if st.stage_index(stage).is_none() {
            st.stages.push(stage.to_owned());
        }
    }

    /// Adds a contact directly (as if created in HubSpot's UI; no rules checked apart from the
    /// email being lower-cased), or sets these properties on the one with this email. Returns its id.
    pub fn put_contact(&self, email: &str, properties: &[(&str, &str)]) -> String {
        let email = email.trim().to_lowercase();
        let mut st = self.shared.lock();
        match st.by_email.get(&email).copied() {
            Some(id) => {
                let now = now_iso();
                let c = st.contacts.get_mut(&id).expect("indexed contacts exist");
                for (k, v) in properties {
                    if v.is_empty() {
                        c.properties.remove(*k);
                    } else {
                        c.properties.insert((*k).to_owned(), (*v).to_owned());
                    }
                }
                c.properties.insert("lastmodifieddate".into(), now.clone());
                c.updated_at = now;
                c.id.clone()
            }
            None => {
                let mut props: BTreeMap<String, String> = properties.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
                props.insert("email".into(), email);
                st.insert(props).id
            }
        }
    }

    /// The contact with this email (any case).
    pub fn contact(&self, email: &str) -> Option<FakeContact> {
        let st = self.shared.lock();
        st.find(email, true).and_then(|id| st.contacts.get(&id).cloned())
    }

    pub fn contact_by_id(&self, id: &str) -> Option<FakeContact> {
        let st = self.shared.lock();
        st.find(id, false).and_then(|id| st.contacts.get(&id).cloned())
    }

    /// Every contact, oldest first.
    pub fn contacts(&self) -> Vec<FakeContact> {
        self.shared.lock().contacts.values().cloned().collect()
    }

    pub fn contact_count(&self) -> usize {
        self.shared.lock().contacts.len()
    }

    /// The next `n` requests (any route) get `status` with HubSpot's error body for it (429 with
    /// `Retry-After`, see [`FakeHubSpot::set_retry_after`]). Replaces any earlier failure mode.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.set_failure((n > 0).then_some(Failure { fault: Fault::Status(status), remaining: Some(n) }));
    }

    /// Every request gets `status` until [`FakeHubSpot::recover`].
    pub fn fail_always(&self, status: u16) {
        self.set_failure(Some(Failure { fault: Fault::Status(status), remaining: None }));
    }

    /// The next `n` requests are accepted and never answered (the client times out), until
    /// [`FakeHubSpot::recover`] or [`FakeHubSpot::stop`].
    pub fn hang_next(&self, n: usize) {
        self.set_failure((n > 0).then_some(Failure { fault: Fault::Hang, remaining: Some(n) }));
    }

    /// Every request hangs until [`FakeHubSpot::recover`].
    pub fn hang_always(&self) {
        self.set_failure(Some(Failure { fault: Fault::Hang, remaining: None }));
    }

    /// Serves normally again; requests still hanging are answered 503.
    pub fn recover(&self) {
        self.set_failure(None);
        self.shared.release_hangs();
    }

    fn set_failure(&self, failure: Option<Failure>) {
        self.shared.lock().failure = failure;
    }

    /// The `Retry-After` seconds a 429 carries (default 1).
    pub fn set_retry_after(&self, secs: u64) {
        self.shared.lock().retry_after_secs = secs;
    }

    /// Enforces HubSpot's own limit: more than `max` requests in any trailing `per` get 429
    /// (`TEN_SECONDLY_ROLLING`, `Retry-After` until the window has room). Off by default.
    pub fn limit_rate(&self, max: usize, per: Duration) {
        let mut st = self.shared.lock();
        st.rate_limit = Some((max, per));
        st.served.clear();
    }

    pub fn no_rate_limit(&self) {
        self.shared.lock().rate_limit = None;
    }

    /// Every answer from now on (errors included, hanging requests aside) comes `latency` after
    /// the request arrived: a slow HubSpot. `Duration::ZERO` answers at once again.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Every request so far, oldest first (failed, refused and in-flight ones included).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The requests with this method and exact path.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.shared.lock().requests.iter().filter(|r| r.is(method, path)).cloned().collect()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    pub fn clear_requests(&self) {
        let mut st = self.shared.lock();
        st.first_seq += st.requests.len();
        st.requests.clear();
    }

    /// Whether it is listening (false between [`FakeHubSpot::stop`] and [`FakeHubSpot::restart`]).
    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// Stops listening and closes every connection (hanging requests are answered 503 first): from
    /// now on connections to the port are refused. State is kept for [`FakeHubSpot::restart`].
    pub async fn stop(&self) {
        self.shared.release_hangs();
        self.server.stop().await;
    }

    /// Listens again on the same port, with the same contacts and settings.
    pub async fn restart(&self) -> io::Result<()> {
        self.server.restart().await
    }

    /// Stops listening for good.
    pub async fn shutdown(self) {
        self.stop().await;
    }
}

impl Drop for FakeHubSpot {
    fn drop(&mut self) {
        self.shared.release_hangs();
    }
}

fn now_iso() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `%xx` escapes of a path segment (`+` stays a plus, unlike in a query).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode_query(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// A HubSpot error answer.
struct HsError {
    status: StatusCode,
    category: &'static str,
    message: String,
    /// Extra top-level fields (`errorType`, `policyName`, ...).
    extra: Vec<(&'static str, Value)>,
    retry_after: Option<u64>,
}

impl HsError {
    fn new(status: u16, category: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            category,
            message: message.into(),
            extra: Vec::new(),
            retry_after: None,
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "VALIDATION_ERROR", message)
    }

    /// HubSpot's "Property values were not valid" shape for one property.
    fn invalid_property(name: &str, error: &str, message: &str) -> Self {
        let detail = json!([{"isValid": false, "message": message, "error": error, "name": name, "localizedErrorMessage": message}]);
        Self::validation(format!("Property values were not valid: {detail}"))
    }

    fn not_found() -> Self {
        Self::new(404, "OBJECT_NOT_FOUND", "resource not found")
    }

    fn conflict(existing: u64) -> Self {
        Self::new(409, "CONFLICT", format!("Contact already exists. Existing ID: {existing}"))
    }

    fn rate_limited(secs: u64) -> Self {
        let mut e = Self::new(429, "RATE_LIMITS", "You have reached your ten_secondly_rolling limit.");
        e.extra = vec![("errorType", json!("RATE_LIMIT")), ("policyName", json!("TEN_SECONDLY_ROLLING"))];
        e.retry_after = Some(secs);
        e
    }

    fn for_status(status: u16, retry_after: u64) -> Self {
        match status {
            429 => Self::rate_limited(retry_after),
            401 => Self::unauthorized(),
            403 => Self::new(403, "MISSING_SCOPES", "This app hasn't been granted all required scopes to make this call."),
            404 => Self::not_found(),
            409 => Self::new(409, "CONFLICT", "Conflict"),
            s if s >= 500 => {
                let reason = StatusCode::from_u16(s).ok().and_then(|c| c.canonical_reason()).unwrap_or("Internal Server Error");
                Self::new(s, "INTERNAL_ERROR", reason)
            }
            s => Self::new(s, "VALIDATION_ERROR", "Invalid request"),
        }
    }

    fn unauthorized() -> Self {
        Self::new(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        )
    }

    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("status".into(), json!("error"));
        body.insert("message".into(), json!(self.message));
        body.insert("correlationId".into(), json!(Uuid::new_v4().to_string()));
        body.insert("category".into(), json!(self.category));
        for (k, v) in self.extra {
            body.insert(k.into(), v);
        }
        let mut resp = (self.status, axum::Json(Value::Object(body))).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

type Answer = Result<(StatusCode, Value), HsError>;

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("")
        .to_owned();
    let rec = Recorded {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: decode_query(uri.query()),
        body: serde_json::from_slice(&body).ok(),
        authorized: false,
        status: 0,
        at,
    };
    let (seq, fault, retry_after, latency, mut release) = {
        let mut st = shared.lock();
        let authorized = !bearer.is_empty() && bearer == st.token;
        let seq = st.first_seq + st.requests.len();
        st.requests.push(Recorded { authorized, ..rec.clone() });
        (seq, st.take_fault(), st.retry_after_secs, st.latency, shared.release.subscribe())
    };
    if !latency.is_zero() && fault != Some(Fault::Hang) {
        tokio::time::sleep(latency).await;
    }
    let response = match fault {
        Some(Fault::Hang) => {
            let _ = release.changed().await;
            HsError::for_status(503, retry_after).into_response()
        }
        Some(Fault::Status(status)) => HsError::for_status(status, retry_after).into_response(),
        None => {
            let mut st = shared.lock();
            let answer = if let Some(secs) = st.over_rate_limit(at) {
                Err(HsError::rate_limited(secs))
            } else if bearer.is_empty() || bearer != st.token {
                Err(HsError::unauthorized())
            } else {
                route(&mut st, &rec, &body)
            };
            match answer {
                Ok((status, value)) => (status, axum::Json(value)).into_response(),
                Err(e) => e.into_response(),
            }
        }
    };
    let status = response.status().as_u16();
    let mut st = shared.lock();
    if let Some(i) = seq.checked_sub(st.first_seq)
        && let Some(r) = st.requests.get_mut(i)
    {
        r.status = status;
    }
    response
}

fn route(st: &mut Store, rec: &Recorded, raw: &Bytes) -> Answer {
    let path = rec.path.trim_end_matches('/');
    let by_email = rec.query.iter().any(|(k, v)| k == "idProperty" && v == "email");
    let body = || -> Result<Value, HsError> {
        serde_json::from_slice::<Value>(raw)
            .map_err(|e| HsError::validation(format!("Invalid input JSON on line {}, column {}: {e}", e.line(), e.column())))
    };
    match (rec.method.as_str(), path) {
        ("POST", p) if p == format!("{CONTACTS}/search") => search(st, &body()?),
        ("POST", CONTACTS) => create(st, &body()?),
        (m, p) if p.starts_with(CONTACTS) && p[CONTACTS.len()..].starts_with('/') && !p[CONTACTS.len() + 1..].contains('/') => {
            let id = percent_decode(&p[CONTACTS.len() + 1..]);
            match m {
                "GET" => {
                    let found = st.find(&id, by_email).and_then(|id| st.contacts.get(&id)).ok_or_else(HsError::not_found)?;
                    let props: Option<Vec<String>> = rec
                        .query
                        .iter()
                        .find(|(k, _)| k == "properties")
                        .map(|(_, v)| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect());
                    let only = props.unwrap_or_else(|| DEFAULT_SEARCH_PROPERTIES.iter().map(|s| (*s).to_owned()).collect());
                    Ok((StatusCode::OK, found.to_json(Some(&only))))
                }
                "PATCH" => update(st, &id, by_email, &body()?),
                _ => Err(HsError::new(405, "VALIDATION_ERROR", format!("HTTP method {m} is not supported by this resource"))),
            }
        }
        _ => Err(HsError::new(404, "OBJECT_NOT_FOUND", format!("Unable to infer object type from: {path}"))),
    }
}

/// The `properties` object of a create/update body as strings (HubSpot also takes numbers and
/// booleans), checked against the portal's properties and HubSpot's value rules.
fn properties_of(st: &Store, body: &Value) -> Result<BTreeMap<String, String>, HsError> {
    let Some(props) = body.get("properties").and_then(Value::as_object) else {
        return Err(HsError::validation("Invalid input JSON: properties is required and must be an object"));
    };
    let mut out = BTreeMap::new();
    for (name, v) in props {
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            _ => return Err(HsError::invalid_property(name, "INVALID_TYPE", &format!("{v} is not a valid value for {name}"))),
        };
        if !st.properties.contains(name) {
            return Err(HsError::invalid_property(name, "PROPERTY_DOESNT_EXIST", &format!("Property \"{name}\" does not exist")));
        }
        if READ_ONLY.contains(&name.as_str()) {
            return Err(HsError::invalid_property(
                name,
                "READ_ONLY_VALUE",
                &format!("{name} is a read only property; its value cannot be set."),
            ));
        }
        let value = match name.as_str() {
            "email" if !value.is_empty() => {
                let e = value.trim().to_lowercase();
                if !valid_email(&e) {
                    return Err(HsError::invalid_property(name, "INVALID_EMAIL", &format!("Email address {value} is invalid")));
                }
                e
            }
            "lifecyclestage" if !value.is_empty() && st.stage_index(&value).is_none() => {
                return Err(HsError::invalid_property(
                    name,
                    "INVALID_OPTION",
                    &format!("{value} was not one of the allowed options: [{}]", st.stages.join(", ")),
                ));
            }
            _ => value,
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn create(st: &mut Store, body: &Value) -> Answer {
    let props = properties_of(st, body)?;
    if let Some(email) = props.get("email").filter(|e| !e.is_empty())
        && let Some(existing) = st.by_email.get(email)
    {
        return Err(HsError::conflict(*existing));
    }
    let c = st.insert(props);
    Ok((StatusCode::CREATED, c.to_json(None)))
}

fn update(st: &mut Store, id: &str, by_email: bool, body: &Value) -> Answer {
    let id = st.find(id, by_email).ok_or_else(HsError::not_found)?;
    let props = properties_of(st, body)?;
    let current = st.contacts.get(&id).cloned().ok_or_else(HsError::not_found)?;
    if let Some(stage) = props.get("lifecyclestage").filter(|s| !s.is_empty()) {
        let from = current.lifecycle_stage();
        if let (Some(f), Some(t)) = (st.stage_index(from), st.stage_index(stage))
            && t < f
        {
            return Err(HsError::invalid_property(
                "lifecyclestage",
                "INVALID_OPTION",
                &format!(
                    "{stage} is not a valid lifecycle stage for this contact: the lifecycle stage can only move forward (currently {from}); clear it first to move it backward"
                ),
            ));
        }
    }
    if let Some(email) = props.get("email").filter(|e| !e.is_empty())
        && let Some(other) = st.by_email.get(email).copied()
        && other != id
    {
        return Err(HsError::conflict(other));
    }
    let now = now_iso();
    let c = st.contacts.get_mut(&id).ok_or_else(HsError::not_found)?;
    let old_email = c.properties.get("email").cloned();
    for (k, v) in &props {
        if v.is_empty() {
            c.properties.remove(k);
        } else {
            c.properties.insert(k.clone(), v.clone());
        }
    }
    c.properties.insert("lastmodifieddate".into(), now.clone());
    c.updated_at = now;
    let new_email = c.properties.get("email").cloned();
    // What HubSpot answers: the properties written plus its system ones.
    let mut shown: Vec<String> = props.keys().cloned().collect();
    shown.push("email".into());
    let answer = c.to_json(Some(&shown));
    if old_email != new_email {
        if let Some(e) = old_email {
            st.by_email.remove(&e);
        }
        if let Some(e) = new_email {
            st.by_email.insert(e, id);
        }
    }
    Ok((StatusCode::OK, answer))
}

fn search(st: &Store, body: &Value) -> Answer {
    let groups = body.get("filterGroups").and_then(Value::as_array).cloned().unwrap_or_default();
    if groups.len() > 5 {
        return Err(HsError::validation(format!("Too many filter groups: {} (maximum 5)", groups.len())));
    }
    let mut parsed: Vec<Vec<Filter>> = Vec::new();
    for g in &groups {
        let filters = g.get("filters").and_then(Value::as_array).cloned().unwrap_or_default();
        if filters.len() > 6 {
            return Err(HsError::validation(format!("Too many filters in a group: {} (maximum 6)", filters.len())));
        }
        parsed.push(filters.iter().map(Filter::parse).collect::<Result<_, _>>()?);
    }
    let limit = match body.get("limit") {
        None | Some(Value::Null) => 10,
        Some(v) => {
            v.as_u64().filter(|l| (1..=200).contains(l)).ok_or_else(|| HsError::validation("limit must be between 1 and 200"))? as usize
        }
    };
    let after = match body.get("after") {
        None | Some(Value::Null) => 0,
        Some(Value::String(s)) => s.parse::<usize>().map_err(|_| HsError::validation(format!("Invalid after: {s}")))?,
        Some(v) => v.as_u64().ok_or_else(|| HsError::validation("Invalid after"))? as usize,
    };
    let properties: Vec<String> = match body.get("properties").and_then(Value::as_array) {
        Some(p) if !p.is_empty() => p.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => DEFAULT_SEARCH_PROPERTIES.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut matching: Vec<&FakeContact> =
        st.contacts.values().filter(|c| parsed.is_empty() || parsed.iter().any(|group| group.iter().all(|f| f.matches(c)))).collect();
    if let Some(sort) = body.get("sorts").and_then(Value::as_array).and_then(|s| s.first()) {
        let prop = sort.get("propertyName").and_then(Value::as_str).unwrap_or("hs_object_id").to_owned();
        let desc = sort.get("direction").and_then(Value::as_str) == Some("DESCENDING");
        matching.sort_by(|a, b| {
            let (x, y) = (a.prop(&prop).unwrap_or(""), b.prop(&prop).unwrap_or(""));
            let ord = match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                _ => x.cmp(y),
            };
            if desc { ord.reverse() } else { ord }
        });
    }
    let total = matching.len();
    let page: Vec<Value> = matching.iter().skip(after).take(limit).map(|c| c.to_json(Some(&properties))).collect();
    let mut answer = json!({"total": total, "results": page});
    if after + limit < total {
        answer["paging"] = json!({"next": {"after": (after + limit).to_string()}});
    }
    Ok((StatusCode::OK, answer))
}

struct Filter {
    property: String,
    operator: String,
    values: Vec<String>,
}

impl Filter {
    fn parse(v: &Value) -> Result<Self, HsError> {
        let property =
            v.get("propertyName").and_then(Value::as_str).ok_or_else(|| HsError::validation("filter.propertyName is required"))?;
        let operator = v.get("operator").and_then(Value::as_str).unwrap_or("EQ");
        let scalar = |x: &Value| match x {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        let values: Vec<String> = match operator {
            "EQ" | "NEQ" => vec![
                v.get("value").and_then(scalar).ok_or_else(|| HsError::validation(format!("filter on {property}: value is required")))?,
            ],
            "IN" | "NOT_IN" => v
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(scalar).collect())
                .ok_or_else(|| HsError::validation(format!("filter on {property}: values is required")))?,
            "HAS_PROPERTY" | "NOT_HAS_PROPERTY" => Vec::new(),
            other => {
                return Err(HsError::validation(format!(
                    "Unsupported filter operator {other} (the fake knows EQ, NEQ, IN, NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY)"
                )));
            }
        };
        Ok(Self { property: property.to_owned(), operator: operator.to_owned(), values: values.iter().map(|s| s.to_lowercase()).collect() })
    }

    fn matches(&self, c: &FakeContact) -> bool {
        let value = c.prop(&self.property).map(str::to_lowercase);
        let is_in = |v: &Option<String>| v.as_ref().is_some_and(|v| self.values.iter().any(|w| w == v));
        match self.operator.as_str() {
            "EQ" | "IN" => is_in(&value),
            "NEQ" | "NOT_IN" => !is_in(&value),
            "HAS_PROPERTY" => value.is_some(),
            "NOT_HAS_PROPERTY" => value.is_none(),
            _ => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    struct Client {
        http: reqwest::Client,
        base: String,
        token: String,
    }

    impl Client {
        fn new(fake: &FakeHubSpot) -> Self {
            Self { http: reqwest::Client::new(), base: fake.base_url(), token: fake.token() }
        }

        async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Option<String>, Value) {
            let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base)).bearer_auth(&self.token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (status, retry_after, resp.json().await.unwrap_or(Value::Null))
        }
    }

    fn eq(prop: &str, value: &str) -> Value {
        json!({"filterGroups": [{"filters": [{"propertyName": prop, "operator": "EQ", "value": value}]}], "properties": ["email", "lifecyclestage"]})
    }

    #[tokio::test]
    async fn hubspots_rules_and_shapes() {
        let fake = FakeHubSpot::start().await.unwrap();
        let c = Client::new(&fake);
        let (s, _, created) =
            c.send("POST", CONTACTS, Some(json!({"properties": {"email": "Ada@Example.com", "lifecyclestage": "lead"}}))).await;
        assert_eq!(s, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["properties"]["email"], "ada@example.com");
        assert_eq!(created["properties"]["hs_object_id"], json!(id));
        assert_eq!(created["archived"], false);
        assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));

        // Unique email, any case.
        let (s, _, dup) = c.send("POST", CONTACTS, Some(json!({"properties": {"email": "ADA@example.com"}}))).await;
        assert_eq!((s, dup["category"].as_str(), dup["status"].as_str()), (409, Some("CONFLICT"), Some("error")));
        assert_eq!(dup["message"], format!("Contact already exists. Existing ID: {id}"));
        assert!(dup["correlationId"].is_string());

        // Search: case-insensitive EQ, requested properties plus the system ones.
        let (s, _, found) = c.send("POST", &format!("{CONTACTS}/search"), Some(eq("email", "ADA@EXAMPLE.COM"))).await;
        assert_eq!((s, found["total"].as_u64()), (200, Some(1)));
        let props = &found["results"][0]["properties"];
        assert_eq!((props["email"].as_str(), props["lifecyclestage"].as_str()), (Some("ada@example.com"), Some("lead")));
        assert!(props["hs_object_id"].is_string() && props["createdate"].is_string() && props.get("firstname").is_none());
        let (_, _, none) = c.send("POST", &format!("{CONTACTS}/search"), Some(eq("email", "nobody@example.com"))).await;
        assert_eq!(none, json!({"total": 0, "results": []}));

        // Stages only move forward unless cleared first.
        let path = format!("{CONTACTS}/{id}");
        assert_eq!(c.send("PATCH", &path, Some(json!({"properties": {"lifecyclestage": "customer"}}))).await.0, 200);
        let (s, _, back) = c.send("PATCH", &path, Some(json!({"properties": {"lifecyclestage": "lead"}}))).await;
        assert_eq!((s, back["category"].as_str()), (400, Some("VALIDATION_ERROR")));
        assert!(back["message"].as_str().unwrap().contains("can only move forward"), "{back}");
        assert_eq!(c.send("PATCH", &path, Some(json!({"properties": {"lifecyclestage": ""}}))).await.0, 200);
        assert_eq!(fake.contact_by_id(&id).unwrap().lifecycle_stage(), "");
        assert_eq!(c.send("PATCH", &path, Some(json!({"properties": {"lifecyclestage": "lead"}}))).await.0, 200);

        // Validation: emails, unknown properties, read-only ones, unknown stages, bad JSON.
        for (props, needle) in [
            (json!({"email": "no-at-sign"}), "INVALID_EMAIL"),
            (json!({"email": "a@b.c", "favourite_colour": "red"}), "PROPERTY_DOESNT_EXIST"),
            (json!({"email": "a@b.c", "hs_object_id": "1"}), "READ_ONLY_VALUE"),
            (json!({"email": "a@b.c", "lifecyclestage": "churned"}), "INVALID_OPTION"),
        ] {
            let (s, _, e) = c.send("POST", CONTACTS, Some(json!({ "properties": props }))).await;
            assert_eq!(s, 400, "{e}");
            assert!(
                e["message"].as_str().unwrap().starts_with("Property values were not valid")
                    && e["message"].as_str().unwrap().contains(needle)
            );
        }
        fake.define_property("favourite_colour");
        fake.define_stage("churned");
        let (s, _, second) = c
            .send(
                "POST",
                CONTACTS,
                Some(json!({"properties": {"email": "b@example.com", "favourite_colour": "red", "lifecyclestage": "churned"}})),
            )
            .await;
        assert_eq!(s, 201);
        let raw = c.http.post(format!("{}{CONTACTS}", c.base)).bearer_auth(&c.token).body("{not json").send().await.unwrap();
        assert_eq!(raw.status(), 400);

        // Changing an email to a taken one conflicts; GET by id and by email.
        let second_path = format!("{CONTACTS}/{}", second["id"].as_str().unwrap());
        assert_eq!(c.send("PATCH", &second_path, Some(json!({"properties": {"email": "ada@example.com"}}))).await.0, 409);
        let (s, _, got) =
            c.send("GET", &format!("{CONTACTS}/ADA%40example.com?idProperty=email&properties=email,lifecyclestage"), None).await;
        assert_eq!((s, got["id"].as_str(), got["properties"]["lifecyclestage"].as_str()), (200, Some(id.as_str()), Some("lead")));
        assert_eq!(c.send("GET", &format!("{CONTACTS}/424242"), None).await.0, 404);
        assert_eq!(c.send("PATCH", &format!("{CONTACTS}/424242"), Some(json!({"properties": {}}))).await.0, 404);
        assert_eq!(c.send("GET", "/crm/v3/objects/nothing", None).await.0, 404);
        assert_eq!(fake.contact_count(), 2);
    }

    #[tokio::test]
    async fn search_pages_and_filters() {
        let fake = FakeHubSpot::start().await.unwrap();
        for i in 0..250 {
            fake.put_contact(&format!("user{i:03}@example.com"), &[("lifecyclestage", if i % 5 == 0 { "customer" } else { "lead" })]);
        }
        let c = Client::new(&fake);
        let search = format!("{CONTACTS}/search");
        let body =
            json!({"filterGroups": [{"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}]}], "limit": 200});
        let (_, _, first) = c.send("POST", &search, Some(body.clone())).await;
        assert_eq!((first["total"].as_u64(), first["results"].as_array().unwrap().len()), (Some(200), 200));
        assert!(first.get("paging").is_none());
        let (_, _, customers) = c
            .send(
                "POST",
                &search,
                Some(json!({"filterGroups": [{"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "customer"}]}], "limit": 20, "sorts": [{"propertyName": "email", "direction": "DESCENDING"}]})),
            )
            .await;
        assert_eq!(customers["total"], 50);
        assert_eq!(customers["results"][0]["properties"]["email"], "user245@example.com");
        assert_eq!(customers["paging"]["next"]["after"], "20");
        let (_, _, next) = c
            .send(
                "POST",
                &search,
                Some(json!({"filterGroups": [{"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "customer"}]}], "limit": 20, "after": "40"})),
            )
            .await;
        assert_eq!(next["results"].as_array().unwrap().len(), 10);
        // OR of groups, IN.
        let (_, _, either) = c
            .send(
                "POST",
                &search,
                Some(json!({"filterGroups": [
                    {"filters": [{"propertyName": "email", "operator": "EQ", "value": "user001@example.com"}]},
                    {"filters": [{"propertyName": "email", "operator": "IN", "values": ["USER002@example.com", "user003@example.com"]}]}
                ]})),
            )
            .await;
        assert_eq!(either["total"], 3);
        assert_eq!(c.send("POST", &search, Some(json!({"limit": 500}))).await.0, 400);
    }

    #[tokio::test]
    async fn failure_modes_switch_and_the_port_comes_back() {
        let fake = FakeHubSpot::start().await.unwrap();
        let c = Client::new(&fake);
        let search = format!("{CONTACTS}/search");
        let bad = Client { token: "pat-na1-wrong".into(), ..Client::new(&fake) };
        let (s, _, e) = bad.send("POST", &search, Some(json!({}))).await;
        assert_eq!((s, e["category"].as_str()), (401, Some("INVALID_AUTHENTICATION")));
        assert!(!fake.requests()[0].authorized);

        fake.fail_next(2, 503);
        assert_eq!(c.send("POST", &search, Some(json!({}))).await.0, 503);
        assert_eq!(c.send("POST", &search, Some(json!({}))).await.0, 503);
        assert_eq!(c.send("POST", &search, Some(json!({}))).await.0, 200);
        fake.set_retry_after(7);
        fake.fail_always(429);
        let (s, retry_after, e) = c.send("POST", &search, Some(json!({}))).await;
        assert_eq!((s, retry_after.as_deref(), e["policyName"].as_str()), (429, Some("7"), Some("TEN_SECONDLY_ROLLING")));
        fake.recover();

        fake.limit_rate(3, Duration::from_secs(60));
        let statuses: Vec<u16> = search_times(&c, &search, 5).await;
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "{statuses:?}");
        fake.no_rate_limit();

        fake.hang_next(1);
        let hung = c
            .http
            .post(format!("{}{search}", c.base))
            .bearer_auth(&c.token)
            .json(&json!({}))
            .timeout(Duration::from_millis(200))
            .send()
            .await;
        assert!(hung.unwrap_err().is_timeout());
        assert_eq!(fake.requests().last().unwrap().status, 0, "still in flight");

        let port = fake.addr().port();
        fake.stop().await;
        assert!(!fake.is_running());
        let refused = reqwest::Client::new().post(format!("{}{search}", c.base)).json(&json!({})).send().await.unwrap_err();
        assert!(refused.is_connect(), "{refused:?}");
        fake.restart().await.unwrap();
        assert_eq!(fake.addr().port(), port);
        assert_eq!(c.send("POST", &search, Some(json!({}))).await.0, 200);
        fake.shutdown().await;
    }

    async fn search_times(c: &Client, path: &str, n: usize) -> Vec<u16> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(c.send("POST", path, Some(json!({}))).await.0);
        }
        out
    }
}
