//! Switchboard's shared vocabulary as types: the ids every event and call carries, roles, an
//! account's access status and normalised emails. Parsing is the only way in, so a value of one
//! of these types is always valid; unknown words are errors, never a default.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A value that does not parse as the type asked for; the message is safe to show a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct Invalid {
    pub what: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(what: &'static str, message: impl Into<String>) -> Self {
        Self { what, message: message.into() }
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                Uuid::parse_str(s.trim()).map(Self).map_err(|_| Invalid::new($what, "not a valid id (a UUID)"))
            }
        }
    };
}

id_type!(
    /// A customer account (tenant); staff belong to an account of their own.
    AccountId,
    "account_id"
);
id_type!(
    /// A person who signs in.
    UserId,
    "user_id"
);
id_type!(
    /// A support ticket.
    TicketId,
    "ticket_id"
);

/// What a signed-in user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    /// A customer user: their own account's records only.
    Customer,
    /// Support staff: every account's records, no administration.
    Agent,
    /// The founder's team: everything, including administration.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Customer, Role::Agent, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }

    /// Support agents and admins see every account.
    pub fn is_staff(self) -> bool {
        match self {
            Role::Agent | Role::Admin => true,
            Role::Customer => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| Invalid::new("role", "must be customer, agent or admin"))
    }
}

/// An account's portal access, as billing derives it from Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AccessStatus {
    /// No checkout started.
    None,
    /// Checkout started, payment not confirmed yet.
    Pending,
    Active,
    /// A payment failed; access continues until the grace period ends.
    PastDue,
    /// Cancelled, refunded or grace period over.
    Revoked,
}

impl AccessStatus {
    pub const ALL: [AccessStatus; 5] =
        [AccessStatus::None, AccessStatus::Pending, AccessStatus::Active, AccessStatus::PastDue, AccessStatus::Revoked];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Revoked => "revoked",
        }
    }

    /// Access to the portal's paid features (past_due keeps it during the grace period).
    pub fn grants(self) -> bool {
        match self {
            Self::Active | Self::PastDue => true,
            Self::None | Self::Pending | Self::Revoked => false,
        }
    }
}

impl fmt::Display for AccessStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessStatus {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        AccessStatus::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| Invalid::new("access status", "must be none, pending, active, past_due or revoked"))
    }
}

/// Declares a closed set of words stored and sent as text: an enum with `ALL`, `as_str`,
/// `Display`, a `FromStr` that refuses any other word (naming `what` it was meant to be), serde and
/// sqlx (`text`) in the same words. Every crate's word sets use it (the caller needs `serde` and
/// `sqlx`); attributes before the name (docs, extra derives) go on the enum.
#[macro_export]
macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize, ::sqlx::Type)]
        #[serde(rename_all = "snake_case")]
        #[sqlx(type_name = "text", rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::Invalid;
            fn from_str(s: &str) -> Result<Self, $crate::Invalid> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let words: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    $crate::Invalid::new($what, format!("must be one of {}", words.join(", ")))
                })
            }
        }
    };
}

word_enum!(
    /// What a support ticket is about (the requester's choice; routing may infer it).
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    TicketCategory, "category" {
        Billing = "billing",
        Technical = "technical",
        Account = "account",
        Other = "other",
    }
);

word_enum!(
    /// Where a ticket stands.
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    TicketStatus, "status" {
        /// Opened, no answer yet ("received").
        New = "new",
        /// The customer wrote last ("waiting on us").
        Open = "open",
        /// An agent answered; the customer's turn ("waiting on you"); SLA clocks pause.
        WaitingOnCustomer = "waiting_on_customer",
        Resolved = "resolved",
    }
);

word_enum!(
    /// How soon a ticket needs a person, lowest first.
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    TicketPriority, "priority" {
        Low = "low",
        Normal = "normal",
        High = "high",
        Urgent = "urgent",
    }
);

