//! Identity's rules, free of I/O: normalised emails, password policy, names, roles, session tokens.

use std::fmt;

use sha2::{Digest, Sha256};

/// Why an input was refused; the message is safe to show the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { field, message: message.into() }
}

/// An email address, trimmed and lower-cased: the one form stored, compared and sent to the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let e = raw.trim().to_lowercase();
        if e.is_empty() {
            return Err(invalid("email", "is required"));
        }
        if e.len() > 254 {
            return Err(invalid("email", "is longer than 254 characters"));
        }
        let Some((local, domain)) = e.rsplit_once('@') else {
            return Err(invalid("email", "is not an email address"));
        };
        let ok_chars = |s: &str| {
            !s.is_empty() && s.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '@' && c != '<' && c != '>' && c != ',')
        };
        if !ok_chars(local)
            || local.len() > 64
            || !ok_chars(domain)
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(invalid("email", "is not an email address"));
        }
        Ok(Self(e))
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

/// A password that meets the policy. Never printed: its Debug is redacted.
pub struct Password(String);

impl Password {
    pub const MIN: usize = 10;
    pub const MAX: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let n = raw.chars().count();
        if n < Self::MIN {
            return Err(invalid("password", format!("must be at least {} characters", Self::MIN)));
        }
        if n > Self::MAX {
            return Err(invalid("password", format!("must be at most {} characters", Self::MAX)));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A person's or company's display name: trimmed, 1–100 characters, no control characters.
pub fn parse_name(field: &'static str, raw: &str) -> Result<String, Invalid> {
    let n = raw.trim();
    if n.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if n.chars().count() > 100 {
        return Err(invalid(field, "is longer than 100 characters"));
    }
    if n.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(n.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Agent,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Role::Customer),
            "agent" => Some(Role::Agent),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Support staff and the founder's team see every account.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Agent | Role::Admin)
    }
}

/// Opaque session tokens: 32 random bytes, URL-safe; only their SHA-256 is stored.
pub mod token {
    use base64::Engine;
    use rand::RngCore;

    use super::*;

    pub const PREFIX: &str = "sbs_";

    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn hash(token: &str) -> Vec<u8> {
        Sha256::digest(token.as_bytes()).to_vec()
    }

    /// Cheap shape check before any database work: refuses junk without a lookup.
    pub fn well_formed(token: &str) -> bool {
        token.len() == PREFIX.len() + 43
            && token.starts_with(PREFIX)
            && token[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse("  Ada.Lovelace@Example.COM ").unwrap().as_str(), "ada.lovelace@example.com");
        for bad in
            ["", "ada", "ada@", "@example.com", "ada@example", "a da@example.com", "ada@exa..mple.com", "ada@.example.com", "<a>@b.co"]
        {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn password_policy_and_redaction() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(257)).is_err());
        let p = Password::parse("correct horse battery").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name("name", "  Ada  ").unwrap(), "Ada");
        assert!(parse_name("name", "   ").is_err());
        assert!(parse_name("name", &"n".repeat(101)).is_err());
        assert!(parse_name("name", "a\u{0}b").is_err());
    }

    #[test]
    fn tokens_are_random_well_formed_and_hashed() {
        let (a, b) = (token::generate(), token::generate());
        assert_ne!(a, b);
        assert!(token::well_formed(&a), "{a}");
        assert!(!token::well_formed("sbs_short"));
        assert!(!token::well_formed(&a.replace("sbs_", "xxx_")));
        assert_eq!(token::hash(&a).len(), 32);
        assert_ne!(token::hash(&a), token::hash(&b));
    }

    #[test]
    fn roles_round_trip() {
        for r in [Role::Customer, Role::Agent, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert!(Role::Admin.is_staff() && Role::Agent.is_staff() && !Role::Customer.is_staff());
        assert_eq!(Role::parse("root"), None);
    }
}
