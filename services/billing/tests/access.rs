//! Access from Stripe events, delivered over the real bus into billing (real PostgreSQL and
//! RabbitMQ; payloads in Stripe's own shapes): order does not matter, duplicates count once,
//! refunds and cancellations revoke, grace periods end, and events for a customer not linked yet
//! count once the link arrives.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use billing::domain::AccountId;
use common::*;
use sb_bus::{Event, events::StripeEventReceived};
use sb_proto::billing::v1::{self as pb, AccessStatus};
use sb_stripe::objects::{self, CheckoutSpec, InvoiceSpec, SubscriptionSpec};
use sb_testkit::{service::WAIT, wait_for};
use serde_json::{Value, json};

const PRO: &str = "price_switchboard_pro";

/// A subscription's life in Stripe events: checkout paid, a failed renewal, recovery, and
/// (when `cancel`) the end. Ids carry `tag`, so two accounts can live the same life.
fn lifecycle(account: AccountId, tag: &str, t0: i64, cancel: bool) -> Vec<(String, Value)> {
    let a = account.to_string();
    let (cus, sub) = (format!("cus_{tag}"), format!("sub_{tag}"));
    let subscription = |status: &str, t: i64| {
        objects::subscription(&SubscriptionSpec {
            id: &sub,
            customer: &cus,
            account_id: &a,
            price: PRO,
            status,
            created: t0,
            period_end: t + 30 * 86_400,
        })
    };
    let invoice = |n: u32, status: &str, t: i64| {
        objects::invoice(&InvoiceSpec {
            id: &format!("in_{tag}_{n}"),
            customer: &cus,
            subscription: &sub,
            account_id: &a,
            status,
            created: t,
            amount: 4900,
            attempt_count: 1,
            price: PRO,
        })
    };
    let session = objects::checkout_session(&CheckoutSpec {
        id: &format!("cs_{tag}"),
        account_id: &a,
        customer: &cus,
        subscription: &sub,
        created: t0 + 1,
        amount_total: 4900,
        email: "",
    });
    let mut events = vec![
        stripe_event("customer.subscription.created", t0, subscription("incomplete", t0)),
        stripe_event("checkout.session.completed", t0 + 1, session),
        stripe_event("invoice.paid", t0 + 1, invoice(1, "paid", t0 + 1)),
        stripe_event("customer.subscription.updated", t0 + 1, subscription("active", t0 + 1)),
        stripe_event("invoice.payment_failed", t0 + 100, invoice(2, "open", t0 + 100)),
        stripe_event("customer.subscription.updated", t0 + 100, subscription("past_due", t0 + 100)),
        stripe_event("invoice.paid", t0 + 200, invoice(2, "paid", t0 + 200)),
        stripe_event("customer.subscription.updated", t0 + 200, subscription("active", t0 + 200)),
    ];
    if cancel {
        events.push(stripe_event("customer.subscription.deleted", t0 + 300, subscription("canceled", t0 + 300)));
    }
    events
}

/// What an account's billing looks like, without the ids that differ between two accounts.
async fn state(b: &TestService, account: AccountId) -> Value {
    let v = b.client().get_billing(as_service(pb::GetBillingRequest { account_id: account.to_string() })).await.unwrap().into_inner();
    let a = v.access.unwrap();
    json!({
        // The cause may differ: the two accounts went through different transitions to get here.
        "access": [a.status, a.plan, a.reason, a.entitlements],
        "subscriptions": v.subscriptions.iter().map(|s| json!([s.status, s.plan, s.price_id, s.as_of.as_ref().map(|t| t.seconds)])).collect::<Vec<_>>(),
        "invoices": v.invoices.iter().map(|i| json!([i.status, i.amount_paid])).collect::<Vec<_>>(),
    })
}

