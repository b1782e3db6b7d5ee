//! The real CRM: HubSpot's CRM v3 contacts API over HTTPS (reqwest + rustls), used when a
//! private-app token is configured.
//!
//! Wire format (JSON, `Authorization: Bearer <token>`):
//! - find: `POST /crm/v3/objects/contacts/search` with one `EQ` filter on the lower-cased `email`
//!   (HubSpot compares emails case-insensitively), oldest contact first, `limit: 1`.
//! - create: `POST /crm/v3/objects/contacts` `{"properties": {...}}` → 201. A 409 "Contact already
//!   exists. Existing ID: <id>" (another writer created it first) links to that contact: it is read
//!   (`GET /crm/v3/objects/contacts/<id>`) and, where it differs, updated with these properties, so
//!   a create race ends in one contact with the wanted properties.
//! - update: `PATCH /crm/v3/objects/contacts/<id>` `{"properties": {...}}`. HubSpot moves
//!   `lifecyclestage` only forward, so a backward move (`domain::is_backward`) first PATCHes
//!   `{"lifecyclestage": ""}`, then the update. Only known properties are sent (empty text and
//!   unknown values are left as HubSpot holds them).
//!
//! Properties written: `email`, `firstname`/`lastname` (the name split at its first space),
//! `company` (the account's name), `lifecyclestage`, and the custom properties
//! `switchboard_account_id`, `switchboard_plan`, `stripe_customer_id` and
//! `switchboard_access_status`, which must exist in the HubSpot portal (HubSpot refuses unknown
//! properties with a 400, which lands in the DLQ with HubSpot's message).
//!
//! Failures: 429 is transient with HubSpot's `Retry-After` (a wait of up to
//! [`MAX_IN_PROCESS_WAIT`] is waited out here and the request sent once more); 5xx, 408/423,
//! timeouts and refused or reset connections are transient; other 4xx are permanent with HubSpot's
//! `message` as the reason (401/403: "HubSpot rejected the token"). The token is never logged and
//! never part of an error or of `Debug` output.
//!
//! Every request first takes a slot of a client-side [`RateBudget`] (default 190 per 10 s, HubSpot's
//! private-app limit), shared by every task using this adapter: over budget, requests wait for a
//! slot rather than fail. Metrics: `crm_requests_total{op, outcome}` per HTTP request, `op` one of
//! `search`, `create`, `get`, `update`, `clear_stage`, `outcome` one of `ok`, `conflict`,
//! `rate_limited`, `transient`, `permanent`.

use std::{collections::VecDeque, fmt, str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::{Method, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio::{sync::Mutex, time::Instant};
use tracing::debug;

use crate::{
    crm::{Contact, ContactProps, Crm, CrmError},
    domain::is_backward,
};

/// HubSpot's API.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

/// A 429 asking to wait at most this long is waited out in-process (once); a longer one becomes
/// `CrmError::Transient { retry_after }` for the retry ladder.
pub const MAX_IN_PROCESS_WAIT: Duration = Duration::from_secs(2);

const CONTACTS: &str = "/crm/v3/objects/contacts";

/// The properties crm-sync reads back (to compare after a create conflict).
const MANAGED: [&str; 9] = [
    "email",
    "firstname",
    "lastname",
    "company",
    "lifecyclestage",
    "switchboard_account_id",
    "switchboard_plan",
    "stripe_customer_id",
    "switchboard_access_status",
];

/// At most `max` requests in any `per` (a sliding window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    pub max: u32,
    pub per: Duration,
}

impl RateBudget {
    pub fn new(max: u32, per: Duration) -> Self {
        Self { max, per }
    }

    /// `190/10s`, `5/1s`, `100/500ms` (units as in the retry ladder: ms, s, m, h, d).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a rate like 190/10s");
        let (n, per) = s.split_once('/').ok_or_else(bad)?;
        let max: u32 = n.trim().parse().map_err(|_| bad())?;
        if max == 0 {
            return Err(format!("{s:?}: the number of requests must be at least 1"));
        }
        let per = sb_bus::config::parse_duration(per.trim())?;
        Ok(Self { max, per })
    }
}

impl Default for RateBudget {
    /// HubSpot's limit for private apps: 190 requests per 10 seconds.
    fn default() -> Self {
        Self { max: 190, per: Duration::from_secs(10) }
    }
}

impl FromStr for RateBudget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for RateBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.max, sb_bus::config::format_duration(self.per))
    }
}

/// The shared sliding window: the start times of the last `max` requests. Waiters queue on the
/// (fair) lock, so slots are handed out in arrival order.
#[derive(Debug)]
struct Limiter {
    budget: RateBudget,
    sent: Mutex<VecDeque<Instant>>,
}

