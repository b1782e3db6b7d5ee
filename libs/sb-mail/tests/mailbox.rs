//! MailboxMailer against a real PostgreSQL database with the identity service's migration.
//!
//! Multi-threaded runtimes: `TestDb`'s drop blocks the test's thread while it closes the pool, and
//! a pooled connection dropped just before is returned by a task that must run elsewhere.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use sb_mail::{Email, MailError, MailboxMailer, Mailer, StoredEmail};
use sb_testkit::TestDb;
use uuid::Uuid;

const MIGRATION: &str = include_str!("../../../services/identity/migrations/20261126000001_create_mailbox.sql");

async fn db(tag: &str) -> TestDb {
    let db = TestDb::new(tag).await.expect("test database");
    sqlx::raw_sql(MIGRATION).execute(&db.pool).await.expect("mailbox migration");
    db
}

fn email(to: &str, subject: &str) -> Email {
    Email {
        id: Uuid::now_v7(),
        to: to.into(),
        subject: subject.into(),
        text_body: format!("body of {subject}"),
        template: "welcome".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_the_same_email_twice_stores_it_once() {
    let db = db("mail_once").await;
    let m = MailboxMailer::new(db.pool.clone());
    assert_eq!(m.name(), "mailbox");
    let e = email("alice@example.com", "Welcome");
    m.send(&e).await.unwrap();
    // A redelivery of the same request, even one rendered differently, changes nothing.
    m.send(&Email { subject: "Welcome (again)".into(), ..e.clone() }).await.unwrap();

    let all = MailboxMailer::list(&db.pool, 10, None).await.unwrap();
    assert_eq!(all.len(), 1);
    let StoredEmail { id, to, subject, text_body, template, .. } = &all[0];
    assert_eq!(
        (id, to.as_str(), subject.as_str(), text_body.as_str(), template.as_str()),
        (&e.id, "alice@example.com", "Welcome", "body of Welcome", "welcome")
    );

    let mut conn = db.pool.acquire().await.unwrap();
    assert!(!MailboxMailer::store(&mut conn, &e).await.unwrap(), "store reports the duplicate");
    assert!(MailboxMailer::store(&mut conn, &email("alice@example.com", "Other")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_newest_first_filters_by_recipient_and_limits() {
    let db = db("mail_list").await;
    let m = MailboxMailer::new(db.pool.clone());
    for (to, subject) in [("a@example.com", "1"), ("b@example.com", "2"), ("a@example.com", "3"), ("a@example.com", "4")] {
        m.send(&email(to, subject)).await.unwrap();
    }
    let subjects = |v: Vec<StoredEmail>| v.into_iter().map(|e| e.subject).collect::<Vec<_>>();
    assert_eq!(subjects(MailboxMailer::list(&db.pool, 10, None).await.unwrap()), ["4", "3", "2", "1"]);
    assert_eq!(subjects(MailboxMailer::list(&db.pool, 10, Some("a@example.com")).await.unwrap()), ["4", "3", "1"]);
    assert_eq!(subjects(MailboxMailer::list(&db.pool, 2, Some("a@example.com")).await.unwrap()), ["4", "3"]);
    assert_eq!(subjects(MailboxMailer::list(&db.pool, 10, Some("b@example.com")).await.unwrap()), ["2"]);
    assert!(MailboxMailer::list(&db.pool, 10, Some("nobody@example.com")).await.unwrap().is_empty());
    assert!(MailboxMailer::list(&db.pool, -1, None).await.unwrap().is_empty());

    let json = serde_json::to_value(&MailboxMailer::list(&db.pool, 1, None).await.unwrap()[0]).unwrap();
    for key in ["id", "to", "subject", "text_body", "template", "created_at"] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_address_is_permanent_and_stores_nothing() {
    let db = db("mail_bad").await;
    let m = MailboxMailer::new(db.pool.clone());
    let err = m.send(&email("not an address", "x")).await.unwrap_err();
    assert!(matches!(err, MailError::Permanent(_)), "{err:?}");
    assert!(MailboxMailer::list(&db.pool, 10, None).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_is_idempotent_and_a_lost_database_is_transient() {
    let db = db("mail_mig").await;
    sqlx::raw_sql(MIGRATION).execute(&db.pool).await.unwrap();
    let m = MailboxMailer::new(db.pool.clone());
    db.pool.close().await;
    let err = m.send(&email("a@example.com", "x")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}