word_enum!(
    /// Which agents' list a ticket is on.
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    TicketQueue, "queue" {
        Billing = "billing",
        Technical = "technical",
        Account = "account",
        /// Urgent tickets: a person decides; no automation moves a ticket out of it.
        HumanReview = "human_review",
    }
);

word_enum!(
    /// One of a ticket's SLA clocks.
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    SlaClock, "clock" {
        FirstResponse = "first_response",
        NextResponse = "next_response",
        Resolution = "resolution",
    }
);

/// An email address, trimmed and lower-cased: the one form stored, compared and sent to the CRM.
/// Deserializing checks it like [`Email::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[serde(try_from = "String", into = "String")]
#[sqlx(transparent)]
pub struct Email(String);

/// Characters allowed in the part of an email address before the `@` (RFC 5322's `atext` and `.`).
const LOCAL_CHARS: &str = "!#$%&'*+/=?^_`{|}~.-";

impl Email {
    /// The addresses [`Email::parse`] accepts, as a JSON-schema pattern: surrounding spaces, then a
    /// local part of 1–64 ASCII `atext` characters or dots, `@`, and a domain of two or more labels
    /// of ASCII letters, digits and `-`. (No internationalised addresses yet.)
    pub const PATTERN: &'static str = r"^ *[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+ *$";
    /// Longest input accepted, surrounding spaces included.
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let invalid = |m: &str| Invalid::new("email", m);
        if raw.chars().count() > Self::MAX_LEN {
            return Err(invalid("is longer than 254 characters"));
        }
        let e = raw.trim_matches(' ');
        if e.is_empty() {
            return Err(invalid("is required"));
        }
        let Some((local, domain)) = e.split_once('@') else {
            return Err(invalid("is not an email address"));
        };
        let local_ok = (1..=64).contains(&local.len()) && local.chars().all(|c| c.is_ascii_alphanumeric() || LOCAL_CHARS.contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok =
            labels.len() >= 2 && labels.iter().all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !local_ok || !domain_ok {
            return Err(invalid("is not an email address"));
        }
        Ok(Self(e.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Email {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Email {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

/// Whitespace as JSON-schema patterns (ECMA-262 `\s`) count it: Unicode `White_Space` plus U+FEFF.
/// Text made only of it is blank.
fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// One line of text — a name, a subject, a reason: at most `max` characters (counted before
/// trimming, as the schema's `maxLength` does), no control characters, not blank; stored trimmed.
/// [`LINE_PATTERN`] says the same as a JSON-schema pattern.
pub fn parse_line(field: &'static str, raw: &str, max: usize) -> Result<String, Invalid> {
    if raw.chars().count() > max {
        return Err(Invalid::new(field, format!("is longer than {max} characters")));
    }
    if raw.chars().any(char::is_control) {
        return Err(Invalid::new(field, "contains control characters (it is one line of text)"));
    }
    let line = raw.trim_matches(is_space);
    if line.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    Ok(line.to_owned())
}

/// What [`parse_line`] accepts, as a JSON-schema pattern (with a `maxLength`): no control
/// characters (C0, DEL, C1) and at least one that is not whitespace. The classes are spelled out
/// so Python's and ECMA's `\s` (which differ) read it alike.
pub const LINE_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff][^\x00-\x1f\x7f-\x9f]*$";

/// As [`parse_line`], but blank text (only whitespace) means none was given.
/// [`OPTIONAL_LINE_PATTERN`] says the same as a JSON-schema pattern.
pub fn parse_optional_line(field: &'static str, raw: &str, max: usize) -> Result<Option<String>, Invalid> {
    if raw.chars().count() <= max && raw.chars().all(|c| is_space(c) && !c.is_control()) {
        return Ok(None);
    }
    parse_line(field, raw, max).map(Some)
}

/// What [`parse_optional_line`] accepts: no control characters, possibly blank.
pub const OPTIONAL_LINE_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

/// A person's or company's name.
pub fn parse_name(field: &'static str, raw: &str) -> Result<String, Invalid> {
    parse_line(field, raw, NAME_MAX_CHARS)
}
pub const NAME_MAX_CHARS: usize = 100;
pub const NAME_PATTERN: &str = LINE_PATTERN;

/// A ticket's subject.
pub fn parse_subject(raw: &str) -> Result<String, Invalid> {
    parse_line("subject", raw, SUBJECT_MAX_CHARS)
}
pub const SUBJECT_MAX_CHARS: usize = 200;
pub const SUBJECT_PATTERN: &str = LINE_PATTERN;

/// Why a person did something (a change of priority, a reopening, an impersonation).
pub fn parse_reason(raw: &str) -> Result<String, Invalid> {
    parse_line("reason", raw, REASON_MAX_CHARS)
}
pub const REASON_MAX_CHARS: usize = 500;
pub const REASON_PATTERN: &str = LINE_PATTERN;

/// A message's text (a ticket's body, a reply, a note): at most [`BODY_MAX_CHARS`] characters,
/// line breaks and tabs allowed but no other control characters, not blank; stored trimmed.
pub fn parse_body(field: &'static str, raw: &str) -> Result<String, Invalid> {
    if raw.chars().count() > BODY_MAX_CHARS {
        return Err(Invalid::new(field, format!("is longer than {BODY_MAX_CHARS} characters")));
    }
    if raw.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(Invalid::new(field, "contains control characters (other than line breaks and tabs)"));
    }
    let text = raw.trim_matches(is_space);
    if text.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    Ok(text.to_owned())
}
pub const BODY_MAX_CHARS: usize = 10_000;
/// What [`parse_body`] accepts, as a JSON-schema pattern (with `maxLength` [`BODY_MAX_CHARS`]).
pub const BODY_PATTERN: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";

/// A password's length, in characters (identity's policy, documented by the gateway).
pub const PASSWORD_MIN_CHARS: usize = 10;
pub const PASSWORD_MAX_CHARS: usize = 256;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_parse_display_and_serialize_as_plain_uuids() {
        let a = AccountId::new();
        assert_eq!(a.to_string().parse::<AccountId>().unwrap(), a);
        assert_eq!(serde_json::to_value(a).unwrap(), serde_json::json!(a.as_uuid().to_string()));
        let err = "nope".parse::<UserId>().unwrap_err();
        assert_eq!(err.to_string(), "user_id: not a valid id (a UUID)");
    }

    #[test]
    fn roles_and_statuses_round_trip_and_refuse_unknown_words() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(serde_json::to_value(r).unwrap(), serde_json::json!(r.as_str()));
        }
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Admin.is_staff() && Role::Agent.is_staff() && !Role::Customer.is_staff());
        for s in AccessStatus::ALL {
            assert_eq!(s.as_str().parse::<AccessStatus>().unwrap(), s);
            assert_eq!(serde_json::from_value::<AccessStatus>(serde_json::json!(s.as_str())).unwrap(), s);
        }
        assert!(serde_json::from_value::<AccessStatus>(serde_json::json!("paused")).is_err());
        assert!(AccessStatus::PastDue.grants() && !AccessStatus::Pending.grants());
    }

