//! The one in-process harness for Switchboard services: a service started from its `ServiceDef`
//! on a fresh database, a fresh (or shared) bus prefix, random ports and short retry rungs; publish
//! events to it, call it over gRPC as a service or a user, read its Ops counters and DLQ, and stop
//! it (its queues are deleted, also when a failing test drops it without stopping).

use std::{net::SocketAddr, time::Duration};

use sb_bus::{BusConfig, Envelope};
use sb_runtime::caller::{OnBehalfOf, Principal, ServiceContext};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::{TestDb, unique, wait_for};

pub const SERVICE_TOKEN: &str = "switchboard-test-service-token";
pub const RETRY_DELAYS: &str = "250ms,500ms,1s";
/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(30);
/// The longest one gRPC call through [`TestService::channel`] may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `(name, value)` pairs as the owned settings [`TestService::start`] takes.
pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A request as a service acting for itself (with the test service token).
pub fn as_service<T>(msg: T) -> tonic::Request<T> {
    sb_runtime::caller::request(msg, &SecretString::from(SERVICE_TOKEN), OnBehalfOf::Service(&ServiceContext::default()))
}

/// A request as a service acting for itself on behalf of a visitor at `client_ip` (what the
/// gateway sends for sign-up and log-in).
pub fn as_service_for_ip<T>(msg: T, client_ip: &str) -> tonic::Request<T> {
    let ctx = ServiceContext { client_ip: Some(client_ip.to_owned()), correlation_id: None };
    sb_runtime::caller::request(msg, &SecretString::from(SERVICE_TOKEN), OnBehalfOf::Service(&ctx))
}

/// A request a service forwards for a signed-in user (what the gateway sends).
pub fn as_user<T>(msg: T, principal: &Principal) -> tonic::Request<T> {
    sb_runtime::caller::request(msg, &SecretString::from(SERVICE_TOKEN), OnBehalfOf::User(principal))
}

