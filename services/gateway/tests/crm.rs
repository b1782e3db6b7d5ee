//! CRM sync status through the gateway, with the real identity, billing, crm-sync (embedded
//! contact book, or the real HubSpot adapter against sb_testkit's fake HubSpot) and gateway, real
//! PostgreSQL and RabbitMQ: what staff see in the customer view and the contact book, what a
//! customer sees in `/v1/me`, and that both views still answer when crm-sync does not.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;
use identity::domain::Role;
use sb_testkit::{hubspot::FakeHubSpot, wait_for};
use serde_json::{Value, json};

async fn get(sys: &System, path: &str, token: &str) -> (u16, Value) {
    let r = sys.web.get(sys.url(path)).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn customer_view(sys: &System, admin: &User, account_id: &str) -> Value {
    let (status, v) = get(sys, &format!("/v1/admin/customers/{account_id}"), &admin.token).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// The customer view's `crm` entry for `user`.
fn crm_of<'a>(view: &'a Value, user: &User) -> Option<&'a Value> {
    view["crm"].as_array()?.iter().find(|c| c["user_id"] == user.user_id.as_str())
}

async fn wait_crm(sys: &System, admin: &User, user: &User, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(20), what, || async {
        let view = customer_view(sys, admin, &user.account_id).await;
        crm_of(&view, user).is_some_and(&done).then_some(view)
    })
    .await
}

