//! billing's real Stripe adapter (async-stripe) against a fake Stripe speaking Stripe's wire format
//! (`sb_testkit::stripe::FakeStripe`): checkout and portal sessions, the refetch that makes
//! Stripe's answer win over an event's payload (and waits out a Stripe outage on the retry
//! ladder), and reconciliation through the library and the `billing reconcile` command.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::{collections::BTreeSet, process::Command, time::Duration};

use billing::domain::AccountId;
use common::{BillingTest, PUBLIC_URL, TestService, as_service, as_user, customer, impersonating, now, staff, stripe_event};
use sb_bus::{Event, events::AccessChanged};
use sb_proto::billing::v1::{self as pb, AccessStatus};
use sb_runtime::caller::{Principal, Role, UserId};
use sb_stripe::objects::{self, CheckoutSpec, SubscriptionSpec};
use sb_testkit::{service::WAIT, stripe::FakeStripe, wait_for};
use serde_json::{Value, json};
use tonic::Code;

const STARTER_PRICE: &str = "price_switchboard_starter";
const PRO_PRICE: &str = "price_switchboard_pro";

async fn start_with_fake() -> (FakeStripe, TestService) {
    let stripe = FakeStripe::start().await.unwrap();
    // Only the configured key is accepted: proves billing sends it.
    stripe.require_key(common::STRIPE_KEY);
    let billing = common::start_with_stripe(&stripe, &[]).await;
    (stripe, billing)
}

fn sub(id: &str, cus: &str, account: &str, status: &str, price: &str, created: i64) -> Value {
    objects::subscription(&SubscriptionSpec {
        id,
        customer: cus,
        account_id: account,
        price,
        status,
        created,
        period_end: created + 30 * 86_400,
    })
}

/// A subscription whose own metadata names no account.
fn bare_sub(id: &str, cus: &str, status: &str, created: i64) -> Value {
    objects::with(sub(id, cus, "", status, PRO_PRICE, created), json!({"metadata": {}}))
}

fn canceled(at: i64) -> Value {
    json!({"status": "canceled", "canceled_at": at, "ended_at": at})
}

fn checkout_req(account: AccountId, plan: &str, email: &str) -> pb::CreateCheckoutSessionRequest {
    pb::CreateCheckoutSessionRequest { account_id: account.to_string(), plan: plan.into(), customer_email: email.into() }
}

