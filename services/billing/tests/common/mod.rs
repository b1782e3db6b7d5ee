//! Starts billing in-process on a fresh database and queue prefix, with a gRPC client carrying
//! the service token, principals to call as, a way to hand billing a Stripe event the way the
//! gateway does (`stripe.event.received.v1` on the bus), and probes of its queues, outbox and
//! counters. Queues are deleted on [`Billing::stop`] (or, if a test panics first, on drop).

#![allow(dead_code, clippy::unwrap_used)] // test support code: a failed unwrap is a failed test

use std::{net::SocketAddr, time::Duration};

use sb_bus::{Envelope, catalog};
use sb_proto::{
    billing::v1::{self as pb, billing_client::BillingClient},
    ops::v1::{GetServiceInfoRequest, ServiceInfo, ops_client::OpsClient},
};
use sb_runtime::caller::{Principal, Role};
use sb_stripe::objects;
use sb_testkit::{TestDb, unique, wait_for};
use secrecy::SecretString;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};
use uuid::Uuid;

pub const SERVICE_TOKEN: &str = "billing-test-service-token-0123";
/// Short rungs so a retried event comes back within a test; three rungs before parking.
pub const RETRY_DELAYS: &str = "250ms,500ms,1s";
/// A Stripe test key and signing secret for starting billing against a fake Stripe.
pub const STRIPE_KEY: &str = "sk_test_switchboard_billing_tests";
pub const WEBHOOK_SECRET: &str = "whsec_switchboard_billing_tests";
/// Where billing is told browsers reach the portal (return URLs hang off it).
pub const PUBLIC_URL: &str = "http://portal.switchboard.test";
pub const WAIT: Duration = Duration::from_secs(30);