    #[test]
    fn ticket_words_round_trip_and_order_priorities() {
        for p in TicketPriority::ALL {
            assert_eq!(p.as_str().parse::<TicketPriority>().unwrap(), *p);
            assert_eq!(serde_json::to_value(p).unwrap(), serde_json::json!(p.as_str()));
        }
        assert!(TicketPriority::Urgent > TicketPriority::High && TicketPriority::Low < TicketPriority::Normal);
        assert_eq!("human_review".parse::<TicketQueue>().unwrap(), TicketQueue::HumanReview);
        let err = "sales".parse::<TicketCategory>().unwrap_err();
        assert_eq!(err.to_string(), "category: must be one of billing, technical, account, other");
    }

    #[test]
    fn subjects_and_bodies_are_bounded_and_not_blank() {
        assert_eq!(parse_subject("  Invoice question ").unwrap(), "Invoice question");
        assert!(parse_subject("   ").is_err() && parse_subject("a\tb").is_err() && parse_subject(&"s".repeat(201)).is_err());
        assert_eq!(parse_body("body", "\n  Hello,\nI was charged twice.\n").unwrap(), "Hello,\nI was charged twice.");
        assert!(parse_body("body", " \n\t\r ").is_err() && parse_body("body", "a\0b").is_err());
        assert!(parse_body("body", &"b".repeat(10_001)).is_err() && parse_body("body", &"b".repeat(10_000)).is_ok());
        assert!(parse_body("body", "a\u{1}b").is_err() && parse_body("body", "\u{feff}\u{3000}").is_err());
        assert_eq!(parse_reason(&"r".repeat(500)).unwrap().len(), 500);
        assert_eq!(parse_optional_line("name", " \u{3000} ", 100).unwrap(), None);
        assert_eq!(parse_optional_line("name", " Ada ", 100).unwrap().as_deref(), Some("Ada"));
        assert!(parse_optional_line("name", "\t", 100).is_err() && parse_optional_line("name", &" ".repeat(101), 100).is_err());
        assert!(parse_reason(&"r".repeat(501)).is_err() && parse_reason("two\nlines").is_err());
    }

