//! Chaos on the whole system: under steady mixed load — sign-ups, payments, tickets — each of the
//! six services is killed with `kill -9` in turn and started again, RabbitMQ is restarted, and
//! PostgreSQL is stopped for 30 s. Clients retry what was not accepted, as a browser (or Stripe)
//! would. Afterwards anything parked in a DLQ is replayed with the operator CLI, and a checker
//! (lost, duplicated, unexpected — as Jepsen's RabbitMQ checker counts) compares what was accepted
//! with what the system did: CRM contacts, access changes, emails and tickets.
//!
//! It stops the shared PostgreSQL and restarts the shared broker, so it runs alone, after the rest
//! of the suite (`make test` runs `binary(chaos)` one test at a time; `make chaos` runs it alone).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "regression/harness.rs"]
#[allow(dead_code)] // the regression suite uses the rest
mod harness;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use harness::System;
use serde_json::{Value, json};
use system_tests::PASSWORD;

/// What the clients saw accepted.
#[derive(Default)]
struct Accepted {
    users: BTreeSet<String>,
    /// Accounts whose checkout was paid.
    paid: BTreeSet<String>,
    /// Ticket subjects, with the requester's email.
    tickets: BTreeMap<String, String>,
    /// Attempts answered with something else than success (a fault was under way): retried.
    retries: u64,
}

/// Retries `attempt` (every 500 ms, for up to 3 minutes) until it returns a value.
async fn until_accepted<T, F, Fut>(accepted: &Mutex<Accepted>, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        accepted.lock().unwrap().retries += 1;
        assert!(Instant::now() < deadline, "an input was not accepted within 3 minutes of retries");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One customer's journey: sign up (or, after a lost answer, log in), then maybe pay, maybe open a
/// ticket — each retried until accepted.
async fn customer(http: reqwest::Client, base: String, i: u64, accepted: Arc<Mutex<Accepted>>) {
    let email = format!("chaos{i}@whole-system.test");
    let body = json!({"email": email, "password": PASSWORD, "name": format!("Chaos {i}"), "account_name": format!("Chaos Co {i}")});
    let token = until_accepted(&accepted, || {
        let (http, base, body, email) = (http.clone(), base.clone(), body.clone(), email.clone());
        async move {
            let r = http.post(format!("{base}/v1/signup")).json(&body).send().await.ok()?;
            match r.status().as_u16() {
                201 => r.json::<Value>().await.ok()?["token"].as_str().map(str::to_owned),
                // An earlier attempt was accepted but its answer lost: sign in instead.
                409 => {
                    let login = json!({"email": email, "password": PASSWORD});
                    let r = http.post(format!("{base}/v1/login")).json(&login).send().await.ok()?;
                    r.json::<Value>().await.ok()?["token"].as_str().map(str::to_owned)
                }
                _ => None,
            }
        }
    })
    .await;
    accepted.lock().unwrap().users.insert(email.clone());

    if i.is_multiple_of(3) {
        let account: String = until_accepted(&accepted, || {
            let r = http.get(format!("{base}/v1/me")).bearer_auth(&token).send();
            async move { r.await.ok()?.json::<Value>().await.ok()?["account"]["id"].as_str().map(str::to_owned) }
        })
        .await;
        until_accepted(&accepted, || {
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            async move { system_tests::pay(&http, &base, &token).await.then_some(()) }
        })
        .await;
        accepted.lock().unwrap().paid.insert(account);
    }
    if i.is_multiple_of(2) {
        let subject = format!("Question {i}");
        let key = uuid::Uuid::new_v4().to_string();
        let body = json!({"subject": subject, "body": "How do I export my invoices?", "category": "billing"});
        until_accepted(&accepted, || {
            let r = http.post(format!("{base}/v1/tickets")).bearer_auth(&token).header("idempotency-key", &key).json(&body).send();
            async move { r.await.ok().filter(|r| r.status() == 201).map(|_| ()) }
        })
        .await;
        accepted.lock().unwrap().tickets.insert(subject, email);
    }
}

fn postgres_cluster() -> (String, String) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("PostgreSQL managed by pg_ctlcluster (/etc/postgresql) — the chaos test stops and starts it")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max()
        .unwrap();
    (version, "main".to_owned())
}

