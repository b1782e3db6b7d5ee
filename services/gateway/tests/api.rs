//! The portal API as a browser or attacker uses it: sign-up races, mass assignment, BOLA/BFLA,
//! forged sessions, throttling, body limits, problem+json, request ids, CORS, security headers.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::*;
use identity::domain::Role;
use serde_json::{Value, json};

async fn problem(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert_eq!(ct, "application/problem+json", "status {status}");
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_submitted_signup_creates_one_user_and_the_second_gets_409() {
    let sys = start(&[], &[]).await;
    let body = json!({"email": "Twice@Example.com", "password": PASSWORD, "name": "Twice"});
    let sends = (0..4).map(|_| sys.web.post(sys.url("/v1/signup")).json(&body).send());
    let mut statuses = Vec::new();
    for r in futures::future::join_all(sends).await {
        let r = r.unwrap();
        let s = r.status().as_u16();
        if s == 409 {
            let (_, p) = problem(r).await;
            assert_eq!(p["code"], "email_taken");
        }
        statuses.push(s);
    }
    statuses.sort();
    assert_eq!(statuses, vec![201, 409, 409, 409]);
    let users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'twice@example.com'").fetch_one(&sys.identity.db.pool).await.unwrap();
    assert_eq!(users, 1);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_account_in_a_profile_update_are_ignored() {
    let sys = start(&[], &[]).await;
    let me = sys.signup("mass@assign.test").await;
    let other = sys.signup("other@assign.test").await;
    let r = sys
        .web
        .patch(sys.url("/v1/me"))
        .bearer_auth(&me.token)
        .json(&json!({"name": "Still Me", "role": "admin", "account_id": other.account_id, "email": "hijack@assign.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = sys.web.get(sys.url("/v1/me")).bearer_auth(&me.token).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["user"]["name"], "Still Me");
    assert_eq!(v["role"], "customer");
    assert_eq!(v["user"]["account_id"], me.account_id);
    assert_eq!(v["user"]["email"], "mass@assign.test");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cannot_reach_another_accounts_records_or_admin_routes() {
    let sys = start(&[], &[]).await;
    let a = sys.signup("a@bola.test").await;
    let b = sys.signup("b@bola.test").await;
    for path in [format!("/v1/accounts/{}", b.account_id), format!("/v1/users/{}", b.user_id)] {
        let (status, p) = problem(sys.web.get(sys.url(&path)).bearer_auth(&a.token).send().await.unwrap()).await;
        assert_eq!((status, p["code"].as_str().unwrap()), (404, "not_found"), "{path}");
    }
    let (status, p) = problem(sys.web.get(sys.url("/v1/accounts/not-a-uuid")).bearer_auth(&a.token).send().await.unwrap()).await;
    assert_eq!((status, p["code"].as_str().unwrap()), (400, "invalid_id"));
    let agent = sys.staff("agent@bola.test", Role::Agent).await;
    let (status, p) = problem(sys.web.get(sys.url("/v1/admin/customers?limit=lots")).bearer_auth(&agent.token).send().await.unwrap()).await;
    assert_eq!((status, p["code"].as_str().unwrap()), (400, "invalid_query"));
    for (method, path) in [("GET", "/v1/admin/customers".to_owned()), ("POST", format!("/v1/admin/users/{}/revoke-sessions", b.user_id))] {
        let req = sys.web.request(method.parse().unwrap(), sys.url(&path)).bearer_auth(&a.token);
        let (status, p) = problem(req.send().await.unwrap()).await;
        assert_eq!((status, p["code"].as_str().unwrap()), (403, "forbidden"), "{path}");
    }
    // B's session still works: nothing was revoked by A's attempt.
    assert_eq!(sys.web.get(sys.url("/v1/me")).bearer_auth(&b.token).send().await.unwrap().status(), 200);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_revoked_and_logged_out_sessions_get_401_and_cookies_work() {
    let sys = start(&[], &[]).await;
    let u = sys.signup("sess@forge.test").await;
    let mut tampered = u.token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [tampered.as_str(), "sbs_0000000000000000000000000000000000000000000", "Bearer", "x"] {
        let (status, p) = problem(sys.web.get(sys.url("/v1/me")).bearer_auth(bad).send().await.unwrap()).await;
        assert_eq!((status, p["code"].as_str().unwrap()), (401, "unauthenticated"), "{bad}");
    }
    // The session cookie works like the header.
    let r = sys.web.get(sys.url("/v1/me")).header("cookie", format!("theme=dark; sb_session={}", u.token)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Logout with the cookie ends the session and clears the cookie (a Bearer logout ends only
    // its own session: `ops.rs` tests that it leaves the cookie alone).
    let r = sys
        .web
        .post(sys.url("/v1/logout"))
        .header("cookie", format!("sb_session={}", u.token))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(sys.web.get(sys.url("/v1/me")).bearer_auth(&u.token).send().await.unwrap().status(), 401);
    // Revoked by an admin: refused within a second, though this gateway had just answered
    // `/v1/me` for the session (its answers live a second at most, counted from identity's check).
    let again = sys.login("sess@forge.test").await;
    assert_eq!(sys.web.get(sys.url("/v1/me")).bearer_auth(&again.token).send().await.unwrap().status(), 200);
    let admin = sys.staff("admin@forge.test", Role::Admin).await;
    let r =
        sys.web.post(sys.url(&format!("/v1/admin/users/{}/revoke-sessions", u.user_id))).bearer_auth(&admin.token).send().await.unwrap();
    let revoked = tokio::time::Instant::now();
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 1);
    tokio::time::sleep_until(revoked + std::time::Duration::from_secs(1)).await;
    assert_eq!(sys.web.get(sys.url("/v1/me")).bearer_auth(&again.token).send().await.unwrap().status(), 401);
    // Expired.
    let third = sys.login("sess@forge.test").await;
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE revoked_at IS NULL")
        .execute(&sys.identity.db.pool)
        .await
        .unwrap();
    assert_eq!(sys.web.get(sys.url("/v1/me")).bearer_auth(&third.token).send().await.unwrap().status(), 401);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_answers_belong_to_their_session_and_follow_changes_within_a_second() {
    let sys = start(&[], &[]).await;
    let a = sys.signup("a@me-cache.test").await;
    let b = sys.signup("b@me-cache.test").await;
    // Each token gets its own account's answer, however the requests interleave.
    for _ in 0..3 {
        for u in [&a, &b] {
            let (status, me) = send(sys.web.get(sys.url("/v1/me")).bearer_auth(&u.token)).await;
            assert_eq!((status, me["user"]["id"].as_str(), me["account"]["id"].as_str()), (200, Some(&*u.user_id), Some(&*u.account_id)));
        }
    }
    // The caller's own change shows on their very next /v1/me (a checkout started: pending).
    let r = sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&a.token).json(&json!({"plan": "pro"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let url = r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    let (_, me) = send(sys.web.get(sys.url("/v1/me")).bearer_auth(&a.token)).await;
    assert_eq!(me["access"]["status"], "pending", "{me}");
    // Paid with another session of the same user (a second tab): access arrives by billing's
    // events, which the gateway does not see. Within a second of billing storing it, /v1/me
    // shows it for the first session too.
    let tab = sys.login("a@me-cache.test").await;
    assert_eq!(no_redirects().post(&url).bearer_auth(&tab.token).send().await.unwrap().status(), 303);
    let (_, me) = send(sys.web.get(sys.url("/v1/me")).bearer_auth(&a.token)).await;
    let account: uuid::Uuid = a.account_id.parse().unwrap();
    sb_testkit::wait_for(std::time::Duration::from_secs(30), "billing stores the access", || async {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM access WHERE account_id = $1")
            .bind(account)
            .fetch_optional(&sys.billing.db.pool)
            .await
            .unwrap();
        (status.as_deref() == Some("active")).then_some(())
    })
    .await;
    let stored = tokio::time::Instant::now();
    tokio::time::sleep_until(stored + std::time::Duration::from_secs(1)).await;
    let (_, now) = send(sys.web.get(sys.url("/v1/me")).bearer_auth(&a.token)).await;
    assert_eq!(now["access"]["status"], "active", "before: {me}, a second after billing stored it: {now}");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_get_429_with_retry_after() {
    let sys = start(&[("IDENTITY_LOGIN_MAX_FAILURES", "3")], &[]).await;
    sys.signup("throttle@login.test").await;
    let bad = json!({"email": "throttle@login.test", "password": "definitely wrong"});
    for _ in 0..3 {
        let (status, p) = problem(sys.web.post(sys.url("/v1/login")).json(&bad).send().await.unwrap()).await;
        assert_eq!((status, p["code"].as_str().unwrap()), (401, "unauthenticated"));
    }
    let r = sys.web.post(sys.url("/v1/login")).json(&json!({"email": "throttle@login.test", "password": PASSWORD})).send().await.unwrap();
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let (status, p) = problem(r).await;
    assert_eq!((status, p["code"].as_str().unwrap()), (429, "too_many_requests"));
    let metrics = sys.web.get(format!("http://{}/metrics", sys.identity.http)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("identity_login_failures_total{reason=\"bad_credentials\"} 3"), "{metrics}");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_limited_and_bad_ones_are_clear_problems() {
    let sys = start(&[], &[("GATEWAY_BODY_LIMIT_BYTES", "1024")]).await;
    let big = json!({"email": "big@body.test", "password": PASSWORD, "name": "x".repeat(4096)});
    let (status, p) = problem(sys.web.post(sys.url("/v1/signup")).json(&big).send().await.unwrap()).await;
    assert_eq!((status, p["code"].as_str().unwrap()), (413, "body_too_large"));
    let (status, _) = problem(sys.web.post(sys.url("/v1/signup")).body("{}").send().await.unwrap()).await;
    assert_eq!(status, 415);
    let (status, p) =
        problem(sys.web.post(sys.url("/v1/signup")).header("content-type", "application/json").body("{nope").send().await.unwrap()).await;
    assert_eq!((status, p["code"].as_str().unwrap()), (400, "malformed_json"));
    let (status, p) = problem(sys.web.post(sys.url("/v1/signup")).json(&json!({"email": 5})).send().await.unwrap()).await;
    assert_eq!((status, p["code"].as_str().unwrap()), (422, "validation_failed"));
    let (status, p) = problem(
        sys.web.post(sys.url("/v1/signup")).json(&json!({"email": "bad", "password": PASSWORD, "name": "X"})).send().await.unwrap(),
    )
    .await;
    assert_eq!((status, p["code"].as_str().unwrap()), (422, "validation_failed"));
    assert!(p["detail"].as_str().unwrap().starts_with("email"), "{p}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&sys.identity.db.pool).await.unwrap();
    assert_eq!(users, 0, "no bad input created anything");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_request_ids_security_headers_and_narrow_cors() {
    let sys = start(&[], &[("GATEWAY_CORS_ORIGINS", "https://portal.example.com")]).await;
    let r = sys.web.get(sys.url("/v1/me")).send().await.unwrap();
    let h = r.headers();
    assert!(uuid::Uuid::parse_str(h["x-request-id"].to_str().unwrap()).is_ok());
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let r = sys.web.get(sys.url("/v1/me")).header("x-request-id", "trace-me-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-123");
    // An id unfit for the logs (too long, or other than letters, digits and `-_.:`) is replaced.
    for unfit in ["<script>alert(1)</script>", &"a".repeat(65), "two words"] {
        let r = sys.web.get(sys.url("/v1/me")).header("x-request-id", unfit).send().await.unwrap();
        let answered = r.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(answered).is_ok(), "{unfit:?} answered as {answered:?}");
    }

    let preflight = |origin: &'static str| {
        sys.web
            .request(reqwest::Method::OPTIONS, sys.url("/v1/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("https://portal.example.com").await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://portal.example.com");
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    let evil = preflight("https://evil.example.net").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_shows_in_me_and_is_audited() {
    let sys = start(&[], &[]).await;
    let cust = sys.signup("imp@customer.test").await;
    let admin = sys.staff("imp-admin@switchboard.test", Role::Admin).await;
    let r = sys
        .web
        .post(sys.url(&format!("/v1/admin/users/{}/impersonate", cust.user_id)))
        .bearer_auth(&admin.token)
        .json(&json!({"reason": "customer asked for help with billing", "ttl_seconds": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("set-cookie").is_none(), "the admin's own cookie is untouched");
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let me: Value = sys.web.get(sys.url("/v1/me")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["user"]["id"], cust.user_id);
    assert_eq!(me["impersonated_by"]["email"], "imp-admin@switchboard.test");
    // Acting as the customer never grants the admin's routes.
    assert_eq!(sys.web.get(sys.url("/v1/admin/audit")).bearer_auth(&token).send().await.unwrap().status(), 403);
    let audit: Value = sys
        .web
        .get(sys.url(&format!("/v1/admin/audit?user_id={}", cust.user_id)))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = audit.as_array().unwrap().iter().find(|e| e["action"] == "impersonation.started").expect("audited");
    assert_eq!(entry["actor_user_id"], admin.user_id);
    assert_eq!(entry["detail"]["reason"], "customer asked for help with billing");
    // And the welcome email of the customer is in the admin mailbox view.
    let mail: Value = sbt_wait_mail(&sys, &admin.token, "imp@customer.test").await;
    assert_eq!(mail["subject"], "Welcome to your portal");
    sys.stop().await;
}

async fn sbt_wait_mail(sys: &System, admin: &str, to: &str) -> Value {
    sb_testkit::wait_for(std::time::Duration::from_secs(30), "the welcome email in the mailbox", || async {
        let v: Value =
            sys.web.get(sys.url(&format!("/v1/admin/mailbox?to={to}"))).bearer_auth(admin).send().await.ok()?.json().await.ok()?;
        v.as_array().and_then(|a| a.first().cloned())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_while_the_database_is_down_gets_503_with_retry_after_and_works_once_it_is_back() {
    let pg = sb_testkit::admin_url();
    let pg_addr = tokio::net::lookup_host(pg.split('@').next_back().unwrap().split('/').next().unwrap()).await.unwrap().next().unwrap();
    let proxy = sb_testkit::proxy::TcpProxy::start(pg_addr).await.unwrap();
    let sys = common::start_full_via(&[], &[], &[], &[], Some(proxy.addr())).await;
    sys.signup("before@outage.test").await;
    proxy.cut();
    let body = json!({"email": "during@outage.test", "password": PASSWORD, "name": "Outage"});
    let r = sys.web.post(sys.url("/v1/signup")).json(&body).send().await.unwrap();
    let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let (status, problem) = problem(r).await;
    assert_eq!((status, problem["code"].as_str()), (503, Some("unavailable")), "{problem}");
    assert!(retry_after.is_some_and(|s| s >= 1), "503 carries Retry-After: {retry_after:?}");
    proxy.restore();
    // A retry after the database is back signs up (the failed attempt stored nothing).
    sb_testkit::wait_for(std::time::Duration::from_secs(30), "sign-up once the database is back", || async {
        let r = sys.web.post(sys.url("/v1/signup")).json(&body).send().await.ok()?;
        (r.status() == 201).then_some(())
    })
    .await;
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_answer_problem_json() {
    let sys = start(&[], &[]).await;
    let (status, p) = problem(sys.web.get(sys.url("/v1/no-such-route")).send().await.unwrap()).await;
    assert_eq!((status, p["code"].as_str()), (404, Some("not_found")));
    let r = sys.web.delete(sys.url("/v1/me")).send().await.unwrap();
    let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let (status, p) = problem(r).await;
    assert_eq!((status, p["code"].as_str()), (405, Some("method_not_allowed")));
    assert!(allow.contains("GET") && allow.contains("PATCH"), "405 says which methods there are: {allow:?}");
    sys.stop().await;
}
