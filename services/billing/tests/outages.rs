//! billing while what it depends on misbehaves: Stripe answering slowly (reads stay fast, no
//! transaction waits on Stripe), Stripe rate-limiting (the retry waits as long as Stripe asked),
//! and the database dropping its sessions (callers are told to retry, not that billing broke).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use billing::domain::AccountId;
use common::{BillingTest, TestService, as_service, as_user, customer, now, start, start_with_stripe, stripe_event};
use sb_proto::billing::v1::{self as pb, AccessStatus};
use sb_runtime::status::RETRY_AFTER;
use sb_stripe::objects::{self, SubscriptionSpec};
use sb_testkit::{service::WAIT, stripe::FakeStripe, wait_for};
use sqlx::{Connection, PgConnection};
use tonic::Code;

const PRO_PRICE: &str = "price_switchboard_pro";

fn subscription(id: &str, customer: &str, account: AccountId, created: i64) -> serde_json::Value {
    objects::subscription(&SubscriptionSpec {
        id,
        customer,
        account_id: &account.to_string(),
        price: PRO_PRICE,
        status: "active",
        created,
        period_end: created + 30 * 86_400,
    })
}

/// What a watcher of `pg_stat_activity` saw on billing's database.
#[derive(Debug, Default)]
struct Sessions {
    samples: usize,
    /// The longest any client transaction (of a session not `idle`) had been open, in seconds.
    oldest_transaction: f64,
    /// The longest any session had sat idle inside a transaction, in seconds.
    longest_idle_in_transaction: f64,
    /// Sightings of a session idle inside a transaction (between two statements of a short
    /// transaction, or waiting on something else), whatever their length.
    idle_in_transaction: usize,
    /// The state and statement of the session with the oldest transaction.
    oldest: String,
}

/// One session as sampled: state, transaction age, time in that state (seconds), statement.
type SessionRow = (Option<String>, Option<f64>, Option<f64>, Option<String>);