fn portal_req(account: AccountId) -> pb::CreatePortalSessionRequest {
    pb::CreatePortalSessionRequest { account_id: account.to_string() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_goes_through_stripe_for_the_accounts_own_users_only() {
    let (stripe, billing) = start_with_fake().await;
    let mut c = billing.client();
    let account = AccountId::new();

    // Refused before Stripe is asked: another tenant, an impersonation session, staff, a bad plan.
    let err = c.create_checkout_session(as_user(checkout_req(account, "", ""), &customer(AccountId::new()))).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = c.create_checkout_session(as_user(checkout_req(account, "", ""), &impersonating(account))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = c.create_checkout_session(as_user(checkout_req(account, "", ""), &staff(Role::Admin))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = c.create_checkout_session(as_user(checkout_req(account, "gold", ""), &customer(account))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(stripe.requests().is_empty(), "Stripe was called: {:?}", stripe.requests());
    assert_eq!(billing.access(account).await.status, AccessStatus::None as i32);

    // Stripe rate-limits: the caller is told to come back, nothing is recorded.
    stripe.fail_next(1, 429);
    let err = c.create_checkout_session(as_user(checkout_req(account, "pro", "ada@example.com"), &customer(account))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(billing.access(account).await.status, AccessStatus::None as i32);
    stripe.clear_requests();

    let session =
        c.create_checkout_session(as_user(checkout_req(account, "pro", "ada@example.com"), &customer(account))).await.unwrap().into_inner();
    let sent = stripe.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!((sent.len(), stripe.requests().len()), (1, 1), "{:?}", stripe.requests());
    let r = &sent[0];
    assert!(r.authorized && r.status == 200 && r.stripe_version.is_some(), "{r:?}");
    let a = account.to_string();
    let (success, cancel) = (format!("{PUBLIC_URL}/billing/local/done"), format!("{PUBLIC_URL}/billing/local/cancelled"));
    for (k, v) in [
        ("mode", "subscription"),
        ("client_reference_id", a.as_str()),
        ("line_items[0][price]", PRO_PRICE),
        ("line_items[0][quantity]", "1"),
        ("metadata[account_id]", a.as_str()),
        ("subscription_data[metadata][account_id]", a.as_str()),
        ("success_url", success.as_str()),
        ("cancel_url", cancel.as_str()),
        ("customer_email", "ada@example.com"),
    ] {
        assert_eq!(r.param(k), Some(v), "{k} in {:?}", r.form);
    }
    assert_eq!(r.params_under("line_items[").len(), 2, "one line item: {:?}", r.form);
    assert_eq!(r.param("customer"), None, "no customer yet");

    let created = stripe.checkout_sessions().pop().unwrap();
    assert_eq!(session.id, created["id"].as_str().unwrap());
    assert_eq!(session.url, created["url"].as_str().unwrap());
    assert!(session.url.starts_with(&stripe.base_url()), "{}", session.url);
    assert_eq!(session.expires_at.map(|t| t.seconds), created["expires_at"].as_i64());
    assert_eq!(session.plan, "pro");

    let access = billing.access(account).await;
    assert_eq!(access.status, AccessStatus::Pending as i32, "{access:?}");
    assert!(access.reason.contains(&session.id), "{access:?}");
    // The customer's own view says the same.
    let own = c.get_access(as_user(pb::GetAccessRequest { account_id: a.clone() }, &customer(account))).await.unwrap().into_inner();
    assert_eq!(own.status, AccessStatus::Pending as i32);
    billing.stop().await;
    stripe.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripes_answer_wins_over_a_stale_event() {
    let (stripe, billing) = start_with_fake().await;
    let account = AccountId::new();
    let a = account.to_string();
    let t0 = now() - 60;
    stripe.put_subscription(sub("sub_refetch", "cus_refetch", &a, "active", STARTER_PRICE, t0));
    let (first, ev) = stripe_event("customer.subscription.created", t0, sub("sub_refetch", "cus_refetch", &a, "active", STARTER_PRICE, t0));
    billing.publish_stripe_event(ev).await;
    let access = billing.wait_access(account, AccessStatus::Active).await;
    assert_eq!(
        (access.plan.as_str(), access.cause_event_id.as_str(), access.stripe_customer_id.as_str()),
        ("starter", first.as_str(), "cus_refetch")
    );

    // Cancelled in Stripe; an event still saying "active" (a delayed retry of an older state)
    // arrives: billing reads the subscription back and Stripe's "canceled" is what counts.
    stripe.update_subscription("sub_refetch", canceled(t0 + 30));
    let (stale, ev) =
        stripe_event("customer.subscription.updated", t0 + 30, sub("sub_refetch", "cus_refetch", &a, "active", STARTER_PRICE, t0));
    billing.publish_stripe_event(ev).await;
    let access = billing.wait_access(account, AccessStatus::Revoked).await;
    assert_eq!((access.cause_event_id.as_str(), access.reason.as_str()), (stale.as_str(), "subscription canceled"), "{access:?}");
    assert_eq!(billing.event_outcome(&stale).await.as_deref(), Some("applied"));
    assert_eq!(stripe.requests_to("GET", "/v1/subscriptions/sub_refetch").len(), 2, "one read-back per event");

    let view = billing.client().get_billing(as_service(pb::GetBillingRequest { account_id: a })).await.unwrap().into_inner();
    assert_eq!(view.subscriptions.len(), 1);
    assert_eq!(view.subscriptions[0].status, "canceled");
    let moves: Vec<(i32, i32)> = view.history.iter().rev().map(|h| (h.from, h.to)).collect();
    assert_eq!(
        moves,
        [(AccessStatus::None as i32, AccessStatus::Active as i32), (AccessStatus::Active as i32, AccessStatus::Revoked as i32)]
    );
    let changes = billing.outbox(AccessChanged::TYPE).await;
    assert_eq!(changes.iter().map(|d| d["to"].as_str().unwrap()).collect::<Vec<_>>(), ["active", "revoked"]);
    assert!(changes.iter().all(|d| d["account_id"] == account.to_string()));
    billing.stop().await;
    stripe.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_out_a_stripe_outage_on_the_retry_ladder() {
    let (stripe, billing) = start_with_fake().await;
    let account = AccountId::new();
    let a = account.to_string();
    let t0 = now() - 60;
    stripe.put_subscription(sub("sub_outage", "cus_outage", &a, "active", PRO_PRICE, t0));

    // Stripe is down: the read-back fails with 503, the event goes up the retry ladder.
    stripe.fail_always(503);
    let (id, ev) = stripe_event("customer.subscription.created", t0, sub("sub_outage", "cus_outage", &a, "active", PRO_PRICE, t0));
    billing.publish_stripe_event(ev).await;
    wait_for(WAIT, "a retried read-back while Stripe is down", || async {
        let tries = stripe.requests_to("GET", "/v1/subscriptions/sub_outage");
        (tries.len() >= 2 && tries.iter().all(|r| r.status == 503)).then_some(())
    })
    .await;
    let info = billing.info().await;
    assert!(info.retried >= 1 && info.parked == 0, "{info:?}");
    assert_eq!(billing.access(account).await.status, AccessStatus::None as i32, "nothing applied while Stripe was down");
    assert_eq!(billing.event_outcome(&id).await, None, "the failed attempt left nothing behind");

    stripe.recover();
    let access = billing.wait_access(account, AccessStatus::Active).await;
    assert_eq!((access.plan.as_str(), access.cause_event_id.as_str()), ("pro", id.as_str()));
    assert_eq!(billing.event_outcome(&id).await.as_deref(), Some("applied"));

    // A 429 is waited out the same way; what Stripe says once it answers is applied.
    stripe.update_subscription("sub_outage", json!({"status": "past_due"}));
    stripe.fail_next(1, 429);
    let (late, ev) = stripe_event("customer.subscription.updated", t0 + 10, sub("sub_outage", "cus_outage", &a, "past_due", PRO_PRICE, t0));
    billing.publish_stripe_event(ev).await;
    let access = billing.wait_access(account, AccessStatus::PastDue).await;
    assert_eq!(access.cause_event_id, late);
    assert!(access.grace_until.is_some());
    assert_eq!(stripe.requests().iter().filter(|r| r.status == 429).count(), 1);

    // The consumer counts an event after its transaction commits: the access can be read first.
    let info = wait_for(WAIT, "the second event counted as applied", || async {
        let info = billing.info().await;
        (info.applied >= 2).then_some(info)
    })
    .await;
    assert!(info.retried >= 2 && info.parked == 0, "{info:?}");
    assert_eq!(billing.dlq_depth().await, 0);
    let changes = billing.outbox(AccessChanged::TYPE).await;
    assert_eq!(changes.iter().map(|d| d["to"].as_str().unwrap()).collect::<Vec<_>>(), ["active", "past_due"]);
    billing.stop().await;
    stripe.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sessions_need_a_customer_and_come_from_stripe() {
    let (stripe, billing) = start_with_fake().await;
    let mut c = billing.client();
    let account = AccountId::new();
    let a = account.to_string();

    let err = c.create_portal_session(as_user(portal_req(account), &customer(account))).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(stripe.requests().is_empty());

    // Checkout completed in Stripe: the customer is linked and access granted.
    let t0 = now() - 60;
    stripe.put_customer(objects::customer("cus_portal", "ada@example.com", &a, t0));
    stripe.put_subscription(sub("sub_portal", "cus_portal", &a, "active", STARTER_PRICE, t0));
    let completed = objects::checkout_session(&CheckoutSpec {
        id: "cs_test_portal",
        account_id: &a,
        customer: "cus_portal",
        subscription: "sub_portal",
        created: t0,
        amount_total: 1900,
        email: "ada@example.com",
    });
    let (_, ev) = stripe_event("checkout.session.completed", t0, completed);
    billing.publish_stripe_event(ev).await;
    let access = billing.wait_access(account, AccessStatus::Active).await;
    assert_eq!(access.stripe_customer_id, "cus_portal");

    for (who, code) in [(customer(AccountId::new()), Code::NotFound), (impersonating(account), Code::PermissionDenied)] {
        let err = c.create_portal_session(as_user(portal_req(account), &who)).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }
    assert!(stripe.requests_to("POST", "/v1/billing_portal/sessions").is_empty());

    let portal = c.create_portal_session(as_user(portal_req(account), &customer(account))).await.unwrap().into_inner();
    let sent = stripe.requests_to("POST", "/v1/billing_portal/sessions");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].param("customer"), Some("cus_portal"));
    assert_eq!(sent[0].param("return_url"), Some(format!("{PUBLIC_URL}/v1/me").as_str()));
    assert_eq!(portal.url, stripe.portal_sessions()[0]["url"].as_str().unwrap());
    assert!(portal.url.starts_with(&stripe.base_url()));

    // Active: no second checkout.
    let err = c.create_checkout_session(as_user(checkout_req(account, "", ""), &customer(account))).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Cancelled; a new checkout reuses the Stripe customer instead of prefilling an email.
    stripe.update_subscription("sub_portal", canceled(t0 + 20));
    let (_, ev) = stripe_event(
        "customer.subscription.deleted",
        t0 + 20,
        objects::with(sub("sub_portal", "cus_portal", &a, "active", STARTER_PRICE, t0), canceled(t0 + 20)),
    );
    billing.publish_stripe_event(ev).await;
    billing.wait_access(account, AccessStatus::Revoked).await;
    c.create_checkout_session(as_user(checkout_req(account, "", "ada@example.com"), &customer(account))).await.unwrap();
    let r = stripe.requests_to("POST", "/v1/checkout/sessions").pop().unwrap();
    assert_eq!((r.status, r.param("customer"), r.param("customer_email")), (200, Some("cus_portal"), None), "{r:?}");
    billing.wait_access(account, AccessStatus::Pending).await;
    billing.stop().await;
    stripe.shutdown().await;
}

/// Billing's state for reconciliation: `synced` subscriptions billing learned from events while
/// Stripe agreed, plus drift of every kind.
struct Drifted {
    synced: usize,
    /// Billing: active; Stripe: canceled (a missed `customer.subscription.deleted`). Oldest, so on
    /// the last page of Stripe's list.
    canceled: AccountId,
    /// Unknown to billing; the subscription's metadata names the account.
    by_metadata: AccountId,
    /// Unknown to billing; only the Stripe customer's metadata names the account.
    by_customer: AccountId,
}

async fn drift(stripe: &FakeStripe, billing: &TestService, synced: usize) -> Drifted {
    let d = Drifted { synced, canceled: AccountId::new(), by_metadata: AccountId::new(), by_customer: AccountId::new() };
    let t0 = now() - 3600;
    let mut known = vec![
        ("sub_drift_canceled".to_owned(), "cus_drift_canceled".to_owned(), d.canceled, t0),
        ("sub_gone".to_owned(), "cus_gone".to_owned(), AccountId::new(), t0 + 1),
    ];
    for i in 0..synced {
        known.push((format!("sub_sync_{i:03}"), format!("cus_sync_{i:03}"), AccountId::new(), t0 + 10 + i as i64));
    }
    for (id, cus, account, created) in &known {
        stripe.put_subscription(sub(id, cus, &account.to_string(), "active", PRO_PRICE, *created));
    }
    for (id, cus, account, created) in &known {
        let (_, ev) =
            stripe_event("customer.subscription.created", *created, sub(id, cus, &account.to_string(), "active", PRO_PRICE, *created));
        billing.publish_stripe_event(ev).await;
    }
    let expected = known.len() as i64;
    wait_for(Duration::from_secs(60), "every subscription event applied", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE outcome = 'applied'").fetch_one(&billing.db.pool).await.unwrap();
        (n == expected).then_some(())
    })
    .await;
    billing.wait_access(d.canceled, AccessStatus::Active).await;

    // What billing then missed.
    stripe.update_subscription("sub_drift_canceled", canceled(t0 + 5000));
    stripe.remove_subscription("sub_gone");
    stripe.put_subscription(sub("sub_drift_meta", "cus_drift_meta", &d.by_metadata.to_string(), "active", STARTER_PRICE, t0 + 400));
    stripe.put_subscription(bare_sub("sub_drift_cus", "cus_drift_cus", "active", t0 + 500));
    stripe.put_customer(objects::customer("cus_drift_cus", "c@example.com", &d.by_customer.to_string(), t0));
    stripe.put_subscription(bare_sub("sub_drift_orphan", "cus_drift_orphan", "trialing", t0 + 600));
    d
}

/// (subscription, billing's status, Stripe's status, account, repaired).
type DriftRow = (String, Option<String>, String, Option<AccountId>, bool);

fn drift_rows(report: &billing::service::Report) -> BTreeSet<DriftRow> {
    let word = |s: billing::domain::SubscriptionStatus| s.as_str().to_owned();
    report.drift.iter().map(|d| (d.subscription_id.clone(), d.ours.map(word), word(d.stripe), d.account_id, d.repaired)).collect()
}

async fn snapshot(billing: &TestService) -> Vec<i64> {
    let mut out = Vec::new();
    for table in ["customers", "subscriptions", "access", "access_changes", "sb_test_outbox"] {
        out.push(
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&billing.db.pool).await.unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_pages_through_stripe_and_repairs_drift() {
    let (stripe, billing) = start_with_fake().await;
    let d = drift(&stripe, &billing, 120).await;
    let cfg = billing::config::BillingConfig::from(&sb_runtime::config::Env::with_lookup(billing::SERVICE, {
        let vars = billing.vars().to_vec();
        move |k| vars.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }))
    .unwrap();
    let b = billing::service::Billing::new(billing.db.pool.clone(), cfg).unwrap();
    let expected = |repaired: bool| -> BTreeSet<DriftRow> {
        [
            ("sub_drift_canceled".to_owned(), Some("active".to_owned()), "canceled".to_owned(), Some(d.canceled), repaired),
            ("sub_drift_meta".to_owned(), None, "active".to_owned(), Some(d.by_metadata), repaired),
            ("sub_drift_cus".to_owned(), None, "active".to_owned(), Some(d.by_customer), repaired),
            ("sub_drift_orphan".to_owned(), None, "trialing".to_owned(), None, repaired),
        ]
        .into_iter()
        .collect()
    };
    let listed = d.synced + 4;
    assert!(listed > 100, "more than one page");

    // Dry run: reports, changes nothing.
    stripe.clear_requests();
    let before = snapshot(&billing).await;
    let report = b.reconcile(false).await.unwrap();
    assert_eq!(report.checked, listed);
    assert_eq!(drift_rows(&report), expected(false));
    assert_eq!(report.unknown_to_stripe, ["sub_gone"]);
    assert_eq!(snapshot(&billing).await, before, "a dry run writes nothing");
    assert_eq!(billing.access(d.canceled).await.status, AccessStatus::Active as i32);
    assert_eq!(billing.access(d.by_metadata).await.status, AccessStatus::None as i32);
    let pages = stripe.requests_to("GET", "/v1/subscriptions");
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert!(pages.iter().all(|p| p.param("status") == Some("all") && p.param("limit") == Some("100")));
    assert_eq!((pages[0].param("starting_after"), pages[1].param("starting_after").is_some()), (None, true));

    // Stripe's customer endpoint down: the run stops instead of repairing subscriptions without
    // their account (which later runs would no longer see as drift). The orphan, first in
    // Stripe's order, needs the lookup, so nothing was written.
    stripe.fail_always_on("/v1/customers/", 503);
    let err = b.reconcile(true).await.unwrap_err();
    assert!(err.to_string().contains("reading customer cus_drift_orphan from Stripe"), "{err:#}");
    assert_eq!(snapshot(&billing).await, before);
    stripe.recover();

    // Apply: repaired, access re-derived and announced.
    let report = b.reconcile(true).await.unwrap();
    assert_eq!(report.checked, listed);
    assert_eq!(drift_rows(&report), expected(true));
    let revoked = billing.access(d.canceled).await;
    assert_eq!((revoked.status, revoked.reason.as_str()), (AccessStatus::Revoked as i32, "subscription canceled"), "{revoked:?}");
    for (account, customer) in [(d.by_metadata, "cus_drift_meta"), (d.by_customer, "cus_drift_cus")] {
        let access = billing.access(account).await;
        assert_eq!((access.status, access.stripe_customer_id.as_str()), (AccessStatus::Active as i32, customer), "{access:?}");
        assert_eq!(access.cause_event_type, "reconciliation");
    }
    assert_eq!(billing.access(d.by_metadata).await.plan, "starter");
    let changes = billing.outbox(AccessChanged::TYPE).await;
    let from_reconcile: BTreeSet<(String, String, String)> = changes
        .iter()
        .filter(|c| c["cause_event_type"] == "reconciliation" || c["to"] == "revoked")
        .map(|c| {
            (c["account_id"].as_str().unwrap().to_owned(), c["from"].as_str().unwrap().to_owned(), c["to"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        from_reconcile,
        [
            (d.canceled.to_string(), "active".to_owned(), "revoked".to_owned()),
            (d.by_metadata.to_string(), "none".to_owned(), "active".to_owned()),
            (d.by_customer.to_string(), "none".to_owned(), "active".to_owned()),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(changes.len(), d.synced + 2 + 3, "one change per event-made account, three from the repair");

    // Nothing left to repair; what Stripe does not list is still only reported.
    let again = b.reconcile(true).await.unwrap();
    assert_eq!((again.checked, again.drift.len()), (listed, 0), "{:?}", again.drift);
    assert_eq!(again.unknown_to_stripe, ["sub_gone"]);
    billing.stop().await;
    stripe.shutdown().await;
}

fn reconcile_cmd(billing: &TestService, extra_env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_billing"));
    cmd.env_clear().arg("reconcile").args(args);
    for (k, v) in billing.vars() {
        cmd.env(k, v);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_command_reports_repairs_and_refuses_without_a_key() {
    let (stripe, billing) = start_with_fake().await;
    let d = drift(&stripe, &billing, 3).await;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // No key: exit 2 with a clear message, Stripe never asked.
    let mut no_key = Command::new(env!("CARGO_BIN_EXE_billing"));
    no_key.env_clear().arg("reconcile");
    for (k, v) in billing.vars().iter().filter(|(k, _)| !k.starts_with("SWITCHBOARD_STRIPE_")) {
        no_key.env(k, v);
    }
    stripe.clear_requests();
    let out = no_key.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("billing reconcile: ") && text(&out.stderr).contains("set SWITCHBOARD_STRIPE_API_KEY"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    // A key that is not a secret key is a configuration error naming the variable, not echoing it.
    let out = reconcile_cmd(&billing, &[("SWITCHBOARD_STRIPE_API_KEY", "pk_test_publishable")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("SWITCHBOARD_STRIPE_API_KEY") && !text(&out.stderr).contains("pk_test_publishable"),
        "{}",
        text(&out.stderr)
    );
    assert!(stripe.requests().is_empty());

    // Stripe down: exit 2, nothing changed.
    stripe.fail_always(503);
    let out = reconcile_cmd(&billing, &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("listing subscriptions from Stripe"), "{}", text(&out.stderr));
    stripe.recover();
    assert_eq!(billing.access(d.canceled).await.status, AccessStatus::Active as i32);

    // --dry-run --json: machine-readable report, nothing repaired.
    let out = reconcile_cmd(&billing, &[], &["--dry-run", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checked"], d.synced + 4);
    assert_eq!(report["unknown_to_stripe"], json!(["sub_gone"]));
    let drift = report["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 4, "{report}");
    assert!(drift.iter().all(|x| x["repaired"] == false));
    let canceled = drift.iter().find(|x| x["subscription_id"] == "sub_drift_canceled").unwrap();
    assert_eq!(
        (&canceled["ours"], &canceled["stripe"], &canceled["account_id"]),
        (&json!("active"), &json!("canceled"), &json!(d.canceled))
    );
    assert_eq!(billing.access(d.canceled).await.status, AccessStatus::Active as i32);

    // Apply, in words.
    let out = reconcile_cmd(&billing, &[], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(&format!("checked {} Stripe subscriptions; 4 differed from billing\n", d.synced + 4)), "{stdout}");
    assert!(
        stdout.contains(&format!("sub_drift_canceled (cus_drift_canceled, {}): billing active → Stripe canceled: repaired", d.canceled)),
        "{stdout}"
    );
    assert!(stdout.contains("sub_drift_orphan (cus_drift_orphan, no account): billing unknown → Stripe trialing: repaired"), "{stdout}");
    assert!(stdout.contains("sub_gone: known to billing but not listed by Stripe (left as is)"), "{stdout}");
    billing.wait_access(d.canceled, AccessStatus::Revoked).await;
    billing.wait_access(d.by_customer, AccessStatus::Active).await;

    let out = reconcile_cmd(&billing, &[], &[]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).starts_with(&format!("checked {} Stripe subscriptions; 0 differed from billing\n", d.synced + 4)),
        "{}",
        text(&out.stdout)
    );
    billing.stop().await;
    stripe.shutdown().await;
}

fn refund_req(account: AccountId, invoice: &str, amount: i64, reason: &str, key: &str) -> pb::RefundPaymentRequest {
    pb::RefundPaymentRequest {
        account_id: account.to_string(),
        invoice_id: invoice.into(),
        amount,
        reason: reason.into(),
        idempotency_key: key.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_refunds_through_stripe_once_per_key_and_access_follows_stripes_charge_refunded() {
    let (stripe, billing) = start_with_fake().await;
    let mut c = billing.client();
    let account = AccountId::new();
    let a = account.to_string();
    let t0 = now() - 60;
    // Paid in Stripe: the subscription, its invoice (paid through a payment intent), the checkout.
    stripe.put_customer(objects::customer("cus_refund", "ada@example.com", &a, t0));
    stripe.put_subscription(sub("sub_refund", "cus_refund", &a, "active", STARTER_PRICE, t0));
    stripe.put_invoice_payment("in_refund", "pi_refund", "ch_refund", 1900);
    let completed = objects::checkout_session(&CheckoutSpec {
        id: "cs_test_refund",
        account_id: &a,
        customer: "cus_refund",
        subscription: "sub_refund",
        created: t0,
        amount_total: 1900,
        email: "ada@example.com",
    });
    billing.publish_stripe_event(stripe_event("checkout.session.completed", t0, completed).1).await;
    for (id, paid) in [("in_refund", true), ("in_unpaid", false), ("in_elsewhere", true)] {
        let invoice = objects::invoice(&objects::InvoiceSpec {
            id,
            customer: "cus_refund",
            subscription: "sub_refund",
            account_id: &a,
            status: if paid { "paid" } else { "open" },
            created: if paid { t0 } else { t0 - 30 },
            amount: 1900,
            attempt_count: 1,
            price: STARTER_PRICE,
        });
        let (event_type, at) = if paid { ("invoice.paid", t0) } else { ("invoice.payment_failed", t0 - 30) };
        billing.publish_stripe_event(stripe_event(event_type, at, invoice).1).await;
    }
    billing.wait_access(account, AccessStatus::Active).await;
    wait_for(WAIT, "the three invoices", || {
        let mut c = billing.client();
        async move {
            let view = c.get_billing(as_service(pb::GetBillingRequest { account_id: account.to_string() })).await.ok()?.into_inner();
            (view.invoices.len() == 3).then_some(())
        }
    })
    .await;
    stripe.clear_requests();
    let admin = staff(Role::Admin);

    // Refused before Stripe is asked.
    let refusals = [
        (refund_req(account, "in_refund", 0, "duplicate charge", "k0"), staff(Role::Agent), Code::PermissionDenied),
        (refund_req(account, "in_refund", 0, "duplicate charge", "k0"), customer(account), Code::PermissionDenied),
        (
            refund_req(account, "in_refund", 0, "duplicate charge", "k0"),
            Principal { impersonator: Some(UserId::new()), ..admin.clone() },
            Code::PermissionDenied,
        ),
        (refund_req(account, "in_refund", 0, "  ", "k0"), admin.clone(), Code::InvalidArgument),
        (refund_req(account, "in_refund", -5, "duplicate charge", "k0"), admin.clone(), Code::InvalidArgument),
        (refund_req(account, "in_refund", 0, "duplicate charge", ""), admin.clone(), Code::InvalidArgument),
        (refund_req(account, "in_refund", 1901, "duplicate charge", "k0"), admin.clone(), Code::InvalidArgument),
        (refund_req(account, "in_nope", 0, "duplicate charge", "k0"), admin.clone(), Code::NotFound),
        (refund_req(AccountId::new(), "in_refund", 0, "duplicate charge", "k0"), admin.clone(), Code::NotFound),
        (refund_req(account, "in_unpaid", 0, "duplicate charge", "k0"), admin.clone(), Code::FailedPrecondition),
    ];
    for (req, who, code) in refusals {
        let err = c.refund_payment(as_user(req.clone(), &who)).await.unwrap_err();
        assert_eq!(err.code(), code, "{req:?} as {who:?}: {err:?}");
    }
    assert!(stripe.requests().is_empty(), "Stripe was asked: {:?}", stripe.requests());

    // Stripe is down: the intent stays recorded as requested; asking again with the same key sends
    // the same Idempotency-Key.
    stripe.fail_next_on("/v1/refunds", 1, 503);
    let err = c.refund_payment(as_user(refund_req(account, "in_refund", 500, "double charge", "k1"), &admin)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let view = c.get_billing(as_service(pb::GetBillingRequest { account_id: a.clone() })).await.unwrap().into_inner();
    assert_eq!((view.refunds.len(), view.refunds[0].status.as_str()), (1, "requested"), "{:?}", view.refunds);
    let first = c.refund_payment(as_user(refund_req(account, "in_refund", 500, "double charge", "k1"), &admin)).await.unwrap().into_inner();
    assert_eq!((first.status.as_str(), first.amount, first.charge_id.as_str()), ("succeeded", 500, "ch_refund"), "{first:?}");
    assert_eq!(first.id, view.refunds[0].id);
    let sent = stripe.requests_to("POST", "/v1/refunds");
    assert_eq!(sent.len(), 2, "{sent:?}");
    for r in &sent {
        assert_eq!(r.idempotency_key.as_deref(), Some(first.id.as_str()), "{r:?}");
        assert_eq!(
            (r.param("payment_intent"), r.param("amount"), r.param("reason")),
            (Some("pi_refund"), Some("500"), Some("requested_by_customer"))
        );
        assert_eq!((r.param("metadata[account_id]"), r.param("metadata[reason]")), (Some(a.as_str()), Some("double charge")));
    }
    assert_eq!(stripe.refunds().len(), 1);

    // A double click on "refund the rest": two requests at once with one key make one refund.
    let ask = || {
        let mut c = billing.client();
        let admin = admin.clone();
        async move { c.refund_payment(as_user(refund_req(account, "in_refund", 0, "customer left", "k2"), &admin)).await }
    };
    let (one, two) = tokio::join!(ask(), ask());
    let (one, two) = (one.unwrap().into_inner(), two.unwrap().into_inner());
    assert_eq!(one.id, two.id);
    assert_eq!(one.amount, 1400, "the rest of the payment");
    assert_eq!(stripe.refunds().len(), 2, "{:?}", stripe.refunds());
    // Nothing is left; a key reused for another refund is refused.
    let err = c.refund_payment(as_user(refund_req(account, "in_refund", 0, "again", "k3"), &admin)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = c.refund_payment(as_user(refund_req(account, "in_elsewhere", 0, "again", "k2"), &admin)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Stripe refuses (it knows no payment of this invoice): recorded as failed, with why.
    let refused = c.refund_payment(as_user(refund_req(account, "in_elsewhere", 0, "goodwill", "k4"), &admin)).await.unwrap().into_inner();
    assert_eq!(refused.status, "failed", "{refused:?}");
    assert!(refused.failure.contains("no paid payment"), "{refused:?}");
    assert_eq!(stripe.refunds().len(), 2);

    // Access follows Stripe's charge.refunded (full refund, default policy): revoked.
    let charge = objects::charge("ch_refund", "cus_refund", 1900, 1900, now());
    billing.publish_stripe_event(stripe_event("charge.refunded", now(), charge).1).await;
    let access = billing.wait_access(account, AccessStatus::Revoked).await;
    assert_eq!(access.cause_event_type, "charge.refunded");

    // The customer sees the refunds, without the staff's reasons.
    let own = c.get_billing(as_user(pb::GetBillingRequest { account_id: a.clone() }, &customer(account))).await.unwrap().into_inner();
    assert_eq!(own.refunds.len(), 3);
    assert!(own.refunds.iter().all(|r| r.reason.is_empty() && r.requested_by.is_empty()), "{:?}", own.refunds);
    let staff_view = c.get_billing(as_user(pb::GetBillingRequest { account_id: a }, &staff(Role::Agent))).await.unwrap().into_inner();
    assert_eq!(staff_view.refunds[0].reason, "goodwill");
    assert_eq!(staff_view.refunds[0].requested_by, admin.user_id.to_string());
    billing.stop().await;
    stripe.shutdown().await;
}