/// Brings PostgreSQL and the broker back if the test fails while they are stopped: the rest of
/// the suite needs them.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let (version, cluster) = postgres_cluster();
            let _ = Command::new("pg_ctlcluster").args(["--skip-systemctl-redirect", &version, &cluster, "start"]).output();
            let _ = Command::new("rabbitmqctl").arg("start_app").output();
        }
    }
}

fn pg_ctlcluster(action: &str) {
    let (version, cluster) = postgres_cluster();
    let out = Command::new("pg_ctlcluster").args(["--skip-systemctl-redirect", &version, &cluster, action]).output().unwrap();
    assert!(out.status.success(), "pg_ctlcluster {action}: {}", String::from_utf8_lossy(&out.stderr));
}

/// lost / duplicated / unexpected of `expected` (each wanted once) against what `got` counts.
fn check(name: &str, expected: &BTreeSet<String>, got: &BTreeMap<String, u64>) -> (u64, u64, u64) {
    for (k, n) in got {
        if !expected.contains(k) || *n > 1 {
            println!("  {name}: {k} seen {n} times{}", if expected.contains(k) { "" } else { " (not expected)" });
        }
    }
    let lost = expected.iter().filter(|k| !got.contains_key(*k)).count() as u64;
    let duplicated = got.iter().filter(|(k, n)| expected.contains(*k) && **n > 1).map(|(_, n)| n - 1).sum();
    let unexpected = got.iter().filter(|(k, _)| !expected.contains(*k)).map(|(_, n)| *n).sum();
    println!("  {name:<16} {:>8} {:>6} {lost:>6} {duplicated:>10} {unexpected:>10}", expected.len(), got.values().sum::<u64>());
    (lost, duplicated, unexpected)
}