/// The system with crm-sync on a fake HubSpot answering 503, and crm-sync's own retry ladder.
async fn with_hubspot_down(ladder: &str) -> (FakeHubSpot, System) {
    let hubspot = FakeHubSpot::start().await.unwrap();
    hubspot.fail_always(503);
    let (token, base) = (hubspot.token(), hubspot.base_url());
    let crm =
        [("CRM_SYNC_HUBSPOT_TOKEN", token.as_str()), ("CRM_SYNC_HUBSPOT_BASE_URL", base.as_str()), ("SWITCHBOARD_RETRY_DELAYS", ladder)];
    let sys = start_full(&[], &[], &crm, &[]).await;
    (hubspot, sys)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Starts a checkout for `user` and pays it on the local checkout page.
async fn pay(sys: &System, user: &User) {
    let r = sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let url = r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    let paid = no_redirects().post(&url).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(paid.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signup_becomes_one_lead_then_a_customer_after_paying_visible_to_staff_and_the_user() {
    let sys = start(&[], &[]).await;
    let admin = sys.staff("admin@crm-view.test", Role::Admin).await;
    let user = sys.signup("lead@crm-view.test").await;

    // The customer view: synced to the embedded contact book as a lead, beside billing's access.
    let view = wait_crm(&sys, &admin, &user, "the sign-up synced", |c| c["status"] == "synced").await;
    let crm = view["crm"].as_array().unwrap();
    assert_eq!(crm.len(), 1, "{view}");
    let c = &crm[0];
    let contact_id = c["crm_contact_id"].as_str().unwrap().to_owned();
    assert!(!contact_id.is_empty(), "{view}");
    assert_eq!(
        (c["email"].as_str(), c["lifecycle_stage"].as_str(), c["crm"].as_str()),
        (Some(user.email.as_str()), Some("lead"), Some("contact_book"))
    );
    assert_eq!((c["attempts"].as_i64(), c["last_error"].as_str()), (Some(0), Some("")), "{view}");
    assert!(c["synced_at"].is_string() && c["next_attempt_at"].is_null(), "{view}");
    assert!(
        c["message"].as_str().unwrap().starts_with(&format!("CRM synced: contact {contact_id} in the contact book, stage lead")),
        "{view}"
    );
    assert!(view["crm_error"].is_null(), "{view}");
    assert_eq!(view["access"]["status"], "none", "{view}");
    assert!(view["access_error"].is_null() && view["users"][0]["email"] == user.email.as_str(), "{view}");

    // The customer's own /v1/me: their status only, in words for them.
    let (status, me) = get(&sys, "/v1/me", &user.token).await;
    assert_eq!(status, 200);
    assert_eq!(me["crm_sync"], json!({"status": "synced", "message": "Synced with our CRM"}), "{me}");
    assert!(me["crm_sync_error"].is_null(), "{me}");
    // Staff are no CRM contacts: nothing to show, and nothing is wrong.
    let (_, me) = get(&sys, "/v1/me", &admin.token).await;
    assert!(me["crm_sync"].is_null() && me["crm_sync_error"].is_null(), "{me}");

    // Paying moves the same contact to customer.
    pay(&sys, &user).await;
    let view = wait_crm(&sys, &admin, &user, "the stage customer", |c| c["lifecycle_stage"] == "customer" && c["status"] == "synced").await;
    assert_eq!(crm_of(&view, &user).unwrap()["crm_contact_id"], contact_id.as_str(), "the same contact: {view}");
    assert_eq!(view["access"]["status"], "active", "{view}");

    // The contact book (staff): exactly one contact for the email, with billing's facts.
    let (status, book) = get(&sys, &format!("/v1/admin/contact-book?q={}", user.email), &admin.token).await;
    assert_eq!(status, 200, "{book}");
    let book = book.as_array().unwrap();
    assert_eq!(book.len(), 1, "{book:?}");
    let b = &book[0];
    assert_eq!((b["id"].as_str(), b["email"].as_str()), (Some(contact_id.as_str()), Some(user.email.as_str())));
    assert_eq!((b["lifecycle_stage"].as_str(), b["access_status"].as_str()), (Some("customer"), Some("active")), "{b}");
    assert_eq!(b["account_id"], user.account_id.as_str());
    assert!(b["stripe_customer_id"].as_str().unwrap().starts_with("cus_local_"), "{b}");
    let (status, all) = get(&sys, "/v1/admin/contact-book", &admin.token).await;
    assert_eq!(status, 200);
    assert_eq!(all.as_array().unwrap().iter().filter(|b| b["email"] == user.email.as_str()).count(), 1, "{all}");
    // ... and nothing for the customer.
    let (status, problem) = get(&sys, "/v1/admin/contact-book", &user.token).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden")));
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_shows_pending_while_the_crm_is_down_then_synced_without_a_replay() {
    // Rungs long enough to see "pending" between attempts (crm-sync's own ladder only).
    let (hubspot, sys) = with_hubspot_down("1s,1s,1s,1s,1s,1s").await;
    let admin = sys.staff("admin@crm-outage.test", Role::Admin).await;
    let user = sys.signup("waiting@crm-outage.test").await;

    let view =
        wait_crm(&sys, &admin, &user, "pending with a next attempt", |c| c["status"] == "pending" && c["next_attempt_at"].is_string())
            .await;
    let c = crm_of(&view, &user).unwrap();
    let error = c["last_error"].as_str().unwrap().to_owned();
    assert!(!error.is_empty() && c["attempts"].as_i64() >= Some(1) && c["crm"] == "hubspot", "{view}");
    let message = c["message"].as_str().unwrap();
    assert!(message.starts_with("CRM sync pending (next attempt ") && message.ends_with(&format!(": {error})")), "{message}");
    assert!(view["crm_error"].is_null(), "{view}");
    let (status, me) = get(&sys, "/v1/me", &user.token).await;
    assert_eq!(status, 200);
    assert_eq!(me["crm_sync"]["status"], "pending", "{me}");
    let mine = me["crm_sync"]["message"].as_str().unwrap();
    assert!(mine.starts_with("CRM sync pending") && !mine.contains(&error), "the CRM's error stays with staff: {me}");

    // The CRM comes back: the next rung syncs it, nobody replays anything.
    hubspot.recover();
    let view = wait_crm(&sys, &admin, &user, "synced after the CRM returned", |c| c["status"] == "synced").await;
    let c = crm_of(&view, &user).unwrap();
    let contact = hubspot.contact(&user.email).expect("the contact in HubSpot");
    assert_eq!((c["crm_contact_id"].as_str(), c["lifecycle_stage"].as_str()), (Some(contact.id.as_str()), Some("lead")), "{view}");
    assert_eq!(hubspot.contact_count(), 1);
    // `/v1/me` may answer from the gateway's second-long cache: synced within that second.
    wait_for(Duration::from_secs(2), "/v1/me synced", || async {
        let (_, me) = get(&sys, "/v1/me", &user.token).await;
        (me["crm_sync"]["status"] == "synced").then_some(())
    })
    .await;
    // HubSpot is the CRM: the embedded contact book stays empty.
    let (status, book) = get(&sys, "/v1/admin/contact-book", &admin.token).await;
    assert_eq!((status, book), (200, json!([])));
    sys.stop().await;
    hubspot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_view_and_me_still_answer_when_crm_sync_is_down() {
    let sys = start(&[], &[]).await;
    let admin = sys.staff("admin@crm-down.test", Role::Admin).await;
    let user = sys.signup("resilient@crm-down.test").await;
    wait_crm(&sys, &admin, &user, "the sign-up synced", |c| c["status"] == "synced").await;
    let System { prefix, identity, billing, crm_sync, support, gateway, base, web, .. } = sys;
    crm_sync.stop().await;
    let get = |path: &str, token: &str| {
        let req = web.get(format!("{base}{path}")).bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, view) = get(&format!("/v1/admin/customers/{}", user.account_id), &admin.token).await;
    assert_eq!(status, 200, "{view}");
    assert!(view["crm"].is_null() && view["crm_error"].as_str().unwrap().contains("crm-sync is unavailable"), "{view}");
    assert_eq!(view["users"][0]["email"], user.email.as_str(), "the rest still answers: {view}");
    assert_eq!(view["access"]["status"], "none", "{view}");
    let (status, me) = get("/v1/me", &user.token).await;
    assert_eq!(status, 200);
    assert!(me["crm_sync"].is_null() && me["crm_sync_error"].is_string(), "{me}");
    assert_eq!((me["user"]["email"].as_str(), me["access"]["status"].as_str()), (Some(user.email.as_str()), Some("none")), "{me}");
    // The contact book is crm-sync's alone: 503, not a made-up empty list.
    let (status, problem) = get("/v1/admin/contact-book", &admin.token).await;
    assert_eq!((status, problem["code"].as_str()), (503, Some("unavailable")));

    gateway.stop().await;
    support.stop().await;
    billing.stop().await;
    identity.stop().await;
    delete_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_sync_that_never_answers_delays_me_by_at_most_the_bound() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let url = format!("http://{addr}");
    let sys = start(&[], &[("GATEWAY_CRM_SYNC_URL", url.as_str())]).await;
    let admin = sys.staff("admin@crm-silent.test", Role::Admin).await;
    let user = sys.signup("patient@crm-silent.test").await;

    let t = Instant::now();
    let (status, me) = get(&sys, "/v1/me", &user.token).await;
    let took = t.elapsed();
    assert_eq!(status, 200);
    assert!(me["crm_sync"].is_null() && me["crm_sync_error"].is_string() && me["access"]["status"] == "none", "{me}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "/v1/me took {took:?}");
    let t = Instant::now();
    let view = customer_view(&sys, &admin, &user.account_id).await;
    assert!(view["crm"].is_null() && view["crm_error"].is_string() && view["access"]["status"] == "none", "{view}");
    assert!(t.elapsed() < Duration::from_secs(4), "the customer view took {:?}", t.elapsed());
    sys.stop().await;
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_hubspot_outage_and_then_rate_limiting_every_customer_view_shows_the_sync_state() {
    use futures::{StreamExt, stream};
    // A ladder long enough for the views below to find most sign-ups still waiting.
    let (hubspot, system) = with_hubspot_down("1s,2s,4s,8s,16s,32s").await;
    let sys = &system;
    let admin = &sys.staff("admin@hubspot-outage.test", Role::Admin).await;
    let users: Vec<User> = stream::iter(0..200)
        .map(|i| async move { sys.signup(&format!("user{i}@hubspot-outage.test")).await })
        .buffer_unordered(16)
        .collect()
        .await;
    // HubSpot comes back rate-limited: over 10 requests a second get 429 with Retry-After: 2.
    hubspot.recover();
    hubspot.set_retry_after(2);
    hubspot.limit_rate(10, Duration::from_secs(1));
    let views: Vec<(User, Value)> = stream::iter((0..600).map(|i| users[i % users.len()].clone()))
        .map(|u| async move {
            let (status, v) = get(sys, &format!("/v1/admin/customers/{}", u.account_id), &admin.token).await;
            assert_eq!(status, 200, "{v}");
            (u, v)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut waiting_with_a_time = 0;
    for (user, view) in &views {
        assert!(view["crm_error"].is_null(), "a view said crm-sync was unavailable: {view}");
        let c = crm_of(view, user).unwrap_or_else(|| panic!("no CRM state for {}: {view}", user.email));
        match c["status"].as_str() {
            Some("synced") => {}
            Some("pending") if c["attempts"].as_i64().unwrap_or(0) > 0 => {
                assert!(c["next_attempt_at"].is_string(), "a failed attempt says when the next one comes: {c}");
                waiting_with_a_time += 1;
            }
            Some("pending") => {}
            other => panic!("unexpected CRM state {other:?}: {c}"),
        }
    }
    assert!(waiting_with_a_time > 0, "the outage was visible as pending with a next attempt time");
    println!("600 customer views during the outage: {waiting_with_a_time} showed a sign-up pending with its next attempt time");
    system.stop().await;
    hubspot.shutdown().await;
}
