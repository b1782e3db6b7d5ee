//! `scripts/clean-test-leftovers.sh` (run first by `make test` and `make bench`): it removes the
//! databases, queues and exchanges of test runs older than 15 minutes and keeps a fresh run's.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::{path::PathBuf, process::Command};

use sb_bus::BusConfig;
use sqlx::{Connection, PgConnection};

/// A test name as `sb_testkit::unique` makes it, as if made `ago_secs` seconds ago.
fn name_made(ago_secs: u64, tag: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    sb_testkit::unique_made_at(tag, now - ago_secs)
}

async fn databases(admin: &mut PgConnection, names: &[&str]) -> Vec<String> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname = ANY($1) ORDER BY datname")
        .bind(&names)
        .fetch_all(admin)
        .await
        .unwrap()
}

/// Whether the broker has this queue (management API, as the script uses).
async fn has_queue(name: &str) -> bool {
    let url = format!("{}/queues/%2F/{name}", sb_testkit::rabbitmq_api());
    let status = reqwest::Client::new().get(url).send().await.unwrap().status();
    assert!(status == 200 || status == 404, "management API answered {status}");
    status == 200
}

#[tokio::test]
async fn only_test_runs_older_than_fifteen_minutes_are_removed() {
    let old = name_made(3600, "leftover_check");
    let fresh = name_made(0, "leftover_check");
    let mut admin = PgConnection::connect(&sb_testkit::admin_url()).await.unwrap();
    for db in [&old, &fresh] {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\""))).execute(&mut admin).await.unwrap();
    }
    // Each run's queues and exchanges as the services declare them.
    let mut cfgs = Vec::new();
    for prefix in [&old, &fresh] {
        let mut cfg = BusConfig::new(sb_testkit::amqp_url());
        cfg.prefix = prefix.clone();
        let conn = sb_bus::publisher::connect(&cfg, "leftovers test").await.unwrap();
        sb_bus::topology::declare_service(&conn, &cfg, "billing", &["billing.access.changed.v1"]).await.unwrap();
        let _ = conn.close(200, "declared".into()).await;
        cfgs.push(cfg);
    }
    assert!(has_queue(&format!("{old}.billing.work")).await && has_queue(&format!("{fresh}.billing.work")).await);

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/clean-test-leftovers.sh");
    let out = Command::new("bash").arg(script).env("SB_TEST_DATABASE_URL", sb_testkit::admin_url()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("removed"), "{said}");

    assert_eq!(databases(&mut admin, &[&old, &fresh]).await, vec![fresh.clone()], "the old run's database goes, the fresh one's stays");
    assert!(!has_queue(&format!("{old}.billing.work")).await, "the old run's queues go");
    assert!(!has_queue(&format!("{old}.billing.dlq")).await);
    assert!(has_queue(&format!("{fresh}.billing.work")).await, "a run going on keeps its queues");

    sb_testkit::delete_services_topology(&cfgs[1], &["billing"]).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{fresh}\" WITH (FORCE)"))).execute(&mut admin).await.unwrap();
}
