//! The `switchboard` binary against the real broker: list, show, replay and purge parked messages.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Command, Output, Stdio};

use sb_bus::{
    BusConfig, Envelope, Publisher,
    publisher::{event_properties, headers, lstr, with_headers},
    topology,
};
use uuid::Uuid;

const SERVICE: &str = "test-ops";

fn cli(prefix: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--prefix", prefix, "--amqp-url", &sb_testkit::amqp_url()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run switchboard")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn parked_count(prefix: &str) -> u64 {
    let v = json(&cli(prefix, &["--json", "dlq", "list", SERVICE]));
    v[0]["messages"].as_u64().expect("DLQ exists")
}

#[tokio::test]
async fn operators_list_show_replay_and_purge_parked_messages() {
    let mut cfg = BusConfig::new(sb_testkit::amqp_url());
    cfg.prefix = sb_testkit::unique("cli");
    let conn = sb_bus::publisher::connect(&cfg, "cli test").await.unwrap();
    let names = topology::declare_service(&conn, &cfg, SERVICE, &[]).await.unwrap();
    let publisher = Publisher::open(&conn, &cfg).await.unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let events = [a, a, b].map(|acc| Envelope::raw("identity", "identity.user.signed_up.v1", serde_json::json!({})).with_account(acc));
    for e in &events {
        let props = with_headers(&event_properties(e, &Default::default()), &[(headers::REASON, lstr("CRM said 400: invalid email"))], &[]);
        publisher.send_to_queue(&names.dlq, &e.to_json(), props).await.unwrap();
    }
    let p = cfg.prefix.as_str();
    assert_eq!(parked_count(p), 3);

    let shown = json(&cli(p, &["--json", "dlq", "show", SERVICE]));
    assert_eq!(shown.as_array().unwrap().len(), 3);
    assert_eq!(shown[0]["reason"], "CRM said 400: invalid email");
    assert_eq!(shown[0]["event_id"], events[0].id.to_string());
    let table = cli(p, &["dlq", "show", SERVICE]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("reason:   CRM said 400: invalid email"));

    // Purge refuses without a terminal or --yes, and deletes nothing.
    let refused = cli(p, &["dlq", "purge", SERVICE, "--all"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(parked_count(p), 3);
    // A selector is required.
    let missing = cli(p, &["dlq", "replay", SERVICE]);
    assert_eq!(missing.status.code(), Some(2));

    let replayed = json(&cli(p, &["--json", "dlq", "replay", SERVICE, "--account", &a.to_string()]));
    assert_eq!(replayed["replayed"], 2);
    let queues = json(&cli(p, &["--json", "queues", SERVICE]));
    let work = queues.as_array().unwrap().iter().find(|q| q["role"] == "work").unwrap();
    assert_eq!(work["messages"], 2);
    assert_eq!(parked_count(p), 1);

    let purged = json(&cli(p, &["--json", "dlq", "purge", SERVICE, "--event", &events[2].id.to_string(), "--yes"]));
    assert_eq!(purged["purged"], 1);
    assert_eq!(parked_count(p), 0);

    let unknown = cli(p, &["dlq", "show", "nope"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown service \"nope\""));

    sb_testkit::delete_services_topology(&cfg, &[SERVICE]).await;
}

/// The services run another retry ladder than the CLI's own setting: `queues` shows the retry
/// queues they declared (found through the management API), and says so when it cannot ask.
#[tokio::test]
async fn queues_shows_the_retry_queues_the_broker_has_whatever_the_clis_ladder() {
    let mut cfg = BusConfig::new(sb_testkit::amqp_url());
    cfg.prefix = sb_testkit::unique("cli");
    cfg.retry_delays = vec![std::time::Duration::from_secs(90), std::time::Duration::from_secs(2)];
    let conn = sb_bus::publisher::connect(&cfg, "cli test").await.unwrap();
    topology::declare_service(&conn, &cfg, SERVICE, &[]).await.unwrap();
    let p = cfg.prefix.as_str();
    let retry = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().filter(|q| q["role"] == "retry").map(|q| q["queue"].as_str().unwrap().to_owned()).collect()
    };

    let listed = cli(p, &["--json", "--retry-delays", "5s,30s", "queues", SERVICE]);
    let v = json(&listed);
    assert_eq!(retry(&v), [format!("{p}.{SERVICE}.retry.2s"), format!("{p}.{SERVICE}.retry.90s")], "{v}");
    assert!(v.as_array().unwrap().iter().all(|q| q["messages"] == 0), "every listed queue exists: {v}");
    let roles: Vec<&str> = v.as_array().unwrap().iter().map(|q| q["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["work", "retry", "retry", "dlq"]);

    // No management API: the configured ladder, said on stderr, without the password.
    let fallback = cli(p, &["--json", "--retry-delays", "5s", "--management-url", "http://ops:s3cr3t-pw@127.0.0.1:1", "queues", SERVICE]);
    let err = String::from_utf8_lossy(&fallback.stderr).into_owned();
    assert!(err.contains("management API at http://127.0.0.1:1 ") && err.contains("SWITCHBOARD_RETRY_DELAYS (5s)"), "{err}");
    assert!(!err.contains("s3cr3t-pw"), "{err}");
    let v = json(&fallback);
    assert_eq!(retry(&v), [format!("{p}.{SERVICE}.retry.5s")]);
    assert!(v.as_array().unwrap().iter().any(|q| q["role"] == "retry" && q["messages"].is_null()), "5s was never declared: {v}");

    sb_testkit::delete_services_topology(&cfg, &[SERVICE]).await;
}

#[test]
fn an_unreachable_broker_is_a_clear_error_without_the_password() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--amqp-url", "amqp://ops:s3cr3t-pw@127.0.0.1:1/%2f", "dlq", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach RabbitMQ at amqp://ops:***@127.0.0.1:1"), "{err}");
    assert!(!err.contains("s3cr3t-pw"), "{err}");
}
