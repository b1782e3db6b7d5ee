//! `POST /webhooks/stripe` as Stripe (and an attacker) uses it, against real PostgreSQL and
//! RabbitMQ: signature checks (the issue's known-answer vector, tampering, header forms, the
//! ±300 s tolerance, rotation), uniform empty 400s that write nothing, body limits enforced before
//! verification, exactly-once acceptance under concurrent redelivery (one receipt, one outbox row,
//! one message on the bus carrying the Stripe event), live-mode events refused with the public
//! development secret, 503 on a database failure, and no secret, body or signature in the logs.
//!
//! Payloads are Stripe's own shapes (`sb_stripe::objects`), except the issue's known-answer body.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::{io::Write, time::Duration};

use common::System;
use lapin::{
    options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use sb_bus::{Envelope, Event, events::StripeEventReceived};

const STRIPE_EVENT_RECEIVED: &str = StripeEventReceived::TYPE;
use sb_stripe::{
    objects::{self, CheckoutSpec, InvoiceSpec},
    signature::{header_value, sign},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "whsec_test_secret";
const ROTATED: &str = "whsec_rotated";
const SECRETS: &str = "whsec_test_secret,whsec_rotated";

// The issue's known-answer vector.
const KAT_BODY: &[u8] = br#"{"id":"evt_test_1","object":"event","type":"checkout.session.completed","data":{"object":{"id":"cs_1"}}}"#;
const KAT_T: i64 = 1_700_000_000;
const KAT_V1: &str = "8eecf24c91b9ab1792dbabb4b673ae13b83587cf704e52509d82e6df98df3eb7";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The current second, taken right after a second boundary: the gateway reads its clock a few
/// milliseconds later, still in the same second, so a timestamp at exactly now±300/301 is judged
/// against the same `now` the test used (waits on the clock, not for the server).
async fn start_of_a_second() -> i64 {
    let ms = chrono::Utc::now().timestamp_subsec_millis();
    if ms > 100 {
        tokio::time::sleep(Duration::from_millis(u64::from(1000 - ms) + 2)).await;
    }
    now()
}

/// A completed checkout, the event billing's local checkout and Stripe send.
fn checkout_event(id: &str, created: i64) -> Value {
    let cs = objects::checkout_session(&CheckoutSpec {
        id: &format!("cs_{id}"),
        account_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        customer: "cus_T1",
        subscription: "sub_T1",
        created,
        amount_total: 2900,
        email: "buyer@example.com",
    });
    objects::event(id, "checkout.session.completed", created, cs)
}

/// An `invoice.paid` event with `lines` line items (Stripe sends up to a page of them inline).
fn invoice_event(id: &str, created: i64, lines: usize) -> Value {
    let inv = objects::invoice(&InvoiceSpec {
        id: "in_T1",
        customer: "cus_T1",
        subscription: "sub_T1",
        account_id: "",
        status: "paid",
        created,
        amount: 2900,
        attempt_count: 1,
        price: "",
    });
    let line = inv["lines"]["data"][0].clone();
    let data: Vec<Value> =
        (0..lines).map(|i| objects::with(line.clone(), json!({"id": format!("il_T1{i:05}"), "invoice": "in_T1"}))).collect();
    let inv = objects::with(inv, json!({"lines": {"object": "list", "data": data, "has_more": false, "url": "/v1/invoices/in_T1/lines"}}));
    objects::event(id, "invoice.paid", created, inv)
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Posts `body` as Stripe does, with `signature` as the `Stripe-Signature` header if given.
async fn post(sys: &System, body: &[u8], signature: Option<&str>) -> (u16, String) {
    let mut req = sys.web.post(sys.url("/webhooks/stripe")).header("content-type", "application/json; charset=utf-8").body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("stripe-signature", sig);
    }
    let answer = async {
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    tokio::time::timeout(Duration::from_secs(30), answer).await.expect("the gateway answers within 30 s")
}

/// Signs with `secret` at `t` and posts; expects 200 and returns the acknowledgement.
async fn deliver(sys: &System, event: &Value, secret: &str, t: i64) -> Value {
    let body = bytes(event);
    let (status, text) = post(sys, &body, Some(&header_value(secret, t, &body))).await;
    assert_eq!(status, 200, "{}: {text}", event["id"]);
    serde_json::from_str(&text).unwrap()
}

/// (receipt rows, `stripe.event.received.v1` outbox rows) in the gateway's database.
async fn written(sys: &System) -> (i64, i64) {
    let pool = &sys.gateway.db.pool;
    let receipts = sqlx::query_scalar("SELECT count(*) FROM stripe_webhook_receipts").fetch_one(pool).await.unwrap();
    let outbox = sqlx::query_scalar("SELECT count(*) FROM sb_test_outbox WHERE event_type = $1")
        .bind(STRIPE_EVENT_RECEIVED)
        .fetch_one(pool)
        .await
        .unwrap();
    (receipts, outbox)
}

/// One series of the gateway's `/metrics`, e.g. `stripe_webhook_rejected_total{reason="x"}`.
async fn metric(sys: &System, series: &str) -> f64 {
    let text = sys.web.get(format!("http://{}/metrics", sys.gateway.http)).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

fn rejected(reason: &str) -> String {
    format!("stripe_webhook_rejected_total{{reason=\"{reason}\"}}")
}

/// A queue of the test's own bound to `stripe.event.received.v1` on the system's exchange;
/// exclusive (gone with the connection even if the test dies) and deleted by [`TestQueue::delete`].
struct TestQueue {
    conn: lapin::Connection,
    ch: lapin::Channel,
    name: String,
}

impl TestQueue {
    async fn bind(sys: &System) -> Self {
        let mut cfg = sb_bus::BusConfig::new(sb_testkit::amqp_url());
        cfg.prefix = sys.prefix.clone();
        let conn = lapin::Connection::connect(&cfg.amqp_url, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        sb_bus::topology::declare_exchange(&conn, &cfg).await.unwrap();
        let name = format!("{}.webhook-test", cfg.prefix);
        ch.queue_declare(name.as_str().into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
            .await
            .unwrap();
        let exchange = format!("{}.events", cfg.prefix);
        ch.queue_bind(
            name.as_str().into(),
            exchange.as_str().into(),
            STRIPE_EVENT_RECEIVED.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        Self { conn, ch, name }
    }

    async fn try_next(&self) -> Option<Envelope> {
        let got = self.ch.basic_get(self.name.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap()?;
        Some(Envelope::parse(&got.delivery.data).unwrap())
    }

    async fn next(&self) -> Envelope {
        sb_testkit::wait_for(Duration::from_secs(30), "a stripe.event.received.v1 message", || self.try_next()).await
    }

    async fn delete(self) {
        self.ch.queue_delete(self.name.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
        let _ = self.conn.close(200, "test done".into()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_known_answer_vector_verifies_over_http() {
    // The vector itself, through the same signing code the tests use below.
    assert_eq!(sign(SECRET, KAT_T, KAT_BODY), KAT_V1);
    let sys = common::start(&[], &[("GATEWAY_STRIPE_WEBHOOK_SECRET", SECRETS)]).await;

    // As recorded: the signature matches, but t is long past the tolerance.
    let (status, text) = post(&sys, KAT_BODY, Some(&format!("t={KAT_T},v1={KAT_V1}"))).await;
    assert_eq!((status, text.as_str()), (400, ""));
    assert_eq!(metric(&sys, &rejected("timestamp_out_of_tolerance")).await, 1.0);

    // The same bytes re-signed now pass verification; the vector's body is not a whole Stripe
    // event (no `created`), so it is then refused as a payload, not as a signature.
    let (status, text) = post(&sys, KAT_BODY, Some(&header_value(SECRET, now(), KAT_BODY))).await;
    assert_eq!((status, text.as_str()), (400, ""));
    assert_eq!(metric(&sys, &rejected("invalid_payload")).await, 1.0);
    assert_eq!(metric(&sys, &rejected("signature_mismatch")).await, 0.0);
    // Under the wrong secret the same request is a signature mismatch.
    let (status, _) = post(&sys, KAT_BODY, Some(&header_value("whsec_other", now(), KAT_BODY))).await;
    assert_eq!(status, 400);
    assert_eq!(metric(&sys, &rejected("signature_mismatch")).await, 1.0);

    // A whole Stripe event with the vector's id and type, signed the same way, is accepted.
    let cs = objects::checkout_session(&CheckoutSpec { id: "cs_1", ..Default::default() });
    let event = objects::event("evt_test_1", "checkout.session.completed", now(), cs);
    assert_eq!(deliver(&sys, &event, SECRET, now()).await, json!({"received": true}));
    assert_eq!(written(&sys).await, (1, 1));
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_and_payloads_get_an_empty_400_and_write_nothing() {
    let sys = common::start(&[], &[("GATEWAY_STRIPE_WEBHOOK_SECRET", SECRETS)]).await;
    let event = checkout_event("evt_1RejectMe00000000000000", now());
    let body = bytes(&event);
    let mut tampered = event.clone();
    tampered["data"]["object"]["amount_total"] = json!(1);
    let tampered = bytes(&tampered);
    let not_an_event = bytes(&event["data"]["object"]);
    let wrong_id = bytes(&objects::with(event.clone(), json!({"id": "cs_1RejectMe"})));

    // (what, body, header, reason); the timestamped ones are built at the start of a second.
    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        ("tampered body", tampered.clone(), Some(header_value(SECRET, now(), &body)), "signature_mismatch"),
        ("no header", body.clone(), None, "missing_header"),
        ("empty header", body.clone(), Some(String::new()), "missing_header"),
        ("malformed header", body.clone(), Some("garbage".into()), "malformed_header"),
        ("no timestamp", body.clone(), Some(format!("v1={}", sign(SECRET, now(), &body))), "malformed_header"),
        ("v0 only", body.clone(), Some(format!("t={},v0={}", now(), sign(SECRET, now(), &body))), "no_v1_signature"),
        ("wrong secret", body.clone(), Some(header_value("whsec_not_ours", now(), &body)), "signature_mismatch"),
        ("signed, not an event", not_an_event.clone(), Some(header_value(SECRET, now(), &not_an_event)), "invalid_payload"),
        ("signed, not an evt_ id", wrong_id.clone(), Some(header_value(SECRET, now(), &wrong_id)), "invalid_payload"),
    ];
    for (what, body, header, reason) in cases {
        let before = metric(&sys, &rejected(reason)).await;
        let (status, text) = post(&sys, &body, header.as_deref()).await;
        assert_eq!((status, text.as_str()), (400, ""), "{what}");
        assert_eq!(metric(&sys, &rejected(reason)).await, before + 1.0, "{what}: counted as {reason}");
    }
    for offset in [-301, 301] {
        let t = start_of_a_second().await + offset;
        let (status, text) = post(&sys, &body, Some(&header_value(SECRET, t, &body))).await;
        assert_eq!((status, text.as_str()), (400, ""), "t = now{offset:+}");
    }
    assert_eq!(metric(&sys, &rejected("timestamp_out_of_tolerance")).await, 2.0);

    // A header value that is not text.
    let r = sys
        .web
        .post(sys.url("/webhooks/stripe"))
        .header("stripe-signature", reqwest::header::HeaderValue::from_bytes(b"t=1,v1=\xff\xfe").unwrap())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "");

    assert_eq!(written(&sys).await, (0, 0), "nothing is written for a refused webhook");
    assert_eq!(metric(&sys, "stripe_webhook_accepted_total{duplicate=\"false\"}").await, 0.0);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tolerance_edges_and_both_secrets_of_a_rotation_are_accepted() {
    let sys = common::start(&[], &[("GATEWAY_STRIPE_WEBHOOK_SECRET", SECRETS)]).await;
    for (n, offset) in [-300, 300].into_iter().enumerate() {
        let event = checkout_event(&format!("evt_1Edge{n}"), now());
        let body = bytes(&event);
        let t = start_of_a_second().await + offset;
        let (status, text) = post(&sys, &body, Some(&header_value(SECRET, t, &body))).await;
        assert_eq!((status, text.as_str()), (200, r#"{"received":true}"#), "t = now{offset:+}");
    }
    // During a rotation Stripe signs with both secrets: one v1 per secret, in either order.
    let event = checkout_event("evt_1RotationBoth", now());
    let body = bytes(&event);
    let t = now();
    let both = format!("t={t},v1={},v1={}", sign(SECRET, t, &body), sign(ROTATED, t, &body));
    assert_eq!(post(&sys, &body, Some(&both)).await.0, 200);
    let event = checkout_event("evt_1RotationBothSwapped", now());
    let body = bytes(&event);
    let swapped = format!("t={t},v1={},v1={},v0={}", sign(ROTATED, t, &body), sign(SECRET, t, &body), sign("whsec_v0", t, &body));
    assert_eq!(post(&sys, &body, Some(&swapped)).await.0, 200);
    // One v1 only, from either the old or the new secret; and a stale v1 beside a good one.
    assert_eq!(deliver(&sys, &checkout_event("evt_1RotationOld", now()), SECRET, now()).await, json!({"received": true}));
    assert_eq!(deliver(&sys, &checkout_event("evt_1RotationNew", now()), ROTATED, now()).await, json!({"received": true}));
    let event = checkout_event("evt_1RotationStale", now());
    let body = bytes(&event);
    let stale = format!("t={t},v1={},v1={}", sign("whsec_retired", t, &body), sign(ROTATED, t, &body));
    assert_eq!(post(&sys, &body, Some(&stale)).await.0, 200);
    assert_eq!(written(&sys).await, (7, 7));
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_delivered_ten_times_at_once_is_recorded_and_published_once() {
    let sys = common::start(&[], &[("GATEWAY_STRIPE_WEBHOOK_SECRET", SECRETS)]).await;
    let queue = TestQueue::bind(&sys).await;
    let created = now() - 5;
    let event = checkout_event("evt_1Concurrent000000000000", created);
    let body = bytes(&event);
    // Ten deliveries, each freshly signed (Stripe signs every attempt anew).
    let t = now();
    let sends = (0..10i64).map(|i| {
        let header = header_value(SECRET, t - i, &body);
        let (sys, body) = (&sys, &body);
        async move { post(sys, body, Some(&header)).await }
    });
    let answers = futures::future::join_all(sends).await;
    let mut acks: Vec<Value> = answers
        .into_iter()
        .map(|(status, text)| {
            assert_eq!(status, 200, "{text}");
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    acks.sort_by_key(|a| a.get("duplicate").is_some());
    assert_eq!(acks[0], json!({"received": true}), "exactly one delivery is the first");
    assert!(acks[1..].iter().all(|a| *a == json!({"received": true, "duplicate": true})), "{acks:?}");
    assert_eq!(written(&sys).await, (1, 1));

    let (event_type, livemode, stripe_created, signed_at, digest): (
        String,
        bool,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        Vec<u8>,
    ) = sqlx::query_as(
        "SELECT event_type, livemode, stripe_created, signed_at, body_sha256 FROM stripe_webhook_receipts WHERE event_id = $1",
    )
    .bind("evt_1Concurrent000000000000")
    .fetch_one(&sys.gateway.db.pool)
    .await
    .unwrap();
    assert_eq!((event_type.as_str(), livemode, stripe_created.timestamp()), ("checkout.session.completed", false, created));
    assert!((t - 9..=t).contains(&signed_at.timestamp()));
    assert_eq!(digest, Sha256::digest(&body).to_vec());

    // On the bus: the Stripe event as the envelope's data, once.
    let msg = queue.next().await;
    assert_eq!(msg.event_type, STRIPE_EVENT_RECEIVED);
    assert_eq!(msg.source, "gateway");
    assert_eq!(msg.data_json(), event);
    // The outbox publishes in commit order: a later event arriving next means no copy of the
    // first one is on its way.
    let later = checkout_event("evt_1ConcurrentLater", now());
    deliver(&sys, &later, SECRET, now()).await;
    assert_eq!(queue.next().await.data_json()["id"], "evt_1ConcurrentLater");
    assert!(queue.try_next().await.is_none());

    assert_eq!(metric(&sys, "stripe_webhook_accepted_total{duplicate=\"false\"}").await, 2.0);
    assert_eq!(metric(&sys, "stripe_webhook_accepted_total{duplicate=\"true\"}").await, 9.0);
    assert_eq!(metric(&sys, "stripe_webhook_ack_seconds_count").await, 11.0);
    queue.delete().await;
    sys.stop().await;
}

/// Forty events, each delivered twice at once, and one already recorded delivered again among
/// them: the gateway commits what arrives together in one statement, and still records and
/// publishes each event exactly once and answers exactly one delivery of each as the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_at_once_are_each_recorded_and_published_once() {
    let sys = common::start(&[], &[("GATEWAY_STRIPE_WEBHOOK_SECRET", SECRETS)]).await;
    let queue = TestQueue::bind(&sys).await;
    let created = now() - 5;
    let earlier = checkout_event("evt_1BurstEarlier", created);
    deliver(&sys, &earlier, SECRET, now()).await;
    assert_eq!(queue.next().await.data_json()["id"], "evt_1BurstEarlier");

    let events: Vec<Value> = (0..40).map(|i| checkout_event(&format!("evt_1Burst{i:02}"), created)).collect();
    let t = now();
    let sends = events.iter().chain(events.iter()).chain(std::iter::once(&earlier)).map(|event| {
        let body = bytes(event);
        let header = header_value(SECRET, t, &body);
        let sys = &sys;
        async move {
            let (status, text) = post(sys, &body, Some(&header)).await;
            assert_eq!(status, 200, "{text}");
            let ack: Value = serde_json::from_str(&text).unwrap();
            (event["id"].as_str().unwrap().to_owned(), ack.get("duplicate").is_some())
        }
    });
    let answers = futures::future::join_all(sends).await;
    for event in &events {
        let id = event["id"].as_str().unwrap();
        let firsts = answers.iter().filter(|(a, dup)| a == id && !dup).count();
        assert_eq!(firsts, 1, "{id}: exactly one of its two deliveries is the first");
    }
    assert!(answers.iter().any(|(id, dup)| id == "evt_1BurstEarlier" && *dup), "the earlier event is a duplicate");
    assert_eq!(written(&sys).await, (41, 41));
    // 82 webhooks so far; fewer commits than webhooks means some commit carried several.
    let (commits, webhooks) =
        (metric(&sys, "gateway_webhook_commit_batch_size_count").await, metric(&sys, "gateway_webhook_commit_batch_size_sum").await);
    assert_eq!(webhooks, 82.0);
    assert!(commits < webhooks, "{commits} commits for {webhooks} webhooks: none was committed with another");

    let mut published = Vec::new();
    for _ in 0..40 {
        let msg = queue.next().await;
        let id = msg.data_json()["id"].as_str().unwrap().to_owned();
        assert_eq!(msg.data_json(), events.iter().find(|e| e["id"] == id.as_str()).cloned().unwrap(), "{id} as Stripe sent it");
        published.push(id);
    }
    published.sort();
    published.dedup();
    assert_eq!(published.len(), 40, "each event once");
    let later = checkout_event("evt_1BurstLater", now());
    deliver(&sys, &later, SECRET, now()).await;
    assert_eq!(queue.next().await.data_json()["id"], "evt_1BurstLater", "no copy is on its way");
    queue.delete().await;
    sys.stop().await;
}

/// The batch statement itself: in input order, which receipts were new; outbox rows only for those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_records_new_receipts_and_queues_only_their_events() {
    let sys = common::start(&[], &[("GATEWAY_STRIPE_WEBHOOK_SECRET", SECRETS)]).await;
    let pool = &sys.gateway.db.pool;
    let events: Vec<StripeEventReceived> =
        ["evt_1BatchA", "evt_1BatchB", "evt_1BatchC"].iter().map(|id| serde_json::from_value(checkout_event(id, now())).unwrap()).collect();
    let rows: Vec<sb_bus::outbox::Row> = events.iter().map(|e| sb_bus::outbox::Row::of(&Envelope::of(e)).unwrap()).collect();
    fn receipt(e: &StripeEventReceived) -> gateway::store::Receipt<'_> {
        gateway::store::Receipt {
            event_id: &e.id,
            event_type: &e.event_type,
            livemode: e.livemode,
            stripe_created: chrono::Utc::now(),
            signed_at: chrono::Utc::now(),
            body_sha256: b"digest",
        }
    }
    assert!(gateway::store::insert_receipt_and_event(pool, &receipt(&events[1]), &rows[1]).await.unwrap());
    let batch: Vec<_> = events.iter().zip(&rows).map(|(e, r)| (receipt(e), r)).collect();
    assert_eq!(gateway::store::insert_receipts_and_events(pool, &batch).await.unwrap(), vec![true, false, true]);
    let queued: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT event_id FROM sb_test_outbox ORDER BY seq").fetch_all(pool).await.unwrap();
    assert_eq!(queued.len(), 3);
    for row in &rows {
        assert_eq!(queued.iter().filter(|q| **q == row.event_id).count(), 1, "one outbox row per new receipt");
    }
    assert_eq!(written(&sys).await, (3, 3));
    sys.stop().await;
}

/// Writes a raw HTTP/1.1 request and returns the status of the answer, waiting at most 10 s.
/// The body is written while the answer is read: the server may answer (and close) before it
/// has taken all of it.
async fn raw_status(sys: &System, head: &str, body: &[u8]) -> u16 {
    let stream = tokio::net::TcpStream::connect(sys.gateway.http).await.unwrap();
    let (mut rx, mut tx) = stream.into_split();
    let request = [head.as_bytes(), body].concat();
    let writer = tokio::spawn(async move {
        let _ = tx.write_all(&request).await;
        tx
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "no answer within 10 s");
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_webhook_limit_get_413_before_verification() {
    const MAX: usize = 100_000;
    let sys = common::start(&[], &[("GATEWAY_STRIPE_WEBHOOK_SECRET", SECRET), ("GATEWAY_STRIPE_WEBHOOK_MAX_BYTES", "100000")]).await;
    let with_lines = |id: &str, min_len: usize| {
        let mut lines = 10;
        loop {
            let ev = invoice_event(id, now(), lines);
            if bytes(&ev).len() > min_len {
                return ev;
            }
            lines += 10;
        }
    };
    // Over the API's 64 KiB limit but within the webhook's: accepted.
    let big = with_lines("evt_1BigInvoice", 70_000);
    assert!(bytes(&big).len() < MAX);
    assert_eq!(deliver(&sys, &big, SECRET, now()).await, json!({"received": true}));

    // Over the webhook's limit, correctly signed: 413, empty, not verified, not recorded.
    let huge = bytes(&with_lines("evt_1HugeInvoice", MAX + 10_000));
    let header = header_value(SECRET, now(), &huge);
    let (status, text) = post(&sys, &huge, Some(&header)).await;
    assert_eq!((status, text.as_str()), (413, ""));
    // Announced by Content-Length alone: answered without waiting for a single body byte.
    let head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nStripe-Signature: {header}\r\nContent-Length: {}\r\n\r\n",
        huge.len()
    );
    assert_eq!(raw_status(&sys, &head, b"").await, 413);
    // Chunked (no Content-Length): cut off at the limit while reading.
    let head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nStripe-Signature: {header}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut chunked = Vec::new();
    for chunk in huge.chunks(16 * 1024) {
        write!(chunked, "{:x}\r\n", chunk.len()).unwrap();
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw_status(&sys, &head, &chunked).await, 413);

    assert_eq!(metric(&sys, &rejected("body_too_large")).await, 3.0);
    for reason in ["signature_mismatch", "missing_header", "malformed_header", "invalid_payload", "timestamp_out_of_tolerance"] {
        assert_eq!(metric(&sys, &rejected(reason)).await, 0.0, "{reason}: the body was never verified");
    }
    assert_eq!(written(&sys).await, (1, 1));
    // The API routes keep their own 64 KiB limit.
    let r = sys.web.post(sys.url("/v1/login")).header("content-type", "application/json").body(huge.clone()).send().await.unwrap();
    assert_eq!(r.status(), 413);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_dev_secret_accepts_test_mode_events_only() {
    // No secret configured: the public development secret is used.
    let sys = common::start(&[], &[]).await;
    let test_mode = checkout_event("evt_1DevTestMode", now());
    assert_eq!(deliver(&sys, &test_mode, sb_stripe::DEV_WEBHOOK_SECRET, now()).await, json!({"received": true}));
    let cs = objects::with(objects::checkout_session(&CheckoutSpec { id: "cs_live_1", ..Default::default() }), json!({"livemode": true}));
    let live = bytes(&objects::event("evt_1DevLiveMode", "checkout.session.completed", now(), cs.clone()));
    let (status, text) = post(&sys, &live, Some(&header_value(sb_stripe::DEV_WEBHOOK_SECRET, now(), &live))).await;
    assert_eq!((status, text.as_str()), (400, ""));
    assert_eq!(metric(&sys, &rejected("livemode_with_dev_secret")).await, 1.0);
    assert_eq!(written(&sys).await, (1, 1));
    sys.stop().await;

    // Beside a real secret, the public one still cannot vouch for a live-mode event.
    let both = format!("whsec_real_endpoint_secret,{}", sb_stripe::DEV_WEBHOOK_SECRET);
    let sys = common::start(&[], &[("GATEWAY_STRIPE_WEBHOOK_SECRET", both.as_str())]).await;
    let (status, _) = post(&sys, &live, Some(&header_value(sb_stripe::DEV_WEBHOOK_SECRET, now(), &live))).await;
    assert_eq!(status, 400);
    let (status, _) = post(&sys, &live, Some(&header_value("whsec_real_endpoint_secret", now(), &live))).await;
    assert_eq!(status, 200);
    let livemode: bool = sqlx::query_scalar("SELECT livemode FROM stripe_webhook_receipts WHERE event_id = 'evt_1DevLiveMode'")
        .fetch_one(&sys.gateway.db.pool)
        .await
        .unwrap();
    assert!(livemode);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_failure_answers_503_until_recorded_and_logs_no_secret_body_or_signature() {
    const CANARY_SECRET: &str = "whsec_canary_3f9a1c7e";
    const CANARY_EMAIL: &str = "canary-4b2d@payments.test";
    let logs = sb_testkit::logs::Captured::install();
    let sys = common::start(&[], &[("GATEWAY_STRIPE_WEBHOOK_SECRET", CANARY_SECRET)]).await;
    let cs =
        objects::checkout_session(&CheckoutSpec { id: "cs_canary", email: CANARY_EMAIL, account_id: "acct-canary", ..Default::default() });
    let event = objects::event("evt_1Canary", "checkout.session.completed", now(), cs);
    let body = bytes(&event);

    // The database refuses the receipt: 503 (Stripe retries), nothing half-written.
    sqlx::query("ALTER TABLE stripe_webhook_receipts ADD CONSTRAINT test_refuses_inserts CHECK (false) NOT VALID")
        .execute(&sys.gateway.db.pool)
        .await
        .unwrap();
    let first = header_value(CANARY_SECRET, now(), &body);
    let (status, text) = post(&sys, &body, Some(&first)).await;
    assert_eq!((status, text.as_str()), (503, ""));
    assert_eq!(written(&sys).await, (0, 0));
    // Stripe's retry, once the database takes it again, is accepted as new.
    sqlx::query("ALTER TABLE stripe_webhook_receipts DROP CONSTRAINT test_refuses_inserts").execute(&sys.gateway.db.pool).await.unwrap();
    let retry = header_value(CANARY_SECRET, now() - 1, &body);
    let (status, text) = post(&sys, &body, Some(&retry)).await;
    assert_eq!((status, text.as_str()), (200, r#"{"received":true}"#));
    assert_eq!(written(&sys).await, (1, 1));
    // A forged one: refused.
    let forged = header_value("whsec_forger", now(), &body);
    assert_eq!(post(&sys, &body, Some(&forged)).await.0, 400);
    let metrics = sys.web.get(format!("http://{}/metrics", sys.gateway.http)).send().await.unwrap().text().await.unwrap();
    sys.stop().await;

    let text = logs.text();
    assert!(text.contains("could not record a stripe webhook"), "the failure is logged");
    assert!(text.contains("stripe webhook accepted") && text.contains("stripe webhook rejected"));
    let signatures: Vec<String> = [&first, &retry, &forged].iter().map(|h| h.split("v1=").nth(1).unwrap().to_owned()).collect();
    for needle in [CANARY_SECRET, CANARY_EMAIL, "cs_canary", "acct-canary"].into_iter().chain(signatures.iter().map(String::as_str)) {
        assert!(!text.contains(needle), "reached the logs: {needle}");
        assert!(!metrics.contains(needle), "reached /metrics: {needle}");
    }
}
