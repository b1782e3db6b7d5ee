//! crm-sync on its embedded contact book (no HubSpot token), fed over the real bus (real
//! PostgreSQL and RabbitMQ): one contact per person, found before created, linked, renamed with
//! the user, and moved through lifecycle stages by billing's access changes; unreadable events
//! parked with the field named; who may read what.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use sb_bus::{
    Envelope, Event,
    events::{AccessChanged, UserSignedUp, UserUpdated},
};
use sb_proto::crm::v1::{self as pb, crm_client::CrmClient};
use sb_runtime::caller::Principal;
use sb_testkit::{
    service::{TestService, as_service, as_user},
    wait_for,
};
use sb_types::{AccessStatus, AccountId, Email, Role, UserId};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn signed_up(user: UserId, account: AccountId, email: &str) -> Envelope {
    Envelope::of(&UserSignedUp {
        user_id: user,
        account_id: account,
        email: Email::parse(email).unwrap(),
        name: "Ann Example".into(),
        account_name: "Example Co".into(),
        role: Role::Customer,
    })
}

fn access_changed(account: AccountId, to: AccessStatus, since: &str) -> Envelope {
    Envelope::of(&AccessChanged {
        account_id: account,
        from: AccessStatus::None,
        to,
        plan: "pro".into(),
        entitlements: vec!["portal".into()],
        reason: "test".into(),
        cause_event_id: String::new(),
        cause_event_type: String::new(),
        stripe_customer_id: Some("cus_book".into()),
        grace_until: None,
        since: since.parse().unwrap(),
    })
}

/// (id, email, name, lifecycle stage, plan) of every contact in the book.
async fn book(svc: &TestService) -> Vec<(i64, String, String, String, String)> {
    sqlx::query_as("SELECT id, email, name, lifecycle_stage, plan FROM contact_book ORDER BY id").fetch_all(&svc.db.pool).await.unwrap()
}

async fn status(svc: &TestService, account: AccountId) -> Vec<pb::ContactStatus> {
    let req = as_service(pb::GetContactStatusRequest { account_id: account.to_string() });
    CrmClient::new(svc.channel.clone()).get_contact_status(req).await.unwrap().into_inner().contacts
}

