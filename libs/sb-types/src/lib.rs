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

/// A person's, company's or reason's text: at most [`NAME_MAX_CHARS`] characters, not blank, no
/// control characters; stored trimmed.
pub fn parse_name(field: &'static str, raw: &str) -> Result<String, Invalid> {
    if raw.chars().count() > NAME_MAX_CHARS {
        return Err(Invalid::new(field, format!("is longer than {NAME_MAX_CHARS} characters")));
    }
    if raw.chars().any(char::is_control) {
        return Err(Invalid::new(field, "contains control characters"));
    }
    let n = raw.trim();
    if n.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    Ok(n.to_owned())
}

pub const NAME_MAX_CHARS: usize = 100;

/// A password's length, in characters (identity's policy, documented by the gateway).
pub const PASSWORD_MIN_CHARS: usize = 10;
pub const PASSWORD_MAX_CHARS: usize = 256;

/// What [`parse_name`] accepts, as a JSON-schema pattern (with `maxLength` [`NAME_MAX_CHARS`]).
pub const NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

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