impl Limiter {
    async fn acquire(&self) {
        let mut sent = self.sent.lock().await;
        loop {
            let now = Instant::now();
            while sent.front().is_some_and(|t| now.duration_since(*t) >= self.budget.per) {
                sent.pop_front();
            }
            if sent.len() < self.budget.max as usize {
                sent.push_back(now);
                return;
            }
            let Some(oldest) = sent.front().copied() else { continue };
            tokio::time::sleep_until(oldest + self.budget.per).await;
        }
    }
}

/// HubSpot's CRM v3 contacts API. Cheap to share (`Arc`); every clone of the `Arc` uses the same
/// rate budget.
pub struct HubSpot {
    http: reqwest::Client,
    base: String,
    token: SecretString,
    limiter: Arc<Limiter>,
    timeout: Duration,
}

impl fmt::Debug for HubSpot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSpot")
            .field("base", &self.base)
            .field("token", &"[redacted]")
            .field("budget", &self.limiter.budget)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Search,
    Create,
    Get,
    Update,
    ClearStage,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Search => "search",
            Op::Create => "create",
            Op::Get => "get",
            Op::Update => "update",
            Op::ClearStage => "clear_stage",
        }
    }
}

/// An HTTP answer other than a 429 (those are handled in `call`).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    /// HubSpot's `message`, or a short description of a body without one.
    fn message(&self) -> String {
        match self.body.get("message").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ => format!("HubSpot answered {}", self.status),
        }
    }

    /// The answer as a result: 2xx is `Ok`, the rest the matching `CrmError`.
    fn ok(self) -> Result<Value, CrmError> {
        let s = self.status;
        if s.is_success() {
            return Ok(self.body);
        }
        Err(if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN {
            CrmError::Permanent(format!("HubSpot rejected the token ({s})"))
        } else if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::LOCKED {
            let reason = match self.body.get("message").and_then(Value::as_str).filter(|m| !m.is_empty()) {
                Some(m) => format!("HubSpot answered {s}: {m}"),
                None => format!("HubSpot answered {s}"),
            };
            CrmError::Transient { reason, retry_after: None }
        } else {
            CrmError::Permanent(self.message())
        })
    }
}

impl HubSpot {
    /// An adapter for the API at `base_url` (`https://api.hubapi.com`, or a fake's `http://...`).
    /// `timeout` bounds each request, connecting included.
    pub fn new(base_url: &str, token: SecretString, budget: RateBudget, timeout: Duration) -> anyhow::Result<Self> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).map_err(|e| anyhow::anyhow!("HubSpot base URL {base:?}: {e}"))?;
        anyhow::ensure!(matches!(url.scheme(), "http" | "https"), "HubSpot base URL {base:?} must be http:// or https://");
        anyhow::ensure!(budget.max > 0 && !budget.per.is_zero(), "HubSpot rate budget {budget} allows no request");
        anyhow::ensure!(!token.expose_secret().trim().is_empty(), "the HubSpot token is empty");
        anyhow::ensure!(
            header::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).is_ok(),
            "the HubSpot token contains characters that cannot be sent in a header"
        );
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("switchboard-crm-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("HubSpot HTTP client: {e}"))?;
        Ok(Self { http, base, token, limiter: Arc::new(Limiter { budget, sent: Mutex::new(VecDeque::new()) }), timeout })
    }

    pub fn budget(&self) -> RateBudget {
        self.limiter.budget
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends one request (taking a budget slot first). A 429 whose `Retry-After` is at most
    /// [`MAX_IN_PROCESS_WAIT`] is waited out and sent once more; any other 429, or a second one,
    /// is `Transient` with the wait HubSpot asked for. Transport failures are `Transient`.
    async fn call(&self, op: Op, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, CrmError> {
        let url = format!("{}{path}", self.base);
        let mut waited = false;
        loop {
            self.limiter.acquire().await;
            let started = Instant::now();
            let mut req = self.http.request(method.clone(), &url).bearer_auth(self.token.expose_secret());
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    count(op, "transient");
                    let err = self.transport_error(&e);
                    debug!(op = op.as_str(), error = %err, "HubSpot request failed");
                    return Err(err);
                }
            };
            let status = resp.status();
            let retry_after = resp.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    count(op, "transient");
                    return Err(self.transport_error(&e));
                }
            };
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            debug!(op = op.as_str(), status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "HubSpot request");
            if status == StatusCode::TOO_MANY_REQUESTS {
                count(op, "rate_limited");
                match retry_after {
                    Some(wait) if !waited && wait <= MAX_IN_PROCESS_WAIT => {
                        waited = true;
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    _ => {
                        let answer = Answer { status, body };
                        return Err(CrmError::Transient { reason: format!("HubSpot rate limit: {}", answer.message()), retry_after });
                    }
                }
            }
            let outcome = if status.is_success() {
                "ok"
            } else if status == StatusCode::CONFLICT && matches!(op, Op::Create) {
                "conflict"
            } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::LOCKED {
                "transient"
            } else {
                "permanent"
            };
            count(op, outcome);
            return Ok(Answer { status, body });
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> CrmError {
        // The URL is left out (reasons stay short); the token is a header, never in an error.
        let reason = if e.is_timeout() {
            format!("HubSpot did not answer within {:?}", self.timeout)
        } else if e.is_connect() {
            format!("cannot connect to HubSpot: {}", root_cause(e))
        } else {
            format!("HubSpot request failed: {}", root_cause(e))
        };
        CrmError::Transient { reason, retry_after: None }
    }

    /// `GET /crm/v3/objects/contacts/<id>` with the managed properties.
    async fn get(&self, id: &str) -> Result<(Contact, Map<String, Value>), CrmError> {
        let path = format!("{CONTACTS}/{}?properties={}", checked_id(id)?, MANAGED.join(","));
        let answer = self.call(Op::Get, Method::GET, &path, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            // Said to exist a moment ago: merged or deleted in between; the next attempt finds out.
            return Err(CrmError::Transient { reason: format!("HubSpot contact {id} vanished: {}", answer.message()), retry_after: None });
        }
        let body = answer.ok()?;
        let contact = contact_from(&body, "")?;
        let props = body.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        Ok((contact, props))
    }

    async fn patch(&self, op: Op, id: &str, properties: Map<String, Value>) -> Result<Value, CrmError> {
        let path = format!("{CONTACTS}/{}", checked_id(id)?);
        self.call(op, Method::PATCH, &path, Some(&json!({ "properties": properties }))).await?.ok()
    }
}

