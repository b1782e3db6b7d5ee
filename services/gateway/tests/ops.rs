//! The admin operations routes and the billing export as an operator uses them: queue depths and
//! consumers, a parked message with its reason and original event, a dry run that changes
//! nothing, replay and purge (confirmed, audited), and the CSV export (audited, formula-safe).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use identity::domain::Role;
use serde_json::{Value, json};

async fn audit_actions(sys: &System, admin: &User) -> Vec<Value> {
    let r = sys.web.get(sys.url("/v1/admin/audit?limit=50")).bearer_auth(&admin.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Vec<Value>>().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_a_parked_message_previews_replays_and_purges_it_each_audited() {
    let sys = start(&[], &[]).await;
    let admin = sys.staff("ops-admin@switchboard.test", Role::Admin).await;
    let agent = sys.staff("ops-agent@switchboard.test", Role::Agent).await;
    let customer = sys.signup("ops-customer@example.com").await;
    let event_id = park_unreadable(&sys, &customer.account_id).await;

    // The overview: every service, billing's DLQ holding it, consumers on the work queues.
    let r = sys.web.get(sys.url("/v1/admin/ops/queues")).bearer_auth(&admin.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let o: Value = r.json().await.unwrap();
    let services: Vec<&str> = o["services"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    for svc in ["identity", "billing", "crm-sync", "support-router"] {
        assert!(services.contains(&svc), "{svc} missing from {services:?}");
    }
    let billing = o["services"].as_array().unwrap().iter().find(|s| s["service"] == "billing").unwrap();
    assert_eq!(billing["dlq"]["messages"], 1, "{billing}");
    assert!(billing["work"]["consumers"].as_u64().unwrap() >= 1, "billing consumes its work queue: {billing}");
    assert!(o["dashboard_url"].as_str().unwrap().starts_with("http"));

    // The parked message: reason, attempts and the original event.
    let r = sys.web.get(sys.url("/v1/admin/ops/services/billing/parked")).bearer_auth(&admin.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let parked: Vec<Value> = r.json().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0]["event_id"], event_id.as_str());
    assert_eq!(parked[0]["event_type"], "stripe.event.received.v1");
    assert_eq!(parked[0]["account_id"], customer.account_id.as_str());
    assert!(parked[0]["reason"].as_str().unwrap().contains("not readable: missing field `id`"), "{}", parked[0]["reason"]);
    assert_eq!(parked[0]["body"]["data"]["not"], "a Stripe event");

    // Staff who are not admins, and customers, are refused; nothing moves.
    for who in [&agent, &customer] {
        let r = sys
            .web
            .post(sys.url("/v1/admin/ops/services/billing/replay"))
            .bearer_auth(&who.token)
            .json(&json!({"all": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    // A selection must be exactly one thing; an unknown service is a 404.
    let r = sys
        .web
        .post(sys.url("/v1/admin/ops/services/billing/replay"))
        .bearer_auth(&admin.token)
        .json(&json!({"all": true, "event_type": "x.v1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = sys.web.post(sys.url("/v1/admin/ops/services/billing/replay")).bearer_auth(&admin.token).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let r = sys.web.get(sys.url("/v1/admin/ops/services/nope/parked")).bearer_auth(&admin.token).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Dry runs: by event type matches it, by another account does not; nothing changes.
    let dry = |body: Value| {
        let (web, url, token) = (sys.web.clone(), sys.url("/v1/admin/ops/services/billing/replay"), admin.token.clone());
        async move {
            let r = web.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let p = dry(json!({"event_type": "stripe.event.received.v1", "dry_run": true})).await;
    assert_eq!((p["dry_run"].as_bool(), p["matched"].as_u64(), p["looked_at"].as_u64()), (Some(true), Some(1), Some(1)), "{p}");
    assert_eq!(p["messages"][0]["event_id"], event_id.as_str());
    let p = dry(json!({"account_id": uuid::Uuid::now_v7().to_string(), "dry_run": true})).await;
    assert_eq!(p["matched"], 0, "{p}");
    assert_eq!(sys.billing.dlq_depth().await, 1, "a dry run moves nothing");
    assert!(!audit_actions(&sys, &admin).await.iter().any(|a| a["action"] == "ops.replay"), "a dry run is not an action");

    // Replay by event id: it goes back to billing, which cannot read it and parks it again.
    let p = dry(json!({"event_id": event_id})).await;
    assert_eq!((p["dry_run"].as_bool(), p["matched"].as_u64()), (Some(false), Some(1)), "{p}");
    let audit = audit_actions(&sys, &admin).await;
    let replayed = audit.iter().find(|a| a["action"] == "ops.replay").expect("the replay is audited");
    assert_eq!(replayed["actor_user_id"], admin.user_id.as_str());
    assert!(replayed["detail"]["selection"].as_str().unwrap().contains(&event_id), "{replayed}");
    sb_testkit::wait_for(Duration::from_secs(30), "the replayed event parked again", || async {
        let parked = sys.billing.parked().await;
        parked.iter().any(|p| p.event_id.map(|i| i.to_string()) == Some(event_id.clone()) && p.attempts >= 1).then_some(())
    })
    .await;

    // Purge: refused without the confirmation, then done, audited, and the DLQ is empty.
    let purge = sys.url("/v1/admin/ops/services/billing/purge");
    let r = sys.web.post(&purge).bearer_auth(&admin.token).json(&json!({"all": true})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "confirmation_required");
    let r = sys.web.post(&purge).bearer_auth(&admin.token).json(&json!({"all": true, "confirm": "identity"})).send().await.unwrap();
    assert_eq!(r.status(), 422, "the confirmation names this service");
    assert_eq!(sys.billing.dlq_depth().await, 1);
    let r = sys.web.post(&purge).bearer_auth(&admin.token).json(&json!({"all": true, "confirm": "billing"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["matched"], 1);
    assert_eq!(sys.billing.dlq_depth().await, 0);
    assert!(audit_actions(&sys, &admin).await.iter().any(|a| a["action"] == "ops.purge" && a["actor_user_id"] == admin.user_id.as_str()));
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_billing_export_is_csv_for_admins_only_audited_and_formula_safe() {
    let sys = start(&[], &[]).await;
    let admin = sys.staff("export-admin@switchboard.test", Role::Admin).await;
    let agent = sys.staff("export-agent@switchboard.test", Role::Agent).await;
    let customer = sys.signup("export-customer@example.com").await;
    pay_pro(&sys, &customer).await;
    // The local checkout's invoice.paid follows the checkout's completion.
    let invoice_id = sb_testkit::wait_for(Duration::from_secs(30), "the local checkout's invoice", || async {
        let (_, billing) =
            send(sys.web.get(sys.url(&format!("/v1/accounts/{}/billing", customer.account_id))).bearer_auth(&admin.token)).await;
        billing["invoices"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let url = sys.url(&format!("/v1/admin/accounts/{}/billing/export", customer.account_id));
    for who in [&agent, &customer] {
        assert_eq!(sys.web.get(&url).bearer_auth(&who.token).send().await.unwrap().status(), 403);
    }
    let r = sys.web.get(&url).bearer_auth(&admin.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"billing-"));
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "record,at,id,status,plan,amount_due,amount_paid,currency,detail");
    assert!(lines.iter().any(|l| l.starts_with("access_change,") && l.contains(" -> active,")), "{csv}");
    assert!(lines.iter().any(|l| l.starts_with("invoice,") && l.contains(&invoice_id)), "{csv}");
    let audit = audit_actions(&sys, &admin).await;
    let export = audit.iter().find(|a| a["action"] == "billing.export").expect("the export is audited");
    assert_eq!(export["account_id"], customer.account_id.as_str());
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_refund_is_made_once_per_key_audited_and_access_follows_the_policy() {
    let sys = start(&[], &[]).await;
    let admin = sys.staff("refund-admin@switchboard.test", Role::Admin).await;
    let agent = sys.staff("refund-agent@switchboard.test", Role::Agent).await;
    let customer = sys.signup("refund-customer@example.com").await;
    pay_pro(&sys, &customer).await;
    let billing_url = sys.url(&format!("/v1/accounts/{}/billing", customer.account_id));
    let invoice_id = sb_testkit::wait_for(Duration::from_secs(30), "the local checkout's invoice", || async {
        let (_, billing) = send(sys.web.get(&billing_url).bearer_auth(&admin.token)).await;
        billing["invoices"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let url = sys.url(&format!("/v1/admin/accounts/{}/billing/refunds", customer.account_id));
    let body = json!({"invoice_id": invoice_id, "reason": "charged twice"});
    for who in [&agent, &customer] {
        let r = sys.web.post(&url).bearer_auth(&who.token).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    let r = sys.web.post(&url).bearer_auth(&admin.token).json(&json!({"invoice_id": invoice_id, "reason": " "})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("reason"));
    let r = sys.web.post(&url).bearer_auth(&admin.token).json(&json!({"invoice_id": "in_nope", "reason": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (_, billing) = send(sys.web.get(&billing_url).bearer_auth(&admin.token)).await;
    assert_eq!(billing["refunds"], json!([]), "nothing refunded by refused requests");

    // A double click: the same Idempotency-Key twice at once refunds once.
    let click = || sys.web.post(&url).bearer_auth(&admin.token).header("idempotency-key", "console-form-1").json(&body).send();
    let (one, two) = tokio::join!(click(), click());
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!((one.status(), two.status()), (reqwest::StatusCode::CREATED, reqwest::StatusCode::CREATED));
    let (one, two): (Value, Value) = (one.json().await.unwrap(), two.json().await.unwrap());
    assert_eq!(one["id"], two["id"]);
    assert_eq!((one["status"].as_str(), one["amount"].as_i64()), (Some("succeeded"), Some(4900)), "{one}");
    // Nothing is left to refund.
    let r = sys.web.post(&url).bearer_auth(&admin.token).header("idempotency-key", "console-form-2").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 409);

    // Access follows the local checkout's charge.refunded (a full refund revokes, by default).
    let access = sb_testkit::wait_for(Duration::from_secs(30), "access revoked by the refund", || async {
        let (_, billing) = send(sys.web.get(&billing_url).bearer_auth(&admin.token)).await;
        Some(billing["access"].clone()).filter(|a| a["status"] == "revoked")
    })
    .await;
    assert_eq!(access["cause_event_type"], "charge.refunded");
    let (_, billing) = send(sys.web.get(&billing_url).bearer_auth(&admin.token)).await;
    assert_eq!(billing["refunds"].as_array().unwrap().len(), 1, "{billing}");
    assert_eq!(billing["refunds"][0]["reason"], "charged twice");
    let (_, own) = send(sys.web.get(sys.url("/v1/billing")).bearer_auth(&customer.token)).await;
    assert_eq!((own["refunds"][0]["amount"].as_i64(), own["refunds"][0]["reason"].as_str()), (Some(4900), Some("")));
    // Each request that reached billing is audited with its key (the double click twice, the
    // refused third, the unknown invoice); the one without a reason was refused before.
    let audit = audit_actions(&sys, &admin).await;
    let refunds: Vec<&Value> = audit.iter().filter(|a| a["action"] == "billing.refund").collect();
    assert_eq!(refunds.len(), 4, "{audit:?}");
    assert!(refunds.iter().all(|a| a["account_id"] == customer.account_id.as_str() && a["detail"]["reason"] != " "));
    let keys: Vec<&str> = refunds.iter().filter_map(|a| a["detail"]["idempotency_key"].as_str()).collect();
    assert_eq!(keys.iter().filter(|k| **k == "console-form-1").count(), 2, "{keys:?}");
    sys.stop().await;
}

#[test]
fn exported_cells_never_start_a_formula() {
    let view = gateway::routes::billing::BillingOut {
        access: None,
        subscriptions: vec![],
        invoices: vec![gateway::routes::billing::InvoiceOut {
            id: "=HYPERLINK(\"http://evil\")".into(),
            subscription_id: "sub_1".into(),
            status: "+paid".into(),
            amount_due: 2000,
            amount_paid: 2000,
            currency: "@usd".into(),
            created: None,
        }],
        history: vec![],
        refunds: vec![],
    };
    let csv = String::from_utf8(gateway::routes::billing::billing_csv(&view).unwrap()).unwrap();
    let row = csv.lines().nth(1).unwrap();
    assert_eq!(row, "invoice,,\"'=HYPERLINK(\"\"http://evil\"\")\",'+paid,,2000,2000,'@usd,subscription sub_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_bearer_session_leaves_the_cookie_session_alone() {
    let sys = start(&[], &[]).await;
    let user = sys.signup("two-sessions@example.com").await;
    let other = sys.login("two-sessions@example.com").await;
    let r = sys.web.post(sys.url("/v1/logout")).bearer_auth(&other.token).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().get_all("set-cookie").iter().next().is_none(), "a Bearer logout clears no cookie");
    // The cookie session (the sign-up's token presented as the cookie) still works.
    let r = sys.web.get(sys.url("/v1/me")).header("cookie", format!("sb_session={}", user.token)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = sys
        .web
        .post(sys.url("/v1/logout"))
        .header("cookie", format!("sb_session={}", user.token))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2, "a cookie logout clears both cookies");
    sys.stop().await;
}
