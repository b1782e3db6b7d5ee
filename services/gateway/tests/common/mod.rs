//! The gateway's tests start identity, billing, crm-sync, support-router (and, when asked, ai-assist) and the gateway in-process on one shared
//! bus prefix with the shared harness (`sb_testkit::service`), and sign up or create the users a
//! test needs.

#![allow(dead_code, clippy::unwrap_used)] // test support code: a failed unwrap is a failed test

use sb_testkit::{service::TestService, unique};
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery staple";
pub use sb_testkit::service::delete_prefix;

pub struct System {
    pub prefix: String,
    pub identity: TestService,
    pub billing: TestService,
    pub crm_sync: TestService,
    pub support: TestService,
    /// Only when a test asks for AI drafts ([`start_with_ai`]).
    pub ai: Option<TestService>,
    pub gateway: TestService,
    pub base: String,
    pub web: reqwest::Client,
}

pub async fn start(identity_extra: &[(&str, &str)], gateway_extra: &[(&str, &str)]) -> System {
    start_with(identity_extra, &[], gateway_extra).await
}

/// identity, billing (embedded local checkout unless the extras configure Stripe), crm-sync
/// (embedded contact book) and the gateway.
pub async fn start_with(identity_extra: &[(&str, &str)], billing_extra: &[(&str, &str)], gateway_extra: &[(&str, &str)]) -> System {
    start_full(identity_extra, billing_extra, &[], gateway_extra).await
}

/// As [`start_with`], with settings for crm-sync too (e.g. a HubSpot token and base URL, or a
/// longer `SWITCHBOARD_RETRY_DELAYS`).
pub async fn start_full(
    identity_extra: &[(&str, &str)],
    billing_extra: &[(&str, &str)],
    crm_extra: &[(&str, &str)],
    gateway_extra: &[(&str, &str)],
) -> System {
    start_full_via(identity_extra, billing_extra, crm_extra, gateway_extra, None).await
}

/// As [`start_full`], with ai-assist too (the local drafter).
pub async fn start_full_with_ai(
    identity_extra: &[(&str, &str)],
    billing_extra: &[(&str, &str)],
    crm_extra: &[(&str, &str)],
    gateway_extra: &[(&str, &str)],
) -> System {
    launch(identity_extra, billing_extra, crm_extra, &[], gateway_extra, None, Some(&[])).await
}

/// As [`start_full`], with settings for support-router too (e.g. short SLA targets).
pub async fn start_with_support(support_extra: &[(&str, &str)], gateway_extra: &[(&str, &str)]) -> System {
    launch(&[], &[], &[], support_extra, gateway_extra, None, None).await
}

/// Every service, ai-assist too (with these settings: none for the local drafter).
pub async fn start_with_ai(ai_extra: &[(&str, &str)]) -> System {
    launch(&[], &[], &[], &[], &[], None, Some(ai_extra)).await
}

/// As [`start_full`], with identity reaching PostgreSQL through `identity_db` (a
/// `sb_testkit::proxy::TcpProxy` the test can cut) when given.
pub async fn start_full_via(
    identity_extra: &[(&str, &str)],
    billing_extra: &[(&str, &str)],
    crm_extra: &[(&str, &str)],
    gateway_extra: &[(&str, &str)],
    identity_db: Option<std::net::SocketAddr>,
) -> System {
    launch(identity_extra, billing_extra, crm_extra, &[], gateway_extra, identity_db, None).await
}

