//! The six service binaries started as processes, wired to each other as a deployment wires them
//! (the gateway calls identity and billing over gRPC, billing's local checkout posts its webhooks
//! to the gateway), each with its own database under one test prefix. Used by the system tests
//! (debug binaries) and the memory benchmark (release binaries).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed setup should stop loudly

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use sb_bus::{BusConfig, catalog::SERVICES};
use sb_testkit::{unique, wait_for};

/// A service binary of the workspace's `profile` build (`debug` or `release`).
pub fn bin_of(profile: &str, name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let path = target.join(profile).join(name);
    let build = if profile == "release" { "cargo build --release --workspace --bins" } else { "cargo build --workspace --bins" };
    assert!(path.exists(), "{} is missing: build the binaries first (`{build}`)", path.display());
    path
}

/// A port free now for a service process to bind (see `sb_testkit::reserve_port`).
pub fn free_port() -> u16 {
    sb_testkit::reserve_port().local_addr().expect("reserved port").port()
}

pub struct Running {
    pub name: &'static str,
    pub child: Child,
    pub http: u16,
    pub grpc: u16,
    pub log: PathBuf,
}

/// A service left running by a failed test would keep reconnecting to the broker for good.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn env_prefix(service: &str) -> String {
    service.to_uppercase().replace('-', "_")
}

/// The settings of service `name` on `ports` (HTTP, gRPC) with its database `<db>_<service>` and
/// the bus under `prefix`, logging JSON.
pub fn service_env(name: &str, prefix: &str, db: &str, ports: (u16, u16)) -> Vec<(String, String)> {
    let (http, grpc) = ports;
    let p = env_prefix(name);
    vec![
        (format!("{p}_HTTP_ADDR"), format!("127.0.0.1:{http}")),
        (format!("{p}_GRPC_ADDR"), format!("127.0.0.1:{grpc}")),
        (format!("{p}_DATABASE_URL"), format!("postgres://postgres@127.0.0.1:5432/{db}_{}", name.replace('-', "_"))),
        ("SWITCHBOARD_AMQP_URL".into(), sb_testkit::amqp_url()),
        ("SWITCHBOARD_BUS_PREFIX".into(), prefix.into()),
        ("SWITCHBOARD_RETRY_DELAYS".into(), "1s,5s".into()),
        ("SWITCHBOARD_LOG_FORMAT".into(), "json".into()),
        ("RUST_LOG".into(), "info".into()),
    ]
}

/// Starts one service binary on `ports` (HTTP, gRPC) with its database `<db>_<service>`, logging
/// JSON to `<dir>/<name>.log` (appended to).
pub fn spawn_with(
    bin: &Path,
    name: &'static str,
    prefix: &str,
    db: &str,
    dir: &Path,
    ports: (u16, u16),
    extra: &[(String, String)],
) -> Running {
    let (http, grpc) = ports;
    let log = dir.join(format!("{name}.log"));
    // Appended to: a service started again (after a kill) continues its log.
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("open log file");
    let env = service_env(name, prefix, db, ports).into_iter().chain(extra.iter().cloned());
    let child = Command::new(bin)
        .envs(env)
        .stdout(file.try_clone().expect("clone log handle"))
        .stderr(file)
        .spawn()
        .expect("start the service binary");
    Running { name, child, http, grpc, log }
}

/// How many connections each service (in [`SERVICES`] order) has open to its database now.
pub async fn connections(db: &str) -> Vec<i64> {
    use sqlx::Connection;
    let Ok(mut admin) = sqlx::PgConnection::connect(&sb_testkit::admin_url()).await else { return vec![-1; SERVICES.len()] };
    let mut out = Vec::new();
    for s in SERVICES {
        let name = format!("{db}_{}", s.replace('-', "_"));
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap_or(-1);
        out.push(n);
    }
    out
}

pub async fn drop_databases(db: &str) {
    use sqlx::Connection;
    let Ok(mut admin) = sqlx::PgConnection::connect(&sb_testkit::admin_url()).await else { return };
    for s in SERVICES {
        let q = format!("DROP DATABASE IF EXISTS \"{db}_{}\" WITH (FORCE)", s.replace('-', "_"));
        let _ = sqlx::query(sqlx::AssertSqlSafe(q)).execute(&mut admin).await;
    }
}

/// All six services of one `profile` build, running under a fresh prefix.
pub struct Six {
    pub prefix: String,
    pub db: String,
    pub dir: PathBuf,
    pub gateway_url: String,
    /// Each service's (HTTP, gRPC) port.
    pub ports: HashMap<&'static str, (u16, u16)>,
    pub running: Vec<Running>,
}

impl Six {
    /// A fresh prefix, databases, ports and log folder for the six, none started yet.
    pub fn layout() -> Self {
        let prefix = unique("sys");
        // Named like every test resource (`t<time><random>_…`), so the leftover cleaner knows them.
        let db = prefix.clone();
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        let ports: HashMap<&'static str, (u16, u16)> = SERVICES.iter().map(|s| (*s, (free_port(), free_port()))).collect();
        let gateway_url = format!("http://127.0.0.1:{}", ports["gateway"].0);
        Self { prefix, db, dir, gateway_url, ports, running: Vec::new() }
    }