static KEEP_SENT_OUTBOX: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether services started from now on keep a copy of each outbox row their relay sends
/// ([`crate::TestDb::keep_sent_outbox`], on by default). A benchmark of the outbox's cost turns it off.
pub fn keep_sent_outbox(on: bool) {
    KEEP_SENT_OUTBOX.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub struct TestService {
    pub name: &'static str,
    pub db: TestDb,
    pub bus: BusConfig,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// A lazily connecting channel to the service's gRPC port.
    pub channel: tonic::transport::Channel,
    /// Every setting it was started with.
    vars: Vec<(String, String)>,
    /// Whether it made its bus prefix (and so removes the prefix's exchanges when it stops).
    owns_prefix: bool,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestService {
    /// Starts `def` on a bus prefix of its own with test defaults; `extra` adds or overrides
    /// settings (`{SVC}_X`, `SWITCHBOARD_X`). Returns once `/readyz` answers 200 (its queues are
    /// declared).
    pub async fn start(def: &sb_runtime::ServiceDef, extra: &[(String, String)]) -> Self {
        let prefix = unique(&def.name.chars().filter(char::is_ascii_alphanumeric).take(4).collect::<String>());
        Self::launch(def, &prefix, true, extra, None).await
    }

    /// Starts `def` on a bus prefix several services of one test share; whoever made the prefix
    /// removes its exchanges at the end ([`delete_prefix`]).
    pub async fn start_in(def: &sb_runtime::ServiceDef, prefix: &str, extra: &[(String, String)]) -> Self {
        Self::launch(def, prefix, false, extra, None).await
    }

    /// As [`TestService::start_in`], with the service reaching PostgreSQL through `db_proxy`
    /// (a [`crate::proxy::TcpProxy`] the test can cut); the test's own pool connects directly.
    pub async fn start_in_via(def: &sb_runtime::ServiceDef, prefix: &str, extra: &[(String, String)], db_proxy: SocketAddr) -> Self {
        Self::launch(def, prefix, false, extra, Some(db_proxy)).await
    }

    async fn launch(
        def: &sb_runtime::ServiceDef,
        prefix: &str,
        owns_prefix: bool,
        extra: &[(String, String)],
        db_proxy: Option<SocketAddr>,
    ) -> Self {
        let db = TestDb::new(def.name).await.expect("test database");
        let svc = def.name.to_uppercase().replace('-', "_");
        let db_url = match db_proxy {
            Some(addr) => via(&db.url, addr),
            None => db.url.clone(),
        };
        let mut vars: Vec<(String, String)> = vec![
            (format!("{svc}_DATABASE_URL"), db_url),
            (format!("{svc}_HTTP_ADDR"), "127.0.0.1:0".into()),
            (format!("{svc}_GRPC_ADDR"), "127.0.0.1:0".into()),
            ("SWITCHBOARD_BUS_PREFIX".into(), prefix.to_owned()),
            ("SWITCHBOARD_RETRY_DELAYS".into(), RETRY_DELAYS.into()),
            ("SWITCHBOARD_SERVICE_TOKEN".into(), SERVICE_TOKEN.into()),
            ("SWITCHBOARD_AMQP_URL".into(), crate::amqp_url()),
        ];
        vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        vars.extend(extra.iter().cloned());
        // What the service reads: its own setting, else the shared one (the last of each wins).
        let setting = |name: &str| {
            let find = |k: String| vars.iter().rev().find(|(v, _)| *v == k).map(|(_, v)| v.clone());
            find(format!("{svc}_{name}")).or_else(|| find(format!("SWITCHBOARD_{name}"))).unwrap_or_default()
        };
        let mut bus = BusConfig::new(setting("AMQP_URL"));
        bus.prefix = setting("BUS_PREFIX");
        bus.retry_delays = sb_bus::config::parse_delays(&setting("RETRY_DELAYS")).expect("retry delays");
        // Migrated here first so the test's record of sent outbox rows is in place before the
        // relay sends anything (the service's own migration run then finds nothing to do).
        sb_runtime::db::migrate(&db.pool, def.migrator).await.expect("migrations");
        if KEEP_SENT_OUTBOX.load(std::sync::atomic::Ordering::Relaxed) {
            db.keep_sent_outbox().await.expect("record of sent outbox rows");
        }
        let app = sb_runtime::start_with_vars(def, &vars).await.expect("service starts");
        let (http, grpc) = (app.http_addr(), app.grpc_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        // A call that hangs fails the test at the call, not at nextest's timeout.
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).expect("gRPC address").timeout(CALL_TIMEOUT).connect_lazy();
        let running = Self { name: def.name, db, bus, http, grpc, channel, vars, owns_prefix, shutdown, task: Some(task) };
        let web = reqwest::Client::new();
        wait_for(WAIT, &format!("{} /readyz", def.name), || {
            let web = web.clone();
            async move { web.get(format!("http://{http}/readyz")).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        running
    }

    /// A setting the service was started with (the last one given wins).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every setting it was started with (e.g. to run its binary on the same database).
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    pub fn prefix(&self) -> &str {
        &self.bus.prefix
    }

    /// Publishes an event to the service's exchange (confirmed, `mandatory`).
    pub async fn publish(&self, env: &Envelope) {
        let conn = sb_bus::publisher::connect(&self.bus, "test publisher").await.expect("broker connection");
        let publisher = sb_bus::Publisher::open(&conn, &self.bus).await.expect("publisher channel");
        publisher.publish(env, &Default::default()).await.expect("the broker confirmed the event");
        let _ = conn.close(200, "done".into()).await;
    }

    /// `switchboard.ops.v1.Ops/GetServiceInfo`: consumed/published types, delivery counters, outbox backlog.
    pub async fn info(&self) -> sb_proto::ops::v1::ServiceInfo {
        let mut ops = sb_proto::ops::v1::ops_client::OpsClient::new(self.channel.clone());
        ops.get_service_info(sb_proto::ops::v1::GetServiceInfoRequest {}).await.expect("Ops answers").into_inner()
    }

    /// Messages waiting in the service's DLQ.
    pub async fn dlq_depth(&self) -> u32 {
        let ops = sb_bus::dlq::Ops::connect(self.bus.clone()).await.expect("broker connection");
        let depths = ops.depths(&[self.name]).await.expect("queue depths");
        ops.close().await;
        depths.iter().find(|d| d.role == "dlq").and_then(|d| d.messages).unwrap_or(0)
    }

    /// What is parked in the service's DLQ (up to 1,000), oldest first.
    pub async fn parked(&self) -> Vec<sb_bus::dlq::Parked> {
        let ops = sb_bus::dlq::Ops::connect(self.bus.clone()).await.expect("broker connection");
        let parked = ops.show(self.name, 1_000).await.expect("DLQ listing");
        ops.close().await;
        parked
    }

    /// Replays every parked message of the service; returns how many.
    pub async fn replay_dlq(&self) -> usize {
        let ops = sb_bus::dlq::Ops::connect(self.bus.clone()).await.expect("broker connection");
        let n = ops.replay(self.name, sb_bus::dlq::Selector::All).await.expect("replay");
        ops.close().await;
        n
    }

    /// `data` of the events the service has put in its outbox with this type, sent or not,
    /// oldest first (from `sb_test_outbox`, see [`crate::TestDb::keep_sent_outbox`]).
    pub async fn outbox(&self, event_type: &str) -> Vec<serde_json::Value> {
        let rows: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT payload::jsonb FROM sb_test_outbox WHERE event_type = $1 ORDER BY seq")
                .bind(event_type)
                .fetch_all(&self.db.pool)
                .await
                .expect("outbox rows");
        rows.into_iter().map(|p| p.get("data").cloned().unwrap_or(serde_json::Value::Null)).collect()
    }

    /// Stops the service (in-flight work finishes) and deletes its queues.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        delete_queues(&self.bus, self.name, self.owns_prefix).await;
    }
}

async fn delete_queues(bus: &BusConfig, name: &str, owns_prefix: bool) {
    if owns_prefix {
        crate::delete_services_topology(bus, &[name]).await;
    } else {
        crate::delete_topology(&bus.amqp_url, None, &crate::service_queues(bus, name)).await;
    }
}

/// `postgres://user@host:port/db?x` with `addr` as host and port.
fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
    format!("{scheme}://{user}{addr}/{path}")
}

/// Removes what a shared prefix leaves once all its services stopped: its exchanges and the
/// unrouted queue.
pub async fn delete_prefix(prefix: &str) {
    let mut bus = BusConfig::new(crate::amqp_url());
    bus.prefix = prefix.to_owned();
    let n = sb_bus::topology::Names::new(&bus, "_");
    crate::delete_topology(&bus.amqp_url, Some(prefix), &[n.unrouted_queue]).await;
}

impl Drop for TestService {
    /// A failed test drops the service without stopping it: stop it and delete its queues anyway.
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        self.shutdown.cancel();
        task.abort();
        let (bus, name, owns) = (self.bus.clone(), self.name, self.owns_prefix);
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(delete_queues(&bus, name, owns));
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_through_a_proxy_keeps_user_database_and_options() {
        let addr = "127.0.0.1:6000".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(super::via("postgres://u:p@db:5432/t1?sslmode=disable", addr), "postgres://u:p@127.0.0.1:6000/t1?sslmode=disable");
        assert_eq!(super::via("postgres://db/t1", addr), "postgres://127.0.0.1:6000/t1");
    }
}
