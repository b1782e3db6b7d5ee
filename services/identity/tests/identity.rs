//! identity over gRPC against real PostgreSQL and RabbitMQ: sign-up once, sessions, throttling,
//! authorization of every call, impersonation audit, and the welcome email through the bus.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use identity::domain::Role;
use sb_proto::identity::v1 as pb;
use sb_testkit::wait_for;
use tonic::Code;

async fn count(pool: &sqlx::PgPool, sql: &'static str, email: &str) -> i64 {
    sqlx::query_scalar(sql).bind(email).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn concurrent_double_submit_signs_up_once_with_one_event_and_one_email() {
    let id = start(&[]).await;
    let email = "Ada@Example.com";
    let attempts = (0..5).map(|_| {
        let mut c = id.client();
        async move { c.sign_up(as_service(signup(email), "198.51.100.7")).await }
    });
    let results = futures::future::join_all(attempts).await;
    let ok: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(ok.len(), 1, "exactly one sign-up succeeds: {results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::AlreadyExists, "{r:?}");
    }
    let grant = ok[0].as_ref().unwrap().get_ref();
    assert_eq!(grant.user.as_ref().unwrap().email, "ada@example.com", "stored normalised");

    let pool = &id.db.pool;
    assert_eq!(count(pool, "SELECT count(*) FROM users WHERE email = $1", "ada@example.com").await, 1);
    assert_eq!(count(pool, "SELECT count(*) FROM accounts WHERE $1 <> ''", "x").await, 1, "the losers' accounts were rolled back");
    assert_eq!(count(pool, "SELECT count(*) FROM sb_test_outbox WHERE event_type = $1", "identity.user.signed_up.v1").await, 1);
    // The welcome email goes through the bus to the embedded mailbox, exactly once.
    wait_for(Duration::from_secs(30), "the welcome email", || async {
        (count(pool, "SELECT count(*) FROM sb_mailbox WHERE to_address = $1", "ada@example.com").await == 1).then_some(())
    })
    .await;
    let mail = sqlx::query_as::<_, (String, String)>("SELECT subject, text_body FROM sb_mailbox").fetch_one(pool).await.unwrap();
    assert_eq!(mail.0, "Welcome to your portal");
    assert!(mail.1.contains("Analytical Engines Ltd"));
    // A later, sequential double submit is refused too.
    let again = id.client().sign_up(as_service(signup("ada@example.com"), "198.51.100.7")).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(count(pool, "SELECT count(*) FROM sb_mailbox WHERE to_address = $1", "ada@example.com").await, 1);
    id.stop().await;
}

#[tokio::test]
async fn bad_sign_up_input_is_refused_and_writes_nothing() {
    let id = start(&[]).await;
    let mut c = id.client();
    for (req, field) in [
        (pb::SignUpRequest { email: "not-an-email".into(), ..signup("x@y.z") }, "email"),
        (pb::SignUpRequest { password: "short".into(), ..signup("b@example.com") }, "password"),
        (pb::SignUpRequest { name: "  ".into(), ..signup("c@example.com") }, "name"),
    ] {
        let e = c.sign_up(as_service(req, "198.51.100.7")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    assert_eq!(count(&id.db.pool, "SELECT count(*) FROM users WHERE $1 <> ''", "x").await, 0);
    assert_eq!(count(&id.db.pool, "SELECT count(*) FROM sb_test_outbox WHERE $1 <> ''", "x").await, 0);
    id.stop().await;
}

#[tokio::test]
async fn sessions_log_in_out_expire_and_reject_forged_tokens() {
    let id = start(&[]).await;
    let mut c = id.client();
    c.sign_up(as_service(signup("grace@example.com"), "198.51.100.8")).await.unwrap();
    let token = c.log_in(as_service(login("GRACE@example.com", PASSWORD), "198.51.100.8")).await.unwrap().into_inner().token;
    let me = c.get_me(as_user(pb::GetMeRequest {}, &token)).await.unwrap().into_inner();
    assert_eq!(me.user.unwrap().email, "grace@example.com");
    assert_eq!(me.principal.unwrap().role, pb::Role::Customer as i32);

    // Tampered, random and missing tokens.
    let mut tampered = token.clone();
    tampered.replace_range(10..11, if &token[10..11] == "A" { "B" } else { "A" });
    for bad in [tampered.as_str(), "sbs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "garbage", ""] {
        let e = c.get_me(as_user(pb::GetMeRequest {}, bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{bad:?}");
    }
    assert_eq!(c.get_me(tonic::Request::new(pb::GetMeRequest {})).await.unwrap_err().code(), Code::Unauthenticated);
    // A user token cannot act as a service, nor a wrong service token.
    assert_eq!(
        c.authenticate(as_user(pb::AuthenticateRequest { token: token.clone() }, &token)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let mut forged = tonic::Request::new(signup("mallory@example.com"));
    forged.metadata_mut().insert("x-switchboard-service", "not-the-token-at-all".parse().unwrap());
    assert_eq!(c.sign_up(forged).await.unwrap_err().code(), Code::Unauthenticated);

    // Logout revokes exactly that session.
    c.log_out(as_user(pb::LogOutRequest {}, &token)).await.unwrap();
    assert_eq!(c.get_me(as_user(pb::GetMeRequest {}, &token)).await.unwrap_err().code(), Code::Unauthenticated);

    // Expiry: a session past its expires_at is dead.
    let t2 = c.log_in(as_service(login("grace@example.com", PASSWORD), "198.51.100.8")).await.unwrap().into_inner().token;
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = $1")
        .bind(identity::domain::token::hash(&t2))
        .execute(&id.db.pool)
        .await
        .unwrap();
    assert_eq!(c.get_me(as_user(pb::GetMeRequest {}, &t2)).await.unwrap_err().code(), Code::Unauthenticated);
    // The stored session holds a hash, never the token.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions WHERE octet_length(token_hash) <> 32 OR position(convert_to('sbs_', 'UTF8') in token_hash) > 0",
    )
    .fetch_one(&id.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0);
    id.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_email_and_per_address() {
    let id = start(&[("IDENTITY_LOGIN_MAX_FAILURES", "3"), ("IDENTITY_LOGIN_IP_MAX_FAILURES", "5")]).await;
    let mut c = id.client();
    c.sign_up(as_service(signup("alan@example.com"), "203.0.113.1")).await.unwrap();
    for _ in 0..3 {
        let e = c.log_in(as_service(login("alan@example.com", "wrong password!"), "203.0.113.1")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    // Blocked now, even with the right password, with a retry hint.
    let e = c.log_in(as_service(login("alan@example.com", PASSWORD), "203.0.113.2")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let retry: i64 = e.metadata().get("retry-after-seconds").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");

    // Per address: failures spread over many emails from one address.
    for i in 0..5 {
        let _ = c.log_in(as_service(login(&format!("nobody{i}@example.com"), "whatever password"), "203.0.113.9")).await;
    }
    c.sign_up(as_service(signup("bob@example.com"), "203.0.113.3")).await.unwrap();
    let e = c.log_in(as_service(login("bob@example.com", PASSWORD), "203.0.113.9")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    // The same user from another address is fine.
    c.log_in(as_service(login("bob@example.com", PASSWORD), "203.0.113.4")).await.unwrap();
    // Unknown emails and wrong passwords get the same answer.
    let unknown = c.log_in(as_service(login("ghost@example.com", PASSWORD), "203.0.113.5")).await.unwrap_err();
    let wrong = c.log_in(as_service(login("bob@example.com", "not my password"), "203.0.113.5")).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (wrong.code(), wrong.message()));
    id.stop().await;
}

#[tokio::test]
async fn customers_see_only_their_own_account_and_staff_calls_are_refused() {
    let id = start(&[]).await;
    let mut c = id.client();
    let a = c.sign_up(as_service(signup("a@example.com"), "192.0.2.1")).await.unwrap().into_inner();
    let b = c.sign_up(as_service(signup("b@example.com"), "192.0.2.1")).await.unwrap().into_inner();
    let (a_user, b_user) = (a.user.unwrap(), b.user.unwrap());
    // Own records: fine. Another account's: not found (not forbidden: ids cannot be probed).
    c.get_account(as_user(pb::GetAccountRequest { account_id: a_user.account_id.clone() }, &a.token)).await.unwrap();
    c.get_user(as_user(pb::GetUserRequest { user_id: a_user.id.clone() }, &a.token)).await.unwrap();
    assert_eq!(
        c.get_account(as_user(pb::GetAccountRequest { account_id: b_user.account_id.clone() }, &a.token)).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(c.get_user(as_user(pb::GetUserRequest { user_id: b_user.id.clone() }, &a.token)).await.unwrap_err().code(), Code::NotFound);
    // Staff and admin calls.
    assert_eq!(c.list_customers(as_user(pb::ListCustomersRequest::default(), &a.token)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(
        c.revoke_sessions(as_user(pb::RevokeSessionsRequest { user_id: b_user.id.clone() }, &a.token)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let agent = staff(&id, "agent@switchboard.test", Role::Agent).await;
    let listed =
        c.list_customers(as_user(pb::ListCustomersRequest { query: "B@EXAMPLE".into(), limit: 0 }, &agent)).await.unwrap().into_inner();
    assert_eq!(listed.customers.len(), 1);
    assert_eq!(listed.customers[0].users[0].email, "b@example.com");
    c.get_account(as_user(pb::GetAccountRequest { account_id: b_user.account_id.clone() }, &agent)).await.unwrap();
    assert_eq!(
        c.revoke_sessions(as_user(pb::RevokeSessionsRequest { user_id: b_user.id.clone() }, &agent)).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    let admin = staff(&id, "founder@switchboard.test", Role::Admin).await;
    let revoked = c.revoke_sessions(as_user(pb::RevokeSessionsRequest { user_id: b_user.id.clone() }, &admin)).await.unwrap().into_inner();
    assert_eq!(revoked.revoked, 1);
    assert_eq!(c.get_me(as_user(pb::GetMeRequest {}, &b.token)).await.unwrap_err().code(), Code::Unauthenticated);
    id.stop().await;
}

#[tokio::test]
async fn profile_updates_change_only_the_name_and_announce_it() {
    let id = start(&[]).await;
    let mut c = id.client();
    let a = c.sign_up(as_service(signup("ann@example.com"), "192.0.2.1")).await.unwrap().into_inner();
    let u = c.update_profile(as_user(pb::UpdateProfileRequest { name: Some("  Ann B.  ".into()) }, &a.token)).await.unwrap().into_inner();
    assert_eq!(u.name, "Ann B.");
    assert_eq!(u.role, pb::Role::Customer as i32);
    let e = c.update_profile(as_user(pb::UpdateProfileRequest { name: Some("".into()) }, &a.token)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(count(&id.db.pool, "SELECT count(*) FROM sb_test_outbox WHERE event_type = $1", "identity.user.updated.v1").await, 1);
    id.stop().await;
}

#[tokio::test]
async fn impersonation_is_admin_only_time_limited_visible_and_audited() {
    let id = start(&[]).await;
    let mut c = id.client();
    let cust = c.sign_up(as_service(signup("cust@example.com"), "192.0.2.1")).await.unwrap().into_inner();
    let cust_id = cust.user.unwrap().id;
    let agent = staff(&id, "agent2@switchboard.test", Role::Agent).await;
    let admin = staff(&id, "admin2@switchboard.test", Role::Admin).await;
    let req = |reason: &str, ttl| pb::ImpersonateRequest { user_id: cust_id.clone(), reason: reason.into(), ttl_seconds: ttl };

    assert_eq!(c.impersonate(as_user(req("look", 0), &agent)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(c.impersonate(as_user(req("look", 0), &cust.token)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(c.impersonate(as_user(req("", 0), &admin)).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(c.impersonate(as_user(req("look", 7200), &admin)).await.unwrap_err().code(), Code::InvalidArgument);

    let grant = c.impersonate(as_user(req("ticket 42: billing question", 600), &admin)).await.unwrap().into_inner();
    let me = c.get_me(as_user(pb::GetMeRequest {}, &grant.token)).await.unwrap().into_inner();
    assert_eq!(me.user.unwrap().id, cust_id);
    assert_eq!(me.impersonator.unwrap().email, "admin2@switchboard.test", "impersonation is visible");
    let expires = me.principal.unwrap().expires_at.unwrap().seconds;
    let now = chrono::Utc::now().timestamp();
    assert!(expires - now <= 600 && expires - now > 500, "time-limited: {}", expires - now);
    // The impersonation session has the customer's powers, not the admin's.
    assert_eq!(c.list_audit(as_user(pb::ListAuditRequest::default(), &grant.token)).await.unwrap_err().code(), Code::PermissionDenied);

    let audit = c.list_audit(as_user(pb::ListAuditRequest { user_id: cust_id.clone(), limit: 10 }, &admin)).await.unwrap().into_inner();
    let entry = audit.entries.iter().find(|e| e.action == "impersonation.started").expect("audited");
    assert_eq!(entry.target_user_id, cust_id);
    assert!(entry.detail_json.contains("ticket 42"));
    id.stop().await;
}

#[tokio::test]
async fn with_smtp_down_signup_succeeds_and_the_email_is_delivered_once_when_it_returns() {
    use sb_testkit::smtp::{FakeSmtp, Mode};
    let smtp = FakeSmtp::start().await.unwrap();
    smtp.set_mode(Mode::TempFail);
    let url = format!("smtp://{}:{}", smtp.host(), smtp.port());
    let id = start(&[("IDENTITY_SMTP_URL", url.as_str()), ("SWITCHBOARD_RETRY_DELAYS", "300ms,600ms,1s,2s,4s,8s")]).await;
    let grant = id.client().sign_up(as_service(signup("outage@example.com"), "192.0.2.9")).await;
    assert!(grant.is_ok(), "sign-up must not wait on or fail because of SMTP: {grant:?}");

    // The email is retried on the ladder while SMTP refuses.
    wait_for(Duration::from_secs(30), "two refused SMTP attempts", || async { (smtp.connections() >= 2).then_some(()) }).await;
    assert_eq!(smtp.count(), 0);
    smtp.set_mode(Mode::Accept);
    wait_for(Duration::from_secs(60), "the email once SMTP is back", || async { (smtp.count() >= 1).then_some(()) }).await;

    // Applied once, nothing left on the ladder: it cannot be sent again.
    let info = wait_for(Duration::from_secs(10), "the consumer to record the send", || async {
        let i = id.info().await;
        (i.applied == 1).then_some(i)
    })
    .await;
    assert!(info.retried >= 1, "{info:?}");
    assert_eq!(info.parked, 0);
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["outage@example.com".to_owned()]);
    assert!(mails[0].data.contains("Welcome to your portal"));
    id.stop().await;
}

#[tokio::test]
async fn sixty_four_emails_arriving_at_once_never_wait_on_the_pool() {
    // A small pool: the handlers must share it without ever holding one connection while asking
    // for another (the mailbox writes in the handler's own transaction).
    let id = start(&[("IDENTITY_DB_POOL_SIZE", "6")]).await;
    let events: Vec<sb_bus::Envelope> = (0..64)
        .map(|i| {
            sb_bus::Envelope::of(&sb_bus::events::EmailRequested {
                to: identity::domain::Email::parse(&format!("burst{i}@example.com")).unwrap(),
                name: format!("Burst {i}"),
                account_id: None,
                user_id: None,
                template: sb_bus::events::EmailTemplate::Welcome { account_name: "Burst Ltd".into() },
            })
        })
        .collect();
    // Published before the consumer could take them one by one: they arrive together.
    let conn = sb_bus::publisher::connect(&id.bus, "burst").await.unwrap();
    let publisher = sb_bus::Publisher::open(&conn, &id.bus).await.unwrap();
    let no_trace = sb_bus::publisher::TraceHeaders::new();
    futures::future::try_join_all(events.iter().map(|e| publisher.publish(e, &no_trace))).await.unwrap();
    let pool = &id.db.pool;
    wait_for(Duration::from_secs(30), "all 64 emails in the mailbox", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sb_mailbox").fetch_one(pool).await.unwrap();
        (n == 64).then_some(())
    })
    .await;
    let info = id.info().await;
    assert_eq!((info.applied, info.retried, info.parked), (64, 0, 0), "no handler timed out on the pool: {info:?}");
    let _ = conn.close(200, "done".into()).await;
    id.stop().await;
}

#[tokio::test]
async fn customers_are_told_about_a_failed_payment_and_a_refund_once() {
    let id = start(&[]).await;
    let grant = id.client().sign_up(as_service(signup("payer@example.com"), "192.0.2.10")).await.unwrap().into_inner();
    let account: identity::domain::AccountId = grant.user.unwrap().account_id.parse().unwrap();
    let failed = sb_bus::Envelope::of(&sb_bus::events::PaymentFailed {
        account_id: Some(account),
        stripe_event_id: "evt_failed".into(),
        stripe_customer_id: "cus_1".into(),
        invoice_id: "in_1".into(),
        subscription_id: Some("sub_1".into()),
        amount_due: 4900,
        currency: "usd".into(),
        attempt_count: 1,
        next_payment_attempt: None,
    });
    let refunded = sb_bus::Envelope::of(&sb_bus::events::RefundIssued {
        account_id: Some(account),
        stripe_event_id: "evt_refund".into(),
        stripe_customer_id: "cus_1".into(),
        charge_id: "ch_1".into(),
        amount: 4900,
        amount_refunded: 4900,
        currency: "usd".into(),
        full: true,
    });
    for e in [&failed, &failed, &refunded] {
        id.publish(e).await;
    }
    let pool = &id.db.pool;
    let subjects = wait_for(Duration::from_secs(30), "the welcome, payment and refund emails", || async {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT subject, text_body FROM sb_mailbox WHERE to_address = 'payer@example.com' ORDER BY created_at")
                .fetch_all(pool)
                .await
                .unwrap();
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    let bodies: Vec<&str> = subjects.iter().map(|(_, b)| b.as_str()).collect();
    assert!(subjects.iter().any(|(s, _)| s == "Your payment did not go through"), "{subjects:?}");
    assert!(subjects.iter().any(|(s, _)| s == "Your refund is on its way"), "{subjects:?}");
    assert!(bodies.iter().any(|b| b.contains("49.00 USD")), "{bodies:?}");
    // The duplicate delivery asked for nothing more.
    wait_for(Duration::from_secs(10), "the duplicate to be settled", || async { (id.info().await.duplicates >= 1).then_some(()) }).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sb_mailbox").fetch_one(pool).await.unwrap();
    assert_eq!(n, 3);
    id.stop().await;
}

#[tokio::test]
async fn ticket_events_email_the_requester_and_a_missed_sla_emails_staff() {
    use sb_bus::events::{MessageAuthor, Requester, SlaBreached, TicketMessageAdded, TicketOpened, TicketPrioritised, TicketResolved};
    use sb_types::{SlaClock, TicketCategory, TicketId, TicketPriority, TicketQueue};
    let id = start(&[]).await;
    staff(&id, "agent@tickets.test", Role::Agent).await;
    staff(&id, "founder@tickets.test", Role::Admin).await;
    let ticket_id = TicketId::new();
    let requester = Requester {
        account_id: None,
        user_id: None,
        email: identity::domain::Email::parse("visitor@example.com").unwrap(),
        name: "Vic".into(),
    };
    let subject = "Can't log in".to_owned();
    let events = [
        sb_bus::Envelope::of(&TicketOpened {
            ticket_id,
            requester: requester.clone(),
            subject: subject.clone(),
            category: TicketCategory::Account,
            priority: TicketPriority::Urgent,
            queue: TicketQueue::HumanReview,
            tier: "free".into(),
            channel: "contact_form".into(),
        }),
        // The customer's own reply is not echoed back to them.
        sb_bus::Envelope::of(&TicketMessageAdded {
            ticket_id,
            requester: requester.clone(),
            subject: subject.clone(),
            message_id: uuid::Uuid::now_v7(),
            author: MessageAuthor::Customer,
            author_user_id: None,
            body: "Still stuck".into(),
            category: None,
        }),
        sb_bus::Envelope::of(&TicketMessageAdded {
            ticket_id,
            requester: requester.clone(),
            subject: subject.clone(),
            message_id: uuid::Uuid::now_v7(),
            author: MessageAuthor::Agent,
            author_user_id: None,
            body: "Reset it from the sign-in page.".into(),
            category: None,
        }),
        // Into human review: told; a move between other queues: not.
        sb_bus::Envelope::of(&TicketPrioritised {
            ticket_id,
            requester: requester.clone(),
            subject: subject.clone(),
            from_priority: TicketPriority::High,
            to_priority: TicketPriority::Urgent,
            from_queue: TicketQueue::Account,
            to_queue: TicketQueue::HumanReview,
            reasons: vec!["security words".into()],
            by: None,
        }),
        sb_bus::Envelope::of(&TicketPrioritised {
            ticket_id,
            requester: requester.clone(),
            subject: subject.clone(),
            from_priority: TicketPriority::Low,
            to_priority: TicketPriority::Normal,
            from_queue: TicketQueue::Account,
            to_queue: TicketQueue::Technical,
            reasons: vec![],
            by: None,
        }),
        sb_bus::Envelope::of(&TicketResolved {
            ticket_id,
            requester: requester.clone(),
            subject: subject.clone(),
            by: None,
            by_customer: false,
        }),
        sb_bus::Envelope::of(&SlaBreached {
            ticket_id,
            requester,
            subject,
            clock: SlaClock::FirstResponse,
            due_at: chrono::Utc::now(),
            priority: TicketPriority::Urgent,
            queue: TicketQueue::HumanReview,
            assignee: None,
        }),
    ];
    for e in &events {
        id.publish(e).await;
    }
    let pool = &id.db.pool;
    let mails: Vec<(String, String)> = wait_for(Duration::from_secs(30), "the ticket emails", || async {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT to_address, template FROM sb_mailbox ORDER BY to_address, template").fetch_all(pool).await.unwrap();
        (rows.len() >= 6).then_some(rows)
    })
    .await;
    let to = |addr: &str| mails.iter().filter(|(t, _)| t == addr).map(|(_, tpl)| tpl.as_str()).collect::<Vec<_>>();
    assert_eq!(to("visitor@example.com"), ["ticket_answered", "ticket_escalated", "ticket_received", "ticket_resolved"], "{mails:?}");
    assert_eq!(to("agent@tickets.test"), ["sla_breached"], "unassigned: every agent and admin hears it");
    assert_eq!(to("founder@tickets.test"), ["sla_breached"]);
    id.stop().await;
}