fn tally(items: impl IntoIterator<Item = String>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for i in items {
        *out.entry(i).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_kills_a_broker_restart_and_a_database_outage_lose_and_duplicate_nothing() {
    let mut sys = System::start().await;
    let accepted = Arc::new(Mutex::new(Accepted::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    // Steady load: a new customer every 300 ms; a third pay, half open a ticket.
    let load = {
        let (http, base, accepted, stop) = (sys.http.clone(), sys.base.clone(), accepted.clone(), stop.clone());
        tokio::spawn(async move {
            let mut journeys = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                journeys.push(tokio::spawn(customer(http.clone(), base.clone(), i, accepted.clone())));
                i += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            for j in journeys {
                j.await.unwrap();
            }
            i
        })
    };

    // Between faults, the load must be flowing again: five more sign-ups accepted.
    let flowing = |accepted: Arc<Mutex<Accepted>>| async move {
        let before = accepted.lock().unwrap().users.len();
        sb_testkit::wait_for(Duration::from_secs(120), "five more sign-ups accepted", || {
            let now = accepted.lock().unwrap().users.len();
            async move { (now >= before + 5).then_some(()) }
        })
        .await;
    };
    let _restore = Restore;
    let mut timings = Vec::new();
    let phase = Instant::now();
    for service in sb_bus::catalog::SERVICES {
        flowing(accepted.clone()).await;
        sys.kill_and_restart(service).await;
    }
    timings.push(("kill -9 and restart each of the six, load between", phase.elapsed()));
    flowing(accepted.clone()).await;
    let phase = Instant::now();
    sb_testkit::rabbitmqctl(&["stop_app"]);
    sb_testkit::rabbitmqctl(&["start_app"]);
    sb_testkit::rabbitmqctl(&["await_startup"]);
    timings.push(("restart RabbitMQ", phase.elapsed()));
    flowing(accepted.clone()).await;
    let phase = Instant::now();
    pg_ctlcluster("stop");
    // The outage itself: how long the database is away, not a wait for anything.
    tokio::time::sleep(Duration::from_secs(30)).await;
    pg_ctlcluster("start");
    timings.push(("PostgreSQL stopped for 30 s", phase.elapsed()));
    let phase = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await; // load after the faults, too
    stop.store(true, Ordering::SeqCst);
    let customers = load.await.unwrap();
    timings.push(("load after the faults, last journeys accepted", phase.elapsed()));

    // Everything accepted has been acted on; whatever was parked is replayed by the operator.
    let phase = Instant::now();
    sys.settled().await;
    let parked = sys.parked();
    let replayed: u64 = sb_bus::catalog::SERVICES.iter().map(|s| sys.replay(s)).sum();
    assert_eq!(replayed, parked, "the operator replayed every parked message");
    sys.wait_parked("every DLQ after the replay", 0, || sys.parked()).await;
    sys.settled().await;
    timings.push(("settle, replay parked messages, settle", phase.elapsed()));

    // The checker.
    let accepted = std::mem::take(&mut *accepted.lock().unwrap());
    let users = &accepted.users;
    let contacts = tally(sys.hubspot.contacts().iter().map(|c| c.email().to_owned()));
    let paid = &accepted.paid;
    let mut db = sys.db("billing").await;
    let grants: Vec<(String,)> =
        sqlx::query_as("SELECT account_id::text FROM access_changes WHERE to_status = 'active'").fetch_all(&mut db).await.unwrap();
    let grants = tally(grants.into_iter().map(|(a,)| a));
    let mut wanted_mail: BTreeSet<String> = users.iter().map(|u| format!("{u} | Welcome to your portal")).collect();
    wanted_mail.extend(accepted.tickets.iter().map(|(subject, to)| format!("{to} | We received your request: {subject}")));
    let address = |to: String| match (to.find('<'), to.find('>')) {
        (Some(a), Some(b)) if a < b => to[a + 1..b].to_owned(),
        _ => to.trim().to_owned(),
    };
    // SMTP is at-least-once: a send whose acknowledgement was lost (the service killed, or its
    // database gone, right after the server said 250) is sent again with the same Message-ID,
    // which is how mail systems recognise the copy (`sb_mail`). An email is one Message-ID.
    let deliveries = sys.smtp.messages();
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    for m in &deliveries {
        let id = m.header("Message-ID").expect("every email has a Message-ID");
        by_id.insert(id, format!("{} | {}", address(m.header("To").unwrap_or_default()), m.header("Subject").unwrap_or_default()));
    }
    let resent = deliveries.len() - by_id.len();
    let mail = tally(by_id.into_values());
    let mut db = sys.db("support-router").await;
    let tickets: Vec<(String,)> = sqlx::query_as("SELECT subject FROM tickets").fetch_all(&mut db).await.unwrap();
    let tickets = tally(tickets.into_iter().map(|(s,)| s));
    let wanted_tickets: BTreeSet<String> = accepted.tickets.keys().cloned().collect();

    println!("SMTP deliveries: {}, of which {resent} repeated an email already delivered (same Message-ID)", deliveries.len());
    println!(
        "whole-system chaos: {customers} customers ({} signed up, {} paid, {} tickets), {} client retries, {parked} messages parked during the run, {replayed} replayed by the operator",
        users.len(),
        paid.len(),
        wanted_tickets.len(),
        accepted.retries
    );
    println!("  {:<16} {:>8} {:>6} {:>6} {:>10} {:>10}", "checker", "expected", "seen", "lost", "duplicated", "unexpected");
    let results = [
        check("CRM contacts", users, &contacts),
        check("access granted", paid, &grants),
        check("emails", &wanted_mail, &mail),
        check("tickets", &wanted_tickets, &tickets),
    ];
    for (what, took) in &timings {
        println!("  {what:<48} {:>6.1} s", took.as_secs_f64());
    }
    println!("  whole test: {:.1} s", started.elapsed().as_secs_f64());
    assert!(users.len() >= 50, "the load ran through the faults ({} sign-ups)", users.len());
    assert!(results.iter().all(|r| *r == (0, 0, 0)), "the checker found lost, duplicated or unexpected effects: {results:?}");
    sys.stop().await;
}
