//! SmtpMailer against a real SMTP conversation (sb_testkit's fake server): what arrives, and how
//! every kind of failure is classified.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use sb_mail::{Email, MailError, Mailer, SmtpConfig, SmtpMailer};
use sb_testkit::smtp::{FakeSmtp, Mode, closed_port};
use secrecy::SecretString;
use uuid::Uuid;

const PASSWORD: &str = "Pa55:w0rd@smtp-sekret";

fn email(to: &str) -> Email {
    Email {
        id: Uuid::now_v7(),
        to: to.into(),
        subject: "Welcome to Switchboard".into(),
        text_body: "Hello Alice,\r\n.this line starts with a dot\r\n..and this one with two\r\nBye\r\n".into(),
        template: "welcome".into(),
    }
}

fn config(port: u16) -> SmtpConfig {
    SmtpConfig::new("127.0.0.1", port, "Switchboard <noreply@example.com>").with_timeout(Duration::from_millis(500))
}

fn mailer(port: u16) -> SmtpMailer {
    SmtpMailer::new(config(port)).expect("valid config")
}

fn mailer_with_auth(port: u16) -> SmtpMailer {
    SmtpMailer::new(config(port).with_credentials("mailer", SecretString::from(PASSWORD))).expect("valid config")
}

/// The password in any form lettre could have sent it in.
fn assert_no_password(e: &MailError) {
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
        assert!(!text.contains("sekret"), "password leaked: {text}");
    }
}

#[tokio::test]
async fn a_sent_email_arrives_with_its_headers_body_and_deterministic_message_id() {
    let smtp = FakeSmtp::start().await.unwrap();
    let m = mailer(smtp.port());
    assert_eq!(m.name(), "smtp");
    let e = email("Alice <alice@example.com>");

    m.send(&e).await.unwrap();

    let got = smtp.messages();
    assert_eq!(got.len(), 1);
    let mail = &got[0];
    assert_eq!(mail.from, "noreply@example.com");
    assert_eq!(mail.to, vec!["alice@example.com".to_string()]);
    assert_eq!(mail.message_id.as_deref(), Some(format!("<{}@switchboard>", e.id).as_str()));
    assert_eq!(mail.message_id.clone().unwrap(), SmtpMailer::message_id(&e));
    assert_eq!(mail.header("Subject").as_deref(), Some("Welcome to Switchboard"));
    assert!(mail.header("To").unwrap().contains("alice@example.com"));
    assert!(mail.header("From").unwrap().contains("noreply@example.com"));
    assert!(mail.header("Content-Type").unwrap().starts_with("text/plain"));
    assert!(mail.header("Date").is_some());
    // Dot-stuffed on the wire by lettre, unstuffed by the server: the body arrives as written.
    assert_eq!(mail.body(), "Hello Alice,\r\n.this line starts with a dot\r\n..and this one with two\r\nBye\r\n");
    assert_eq!(mail.auth_user, None);
}

#[tokio::test]
async fn a_retried_send_carries_the_same_message_id() {
    let smtp = FakeSmtp::start().await.unwrap();
    let m = mailer(smtp.port());
    let e = email("bob@example.com");
    m.send(&e).await.unwrap();
    m.send(&e).await.unwrap();
    let ids: Vec<_> = smtp.messages().into_iter().map(|m| m.message_id).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "downstream can recognise the duplicate");
    let other = email("bob@example.com");
    m.send(&other).await.unwrap();
    assert_ne!(smtp.messages()[2].message_id, ids[0]);
}

#[tokio::test]
async fn credentials_are_used_and_only_the_user_name_is_seen() {
    let smtp = FakeSmtp::start().await.unwrap();
    let m = mailer_with_auth(smtp.port());
    m.send(&email("carol@example.com")).await.unwrap();
    let mail = &smtp.messages()[0];
    assert_eq!(mail.auth_user.as_deref(), Some("mailer"));
    assert!(!format!("{m:?}").contains("sekret"));
}

#[tokio::test]
async fn a_421_at_the_greeting_is_transient_and_the_mail_goes_out_once_the_server_is_back() {
    let smtp = FakeSmtp::start().await.unwrap();
    let m = mailer_with_auth(smtp.port());
    let e = email("dave@example.com");

    smtp.set_mode(Mode::TempFail);
    let err = m.send(&e).await.unwrap_err();
    assert!(matches!(err, MailError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("421"), "{err}");
    assert_no_password(&err);
    assert_eq!(smtp.count(), 0);

    smtp.set_mode(Mode::Accept);
    m.send(&e).await.unwrap();
    assert_eq!(smtp.count(), 1);
}

#[tokio::test]
async fn a_closed_port_is_transient() {
    let m = mailer_with_auth(closed_port());
    let err = m.send(&email("erin@example.com")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_no_password(&err);
}

#[tokio::test]
async fn a_server_that_went_away_is_transient() {
    let smtp = FakeSmtp::start().await.unwrap();
    let port = smtp.port();
    let m = mailer(port);
    m.send(&email("frank@example.com")).await.unwrap();
    smtp.shutdown().await;
    let err = m.send(&email("frank@example.com")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn a_rejected_recipient_is_permanent_with_the_servers_message() {
    let smtp = FakeSmtp::start().await.unwrap();
    smtp.set_mode(Mode::RejectRecipient);
    let m = mailer_with_auth(smtp.port());
    let err = m.send(&email("nobody@example.com")).await.unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("550"), "{text}");
    assert!(text.contains("Recipient address rejected"), "{text}");
    assert_no_password(&err);
    assert_eq!(smtp.count(), 0);
}

#[tokio::test]
async fn a_server_that_never_greets_is_transient_within_the_timeout() {
    let smtp = FakeSmtp::start().await.unwrap();
    smtp.set_mode(Mode::Hang);
    let m = mailer_with_auth(smtp.port());
    let started = Instant::now();
    let err = m.send(&email("gina@example.com")).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_transient(), "{err:?}");
    assert!(took >= Duration::from_millis(450), "gave up too early: {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?} with a 500 ms timeout");
    assert_eq!(smtp.connections(), 1);
    assert_no_password(&err);
}

#[tokio::test]
async fn rejected_credentials_are_transient_and_never_echo_the_password() {
    let smtp = FakeSmtp::start().await.unwrap();
    smtp.set_mode(Mode::RejectAuth);
    let m = mailer_with_auth(smtp.port());
    let err = m.send(&email("hank@example.com")).await.unwrap_err();
    assert!(err.is_transient(), "a credentials problem must not drop mail: {err:?}");
    assert!(err.to_string().contains("535"), "{err}");
    assert_no_password(&err);
}

#[tokio::test]
async fn an_unparseable_address_is_permanent_without_connecting() {
    let smtp = FakeSmtp::start().await.unwrap();
    let m = mailer(smtp.port());
    for bad in ["", "not-an-address", "a@", "@b.c", "x@y.z\r\nBcc: evil@example.com"] {
        let err = m.send(&email(bad)).await.unwrap_err();
        assert!(err.is_permanent(), "{bad:?}: {err:?}");
    }
    assert_eq!(smtp.connections(), 0);
}
