//! crm-sync on its real HubSpot adapter against the fake HubSpot, fed over the real bus (real
//! PostgreSQL and RabbitMQ): no database transaction stays open while HubSpot answers slowly or
//! while requests wait for rate budget, and the status keeps answering meanwhile; a 429's
//! Retry-After holds back the next request for that contact even past every rung of the ladder;
//! a profile update renames the contact; concurrent access changes converge on the newest.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use sb_bus::{
    Envelope, Event,
    events::{AccessChanged, UserSignedUp, UserUpdated},
};
use sb_proto::crm::v1::{self as pb, crm_client::CrmClient};
use sb_testkit::{
    hubspot::FakeHubSpot,
    service::{TestService, as_service, vars},
    wait_for,
};
use sb_types::{AccessStatus, AccountId, Email, Role, UserId};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(60);
const CONTACTS: &str = "/crm/v3/objects/contacts";

async fn start(fake: &FakeHubSpot, extra: &[(&str, &str)]) -> TestService {
    let (token, base) = (fake.token(), fake.base_url());
    let mut settings = vec![("CRM_SYNC_HUBSPOT_TOKEN", token.as_str()), ("CRM_SYNC_HUBSPOT_BASE_URL", base.as_str())];
    settings.extend_from_slice(extra);
    TestService::start(&crm_sync::def(), &vars(&settings)).await
}

fn signed_up(user: UserId, account: AccountId, email: &str) -> Envelope {
    Envelope::of(&UserSignedUp {
        user_id: user,
        account_id: account,
        email: Email::parse(email).unwrap(),
        name: "Ada Lovelace".into(),
        account_name: "Analytical Engines Ltd".into(),
        role: Role::Customer,
    })
}

fn access_changed(account: AccountId, to: AccessStatus, since: chrono::DateTime<chrono::Utc>) -> Envelope {
    Envelope::of(&AccessChanged {
        account_id: account,
        from: AccessStatus::None,
        to,
        plan: "pro".into(),
        entitlements: Vec::new(),
        reason: "test".into(),
        cause_event_id: String::new(),
        cause_event_type: String::new(),
        stripe_customer_id: Some("cus_sync".into()),
        grace_until: None,
        since,
    })
}

async fn status(svc: &TestService, account: AccountId) -> Vec<pb::ContactStatus> {
    let req = as_service(pb::GetContactStatusRequest { account_id: account.to_string() });
    CrmClient::new(svc.channel.clone()).get_contact_status(req).await.unwrap().into_inner().contacts
}

async fn synced_as(svc: &TestService, account: AccountId, stage: &str) -> Option<pb::ContactStatus> {
    status(svc, account).await.into_iter().find(|c| c.status == pb::SyncStatus::Synced as i32 && c.lifecycle_stage == stage)
}

