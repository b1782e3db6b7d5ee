//! An operator follows one failing request by its request id: the id the gateway answered with
//! finds the gateway's error lines (with the route and the failing service's name, not its
//! address) and the failing service's own line. The six debug binaries as processes, logging JSON
//! to files as a deployment would collect them.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::{path::Path, time::Duration};

use sb_testkit::wait_for;
use serde_json::Value;
use sqlx::Connection;
use system_tests::Six;

/// The log lines of `file` that mention `request_id`, as JSON.
fn lines_with(file: &Path, request_id: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().filter(|l| l.contains(request_id)).filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The value of span field `field` on the line (the innermost span that has it).
fn span_field<'a>(line: &'a Value, field: &str) -> Option<&'a str> {
    line["spans"].as_array()?.iter().rev().find_map(|s| s[field].as_str())
}

/// Waits for a WARN line of `file` with this request id whose message is `message`.
async fn warn_line(file: &Path, request_id: &str, message: &str) -> Value {
    wait_for(Duration::from_secs(10), &format!("\"{message}\" with request id {request_id} in {}", file.display()), || {
        let found = lines_with(file, request_id)
            .into_iter()
            .find(|l| l["level"] == "WARN" && l["fields"]["message"] == message && span_field(l, "request_id") == Some(request_id));
        async move { found }
    })
    .await
}

async fn log_in(http: &reqwest::Client, gateway: &str, request_id: &str) -> reqwest::Response {
    http.post(format!("{gateway}/v1/login"))
        .header("x-request-id", request_id)
        .json(&serde_json::json!({ "email": "someone@example.com", "password": "correct horse battery staple" }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_request_is_followed_by_its_id_through_the_gateways_and_the_upstreams_logs() {
    let mut six = Six::start("debug");
    six.wait_ready().await;
    let http = reqwest::Client::new();
    let log_of = |name: &str| six.running.iter().find(|r| r.name == name).unwrap().log.clone();
    let (gateway_log, identity_log) = (log_of("gateway"), log_of("identity"));

    // identity's database loses the table a login reads: identity fails the call.
    let identity_db = format!("postgres://postgres@127.0.0.1:5432/{}_identity", six.db);
    let mut db = sqlx::PgConnection::connect(&identity_db).await.unwrap();
    sqlx::query("ALTER TABLE users RENAME TO users_elsewhere").execute(&mut db).await.unwrap();

    let id = format!("follow-{}", uuid::Uuid::new_v4());
    let resp = log_in(&http, &six.gateway_url, &id).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["x-request-id"], id.as_str(), "the answer names the request id to look for");
    let body = resp.text().await.unwrap();
    assert!(!body.contains("users_elsewhere"), "the database's error stays in the logs: {body}");

    // The gateway: the error and the failed request, each with route and upstream service.
    for message in ["upstream call failed", "internal error", "request failed"] {
        let line = warn_line(&gateway_log, &id, message).await;
        assert_eq!(span_field(&line, "route"), Some("/v1/login"), "{line}");
        assert_eq!(span_field(&line, "method"), Some("POST"), "{line}");
        let upstream = line["fields"]["upstream"].as_str().or_else(|| span_field(&line, "upstream"));
        assert_eq!(upstream, Some("identity"), "{line}");
    }
    let failed = warn_line(&gateway_log, &id, "request failed").await;
    assert_eq!(failed["fields"]["status"], 500);
    // identity: the same id, the RPC, and why it failed.
    let line = warn_line(&identity_log, &id, "rpc failed").await;
    assert_eq!(span_field(&line, "rpc"), Some("/switchboard.identity.v1.Identity/LogIn"), "{line}");
    assert_eq!(line["fields"]["grpc_status"], "13", "{line}");
    let identitys_lines = lines_with(&identity_log, &id);
    assert!(
        identitys_lines.iter().any(|l| l["fields"]["error"].as_str().is_some_and(|e| e.contains("relation \"users\" does not exist"))),
        "identity's lines with the request id say what failed: {identitys_lines:?}"
    );

    // The table back, the same login is an ordinary refusal (the failure was the fault, not the test).
    sqlx::query("ALTER TABLE users_elsewhere RENAME TO users").execute(&mut db).await.unwrap();
    assert_eq!(log_in(&http, &six.gateway_url, &format!("follow-{}", uuid::Uuid::new_v4())).await.status(), 401);

    // identity down: the gateway names it by service, with the request id and route.
    let identity = six.running.iter_mut().find(|r| r.name == "identity").unwrap();
    identity.child.kill().unwrap();
    identity.child.wait().unwrap();
    let id = format!("follow-{}", uuid::Uuid::new_v4());
    let resp = log_in(&http, &six.gateway_url, &id).await;
    assert_eq!(resp.status(), 503);
    let line = warn_line(&gateway_log, &id, "upstream unreachable").await;
    assert_eq!(line["fields"]["upstream"], "identity", "{line}");
    assert_eq!(span_field(&line, "route"), Some("/v1/login"), "{line}");
    let failed = warn_line(&gateway_log, &id, "request failed").await;
    assert_eq!(span_field(&failed, "upstream"), Some("identity"), "{failed}");
    assert_eq!(failed["fields"]["status"], 503);

    db.close().await.unwrap();
    six.kill_and_clean_up(0).await;
}
