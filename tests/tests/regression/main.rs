//! The seed's regression suite: the founder's promises, each checked on the six real service
//! binaries (debug build, as `make test` builds them) with HubSpot, SMTP and OpenAI as fakes and
//! billing's local checkout standing in for Stripe.
//!
//! 1. sign-up once; 2. payment → access within 60 s; 3. webhook replay changes nothing;
//! 4. support intake: plan priority, urgent to human review, AI draft within policy;
//! 5. permissions of every route for every viewpoint; 6. CRM down loses nothing;
//! 7. portal reads under load; 8. no secret anywhere after a full run.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[allow(dead_code)] // the chaos test uses the rest
mod harness;
mod permissions;
mod secrets;

use std::time::{Duration, Instant};

use harness::System;
use sb_testkit::wait_for;
use serde_json::{Value, json};
use system_tests::PASSWORD;

/// Mail the fake SMTP server received for `to`.
fn mail_to(sys: &System, to: &str) -> usize {
    sys.smtp.messages().iter().filter(|m| m.header("To").is_some_and(|t| t.contains(to))).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_a_sign_up_makes_one_user_one_crm_contact_and_one_welcome_email_even_when_submitted_twice() {
    let sys = System::start().await;
    let email = "ada@signup-once.test";
    let body = json!({"email": email, "password": PASSWORD, "name": "Ada Lovelace", "account_name": "Analytical"});
    let send = || sys.http.post(sys.url("/v1/signup")).json(&body).send();
    let (a, b) = tokio::join!(send(), send());
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "a double submit: one account, one 'already exists'");

    wait_for(Duration::from_secs(30), "the CRM contact", || async { sys.hubspot.contact(email) }).await;
    wait_for(Duration::from_secs(30), "the welcome email", || async { (mail_to(&sys, email) > 0).then_some(()) }).await;
    // A late third submit, once everything has happened.
    sys.settled().await;
    assert_eq!(send().await.unwrap().status(), 409);
    sys.settled().await;

    assert_eq!(sys.count("identity", &format!("SELECT count(*) FROM users WHERE email = '{email}'")).await, 1);
    assert_eq!(sys.hubspot.contacts().iter().filter(|c| c.email() == email).count(), 1, "one CRM contact");
    assert_eq!(sys.hubspot.requests_to("POST", "/crm/v3/objects/contacts").len(), 1, "created once");
    assert_eq!(mail_to(&sys, email), 1, "one welcome email");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_payment_gives_portal_access_within_60_seconds() {
    let sys = System::start().await;
    let c = sys.sign_up("payer@access.test").await;
    assert_eq!(sys.access(&c.token).await, "none");
    let started = Instant::now();
    sys.pay(&c).await;
    sys.wait_access(&c.token, "active", Duration::from_secs(60)).await;
    let took = started.elapsed();
    println!("payment → access (local checkout confirmed → /v1/me says active): {} ms", took.as_millis());
    assert!(took < Duration::from_secs(60));
    let crm = wait_for(Duration::from_secs(30), "the CRM contact to show the plan", || async {
        sys.hubspot.contact(&c.email).filter(|k| k.prop("switchboard_access_status") == Some("active"))
    })
    .await;
    assert_eq!(crm.prop("switchboard_plan"), Some("pro"));
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_stripe_events_sent_again_shuffled_ten_times_over_change_nothing() {
    let sys = System::start().await;
    let c = sys.sign_up("replay@webhooks.test").await;
    sys.pay(&c).await;
    sys.wait_access(&c.token, "active", Duration::from_secs(60)).await;
    sys.settled().await;
    let delivered = sys.delivered();
    assert!(delivered.len() >= 3, "subscription, invoice and checkout events: {delivered:?}");

    let changes = format!("SELECT count(*) FROM access_changes WHERE account_id = '{}'", c.account_id);
    let before = (
        sys.count("billing", &changes).await,
        sys.count("billing", "SELECT count(*) FROM stripe_events").await,
        sys.hubspot.request_count(),
        mail_to(&sys, &c.email),
        sys.count("support-router", "SELECT count(*) FROM sb_inbox").await,
    );
    for round in 0..10 {
        let mut shuffled = delivered.clone();
        shuffled.sort_by_cached_key(|_| uuid::Uuid::new_v4());
        for d in shuffled {
            let r = sys
                .http
                .post(sys.url("/webhooks/stripe"))
                .header("stripe-signature", &d.signature)
                .header("content-type", "application/json")
                .body(d.body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "round {round}");
            let ack: Value = r.json().await.unwrap();
            assert_eq!(ack["duplicate"], true, "round {round}: already received");
        }
    }
    sys.settled().await;
    let after = (
        sys.count("billing", &changes).await,
        sys.count("billing", "SELECT count(*) FROM stripe_events").await,
        sys.hubspot.request_count(),
        mail_to(&sys, &c.email),
        sys.count("support-router", "SELECT count(*) FROM sb_inbox").await,
    );
    assert_eq!(after, before, "(access changes, Stripe events applied, CRM requests, emails, events support-router applied)");
    assert_eq!(sys.access(&c.token).await, "active");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_tickets_get_their_plans_priority_urgent_ones_go_to_human_review_and_ai_drafts_keep_to_policy() {
    let sys = System::start().await;
    let free = sys.sign_up("free@support.test").await;
    let paid = sys.sign_up("paid@support.test").await;
    sys.pay(&paid).await;
    sys.wait_access(&paid.token, "active", Duration::from_secs(60)).await;
    // support-router has heard about the plan once every event is handled.
    sys.settled().await;
    let agent = sys.staff("agent@support.test", "agent").await;

    let open = |c: &harness::Customer, subject: &str, body: &str| {
        let r = sys
            .http
            .post(sys.url("/v1/tickets"))
            .bearer_auth(&c.token)
            .json(&json!({"subject": subject, "body": body, "category": "billing"}));
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["ticket"]["id"].as_str().unwrap().to_owned()
        }
    };
    let staff_view = |id: String| {
        let r = sys.http.get(sys.url(&format!("/v1/admin/tickets/{id}"))).bearer_auth(&agent);
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };

    let question = "How do I export my invoices?";
    let free_ticket = open(&free, "Invoices", question).await;
    let paid_ticket = open(&paid, "Invoices", question).await;
    let f = staff_view(free_ticket.clone()).await;
    let p = staff_view(paid_ticket.clone()).await;
    assert_eq!((f["ticket"]["tier_at_intake"].as_str(), f["ticket"]["priority"].as_str()), (Some("free"), Some("low")), "{f}");
    assert_eq!((p["ticket"]["tier_at_intake"].as_str(), p["ticket"]["priority"].as_str()), (Some("priority"), Some("high")), "{p}");
    assert_eq!(f["ticket"]["queue"], "billing");

    let urgent = open(&free, "Account hacked", "Someone hacked my account and changed my email address").await;
    let u = staff_view(urgent).await;
    assert_eq!((u["ticket"]["priority"].as_str(), u["ticket"]["queue"].as_str()), (Some("urgent"), Some("human_review")), "{u}");

    // The model's draft for the free ticket is offered: it keeps to the reply policy.
    let ready = wait_for(Duration::from_secs(60), "the AI draft of the free ticket", || {
        let view = staff_view(free_ticket.clone());
        async move { Some(view.await).filter(|v| v["ai_state"] == "ready") }
    })
    .await;
    let draft = &ready["drafts"][0];
    assert_eq!((draft["state"].as_str(), draft["source"].as_str()), (Some("offered"), Some("model")), "{draft}");
    assert!(draft["reply"].as_str().unwrap().contains("A member of our team will follow up"), "{draft}");

    // A draft that breaks the policy (promises a refund, links outside the allowed domains) is
    // kept for audit and never offered.
    sys.ai.reply_with(
        r#"{"summary":"Wants money back","category":"billing","urgency":"normal","reply":"We will refund you in full today. Details: https://refunds.evil.example/claim"}"#,
    );
    let refused_ticket = open(&free, "Money back", "I would like my money back for last month").await;
    let refused = wait_for(Duration::from_secs(60), "the refused draft", || {
        let view = staff_view(refused_ticket.clone());
        async move { Some(view.await).filter(|v| v["drafts"].as_array().is_some_and(|d| !d.is_empty())) }
    })
    .await;
    assert_eq!(refused["drafts"][0]["state"], "refused", "{refused}");
    assert_ne!(refused["ai_state"], "ready", "nothing offered: {refused}");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_with_the_crm_down_sign_ups_keep_working_and_every_contact_arrives_once_it_is_back() {
    let sys = System::start().await;
    sys.hubspot.fail_always(503);
    let emails: Vec<String> = (0..5).map(|i| format!("user{i}@crm-down.test")).collect();
    for e in &emails {
        let started = Instant::now();
        sys.sign_up(e).await;
        assert!(started.elapsed() < Duration::from_secs(5), "a sign-up does not wait on the CRM");
    }
    // crm-sync tries, the retry ladder (1 s, 5 s here) runs out, and the events are parked.
    sys.wait_parked("the five sign-ups, in crm-sync's DLQ", 5, || sys.parked_in("crm-sync")).await;
    assert_eq!(sys.hubspot.contact_count(), 0);
    assert_eq!(sys.count("identity", "SELECT count(*) FROM users").await, 5, "every sign-up kept");

    // The CRM is back; the operator replays what was parked.
    sys.hubspot.recover();
    assert_eq!(sys.replay("crm-sync"), 5);
    for e in &emails {
        wait_for(Duration::from_secs(30), &format!("the contact of {e}"), || async { sys.hubspot.contact(e) }).await;
    }
    sys.wait_parked("crm-sync's DLQ after the replay", 0, || sys.parked_in("crm-sync")).await;
    sys.settled().await;
    for e in &emails {
        assert_eq!(sys.hubspot.contacts().iter().filter(|c| c.email() == e).count(), 1, "{e} once");
    }
    sys.stop().await;
}

/// The p-th percentile (0–100) of sorted `xs`.
fn percentile(xs: &[Duration], p: f64) -> Duration {
    let i = ((p / 100.0) * (xs.len() - 1) as f64).round() as usize;
    xs[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r7_portal_reads_answer_under_400_ms_at_p95_under_load() {
    let sys = System::start().await;
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(sys.sign_up(&format!("reader{i}@load.test")).await.token);
    }
    let reads = ["/v1/me", "/v1/billing", "/v1/tickets"];
    let until = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let (http, base, token) = (sys.http.clone(), sys.base.clone(), tokens[worker % tokens.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::new();
            let mut n = worker;
            while Instant::now() < until {
                let started = Instant::now();
                let r = http.get(format!("{base}{}", reads[n % reads.len()])).bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                took.push(started.elapsed());
                n += 1;
            }
            took
        }));
    }
    // Writes alongside: a sign-up every 200 ms.
    let mut i = 0;
    while Instant::now() < until {
        sys.sign_up(&format!("writer{i}@load.test")).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut took: Vec<Duration> = Vec::new();
    for t in tasks {
        took.extend(t.await.unwrap());
    }
    took.sort();
    let (p50, p95, max) = (percentile(&took, 50.0), percentile(&took, 95.0), *took.last().unwrap());
    println!(
        "portal reads (/v1/me, /v1/billing, /v1/tickets; 16 clients, sign-ups alongside, debug build): {} reads, p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        took.len(),
        p50.as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(took.len() > 100, "the load ran");
    assert!(p95 < Duration::from_millis(400), "p95 {p95:?}");
    sys.stop().await;
}
