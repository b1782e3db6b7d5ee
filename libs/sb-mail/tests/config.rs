//! SmtpConfig parsing and secrecy: no error or Debug output ever carries the password.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use sb_mail::{ConfigError, DEFAULT_FROM, DEFAULT_PORT, DEFAULT_TIMEOUT, SmtpConfig, SmtpMailer};
use secrecy::{ExposeSecret, SecretString};

const SECRET: &str = "hunter2secret";

#[test]
fn parses_host_port_and_percent_encoded_credentials() {
    let c = SmtpConfig::from_url("smtp://mail%2Buser:p%40ss%3Aw%25rd@mail.example.com:2525").unwrap();
    assert_eq!(c.host, "mail.example.com");
    assert_eq!(c.port, 2525);
    assert_eq!(c.username.as_deref(), Some("mail+user"));
    assert_eq!(c.password.as_ref().unwrap().expose_secret(), "p@ss:w%rd");
    assert_eq!(c.from, DEFAULT_FROM);
    assert_eq!(c.timeout, DEFAULT_TIMEOUT);
}

#[test]
fn a_raw_at_or_colon_in_the_password_still_parses() {
    let c = SmtpConfig::from_url("smtp://user:pa:ss@word@relay.internal").unwrap();
    assert_eq!(c.host, "relay.internal");
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(c.password.as_ref().unwrap().expose_secret(), "pa:ss@word");
}

#[test]
fn defaults_and_other_hosts() {
    let c = SmtpConfig::from_url("smtp://localhost").unwrap();
    assert_eq!((c.host.as_str(), c.port, c.username.is_none(), c.password.is_none()), ("localhost", DEFAULT_PORT, true, true));
    let c = SmtpConfig::from_url("SMTP://127.0.0.1:1025/").unwrap();
    assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 1025));
    let c = SmtpConfig::from_url("smtp://[::1]:2525").unwrap();
    assert_eq!((c.host.as_str(), c.port), ("::1", 2525));
    let c = c.with_from("Ops <ops@example.com>").with_timeout(Duration::from_secs(3));
    assert_eq!((c.from.as_str(), c.timeout), ("Ops <ops@example.com>", Duration::from_secs(3)));
}

#[test]
fn tls_schemes_are_refused_for_now() {
    for url in ["smtps://user:hunter2secret@host:465", "smtp+starttls://host:587"] {
        assert_eq!(SmtpConfig::from_url(url).unwrap_err(), ConfigError::TlsUnsupported);
    }
}

#[test]
fn errors_are_clear_and_never_contain_the_password() {
    let cases = [
        ("smtp://user:hunter2secret@host:notaport", "port"),
        ("smtp://user:hunter2secret@host:0", "port"),
        ("smtp://user:hunter2secret@host:70000", "port"),
        ("smtp://user:hunter2secret", "port"), // no '@': looks like host "user", port "hunter2secret"
        ("smtp://user:hunter2secret@", "host is empty"),
        ("smtp://user:hunter2secret@:25", "host is empty"),
        ("smtp://user:hunter2secret%zz@host", "password"),
        ("smtp://:hunter2secret@host", "user name is empty"),
        ("smtp://hunter2secret@host", "needs a password"),
        ("smtp://user:hunter2secret@host/path", "path"),
        ("smtp://user:hunter2secret@host?x=1", "query"),
        ("http://user:hunter2secret@host", "scheme"),
        ("user:hunter2secret@host", "scheme"),
        ("smtp://user:hunter2secret@ho st", "invalid characters"),
    ];
    for (url, expect) in cases {
        let err = SmtpConfig::from_url(url).unwrap_err();
        let (text, debug) = (err.to_string(), format!("{err:?}"));
        assert!(!text.contains(SECRET) && !debug.contains(SECRET), "{url}: leaked in {text} / {debug}");
        assert!(!text.contains("hunter2") && !debug.contains("hunter2"), "{url}: leaked in {text}");
        assert!(text.contains(expect), "{url}: expected {expect:?} in {text:?}");
    }
}

#[test]
fn debug_hides_the_password() {
    let c = SmtpConfig::from_url("smtp://user:hunter2secret@host:2525").unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("***") && debug.contains("user") && debug.contains("2525"), "{debug}");
    let m = SmtpMailer::new(c).unwrap();
    assert!(!format!("{m:?}").contains(SECRET));
}

#[test]
fn the_mailer_validates_its_config() {
    let bad_from = SmtpConfig::new("localhost", 25, "not an address");
    assert!(matches!(SmtpMailer::new(bad_from).unwrap_err(), ConfigError::From { .. }));
    let no_user = SmtpConfig { password: Some(SecretString::from(SECRET)), ..SmtpConfig::new("localhost", 25, "a@b.c") };
    let err = SmtpMailer::new(no_user).unwrap_err();
    assert!(!err.to_string().contains(SECRET));
    let zero = SmtpConfig::new("localhost", 25, "a@b.c").with_timeout(Duration::ZERO);
    assert!(SmtpMailer::new(zero).is_err());
    assert!(SmtpMailer::new(SmtpConfig::new("localhost", 25, "Name <a@b.c>")).is_ok());
}
