//! support-router over gRPC against real PostgreSQL and RabbitMQ: the seed's intake test (free and
//! paid customers get different priorities; "charged twice and can't log in" goes to a person),
//! what customers never see (checked on every RPC a customer can call), other accounts' tickets,
//! double submissions, bad input, status moves, impersonation and the contact form.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use chrono::Utc;
use common::*;
use sb_proto::support::v1 as pb;
use sb_runtime::caller::Role;
use sb_types::AccessStatus;
use tonic::Code;

const EXPORT: (&str, &str) = ("Exporting invoices", "How do I export my invoices as CSV?");
const URGENT: (&str, &str) = ("Help", "I was charged twice and can't log in");

#[tokio::test]
async fn the_seed_intake_free_and_paid_differ_and_urgent_goes_to_a_person_with_reasons_for_staff_only() {
    let h = start(&[]).await;
    let agent = staff(Role::Agent);
    let free = new_customer();
    let paid = new_customer();
    h.sign_up(&free, "free@example.com", "Fay Free").await;
    h.sign_up(&paid, "paid@example.com", "Pat Paid").await;
    h.access_changed(paid.account_id, "pro", AccessStatus::Active, Utc::now()).await;

    // The same non-urgent request: different priorities.
    let f = h.open(&free, EXPORT.0, EXPORT.1, pb::Category::Technical).await;
    let p = h.open(&paid, EXPORT.0, EXPORT.1, pb::Category::Technical).await;
    assert_eq!((ticket(&f).priority(), ticket(&f).queue()), (pb::Priority::Low, pb::Queue::Technical));
    assert_eq!((ticket(&p).priority(), ticket(&p).queue()), (pb::Priority::High, pb::Queue::Technical));
    assert_eq!((ticket(&p).tier_at_intake.as_str(), ticket(&p).channel.as_str()), ("priority", "portal"));
    assert_eq!(ticket(&p).requester_email, "paid@example.com");
    // The same request with one urgency signal: still different.
    let f_login = h.open(&free, "Login", "I can't log in since this morning", pb::Category::Account).await;
    let p_login = h.open(&paid, "Login", "I can't log in since this morning", pb::Category::Account).await;
    assert!(ticket(&f_login).priority < ticket(&p_login).priority, "{f_login:?} {p_login:?}");

    // Urgent from either plan: human review.
    for who in [&free, &paid] {
        let u = h.open(who, URGENT.0, URGENT.1, pb::Category::Billing).await;
        let t = ticket(&u);
        assert_eq!((t.priority(), t.queue()), (pb::Priority::Urgent, pb::Queue::HumanReview));
        // The customer's own answer carries no reasons, notes, activity or assignee.
        assert!(t.priority_reasons.is_empty() && u.notes.is_empty() && u.activity.is_empty() && t.assignee_user_id.is_empty());
        // Staff see the decision and its reasons.
        let seen = h.get(&agent, &t.id).await.unwrap();
        let reasons = &ticket(&seen).priority_reasons;
        assert!(reasons.contains(&"signal payment: \"charged twice\"".to_owned()), "{reasons:?}");
        assert!(reasons.contains(&"signal login: \"can't log in\"".to_owned()), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.starts_with("queue human_review")), "{reasons:?}");
        let routed = seen.activity.iter().find(|a| a.action == "routed").expect("the routing decision is in the activity log");
        assert!(routed.detail.contains("priority urgent, queue human_review") && routed.actor_user_id.is_empty(), "{routed:?}");
        // The customer's views: the thread only.
        let own = h.get(who, &t.id).await.unwrap();
        assert!(ticket(&own).priority_reasons.is_empty() && own.activity.is_empty() && own.notes.is_empty());
        assert_eq!(own.messages.len(), 1);
        assert_eq!(own.messages[0].body, URGENT.1);
        for listed in h.list(who, pb::ListTicketsRequest::default()).await {
            assert!(listed.priority_reasons.is_empty() && listed.assignee_user_id.is_empty(), "{listed:?}");
        }
    }
    let paid_view = h.get(&agent, &ticket(&p).id).await.unwrap();
    assert_eq!(ticket(&paid_view).priority_reasons[0], "tier priority (plan pro, active)");

    // Announced: opened and the first message, for every ticket.
    let opened = h.events("support.ticket.opened.v1", &ticket(&p).id).await;
    assert_eq!(opened.len(), 1);
    assert_eq!((opened[0]["priority"].as_str(), opened[0]["tier"].as_str()), (Some("high"), Some("priority")));
    assert_eq!(opened[0]["requester"]["email"], "paid@example.com");
    assert_eq!(h.events("support.ticket.message_added.v1", &ticket(&p).id).await.len(), 1);

    // Staff lists and queues.
    let review = h.list(&agent, pb::ListTicketsRequest { queue: pb::Queue::HumanReview as i32, ..Default::default() }).await;
    assert_eq!(review.len(), 2);
    let mine = h.list(&agent, pb::ListTicketsRequest { account_id: paid.account_id.to_string(), ..Default::default() }).await;
    assert_eq!(mine.len(), 3);
    assert_eq!(mine[0].subject, URGENT.0, "newest activity first");
    let queues = h.client().list_queues(as_user(pb::ListQueuesRequest {}, &agent)).await.unwrap().into_inner().queues;
    let review_q = queues.iter().find(|q| q.queue() == pb::Queue::HumanReview).unwrap();
    assert_eq!((review_q.open, review_q.unanswered), (2, 2));
    h.stop().await;
}

