//! The six service binaries as a user runs them: each becomes ready against the real PostgreSQL
//! and RabbitMQ, answers gRPC health (SERVING), reflection and Ops, declares its queues, and exits
//! cleanly on SIGTERM. Needs the binaries built (`make test` builds them first).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use sb_bus::{BusConfig, catalog::SERVICES, dlq::Ops};
use sb_testkit::{unique, wait_for};
use system_tests::{Six, drop_databases, free_port, spawn_with};

fn bin(name: &str) -> PathBuf {
    system_tests::bin_of("debug", name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_six_services_become_ready_serve_grpc_and_stop_cleanly_on_sigterm() {
    let mut six = Six::start("debug");
    let (prefix, gateway_url) = (six.prefix.clone(), six.gateway_url.clone());
    let http = reqwest::Client::new();

    for (r, body) in six.running.iter().zip(six.wait_ready().await) {
        assert_eq!(body["checks"]["postgres"], "ok");
        assert_eq!(body["checks"]["rabbitmq"], "ok");
        let live = http.get(format!("http://127.0.0.1:{}/healthz", r.http)).send().await.unwrap();
        assert_eq!(live.status(), 200);
    }

    for r in &six.running {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", r.grpc)).unwrap().connect().await.unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        wait_for(Duration::from_secs(30), &format!("{} gRPC health SERVING", r.name), || {
            let mut health = health.clone();
            async move {
                let resp = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.ok()?;
                (resp.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
        let named = health.check(tonic_health::pb::HealthCheckRequest { service: format!("switchboard.{}", r.name) }).await.unwrap();
        assert_eq!(named.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

        let mut ops = sb_proto::ops::v1::ops_client::OpsClient::new(channel.clone());
        let info = ops.get_service_info(sb_proto::ops::v1::GetServiceInfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.service, r.name);
        assert_eq!(info.work_queue, format!("{prefix}.{}.work", r.name));
        assert_eq!(info.dlq, format!("{prefix}.{}.dlq", r.name));
        assert_eq!(info.outbox_pending, 0);

        // Reflection lists health, reflection and our own Ops service.
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut stream = reflection.server_reflection_info(futures::stream::iter(vec![req])).await.unwrap().into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) = stream.message().await.unwrap().unwrap().message_response else {
            panic!("{}: reflection did not list services", r.name);
        };
        let listed: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for want in ["grpc.health.v1.Health", "switchboard.ops.v1.Ops", "grpc.reflection.v1.ServerReflection"] {
            assert!(listed.iter().any(|s| s == want), "{}: {want} missing from {listed:?}", r.name);
        }

        let metrics = http.get(format!("http://127.0.0.1:{}/metrics", r.http)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("sb_outbox_pending"), "{}: /metrics lacks the outbox gauge", r.name);
    }

    // A new user's payment flow across the binaries: sign up, start checkout, pay on the local
    // checkout page (billing sends signed webhooks to the gateway), see access active.
    let signup: serde_json::Value = http
        .post(format!("{gateway_url}/v1/signup"))
        .json(&serde_json::json!({"email": "first@customer.test", "password": "correct horse battery staple", "name": "First"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signup["token"].as_str().unwrap().to_owned();
    let checkout: serde_json::Value =
        http.post(format!("{gateway_url}/v1/billing/checkout")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let pay_url = checkout["url"].as_str().unwrap_or_else(|| panic!("no checkout url: {checkout}")).to_owned();
    let page = http.get(&pay_url).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<form method=\"post\""), "{page}");
    let paid = http.post(&pay_url).bearer_auth(&token).send().await.unwrap();
    assert!(paid.status().is_success(), "paying answered {}", paid.status());
    let me: serde_json::Value = wait_for(Duration::from_secs(30), "access active after paying", || {
        let (http, url, token) = (http.clone(), format!("{gateway_url}/v1/me"), token.clone());
        async move {
            let me: serde_json::Value = http.get(&url).bearer_auth(&token).send().await.ok()?.json().await.ok()?;
            (me["access"]["status"] == "active").then_some(me)
        }
    })
    .await;
    assert_eq!(me["access"]["plan"], "starter");

    // Every work, retry and dead-letter queue exists on the broker (what the dashboard shows).
    let ops = Ops::connect(six.bus()).await.unwrap();
    let depths = ops.depths(&[]).await.unwrap();
    assert_eq!(depths.len(), SERVICES.len() * 4, "work + 2 rungs + dlq per service");
    for d in &depths {
        assert!(d.messages.is_some(), "queue {} was not declared", d.queue);
    }
    ops.close().await;

    // SIGTERM: every service drains and exits 0.
    for r in &six.running {
        let ok = Command::new("kill").args(["-TERM", &r.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
    }
    for r in &mut six.running {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = r.child.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "{} did not exit after SIGTERM", r.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "{} exited with {status}", r.name);
        let log = std::fs::read_to_string(&r.log).unwrap();
        // JSON logs, one object per line, ending with the clean stop.
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{}: not a JSON log line: {line}", r.name));
            assert!(v.get("level").is_some());
        }
        assert!(log.contains("\"stopped\""), "{}: no clean stop in its log", r.name);
        assert!(!log.contains("guest:guest"), "{}: the broker password reached the log", r.name);
    }
    six.clean_up().await;
}

#[test]
fn a_bad_setting_stops_the_service_at_start_naming_the_variable() {
    let out = Command::new(bin("identity")).env("IDENTITY_HTTP_ADDR", "not-an-address").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IDENTITY_HTTP_ADDR"), "{err}");

    let out = Command::new(bin("billing")).env("SWITCHBOARD_AMQP_URL", "http://u:hunter2@x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SWITCHBOARD_AMQP_URL") && !err.contains("hunter2"), "{err}");

    let out = Command::new(bin("crm-sync")).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_migrate_subcommand_creates_and_migrates_the_database_then_exits() {
    let db = unique("mig");
    let out = Command::new(bin("support-router"))
        .arg("migrate")
        .env("SUPPORT_ROUTER_DATABASE_URL", format!("postgres://postgres@127.0.0.1:5432/{db}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&format!("postgres://postgres@127.0.0.1:5432/{db}")).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(tables.contains(&"sb_outbox".to_owned()) && tables.contains(&"sb_inbox".to_owned()), "{tables:?}");
        pool.close().await;
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&sb_testkit::admin_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{db}\" WITH (FORCE)"))).execute(&mut admin).await.unwrap();
    });
}

#[test]
fn identity_create_user_makes_the_first_admin_from_a_password_on_stdin() {
    let db = unique("cu");
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let run = |password: &str| system_tests::create_user(&url, "Founder@Example.com", "admin", "The Founder", password);
    let short = run("short");
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("password: must be at least 10 characters"));
    let ok = run("a long enough password");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("created admin founder@example.com"));
    let again = run("a long enough password");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let (role, hash): (String, String) =
            sqlx::query_as("SELECT role, password_hash FROM users WHERE email = 'founder@example.com'").fetch_one(&pool).await.unwrap();
        assert_eq!(role, "admin");
        assert!(hash.starts_with("$argon2id$"), "stored as an argon2id hash");
        pool.close().await;
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&sb_testkit::admin_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{db}\" WITH (FORCE)"))).execute(&mut admin).await.unwrap();
    });
}