/// Samples every session of the database at `url` (but its own) every 20 ms until `stop`.
async fn watch_sessions(url: String, stop: Arc<AtomicBool>) -> Sessions {
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let mut seen = Sessions::default();
    while !stop.load(Ordering::SeqCst) {
        // Client sessions only: billing's pool (and the test's); not autovacuum and the like. A
        // session whose state is `idle` holds no transaction of its client's (the server may open
        // one of its own, e.g. to hand a LISTEN session its notifications).
        let rows: Vec<SessionRow> = sqlx::query_as(
            "SELECT state,
                    extract(epoch FROM clock_timestamp() - xact_start)::float8,
                    extract(epoch FROM clock_timestamp() - state_change)::float8,
                    left(query, 100)
             FROM pg_stat_activity
             WHERE datname = current_database() AND backend_type = 'client backend' AND state <> 'idle'
               AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        seen.samples += 1;
        for (state, xact_age, state_age, query) in rows {
            if xact_age.unwrap_or(0.0) > seen.oldest_transaction {
                seen.oldest_transaction = xact_age.unwrap_or(0.0);
                seen.oldest = format!("{state:?}: {}", query.unwrap_or_default());
            }
            if state.as_deref().is_some_and(|s| s.starts_with("idle in transaction")) {
                seen.longest_idle_in_transaction = seen.longest_idle_in_transaction.max(state_age.unwrap_or(0.0));
                seen.idle_in_transaction += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stay_fast_and_no_transaction_waits_while_stripe_answers_slowly() {
    const EVENTS: usize = 24;
    const STRIPE_TAKES: Duration = Duration::from_secs(5);
    let stripe = FakeStripe::start().await.unwrap();
    let b = start_with_stripe(&stripe, &[]).await;
    let t0 = now() - 60;
    let accounts: Vec<AccountId> = (0..EVENTS).map(|_| AccountId::new()).collect();
    for (i, account) in accounts.iter().enumerate() {
        stripe.put_subscription(subscription(&format!("sub_slow_{i}"), &format!("cus_slow_{i}"), *account, t0));
    }
    // Every event makes billing read its subscription back from Stripe, which takes 5 s to answer.
    stripe.set_delay(STRIPE_TAKES);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_sessions(b.db.url.clone(), stop.clone()));
    for (i, account) in accounts.iter().enumerate() {
        let (_, ev) = stripe_event(
            "customer.subscription.created",
            t0,
            subscription(&format!("sub_slow_{i}"), &format!("cus_slow_{i}"), *account, t0),
        );
        b.publish_stripe_event(ev).await;
    }
    wait_for(WAIT, "billing asking Stripe", || async { (!stripe.requests().is_empty()).then_some(()) }).await;
    let asked_at = Instant::now();

    // Customers read their access (as `/v1/me` does) all the while events are being applied.
    let active = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM access WHERE status = 'active'").fetch_one(&b.db.pool).await.unwrap();
        n as usize
    };
    assert_eq!(active().await, 0, "nothing applied before Stripe answered");
    let mut client = b.client();
    let mut latencies = Vec::new();
    let mut applied = 0;
    while latencies.len() < 200 || applied < EVENTS {
        let account = accounts[latencies.len() % EVENTS];
        let started = Instant::now();
        let req = as_user(pb::GetAccessRequest { account_id: account.to_string() }, &customer(account));
        client.get_access(req).await.unwrap();
        latencies.push(started.elapsed());
        if latencies.len() % 25 == 0 {
            applied = active().await;
            assert!(asked_at.elapsed() < Duration::from_secs(60), "events not applied: {applied} of {EVENTS}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let sessions = watcher.await.unwrap();
    let took = asked_at.elapsed();

    latencies.sort();
    let (p50, p99, max) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99), latencies[latencies.len() - 1]);
    println!(
        "GetAccess while {EVENTS} events waited {STRIPE_TAKES:?} each on Stripe ({:.1} s until all applied): {} calls, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        took.as_secs_f64(),
        latencies.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    println!(
        "pg_stat_activity every 20 ms: {} samples; oldest open transaction {:.3} s; idle in transaction {} times, longest {:.3} s",
        sessions.samples, sessions.oldest_transaction, sessions.idle_in_transaction, sessions.longest_idle_in_transaction,
    );
    assert!(took >= STRIPE_TAKES, "the events did wait on Stripe");
    assert!(p99 < Duration::from_millis(50), "GetAccess p99 {p99:?} while Stripe is slow");
    // A transaction held across a Stripe call would be open, and idle, for 5 s. Short ones are
    // seen idle for the moment between two of their statements (or while the outbox relay's
    // broker confirms); none comes near Stripe's time.
    assert!(sessions.samples > 100, "{sessions:?}");
    assert!(sessions.oldest_transaction < 1.0, "a transaction stayed open while Stripe answered: {sessions:?}");
    assert!(sessions.longest_idle_in_transaction < 0.25, "a session sat idle in a transaction: {sessions:?}");
    for account in &accounts {
        assert_eq!(b.access(*account).await.plan, "pro");
    }
    assert_eq!(stripe.requests().len(), EVENTS, "one read-back per event, no customer lookups (the events name their account)");
    b.stop().await;
    stripe.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_429_makes_the_next_attempt_wait_as_long_as_stripe_asked() {
    let stripe = FakeStripe::start().await.unwrap();
    let b = start_with_stripe(&stripe, &[]).await;
    let account = AccountId::new();
    let t0 = now() - 60;
    stripe.put_subscription(subscription("sub_limited", "cus_limited", account, t0));
    // Longer than every rung of the test ladder (250 ms, 500 ms, 1 s).
    stripe.set_retry_after(2);
    stripe.fail_next(1, 429);
    b.publish_stripe_event(stripe_event("customer.subscription.created", t0, subscription("sub_limited", "cus_limited", account, t0)).1)
        .await;
    b.wait_access(account, AccessStatus::Active).await;
    let tries = stripe.requests_to("GET", "/v1/subscriptions/sub_limited");
    assert_eq!(tries.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let waited = tries[1].at - tries[0].at;
    println!("after a 429 with Retry-After: 2 the next request came {:.3} s later", waited.as_secs_f64());
    assert!(waited >= Duration::from_secs(2), "the retry came {waited:?} after the 429");
    let info = b.info().await;
    assert_eq!((info.retried, info.parked), (1, 0), "{info:?}");

    // A caller starting a checkout while Stripe rate-limits is told how long to wait.
    stripe.fail_next(1, 429);
    let other = AccountId::new();
    let req = pb::CreateCheckoutSessionRequest { account_id: other.to_string(), plan: String::new(), customer_email: String::new() };
    let err = b.client().create_checkout_session(as_user(req, &customer(other))).await.unwrap_err();
    let hint = err.metadata().get(RETRY_AFTER).and_then(|v| v.to_str().ok());
    assert_eq!((err.code(), hint), (Code::Unavailable, Some("2")), "{err:?}");
    b.stop().await;
    stripe.shutdown().await;
}

/// Every session of `b`'s database but the caller's ends, as when PostgreSQL restarts.
async fn drop_sessions(b: &TestService) {
    let mut admin = PgConnection::connect(&b.db.url).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_unavailable_with_a_retry_hint_not_an_internal_error() {
    let b = start(&[]).await;
    let account = AccountId::new();
    let mut client = b.client();
    assert_eq!(b.access(account).await.status, AccessStatus::None as i32);
    drop_sessions(&b).await;
    // billing's pooled connections are gone under it: the calls that meet one are told to retry.
    let mut unavailable = 0;
    for _ in 0..20 {
        match client.get_access(as_service(pb::GetAccessRequest { account_id: account.to_string() })).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                assert!(e.metadata().get(RETRY_AFTER).is_some(), "{e:?}");
                unavailable += 1;
            }
        }
    }
    assert!(unavailable >= 1, "no call met a dropped connection");
    // And billing recovers on its own.
    wait_for(WAIT, "billing answering again", || {
        let mut client = client.clone();
        async move { client.get_access(as_service(pb::GetAccessRequest { account_id: account.to_string() })).await.ok().map(drop) }
    })
    .await;
    b.stop().await;
}

/// A sender that dies after claiming local webhooks (`kill -9`, its database gone) holds them
/// only as long as posting them in turn could take: the first comes due again after two post
/// timeouts, each next one a timeout later — not after the whole batch's time (210 s before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_webhooks_a_dead_sender_claimed_come_due_again_one_post_timeout_apart() {
    let db = sb_testkit::TestDb::new("local_lease").await.unwrap();
    billing::MIGRATOR.run(&db.pool).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    for i in 0..3 {
        let w = billing::domain::LocalWebhook { event_id: format!("evt_local_lease_{i}"), body: "{}".into() };
        billing::store::queue_local_webhook(&mut conn, &w).await.unwrap();
    }
    let step = Duration::from_secs(10);
    let claimed = billing::store::claim_local_webhooks(&mut conn, 20, step).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(billing::store::claim_local_webhooks(&mut conn, 20, step).await.unwrap().is_empty(), "leased: no other sender takes them");
    let leases: Vec<f64> = sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM next_attempt_at - now())::float8 FROM local_webhooks ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    for (k, lease) in leases.iter().enumerate() {
        let want = 10.0 * (k as f64 + 2.0);
        assert!((lease - want).abs() < 1.0, "webhook {k}: leased {lease:.1} s, want {want} s");
    }
    drop(conn);
    db.pool.close().await;
}