async fn launch(
    identity_extra: &[(&str, &str)],
    billing_extra: &[(&str, &str)],
    crm_extra: &[(&str, &str)],
    support_extra: &[(&str, &str)],
    gateway_extra: &[(&str, &str)],
    identity_db: Option<std::net::SocketAddr>,
    ai_extra: Option<&[(&str, &str)]>,
) -> System {
    let prefix = unique("gw");
    let owned = sb_testkit::service::vars;
    let identity = match identity_db {
        Some(proxy) => TestService::start_in_via(&identity::def(), &prefix, &owned(identity_extra), proxy).await,
        None => TestService::start_in(&identity::def(), &prefix, &owned(identity_extra)).await,
    };
    // billing's local checkout posts webhooks to the gateway, which starts after it: reserve the
    // gateway's port first, held until the gateway starts.
    let reserved = sb_testkit::reserve_port();
    let gateway_addr = reserved.local_addr().unwrap();
    let public = format!("http://{gateway_addr}");
    let mut bl = owned(&[("SWITCHBOARD_PUBLIC_URL", &public)]);
    bl.extend(owned(billing_extra));
    let billing = TestService::start_in(&billing::def(), &prefix, &bl).await;
    let crm_sync = TestService::start_in(&crm_sync::def(), &prefix, &owned(crm_extra)).await;
    let mut sr = owned(&[("SUPPORT_ROUTER_BILLING_URL", &format!("http://{}", billing.grpc))]);
    sr.extend(owned(support_extra));
    let support = TestService::start_in(&support_router::def(), &prefix, &sr).await;
    let ai = match ai_extra {
        Some(extra) => Some(TestService::start_in(&ai_assist::def(), &prefix, &owned(extra)).await),
        None => None,
    };
    // A test may point the gateway's crm-sync client elsewhere (e.g. at a port that never answers).
    let mut gw = owned(&[
        ("GATEWAY_HTTP_ADDR", &gateway_addr.to_string()),
        ("GATEWAY_CRM_SYNC_URL", &format!("http://{}", crm_sync.grpc)),
        ("GATEWAY_SUPPORT_URL", &format!("http://{}", support.grpc)),
        // Without ai-assist: a port where nothing listens (never a developer's running one).
        ("GATEWAY_AI_URL", &ai.as_ref().map_or_else(|| "http://127.0.0.1:9".to_owned(), |ai| format!("http://{}", ai.grpc))),
    ]);
    gw.extend(owned(gateway_extra));
    gw.push(("GATEWAY_IDENTITY_URL".into(), format!("http://{}", identity.grpc)));
    gw.push(("GATEWAY_BILLING_URL".into(), format!("http://{}", billing.grpc)));
    drop(reserved);
    let gateway = TestService::start_in(&gateway::def(), &prefix, &gw).await;
    // A request that hangs fails the test naming its URL, not at nextest's timeout.
    let web = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().expect("HTTP client");
    System { prefix, identity, billing, crm_sync, support, ai, gateway, base: public, web }
}

/// A signed-in user as a test sees them.
#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub token: String,
    pub user_id: String,
    pub account_id: String,
}

impl User {
    /// From a `SessionOut` body (sign-up, log-in).
    fn from_session(email: &str, v: &Value) -> Self {
        User {
            email: email.into(),
            token: v["token"].as_str().unwrap().into(),
            user_id: v["user"]["id"].as_str().unwrap().into(),
            account_id: v["user"]["account_id"].as_str().unwrap().into(),
        }
    }
}

