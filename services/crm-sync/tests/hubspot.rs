//! The real HubSpot adapter against sb_testkit's fake HubSpot (HubSpot's wire format and rules):
//! what is sent, how a create race ends in one contact, how stages move backwards, and how every
//! kind of failure is classified — no service, database or broker involved.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crm_sync::{
    crm::{Contact, ContactProps, Crm, CrmError},
    domain::{AccessStatus, AccountId, LifecycleStage},
    hubspot::{HubSpot, RateBudget},
};
use sb_testkit::hubspot::{FakeHubSpot, Recorded};
use secrecy::SecretString;
use serde_json::json;

const SEARCH: &str = "/crm/v3/objects/contacts/search";
const CONTACTS: &str = "/crm/v3/objects/contacts";

fn adapter_with(fake: &FakeHubSpot, budget: RateBudget, timeout: Duration) -> HubSpot {
    HubSpot::new(&fake.base_url(), SecretString::from(fake.token()), budget, timeout).unwrap()
}

fn adapter(fake: &FakeHubSpot) -> HubSpot {
    adapter_with(fake, RateBudget::new(10_000, Duration::from_secs(1)), Duration::from_secs(5))
}

fn props(stage: &str) -> ContactProps {
    ContactProps {
        name: "Ada Lovelace".into(),
        account_id: Some("0190b6a4-0000-7000-8000-000000000001".parse::<AccountId>().unwrap()),
        account_name: "Analytical Engines Ltd".into(),
        plan: String::new(),
        stripe_customer_id: String::new(),
        access_status: Some(AccessStatus::None),
        lifecycle_stage: Some(LifecycleStage::parse(stage).unwrap()),
    }
}

