//! Builds a service on listeners it is given: health/ready/metrics HTTP, gRPC with health and
//! reflection, the consumer and the outbox relay; runs them until shutdown, then drains.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use sb_bus::{Consumer, OutboxRelay, catalog, consumer::Stats, dlq::Ops, topology::Names};
use sb_proto::ops::v1::{GetServiceInfoRequest, ServiceInfo, ops_server};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{config::ServiceConfig, telemetry};

/// What a service adds to the common scaffolding.
pub struct Parts {
    /// The consumer with the service's handlers registered (possibly none yet).
    pub consumer: Consumer,
    /// Extra HTTP routes, merged beside `/healthz`, `/readyz` and `/metrics`.
    pub http: Router,
    /// Extra gRPC services, served beside health, reflection and `switchboard.ops.v1.Ops`.
    pub grpc: tonic::service::Routes,
    /// Background loops (sweepers, senders): each gets the shutdown token and should return soon
    /// after it is cancelled.
    pub tasks: Vec<BackgroundTask>,
}

/// A background loop started with the service.
pub type BackgroundTask = Box<dyn FnOnce(CancellationToken) -> futures::future::BoxFuture<'static, ()> + Send>;

impl Parts {
    /// A service with this consumer and no routes, RPCs or background loops yet.
    pub fn new(consumer: Consumer) -> Self {
        Self { consumer, http: Router::new(), grpc: tonic::service::Routes::default(), tasks: Vec::new() }
    }

    /// A service that has no handlers, routes or RPCs of its own yet.
    pub fn bare(config: &ServiceConfig, pool: &PgPool) -> Self {
        Self::new(Consumer::new(config.bus.clone(), config.service, pool.clone()))
    }

    /// Adds a gRPC service (a tonic server).
    pub fn grpc<S>(mut self, svc: S) -> Self
    where
        S: tonic::codegen::Service<axum::http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: IntoResponse,
        S::Future: Send + 'static,
    {
        self.grpc = self.grpc.add_service(svc);
        self
    }

    /// Adds a background loop.
    pub fn task<F, Fut>(mut self, f: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(Box::new(move |token| Box::pin(f(token))));
        self
    }
}

/// A service bound to its listeners, ready to run.
pub struct App {
    config: ServiceConfig,
    pool: PgPool,
    parts: Parts,
    http: TcpListener,
    grpc: TcpListener,
}

#[derive(Clone)]
struct Readiness {
    pool: PgPool,
    bus_connected: Arc<AtomicBool>,
}

impl Readiness {
    async fn check(&self) -> (bool, serde_json::Value) {
        let db = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool)).await;
        let db_ok = matches!(db, Ok(Ok(_)));
        let bus_ok = self.bus_connected.load(Ordering::SeqCst);
        let word = |ok: bool| if ok { "ok" } else { "unavailable" };
        (db_ok && bus_ok, serde_json::json!({"postgres": word(db_ok), "rabbitmq": word(bus_ok)}))
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(r): State<Readiness>) -> impl IntoResponse {
    let (ok, checks) = r.check().await;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({"status": if ok { "ready" } else { "not ready" }, "checks": checks})))
}

async fn metrics() -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], telemetry::metrics_handle().render())
}

struct OpsService {
    service: &'static str,
    consumes: Vec<String>,
    names: Names,
    stats: Arc<Stats>,
    pool: PgPool,
}

#[tonic::async_trait]
impl ops_server::Ops for OpsService {
    async fn get_service_info(&self, _: tonic::Request<GetServiceInfoRequest>) -> Result<tonic::Response<ServiceInfo>, tonic::Status> {
        let pending: i64 = sb_bus::outbox::pending(&self.pool).await.map_err(|e| {
            warn!(error = %e, "counting outbox rows");
            tonic::Status::unavailable("database unavailable")
        })?;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::SeqCst);
        Ok(tonic::Response::new(ServiceInfo {
            service: self.service.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            consumes: self.consumes.clone(),
            publishes: catalog::CATALOG.iter().filter(|s| s.producer == self.service).map(|s| s.event_type.to_owned()).collect(),
            work_queue: self.names.work.clone(),
            dlq: self.names.dlq.clone(),
            applied: load(&self.stats.applied),
            duplicates: load(&self.stats.duplicate),
            retried: load(&self.stats.retried),
            parked: load(&self.stats.parked),
            outbox_pending: pending.max(0) as u64,
        }))
    }
}

