//! The authorization matrix (OWASP's approach): every route in the OpenAPI document must be in
//! `authz-matrix.json`, and every route answers every viewpoint exactly as the matrix says.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use identity::domain::Role;
use sb_testkit::authz;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_viewpoint_as_the_matrix_says() {
    // ai-assist too (the local drafter): the AI audit route is in the matrix.
    let sys = start_with_ai(&[]).await;
    let matrix: Value = serde_json::from_str(include_str!("../authz-matrix.json")).unwrap();
    let doc: Value = sys.web.get(sys.url("/openapi.json")).send().await.unwrap().json().await.unwrap();

    // Coverage: documented routes == matrix routes (except the undocumented infrastructure ones).
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
        .collect();
    let routes = matrix["routes"].as_array().unwrap();
    let listed: BTreeSet<(String, String)> = routes
        .iter()
        .filter(|r| r.get("openapi") != Some(&Value::Bool(false)))
        .map(|r| (r["method"].as_str().unwrap().to_owned(), r["path"].as_str().unwrap().to_owned()))
        .collect();
    let missing: Vec<_> = documented.difference(&listed).collect();
    assert!(missing.is_empty(), "routes in /openapi.json but not in authz-matrix.json: {missing:?}");
    let stale: Vec<_> = listed.difference(&documented).collect();
    assert!(stale.is_empty(), "routes in authz-matrix.json that /openapi.json does not document: {stale:?}");

    // The cast: whose records are targeted, and who asks.
    let customer = sys.signup("owner@customer-a.test").await;
    let other = sys.signup("someone@customer-b.test").await;
    let victim = sys.signup("victim@customer-c.test").await;
    sys.staff("agent@switchboard.test", Role::Agent).await;
    let admin = sys.staff("admin@switchboard.test", Role::Admin).await;
    let who: HashMap<&str, &str> = [
        ("customer", "owner@customer-a.test"),
        ("other_customer", "someone@customer-b.test"),
        ("agent", "agent@switchboard.test"),
        ("admin", "admin@switchboard.test"),
    ]
    .into();
    // Local checkout sessions (embedded default): the customer's own, and a third account's.
    let mut sessions = Vec::new();
    for user in [&customer, &victim] {
        let r = sys.web.post(sys.url("/v1/billing/checkout")).bearer_auth(&user.token).send().await.unwrap();
        assert_eq!(r.status(), 201);
        sessions.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    // Tickets: the customer's (read, answered), one they close, and a third account's (resolved and reopened by staff).
    let mut tickets = Vec::new();
    for (user, subject) in [(&customer, "Where is my invoice?"), (&customer, "Please close me"), (&victim, "Victim's question")] {
        let body = serde_json::json!({"subject": subject, "body": "Fixture for the authorization matrix.", "category": "billing"});
        let r = sys.web.post(sys.url("/v1/tickets")).bearer_auth(&user.token).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        tickets.push(r.json::<Value>().await.unwrap()["ticket"]["id"].as_str().unwrap().to_owned());
    }
    let ids: HashMap<&str, String> = [
        ("customer.account_id", customer.account_id.clone()),
        ("customer.user_id", customer.user_id.clone()),
        ("victim.user_id", victim.user_id.clone()),
        ("customer.checkout_session", sessions[0].clone()),
        ("victim.checkout_session", sessions[1].clone()),
        ("customer.ticket_id", tickets[0].clone()),
        ("customer.closing_ticket_id", tickets[1].clone()),
        ("victim.ticket_id", tickets[2].clone()),
        ("unknown.draft_id", uuid::Uuid::now_v7().to_string()),
        ("ops.service", "billing".to_owned()),
        ("web.stylesheet", gateway::web::stylesheet().trim_start_matches("/assets/").to_owned()),
    ]
    .into();

    let vars = |n: usize, viewpoint: &str| -> HashMap<&'static str, String> {
        [
            ("fresh_email", format!("new{n}-{viewpoint}@fresh.test")),
            ("customer_email", customer.email.clone()),
            ("password", PASSWORD.to_owned()),
            ("other_account_id", other.account_id.clone()),
        ]
        .into()
    };
    let (checked, mismatches) = authz::walk(&matrix, &ids, vars, |ask: authz::Ask| {
        let (sys, who, admin, customer) = (&sys, &who, &admin, &customer);
        async move {
            let mut req = sys.web.request(ask.method, sys.url(&ask.path));
            if let Some(body) = &ask.body {
                req = req.json(body);
            }
            // A fresh session per request: logout and revocation must not leak into other checks.
            match ask.viewpoint.as_str() {
                "anonymous" => {}
                // An admin acting as the customer, through an impersonation session.
                "impersonating_admin" => {
                    let r = sys
                        .web
                        .post(sys.url(&format!("/v1/admin/users/{}/impersonate", customer.user_id)))
                        .bearer_auth(sys.login(&admin.email).await.token)
                        .json(&serde_json::json!({"reason": "authorization matrix", "ttl_seconds": 300}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201);
                    req = req.bearer_auth(r.json::<Value>().await.unwrap()["token"].as_str().unwrap());
                }
                v => req = req.bearer_auth(sys.login(who[v]).await.token),
            }
            req.send().await.unwrap().status().as_u16()
        }
    })
    .await;
    assert!(mismatches.is_empty(), "{} of {checked} answers differ from the matrix:\n{}", mismatches.len(), mismatches.join("\n"));
    assert_eq!(checked, routes.len() * authz::viewpoints(&matrix).len());
    sys.stop().await;
}
