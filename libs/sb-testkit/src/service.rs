//! One Switchboard service started in-process for a test: a fresh database, a fresh bus prefix,
//! random ports, short retry rungs; publish events to it, read its Ops counters and DLQ depth, and
//! stop it (its queues are deleted, also when a failing test drops it without stopping).

use std::{net::SocketAddr, time::Duration};

use sb_bus::{BusConfig, Envelope};
use tokio_util::sync::CancellationToken;

use crate::{TestDb, unique, wait_for};

pub const SERVICE_TOKEN: &str = "switchboard-test-service-token";
pub const RETRY_DELAYS: &str = "250ms,500ms,1s";

pub struct TestService {
    pub name: &'static str,
    pub db: TestDb,
    pub bus: BusConfig,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// A lazily connecting channel to the service's gRPC port.
    pub channel: tonic::transport::Channel,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestService {
    /// Starts `def` with test defaults; `extra` adds or overrides settings (`{SVC}_X`,
    /// `SWITCHBOARD_X`). Returns once `/readyz` answers 200 (its queues are declared).
    pub async fn start(def: &sb_runtime::ServiceDef, extra: &[(String, String)]) -> Self {
        let db = TestDb::new(def.name).await.expect("test database");
        let svc = def.name.to_uppercase().replace('-', "_");
        let mut vars: Vec<(String, String)> = vec![
            (format!("{svc}_DATABASE_URL"), db.url.clone()),
            (format!("{svc}_HTTP_ADDR"), "127.0.0.1:0".into()),
            (format!("{svc}_GRPC_ADDR"), "127.0.0.1:0".into()),
            ("SWITCHBOARD_BUS_PREFIX".into(), unique(&def.name.chars().filter(char::is_ascii_alphanumeric).take(4).collect::<String>())),
            ("SWITCHBOARD_RETRY_DELAYS".into(), RETRY_DELAYS.into()),
            ("SWITCHBOARD_SERVICE_TOKEN".into(), SERVICE_TOKEN.into()),
            ("SWITCHBOARD_AMQP_URL".into(), crate::amqp_url()),
        ];
        vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        vars.extend(extra.iter().cloned());
        let setting = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let mut bus = BusConfig::new(setting("SWITCHBOARD_AMQP_URL"));
        bus.prefix = setting("SWITCHBOARD_BUS_PREFIX");
        bus.retry_delays = sb_bus::config::parse_delays(&setting("SWITCHBOARD_RETRY_DELAYS")).expect("retry delays");
        let app = sb_runtime::start_with_vars(def, &vars).await.expect("service starts");
        let (http, grpc) = (app.http_addr(), app.grpc_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).expect("gRPC address").connect_lazy();
        let web = reqwest::Client::new();
        wait_for(Duration::from_secs(30), &format!("{} /readyz", def.name), || {
            let web = web.clone();
            async move { web.get(format!("http://{http}/readyz")).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        Self { name: def.name, db, bus, http, grpc, channel, shutdown, task: Some(task) }
    }

    /// Publishes an event to the service's exchange (confirmed, `mandatory`).
    pub async fn publish(&self, env: &Envelope) {
        let conn = sb_bus::publisher::connect(&self.bus, "test publisher").await.expect("broker connection");
        let publisher = sb_bus::Publisher::open(&conn, &self.bus).await.expect("publisher channel");
        publisher.publish(env, &Default::default()).await.expect("the broker confirmed the event");
        let _ = conn.close(200, "done".into()).await;
    }

    /// `switchboard.ops.v1.Ops/GetServiceInfo`.
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

    /// Replays every parked message of the service; returns how many.
    pub async fn replay_dlq(&self) -> usize {
        let ops = sb_bus::dlq::Ops::connect(self.bus.clone()).await.expect("broker connection");
        let n = ops.replay(self.name, sb_bus::dlq::Selector::All).await.expect("replay");
        ops.close().await;
        n
    }

    /// Stops the service (in-flight work finishes) and deletes its queues.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        crate::delete_services_topology(&self.bus, &[self.name]).await;
    }
}

impl Drop for TestService {
    /// A failed test drops the service without stopping it: stop it and delete its queues anyway.
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        self.shutdown.cancel();
        task.abort();
        let (bus, name) = (self.bus.clone(), self.name);
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(crate::delete_services_topology(&bus, &[name]));
        })
        .join();
    }
}