fn count(op: Op, outcome: &'static str) {
    metrics::counter!("crm_requests_total", "op" => op.as_str(), "outcome" => outcome).increment(1);
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `Retry-After` in (possibly fractional) seconds; HTTP dates are not used by HubSpot.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// HubSpot ids are numeric; anything else would change the request path.
fn checked_id(id: &str) -> Result<&str, CrmError> {
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Ok(id)
    } else {
        Err(CrmError::Permanent(format!("not a HubSpot contact id: {id:?}")))
    }
}

fn normalise(email: &str) -> Result<String, CrmError> {
    let e = email.trim().to_lowercase();
    if e.is_empty() { Err(CrmError::Permanent("the user has no email to find a HubSpot contact by".into())) } else { Ok(e) }
}

/// A contact object (`{"id", "properties": {...}}`) as a `Contact`; `email` is the fallback when
/// the answer does not carry the property.
fn contact_from(obj: &Value, email: &str) -> Result<Contact, CrmError> {
    let props = obj.get("properties");
    let prop = |name: &str| props.and_then(|p| p.get(name)).and_then(Value::as_str).map(str::to_owned);
    let id = obj.get("id").and_then(Value::as_str).map(str::to_owned).or_else(|| prop("hs_object_id")).filter(|i| !i.is_empty());
    let Some(id) = id else {
        // A 2xx without an id: not HubSpot's shape; a later attempt can find the contact by email.
        return Err(CrmError::Transient { reason: "HubSpot answered without a contact id".into(), retry_after: None });
    };
    Ok(Contact {
        id,
        email: prop("email").map(|e| e.to_lowercase()).unwrap_or_else(|| email.to_owned()),
        lifecycle_stage: prop("lifecyclestage").unwrap_or_default(),
    })
}

/// The known (non-empty) properties to write; `email` and `lifecyclestage` are added by the caller.
fn properties(p: &ContactProps) -> Map<String, Value> {
    let mut m = Map::new();
    let mut set = |k: &str, v: &str| {
        let v = v.trim();
        if !v.is_empty() {
            m.insert(k.to_owned(), json!(v));
        }
    };
    let name = p.name.trim();
    let (first, last) = name.split_once(char::is_whitespace).map_or((name, ""), |(f, l)| (f, l.trim()));
    set("firstname", first);
    set("lastname", last);
    set("company", &p.account_name);
    set("switchboard_account_id", &p.account_id.map(|a| a.to_string()).unwrap_or_default());
    set("switchboard_plan", &p.plan);
    set("stripe_customer_id", &p.stripe_customer_id);
    set("switchboard_access_status", p.access_status.map_or("", |a| a.as_str()));
    set("lifecyclestage", p.lifecycle_stage.as_ref().map_or("", |s| s.as_str()));
    m
}