#[tokio::test]
async fn notes_and_internals_appear_in_no_answer_a_customer_can_get() {
    let h = start(&[]).await;
    let agent = staff(Role::Agent);
    let c = new_customer();
    h.sign_up(&c, "ada@example.com", "Ada").await;
    let key = "form-submit-1";
    let create = pb::CreateTicketRequest {
        subject: "Reports".into(),
        body: "The monthly report looks odd".into(),
        category: pb::Category::Technical as i32,
        idempotency_key: key.into(),
        ..Default::default()
    };
    let first = h.client().create_ticket(as_user(create.clone(), &c)).await.unwrap().into_inner();
    let id = ticket(&first).id.clone();

    // Staff work on it: a note, an assignment, a person's priority with a reason, an answer.
    let note = format!("NOTE-CANARY-{}", uuid_like());
    let reason = format!("REASON-CANARY-{}", uuid_like());
    let mut client = h.client();
    let with_note =
        client.add_note(as_user(pb::AddNoteRequest { ticket_id: id.clone(), body: note.clone() }, &agent)).await.unwrap().into_inner();
    assert_eq!(with_note.notes.len(), 1, "staff see notes");
    client.assign(as_user(pb::AssignRequest { ticket_id: id.clone(), assignee_user_id: agent.user_id.to_string() }, &agent)).await.unwrap();
    let req = pb::ReprioritiseRequest { ticket_id: id.clone(), priority: pb::Priority::High as i32, queue: 0, reason: reason.clone() };
    client.reprioritise(as_user(req, &agent)).await.unwrap();
    h.reply(&agent, &id, "We are looking into it").await.unwrap();

    let secrets = [note.as_str(), reason.as_str(), &agent.user_id.to_string()];
    let check = |what: &str, text: String| {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows {s:?} to the customer: {text}");
        }
    };
    let check_view = |what: &str, v: &pb::TicketView| {
        assert!(v.notes.is_empty() && v.activity.is_empty(), "{what}: {v:?}");
        let t = ticket(v);
        assert!(t.priority_reasons.is_empty() && t.assignee_user_id.is_empty(), "{what}: {t:?}");
        check(what, format!("{v:?}"));
    };
    // Every RPC a customer can call.
    check_view("GetTicket", &h.get(&c, &id).await.unwrap());
    let listed = h.list(&c, pb::ListTicketsRequest { open_only: true, ..Default::default() }).await;
    assert_eq!(listed.len(), 1);
    check("ListTickets", format!("{listed:?}"));
    let again = h.client().create_ticket(as_user(create, &c)).await.unwrap().into_inner();
    assert_eq!(ticket(&again).id, id, "the same key answers the first ticket");
    check_view("CreateTicket (again)", &again);
    let replied = h.reply(&c, &id, "Thanks, here is more detail").await.unwrap();
    check_view("AddMessage", &replied);
    assert_eq!(replied.messages.len(), 3);
    assert_eq!(replied.messages[1].author(), pb::Author::Agent);
    check_view("Resolve", &h.resolve(&c, &id).await.unwrap());
    // Staff-only calls are refused to customers.
    let mut client = h.client();
    let code = |r: Result<tonic::Response<pb::TicketView>, tonic::Status>| r.err().map(|s| s.code());
    let denied = Some(Code::PermissionDenied);
    assert_eq!(code(client.add_note(as_user(pb::AddNoteRequest { ticket_id: id.clone(), body: "x".into() }, &c)).await), denied);
    assert_eq!(
        code(client.assign(as_user(pb::AssignRequest { ticket_id: id.clone(), assignee_user_id: String::new() }, &c)).await),
        denied
    );
    let req = pb::ReprioritiseRequest { ticket_id: id.clone(), priority: pb::Priority::Urgent as i32, queue: 0, reason: "me first".into() };
    assert_eq!(code(client.reprioritise(as_user(req, &c)).await), denied);
    assert_eq!(code(client.reopen(as_user(pb::ReopenRequest { ticket_id: id.clone(), reason: String::new() }, &c)).await), denied);
    assert_eq!(client.list_queues(as_user(pb::ListQueuesRequest {}, &c)).await.err().map(|s| s.code()), denied);
    // A service acting for itself reads no tickets.
    assert_eq!(client.get_ticket(as_service(pb::GetTicketRequest { ticket_id: id.clone() })).await.err().map(|s| s.code()), denied);

    // Staff still see all of it.
    let full = h.get(&agent, &id).await.unwrap();
    assert!(full.notes.iter().any(|n| n.body == note));
    assert!(ticket(&full).priority_reasons.iter().any(|r| r.contains(&reason)));
    assert_eq!(ticket(&full).assignee_user_id, agent.user_id.to_string());
    assert_eq!(full.activity.iter().filter(|a| a.action == "closed").count(), 1);
    h.stop().await;
}

