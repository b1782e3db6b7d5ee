//! Plans and people: a plan change re-prioritises open tickets (never out of human review, never
//! below a person's choice); with billing unreachable intake still succeeds (tier unknown) and the
//! ticket is re-prioritised once billing answers; a ticket opened before identity's announcement
//! of its requester has its events held until it arrives.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use sb_proto::support::v1 as pb;
use sb_runtime::caller::Role;
use sb_testkit::{service::WAIT, wait_for};
use sb_types::AccessStatus;

#[tokio::test]
async fn a_plan_change_reprioritises_open_tickets_but_never_out_of_human_review_nor_below_a_person() {
    let h = start(&[]).await;
    let agent = staff(Role::Agent);
    let c = new_customer();
    h.sign_up(&c, "plans@example.com", "Plan Person").await;
    let t0 = Utc::now();
    h.access_changed(c.account_id, "starter", AccessStatus::Active, t0).await;

    let plain = h.open(&c, "Export", "How do I export?", pb::Category::Technical).await;
    let urgent = h.open(&c, "Help", "I was charged twice and can't log in", pb::Category::Billing).await;
    let done = h.open(&c, "Old", "An old question", pb::Category::Technical).await;
    let held = h.open(&c, "Held", "A question a person handles", pb::Category::Technical).await;
    let (plain, urgent, done, held) =
        (ticket(&plain).id.clone(), ticket(&urgent).id.clone(), ticket(&done).id.clone(), ticket(&held).id.clone());
    assert_eq!(ticket(&h.get(&agent, &plain).await.unwrap()).priority(), pb::Priority::Normal);
    h.resolve(&agent, &done).await.unwrap();
    let req =
        pb::ReprioritiseRequest { ticket_id: held.clone(), priority: pb::Priority::High as i32, queue: 0, reason: "key account".into() };
    h.client().reprioritise(as_user(req, &agent)).await.unwrap();

    // Upgrade to pro.
    h.access_changed(c.account_id, "pro", AccessStatus::Active, t0 + chrono::Duration::seconds(10)).await;
    let p = h.get(&agent, &plain).await.unwrap();
    assert_eq!(
        (ticket(&p).priority(), ticket(&p).queue(), ticket(&p).tier_now.as_str()),
        (pb::Priority::High, pb::Queue::Technical, "priority")
    );
    assert_eq!(ticket(&p).tier_at_intake, "standard");
    assert_eq!(ticket(&p).priority_reasons[0], "tier priority (plan pro, active)");
    let line = p.activity.iter().find(|a| a.action == "prioritised").unwrap();
    assert!(
        line.actor_user_id.is_empty() && line.detail.starts_with("plan changed: tier standard → priority; priority normal → high"),
        "{line:?}"
    );
    let events = h.events("support.ticket.prioritised.v1", &plain).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0]["from_priority"].as_str(), events[0]["to_priority"].as_str()), (Some("normal"), Some("high")));
    assert!(events[0]["by"].is_null(), "the rules changed it");
    // Human review stays human review; the resolved ticket is left alone.
    let u = h.get(&agent, &urgent).await.unwrap();
    assert_eq!(
        (ticket(&u).priority(), ticket(&u).queue(), ticket(&u).tier_now.as_str()),
        (pb::Priority::Urgent, pb::Queue::HumanReview, "priority")
    );
    assert!(h.events("support.ticket.prioritised.v1", &urgent).await.is_empty(), "priority and queue did not move");
    assert_eq!(ticket(&h.get(&agent, &done).await.unwrap()).tier_now, "standard");

    // An older change arriving late is ignored.
    h.access_changed(c.account_id, "", AccessStatus::Revoked, t0 + chrono::Duration::seconds(5)).await;
    assert_eq!(ticket(&h.get(&agent, &plain).await.unwrap()).priority(), pb::Priority::High);

    // A downgrade: automation lowers its own choice, not a person's, and human review stays.
    h.access_changed(c.account_id, "pro", AccessStatus::Revoked, t0 + chrono::Duration::seconds(20)).await;
    let p = h.get(&agent, &plain).await.unwrap();
    assert_eq!((ticket(&p).priority(), ticket(&p).tier_now.as_str()), (pb::Priority::Low, "free"));
    let k = h.get(&agent, &held).await.unwrap();
    assert_eq!((ticket(&k).priority(), ticket(&k).tier_now.as_str()), (pb::Priority::High, "free"));
    assert_eq!(ticket(&k).priority_reasons[0], "set by a person: key account");
    let u = h.get(&agent, &urgent).await.unwrap();
    assert_eq!((ticket(&u).priority(), ticket(&u).queue()), (pb::Priority::Urgent, pb::Queue::HumanReview));

    // Only a person takes it out of human review.
    let req = pb::ReprioritiseRequest {
        ticket_id: urgent.clone(),
        priority: pb::Priority::High as i32,
        queue: pb::Queue::Billing as i32,
        reason: "handled by phone".into(),
    };
    let moved = h.client().reprioritise(as_user(req, &agent)).await.unwrap().into_inner();
    assert_eq!((ticket(&moved).priority(), ticket(&moved).queue()), (pb::Priority::High, pb::Queue::Billing));
    let by = h.events("support.ticket.prioritised.v1", &urgent).await;
    assert_eq!((by.len(), by[0]["by"].as_str()), (1, Some(agent.user_id.to_string().as_str())));
    h.stop().await;
}

