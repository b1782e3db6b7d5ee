//! Support through the gateway with the real identity, billing, crm-sync, support-router and
//! gateway, real PostgreSQL and RabbitMQ: the seed's intake test (free vs paid priority, urgent to
//! human review, reasons for staff only), what customers never see, double submission, the agent's
//! answer reaching the customer's thread and mailbox, and bad input.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use identity::domain::Role;
use sb_testkit::wait_for;
use serde_json::{Value, json};

/// Waits until support-router's plan for the paying account says so (it follows billing's events).
async fn wait_tier(sys: &System, staff: &User, user: &User, tier: &str) {
    let path = format!("/v1/admin/tickets?account_id={}", user.account_id);
    wait_for(Duration::from_secs(30), &format!("{}'s tickets on tier {tier}", user.email), || async {
        let (_, list) = send(sys.web.get(sys.url(&path)).bearer_auth(&staff.token)).await;
        list.as_array().filter(|l| !l.is_empty() && l.iter().all(|t| t["tier_now"] == tier)).map(|_| ())
    })
    .await;
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    k.sort_unstable();
    k
}

const SAME_REQUEST: (&str, &str) = ("Export to CSV", "How do I export my invoices to a spreadsheet?");
const URGENT: (&str, &str) = ("Help", "I was charged twice and can't log in");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_support_intake_free_and_paid_get_different_priority_urgent_goes_to_human_review() {
    let sys = start(&[], &[]).await;
    let agent = sys.staff("agent@support-seed.test", Role::Agent).await;
    let free = sys.signup("free@support-seed.test").await;
    let paid = sys.signup("paid@support-seed.test").await;
    pay_pro(&sys, &paid).await;
    // support-router learns the plan from billing's event; a first ticket shows when it has.
    let probe = open_ticket(&sys, &paid, "Hello", "Just checking in.", "other").await;
    wait_tier(&sys, &agent, &paid, "priority").await;
    let _ = probe;

    // The same request from both.
    let from_free = open_ticket(&sys, &free, SAME_REQUEST.0, SAME_REQUEST.1, "technical").await;
    let from_paid = open_ticket(&sys, &paid, SAME_REQUEST.0, SAME_REQUEST.1, "technical").await;
    let f = staff_view(&sys, &agent, from_free["ticket"]["id"].as_str().unwrap()).await;
    let p = staff_view(&sys, &agent, from_paid["ticket"]["id"].as_str().unwrap()).await;
    let rank = |v: &Value| ["low", "normal", "high", "urgent"].iter().position(|w| v["ticket"]["priority"] == *w).unwrap();
    assert!(rank(&p) > rank(&f), "paid {} vs free {}", p["ticket"]["priority"], f["ticket"]["priority"]);
    assert_eq!((f["ticket"]["tier_at_intake"].as_str(), p["ticket"]["tier_at_intake"].as_str()), (Some("free"), Some("priority")));
    for v in [&f, &p] {
        assert_eq!(v["ticket"]["queue"], "technical", "{v}");
        assert!(!v["ticket"]["priority_reasons"].as_array().unwrap().is_empty(), "staff see why: {v}");
    }

    // The urgent request, from either plan: human review, with its reasons for staff.
    for user in [&free, &paid] {
        let t = open_ticket(&sys, user, URGENT.0, URGENT.1, "other").await;
        let id = t["ticket"]["id"].as_str().unwrap().to_owned();
        let v = staff_view(&sys, &agent, &id).await;
        assert_eq!((v["ticket"]["priority"].as_str(), v["ticket"]["queue"].as_str()), (Some("urgent"), Some("human_review")), "{v}");
        let reasons = v["ticket"]["priority_reasons"].to_string();
        assert!(reasons.contains("charged twice") && reasons.contains("log in"), "{reasons}");
        // The customer sees the ticket and its status, none of the decision: only these fields.
        let (status, own) = send(sys.web.get(sys.url(&format!("/v1/tickets/{id}"))).bearer_auth(&user.token)).await;
        assert_eq!(status, 200);
        assert_eq!(keys(&own["ticket"]), ["category", "created_at", "id", "status", "status_text", "subject", "updated_at"], "{own}");
        for m in own["messages"].as_array().unwrap() {
            assert_eq!(keys(m), ["body", "created_at", "from", "id"], "{own}");
        }
        assert!(!own.to_string().contains("human_review") && !own.to_string().contains("\"urgent\""), "{own}");
        assert_eq!(own["ticket"]["status"], "received");
    }
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_notes_and_decisions_appear_in_no_customer_answer_and_other_accounts_get_404() {
    const NOTE: &str = "INTERNAL-canary-7c1e: customer is on the refund watch list";
    let sys = start(&[], &[]).await;
    let agent = sys.staff("agent@privacy.test", Role::Agent).await;
    let owner = sys.signup("owner@privacy.test").await;
    let other = sys.signup("other@privacy.test").await;
    let t = open_ticket(&sys, &owner, "Invoice", "Where is my invoice?", "billing").await;
    let id = t["ticket"]["id"].as_str().unwrap().to_owned();
    let (status, _) =
        send(sys.web.post(sys.url(&format!("/v1/admin/tickets/{id}/notes"))).bearer_auth(&agent.token).json(&json!({"body": NOTE}))).await;
    assert_eq!(status, 201);
    let (status, _) =
        send(sys.web.post(sys.url(&format!("/v1/admin/tickets/{id}/assign"))).bearer_auth(&agent.token).json(&json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = send(
        sys.web
            .post(sys.url(&format!("/v1/admin/tickets/{id}/priority")))
            .bearer_auth(&agent.token)
            .json(&json!({"priority": "high", "reason": "INTERNAL reason canary"})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(staff_view(&sys, &agent, &id).await.to_string().contains(NOTE), "staff see the note");

    // Every answer a customer can get about the ticket.
    let mut answers = vec![
        send(sys.web.get(sys.url("/v1/tickets")).bearer_auth(&owner.token)).await,
        send(sys.web.get(sys.url(&format!("/v1/tickets/{id}"))).bearer_auth(&owner.token)).await,
        send(sys.web.post(sys.url(&format!("/v1/tickets/{id}/messages"))).bearer_auth(&owner.token).json(&json!({"body": "Any news?"})))
            .await,
        send(sys.web.get(sys.url("/v1/me")).bearer_auth(&owner.token)).await,
    ];
    answers.push(send(sys.web.post(sys.url(&format!("/v1/tickets/{id}/close"))).bearer_auth(&owner.token)).await);
    for (status, body) in &answers {
        assert!((200..300).contains(status), "{status}: {body}");
        let text = body.to_string();
        for internal in [NOTE, "INTERNAL", "notes", "activity", "priority_reasons", "assignee", agent.user_id.as_str()] {
            assert!(!text.contains(internal), "a customer answer holds {internal:?}: {body}");
        }
    }
    // Another account's customer: not found, whatever they try; nothing changes.
    for (status, _) in [
        send(sys.web.get(sys.url(&format!("/v1/tickets/{id}"))).bearer_auth(&other.token)).await,
        send(sys.web.post(sys.url(&format!("/v1/tickets/{id}/messages"))).bearer_auth(&other.token).json(&json!({"body": "Let me in"})))
            .await,
        send(sys.web.post(sys.url(&format!("/v1/tickets/{id}/close"))).bearer_auth(&other.token)).await,
    ] {
        assert_eq!(status, 404);
    }
    let (_, list) = send(sys.web.get(sys.url("/v1/tickets")).bearer_auth(&other.token)).await;
    assert_eq!(list, json!([]), "{list}");
    assert!(!staff_view(&sys, &agent, &id).await.to_string().contains("Let me in"));
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_submission_opens_one_ticket_and_bad_input_stores_nothing() {
    let sys = start(&[], &[]).await;
    let user = sys.signup("double@tickets.test").await;
    let body = json!({"subject": "Twice", "body": "Sent twice by a flaky network.", "category": "technical"});
    let keyed = |key: &str| sys.web.post(sys.url("/v1/tickets")).bearer_auth(&user.token).header("idempotency-key", key).json(&body);
    let (a, b) = tokio::join!(send(keyed("k-1")), send(keyed("k-1")));
    assert_eq!((a.0, b.0), (201, 201));
    assert_eq!(a.1["ticket"]["id"], b.1["ticket"]["id"], "the same key, the same ticket");
    // Without a key, a retried identical request is recognised too.
    let plain = json!({"subject": "Retried", "body": "The browser sent this again.", "category": "technical"});
    let first = send(sys.web.post(sys.url("/v1/tickets")).bearer_auth(&user.token).json(&plain)).await;
    let again = send(sys.web.post(sys.url("/v1/tickets")).bearer_auth(&user.token).json(&plain)).await;
    assert_eq!(first.1["ticket"]["id"], again.1["ticket"]["id"]);
    let (_, list) = send(sys.web.get(sys.url("/v1/tickets")).bearer_auth(&user.token)).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    for (bad, code) in [
        (json!({"subject": "", "body": "x", "category": "technical"}), 422),
        (json!({"subject": "s".repeat(201), "body": "x", "category": "technical"}), 422),
        (json!({"subject": "Fine", "body": "   ", "category": "technical"}), 422),
        (json!({"subject": "Fine", "body": "b".repeat(10_001), "category": "technical"}), 422),
        (json!({"subject": "Fine", "body": "x", "category": "sales"}), 422),
        (json!({"subject": "Fine", "body": "x"}), 422),
        // A customer cannot set what staff decide.
        (json!({"subject": "Fine", "body": "x", "category": "technical", "priority": "urgent"}), 422),
        (json!({"subject": "Fine", "body": "x", "category": "technical", "queue": "human_review"}), 422),
    ] {
        let r = sys.web.post(sys.url("/v1/tickets")).bearer_auth(&user.token).json(&bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), code, "{bad}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let (status, problem) =
        send(sys.web.post(sys.url("/v1/tickets")).bearer_auth(&user.token).header("idempotency-key", "x".repeat(201)).json(&body)).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("invalid_header")));
    let (_, list) = send(sys.web.get(sys.url("/v1/tickets")).bearer_auth(&user.token)).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "nothing stored by the bad requests: {list}");
    // A status move that is not possible: closing a closed ticket.
    let id = first.1["ticket"]["id"].as_str().unwrap();
    assert_eq!(send(sys.web.post(sys.url(&format!("/v1/tickets/{id}/close"))).bearer_auth(&user.token)).await.0, 200);
    let (status, problem) = send(sys.web.post(sys.url(&format!("/v1/tickets/{id}/close"))).bearer_auth(&user.token)).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("not_possible_now")), "{problem}");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answers_from_the_queue_and_the_customer_reads_it_in_the_thread_and_the_mailbox() {
    let sys = start(&[], &[]).await;
    let admin = sys.staff("admin@answer.test", Role::Admin).await;
    let agent = sys.staff("agent@answer.test", Role::Agent).await;
    let user = sys.signup("asker@answer.test").await;
    let t = open_ticket(&sys, &user, "Add a teammate", "How do I invite a colleague to our account?", "account").await;
    let id = t["ticket"]["id"].as_str().unwrap().to_owned();

    // The agent finds it in its queue with a running first-response clock.
    let (_, queues) = send(sys.web.get(sys.url("/v1/admin/queues")).bearer_auth(&agent.token)).await;
    let account_queue = queues.as_array().unwrap().iter().find(|q| q["queue"] == "account").cloned().unwrap();
    assert!(account_queue["open"].as_u64().unwrap() >= 1 && account_queue["unanswered"].as_u64().unwrap() >= 1, "{queues}");
    let (_, listed) = send(sys.web.get(sys.url("/v1/admin/tickets?queue=account&open=true")).bearer_auth(&agent.token)).await;
    let mine = listed.as_array().unwrap().iter().find(|x| x["id"] == id.as_str()).cloned().unwrap();
    assert_eq!(mine["sla"]["first_response"]["state"], "running", "{mine}");
    assert!(mine["sla"]["first_response"]["due_at"].is_string(), "{mine}");

    let answer = "Open Settings, then Team, then Invite.";
    let (status, v) =
        send(sys.web.post(sys.url(&format!("/v1/admin/tickets/{id}/messages"))).bearer_auth(&agent.token).json(&json!({"body": answer})))
            .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["ticket"]["sla"]["first_response"]["state"], "hit", "{v}");
    assert_eq!(v["ticket"]["status"], "waiting_on_customer");

    // The customer's thread shows the answer, from "support", and the status in words.
    let (_, own) = send(sys.web.get(sys.url(&format!("/v1/tickets/{id}"))).bearer_auth(&user.token)).await;
    assert_eq!(own["ticket"]["status"], "waiting_on_you", "{own}");
    let last = own["messages"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!((last["from"].as_str(), last["body"].as_str()), (Some("support"), Some(answer)));
    // ... and the email reached the embedded mailbox (through identity's mail path).
    let mail = wait_for(Duration::from_secs(30), "the answer in the mailbox", || async {
        let (_, mails) = send(sys.web.get(sys.url(&format!("/v1/admin/mailbox?to={}", user.email))).bearer_auth(&admin.token)).await;
        mails.as_array().and_then(|m| m.iter().find(|m| m["template"] == "ticket_answered").cloned())
    })
    .await;
    assert!(mail["text_body"].as_str().unwrap().contains(answer), "{mail}");
    assert_eq!(mail["subject"], "Re: Add a teammate");
    // The customer view in the console shows the open ticket with its SLA state.
    let (_, customer) = send(sys.web.get(sys.url(&format!("/v1/admin/customers/{}", user.account_id))).bearer_auth(&agent.token)).await;
    let open = customer["tickets"].as_array().unwrap();
    assert!(open.iter().any(|x| x["id"] == id.as_str() && x["sla"]["resolution"]["state"] == "paused"), "{customer}");
    sys.stop().await;
}