async fn wait_applied(b: &TestService, ids: &[String]) {
    for id in ids {
        wait_for(WAIT, &format!("{id} recorded"), || async { b.event_outcome(id).await }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_reverse_order_end_in_the_same_state_as_in_order() {
    let b = start(&[]).await;
    let t0 = now() - 1_000;
    for cancel in [false, true] {
        let (forward, backward) = (AccountId::new(), AccountId::new());
        let tag = if cancel { "end" } else { "live" };
        // In order, each applied before the next is sent.
        for (id, ev) in lifecycle(forward, &format!("fwd_{tag}"), t0, cancel) {
            b.publish_stripe_event(ev).await;
            wait_applied(&b, &[id]).await;
        }
        // The same life for another account, all sent at once, newest first.
        let mut events = lifecycle(backward, &format!("bwd_{tag}"), t0, cancel);
        events.reverse();
        for (_, ev) in &events {
            b.publish_stripe_event(ev.clone()).await;
        }
        wait_applied(&b, &events.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()).await;

        let (f, r) = (state(&b, forward).await, state(&b, backward).await);
        assert_eq!(f, r, "in order vs reversed (cancel: {cancel})");
        let expected = if cancel { AccessStatus::Revoked } else { AccessStatus::Active };
        assert_eq!(f["access"][0], expected as i32, "{f}");
        assert_eq!(f["access"][1], "pro");
        assert_eq!(f["subscriptions"][0][0], if cancel { "canceled" } else { "active" });
        assert_eq!(f["invoices"], json!([["paid", 4900], ["paid", 4900]]), "the failed invoice was paid later: {f}");
    }
    assert_eq!(b.dlq_depth().await, 0);
    // The founder's alarm: payment → access delay, as a Prometheus histogram.
    let metrics = reqwest::get(format!("http://{}/metrics", b.http)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("billing_payment_to_access_seconds_bucket{le=\"1\"}"), "{metrics}");
    assert!(metrics.contains("billing_access_changes_total{to=\"revoked\"}"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_and_stripes_double_event_objects_have_one_effect() {
    let b = start(&[]).await;
    let account = AccountId::new();
    let a = account.to_string();
    let session = objects::checkout_session(&CheckoutSpec {
        id: "cs_dup",
        account_id: &a,
        customer: "cus_dup",
        subscription: "sub_dup",
        created: now(),
        amount_total: 1900,
        email: "",
    });
    let (id, ev) = stripe_event("checkout.session.completed", now(), session.clone());
    // The same event five times (as the gateway would forward retries it had not deduplicated),
    // and a second Event object Stripe created for the same change.
    for _ in 0..5 {
        b.publish_stripe_event(ev.clone()).await;
    }
    let (twin_id, twin) = stripe_event("checkout.session.completed", now(), session);
    b.publish_stripe_event(twin).await;
    b.wait_access(account, AccessStatus::Active).await;
    wait_applied(&b, &[id]).await;
    // The twin leaves no trace once processed: wait for the consumer to have taken all six.
    wait_for(WAIT, "all deliveries handled", || async { (b.info().await.applied + b.info().await.duplicates >= 6).then_some(()) }).await;
    assert_eq!(b.event_outcome(&twin_id).await, None, "the twin was recognised as the same change");

    let changes = b.outbox("billing.access.changed.v1").await;
    assert_eq!(changes.iter().filter(|c| c["to"] == "active").count(), 1, "{changes:?}");
    // A later, different update of the same object still applies.
    let sub = objects::subscription(&SubscriptionSpec {
        id: "sub_dup",
        customer: "cus_dup",
        account_id: &a,
        price: PRO,
        status: "canceled",
        created: now(),
        period_end: now(),
    });
    b.publish_stripe_event(stripe_event("customer.subscription.updated", now() + 5, sub).1).await;
    let access = b.wait_access(account, AccessStatus::Revoked).await;
    assert_eq!(access.reason, "subscription canceled");
    b.stop().await;
}

/// Stripe does not order its webhooks: the first invoice's `invoice.paid` can be applied before
/// `customer.subscription.created`. The access it grants names the plan from the invoice's line
/// at once, never "active" with no plan (and so no entitlements) in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_paid_before_its_subscription_event_grants_access_with_the_plan() {
    let b = start(&[]).await;
    let account = AccountId::new();
    let a = account.to_string();
    let t = now() - 60;
    let invoice = objects::invoice(&InvoiceSpec {
        id: "in_first",
        customer: "cus_first",
        subscription: "sub_first",
        account_id: &a,
        status: "paid",
        created: t,
        amount: 4900,
        attempt_count: 1,
        price: PRO,
    });
    b.publish_stripe_event(stripe_event("invoice.paid", t, invoice).1).await;
    let access = b.wait_access(account, AccessStatus::Active).await;
    assert_eq!(access.plan, "pro", "{access:?}");
    assert!(access.entitlements.iter().any(|e| e == "ai_assist"), "{access:?}");
    let changes = b.outbox("billing.access.changed.v1").await;
    assert!(changes.iter().all(|c| c["plan"] == "pro"), "a change without the plan was announced: {changes:?}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refund_revokes_access_and_a_partial_one_does_not() {
    let b = start(&[]).await;
    let account = AccountId::new();
    let a = account.to_string();
    let t = now() - 60;
    let session = objects::checkout_session(&CheckoutSpec {
        id: "cs_ref",
        account_id: &a,
        customer: "cus_ref",
        subscription: "sub_ref",
        created: t,
        amount_total: 4900,
        email: "",
    });
    b.publish_stripe_event(stripe_event("checkout.session.completed", t, session).1).await;
    b.wait_access(account, AccessStatus::Active).await;

    let (partial_id, partial) = stripe_event("charge.refunded", t + 10, objects::charge("ch_ref", "cus_ref", 4900, 100, t));
    b.publish_stripe_event(partial).await;
    wait_applied(&b, &[partial_id]).await;
    assert_eq!(b.access(account).await.status, AccessStatus::Active as i32, "a partial refund keeps access (policy full)");

    b.publish_stripe_event(stripe_event("charge.refunded", t + 20, objects::charge("ch_ref", "cus_ref", 4900, 4900, t)).1).await;
    let access = b.wait_access(account, AccessStatus::Revoked).await;
    assert_eq!((access.reason.as_str(), access.cause_event_type.as_str()), ("charge refunded", "charge.refunded"));
    let refunds = b.outbox("billing.refund.issued.v1").await;
    assert_eq!(refunds.iter().map(|r| r["full"].clone()).collect::<Vec<_>>(), [json!(false), json!(true)]);
    assert!(refunds.iter().all(|r| r["stripe_customer_id"] == "cus_ref"));
    b.stop().await;
}

/// A paid subscription-mode checkout (`cs_<tag>`, customer `cus_<tag>`, subscription
/// `sub_<tag>`) for `account`, applied: access is active when this returns.
async fn pay_checkout(b: &TestService, account: AccountId, tag: &str, at: i64, amount: i64) {
    let session = objects::checkout_session(&CheckoutSpec {
        id: &format!("cs_{tag}"),
        account_id: &account.to_string(),
        customer: &format!("cus_{tag}"),
        subscription: &format!("sub_{tag}"),
        created: at,
        amount_total: amount,
        email: "",
    });
    b.publish_stripe_event(stripe_event("checkout.session.completed", at, session).1).await;
    b.wait_access(account, AccessStatus::Active).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payment_keeps_access_for_the_grace_period_then_revokes_it() {
    let b = start(&[("BILLING_GRACE_PERIOD", "2s"), ("BILLING_GRACE_SWEEP_INTERVAL", "200ms")]).await;
    let account = AccountId::new();
    let a = account.to_string();
    let t = now();
    pay_checkout(&b, account, "grace", t - 5, 1900).await;
    let failed = objects::invoice(&InvoiceSpec {
        id: "in_grace",
        customer: "cus_grace",
        subscription: "sub_grace",
        account_id: &a,
        status: "open",
        created: t,
        amount: 1900,
        attempt_count: 1,
        price: PRO,
    });
    b.publish_stripe_event(stripe_event("invoice.payment_failed", t, failed).1).await;
    let past_due = b.wait_access(account, AccessStatus::PastDue).await;
    assert!(past_due.grace_until.is_some_and(|g| g.seconds == t + 2), "{past_due:?}");
    // The checkout named no price (no CreateCheckoutSession here); the failed invoice's line names it.
    assert_eq!(past_due.plan, "pro");
    assert!(past_due.entitlements.iter().any(|e| e == "ai_assist"), "access continues during the grace period: {past_due:?}");
    let failures = b.outbox("billing.payment.failed.v1").await;
    assert_eq!((failures.len(), failures[0]["invoice_id"].as_str()), (1, Some("in_grace")));

    let revoked = b.wait_access(account, AccessStatus::Revoked).await;
    assert_eq!(revoked.reason, "grace period ended");
    assert!(revoked.entitlements.is_empty());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_counts_from_the_first_failure_whatever_order_the_failures_arrive_in() {
    let b = start(&[("BILLING_GRACE_PERIOD", "1h")]).await;
    let account = AccountId::new();
    let a = account.to_string();
    let t = now();
    pay_checkout(&b, account, "spell", t - 500, 4900).await;
    let failed = |n: i64, at: i64| {
        objects::invoice(&InvoiceSpec {
            id: &format!("in_spell_{n}"),
            customer: "cus_spell",
            subscription: "sub_spell",
            account_id: &a,
            status: "open",
            created: at,
            amount: 4900,
            attempt_count: n,
            price: PRO,
        })
    };
    // The second failure arrives first, then the first one, older.
    for (n, at) in [(2, t), (1, t - 100)] {
        let (id, ev) = stripe_event("invoice.payment_failed", at, failed(n, at));
        b.publish_stripe_event(ev).await;
        wait_applied(&b, &[id]).await;
    }
    let access = b.wait_access(account, AccessStatus::PastDue).await;
    assert_eq!(access.grace_until.map(|g| g.seconds), Some(t - 100 + 3600), "{access:?}");
    // The newer failure still states the subscription: its as_of is the second failure's.
    let v = b.client().get_billing(as_service(pb::GetBillingRequest { account_id: a.clone() })).await.unwrap().into_inner();
    let sub = v.subscriptions.iter().find(|s| s.id == "sub_spell").unwrap();
    assert_eq!((sub.status.as_str(), sub.as_of.as_ref().map(|t| t.seconds)), ("past_due", Some(t)), "{sub:?}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_a_customer_not_linked_yet_count_once_the_checkout_links_it() {
    let b = start(&[]).await;
    let account = AccountId::new();
    let t = now() - 100;
    // Stripe sends the subscription (without our metadata) and a refund before the checkout.
    let sub = objects::with(
        objects::subscription(&SubscriptionSpec {
            id: "sub_late",
            customer: "cus_late",
            account_id: "",
            price: PRO,
            status: "active",
            created: t,
            period_end: t + 100,
        }),
        json!({"metadata": {}}),
    );
    let (sub_id, sub_ev) = stripe_event("customer.subscription.created", t, sub);
    let (refund_id, refund_ev) = stripe_event("charge.refunded", t + 50, objects::charge("ch_late", "cus_late", 4900, 4900, t));
    b.publish_stripe_event(sub_ev).await;
    b.publish_stripe_event(refund_ev).await;
    wait_applied(&b, &[sub_id.clone(), refund_id.clone()]).await;
    assert_eq!(b.event_outcome(&sub_id).await.as_deref(), Some("unlinked"));
    assert_eq!(b.access(account).await.status, AccessStatus::None as i32);

    let session = objects::checkout_session(&CheckoutSpec {
        id: "cs_late",
        account_id: &account.to_string(),
        customer: "cus_late",
        subscription: "sub_late",
        created: t,
        amount_total: 4900,
        email: "",
    });
    b.publish_stripe_event(stripe_event("checkout.session.completed", t, session).1).await;
    // Paid at t, refunded at t + 50: the link brings both facts in, and the refund wins.
    let access = b.wait_access(account, AccessStatus::Revoked).await;
    assert_eq!(access.cause_event_type, "charge.refunded");
    assert_eq!(access.stripe_customer_id, "cus_late");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_billing_cannot_read_is_parked_with_its_reason() {
    let b = start(&[]).await;
    let bad = objects::with(
        objects::subscription(&SubscriptionSpec { id: "sub_bad", customer: "cus_bad", status: "active", ..Default::default() }),
        json!({"status": "exploded"}),
    );
    b.publish_stripe_event(stripe_event("customer.subscription.updated", now(), bad).1).await;
    wait_for(WAIT, "parked in the DLQ", || async { (b.dlq_depth().await == 1).then_some(()) }).await;
    assert_eq!(b.info().await.parked, 1);
    let parked = b.parked().await;
    assert!(parked[0].reason.contains("data.object.status") && parked[0].reason.contains("\"exploded\""), "{:?}", parked[0].reason);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_payload_is_parked_with_a_reason_naming_the_field() {
    let b = start(&[]).await;
    let account = AccountId::new();
    let session = objects::checkout_session(&CheckoutSpec {
        id: "cs_malformed",
        account_id: &account.to_string(),
        customer: "cus_malformed",
        subscription: "sub_malformed",
        created: now(),
        amount_total: 1900,
        email: "",
    });
    let (id, mut ev) = stripe_event("checkout.session.completed", now(), session);
    // What no gateway would send: `created` as words.
    ev["created"] = json!("yesterday");
    let env = sb_bus::Envelope::raw("gateway", StripeEventReceived::TYPE, ev);
    b.publish(&env).await;
    wait_for(WAIT, "parked in the DLQ", || async { (b.dlq_depth().await == 1).then_some(()) }).await;
    let parked = b.parked().await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].event_id, Some(env.id));
    let reason = &parked[0].reason;
    assert!(reason.contains("created") && reason.contains(StripeEventReceived::TYPE), "{reason}");
    assert_eq!((parked[0].attempts, b.info().await.retried), (1, 0), "parked at once, never retried");
    assert_eq!(b.event_outcome(&id).await, None);
    assert_eq!(b.access(account).await.status, AccessStatus::None as i32, "nothing applied");
    b.stop().await;
}