/// The `Existing ID: <id>` of HubSpot's 409 message.
fn existing_id(message: &str) -> Option<String> {
    let rest = &message[message.find("Existing ID:")? + "Existing ID:".len()..];
    let id: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
    (!id.is_empty()).then_some(id)
}

#[async_trait]
impl Crm for HubSpot {
    fn name(&self) -> &'static str {
        "hubspot"
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<Contact>, CrmError> {
        let email = normalise(email)?;
        let body = json!({
            "filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}],
            "properties": ["email", "lifecyclestage"],
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": 1,
        });
        let found = self.call(Op::Search, Method::POST, &format!("{CONTACTS}/search"), Some(&body)).await?.ok()?;
        match found.get("results").and_then(Value::as_array).and_then(|r| r.first()) {
            Some(obj) => Ok(Some(contact_from(obj, &email)?)),
            None => Ok(None),
        }
    }

    async fn create(&self, email: &str, props: &ContactProps) -> Result<Contact, CrmError> {
        let email = normalise(email)?;
        let mut properties = properties(props);
        properties.insert("email".into(), json!(email));
        let answer = self.call(Op::Create, Method::POST, CONTACTS, Some(&json!({ "properties": properties }))).await?;
        if answer.status != StatusCode::CONFLICT {
            return contact_from(&answer.ok()?, &email);
        }
        // Someone created it first: link to theirs and make it ours.
        let message = answer.message();
        let (existing, current) = match existing_id(&message) {
            Some(id) => self.get(&id).await?,
            None => match self.find_by_email(&email).await? {
                Some(c) => self.get(&c.id).await?,
                None => {
                    return Err(CrmError::Transient {
                        reason: format!("HubSpot says the contact exists but cannot find it yet: {message}"),
                        retry_after: None,
                    });
                }
            },
        };
        debug!(contact = %existing.id, "HubSpot contact existed: linked");
        let differs = properties.iter().any(|(k, v)| current.get(k) != Some(v));
        if differs { self.update(&existing, props).await } else { Ok(existing) }
    }

    async fn update(&self, contact: &Contact, props: &ContactProps) -> Result<Contact, CrmError> {
        let properties = properties(props);
        if properties.is_empty() {
            return Ok(contact.clone());
        }
        let stage = props.lifecycle_stage.as_ref();
        if let Some(to) = stage
            && is_backward(&contact.lifecycle_stage, to)
        {
            let mut clear = Map::new();
            clear.insert("lifecyclestage".into(), json!(""));
            self.patch(Op::ClearStage, &contact.id, clear).await?;
        }
        let answer = self.patch(Op::Update, &contact.id, properties).await?;
        let mut updated = contact_from(&answer, &contact.email)?;
        if updated.lifecycle_stage.is_empty() {
            updated.lifecycle_stage = stage.map_or_else(|| contact.lifecycle_stage.clone(), |s| s.as_str().to_owned());
        }
        Ok(updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse() {
        assert_eq!(RateBudget::parse("190/10s"), Ok(RateBudget::new(190, Duration::from_secs(10))));
        assert_eq!(RateBudget::parse(" 5 / 1s "), Ok(RateBudget::new(5, Duration::from_secs(1))));
        assert_eq!("100/500ms".parse::<RateBudget>(), Ok(RateBudget::new(100, Duration::from_millis(500))));
        assert_eq!(RateBudget::default().to_string(), "190/10s");
        for bad in ["", "190", "0/10s", "x/10s", "10/0s", "10/10", "-1/1s"] {
            assert!(RateBudget::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(existing_id("Contact already exists. Existing ID: 2926551").as_deref(), Some("2926551"));
        assert_eq!(existing_id("A contact with email a@b.c already exists. Existing ID:42").as_deref(), Some("42"));
        assert_eq!(existing_id("Conflict"), None);
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert!(checked_id("123").is_ok() && checked_id("../x").is_err() && checked_id("").is_err());
        let p = properties(&ContactProps { name: "Ada  King Lovelace".into(), plan: "pro".into(), ..Default::default() });
        assert_eq!(p.get("firstname"), Some(&json!("Ada")));
        assert_eq!(p.get("lastname"), Some(&json!("King Lovelace")));
        assert_eq!(p.get("switchboard_plan"), Some(&json!("pro")));
        assert!(!p.contains_key("lifecyclestage") && !p.contains_key("company"), "empty = unknown: not sent");
    }
}
