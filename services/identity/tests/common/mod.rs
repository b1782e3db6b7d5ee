//! Starts identity in-process on a fresh database and queue prefix, with gRPC helpers.

#![allow(dead_code, clippy::unwrap_used)] // test support code: a failed unwrap is a failed test

use std::{net::SocketAddr, time::Duration};

use sb_proto::identity::v1::{self as pb, identity_client::IdentityClient};
use sb_testkit::{TestDb, unique, wait_for};
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};

pub const SERVICE_TOKEN: &str = "test-service-token-0123456789";
pub const PASSWORD: &str = "correct horse battery staple";

/// The bus settings the service ran with, to find its queues.
fn bus(prefix: &str, delays: &str) -> sb_bus::BusConfig {
    let mut cfg = sb_bus::BusConfig::new(sb_testkit::amqp_url());
    cfg.prefix = prefix.to_owned();
    cfg.retry_delays = sb_bus::config::parse_delays(delays).unwrap();
    cfg
}

pub struct Identity {
    delays: String,
    pub db: TestDb,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub prefix: String,
    pub client: IdentityClient<Channel>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start(extra: &[(&str, &str)]) -> Identity {
    let db = TestDb::new("identity").await.expect("test database");
    let prefix = unique("id");
    let mut vars: Vec<(String, String)> = [
        ("IDENTITY_DATABASE_URL", db.url.as_str()),
        ("IDENTITY_HTTP_ADDR", "127.0.0.1:0"),
        ("IDENTITY_GRPC_ADDR", "127.0.0.1:0"),
        ("SWITCHBOARD_BUS_PREFIX", prefix.as_str()),
        ("SWITCHBOARD_RETRY_DELAYS", "300ms,600ms,900ms"),
        ("SWITCHBOARD_SERVICE_TOKEN", SERVICE_TOKEN),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.push(("SWITCHBOARD_AMQP_URL".into(), sb_testkit::amqp_url()));
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let delays = vars.iter().rev().find(|(k, _)| k == "SWITCHBOARD_RETRY_DELAYS").map(|(_, v)| v.clone()).unwrap_or_default();
    let app = sb_runtime::start_with_vars(&identity::def(), &vars).await.expect("identity starts");
    let (grpc, http) = (app.grpc_addr(), app.http_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let web = reqwest::Client::new();
    wait_for(Duration::from_secs(30), "identity /readyz", || {
        let web = web.clone();
        async move { web.get(format!("http://{http}/readyz")).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    Identity { delays, db, grpc, http, prefix, client: IdentityClient::new(channel), shutdown, task }
}

impl Identity {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        sb_testkit::delete_services_topology(&bus(&self.prefix, &self.delays), &["identity"]).await;
    }

    pub fn client(&self) -> IdentityClient<Channel> {
        self.client.clone()
    }
}

/// A request as the gateway sends it: with the service token and the end user's address.
pub fn as_service<T>(msg: T, ip: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-switchboard-service", SERVICE_TOKEN.parse().unwrap());
    r.metadata_mut().insert("x-client-ip", ip.parse().unwrap());
    r
}

/// A request made for a signed-in user.
pub fn as_user<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn signup(email: &str) -> pb::SignUpRequest {
    pb::SignUpRequest {
        email: email.into(),
        password: PASSWORD.into(),
        name: "Ada Lovelace".into(),
        account_name: "Analytical Engines Ltd".into(),
    }
}

pub fn login(email: &str, password: &str) -> pb::LogInRequest {
    pb::LogInRequest { email: email.into(), password: password.into() }
}

/// Creates a staff (or customer) user directly, as the operator command does.
pub async fn staff(id: &Identity, email: &str, role: identity::domain::Role) -> String {
    let hash = identity::grpc::hash_password(&identity::domain::Password::parse(PASSWORD).unwrap()).await.unwrap();
    let email = identity::domain::Email::parse(email).unwrap();
    identity::store::create_user(&id.db.pool, "Founder's team", &email, "Staff Member", role, &hash).await.unwrap().expect("new user");
    let grant = id.client().log_in(as_service(login(email.as_str(), PASSWORD), "10.0.0.1")).await.unwrap().into_inner();
    grant.token
}