impl System {
    pub async fn stop(self) {
        self.gateway.stop().await;
        if let Some(ai) = self.ai {
            ai.stop().await;
        }
        self.support.stop().await;
        self.crm_sync.stop().await;
        self.billing.stop().await;
        self.identity.stop().await;
        delete_prefix(&self.prefix).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn signup(&self, email: &str) -> User {
        let r = self
            .web
            .post(self.url("/v1/signup"))
            .json(&json!({"email": email, "password": PASSWORD, "name": "Test Person", "account_name": format!("{email} Co")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "signup {email}");
        User::from_session(email, &r.json().await.unwrap())
    }

    pub async fn login(&self, email: &str) -> User {
        let r = self.web.post(self.url("/v1/login")).json(&json!({"email": email, "password": PASSWORD})).send().await.unwrap();
        assert_eq!(r.status(), 200, "login {email}");
        User::from_session(email, &r.json().await.unwrap())
    }

    /// A staff user, created the way an operator does, then signed in through the gateway.
    pub async fn staff(&self, email: &str, role: sb_types::Role) -> User {
        let service = identity::service::Identity::with_defaults(self.identity.db.pool.clone()).unwrap();
        let e = sb_types::Email::parse(email).unwrap();
        let password = identity::domain::Password::parse(PASSWORD).unwrap();
        service.create_user("Founder's team", &e, "Staff", role, &password).await.expect("new staff user");
        self.login(email).await
    }
}

// ---- helpers the support and AI tests share ----

/// The status and JSON body (null when there is none).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Pays for `user`'s account on the local checkout (plan `pro`) and waits until access is active.
pub async fn pay_pro(sys: &System, user: &User) {
    let r = sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&user.token).json(&json!({"plan": "pro"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let url = r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    assert_eq!(no_redirects().post(&url).bearer_auth(&user.token).send().await.unwrap().status(), 303);
    sb_testkit::wait_for(std::time::Duration::from_secs(30), "access active", || async {
        let (_, me) = send(sys.web.get(sys.url("/v1/me")).bearer_auth(&user.token)).await;
        (me["access"]["status"] == "active").then_some(())
    })
    .await;
}

/// Parks one unreadable `stripe.event.received.v1` in billing's DLQ (billing cannot read its
/// payload: a permanent failure) and returns its event id.
pub async fn park_unreadable(sys: &System, account: &str) -> String {
    let account: uuid::Uuid = account.parse().unwrap();
    let env = sb_bus::Envelope::raw("gateway", "stripe.event.received.v1", json!({"not": "a Stripe event"})).with_account(account);
    let id = env.id.to_string();
    let before = sys.billing.dlq_depth().await;
    sys.billing.publish(&env).await;
    sb_testkit::wait_for(std::time::Duration::from_secs(30), "the unreadable event parked in billing's DLQ", || async {
        (sys.billing.dlq_depth().await > before).then_some(())
    })
    .await;
    id
}

pub async fn open_ticket(sys: &System, user: &User, subject: &str, body: &str, category: &str) -> Value {
    let (status, v) = send(
        sys.web
            .post(sys.url("/v1/tickets"))
            .bearer_auth(&user.token)
            .json(&json!({"subject": subject, "body": body, "category": category})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    v
}

pub async fn staff_view(sys: &System, staff: &User, ticket_id: &str) -> Value {
    let (status, v) = send(sys.web.get(sys.url(&format!("/v1/admin/tickets/{ticket_id}"))).bearer_auth(&staff.token)).await;
    assert_eq!(status, 200, "{v}");
    v
}

// ---- the browser tests' runner ----

/// Runs `tests/browser/<script>` with Node against this system (`BASE_URL`) plus `env`, in
/// Debian's Chromium (`CHROMIUM`, default `/usr/bin/chromium`), and fails the test with the
/// script's output unless it exits 0 within `limit`. Needs what `scripts/install-test-tools.sh`
/// installs (`make test` runs it). Returns the script's standard output.
pub async fn run_browser_script(sys: System, script: &str, env: &[(&str, String)], limit: std::time::Duration) -> String {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("tests/browser");
    let needs = if script == "lighthouse.mjs" { "lighthouse" } else { "playwright-core" };
    assert!(
        dir.join("node_modules").join(needs).is_dir(),
        "tests/browser/node_modules/{needs} is missing: run `bash scripts/install-test-tools.sh` (`make test` does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(std::path::Path::new(&chromium).exists(), "{chromium} is missing: `make test` installs Debian's chromium");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(dir.join(script)).env("BASE_URL", &sys.base).env("CHROMIUM", &chromium).kill_on_drop(true);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(limit, cmd.output()).await;
    sys.stop().await;
    let out = out.unwrap_or_else(|_| panic!("{script} took over {limit:?}")).unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{stderr}\n{stdout}");
    stdout
}

/// Where the browser tests write screenshots and reports: `target/<name>` (or under
/// `CARGO_TARGET_DIR`), emptied first.
pub fn output_dir(name: &str) -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let dir = target.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
