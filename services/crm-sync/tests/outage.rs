//! The outage run: identity and crm-sync in-process on one bus (real PostgreSQL and RabbitMQ),
//! crm-sync on its real HubSpot adapter pointed at a fake HubSpot that first answers 503, then
//! refuses connections. 1,000 sign-ups go through identity meanwhile; when the CRM is back, it
//! holds exactly 1,000 unique contacts with the right stages. Events that ran out of rungs wait
//! in the DLQ with their reason, and one replay delivers them exactly once. The ladder is
//! shortened by configuration only.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::{collections::HashSet, time::Duration};

use sb_bus::{Envelope, events::AccessChanged};
use sb_proto::{
    crm::v1::{self as pb, crm_client::CrmClient},
    identity::v1::{SignUpRequest, identity_client::IdentityClient},
};
use sb_testkit::{
    hubspot::FakeHubSpot,
    service::{TestService, as_service as service_request, delete_prefix, vars},
    unique, wait_for,
};
use sb_types::{AccessStatus, AccountId};

const SIGNUPS: usize = 1_000;
const WAIT: Duration = Duration::from_secs(120);

async fn status(crm: &TestService, account: &str) -> Vec<pb::ContactStatus> {
    let req = service_request(pb::GetContactStatusRequest { account_id: account.to_owned() });
    CrmClient::new(crm.channel.clone()).get_contact_status(req).await.unwrap().into_inner().contacts
}