/// What identity may hold resident during a flood of logins (a debug build; about 57 MiB idle): it
/// hashes on one thread per CPU, each with one reused 19 MiB argon2 block, the rest wait their
/// turn. Documented in the README.
const IDENTITY_LOGIN_FLOOD_MAX_RSS_MIB: u64 = 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_200_concurrent_logins_keeps_identitys_memory_bounded() {
    use sb_proto::identity::v1::{self as pb, identity_client::IdentityClient};
    let prefix = unique("flood");
    let db = prefix.clone();
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let token = "login-flood-test-service-token";
    let extra = vec![("SWITCHBOARD_SERVICE_TOKEN".to_owned(), token.to_owned())];
    let identity = spawn_with(&bin("identity"), "identity", &prefix, &db, &dir, (free_port(), free_port()), &extra);
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{}/readyz", identity.http);
    wait_for(Duration::from_secs(90), "identity /readyz", || {
        let (http, ready) = (http.clone(), ready.clone());
        async move { http.get(&ready).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", identity.grpc)).unwrap().connect().await.unwrap();
    fn as_service<T>(msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert("x-switchboard-service", "login-flood-test-service-token".parse().unwrap());
        r
    }
    let password = "a flood of correct passwords";
    let signup =
        pb::SignUpRequest { email: "flood@example.com".into(), password: password.into(), name: "Flood".into(), ..Default::default() };
    IdentityClient::new(channel.clone()).sign_up(as_service(signup)).await.unwrap();
    let before = sb_testkit::probe::memory_of(identity.child.id()).unwrap().0;
    // Every login is correct, so every one hashes: the most memory a login flood can ask for.
    let logins = (0..200).map(|_| {
        let mut c = IdentityClient::new(channel.clone());
        let req = as_service(pb::LogInRequest { email: "flood@example.com".into(), password: password.into() });
        async move { c.log_in(req).await }
    });
    let results = futures::future::join_all(logins).await;
    assert!(results.iter().all(Result::is_ok), "every login succeeds: {:?}", results.iter().find(|r| r.is_err()));
    let (_, peak) = sb_testkit::probe::memory_of(identity.child.id()).unwrap();
    println!(
        "identity resident memory: {} MiB before the flood, peak {} MiB (bound {IDENTITY_LOGIN_FLOOD_MAX_RSS_MIB} MiB)",
        before >> 20,
        peak >> 20
    );
    assert!(peak >> 20 <= IDENTITY_LOGIN_FLOOD_MAX_RSS_MIB, "identity peaked at {} MiB", peak >> 20);
    drop(identity);
    drop_databases(&db).await;
    sb_testkit::delete_services_topology(
        &{
            let mut cfg = BusConfig::new(sb_testkit::amqp_url());
            cfg.prefix = prefix.clone();
            cfg.retry_delays = sb_bus::config::parse_delays("1s,5s").unwrap();
            cfg
        },
        &["identity"],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
