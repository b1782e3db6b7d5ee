//! Regression test 5, permissions: every route of the gateway's authorization matrix
//! (`services/gateway/authz-matrix.json`) answers every viewpoint — anonymous, a customer, another
//! customer, an agent, an admin, and an admin impersonating the customer — as the matrix says,
//! on the real binaries.

use std::collections::HashMap;

use sb_testkit::authz;
use serde_json::Value;
use system_tests::PASSWORD;

use crate::harness::System;

/// The portal's stylesheet as the page links it (`/assets/<name>`).
async fn stylesheet(sys: &System) -> String {
    let page = sys.http.get(sys.url("/app/")).send().await.unwrap().text().await.unwrap();
    page.split("/assets/")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| *c != '"' && *c != '\'').collect::<String>())
        .find(|name| name.ends_with(".css"))
        .expect("the portal links its stylesheet")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_every_route_answers_every_viewpoint_as_the_authorization_matrix_says() {
    let sys = System::start().await;
    let matrix: Value = serde_json::from_str(include_str!("../../../services/gateway/authz-matrix.json")).unwrap();
    let viewpoints = authz::viewpoints(&matrix);
    assert!(viewpoints.iter().any(|v| v == "impersonating_admin"), "{viewpoints:?}");

    let customer = sys.sign_up("owner@customer-a.test").await;
    let other = sys.sign_up("someone@customer-b.test").await;
    let victim = sys.sign_up("victim@customer-c.test").await;
    let admin_token = sys.staff("admin@switchboard.test", "admin").await;
    sys.staff("agent@switchboard.test", "agent").await;
    let me = |token: String| {
        let r = sys.http.get(sys.url("/v1/me")).bearer_auth(token);
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let customer_user = me(customer.token.clone()).await["user"]["id"].as_str().unwrap().to_owned();
    let victim_user = me(victim.token.clone()).await["user"]["id"].as_str().unwrap().to_owned();
    let who: HashMap<&str, &str> = [
        ("customer", "owner@customer-a.test"),
        ("other_customer", "someone@customer-b.test"),
        ("agent", "agent@switchboard.test"),
        ("admin", "admin@switchboard.test"),
    ]
    .into();

    let mut sessions = Vec::new();
    for token in [&customer.token, &victim.token] {
        let r = sys.http.post(sys.url("/v1/billing/checkout")).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 201);
        sessions.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let mut tickets = Vec::new();
    for (token, subject) in
        [(&customer.token, "Where is my invoice?"), (&customer.token, "Please close me"), (&victim.token, "Victim's question")]
    {
        let body = serde_json::json!({"subject": subject, "body": "Fixture for the authorization matrix.", "category": "billing"});
        let r = sys.http.post(sys.url("/v1/tickets")).bearer_auth(token).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        tickets.push(r.json::<Value>().await.unwrap()["ticket"]["id"].as_str().unwrap().to_owned());
    }
    let ids: HashMap<&str, String> = [
        ("customer.account_id", customer.account_id.clone()),
        ("customer.user_id", customer_user.clone()),
        ("victim.user_id", victim_user),
        ("customer.checkout_session", sessions[0].clone()),
        ("victim.checkout_session", sessions[1].clone()),
        ("customer.ticket_id", tickets[0].clone()),
        ("customer.closing_ticket_id", tickets[1].clone()),
        ("victim.ticket_id", tickets[2].clone()),
        ("unknown.draft_id", uuid::Uuid::now_v7().to_string()),
        ("ops.service", "billing".to_owned()),
        ("web.stylesheet", stylesheet(&sys).await),
    ]
    .into();

    // As a browser or API client would: redirects followed.
    let http = reqwest::Client::new();
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
        let (http, sys, who, admin_token, customer_user) = (&http, &sys, &who, &admin_token, &customer_user);
        async move {
            let mut req = http.request(ask.method, sys.url(&ask.path));
            if let Some(body) = &ask.body {
                req = req.json(body);
            }
            // A fresh session per request: a logout or a revocation must not leak into the next.
            match ask.viewpoint.as_str() {
                "anonymous" => {}
                "impersonating_admin" => {
                    let r = sys
                        .http
                        .post(sys.url(&format!("/v1/admin/users/{customer_user}/impersonate")))
                        .bearer_auth(admin_token)
                        .json(&serde_json::json!({"reason": "regression suite: permissions", "ttl_seconds": 300}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201);
                    req = req.bearer_auth(r.json::<Value>().await.unwrap()["token"].as_str().unwrap());
                }
                v => req = req.bearer_auth(sys.log_in(who[v]).await),
            }
            req.send().await.unwrap().status().as_u16()
        }
    })
    .await;
    assert!(mismatches.is_empty(), "{} of {checked} answers differ from the matrix:\n{}", mismatches.len(), mismatches.join("\n"));
    assert_eq!(checked, matrix["routes"].as_array().unwrap().len() * viewpoints.len());
    sys.stop().await;
}