fn transient(r: Result<impl std::fmt::Debug, CrmError>) -> (String, Option<Duration>) {
    match r {
        Err(CrmError::Transient { reason, retry_after }) => (reason, retry_after),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

fn permanent(r: Result<impl std::fmt::Debug, CrmError>) -> String {
    match r {
        Err(CrmError::Permanent(reason)) => reason,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn gap(a: &Recorded, b: &Recorded) -> Duration {
    b.at.duration_since(a.at)
}

#[tokio::test]
async fn search_create_update_round_trip() {
    let fake = FakeHubSpot::start().await.unwrap();
    let hs = adapter(&fake);
    assert_eq!(hs.name(), "hubspot");

    assert_eq!(hs.find_by_email("ada@example.com").await.unwrap(), None);
    let search = fake.requests_to("POST", SEARCH).pop().unwrap();
    assert!(search.authorized && search.status == 200);
    let body = search.body.unwrap();
    assert_eq!(body["filterGroups"], json!([{"filters": [{"propertyName": "email", "operator": "EQ", "value": "ada@example.com"}]}]));
    assert_eq!(body["properties"], json!(["email", "lifecyclestage"]));
    assert_eq!(body["limit"], json!(1));

    let created = hs.create("Ada@Example.com", &props("lead")).await.unwrap();
    assert_eq!((created.email.as_str(), created.lifecycle_stage.as_str()), ("ada@example.com", "lead"));
    let post = fake.requests_to("POST", CONTACTS).pop().unwrap();
    assert_eq!(post.status, 201);
    assert_eq!(
        post.prop_names(),
        ["company", "email", "firstname", "lastname", "lifecyclestage", "switchboard_access_status", "switchboard_account_id"],
        "only known properties are sent (plan and Stripe id are still unknown)"
    );
    let stored = fake.contact("ada@example.com").unwrap();
    assert_eq!(stored.id, created.id);
    assert_eq!((stored.prop("firstname"), stored.prop("lastname")), (Some("Ada"), Some("Lovelace")));
    assert_eq!(stored.prop("company"), Some("Analytical Engines Ltd"));
    assert_eq!(stored.prop("switchboard_account_id"), Some("0190b6a4-0000-7000-8000-000000000001"));

    let found = hs.find_by_email("ada@example.com").await.unwrap().unwrap();
    assert_eq!(found, created);

    let paid = ContactProps {
        plan: "pro".into(),
        stripe_customer_id: "cus_123".into(),
        access_status: Some(AccessStatus::Active),
        ..props("customer")
    };
    let updated = hs.update(&found, &paid).await.unwrap();
    assert_eq!(updated, Contact { lifecycle_stage: "customer".into(), ..created.clone() });
    let patches = fake.requests_to("PATCH", &format!("{CONTACTS}/{}", created.id));
    assert_eq!(patches.len(), 1, "a forward move is one PATCH");
    assert_eq!(patches[0].prop("lifecyclestage"), Some("customer"));
    assert!(patches[0].prop("email").is_none(), "the email is never rewritten");
    let stored = fake.contact("ada@example.com").unwrap();
    assert_eq!(
        (
            stored.lifecycle_stage(),
            stored.prop("switchboard_plan"),
            stored.prop("stripe_customer_id"),
            stored.prop("switchboard_access_status")
        ),
        ("customer", Some("pro"), Some("cus_123"), Some("active"))
    );

    // Empty = unknown: nothing to send, nothing sent.
    let before = fake.request_count();
    assert_eq!(hs.update(&updated, &ContactProps::default()).await.unwrap(), updated);
    assert_eq!(fake.request_count(), before);
    assert!(fake.requests().iter().all(|r| r.authorized));
}

#[tokio::test]
async fn an_existing_contact_is_found_whatever_the_case_of_its_email() {
    let fake = FakeHubSpot::start().await.unwrap();
    let id = fake.put_contact("Grace.Hopper@Example.com", &[("lifecyclestage", "customer"), ("firstname", "Grace")]);
    let hs = adapter(&fake);
    for spelling in ["grace.hopper@example.com", "GRACE.HOPPER@EXAMPLE.COM", "  Grace.Hopper@example.COM "] {
        let c = hs.find_by_email(spelling).await.unwrap().unwrap();
        assert_eq!((c.id.as_str(), c.email.as_str(), c.lifecycle_stage.as_str()), (id.as_str(), "grace.hopper@example.com", "customer"));
    }
    assert!(
        fake.requests_to("POST", SEARCH)
            .iter()
            .all(|r| r.body.as_ref().unwrap()["filterGroups"][0]["filters"][0]["value"] == json!("grace.hopper@example.com"))
    );
    // Creating it again links to it rather than duplicating it.
    let linked = hs.create("GRACE.HOPPER@example.com", &props("customer")).await.unwrap();
    assert_eq!(linked.id, id);
    assert_eq!(fake.contact_count(), 1);
    assert_eq!(fake.contact(&linked.email).unwrap().prop("lastname"), Some("Lovelace"), "our properties were applied");
}

#[tokio::test]
async fn concurrent_creates_of_one_email_end_in_one_contact() {
    let fake = FakeHubSpot::start().await.unwrap();
    let hs = Arc::new(adapter(&fake));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let hs = hs.clone();
            let email = if i % 2 == 0 { "Race@Example.com" } else { "race@example.COM" };
            tokio::spawn(async move { hs.create(email, &props("lead")).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every task got the same contact: {ids:?}");
    assert_eq!(fake.contact_count(), 1);
    let creates = fake.requests_to("POST", CONTACTS);
    assert_eq!(creates.len(), 10);
    assert_eq!(creates.iter().filter(|r| r.status == 201).count(), 1);
    assert_eq!(creates.iter().filter(|r| r.status == 409).count(), 9, "the others hit HubSpot's 409 and linked");
    let reads = fake.requests_to("GET", &format!("{CONTACTS}/{}", ids[0]));
    assert_eq!(reads.len(), 9, "each loser read the existing contact by the id in the 409 message");
    assert!(fake.requests().iter().all(|r| r.method != "PATCH"), "same properties: nothing to update");

    // A loser with other properties makes the contact its own (a backward stage by clear-then-set).
    let c = hs.create("race@example.com", &props("subscriber")).await.unwrap();
    assert_eq!((c.id.as_str(), c.lifecycle_stage.as_str()), (ids[0].as_str(), "subscriber"));
    assert_eq!(fake.contact("race@example.com").unwrap().lifecycle_stage(), "subscriber");
    assert_eq!(fake.contact_count(), 1);
}

#[tokio::test]
async fn a_backward_stage_move_clears_then_sets() {
    let fake = FakeHubSpot::start().await.unwrap();
    fake.define_stage("churned");
    let hs = adapter(&fake);
    let c = hs.create("churn@example.com", &props("customer")).await.unwrap();
    let path = format!("{CONTACTS}/{}", c.id);

    let back = hs.update(&c, &props("lead")).await.unwrap();
    assert_eq!(back.lifecycle_stage, "lead");
    let patches = fake.requests_to("PATCH", &path);
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(patches[0].body, Some(json!({"properties": {"lifecyclestage": ""}})), "first only the stage is cleared");
    assert_eq!(patches[1].prop("lifecyclestage"), Some("lead"));
    assert!(patches.iter().all(|p| p.status == 200));
    assert_eq!(fake.contact("churn@example.com").unwrap().lifecycle_stage(), "lead");

    // A custom stage is not in HubSpot's default order: cleared first to be safe, then set.
    fake.clear_requests();
    let churned = hs.update(&hs.update(&back, &props("customer")).await.unwrap(), &props("churned")).await.unwrap();
    assert_eq!(churned.lifecycle_stage, "churned");
    let stages: Vec<_> = fake.requests_to("PATCH", &path).iter().map(|p| p.prop("lifecyclestage").unwrap().to_owned()).collect();
    assert_eq!(stages, ["customer", "", "churned"]);

    // HubSpot's rule is real in the fake: a backward move without the clear (a stale contact) is
    // refused with a validation error, which is permanent and carries HubSpot's message.
    let stale = Contact { lifecycle_stage: "lead".into(), ..c };
    let reason = permanent(hs.update(&stale, &props("customer")).await);
    assert!(reason.starts_with("Property values were not valid:") && reason.contains("can only move forward"), "{reason}");
    assert_eq!(fake.contact("churn@example.com").unwrap().lifecycle_stage(), "churned");
}

#[tokio::test]
async fn rate_limit_retry_after_is_honoured() {
    let fake = FakeHubSpot::start().await.unwrap();
    let hs = adapter(&fake);

    // Short: waited out in-process, then sent once more.
    fake.set_retry_after(1);
    fake.fail_next(1, 429);
    assert_eq!(hs.find_by_email("wait@example.com").await.unwrap(), None);
    let searches = fake.requests_to("POST", SEARCH);
    assert_eq!(searches.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    assert!(
        gap(&searches[0], &searches[1]) >= Duration::from_secs(1),
        "the retry came {:?} after the 429",
        gap(&searches[0], &searches[1])
    );

    // Short but twice in a row: one in-process retry only, then the ladder with HubSpot's wait.
    fake.clear_requests();
    fake.fail_next(2, 429);
    let (reason, retry_after) = transient(hs.find_by_email("wait@example.com").await);
    assert_eq!(retry_after, Some(Duration::from_secs(1)));
    assert!(reason.contains("ten_secondly_rolling"), "{reason}");
    assert_eq!(fake.request_count(), 2);

    // Long: not waited here; the retry ladder gets HubSpot's Retry-After.
    fake.clear_requests();
    fake.set_retry_after(30);
    fake.fail_next(1, 429);
    let started = Instant::now();
    let (_, retry_after) = transient(hs.create("wait@example.com", &props("lead")).await);
    assert_eq!(retry_after, Some(Duration::from_secs(30)));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.request_count(), 1);
    assert_eq!(fake.contact_count(), 0);

    // HubSpot's own rolling limit answers 429 too; the adapter rides it out.
    fake.set_retry_after(1);
    fake.limit_rate(2, Duration::from_millis(800));
    for i in 0..3 {
        hs.find_by_email(&format!("limit{i}@example.com")).await.unwrap();
    }
    fake.no_rate_limit();
}

#[tokio::test]
async fn outages_are_transient() {
    let fake = FakeHubSpot::start().await.unwrap();
    let hs = adapter_with(&fake, RateBudget::default(), Duration::from_millis(400));
    let c = hs.create("down@example.com", &props("lead")).await.unwrap();

    fake.fail_next(1, 503);
    let (reason, retry_after) = transient(hs.find_by_email("down@example.com").await);
    assert!(reason.contains("503") && retry_after.is_none(), "{reason}");
    fake.fail_always(500);
    transient(hs.update(&c, &props("customer")).await);
    transient(hs.create("other@example.com", &props("lead")).await);
    fake.recover();
    assert_eq!(hs.find_by_email("down@example.com").await.unwrap().unwrap().id, c.id);

    // Accepted and never answered: the request timeout turns it into a transient failure.
    fake.hang_next(1);
    let started = Instant::now();
    let (reason, _) = transient(hs.find_by_email("down@example.com").await);
    assert!(reason.contains("did not answer"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(3));
    fake.recover();

    // Nothing listening: refused connections are transient; back on the same port, same contacts.
    let port = fake.addr().port();
    fake.stop().await;
    let (reason, _) = transient(hs.find_by_email("down@example.com").await);
    assert!(reason.starts_with("cannot connect to HubSpot"), "{reason}");
    transient(hs.create("other@example.com", &props("lead")).await);
    fake.restart().await.unwrap();
    assert_eq!(fake.addr().port(), port);
    assert_eq!(hs.find_by_email("down@example.com").await.unwrap().unwrap().id, c.id);
    assert_eq!(fake.contact_count(), 1);
}

#[tokio::test]
async fn client_errors_are_permanent_with_hubspots_message() {
    let fake = FakeHubSpot::start().await.unwrap();
    let hs = adapter(&fake);

    let reason = permanent(hs.create("not-an-email", &props("lead")).await);
    assert!(reason.starts_with("Property values were not valid") && reason.contains("Email address not-an-email is invalid"), "{reason}");
    let answered = fake.requests_to("POST", CONTACTS).pop().unwrap();
    assert_eq!(answered.status, 400);

    // A stage the portal does not have.
    let reason = permanent(hs.create("stage@example.com", &props("churned")).await);
    assert!(reason.contains("churned was not one of the allowed options"), "{reason}");
    fake.define_stage("churned");
    assert_eq!(hs.create("stage@example.com", &props("churned")).await.unwrap().lifecycle_stage, "churned");

    // A contact that does not exist.
    let ghost = Contact { id: "999999".into(), email: "ghost@example.com".into(), lifecycle_stage: String::new() };
    assert_eq!(permanent(hs.update(&ghost, &props("lead")).await), "resource not found");
    let odd = Contact { id: "../../owners".into(), ..ghost };
    assert!(permanent(hs.update(&odd, &props("lead")).await).contains("not a HubSpot contact id"));

    assert!(permanent(hs.find_by_email("  ").await).contains("no email"));

    // A 400 from any endpoint is permanent too.
    fake.fail_next(1, 400);
    permanent(hs.find_by_email("stage@example.com").await);
}

#[tokio::test]
async fn the_rate_budget_spreads_requests_over_windows() {
    let fake = FakeHubSpot::start().await.unwrap();
    let hs = Arc::new(adapter_with(&fake, RateBudget::parse("5/1s").unwrap(), Duration::from_secs(5)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let hs = hs.clone();
            tokio::spawn(async move { hs.find_by_email(&format!("budget{i}@example.com")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    let mut at: Vec<Instant> = fake.requests().iter().map(|r| r.at).collect();
    at.sort();
    assert_eq!(at.len(), 12, "every request waited for a slot; none failed");
    let span = at[11].duration_since(at[0]);
    // 5 at once, 5 a window later, 2 another window later.
    assert!(span >= Duration::from_millis(1950), "12 requests at 5/1s spanned only {span:?}");
    for w in at.windows(6) {
        assert!(w[5].duration_since(w[0]) >= Duration::from_millis(950), "6 requests within {:?}", w[5].duration_since(w[0]));
    }
    assert!(elapsed < Duration::from_secs(4), "waiting, not serialising: {elapsed:?}");
}

#[tokio::test]
async fn the_token_never_appears_in_errors_or_debug_output() {
    const TOKEN: &str = "pat-na1-7f3e9c2a-super-secret-token";
    let fake = FakeHubSpot::start().await.unwrap();
    fake.set_token(TOKEN);
    let hs = adapter_with(&fake, RateBudget::default(), Duration::from_millis(300));
    let debug = format!("{hs:?}");
    assert!(!debug.contains(TOKEN) && debug.contains("redacted"), "{debug}");
    let c = hs.create("secret@example.com", &props("lead")).await.unwrap();

    let mut errors = Vec::new();
    let wrong =
        HubSpot::new(&fake.base_url(), SecretString::from("pat-na1-wrong-token".to_owned()), RateBudget::default(), Duration::from_secs(2))
            .unwrap();
    let rejected = wrong.find_by_email("secret@example.com").await.unwrap_err();
    assert_eq!(rejected, CrmError::Permanent("HubSpot rejected the token (401 Unauthorized)".into()));
    assert!(!fake.requests().last().unwrap().authorized);
    errors.push(rejected);
    fake.fail_next(1, 403);
    errors.push(hs.find_by_email("secret@example.com").await.unwrap_err());
    errors.push(hs.create("bad email@example.com", &props("lead")).await.unwrap_err());
    fake.fail_next(1, 503);
    errors.push(hs.update(&c, &props("customer")).await.unwrap_err());
    fake.set_retry_after(60);
    fake.fail_next(1, 429);
    errors.push(hs.find_by_email("secret@example.com").await.unwrap_err());
    fake.hang_next(1);
    errors.push(hs.find_by_email("secret@example.com").await.unwrap_err());
    fake.recover();
    fake.stop().await;
    errors.push(hs.find_by_email("secret@example.com").await.unwrap_err());
    assert_eq!(errors.len(), 7);
    for e in &errors {
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(TOKEN) && !text.contains("super-secret"), "{text}");
        }
    }
    assert!(matches!(&errors[1], CrmError::Permanent(r) if r.starts_with("HubSpot rejected the token")));
}

#[tokio::test]
async fn a_thousand_contacts_from_concurrent_tasks() {
    let fake = FakeHubSpot::start().await.unwrap();
    let hs = Arc::new(adapter(&fake));
    let tasks: Vec<_> = (0..50)
        .map(|t| {
            let hs = hs.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let email = format!("user{t:02}-{i:02}@example.com");
                    if hs.find_by_email(&email).await.unwrap().is_none() {
                        hs.create(&email, &props(if i % 2 == 0 { "lead" } else { "customer" })).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(fake.contact_count(), 1000);
    let contacts = fake.contacts();
    assert_eq!(contacts.iter().filter(|c| c.lifecycle_stage() == "customer").count(), 500);
    let found = hs.find_by_email("USER49-19@example.com").await.unwrap().unwrap();
    assert_eq!(found.lifecycle_stage, "customer");
    assert_eq!(fake.request_count(), 2001);
}
