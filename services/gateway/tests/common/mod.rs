//! Starts identity, billing, crm-sync and the gateway in-process (fresh databases, fresh queue
//! prefix) and signs up or creates the users a test needs.

#![allow(dead_code, clippy::unwrap_used)] // test support code: a failed unwrap is a failed test

use std::{net::SocketAddr, time::Duration};

use sb_testkit::{TestDb, unique, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const SERVICE_TOKEN: &str = "gateway-test-service-token-42";
pub const PASSWORD: &str = "correct horse battery staple";
pub const DELAYS: &str = "300ms,600ms";

pub struct Running {
    pub db: TestDb,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub struct System {
    pub prefix: String,
    pub identity: Running,
    pub billing: Running,
    pub crm_sync: Running,
    /// crm-sync's retry ladder (a test may lengthen it), to delete its retry queues at the end.
    pub crm_delays: String,
    pub gateway: Running,
    pub base: String,
    pub web: reqwest::Client,
}

async fn run(def: &sb_runtime::ServiceDef, prefix: &str, extra: &[(String, String)]) -> Running {
    let db = TestDb::new(def.name).await.expect("test database");
    let svc = def.name.to_uppercase().replace('-', "_");
    let mut vars: Vec<(String, String)> = vec![
        (format!("{svc}_DATABASE_URL"), db.url.clone()),
        (format!("{svc}_HTTP_ADDR"), "127.0.0.1:0".into()),
        (format!("{svc}_GRPC_ADDR"), "127.0.0.1:0".into()),
        ("SWITCHBOARD_BUS_PREFIX".into(), prefix.into()),
        ("SWITCHBOARD_RETRY_DELAYS".into(), DELAYS.into()),
        ("SWITCHBOARD_SERVICE_TOKEN".into(), SERVICE_TOKEN.into()),
        ("SWITCHBOARD_AMQP_URL".into(), sb_testkit::amqp_url()),
    ];
    vars.extend(extra.iter().cloned());
    let app = sb_runtime::start_with_vars(def, &vars).await.expect("service starts");
    let (http, grpc) = (app.http_addr(), app.grpc_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let web = reqwest::Client::new();
    wait_for(Duration::from_secs(30), &format!("{} /readyz", def.name), || {
        let web = web.clone();
        async move { web.get(format!("http://{http}/readyz")).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    Running { db, http, grpc, shutdown, task }
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
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
    let prefix = unique("gw");
    let owned = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    let identity = run(&identity::def(), &prefix, &owned(identity_extra)).await;
    // billing's local checkout posts webhooks to the gateway, which starts after it: reserve the
    // gateway's port first.
    let gateway_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let public = format!("http://{gateway_addr}");
    let mut bl = vec![("SWITCHBOARD_PUBLIC_URL".to_owned(), public.clone())];
    bl.extend(owned(billing_extra));
    let billing = run(&billing::def(), &prefix, &bl).await;
    // The ladder crm-sync runs with: its own setting, else the shared one (the last of each wins).
    let setting = |name: &str| crm_extra.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let crm_delays = setting("CRM_SYNC_RETRY_DELAYS").or_else(|| setting("SWITCHBOARD_RETRY_DELAYS")).unwrap_or(DELAYS).to_owned();
    let crm_sync = run(&crm_sync::def(), &prefix, &owned(crm_extra)).await;
    // A test may point the gateway's crm-sync client elsewhere (e.g. at a port that never answers).
    let mut gw = vec![
        ("GATEWAY_HTTP_ADDR".to_owned(), gateway_addr.to_string()),
        ("GATEWAY_CRM_SYNC_URL".to_owned(), format!("http://{}", crm_sync.grpc)),
    ];
    gw.extend(owned(gateway_extra));
    gw.push(("GATEWAY_IDENTITY_URL".into(), format!("http://{}", identity.grpc)));
    gw.push(("GATEWAY_BILLING_URL".into(), format!("http://{}", billing.grpc)));
    let gateway = run(&gateway::def(), &prefix, &gw).await;
    System { prefix, identity, billing, crm_sync, crm_delays, gateway, base: public, web: reqwest::Client::new() }
}

/// Deletes the queues of a test's services (the broker keeps quorum queues otherwise).
pub async fn delete_queues(prefix: &str, crm_delays: &str) {
    let mut cfg = sb_bus::BusConfig::new(sb_testkit::amqp_url());
    cfg.prefix = prefix.to_owned();
    cfg.retry_delays = sb_bus::config::parse_delays(DELAYS).unwrap();
    sb_testkit::delete_services_topology(&cfg, &["identity", "billing", "crm-sync", "gateway"]).await;
    if crm_delays != DELAYS {
        cfg.retry_delays = sb_bus::config::parse_delays(crm_delays).unwrap();
        sb_testkit::delete_services_topology(&cfg, &["crm-sync"]).await;
    }
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
        self.crm_sync.stop().await;
        self.billing.stop().await;
        self.identity.stop().await;
        delete_queues(&self.prefix, &self.crm_delays).await;
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
    pub async fn staff(&self, email: &str, role: identity::domain::Role) -> User {
        let hash = identity::grpc::hash_password(&identity::domain::Password::parse(PASSWORD).unwrap()).await.unwrap();
        let e = identity::domain::Email::parse(email).unwrap();
        identity::store::create_user(&self.identity.db.pool, "Founder's team", &e, "Staff", role, &hash)
            .await
            .unwrap()
            .expect("new staff user");
        self.login(email).await
    }
}
