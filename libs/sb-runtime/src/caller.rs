//! Who is calling a gRPC service: another Switchboard service (it holds the shared service token)
//! acting on its own or on behalf of a signed-in user whose principal it forwards.
//!
//! The gateway authenticates the user's session with identity, then forwards the principal with
//! the service token; the service behind checks the token and applies the principal's role and
//! tenant itself (defence in depth: a bug in a gateway route cannot reach another tenant's data).

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tonic::{Status, metadata::MetadataMap};
use uuid::Uuid;

pub const SERVICE_TOKEN_HEADER: &str = "x-switchboard-service";
const USER_ID: &str = "x-switchboard-user-id";
const ACCOUNT_ID: &str = "x-switchboard-account-id";
const ROLE: &str = "x-switchboard-role";
const IMPERSONATED: &str = "x-switchboard-impersonated";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Agent,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Agent => "agent",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Self::Customer),
            "agent" => Some(Self::Agent),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A signed-in user, as forwarded by the service that authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub role: Role,
    /// An admin is acting as this user.
    pub impersonated: bool,
}

impl Principal {
    pub fn is_staff(&self) -> bool {
        matches!(self.role, Role::Agent | Role::Admin)
    }
}

/// The checked caller of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A service acting for itself (e.g. support-router reading a plan).
    Service,
    /// A service acting for this user.
    User(Principal),
}

impl Caller {
    /// May this caller read `account`? Customers: their own only (NOT_FOUND otherwise, so other
    /// tenants' ids are not confirmed); staff and services: any.
    pub fn may_read(&self, account: Uuid) -> Result<(), Status> {
        match self {
            Self::Service => Ok(()),
            Self::User(p) if p.is_staff() || p.account_id == account => Ok(()),
            Self::User(_) => Err(Status::not_found("account not found")),
        }
    }

    /// May this caller act (pay, change billing) for `account`? Only the account's own customers,
    /// never through an impersonation session; services may.
    pub fn may_act_for(&self, account: Uuid) -> Result<(), Status> {
        match self {
            Self::Service => Ok(()),
            Self::User(p) if p.account_id != account && !p.is_staff() => Err(Status::not_found("account not found")),
            Self::User(p) if p.impersonated => Err(Status::permission_denied("an impersonation session cannot do this")),
            Self::User(p) if p.role != Role::Customer || p.account_id != account => {
                Err(Status::permission_denied("only the account's own users can do this"))
            }
            Self::User(_) => Ok(()),
        }
    }
}

/// Checks the service token on incoming calls.
#[derive(Clone)]
pub struct ServiceAuth {
    token_hash: [u8; 32],
}

impl ServiceAuth {
    pub fn new(token: &SecretString) -> Self {
        Self { token_hash: Sha256::digest(token.expose_secret().as_bytes()).into() }
    }

    /// The caller, or UNAUTHENTICATED without a valid service token / INVALID_ARGUMENT with a
    /// malformed principal.
    pub fn check(&self, md: &MetadataMap) -> Result<Caller, Status> {
        let token = header(md, SERVICE_TOKEN_HEADER).ok_or_else(|| Status::unauthenticated("service token required"))?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compared as digests, without an early exit.
        if hash.iter().zip(&self.token_hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return Err(Status::unauthenticated("invalid service token"));
        }
        let Some(user) = header(md, USER_ID) else { return Ok(Caller::Service) };
        let bad = |what: &str| Status::invalid_argument(format!("forwarded principal: bad {what}"));
        Ok(Caller::User(Principal {
            user_id: Uuid::parse_str(user).map_err(|_| bad("user id"))?,
            account_id: header(md, ACCOUNT_ID).and_then(|a| Uuid::parse_str(a).ok()).ok_or_else(|| bad("account id"))?,
            role: header(md, ROLE).and_then(Role::parse).ok_or_else(|| bad("role"))?,
            impersonated: header(md, IMPERSONATED).is_some(),
        }))
    }
}

fn header<'a>(md: &'a MetadataMap, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Adds the service token and, when acting for a user, their principal to an outgoing call.
pub fn attach(md: &mut MetadataMap, token: &SecretString, principal: Option<&Principal>) {
    let mut put = |k: &'static str, v: &str| {
        if let Ok(v) = v.parse() {
            md.insert(k, v);
        }
    };
    put(SERVICE_TOKEN_HEADER, token.expose_secret());
    if let Some(p) = principal {
        put(USER_ID, &p.user_id.to_string());
        put(ACCOUNT_ID, &p.account_id.to_string());
        put(ROLE, p.role.as_str());
        if p.impersonated {
            put(IMPERSONATED, "1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, impersonated: bool) -> Principal {
        Principal { user_id: Uuid::now_v7(), account_id: Uuid::now_v7(), role, impersonated }
    }

    #[test]
    fn round_trip_and_token_check() {
        let token = SecretString::from("a-service-token-long-enough");
        let auth = ServiceAuth::new(&token);
        let p = principal(Role::Customer, true);
        let mut md = MetadataMap::new();
        attach(&mut md, &token, Some(&p));
        assert_eq!(auth.check(&md).ok(), Some(Caller::User(p)));
        let mut md = MetadataMap::new();
        attach(&mut md, &SecretString::from("some-other-token-entirely"), None);
        assert_eq!(auth.check(&md).map_err(|s| s.code()), Err(tonic::Code::Unauthenticated));
        assert_eq!(auth.check(&MetadataMap::new()).map_err(|s| s.code()), Err(tonic::Code::Unauthenticated));
    }

    #[test]
    fn tenant_and_role_rules() {
        let own = principal(Role::Customer, false);
        let account = own.account_id;
        let other = Uuid::now_v7();
        let customer = Caller::User(own.clone());
        assert!(customer.may_read(account).is_ok() && customer.may_act_for(account).is_ok());
        assert_eq!(customer.may_read(other).map_err(|s| s.code()), Err(tonic::Code::NotFound));
        assert_eq!(customer.may_act_for(other).map_err(|s| s.code()), Err(tonic::Code::NotFound));
        let impersonated = Caller::User(Principal { impersonated: true, ..own });
        assert!(impersonated.may_read(account).is_ok());
        assert_eq!(impersonated.may_act_for(account).map_err(|s| s.code()), Err(tonic::Code::PermissionDenied));
        let agent = Caller::User(principal(Role::Agent, false));
        assert!(agent.may_read(other).is_ok());
        assert_eq!(agent.may_act_for(other).map_err(|s| s.code()), Err(tonic::Code::PermissionDenied));
        assert!(Caller::Service.may_act_for(other).is_ok());
    }
}