#[tokio::test]
async fn a_new_sign_up_is_on_the_free_tier_without_asking_billing_until_billing_says_otherwise() {
    let h = start(&[]).await;
    let c = new_customer();
    h.sign_up(&c, "newbie@example.com", "New Person").await;
    let t = h.open(&c, "Export", "How do I export?", pb::Category::Technical).await;
    assert_eq!((ticket(&t).tier_at_intake.as_str(), ticket(&t).priority()), ("free", pb::Priority::Low));
    assert_eq!(h.billing.calls(), 0, "a sign-up's account has no access until billing announces one");
    // Whatever billing announces wins over the sign-up's "none", even an announcement older than
    // the sign-up's delivery.
    h.access_changed(c.account_id, "pro", AccessStatus::Active, Utc::now() - chrono::Duration::hours(1)).await;
    let next = h.open(&c, "Another", "Another question", pb::Category::Technical).await;
    assert_eq!((ticket(&next).tier_at_intake.as_str(), ticket(&next).priority()), ("priority", pb::Priority::High));
    assert_eq!(ticket(&h.get(&staff(Role::Agent), &ticket(&t).id).await.unwrap()).tier_now, "priority", "the open ticket follows");
    h.stop().await;
}

#[tokio::test]
async fn with_billing_unreachable_intake_succeeds_and_the_ticket_is_reprioritised_when_billing_answers() {
    let h = start(&[("SUPPORT_ROUTER_BILLING_TIMEOUT", "5s")]).await;
    let agent = staff(Role::Agent);
    let c = new_customer();
    h.known_from_before(&c, "nobilling@example.com", "No Billing").await;
    h.billing.set(c.account_id, "pro", AccessStatus::Active);
    h.billing_proxy.cut();

    let asked = Instant::now();
    let t = h.open(&c, "Export", "How do I export?", pb::Category::Technical).await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(3), "intake waited on billing: {took:?}");
    let id = ticket(&t).id.clone();
    assert_eq!((ticket(&t).tier_at_intake.as_str(), ticket(&t).priority()), ("unknown", pb::Priority::Low));
    let seen = h.get(&agent, &id).await.unwrap();
    assert!(ticket(&seen).priority_reasons[0].contains("plan not known yet"), "{:?}", ticket(&seen).priority_reasons);
    assert_eq!(h.events("support.ticket.opened.v1", &id).await.len(), 1, "announced at once");
    assert_eq!(h.billing.calls(), 0);

    // billing is back: the refresher asks, stores the plan and re-prioritises.
    h.billing_proxy.restore();
    let after = wait_for(WAIT, "the ticket re-prioritised from billing's answer", || async {
        h.get(&agent, &id).await.ok().filter(|v| ticket(v).tier_now == "priority")
    })
    .await;
    assert_eq!((ticket(&after).priority(), ticket(&after).tier_at_intake.as_str()), (pb::Priority::High, "unknown"));
    assert!(h.billing.calls() >= 1);
    let events = h.events("support.ticket.prioritised.v1", &id).await;
    assert_eq!(events.len(), 1);
    assert!(events[0]["by"].is_null());
    assert!(after.activity.iter().any(|a| a.action == "prioritised" && a.detail.starts_with("plan changed: tier unknown → priority")));
    // The answer is stored: the next ticket knows the plan at intake.
    let next = h.open(&c, "Another", "Another question", pb::Category::Technical).await;
    assert_eq!((ticket(&next).tier_at_intake.as_str(), ticket(&next).priority()), ("priority", pb::Priority::High));
    h.stop().await;
}

#[tokio::test]
async fn a_ticket_opened_before_identity_announced_its_requester_is_announced_when_it_arrives() {
    let h = start(&[]).await;
    let agent = staff(Role::Agent);
    let c = new_customer();
    let t = h.open(&c, "Early", "Opened right after signing up", pb::Category::Account).await;
    let id = ticket(&t).id.clone();
    assert!(ticket(&t).requester_email.is_empty());
    h.reply(&agent, &id, "Hello!").await.unwrap();
    assert!(h.events("support.ticket.opened.v1", &id).await.is_empty(), "held until the requester's email is known");

    h.sign_up(&c, "early@example.com", "Early Bird").await;
    let opened = wait_for(WAIT, "the held events published", || async {
        let e = h.events("support.ticket.opened.v1", &id).await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["requester"]["email"], "early@example.com");
    let messages = h.events("support.ticket.message_added.v1", &id).await;
    assert_eq!(messages.iter().map(|m| m["author"].as_str().unwrap()).collect::<Vec<_>>(), ["customer", "agent"]);
    assert!(messages.iter().all(|m| m["requester"]["email"] == "early@example.com" && m["requester"]["name"] == "Early Bird"));
    let seen = h.get(&agent, &id).await.unwrap();
    assert_eq!((ticket(&seen).requester_email.as_str(), ticket(&seen).requester_name.as_str()), ("early@example.com", "Early Bird"));
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM held_events").fetch_one(h.pool()).await.unwrap();
    assert_eq!(held, 0);
    h.stop().await;
}
