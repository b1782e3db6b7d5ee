//! The system the regression suite runs: the six debug binaries as processes, with the outside
//! world as fakes that speak its wire formats and can be told to fail — HubSpot for crm-sync, an
//! SMTP server for identity, OpenAI for ai-assist — and a recorder between billing's local
//! checkout and the gateway's webhook (it sees what Stripe would send, so a test can send it again).

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use sb_testkit::{hubspot::FakeHubSpot, listening::Listening, openai::FakeOpenAi, smtp::FakeSmtp, wait_for};
use serde_json::Value;
use sqlx::Connection;
use system_tests::{PASSWORD, Six, bin_of};

/// One webhook as billing's local checkout delivered it: Stripe's body and signature header.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub body: Bytes,
    pub signature: String,
}

#[derive(Clone)]
struct Relay {
    gateway: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Delivered>>>,
}

async fn relay(State(r): State<Relay>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    r.seen.lock().unwrap().push(Delivered { body: body.clone(), signature: signature.clone() });
    let answer = r
        .http
        .post(format!("{}/webhooks/stripe", r.gateway))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match answer {
        Ok(a) => (StatusCode::from_u16(a.status().as_u16()).unwrap(), a.text().await.unwrap_or_default()),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

pub struct System {
    pub six: Six,
    pub hubspot: FakeHubSpot,
    pub smtp: FakeSmtp,
    pub ai: FakeOpenAi,
    /// Does not follow redirects (the local checkout answers with one).
    pub http: reqwest::Client,
    pub base: String,
    delivered: Arc<Mutex<Vec<Delivered>>>,
    /// Each service's settings, to start it again.
    env: Vec<(&'static str, Vec<(String, String)>)>,
    _relay: Listening,
}

/// What a test's settings may depend on: where the six will run and the fakes.
pub struct Setup<'a> {
    pub layout: &'a Six,
    pub hubspot: &'a FakeHubSpot,
    pub smtp: &'a FakeSmtp,
    pub ai: &'a FakeOpenAi,
}

/// A signed-up customer.
pub struct Customer {
    pub email: String,
    pub token: String,
    pub account_id: String,
}

impl System {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the six with the fakes wired in, plus `extra` settings for all of them.
    pub async fn start_with(extra: &[(&str, String)]) -> Self {
        Self::start_configured(|_| extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()).await
    }

    /// Starts the six with the fakes wired in, plus the settings `configure` returns for all of
    /// them (they replace the defaults of the same name); it sees the layout and the fakes.
    pub async fn start_configured(configure: impl FnOnce(&Setup<'_>) -> Vec<(String, String)>) -> Self {
        let hubspot = FakeHubSpot::start().await.unwrap();
        let smtp = FakeSmtp::start().await.unwrap();
        let ai = FakeOpenAi::start().await.unwrap();
        let mut layout = Six::layout();
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let state = Relay { gateway: layout.gateway_url.clone(), http: reqwest::Client::new(), seen: delivered.clone() };
        let relay_server = Listening::start(Router::new().route("/webhooks/stripe", post(relay)).with_state(state)).await.unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("CRM_SYNC_HUBSPOT_TOKEN".into(), hubspot.token()),
            ("CRM_SYNC_HUBSPOT_BASE_URL".into(), hubspot.base_url()),
            ("IDENTITY_SMTP_URL".into(), format!("smtp://{}:{}", smtp.host(), smtp.port())),
            ("AI_ASSIST_OPENAI_API_KEY".into(), ai.key()),
            ("AI_ASSIST_OPENAI_BASE_URL".into(), ai.base_url()),
            ("BILLING_LOCAL_WEBHOOK_URL".into(), format!("http://{}/webhooks/stripe", relay_server.addr())),
        ];
        for (k, v) in configure(&Setup { layout: &layout, hubspot: &hubspot, smtp: &smtp, ai: &ai }) {
            env.retain(|(key, _)| *key != k);
            env.push((k, v));
        }
        // Later settings win: these may replace the layout's own (a database URL, say).
        let env: Vec<(&'static str, Vec<(String, String)>)> =
            sb_bus::catalog::SERVICES.iter().map(|s| (*s, layout.wiring(s).into_iter().chain(env.iter().cloned()).collect())).collect();
        layout.running = env
            .iter()
            .map(|(s, all)| system_tests::spawn_with(&bin_of("debug", s), s, &layout.prefix, &layout.db, &layout.dir, layout.ports[s], all))
            .collect();
        layout.wait_ready().await;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let base = layout.gateway_url.clone();
        Self { six: layout, hubspot, smtp, ai, http, base, delivered, env, _relay: relay_server }
    }

    /// `kill -9` of `service`, then the same binary started again with the same settings (its
    /// log continues); returns once it answers `/readyz`.
    pub async fn kill_and_restart(&mut self, service: &str) {
        let i = self.six.running.iter().position(|r| r.name == service).unwrap();
        let r = &mut self.six.running[i];
        r.child.kill().unwrap();
        r.child.wait().unwrap();
        let (name, all) = self.env.iter().find(|(s, _)| *s == service).unwrap();
        let six = &self.six;
        let again = system_tests::spawn_with(&bin_of("debug", name), name, &six.prefix, &six.db, &six.dir, six.ports[name], all);
        self.six.running[i] = again;
        let url = format!("http://127.0.0.1:{}/readyz", self.six.ports[name].0);
        let http = reqwest::Client::new();
        wait_for(Duration::from_secs(90), &format!("{service} ready again"), || {
            let r = http.get(&url).send();
            async move { r.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The webhooks billing's local checkout has delivered so far.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.delivered.lock().unwrap().clone()
    }

    /// A connection to `service`'s own database.
    pub async fn db(&self, service: &str) -> sqlx::PgConnection {
        let url = format!("postgres://postgres@127.0.0.1:5432/{}_{}", self.six.db, service.replace('-', "_"));
        sqlx::PgConnection::connect(&url).await.unwrap()
    }

    pub async fn count(&self, service: &str, sql: &str) -> i64 {
        let mut db = self.db(service).await;
        let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&mut db).await.unwrap();
        db.close().await.unwrap();
        n
    }

    pub async fn sign_up(&self, email: &str) -> Customer {
        let body = serde_json::json!({"email": email, "password": PASSWORD, "name": "Regression", "account_name": "Regression Co"});
        let r = self.http.post(self.url("/v1/signup")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201, "sign-up of {email}");
        let v: Value = r.json().await.unwrap();
        let token = v["token"].as_str().unwrap().to_owned();
        let me: Value = self.http.get(self.url("/v1/me")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        Customer { email: email.to_owned(), token, account_id: me["account"]["id"].as_str().unwrap().to_owned() }
    }

    /// Pays the customer's `pro` checkout on the local checkout page.
    pub async fn pay(&self, c: &Customer) {
        assert!(system_tests::pay(&self.http, &self.base, &c.token).await, "checkout of {} paid", c.email);
    }

    /// The customer's portal access status as `/v1/me` shows it.
    pub async fn access(&self, token: &str) -> String {
        let me: Value = self.http.get(self.url("/v1/me")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        me["access"]["status"].as_str().unwrap_or("").to_owned()
    }

    pub async fn wait_access(&self, token: &str, status: &str, within: Duration) {
        wait_for(within, &format!("access {status}"), || async move { (self.access(token).await == status).then_some(()) }).await;
    }

    /// A staff user made as an operator makes one (`identity create-user`), signed in.
    pub async fn staff(&self, email: &str, role: &str) -> String {
        let url = format!("postgres://postgres@127.0.0.1:5432/{}_identity", self.six.db);
        let out = system_tests::create_user(&url, email, role, "Staff", PASSWORD);
        assert!(out.status.success(), "create-user: {}", String::from_utf8_lossy(&out.stderr));
        self.log_in(email).await
    }

    pub async fn log_in(&self, email: &str) -> String {
        let r =
            self.http.post(self.url("/v1/login")).json(&serde_json::json!({"email": email, "password": PASSWORD})).send().await.unwrap();
        assert_eq!(r.status(), 200, "log-in of {email}");
        r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    /// Messages in this system's queues (ready and unacknowledged, as the broker counts them
    /// now), by queue.
    pub fn queues(&self) -> Vec<(String, u64)> {
        let out = sb_testkit::rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "name", "messages"]);
        out.lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(name, _)| name.starts_with(&format!("{}.", self.six.prefix)))
            .map(|(name, n)| (name.to_owned(), n.trim().parse::<u64>().unwrap_or(0)))
            .collect()
    }

    /// Messages on their way (work and retry queues; what is parked in a DLQ waits for an
    /// operator, see [`System::parked`]).
    fn queued(&self) -> u64 {
        self.queues().into_iter().filter(|(q, _)| !q.ends_with(".dlq")).map(|(_, n)| n).sum()
    }

    /// Messages parked in this system's DLQs.
    pub fn parked(&self) -> u64 {
        self.queues().into_iter().filter(|(q, _)| q.ends_with(".dlq")).map(|(_, n)| n).sum()
    }

    /// Messages parked in `service`'s DLQ.
    pub fn parked_in(&self, service: &str) -> u64 {
        let dlq = format!("{}.{service}.dlq", self.six.prefix);
        self.queues().into_iter().find(|(q, _)| *q == dlq).map_or(0, |(_, n)| n)
    }

    /// Waits until `count()` (a DLQ count) is `n`. A quorum queue counts an acknowledged message
    /// out a moment after the acknowledgement, so a count right after a replay may be stale.
    pub async fn wait_parked(&self, what: &str, n: u64, count: impl Fn() -> u64) {
        wait_for(Duration::from_secs(60), &format!("{n} parked ({what})"), || {
            let got = count();
            async move { (got == n).then_some(()) }
        })
        .await;
    }

    /// What an operator does once the cause is fixed: `switchboard dlq replay <service> --all`.
    /// How many messages it replayed.
    pub fn replay(&self, service: &str) -> u64 {
        let out = Command::new(bin_of("debug", "switchboard"))
            .args(["--prefix", &self.six.prefix, "--amqp-url", &sb_testkit::amqp_url(), "--json", "dlq", "replay", service, "--all"])
            .output()
            .unwrap();
        assert!(out.status.success(), "replay {service}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["replayed"].as_u64().unwrap()
    }

    /// Events committed but not yet on the broker, in every service, plus webhooks billing's
    /// local checkout has still to deliver.
    async fn unpublished(&self) -> i64 {
        let mut n = 0;
        for s in sb_bus::catalog::SERVICES {
            n += self.count(s, "SELECT count(*) FROM sb_outbox WHERE published_at IS NULL").await;
        }
        n + self.count("billing", "SELECT count(*) FROM local_webhooks").await
    }

    /// Waits until nothing is under way: no event waiting in an outbox, no message in a work or
    /// retry queue (a handler acknowledges only after its effects and its own events are
    /// committed), twice in a row.
    pub async fn settled(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut quiet = 0;
        while quiet < 2 {
            let idle = self.unpublished().await == 0 && self.queued() == 0;
            quiet = if idle { quiet + 1 } else { 0 };
            assert!(
                tokio::time::Instant::now() < deadline,
                "still busy after 60 s: {} events unpublished, queues {:?}",
                self.unpublished().await,
                self.queues()
            );
            if quiet < 2 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    pub async fn stop(mut self) {
        self.six.kill_and_clean_up(0).await;
    }
}
