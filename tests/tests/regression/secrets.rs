//! Regression test 8, security: every secret setting holds a canary value, and after a full
//! run — sign-up, a bad and a good log-in, a Stripe checkout and its signed webhook, a ticket
//! with an AI draft, the admin's views, a log-out — no canary, no password and no session token
//! appears in any served asset, any response, any event on the bus, any email, or any log line
//! (debug level) of the six.

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use lapin::{
    options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use sb_stripe::objects::{self, CheckoutSpec, SubscriptionSpec};
use sb_testkit::{stripe::FakeStripe, wait_for};
use serde_json::{Value, json};
use system_tests::PASSWORD;

use crate::harness::System;

const SERVICE_TOKEN: &str = "canary-service-token-3b71e0c5";
const WEBHOOK_SECRET: &str = "whsec_canary_c2a94f0e1d";
const STRIPE_KEY: &str = "sk_test_canary_5e0a7d21";
const SMTP_PASSWORD: &str = "canary-smtp-pw-0d6e";
const HUBSPOT_TOKEN: &str = "pat-na1-canary-hubspot-77c2";
const OPENAI_KEY: &str = "sk-canary-openai-91fe";
const DB_PASSWORD: &str = "canary-db-pw-4c2b";
const AMQP_PASSWORD: &str = "canary-amqp-pw-8e15";

/// A broker user whose password is a canary, removed when dropped.
struct BrokerUser(String);

impl BrokerUser {
    fn add(name: &str) -> Self {
        sb_testkit::rabbitmqctl(&["add_user", name, AMQP_PASSWORD]);
        sb_testkit::rabbitmqctl(&["set_permissions", "-p", "/", name, ".*", ".*", ".*"]);
        Self(name.to_owned())
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_user", &self.0]).output();
    }
}

/// Everything a secret must not reach, gathered as text.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>);

impl Seen {
    fn add(&self, what: impl Into<String>, text: impl Into<String>) {
        self.0.lock().unwrap().push((what.into(), text.into()));
    }

    /// Sends `req`, keeping the answer's headers and body; the status and the body as JSON.
    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = format!("{:?}", r.headers());
        let body = r.text().await.unwrap();
        self.add(format!("{what}: headers"), headers);
        self.add(format!("{what}: body"), body.clone());
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r8_no_secret_reaches_an_asset_a_response_an_event_an_email_or_a_log_line() {
    let stripe = FakeStripe::start().await.unwrap();
    stripe.require_key(STRIPE_KEY);
    let user = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let _broker_user = BrokerUser::add(&user);
    let sys = System::start_configured(|s| {
        s.hubspot.set_token(HUBSPOT_TOKEN);
        s.ai.accept_any_key();
        let mut env: Vec<(String, String)> = [
            ("SWITCHBOARD_SERVICE_TOKEN", SERVICE_TOKEN.to_owned()),
            ("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("SWITCHBOARD_STRIPE_API_KEY", STRIPE_KEY.to_owned()),
            ("SWITCHBOARD_STRIPE_API_BASE", stripe.base_url()),
            ("SWITCHBOARD_AMQP_URL", format!("amqp://{user}:{AMQP_PASSWORD}@127.0.0.1:5672/%2f")),
            ("CRM_SYNC_HUBSPOT_TOKEN", HUBSPOT_TOKEN.to_owned()),
            ("AI_ASSIST_OPENAI_API_KEY", OPENAI_KEY.to_owned()),
            ("IDENTITY_SMTP_URL", format!("smtp://mailer:{SMTP_PASSWORD}@{}:{}", s.smtp.host(), s.smtp.port())),
            ("RUST_LOG", "debug".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
        // PostgreSQL here trusts local connections, so any password works: a canary one.
        for service in sb_bus::catalog::SERVICES {
            let var = format!("{}_DATABASE_URL", service.to_uppercase().replace('-', "_"));
            env.push((var, format!("postgres://postgres:{DB_PASSWORD}@127.0.0.1:5432/{}_{}", s.layout.db, service.replace('-', "_"))));
        }
        env
    })
    .await;
    let seen = Seen::default();

    // Every event on the bus, from here on.
    let conn = lapin::Connection::connect(&sb_testkit::amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    // Outside the system's prefix: `settled` counts that prefix's queues.
    let capture = sb_testkit::unique("capture");
    ch.queue_declare(capture.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let exchange = format!("{}.events", sys.six.prefix);
    ch.queue_bind(capture.as_str().into(), exchange.as_str().into(), "#".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();

    // A customer's day.
    let email = "canary@secrets.test";
    let signup = json!({"email": email, "password": PASSWORD, "name": "Canary", "account_name": "Canary Co"});
    let (status, v) = seen.send("sign-up", sys.http.post(sys.url("/v1/signup")).json(&signup)).await;
    assert_eq!(status, 201);
    let token = v["token"].as_str().unwrap().to_owned();
    let wrong = json!({"email": email, "password": "not the right password"});
    assert_eq!(seen.send("bad log-in", sys.http.post(sys.url("/v1/login")).json(&wrong)).await.0, 401);
    let (status, v) = seen.send("log-in", sys.http.post(sys.url("/v1/login")).json(&json!({"email": email, "password": PASSWORD}))).await;
    assert_eq!(status, 200);
    let second = v["token"].as_str().unwrap().to_owned();
    let (_, me) = seen.send("me", sys.http.get(sys.url("/v1/me")).bearer_auth(&token)).await;
    let account = me["account"]["id"].as_str().unwrap().to_owned();

    // Stripe: a checkout (billing calls Stripe with the key) and its signed webhook.
    let (status, _) =
        seen.send("checkout", sys.http.post(sys.url("/v1/billing/checkout")).bearer_auth(&token).json(&json!({"plan": "pro"}))).await;
    assert_eq!(status, 201);
    assert!(!stripe.requests().is_empty(), "billing called Stripe");
    let now = chrono::Utc::now().timestamp();
    stripe.put_subscription(objects::subscription(&SubscriptionSpec {
        id: "sub_canary",
        customer: "cus_canary",
        account_id: &account,
        price: "price_switchboard_pro",
        status: "active",
        created: now,
        period_end: now + 30 * 86_400,
    }));
    let session = objects::checkout_session(&CheckoutSpec {
        id: "cs_test_canary",
        account_id: &account,
        customer: "cus_canary",
        subscription: "sub_canary",
        created: now,
        amount_total: 4900,
        email,
    });
    let body = objects::event("evt_canary_1", "checkout.session.completed", now, session).to_string();
    let signature = sb_stripe::signature::header_value(WEBHOOK_SECRET, now, body.as_bytes());
    let webhook = sys
        .http
        .post(sys.url("/webhooks/stripe"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body);
    assert_eq!(seen.send("webhook", webhook).await.0, 200);
    sys.wait_access(&token, "active", Duration::from_secs(60)).await;

    // A ticket and its AI draft; the admin's views.
    let ticket = json!({"subject": "Export", "body": "How do I export my invoices?", "category": "billing"});
    let (status, t) = seen.send("ticket", sys.http.post(sys.url("/v1/tickets")).bearer_auth(&token).json(&ticket)).await;
    assert_eq!(status, 201);
    let ticket_id = t["ticket"]["id"].as_str().unwrap().to_owned();
    let admin = sys.staff("admin@secrets.test", "admin").await;
    wait_for(Duration::from_secs(60), "the AI draft", || {
        let r = sys.http.get(sys.url(&format!("/v1/admin/tickets/{ticket_id}"))).bearer_auth(&admin);
        async move { (r.send().await.ok()?.json::<Value>().await.ok()?["ai_state"] == "ready").then_some(()) }
    })
    .await;
    assert!(!sys.ai.requests().is_empty(), "ai-assist called the model");
    for path in [
        format!("/v1/admin/tickets/{ticket_id}"),
        format!("/v1/admin/tickets/{ticket_id}/ai"),
        format!("/v1/admin/customers/{account}"),
        "/v1/admin/customers".to_owned(),
        "/v1/admin/audit".to_owned(),
        "/v1/admin/mailbox".to_owned(),
        "/v1/admin/ops/queues".to_owned(),
        "/v1/admin/contact-book".to_owned(),
        format!("/v1/admin/accounts/{account}/billing/export"),
    ] {
        seen.send(&path, sys.http.get(sys.url(&path)).bearer_auth(&admin)).await;
    }
    for path in ["/v1/billing", "/v1/tickets", &format!("/v1/tickets/{ticket_id}")] {
        seen.send(path, sys.http.get(sys.url(path)).bearer_auth(&token)).await;
    }
    assert_eq!(seen.send("log-out", sys.http.post(sys.url("/v1/logout")).bearer_auth(&second)).await.0, 204);
    wait_for(Duration::from_secs(30), "the CRM contact", || async { sys.hubspot.contact(email) }).await;
    sys.settled().await;

    // Served assets: the pages, what they link, the API's documents, every service's own endpoints.
    let mut assets: Vec<String> = ["/", "/app/", "/app/console", "/docs", "/openapi.json", "/billing/local/done"].map(String::from).into();
    for page in ["/app/", "/app/console", "/docs"] {
        let html = sys.http.get(sys.url(page)).send().await.unwrap().text().await.unwrap();
        for rest in html.split("/assets/").skip(1) {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect();
            assets.push(format!("/assets/{name}"));
        }
    }
    assets.sort();
    assets.dedup();
    assert!(assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")), "{assets:?}");
    for a in &assets {
        seen.send(a, sys.http.get(sys.url(a))).await;
    }
    for r in &sys.six.running {
        for path in ["/metrics", "/readyz", "/healthz"] {
            seen.send(&format!("{} {path}", r.name), sys.http.get(format!("http://127.0.0.1:{}{path}", r.http))).await;
        }
    }

    // The events: bodies and headers.
    let mut events = 0;
    while let Some(m) = ch.basic_get(capture.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap() {
        events += 1;
        seen.add(format!("event {events}: body"), String::from_utf8_lossy(&m.delivery.data).into_owned());
        seen.add(format!("event {events}: properties"), format!("{:?}", m.delivery.properties));
    }
    assert!(events >= 5, "the run published events ({events})");
    ch.queue_delete(capture.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    conn.close(200, "done".into()).await.unwrap();
    // The emails.
    let mails = sys.smtp.messages();
    assert!(!mails.is_empty(), "identity sent mail");
    for m in &mails {
        seen.add("email", format!("{:?}", m));
    }

    let logs: Vec<(String, String)> =
        sys.six.running.iter().map(|r| (format!("{} log", r.name), std::fs::read_to_string(&r.log).unwrap())).collect();
    assert!(logs.iter().map(|(_, l)| l.lines().count()).sum::<usize>() > 500, "debug logs were written");
    let secrets = [
        ("service token", SERVICE_TOKEN),
        ("Stripe webhook secret", WEBHOOK_SECRET),
        ("Stripe API key", STRIPE_KEY),
        ("SMTP password", SMTP_PASSWORD),
        ("HubSpot token", HUBSPOT_TOKEN),
        ("OpenAI key", OPENAI_KEY),
        ("database password", DB_PASSWORD),
        ("broker password", AMQP_PASSWORD),
        ("user password", PASSWORD),
        ("session token", token.as_str()),
        ("second session token", second.as_str()),
    ];
    let mut leaks = Vec::new();
    let seen = std::mem::take(&mut *seen.0.lock().unwrap());
    for (name, secret) in secrets {
        for (what, text) in seen.iter().chain(logs.iter()) {
            // A session token is the answer of the sign-up and log-in that made it; nowhere else.
            let its_own_answer = name.contains("session") && (what.starts_with("sign-up") || what.starts_with("log-in"));
            if text.contains(secret) && !its_own_answer {
                let line = text.lines().find(|l| l.contains(secret)).unwrap_or_default();
                leaks.push(format!("{name} in {what}: {}", &line[..line.len().min(300)]));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    sys.stop().await;
}