    /// The patterns the gateway publishes accept exactly what the parsers accept: every character
    /// of the first planes alone, between letters, and around one.
    #[test]
    fn patterns_agree_with_the_parsers() {
        let line = regex::Regex::new(LINE_PATTERN).unwrap();
        let optional = regex::Regex::new(OPTIONAL_LINE_PATTERN).unwrap();
        let body = regex::Regex::new(BODY_PATTERN).unwrap();
        let chars = (0u32..0x3400).chain([0xfeff, 0xfffd, 0x1f680]).filter_map(char::from_u32);
        for c in chars {
            for s in [format!("{c}"), format!("a{c}b"), format!("{c}a{c}"), format!("{c}{c}")] {
                assert_eq!(line.is_match(&s), parse_line("x", &s, 10).is_ok(), "line {s:?}");
                assert_eq!(body.is_match(&s), parse_body("x", &s).is_ok(), "body {s:?}");
                assert_eq!(optional.is_match(&s), parse_optional_line("x", &s, 10).is_ok(), "optional {s:?}");
            }
        }
    }

    #[test]
    fn names_are_bounded_not_blank_and_free_of_control_characters() {
        assert_eq!(parse_name("name", "  Ada  ").unwrap(), "Ada");
        assert!(parse_name("name", "   ").is_err());
        assert!(parse_name("name", &"n".repeat(101)).is_err());
        assert!(parse_name("name", &format!("{} ", "n".repeat(100))).is_err(), "counted before trimming, as the schema does");
        assert!(parse_name("name", "a\u{0}b").is_err());
        assert!(parse_name("name", "Ada\n").is_err());
        assert_eq!(parse_name("name", "Zoë 🚀").unwrap(), "Zoë 🚀");
    }

    #[test]
    fn emails_are_normalised_and_checked_also_when_deserialized() {
        assert_eq!(Email::parse("  Ada.Lovelace@Example.COM ").unwrap().as_str(), "ada.lovelace@example.com");
        for bad in
            ["", "ada", "ada@", "@example.com", "ada@example", "a da@example.com", "ada@exa..mple.com", "ada@.example.com", "<a>@b.co"]
        {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(serde_json::from_value::<Email>(serde_json::json!("not an email")).is_err());
        assert_eq!(Email::parse("o'brien+tag@mail.example.ie").unwrap().as_str(), "o'brien+tag@mail.example.ie");
        for bad in ["\tada@example.com", "ada@example.com\n", "ädä@example.com", "ada@exämple.com", "ada@-", "a@b"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("  {}@example.com", "a".repeat(60))).is_ok());
        assert!(Email::parse(&format!("{}@{}.com", "a".repeat(64), "b".repeat(186))).is_err(), "255 characters");
        assert_eq!(serde_json::from_value::<Email>(serde_json::json!("A@B.co")).unwrap().as_str(), "a@b.co");
    }
}
