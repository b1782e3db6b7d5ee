//! Secrets never reach logs or responses: a canary service token, a canary SMTP password and a
//! test user's password and session token are searched for in every log line (captured at debug
//! level) and every response body of a realistic session, including failing email sends.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use serde_json::json;

const CANARY_TOKEN: &str = "canary-service-token-7f3a9c0e";
const CANARY_SMTP_PASSWORD: &str = "canary-smtp-pw-91d2";
const USER_PASSWORD: &str = "canary user password 55e1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_secrets_and_passwords_never_appear_in_logs_or_responses() {
    let logs = sb_testkit::logs::Captured::install();

    // SMTP is configured with a password but nothing listens: every send fails and is logged.
    let smtp = format!("smtp://mailer:{CANARY_SMTP_PASSWORD}@127.0.0.1:{}", sb_testkit::smtp::closed_port());
    let identity_vars = [("SWITCHBOARD_SERVICE_TOKEN", CANARY_TOKEN), ("IDENTITY_SMTP_URL", smtp.as_str())];
    let sys = common::start(&identity_vars, &[("SWITCHBOARD_SERVICE_TOKEN", CANARY_TOKEN)]).await;
    let mut bodies = Vec::new();
    let signup = json!({"email": "canary@secrets.test", "password": USER_PASSWORD, "name": "Canary"});
    let r = sys.web.post(sys.url("/v1/signup")).json(&signup).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        ("POST", "/v1/login", json!({"email": "canary@secrets.test", "password": "wrong password here"})),
        ("POST", "/v1/login", json!({"email": "canary@secrets.test", "password": USER_PASSWORD})),
        ("POST", "/v1/signup", signup.clone()),
        ("POST", "/v1/signup", json!({"email": "x", "password": USER_PASSWORD, "name": "Canary"})),
    ] {
        let r = sys.web.request(method.parse().unwrap(), sys.url(path)).json(&body).send().await.unwrap();
        bodies.push(r.text().await.unwrap());
    }
    for path in ["/v1/me", "/v1/accounts/00000000-0000-0000-0000-000000000000", "/v1/admin/customers"] {
        bodies.push(sys.web.get(sys.url(path)).bearer_auth(&token).send().await.unwrap().text().await.unwrap());
    }
    bodies.push(sys.web.get(sys.url("/openapi.json")).send().await.unwrap().text().await.unwrap());
    bodies.push(sys.web.get(format!("http://{}/metrics", sys.gateway.http)).send().await.unwrap().text().await.unwrap());

    // Wait until the failing email send has been logged at least once.
    sb_testkit::wait_for(Duration::from_secs(30), "a failed SMTP send in the logs", || {
        let logs = logs.clone();
        async move { logs.text().contains("smtp unavailable").then_some(()) }
    })
    .await;
    sys.stop().await;

    let text = logs.text();
    assert!(text.lines().count() > 20, "the logs were captured");
    for secret in [CANARY_TOKEN, CANARY_SMTP_PASSWORD, USER_PASSWORD, token.as_str()] {
        assert!(!text.contains(secret), "a secret reached the logs: {secret}");
        for b in &bodies {
            assert!(!b.contains(secret), "a secret reached a response: {secret}");
        }
    }
}