impl App {
    /// Binds the configured addresses (port 0 picks a free one; see [`App::http_addr`]).
    pub async fn build(config: ServiceConfig, pool: PgPool, parts: Parts) -> anyhow::Result<Self> {
        telemetry::metrics_handle();
        let http = TcpListener::bind(config.http_addr).await.with_context(|| format!("binding HTTP on {}", config.http_addr))?;
        let grpc = TcpListener::bind(config.grpc_addr).await.with_context(|| format!("binding gRPC on {}", config.grpc_addr))?;
        Ok(Self { config, pool, parts, http, grpc })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.config.http_addr)
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_addr)
    }

    /// Serves until `shutdown`; then stops accepting, finishes in-flight work and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { config, pool, parts, http, grpc } = self;
        let service = config.service;
        let names = Names::new(&config.bus, service);
        let consumer = parts.consumer;
        let ready = Readiness { pool: pool.clone(), bus_connected: consumer.connected_flag() };
        let consumes: Vec<String> = consumer.event_types().into_iter().map(str::to_owned).collect();
        let stats = consumer.stats();

        let router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(ready.clone())
            .merge(parts.http);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sb_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let ops = ops_server::OpsServer::new(OpsService { service, consumes, names: names.clone(), stats, pool: pool.clone() });
        let grpc_routes = parts.grpc.add_service(health_service).add_service(reflection).add_service(ops);

        info!(service, http = %http.local_addr()?, grpc = %grpc.local_addr()?, queue = %names.work, "starting");
        let mut tasks = tokio::task::JoinSet::new();
        for task in parts.tasks {
            tasks.spawn(task(shutdown.clone()));
        }
        tasks.spawn(consumer.run(shutdown.clone()));
        tasks.spawn(OutboxRelay::new(pool.clone(), config.bus.clone(), service).run(shutdown.clone()));
        tasks.spawn(watch_health(ready.clone(), health_reporter, service, shutdown.clone()));
        tasks.spawn(watch_queues(config.bus.clone(), pool.clone(), service, ready.bus_connected.clone(), shutdown.clone()));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            // Peer addresses reach handlers as `ConnectInfo<SocketAddr>` (login throttling, audit).
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(http, service).with_graceful_shutdown(stop.cancelled_owned()).await {
                warn!(error = %e, "HTTP server failed");
            }
        });
        let stop = shutdown.clone();
        tasks.spawn(async move {
            // Without TCP_NODELAY, small HTTP/2 frames wait on Nagle + delayed ACK (tens of ms per call).
            let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
            if let Err(e) = tonic::transport::Server::builder()
                .layer(crate::upstream::RpcScopeLayer)
                .add_routes(grpc_routes)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
            {
                warn!(error = %e, "gRPC server failed");
            }
        });

        shutdown.cancelled().await;
        info!(service, grace_secs = config.shutdown_grace.as_secs(), "shutting down: finishing in-flight work");
        let drained = tokio::time::timeout(config.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(service, "shutdown grace period over; abandoning unfinished work (it will be redelivered)");
        }
        pool.close().await;
        info!(service, "stopped");
        Ok(())
    }
}

/// Keeps gRPC health in step with readiness (SERVING only when PostgreSQL and RabbitMQ are up),
/// and the gauge `sb_service_ready` (1 or 0).
async fn watch_health(
    ready: Readiness,
    reporter: tonic_health::server::HealthReporter,
    service: &'static str,
    shutdown: CancellationToken,
) {
    let grpc_name = format!("switchboard.{service}");
    loop {
        let is_ready = ready.check().await.0;
        // The founder's "not ready" alarm (k8s/monitoring/alerts.yml): database or broker away.
        metrics::gauge!("sb_service_ready").set(if is_ready { 1.0 } else { 0.0 });
        let status = if is_ready { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(&grpc_name, status).await;
        tokio::select! {
            _ = shutdown.cancelled() => {
                reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                return;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Publishes queue depths (work, retry rungs, DLQ) and the outbox backlog as metrics.
async fn watch_queues(
    bus: sb_bus::BusConfig,
    pool: PgPool,
    service: &'static str,
    consumer_up: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut ops: Option<Ops> = None;
    loop {
        // Only look once the consumer has declared the queues, so a look never races their creation.
        if ops.is_none() && consumer_up.load(Ordering::SeqCst) {
            ops = Ops::connect(bus.clone()).await.ok();
        }
        if let Some(o) = &ops {
            match o.depths(&[service]).await {
                Ok(depths) => {
                    for d in depths {
                        let gauge = metrics::gauge!("sb_bus_queue_messages", "queue" => d.queue, "role" => d.role);
                        gauge.set(f64::from(d.messages.unwrap_or(0)));
                    }
                }
                Err(_) => ops = None,
            }
        }
        if let Ok((n, oldest)) = sb_bus::outbox::backlog(&pool).await {
            metrics::gauge!("sb_outbox_pending").set(n as f64);
            metrics::gauge!("sb_outbox_oldest_pending_seconds").set(oldest);
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(o) = ops { o.close().await; }
                return;
            }
            _ = tokio::time::sleep(Duration::from_secs(if ops.is_some() { 10 } else { 1 })) => {}
        }
    }
}