/// Sessions on the service's database that hold a transaction open: idle inside one for more than
/// a moment (a short transaction is idle between its own statements for a few milliseconds; one
/// waiting on something outside stays idle), or in one begun over a second ago.
async fn open_transactions(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('pid %s %s for %s (transaction for %s): %s', pid, state, now() - state_change, now() - xact_start, left(query, 120))
         FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
           AND ((state LIKE 'idle in transaction%' AND state_change < now() - interval '250 milliseconds')
                OR xact_start < now() - interval '1 second')",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// What was seen while watching crm-sync work through a slow or rate-limited HubSpot.
#[derive(Debug, Default)]
struct Watched {
    polls: usize,
    /// Polls during which HubSpot had requests accepted and not answered yet.
    with_requests_outstanding: usize,
    slowest_status: Duration,
}

/// Until every account's user is synced: checks that no transaction is held open and that
/// `GetContactStatus` answers promptly, on every poll.
async fn watch_until_synced(svc: &TestService, fake: &FakeHubSpot, accounts: &[AccountId]) -> Watched {
    let mut seen = Watched::default();
    let deadline = Instant::now() + WAIT;
    loop {
        let open = open_transactions(&svc.db.pool).await;
        assert!(open.is_empty(), "transactions held open while HubSpot works: {open:#?}");
        let outstanding = fake.requests().iter().any(|r| r.status == 0);
        let asked = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(2), status(svc, accounts[seen.polls % accounts.len()])).await;
        let took = asked.elapsed();
        assert!(answer.is_ok() && took < Duration::from_secs(1), "GetContactStatus took {took:?} while HubSpot worked");
        seen.slowest_status = seen.slowest_status.max(took);
        seen.polls += 1;
        seen.with_requests_outstanding += usize::from(outstanding);
        let mut all = true;
        for a in accounts {
            all &= status(svc, *a).await.iter().any(|c| c.status == pb::SyncStatus::Synced as i32);
        }
        if all {
            return seen;
        }
        assert!(Instant::now() < deadline, "not every contact synced within {WAIT:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_transaction_is_open_while_hubspot_answers_slowly() {
    let fake = FakeHubSpot::start().await.unwrap();
    // Every answer takes 1.5 s: a sync (search, then create) takes 3 s.
    fake.set_latency(Duration::from_millis(1500));
    let svc = start(&fake, &[("CRM_SYNC_HUBSPOT_TIMEOUT", "10s")]).await;
    let accounts: Vec<AccountId> = (0..12).map(|_| AccountId::new()).collect();
    for (i, a) in accounts.iter().enumerate() {
        svc.publish(&signed_up(UserId::new(), *a, &format!("slow{i}@example.com"))).await;
    }
    let seen = watch_until_synced(&svc, &fake, &accounts).await;
    println!("slow HubSpot: {seen:?}");
    assert!(seen.with_requests_outstanding >= 10, "the checks ran while HubSpot was answering: {seen:?}");
    assert_eq!(fake.contact_count(), 12);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_transaction_is_open_while_requests_wait_for_rate_budget() {
    let fake = FakeHubSpot::start().await.unwrap();
    // HubSpot's own limit is tighter than the client's budget: requests wait for budget here,
    // and some meet HubSpot's 429 (waited out in-process, or on the retry ladder).
    fake.limit_rate(2, Duration::from_secs(1));
    let svc = start(&fake, &[("CRM_SYNC_HUBSPOT_RATE_LIMIT", "3/1s")]).await;
    let accounts: Vec<AccountId> = (0..8).map(|_| AccountId::new()).collect();
    for (i, a) in accounts.iter().enumerate() {
        svc.publish(&signed_up(UserId::new(), *a, &format!("budget{i}@example.com"))).await;
    }
    let started = Instant::now();
    let seen = watch_until_synced(&svc, &fake, &accounts).await;
    println!("rate-limited HubSpot: {seen:?} over {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(3), "16 requests at 2/s took a while: {:?}", started.elapsed());
    assert!(seen.polls >= 20, "{seen:?}");
    assert!(fake.requests().iter().any(|r| r.status == 429), "HubSpot's limit was met");
    assert_eq!(fake.contact_count(), 8);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_longer_than_every_rung_holds_back_the_next_request() {
    let fake = FakeHubSpot::start().await.unwrap();
    // Two 429s in a row asking for 2 s (the test ladder's rungs are 250 ms, 500 ms and 1 s): the
    // adapter waits out the first itself, the second goes to the retry ladder.
    fake.set_retry_after(2);
    fake.fail_next(2, 429);
    let svc = start(&fake, &[]).await;
    let info = svc.info().await;
    let mut consumes = info.consumes.clone();
    consumes.sort();
    assert_eq!(consumes, [AccessChanged::TYPE, UserSignedUp::TYPE, UserUpdated::TYPE]);
    assert!(info.publishes.is_empty(), "crm-sync publishes nothing: {:?}", info.publishes);
    let account = AccountId::new();
    svc.publish(&signed_up(UserId::new(), account, "patient@example.com")).await;
    wait_for(WAIT, "synced after the 429s", || synced_as(&svc, account, "lead")).await;

    let requests = fake.requests();
    assert_eq!(requests.iter().map(|r| r.status).take(2).collect::<Vec<_>>(), [429, 429], "{requests:?}");
    for pair in requests.windows(2).filter(|w| w[0].status == 429) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_secs(2), "a request came {gap:?} after a 429 asking for 2 s: {requests:#?}");
    }
    assert!(svc.info().await.retried >= 1, "the second 429 went through the retry ladder");
    assert!(requests.iter().skip(2).all(|r| r.status / 100 == 2), "{requests:?}");
    assert_eq!(fake.contact_count(), 1);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_update_renames_the_contact_in_hubspot() {
    let fake = FakeHubSpot::start().await.unwrap();
    let svc = start(&fake, &[]).await;
    let (user, account) = (UserId::new(), AccountId::new());
    svc.publish(&signed_up(user, account, "ada@example.com")).await;
    let synced = wait_for(WAIT, "synced", || synced_as(&svc, account, "lead")).await;
    assert_eq!(fake.contact("ada@example.com").unwrap().prop("lastname"), Some("Lovelace"));

    fake.clear_requests();
    let email = Email::parse("ada@example.com").unwrap();
    svc.publish(&Envelope::of(&UserUpdated { user_id: user, account_id: account, email, name: "Ada King Lovelace".into() })).await;
    wait_for(WAIT, "renamed in HubSpot", || async {
        fake.contact("ada@example.com").filter(|c| c.prop("lastname") == Some("King Lovelace"))
    })
    .await;
    let c = fake.contact("ada@example.com").unwrap();
    assert_eq!((c.id.as_str(), c.prop("firstname"), c.lifecycle_stage()), (synced.crm_contact_id.as_str(), Some("Ada"), "lead"));
    let requests = fake.requests();
    assert!(
        requests.iter().all(|r| r.is("PATCH", &format!("{CONTACTS}/{}", c.id))),
        "the linked contact is updated, not searched for or created again: {requests:?}"
    );
    wait_for(WAIT, "synced again", || synced_as(&svc, account, "lead")).await;
    assert_eq!(fake.contact_count(), 1);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_access_changes_converge_on_the_newest() {
    let fake = FakeHubSpot::start().await.unwrap();
    let svc = start(&fake, &[]).await;
    let (user, account) = (UserId::new(), AccountId::new());
    svc.publish(&signed_up(user, account, "race@example.com")).await;
    wait_for(WAIT, "a lead", || synced_as(&svc, account, "lead")).await;

    // Slow answers widen the window in which the two writes overlap.
    fake.set_latency(Duration::from_millis(300));
    let now = chrono::Utc::now();
    let paid = access_changed(account, AccessStatus::Active, now);
    let cancelled = access_changed(account, AccessStatus::Revoked, now + chrono::Duration::seconds(1));
    futures::future::join(svc.publish(&paid), svc.publish(&cancelled)).await;
    let s = wait_for(WAIT, "churned, the newest", || synced_as(&svc, account, "other")).await;
    wait_for(WAIT, "both changes handled", || async { (svc.info().await.applied >= 3).then_some(()) }).await;
    let c = fake.contact("race@example.com").unwrap();
    assert_eq!((c.id.as_str(), c.lifecycle_stage()), (s.crm_contact_id.as_str(), "other"));
    assert_eq!((c.prop("switchboard_access_status"), c.prop("stripe_customer_id")), (Some("revoked"), Some("cus_sync")));
    assert_eq!(svc.dlq_depth().await, 0);
    assert_eq!(fake.contact_count(), 1);
    svc.stop().await;
}