async fn wait_synced(svc: &TestService, account: AccountId, stage: &str) -> pb::ContactStatus {
    wait_for(WAIT, &format!("synced as {stage}"), || async {
        status(svc, account).await.into_iter().find(|c| c.status == pb::SyncStatus::Synced as i32 && c.lifecycle_stage == stage)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signup_becomes_one_lead_and_payment_and_cancellation_move_its_stage() {
    let svc = TestService::start(&crm_sync::def(), &[]).await;
    let (user, account) = (UserId::new(), AccountId::new());
    svc.publish(&signed_up(user, account, "ann@example.com")).await;
    let s = wait_synced(&svc, account, "lead").await;
    assert_eq!((s.crm.as_str(), s.email.as_str()), ("contact_book", "ann@example.com"));
    let contacts = book(&svc).await;
    assert_eq!(contacts.len(), 1);
    assert_eq!(s.crm_contact_id, contacts[0].0.to_string());
    let (account_id, account_name, access): (String, String, String) =
        sqlx::query_as("SELECT account_id, account_name, access_status FROM contact_book").fetch_one(&svc.db.pool).await.unwrap();
    assert_eq!((account_id, account_name.as_str(), access.as_str()), (account.to_string(), "Example Co", "none"));

    svc.publish(&access_changed(account, AccessStatus::Active, "2026-11-26T10:00:00Z")).await;
    wait_synced(&svc, account, "customer").await;
    // An older change arriving late does not move the stage back.
    svc.publish(&access_changed(account, AccessStatus::Pending, "2026-11-26T09:00:00Z")).await;
    svc.publish(&access_changed(account, AccessStatus::Revoked, "2026-11-26T11:00:00Z")).await;
    wait_synced(&svc, account, "other").await;
    wait_for(WAIT, "every event handled", || async { (svc.info().await.applied >= 4).then_some(()) }).await;
    let contacts = book(&svc).await;
    assert_eq!(contacts.len(), 1, "still one contact: {contacts:?}");
    assert_eq!((contacts[0].3.as_str(), contacts[0].4.as_str()), ("other", "pro"));
    assert_eq!(status(&svc, account).await[0].lifecycle_stage, "other", "the late, older change changed nothing");
    // crm-sync announces nothing (nobody consumed crm.contact.synced.v1).
    assert_eq!(svc.info().await.outbox_pending, 0);
    let published: i64 = sqlx::query_scalar("SELECT count(*) FROM sb_test_outbox").fetch_one(&svc.db.pool).await.unwrap();
    assert_eq!(published, 0);
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
    let account = AccountId::new();
    svc.publish(&signed_up(UserId::new(), account, "Bob@Example.COM")).await;
    let s = wait_synced(&svc, account, "lead").await;
    assert_eq!(s.crm_contact_id, existing.to_string());
    let contacts = book(&svc).await;
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].2, "Ann Example", "the linked contact holds the user's properties");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_events_end_in_one_contact() {
    let svc = TestService::start(&crm_sync::def(), &[]).await;
    let (user, account) = (UserId::new(), AccountId::new());
    // The same sign-up delivered ten times (distinct envelopes, so the inbox cannot absorb them),
    // plus two other users of the account with the same address in another case.
    let mut events: Vec<Envelope> = (0..10).map(|_| signed_up(user, account, "carol@example.com")).collect();
    events.push(signed_up(UserId::new(), account, "CAROL@example.com"));
    events.push(signed_up(UserId::new(), account, "Carol@Example.com"));
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
    assert_eq!(svc.dlq_depth().await, 0);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_update_renames_the_contact_and_an_older_one_does_not() {
    let svc = TestService::start(&crm_sync::def(), &[]).await;
    let (user, account) = (UserId::new(), AccountId::new());
    svc.publish(&signed_up(user, account, "dora@example.com")).await;
    wait_synced(&svc, account, "lead").await;

    let updated = |name: &str| {
        Envelope::of(&UserUpdated {
            user_id: user,
            account_id: account,
            email: Email::parse("dora@example.com").unwrap(),
            name: name.into(),
        })
    };
    let renamed = updated("Dora Renamed");
    let mut older = updated("Dora Stale");
    older.occurred_at = renamed.occurred_at - chrono::Duration::seconds(5);
    svc.publish(&renamed).await;
    wait_for(WAIT, "the contact renamed", || async { book(&svc).await.into_iter().find(|c| c.2 == "Dora Renamed") }).await;
    svc.publish(&older).await;
    wait_for(WAIT, "both updates handled", || async { (svc.info().await.applied >= 3).then_some(()) }).await;
    assert_eq!(book(&svc).await[0].2, "Dora Renamed", "an update made earlier, delivered later, changes nothing");
    assert_eq!(status(&svc, account).await[0].status, pb::SyncStatus::Synced as i32);

    // A user crm-sync never had as a contact (staff) is left alone.
    let staff = Envelope::of(&UserUpdated {
        user_id: UserId::new(),
        account_id: AccountId::new(),
        email: Email::parse("agent@switchboard.test").unwrap(),
        name: "Agent".into(),
    });
    svc.publish(&staff).await;
    wait_for(WAIT, "the staff update handled", || async { (svc.info().await.applied >= 4).then_some(()) }).await;
    assert_eq!(book(&svc).await.len(), 1);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_are_not_contacts_and_unreadable_events_are_parked_with_the_field_named() {
    let svc = TestService::start(&crm_sync::def(), &[]).await;
    let account = AccountId::new();
    let staff = Envelope::of(&UserSignedUp {
        user_id: UserId::new(),
        account_id: account,
        email: Email::parse("agent@switchboard.test").unwrap(),
        name: "Agent".into(),
        account_name: "Founder's team".into(),
        role: Role::Agent,
    });
    svc.publish(&staff).await;
    // A sign-up without an email (no producer can send one; a hand-made message could).
    let no_email = json!({"user_id": UserId::new(), "account_id": account, "name": "No Email", "account_name": "X", "role": "customer"});
    svc.publish(&Envelope::raw("identity", UserSignedUp::TYPE, no_email).with_account(account.as_uuid())).await;
    // An access change with a status billing never sends: parked, not read as "lead".
    let mut exploded = serde_json::to_value(AccessChanged {
        account_id: account,
        from: AccessStatus::None,
        to: AccessStatus::Active,
        plan: "pro".into(),
        entitlements: Vec::new(),
        reason: String::new(),
        cause_event_id: String::new(),
        cause_event_type: String::new(),
        stripe_customer_id: None,
        grace_until: None,
        since: chrono::Utc::now(),
    })
    .unwrap();
    exploded["to"] = json!("exploded");
    svc.publish(&Envelope::raw("billing", AccessChanged::TYPE, exploded).with_account(account.as_uuid())).await;

    let parked = wait_for(WAIT, "both bad events parked", || async { Some(svc.parked().await).filter(|p| p.len() == 2) }).await;
    let reason = |ty: &str| parked.iter().find(|p| p.event_type.as_deref() == Some(ty)).map(|p| p.reason.clone()).unwrap();
    let access = reason(AccessChanged::TYPE);
    assert!(access.contains("to: unknown variant `exploded`"), "the reason names the field `to`: {access}");
    let signup = reason(UserSignedUp::TYPE);
    assert!(signup.contains("email"), "the reason names the field `email`: {signup}");
    wait_for(WAIT, "the staff sign-up handled", || async { (svc.info().await.applied >= 1).then_some(()) }).await;
    assert!(book(&svc).await.is_empty());
    assert!(status(&svc, account).await.is_empty(), "neither staff nor an unreadable sign-up is a contact");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_see_their_own_account_only_and_the_contact_book_is_for_staff() {
    let svc = TestService::start(&crm_sync::def(), &[]).await;
    let (user, account) = (UserId::new(), AccountId::new());
    svc.publish(&signed_up(user, account, "erin@example.com")).await;
    wait_synced(&svc, account, "lead").await;
    let mut crm = CrmClient::new(svc.channel.clone());
    let who = |role, account_id| Principal { user_id: UserId::new(), account_id, role, impersonator: None };
    let own = pb::GetContactStatusRequest { account_id: account.to_string() };

    let mine = crm.get_contact_status(as_user(own.clone(), &who(Role::Customer, account))).await.unwrap().into_inner();
    assert_eq!(mine.contacts.len(), 1);
    let other = crm.get_contact_status(as_user(own.clone(), &who(Role::Customer, AccountId::new()))).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound);
    assert_eq!(crm.get_contact_status(as_user(own.clone(), &who(Role::Agent, AccountId::new()))).await.unwrap().into_inner(), mine);
    let bad = crm.get_contact_status(as_service(pb::GetContactStatusRequest { account_id: "nope".into() })).await.unwrap_err();
    assert_eq!((bad.code(), bad.message()), (tonic::Code::InvalidArgument, "account_id: not a valid id (a UUID)"));
    let anonymous = crm.get_contact_status(tonic::Request::new(own)).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    let list = || pb::ListContactBookRequest { query: "erin".into(), limit: 0 };
    let denied = crm.list_contact_book(as_user(list(), &who(Role::Customer, account))).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let staff = crm.list_contact_book(as_user(list(), &who(Role::Admin, AccountId::new()))).await.unwrap().into_inner();
    assert_eq!(staff.contacts.iter().map(|c| c.email.as_str()).collect::<Vec<_>>(), ["erin@example.com"]);
    assert_eq!(staff.contacts[0].access_status, "none");
    assert_eq!(crm.list_contact_book(as_service(list())).await.unwrap().into_inner(), staff);
    svc.stop().await;
}
