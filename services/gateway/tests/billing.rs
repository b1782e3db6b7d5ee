//! Payment → access end to end, through the real gateway, identity and billing (embedded local
//! checkout), real PostgreSQL and RabbitMQ: the flow a new user takes, duplicates through the
//! webhook, and who may start checkout or read billing.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use futures::future::join_all;
use identity::domain::Role;
use sb_stripe::objects::{self, CheckoutSpec};
use sb_testkit::wait_for;
use serde_json::{Value, json};

async fn me(sys: &System, user: &User) -> Value {
    let r = sys.web.get(sys.url("/v1/me")).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn wait_access(sys: &System, user: &User, status: &str) -> Value {
    wait_for(Duration::from_secs(20), &format!("access {status}"), || async {
        let m = me(sys, user).await;
        (m["access"]["status"] == status).then_some(m)
    })
    .await
}

/// Follows no redirects, so a test sees the 303s the local pages answer with.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_signs_up_pays_on_the_local_checkout_and_gets_access_then_cancels() {
    let sys = start(&[], &[]).await;
    let user = sys.signup("payer@flow.test").await;
    let m = me(&sys, &user).await;
    assert_eq!(m["access"]["status"], "none", "{m}");

    let r = sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&user.token).json(&json!({"plan": "pro"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let checkout: Value = r.json().await.unwrap();
    let url = checkout["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&sys.url("/billing/local/checkout/cs_test_local_")), "{url}");
    let m = me(&sys, &user).await;
    assert_eq!(m["access"]["status"], "pending");
    assert!(m["access"]["message"].as_str().unwrap().starts_with("Pending provisioning"), "{m}");

    // The page a browser would show, then its button.
    let page = sys.web.get(&url).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Pay 49.00 USD") && html.contains("<form method=\"post\""), "{html}");
    let paid = no_redirects().post(&url).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(paid.status(), 303);
    assert_eq!(paid.headers()["location"], sys.url("/billing/local/done").as_str());

    let m = wait_access(&sys, &user, "active").await;
    assert_eq!(m["access"]["plan"], "pro");
    assert!(m["access"]["entitlements"].as_array().unwrap().contains(&json!("ai_assist")));
    assert!(m["access"]["stripe_customer_id"].as_str().unwrap().starts_with("cus_local_"));

    // The three webhooks are applied in any order; wait for the last of them (access can be
    // active, and the invoice and subscription shown, before checkout.session.completed lands).
    let billing: Value = wait_for(Duration::from_secs(20), "all three local webhooks applied", || async {
        let b: Value = sys.web.get(sys.url("/v1/billing")).bearer_auth(&user.token).send().await.unwrap().json().await.unwrap();
        let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events").fetch_one(&sys.billing.db.pool).await.unwrap();
        (b["invoices"][0]["status"] == "paid" && b["subscriptions"][0]["status"] == "active" && recorded == 3).then_some(b)
    })
    .await;
    let history = billing["history"].as_array().unwrap();
    let grants: Vec<&Value> = history.iter().filter(|h| h["to"] == "active").collect();
    assert_eq!(grants.len(), 1, "one grant: {billing}");
    assert!(grants[0]["cause_event_id"].as_str().unwrap().starts_with("evt_local_"), "{billing}");
    assert_eq!(billing["subscriptions"][0]["plan"], "pro");
    // Every local webhook names its account, as Stripe's do: none waited for a link.
    let outcomes: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, outcome FROM stripe_events ORDER BY event_type").fetch_all(&sys.billing.db.pool).await.unwrap();
    assert!(outcomes.iter().all(|(_, outcome)| outcome == "applied"), "{outcomes:?}");

    // Paying again is refused while active; the local portal cancels.
    let again = sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(again.status(), 409);
    let portal: Value = sys.web.post(sys.url("/v1/billing/portal")).bearer_auth(&user.token).send().await.unwrap().json().await.unwrap();
    assert_eq!(portal["url"], sys.url("/billing/local/portal").as_str());
    let page = sys.web.get(sys.url("/billing/local/portal")).bearer_auth(&user.token).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Cancel subscription"), "{page}");
    let cancelled = no_redirects().post(sys.url("/billing/local/portal/cancel")).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(cancelled.status(), 303);
    let m = wait_access(&sys, &user, "revoked").await;
    assert_eq!(m["access"]["reason"], "subscription canceled");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_payment_sent_ten_times_concurrently_grants_access_once() {
    let secret = "whsec_concurrency_test";
    let sys = start_with(&[], &[("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", secret)], &[("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", secret)]).await;
    let user = sys.signup("once@flow.test").await;
    let now = chrono::Utc::now().timestamp();
    let session = objects::checkout_session(&CheckoutSpec {
        id: "cs_test_concurrent",
        account_id: &user.account_id,
        customer: "cus_concurrent",
        subscription: "sub_concurrent",
        created: now,
        amount_total: 1900,
        email: "once@flow.test",
    });
    let body = objects::event("evt_concurrent_1", "checkout.session.completed", now, session).to_string();
    let sends = (0..10).map(|_| {
        let (web, url, body) = (sys.web.clone(), sys.url("/webhooks/stripe"), body.clone());
        async move {
            // A fresh signature per delivery, as Stripe's retries have.
            let sig = sb_stripe::signature::header_value(secret, chrono::Utc::now().timestamp(), body.as_bytes());
            web.post(url)
                .header("stripe-signature", sig)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = join_all(sends).await;
    assert!(statuses.iter().all(|s| s.is_success()), "{statuses:?}");
    wait_access(&sys, &user, "active").await;

    // One grant in billing's history, one billing.access.changed.v1 (the event crm-sync consumes)
    // to active in billing's outbox, one stripe.event.received.v1 from the gateway.
    let billing: Value = sys.web.get(sys.url("/v1/billing")).bearer_auth(&user.token).send().await.unwrap().json().await.unwrap();
    assert_eq!(billing["history"].as_array().unwrap().iter().filter(|h| h["to"] == "active").count(), 1, "{billing}");
    let grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sb_test_outbox WHERE event_type = 'billing.access.changed.v1' AND payload::jsonb->'data'->>'to' = 'active'",
    )
    .fetch_one(&sys.billing.db.pool)
    .await
    .unwrap();
    assert_eq!(grants, 1);
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM sb_test_outbox WHERE event_type = 'stripe.event.received.v1'")
        .fetch_one(&sys.gateway.db.pool)
        .await
        .unwrap();
    assert_eq!(received, 1);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_accounts_own_customers_start_checkout_or_read_its_billing() {
    let sys = start(&[], &[]).await;
    let owner = sys.signup("owner@tenant-a.test").await;
    let other = sys.signup("other@tenant-b.test").await;
    let agent = sys.staff("agent@billing.test", Role::Agent).await;
    let admin = sys.staff("admin@billing.test", Role::Admin).await;

    let r = sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&owner.token).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let url = r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned();

    // Another account's customer: nothing about account A exists for them.
    let body = json!({"account_id": owner.account_id});
    let r = sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&other.token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = sys.web.post(sys.url("/v1/billing/portal")).bearer_auth(&other.token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let path = format!("/v1/accounts/{}/billing", owner.account_id);
    assert_eq!(sys.web.get(sys.url(&path)).bearer_auth(&other.token).send().await.unwrap().status(), 404);
    assert_eq!(sys.web.get(&url).bearer_auth(&other.token).send().await.unwrap().status(), 404);
    assert_eq!(no_redirects().post(&url).bearer_auth(&other.token).send().await.unwrap().status(), 404);
    assert_eq!(me(&sys, &owner).await["access"]["status"], "pending", "the owner's checkout is untouched");

    // Staff read any account's billing but never pay for it; nor does an impersonation session.
    assert_eq!(sys.web.get(sys.url(&path)).bearer_auth(&agent.token).send().await.unwrap().status(), 200);
    let r = sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&agent.token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let imp = sys
        .web
        .post(sys.url(&format!("/v1/admin/users/{}/impersonate", owner.user_id)))
        .bearer_auth(&admin.token)
        .json(&json!({"reason": "billing support", "ttl_seconds": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(imp.status(), 201);
    let imp_token = imp.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert_eq!(sys.web.get(sys.url("/v1/billing")).bearer_auth(&imp_token).send().await.unwrap().status(), 200);
    assert_eq!(sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&imp_token).send().await.unwrap().status(), 403);
    assert_eq!(no_redirects().post(&url).bearer_auth(&imp_token).send().await.unwrap().status(), 403);

    // Bad input changes nothing.
    let r =
        sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&owner.token).json(&json!({"plan": "platinum"})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let r = sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&owner.token).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 422);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_still_answers_when_billing_is_down() {
    let sys = start(&[], &[]).await;
    let user = sys.signup("resilient@flow.test").await;
    let System { prefix, identity, billing, crm_sync, support, gateway, base, web, .. } = sys;
    billing.stop().await;
    let m: Value = web.get(format!("{base}/v1/me")).bearer_auth(&user.token).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["user"]["email"], "resilient@flow.test");
    assert!(m["access"].is_null() && m["access_error"].is_string(), "{m}");
    let r = web.post(format!("{base}/v1/billing/checkout")).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(r.status(), 503);
    gateway.stop().await;
    support.stop().await;
    crm_sync.stop().await;
    identity.stop().await;
    delete_prefix(&prefix).await;
}