fn access_changed(account: &str, from: AccessStatus, to: AccessStatus, customer: Option<String>) -> Envelope {
    Envelope::of(&AccessChanged {
        account_id: account.parse::<AccountId>().unwrap(),
        from,
        to,
        plan: "pro".into(),
        entitlements: Vec::new(),
        reason: "outage run".into(),
        cause_event_id: String::new(),
        cause_event_type: String::new(),
        stripe_customer_id: customer,
        grace_until: None,
        since: chrono::Utc::now(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_outage_loses_and_duplicates_nothing() {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
    let fake = FakeHubSpot::start().await.unwrap();
    // The portal's own churn stage (a custom HubSpot stage), configured below.
    fake.define_stage("churned");
    fake.fail_always(503);
    let prefix = unique("out");
    let identity = TestService::start_in(&identity::def(), &prefix, &[]).await;
    let (token, base_url) = (fake.token(), fake.base_url());
    let crm_vars = vars(&[
        ("CRM_SYNC_HUBSPOT_TOKEN", &token),
        ("CRM_SYNC_HUBSPOT_BASE_URL", &base_url),
        // The test's whole load fits the budget; the budget itself is tested with the adapter.
        ("CRM_SYNC_HUBSPOT_RATE_LIMIT", "2000/1s"),
        ("CRM_SYNC_HUBSPOT_TIMEOUT", "2s"),
        // A short ladder (about 6 s): events from the outage's first seconds run out of rungs.
        ("SWITCHBOARD_RETRY_DELAYS", "1s,2s,3s"),
        ("CRM_SYNC_STAGE_CHURNED", "churned"),
    ]);
    let crm = TestService::start_in(&crm_sync::def(), &prefix, &crm_vars).await;

    // 1,000 sign-ups through identity while the CRM answers 503: none waits on or fails because
    // of it.
    let mut client = IdentityClient::new(identity.channel.clone());
    let started = std::time::Instant::now();
    let mut accounts = Vec::with_capacity(SIGNUPS);
    for chunk in (0..SIGNUPS).collect::<Vec<_>>().chunks(8) {
        let calls = chunk.iter().map(|i| {
            let mut client = client.clone();
            let req = SignUpRequest {
                email: format!("User{i}@Outage.test"),
                password: "correct horse battery staple".into(),
                name: format!("User {i}"),
                account_name: format!("Outage Co {i}"),
            };
            async move { client.sign_up(service_request(req)).await }
        });
        for r in futures::future::join_all(calls).await {
            let grant = r.expect("sign-up succeeds while the CRM is down").into_inner();
            accounts.push(grant.user.unwrap().account_id);
        }
        if accounts.len() == SIGNUPS / 2 {
            // Halfway: the CRM stops answering at all (connections refused).
            fake.stop().await;
        }
    }
    let signup_secs = started.elapsed().as_secs_f64();
    println!("{SIGNUPS} sign-ups during the CRM outage in {signup_secs:.1} s ({:.0}/s)", SIGNUPS as f64 / signup_secs);
    let _ = &mut client;

    // Meanwhile the portal can see why: pending, with the next attempt's time and the CRM's error.
    let s = wait_for(WAIT, "a sync shown pending with its next attempt", || async {
        status(&crm, &accounts[SIGNUPS - 1])
            .await
            .into_iter()
            .find(|c| c.status == pb::SyncStatus::Pending as i32 && c.next_attempt_at.is_some())
    })
    .await;
    assert!(s.last_error.contains("CRM unavailable"), "{s:?}");

    // The early ones run out of rungs and are parked with their reason.
    let parked = wait_for(WAIT, "some sign-ups parked in the DLQ", || async { Some(crm.dlq_depth().await).filter(|n| *n > 0) }).await;
    let ops = sb_bus::dlq::Ops::connect(crm.bus.clone()).await.unwrap();
    let shown = ops.show(crm_sync::SERVICE, 5).await.unwrap();
    ops.close().await;
    assert!(shown.iter().all(|p| p.reason.starts_with("retries exhausted after 4 attempts: CRM unavailable")), "{shown:?}");

    // The CRM comes back: the events still on the ladder get through by themselves.
    fake.recover();
    fake.restart().await.unwrap();
    let parked_total = wait_for(WAIT, "the ladder drained (everything synced or parked)", || async {
        let info = crm.info().await;
        let depth = crm.dlq_depth().await;
        let synced: i64 =
            sqlx::query_scalar("SELECT count(*) FROM crm_users WHERE status = 'synced'").fetch_one(&crm.db.pool).await.unwrap();
        (synced + i64::from(depth) == SIGNUPS as i64 && info.outbox_pending == 0).then_some(depth)
    })
    .await;
    assert!(parked_total >= parked, "parked {parked_total} (at least {parked})");
    let failed: Vec<String> =
        sqlx::query_scalar("SELECT last_error FROM crm_users WHERE status = 'failed'").fetch_all(&crm.db.pool).await.unwrap();
    assert_eq!(failed.len(), parked_total as usize, "each parked sign-up is shown failed");
    println!("{parked_total} sign-ups parked; replaying");

    // One replay delivers each parked event exactly once.
    assert_eq!(crm.replay_dlq().await, parked_total as usize);
    wait_for(WAIT, "every user synced", || async {
        let synced: i64 =
            sqlx::query_scalar("SELECT count(*) FROM crm_users WHERE status = 'synced'").fetch_one(&crm.db.pool).await.unwrap();
        (synced == SIGNUPS as i64).then_some(())
    })
    .await;
    let parked_again: Vec<String> = crm.parked().await.into_iter().map(|p| p.reason).collect();
    assert!(parked_again.is_empty(), "replayed events parked again: {parked_again:?}");

    // Paying customers move to `customer`; then the CRM holds exactly one contact per person.
    for account in accounts.iter().take(100) {
        crm.publish(&access_changed(account, AccessStatus::Pending, AccessStatus::Active, Some(format!("cus_{}", &account[..8])))).await;
    }
    wait_for(WAIT, "100 customers", || async {
        (fake.contacts().iter().filter(|c| c.lifecycle_stage() == "customer").count() == 100).then_some(())
    })
    .await;
    let contacts = fake.contacts();
    let emails: HashSet<String> = contacts.iter().map(|c| c.email().to_owned()).collect();
    assert_eq!((contacts.len(), emails.len()), (SIGNUPS, SIGNUPS), "0 lost, 0 duplicated");
    assert!((0..SIGNUPS).all(|i| emails.contains(&format!("user{i}@outage.test"))));
    let leads = contacts.iter().filter(|c| c.lifecycle_stage() == "lead").count();
    assert_eq!(leads, SIGNUPS - 100);
    let paying = contacts.iter().find(|c| c.lifecycle_stage() == "customer").unwrap();
    assert_eq!(paying.prop("switchboard_plan"), Some("pro"));

    // Ten of them cancel: HubSpot only moves a stage forward by itself, so each contact's stage is
    // cleared, then set to the configured churn stage.
    fake.clear_requests();
    for account in accounts.iter().take(10) {
        crm.publish(&access_changed(account, AccessStatus::Active, AccessStatus::Revoked, None)).await;
    }
    wait_for(WAIT, "10 churned", || async {
        (fake.contacts().iter().filter(|c| c.lifecycle_stage() == "churned").count() == 10).then_some(())
    })
    .await;
    let patches: Vec<_> = fake.requests().into_iter().filter(|r| r.method == "PATCH").collect();
    let clears = patches.iter().filter(|r| r.prop("lifecyclestage") == Some("")).count();
    let sets = patches.iter().filter(|r| r.prop("lifecyclestage") == Some("churned")).count();
    assert_eq!((clears, sets), (10, 10), "clear then set for each: {patches:?}");
    assert_eq!(fake.contact_count(), SIGNUPS);

    crm.stop().await;
    identity.stop().await;
    delete_prefix(&prefix).await;
    fake.shutdown().await;
}