    /// What service `s` is wired to besides its own settings: the gateway calls the others over
    /// gRPC, support-router calls billing, billing's local checkout posts its webhooks to the
    /// gateway.
    pub fn wiring(&self, s: &str) -> Vec<(String, String)> {
        let grpc = |s: &str| format!("http://127.0.0.1:{}", self.ports[s].1);
        match s {
            "gateway" => vec![
                ("GATEWAY_IDENTITY_URL".into(), grpc("identity")),
                ("GATEWAY_BILLING_URL".into(), grpc("billing")),
                ("GATEWAY_CRM_SYNC_URL".into(), grpc("crm-sync")),
                ("GATEWAY_SUPPORT_URL".into(), grpc("support-router")),
                ("GATEWAY_AI_URL".into(), grpc("ai-assist")),
            ],
            "billing" => vec![("SWITCHBOARD_PUBLIC_URL".into(), self.gateway_url.clone())],
            // The background plan refresh asks billing for accounts it has not heard of.
            "support-router" => vec![("SUPPORT_ROUTER_BILLING_URL".into(), grpc("billing"))],
            _ => vec![],
        }
    }

    /// Every setting of service `s` in this layout (its own and its wiring).
    pub fn env_of(&self, s: &str) -> Vec<(String, String)> {
        let mut env = service_env(s, &self.prefix, &self.db, self.ports[s]);
        env.extend(self.wiring(s));
        env
    }

    /// Starts the six binaries (not waiting for them: see [`Six::wait_ready`]).
    pub fn start(profile: &str) -> Self {
        Self::start_with(profile, &[])
    }

    /// Starts the six binaries with `extra` settings for all of them.
    pub fn start_with(profile: &str, extra: &[(String, String)]) -> Self {
        let mut six = Self::layout();
        six.running = SERVICES
            .iter()
            .map(|s| {
                let env: Vec<(String, String)> = six.wiring(s).into_iter().chain(extra.iter().cloned()).collect();
                spawn_with(&bin_of(profile, s), s, &six.prefix, &six.db, &six.dir, six.ports[s], &env)
            })
            .collect();
        six
    }

    /// Waits until every service answers `/readyz` 200 and returns each one's answer.
    pub async fn wait_ready(&self) -> Vec<serde_json::Value> {
        let http = reqwest::Client::new();
        let mut answers = Vec::new();
        for r in &self.running {
            let url = format!("http://127.0.0.1:{}/readyz", r.http);
            let what = format!("{} /readyz 200 (log: {})", r.name, r.log.display());
            answers.push(
                wait_for(Duration::from_secs(90), &what, || {
                    let (http, url) = (http.clone(), url.clone());
                    async move {
                        let resp = http.get(&url).send().await.ok()?;
                        if resp.status() != 200 {
                            return None;
                        }
                        resp.json().await.ok()
                    }
                })
                .await,
            );
        }
        answers
    }

    /// The bus settings these services run with (for queue checks and clean-up).
    pub fn bus(&self) -> BusConfig {
        let mut cfg = BusConfig::new(sb_testkit::amqp_url());
        cfg.prefix = self.prefix.clone();
        cfg.retry_delays = vec![Duration::from_secs(1), Duration::from_secs(5)];
        cfg
    }

    /// Removes what the run left: databases, queues and the log folder (the processes are
    /// killed when dropped, if still running).
    /// Kills the six; then removes their databases, queues and logs, unless `failed` (of a
    /// benchmark's requests) is not 0: the logs, which say why, are kept and their place printed.
    pub async fn kill_and_clean_up(&mut self, failed: u64) {
        for r in &mut self.running {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        if failed > 0 {
            println!("  {failed} failed: the services' logs are in {}", self.dir.display());
        } else {
            self.clean_up().await;
        }
    }

    pub async fn clean_up(&self) {
        drop_databases(&self.db).await;
        sb_testkit::delete_services_topology(&self.bus(), &SERVICES).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The password every sign-up of the system tests and benches uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// Signs `email` up through the gateway at `base`; the session token.
pub async fn sign_up(http: &reqwest::Client, base: &str, email: &str) -> Option<String> {
    let body = serde_json::json!({"email": email, "password": PASSWORD, "name": "Load"});
    let r = http.post(format!("{base}/v1/signup")).json(&body).send().await.ok()?;
    if r.status() != 201 {
        return None;
    }
    r.json::<serde_json::Value>().await.ok()?["token"].as_str().map(str::to_owned)
}

/// Starts a checkout for the token's account and pays it on billing's local checkout page (which
/// posts Stripe-signed webhooks to the gateway). `http` must not follow redirects.
pub async fn pay(http: &reqwest::Client, base: &str, token: &str) -> bool {
    let body = serde_json::json!({"plan": "pro"});
    let Ok(r) = http.post(format!("{base}/v1/billing/checkout")).bearer_auth(token).json(&body).send().await else {
        return false;
    };
    let Some(url) = r.json::<serde_json::Value>().await.ok().and_then(|v| v["url"].as_str().map(str::to_owned)) else { return false };
    http.post(&url).bearer_auth(token).send().await.is_ok_and(|r| r.status().is_success() || r.status().is_redirection())
}

/// `identity create-user` (the debug binary) on the database at `database_url`, as an operator
/// runs it: the password on stdin. Its output, whatever the outcome.
pub fn create_user(database_url: &str, email: &str, role: &str, name: &str, password: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(bin_of("debug", "identity"))
        .args(["create-user", "--email", email, "--role", role, "--name", name])
        .env("IDENTITY_DATABASE_URL", database_url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start identity create-user");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("write the password");
    child.wait_with_output().expect("identity create-user ran")
}
