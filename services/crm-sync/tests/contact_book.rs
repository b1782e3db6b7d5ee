//! crm-sync on its embedded contact book (no HubSpot token), fed over the real bus (real
//! PostgreSQL and RabbitMQ): one contact per person, found before created, linked, and moved
//! through lifecycle stages by billing's access changes.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use sb_bus::{Envelope, catalog};
use sb_proto::crm::v1::{self as pb, crm_client::CrmClient};
use sb_testkit::{service::TestService, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn signed_up(user: Uuid, account: Uuid, email: &str) -> Envelope {
    Envelope::new(
        "identity",
        catalog::IDENTITY_USER_SIGNED_UP,
        json!({"email": email, "name": "Ann Example", "account_name": "Example Co", "role": "customer"}),
    )
    .with_account(account)
    .with_user(user)
}

fn access_changed(account: Uuid, to: &str, since: &str) -> Envelope {
    let data = json!({"account_id": account, "from": "none", "to": to, "plan": "pro", "stripe_customer_id": "cus_book", "since": since});
    Envelope::new("billing", catalog::BILLING_ACCESS_CHANGED, data).with_account(account)
}

async fn book(svc: &TestService) -> Vec<(i64, String, String, String)> {
    sqlx::query_as("SELECT id, email, lifecycle_stage, plan FROM contact_book ORDER BY id").fetch_all(&svc.db.pool).await.unwrap()
}

async fn status(svc: &TestService, account: Uuid) -> Vec<pb::ContactStatus> {
    let mut req = tonic::Request::new(pb::GetContactStatusRequest { account_id: account.to_string() });
    sb_runtime::caller::attach(req.metadata_mut(), &sb_testkit::service::SERVICE_TOKEN.to_owned().into(), None);
    CrmClient::new(svc.channel.clone()).get_contact_status(req).await.unwrap().into_inner().contacts
}

async fn wait_synced(svc: &TestService, account: Uuid, stage: &str) -> pb::ContactStatus {
    wait_for(WAIT, &format!("synced as {stage}"), || async {
        status(svc, account).await.into_iter().find(|c| c.status == pb::SyncStatus::Synced as i32 && c.lifecycle_stage == stage)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signup_becomes_one_lead_and_payment_and_cancellation_move_its_stage() {
    let svc = TestService::start(&crm_sync::def(), &[]).await;
    let (user, account) = (Uuid::now_v7(), Uuid::now_v7());
    svc.publish(&signed_up(user, account, "ann@example.com")).await;
    let s = wait_synced(&svc, account, "lead").await;
    assert_eq!((s.crm.as_str(), s.email.as_str()), ("contact_book", "ann@example.com"));
    let contacts = book(&svc).await;
    assert_eq!(contacts.len(), 1);
    assert_eq!(s.crm_contact_id, contacts[0].0.to_string());

    svc.publish(&access_changed(account, "active", "2026-11-26T10:00:00Z")).await;
    wait_synced(&svc, account, "customer").await;
    // An older change arriving late does not move the stage back.
    svc.publish(&access_changed(account, "pending", "2026-11-26T09:00:00Z")).await;
    svc.publish(&access_changed(account, "revoked", "2026-11-26T11:00:00Z")).await;
    wait_synced(&svc, account, "other").await;
    let contacts = book(&svc).await;
    assert_eq!(contacts.len(), 1, "still one contact: {contacts:?}");
    assert_eq!((contacts[0].2.as_str(), contacts[0].3.as_str()), ("other", "pro"));

    let synced: Vec<Value> = sqlx::query_scalar("SELECT payload FROM sb_outbox WHERE event_type = 'crm.contact.synced.v1' ORDER BY seq")
        .fetch_all(&svc.db.pool)
        .await
        .unwrap();
    let stages: Vec<&str> = synced.iter().map(|p| p["data"]["lifecycle_stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["lead", "customer", "other"]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_contact_with_the_same_email_in_any_case_is_linked_not_duplicated() {
    let svc = TestService::start(&crm_sync::def(), &[]).await;
    let existing: i64 = sqlx::query_scalar(
        "INSERT INTO contact_book (email, name, lifecycle_stage) VALUES ('bob@example.com', 'Bob', 'subscriber') RETURNING id",
    )
    .fetch_one(&svc.db.pool)
    .await
    .unwrap();
    let account = Uuid::now_v7();
    svc.publish(&signed_up(Uuid::now_v7(), account, "Bob@Example.COM")).await;
    let s = wait_synced(&svc, account, "lead").await;
    assert_eq!(s.crm_contact_id, existing.to_string());
    assert_eq!(book(&svc).await.len(), 1);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_events_end_in_one_contact() {
    let svc = TestService::start(&crm_sync::def(), &[]).await;
    let (user, account) = (Uuid::now_v7(), Uuid::now_v7());
    // The same sign-up delivered ten times (distinct envelopes, so the inbox cannot absorb them),
    // plus two other users of the account with the same address in another case.
    let mut events: Vec<Envelope> = (0..10).map(|_| signed_up(user, account, "carol@example.com")).collect();
    events.push(signed_up(Uuid::now_v7(), account, "CAROL@example.com"));
    events.push(signed_up(Uuid::now_v7(), account, "Carol@Example.com"));
    futures::future::join_all(events.iter().map(|e| svc.publish(e))).await;
    wait_for(WAIT, "all three users synced", || async {
        let s = status(&svc, account).await;
        (s.len() == 3 && s.iter().all(|c| c.status == pb::SyncStatus::Synced as i32)).then_some(())
    })
    .await;
    wait_for(WAIT, "every delivery handled", || async { (svc.info().await.applied >= 12).then_some(()) }).await;
    let contacts = book(&svc).await;
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    let ids: Vec<String> = status(&svc, account).await.into_iter().map(|c| c.crm_contact_id).collect();
    assert!(ids.iter().all(|i| *i == contacts[0].0.to_string()), "all linked to the one contact: {ids:?}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_are_not_contacts_and_a_signup_without_email_is_parked() {
    let svc = TestService::start(&crm_sync::def(), &[]).await;
    let account = Uuid::now_v7();
    let staff = Envelope::new("identity", catalog::IDENTITY_USER_SIGNED_UP, json!({"email": "agent@switchboard.test", "role": "agent"}))
        .with_account(account)
        .with_user(Uuid::now_v7());
    svc.publish(&staff).await;
    let bad = Envelope::new("identity", catalog::IDENTITY_USER_SIGNED_UP, json!({"name": "No Email"}))
        .with_account(account)
        .with_user(Uuid::now_v7());
    svc.publish(&bad).await;
    wait_for(WAIT, "the bad one parked", || async { (svc.dlq_depth().await == 1).then_some(()) }).await;
    assert!(book(&svc).await.is_empty());
    let s = status(&svc, account).await;
    assert_eq!(s.len(), 1, "the failed sign-up is visible: {s:?}");
    assert_eq!((s[0].status, s[0].last_error.as_str()), (pb::SyncStatus::Failed as i32, "signed_up without an email"));
    // An access change with a status billing never sends is parked too, not read as "lead".
    svc.publish(&access_changed(Uuid::now_v7(), "exploded", "2026-11-26T10:00:00Z")).await;
    wait_for(WAIT, "the bad access change parked", || async { (svc.dlq_depth().await == 2).then_some(()) }).await;
    svc.stop().await;
}