/// The settings billing needs to use a fake Stripe at `base` (add to [`start`]'s `extra`).
pub fn stripe_vars(base: &str) -> Vec<(String, String)> {
    vec![
        ("SWITCHBOARD_STRIPE_API_KEY".into(), STRIPE_KEY.into()),
        ("SWITCHBOARD_STRIPE_API_BASE".into(), base.into()),
        ("SWITCHBOARD_STRIPE_WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
    ]
}

/// A running billing service.
pub struct Billing {
    pub db: TestDb,
    pub prefix: String,
    /// The bus settings it runs with (to find its queues).
    pub bus: sb_bus::BusConfig,
    /// Every setting it was started with (e.g. to run the `billing` binary on the same database).
    pub vars: Vec<(String, String)>,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    client: BillingClient<Channel>,
    ops: OpsClient<Channel>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts billing with test defaults (fresh database and prefix, random ports, short retry rungs,
/// [`SERVICE_TOKEN`], [`PUBLIC_URL`]); `extra` adds or overrides settings, e.g. [`stripe_vars`].
/// Without a Stripe key billing runs its embedded local checkout, whose webhooks go by default to
/// a closed local port (they fail fast and wait on their backoff); set `BILLING_LOCAL_WEBHOOK_URL`
/// to receive them. Returns once `/readyz` answers 200 (its queues are declared).
pub async fn start(extra: &[(String, String)]) -> Billing {
    let db = TestDb::new("billing").await.expect("test database");
    let prefix = unique("bill");
    let nowhere = format!("http://127.0.0.1:{}/webhooks/stripe", sb_testkit::smtp::closed_port());
    let mut vars: Vec<(String, String)> = vec![
        ("BILLING_DATABASE_URL".into(), db.url.clone()),
        ("BILLING_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("BILLING_GRPC_ADDR".into(), "127.0.0.1:0".into()),
        ("SWITCHBOARD_BUS_PREFIX".into(), prefix.clone()),
        ("SWITCHBOARD_RETRY_DELAYS".into(), RETRY_DELAYS.into()),
        ("SWITCHBOARD_SERVICE_TOKEN".into(), SERVICE_TOKEN.into()),
        ("SWITCHBOARD_AMQP_URL".into(), sb_testkit::amqp_url()),
        ("SWITCHBOARD_PUBLIC_URL".into(), PUBLIC_URL.into()),
        ("BILLING_LOCAL_WEBHOOK_URL".into(), nowhere),
    ];
    vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    vars.extend(extra.iter().cloned());
    let setting = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let mut bus = sb_bus::BusConfig::new(setting("SWITCHBOARD_AMQP_URL"));
    bus.prefix = setting("SWITCHBOARD_BUS_PREFIX");
    bus.retry_delays = sb_bus::config::parse_delays(&setting("SWITCHBOARD_RETRY_DELAYS")).unwrap();
    let app = sb_runtime::start_with_vars(&billing::def(), &vars).await.expect("billing starts");
    let (http, grpc) = (app.http_addr(), app.grpc_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    // The listeners are bound already; the channel connects on first use.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect_lazy();
    let running = Billing {
        db,
        prefix: bus.prefix.clone(),
        bus,
        vars,
        http,
        grpc,
        client: BillingClient::new(channel.clone()),
        ops: OpsClient::new(channel),
        shutdown,
        task: Some(task),
    };
    let web = reqwest::Client::new();
    wait_for(WAIT, "billing /readyz", || {
        let web = web.clone();
        async move { web.get(format!("http://{http}/readyz")).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    running
}

impl Billing {
    /// Stops billing (in-flight work finishes) and deletes its queues and exchanges.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        sb_testkit::delete_services_topology(&self.bus, &[billing::SERVICE]).await;
    }

    pub fn client(&self) -> BillingClient<Channel> {
        self.client.clone()
    }

    /// A setting billing was started with.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Hands billing a verified Stripe event exactly as the gateway does: a
    /// `stripe.event.received.v1` envelope (source `gateway`, the event as `data`) published to the
    /// events exchange with confirms. Returns the envelope.
    pub async fn publish_stripe_event(&self, stripe_event: Value) -> Envelope {
        let env = Envelope::new("gateway", catalog::STRIPE_EVENT_RECEIVED, stripe_event);
        self.publish(&env).await;
        env
    }

    /// Publishes any envelope to billing's events exchange (confirmed, `mandatory`).
    pub async fn publish(&self, env: &Envelope) {
        let conn = sb_bus::publisher::connect(&self.bus, "billing test publisher").await.expect("broker connection");
        let publisher = sb_bus::Publisher::open(&conn, &self.bus).await.expect("publisher channel");
        publisher.publish(env, &Default::default()).await.expect("the broker confirmed the event");
        let _ = conn.close(200, "done".into()).await;
    }

    /// `switchboard.ops.v1.Ops/GetServiceInfo`: consumed/published types, delivery counters, outbox backlog.
    pub async fn info(&self) -> ServiceInfo {
        self.ops.clone().get_service_info(GetServiceInfoRequest {}).await.unwrap().into_inner()
    }

    /// Messages waiting in billing's DLQ.
    pub async fn dlq_depth(&self) -> u32 {
        let ops = sb_bus::dlq::Ops::connect(self.bus.clone()).await.expect("broker connection");
        let depths = ops.depths(&[billing::SERVICE]).await.unwrap();
        ops.close().await;
        depths.iter().find(|d| d.role == "dlq").and_then(|d| d.messages).unwrap_or(0)
    }

    /// The account's access, asked as a service.
    pub async fn access(&self, account: Uuid) -> pb::Access {
        self.client().get_access(service(pb::GetAccessRequest { account_id: account.to_string() })).await.unwrap().into_inner()
    }

    /// Waits until the account's access has `status`, and returns it.
    pub async fn wait_access(&self, account: Uuid, status: pb::AccessStatus) -> pb::Access {
        wait_for(WAIT, &format!("access of {account} to be {status:?}"), || async move {
            Some(self.access(account).await).filter(|a| a.status == status as i32)
        })
        .await
    }

    /// `data` of the events billing has put in its outbox with this type, oldest first (sent or not).
    pub async fn outbox(&self, event_type: &str) -> Vec<Value> {
        sqlx::query_scalar("SELECT payload FROM sb_outbox WHERE event_type = $1 ORDER BY seq")
            .bind(event_type)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|p: Value| p.get("data").cloned().unwrap_or(Value::Null))
            .collect()
    }

    /// What billing recorded about a Stripe event id (`applied`, `ignored`, `unlinked`), if anything.
    pub async fn event_outcome(&self, stripe_event_id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT outcome FROM stripe_events WHERE event_id = $1")
            .bind(stripe_event_id)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap()
    }
}

impl Drop for Billing {
    /// If a test ends without [`Billing::stop`] (a failed assertion), still stop the service and
    /// delete its queues so nothing is left on the shared broker.
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        self.shutdown.cancel();
        task.abort();
        let bus = self.bus.clone();
        // Drop runs outside async: a short-lived thread with its own runtime does the cleanup.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(sb_testkit::delete_services_topology(&bus, &[billing::SERVICE]));
        })
        .join();
    }
}

/// A request as a service acting for itself.
pub fn service<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    sb_runtime::caller::attach(r.metadata_mut(), &SecretString::from(SERVICE_TOKEN), None);
    r
}

/// A request the gateway forwards for a signed-in user.
pub fn as_user<T>(msg: T, principal: &Principal) -> Request<T> {
    let mut r = Request::new(msg);
    sb_runtime::caller::attach(r.metadata_mut(), &SecretString::from(SERVICE_TOKEN), Some(principal));
    r
}

/// A customer user of `account`.
pub fn customer(account: Uuid) -> Principal {
    Principal { user_id: Uuid::now_v7(), account_id: account, role: Role::Customer, impersonated: false }
}

/// An admin acting as a customer of `account`.
pub fn impersonating(account: Uuid) -> Principal {
    Principal { impersonated: true, ..customer(account) }
}

/// Staff (agent or admin) of the founder's own account.
pub fn staff(role: Role) -> Principal {
    Principal { user_id: Uuid::now_v7(), account_id: Uuid::now_v7(), role, impersonated: false }
}

/// Stripe's `created` for an event happening now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Stripe `event` object wrapping `object`, with a fresh `evt_` id (returned too).
pub fn stripe_event(event_type: &str, created: i64, object: Value) -> (String, Value) {
    let id = format!("evt_test_{}", Uuid::now_v7().simple());
    let ev = objects::event(&id, event_type, created, object);
    (id, ev)
}