fn uuid_like() -> String {
    sb_types::UserId::new().to_string()
}

#[tokio::test]
async fn another_accounts_tickets_are_not_found() {
    let h = start(&[]).await;
    let (a, b) = (new_customer(), new_customer());
    let a_colleague = customer(a.account_id);
    h.sign_up(&a, "a@example.com", "A").await;
    let t = h.open(&a, "Mine", "Private matter", pb::Category::Account).await;
    let id = ticket(&t).id.clone();
    assert_eq!(h.get(&b, &id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(h.reply(&b, &id, "hijack").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(h.resolve(&b, &id).await.unwrap_err().code(), Code::NotFound);
    assert!(h.list(&b, pb::ListTicketsRequest { account_id: a.account_id.to_string(), ..Default::default() }).await.is_empty());
    // An unknown id answers the same.
    assert_eq!(h.get(&b, &sb_types::TicketId::new().to_string()).await.unwrap_err().code(), Code::NotFound);
    // The account's other users see it (tickets are the account's).
    assert_eq!(h.get(&a_colleague, &id).await.unwrap().messages.len(), 1);
    // Nothing b tried was stored.
    assert_eq!(h.get(&staff(Role::Admin), &id).await.unwrap().messages.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_double_submission_makes_one_ticket() {
    let h = start(&[]).await;
    let c = new_customer();
    h.sign_up(&c, "twice@example.com", "Twice").await;
    let req = |key: &str, body: &str| pb::CreateTicketRequest {
        subject: "Double".into(),
        body: body.into(),
        category: pb::Category::Other as i32,
        idempotency_key: key.into(),
        ..Default::default()
    };
    // The same key, sent concurrently and again: one ticket.
    let sends = (0..4).map(|_| {
        let mut client = h.client();
        let r = as_user(req("k-1", "first"), &c);
        async move { client.create_ticket(r).await.unwrap().into_inner() }
    });
    let answers = futures::future::join_all(sends).await;
    let first = ticket(&answers[0]).id.clone();
    assert!(answers.iter().all(|a| ticket(a).id == first), "{answers:?}");
    // Same key, different body: still the first ticket.
    let again = h.client().create_ticket(as_user(req("k-1", "changed"), &c)).await.unwrap().into_inner();
    assert_eq!(ticket(&again).id, first);
    assert_eq!(h.ticket_count().await, 1);
    // No key: a retried identical request is the same ticket; a different body is a new one.
    let a = h.client().create_ticket(as_user(req("", "no key"), &c)).await.unwrap().into_inner();
    let b = h.client().create_ticket(as_user(req("", "no key"), &c)).await.unwrap().into_inner();
    assert_eq!(ticket(&a).id, ticket(&b).id);
    let other = h.client().create_ticket(as_user(req("", "something else"), &c)).await.unwrap().into_inner();
    assert_ne!(ticket(&other).id, ticket(&a).id);
    // Another customer's identical request is theirs.
    let d = customer(c.account_id);
    h.sign_up(&d, "colleague@example.com", "Colleague").await;
    let theirs = h.client().create_ticket(as_user(req("k-1", "first"), &d)).await.unwrap().into_inner();
    assert_ne!(ticket(&theirs).id, first);
    assert_eq!(h.ticket_count().await, 4);
    assert_eq!(h.svc.outbox("support.ticket.opened.v1").await.len(), 4, "one announcement per ticket");
    h.stop().await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field_and_stores_nothing() {
    let h = start(&[]).await;
    let c = new_customer();
    let agent = staff(Role::Agent);
    let ok = pb::CreateTicketRequest {
        subject: "Fine".into(),
        body: "Fine".into(),
        category: pb::Category::Billing as i32,
        ..Default::default()
    };
    let cases = [
        ("subject", pb::CreateTicketRequest { subject: "  ".into(), ..ok.clone() }),
        ("subject", pb::CreateTicketRequest { subject: "x".repeat(201), ..ok.clone() }),
        ("subject", pb::CreateTicketRequest { subject: "two\nlines".into(), ..ok.clone() }),
        ("body", pb::CreateTicketRequest { body: String::new(), ..ok.clone() }),
        ("body", pb::CreateTicketRequest { body: "x".repeat(10_001), ..ok.clone() }),
        ("body", pb::CreateTicketRequest { body: "nul\0byte".into(), ..ok.clone() }),
        ("category", pb::CreateTicketRequest { category: 0, ..ok.clone() }),
        ("category", pb::CreateTicketRequest { category: 99, ..ok.clone() }),
        ("idempotency_key", pb::CreateTicketRequest { idempotency_key: "k".repeat(201), ..ok.clone() }),
    ];
    for (field, req) in cases {
        let e = h.client().create_ticket(as_user(req, &c)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(&format!("{field}:")), "{field}: {}", e.message());
    }
    // The contact form needs an email; its category may be left out.
    let form = pb::CreateTicketRequest { category: 0, contact_email: "not an email".into(), ..ok.clone() };
    let e = h.client().create_ticket(as_service(form)).await.unwrap_err();
    assert_eq!((e.code(), e.message().starts_with("contact_email:")), (Code::InvalidArgument, true), "{e:?}");
    assert_eq!(h.ticket_count().await, 0, "nothing was stored");

    let t = h.open(&c, "Fine", "Fine", pb::Category::Billing).await;
    let id = ticket(&t).id.clone();
    let mut client = h.client();
    for (field, e) in [
        ("ticket_id", h.reply(&c, "nope", "body").await.unwrap_err()),
        ("body", h.reply(&c, &id, " \n ").await.unwrap_err()),
        (
            "body",
            client.add_note(as_user(pb::AddNoteRequest { ticket_id: id.clone(), body: "y".repeat(10_001) }, &agent)).await.unwrap_err(),
        ),
        (
            "reason",
            client
                .reprioritise(as_user(
                    pb::ReprioritiseRequest { ticket_id: id.clone(), priority: 4, queue: 0, reason: String::new() },
                    &agent,
                ))
                .await
                .unwrap_err(),
        ),
        (
            "priority",
            client
                .reprioritise(as_user(
                    pb::ReprioritiseRequest { ticket_id: id.clone(), priority: 0, queue: 0, reason: "why".into() },
                    &agent,
                ))
                .await
                .unwrap_err(),
        ),
        (
            "queue",
            client
                .reprioritise(as_user(
                    pb::ReprioritiseRequest { ticket_id: id.clone(), priority: 0, queue: 42, reason: "why".into() },
                    &agent,
                ))
                .await
                .unwrap_err(),
        ),
        (
            "assignee_user_id",
            client.assign(as_user(pb::AssignRequest { ticket_id: id.clone(), assignee_user_id: "bob".into() }, &agent)).await.unwrap_err(),
        ),
        ("status", client.list_tickets(as_user(pb::ListTicketsRequest { status: 17, ..Default::default() }, &agent)).await.unwrap_err()),
    ] {
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(&format!("{field}:")), "{field}: {}", e.message());
    }
    let after = h.get(&agent, &id).await.unwrap();
    assert_eq!((after.messages.len(), after.notes.len()), (1, 0), "nothing was stored");
    assert_eq!(ticket(&after).priority(), pb::Priority::Low);
    assert!(ticket(&after).assignee_user_id.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn status_moves_that_make_no_sense_are_refused_and_replies_move_the_ticket() {
    let h = start(&[]).await;
    let (c, agent) = (new_customer(), staff(Role::Agent));
    h.sign_up(&c, "moves@example.com", "Mo").await;
    let t = h.open(&c, "Moves", "Please help", pb::Category::Technical).await;
    let id = ticket(&t).id.clone();
    assert_eq!(ticket(&t).status(), pb::Status::New);
    let mut client = h.client();
    let reopen = |who| as_user(pb::ReopenRequest { ticket_id: id.clone(), reason: "again".into() }, who);
    let e = client.reopen(reopen(&agent)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "only a resolved ticket can be reopened; this one is new"));

    let answered = h.reply(&agent, &id, "Try turning it off and on").await.unwrap();
    assert_eq!(ticket(&answered).status(), pb::Status::WaitingOnCustomer);
    let replied = h.reply(&c, &id, "Did not help").await.unwrap();
    assert_eq!(ticket(&replied).status(), pb::Status::Open);
    let resolved = h.resolve(&agent, &id).await.unwrap();
    assert_eq!(ticket(&resolved).status(), pb::Status::Resolved);
    let e = h.resolve(&c, &id).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "the ticket is already resolved"));
    let e = h.reply(&agent, &id, "One more thing").await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "the ticket is resolved; reopen it before answering"));
    let req = pb::ReprioritiseRequest { ticket_id: id.clone(), priority: pb::Priority::Urgent as i32, queue: 0, reason: "late".into() };
    assert_eq!(client.reprioritise(as_user(req, &agent)).await.unwrap_err().code(), Code::FailedPrecondition);

    // The customer's reply reopens a resolved ticket; staff can reopen one too.
    let reopened = h.reply(&c, &id, "It broke again").await.unwrap();
    assert_eq!(ticket(&reopened).status(), pb::Status::Open);
    h.resolve(&c, &id).await.unwrap();
    let reopened = client.reopen(reopen(&agent)).await.unwrap().into_inner();
    assert_eq!(ticket(&reopened).status(), pb::Status::Open);
    assert!(reopened.activity.iter().any(|a| a.action == "reopened" && a.detail == "reopened: again"));

    // Every public message was announced; each resolve too, with who did it.
    assert_eq!(h.events("support.ticket.message_added.v1", &id).await.len(), 4);
    let resolved = h.events("support.ticket.resolved.v1", &id).await;
    assert_eq!(resolved.len(), 2);
    assert_eq!((resolved[0]["by_customer"].as_bool(), resolved[1]["by_customer"].as_bool()), (Some(false), Some(true)));
    let agent_msg = h.events("support.ticket.message_added.v1", &id).await.into_iter().find(|m| m["author"] == "agent").unwrap();
    assert_eq!(agent_msg["requester"]["email"], "moves@example.com", "the customer is emailed the answer");
    h.stop().await;
}

#[tokio::test]
async fn an_impersonating_admin_reads_and_replies_as_the_customer_and_the_log_names_the_admin() {
    let h = start(&[]).await;
    let (c, admin) = (new_customer(), staff(Role::Admin));
    h.sign_up(&c, "imp@example.com", "Imp").await;
    let t = h.open(&c, "Impersonation", "Hello", pb::Category::Account).await;
    let id = ticket(&t).id.clone();
    let acting = impersonating(&c, &admin);
    let seen = h.get(&acting, &id).await.unwrap();
    assert!(seen.activity.is_empty() && seen.notes.is_empty(), "an impersonation session sees what the customer sees");
    let replied = h.reply(&acting, &id, "Written by support, as the customer").await.unwrap();
    let last = replied.messages.last().unwrap();
    assert_eq!((last.author(), last.author_user_id.as_str()), (pb::Author::Customer, c.user_id.to_string().as_str()));
    let e = h.client().add_note(as_user(pb::AddNoteRequest { ticket_id: id.clone(), body: "n".into() }, &acting)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "an impersonation session is not staff");
    let full = h.get(&admin, &id).await.unwrap();
    let line = full.activity.iter().find(|a| a.action == "replied").unwrap();
    assert_eq!(line.actor_user_id, admin.user_id.to_string());
    assert!(line.detail.contains("impersonating"), "{line:?}");
    // Staff open no tickets of their own.
    let req = pb::CreateTicketRequest { subject: "s".into(), body: "b".into(), category: 1, ..Default::default() };
    assert_eq!(h.client().create_ticket(as_user(req, &admin)).await.unwrap_err().code(), Code::PermissionDenied);
    h.stop().await;
}

#[tokio::test]
async fn the_contact_form_is_throttled_and_linked_only_to_a_known_email() {
    let h = start(&[("SUPPORT_ROUTER_CONTACT_MAX_PER_EMAIL", "2"), ("SUPPORT_ROUTER_CONTACT_MAX_PER_ADDRESS", "3")]).await;
    let agent = staff(Role::Agent);
    let known = new_customer();
    h.sign_up(&known, "known@example.com", "Known Person").await;
    let form = |email: &str, body: &str| pb::CreateTicketRequest {
        subject: "From the website".into(),
        body: body.into(),
        contact_email: email.into(),
        ..Default::default()
    };
    let mut client = h.client();
    // A known user's email: linked to their account (staff see it); the form's answer tells nothing.
    let linked = client.create_ticket(as_service_for_ip(form("Known@Example.com", "one"), "10.1.0.1")).await.unwrap().into_inner();
    let lt = ticket(&linked);
    assert!(lt.account_id.is_empty() && lt.requester_user_id.is_empty() && lt.tier_now.is_empty() && lt.sla.is_none(), "{lt:?}");
    assert_eq!((lt.priority(), lt.queue(), lt.category()), (pb::Priority::Unspecified, pb::Queue::Unspecified, pb::Category::Other));
    assert_eq!(lt.channel, "contact_form");
    let staff_view = h.get(&agent, &lt.id).await.unwrap();
    assert_eq!(ticket(&staff_view).account_id, known.account_id.to_string());
    assert_eq!(ticket(&staff_view).requester_name, "Known Person");
    assert_eq!(h.get(&known, &lt.id).await.unwrap().messages.len(), 1, "the account's customer sees it");
    // An unknown email: no account.
    let loose = client.create_ticket(as_service_for_ip(form("stranger@example.com", "two"), "10.1.0.2")).await.unwrap().into_inner();
    assert!(ticket(&h.get(&agent, &ticket(&loose).id).await.unwrap()).account_id.is_empty());

    // Per email: the third within the window is refused, with a retry hint.
    client.create_ticket(as_service_for_ip(form("known@example.com", "three"), "10.1.0.3")).await.unwrap();
    let e = client.create_ticket(as_service_for_ip(form("known@example.com", "four"), "10.1.0.4")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let retry: u64 = e.metadata().get("retry-after-seconds").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // Per address: the fourth from one address is refused whatever the email.
    for n in 0..3 {
        client.create_ticket(as_service_for_ip(form(&format!("p{n}@example.com"), "x"), "10.9.9.9")).await.unwrap();
    }
    let e = client.create_ticket(as_service_for_ip(form("p9@example.com", "x"), "10.9.9.9")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(h.ticket_count().await, 6, "refused submissions store nothing");
    // A retried identical submission is answered, not refused.
    let again = client.create_ticket(as_service_for_ip(form("known@example.com", "one"), "10.1.0.9")).await.unwrap().into_inner();
    assert_eq!(ticket(&again).id, lt.id);
    assert_eq!(again.messages.len(), 1);
    h.stop().await;
}

/// What intake keeps for double submissions is forgotten once done (the sweeper deletes it, so
/// the tables stay small without autovacuum); what is still in its window stays and still works.
#[tokio::test]
async fn spent_idempotency_keys_and_fingerprints_are_deleted_and_live_ones_kept() {
    let h = start(&[("SUPPORT_ROUTER_SLA_SWEEP_INTERVAL", "100ms")]).await;
    let c = new_customer();
    h.sign_up(&c, "keys@example.com", "Kay").await;
    let keyed = |key: &str, subject: &str| pb::CreateTicketRequest {
        subject: subject.into(),
        body: "A question".into(),
        category: pb::Category::Technical as i32,
        idempotency_key: key.into(),
        ..Default::default()
    };
    let old = h.client().create_ticket(as_user(keyed("old-key", "Old"), &c)).await.unwrap().into_inner();
    h.client().create_ticket(as_user(keyed("", "Old, no key"), &c)).await.unwrap();
    h.client().create_ticket(as_user(keyed("live-key", "Live"), &c)).await.unwrap();
    h.client().create_ticket(as_user(keyed("", "Live, no key"), &c)).await.unwrap();
    // Age two of them past their retention (a day for keys, ten minutes for fingerprints).
    let pool = h.pool();
    sqlx::query("UPDATE ticket_requests SET created_at = now() - interval '25 hours' WHERE idempotency_key = 'old-key'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE ticket_fingerprints f SET created_at = now() - interval '11 minutes' FROM tickets t WHERE t.id = f.ticket_id AND t.subject = 'Old, no key'")
        .execute(pool)
        .await
        .unwrap();
    let left = || async {
        let keys: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM ticket_requests").fetch_all(pool).await.unwrap();
        let prints: i64 = sqlx::query_scalar("SELECT count(*) FROM ticket_fingerprints").fetch_one(pool).await.unwrap();
        (keys, prints)
    };
    sb_testkit::wait_for(sb_testkit::service::WAIT, "the spent rows deleted", || async {
        let (keys, prints) = left().await;
        (keys == ["live-key"] && prints == 1).then_some(())
    })
    .await;
    // The live key still answers its ticket; the forgotten one opens a new ticket.
    let before = h.ticket_count().await;
    h.client().create_ticket(as_user(keyed("live-key", "Live"), &c)).await.unwrap();
    assert_eq!(h.ticket_count().await, before);
    let again = h.client().create_ticket(as_user(keyed("old-key", "Old"), &c)).await.unwrap().into_inner();
    assert_ne!(ticket(&again).id, ticket(&old).id);
    h.stop().await;
}
