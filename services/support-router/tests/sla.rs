//! SLA clocks through the running service, with second-long targets and a fast sweeper: the
//! resolution clock pauses while the ticket waits on the customer, a breach is published once per
//! clock and spell — also with more sweepers on the same database (replicas) — and a clock stopped
//! late is not published again.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use sb_proto::support::v1 as pb;
use sb_runtime::caller::Role;
use sb_testkit::{service::WAIT, wait_for};
use support_router::{config::SupportConfig, service::Support};

/// Targets for every tier: first response 1 h (never missed here), next response 1 s, resolution 4 s.
const SLA: &str = "free:1h/1s/4s;unknown:1h/1s/4s";

fn as_time(t: &Option<prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
    let t = t.as_ref().unwrap();
    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

#[tokio::test]
async fn resolution_pauses_while_waiting_on_the_customer_and_each_breach_is_published_once() {
    let h = start(&[("SUPPORT_ROUTER_SLA", SLA), ("SUPPORT_ROUTER_SLA_SWEEP_INTERVAL", "100ms")]).await;
    let (c, agent) = (new_customer(), staff(Role::Agent));
    h.sign_up(&c, "clocks@example.com", "Clock Watcher").await;
    let t = h.open(&c, "Clocks", "Please help", pb::Category::Technical).await;
    let id = ticket(&t).id.clone();
    let sla = ticket(&t).sla.as_ref().unwrap();
    assert_eq!(
        (clock_state(&sla.first_response), clock_state(&sla.next_response), clock_state(&sla.resolution)),
        (pb::ClockState::Running, pb::ClockState::Idle, pb::ClockState::Running)
    );
    assert_eq!(sla.resolution.as_ref().unwrap().target_seconds, 4);

    // An answer: first response hit, resolution paused.
    let answered = h.reply(&agent, &id, "Could you send a screenshot?").await.unwrap();
    let sla = ticket(&answered).sla.unwrap();
    assert_eq!((clock_state(&sla.first_response), clock_state(&sla.resolution)), (pb::ClockState::Hit, pb::ClockState::Paused));
    let due_then = as_time(&sla.resolution.as_ref().unwrap().due_at);

    // Time passes beyond the resolution target while the customer's turn lasts. (Not a
    // synchronisation: the wait *is* the condition under test.)
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waiting = h.get(&agent, &id).await.unwrap();
    let sla = ticket(&waiting).sla.unwrap();
    assert_eq!(clock_state(&sla.resolution), pb::ClockState::Paused, "a paused clock is not missed: {sla:?}");
    let due_now = as_time(&sla.resolution.as_ref().unwrap().due_at);
    assert!(due_now - due_then >= chrono::Duration::milliseconds(4_500), "paused: the due time moves with now ({due_then} → {due_now})");
    assert!(h.events("support.ticket.sla_breached.v1", &id).await.is_empty());

    // The customer replies: resolution runs on, next response starts; both run out.
    let replied = h.reply(&c, &id, "Here it is").await.unwrap();
    let sla = ticket(&replied).sla.unwrap();
    assert_eq!((clock_state(&sla.next_response), clock_state(&sla.resolution)), (pb::ClockState::Running, pb::ClockState::Running));
    let breaches = wait_for(WAIT, "both breaches published", || async {
        let b = h.events("support.ticket.sla_breached.v1", &id).await;
        (b.len() >= 2).then_some(b)
    })
    .await;
    let mut clocks: Vec<&str> = breaches.iter().map(|b| b["clock"].as_str().unwrap()).collect();
    clocks.sort_unstable();
    assert_eq!(clocks, ["next_response", "resolution"]);
    assert_eq!(breaches[0]["requester"]["email"], "clocks@example.com");

    // More sweepers on the same database (as replicas would be) record nothing again.
    let vars = h.svc.vars().to_vec();
    let env =
        sb_runtime::config::Env::with_lookup("support-router", move |k| vars.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone()));
    let replica = Support::new(h.pool().clone(), SupportConfig::from(&env).unwrap());
    let rounds = futures::future::join_all((0..6).map(|_| replica.sweep_sla())).await;
    assert!(rounds.iter().all(|r| matches!(r, Ok(0))), "{rounds:?}");

    // The late answer stops next response (missed), and publishes nothing more.
    let late = h.reply(&agent, &id, "Fixed now").await.unwrap();
    let sla = ticket(&late).sla.unwrap();
    assert_eq!((clock_state(&sla.next_response), clock_state(&sla.resolution)), (pb::ClockState::Missed, pb::ClockState::Missed));
    assert_eq!(h.events("support.ticket.sla_breached.v1", &id).await.len(), 2);
    let seen = h.get(&agent, &id).await.unwrap();
    assert_eq!(seen.activity.iter().filter(|a| a.action == "sla_breached").count(), 2);
    // The customer sees the clocks too (they are not internal).
    assert_eq!(clock_state(&ticket(&h.get(&c, &id).await.unwrap()).sla.as_ref().unwrap().next_response), pb::ClockState::Missed);

    // The backlog is measured for the founder's alarm.
    let metrics = reqwest_metrics(&h).await;
    assert!(metrics.contains("support_sla_breaches_total"), "{metrics}");
    assert!(metrics.contains("support_backlog_oldest_unanswered_seconds"), "{metrics}");
    h.stop().await;
}

async fn reqwest_metrics(h: &Harness) -> String {
    let url = format!("http://{}/metrics", h.svc.http);
    wait_for(WAIT, "the metrics page with the support gauges", || {
        let url = url.clone();
        async move {
            let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
            body.contains("support_tickets_open").then_some(body)
        }
    })
    .await
}
