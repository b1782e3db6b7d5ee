//! Who is calling a gRPC service, and what they may do: the one caller model every service uses.
//!
//! A call comes from another Switchboard service (it holds the shared service token), acting on
//! its own or on behalf of a signed-in user whose principal it forwards. The gateway authenticates
//! the user's session with identity, then forwards the principal with the service token; the
//! service behind checks the token and applies the principal's role and tenant itself (defence in
//! depth: a bug in a gateway route cannot reach another tenant's data).
//!
//! Authorization is typed, so a handler cannot forget it:
//! - a [`Guard`] says who may call at all (`Staff`, `Admin`, `UserCaller`, `ServiceCaller`, ...):
//!   an RPC starts with `let admin: Admin = self.auth.authorize(&req)?;`;
//! - per-account access is a proof value: [`Caller::read`] / [`Caller::act_for`] return a
//!   [`ReadAccount`] / [`ActForAccount`], and use cases that touch an account's records take one
//!   instead of a bare [`AccountId`], so the check happened or the call does not compile.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tonic::{Request, Status, metadata::MetadataMap};
use uuid::Uuid;

pub use sb_types::{AccountId, Role, UserId};

pub const SERVICE_TOKEN_HEADER: &str = "x-switchboard-service";
/// The end user's address, forwarded by the gateway (login throttling, audit).
pub const CLIENT_IP_HEADER: &str = "x-client-ip";
/// The request id of the outside request a call serves.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
const USER_ID: &str = "x-switchboard-user-id";
const ACCOUNT_ID: &str = "x-switchboard-account-id";
const ROLE: &str = "x-switchboard-role";
const IMPERSONATOR: &str = "x-switchboard-impersonator";

/// A signed-in user, as forwarded by the service that authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub role: Role,
    /// The admin acting as this user, during an impersonation session (who never has admin
    /// powers through it).
    pub impersonator: Option<UserId>,
}

impl Principal {
    pub fn is_staff(&self) -> bool {
        self.role.is_staff()
    }

    pub fn is_impersonated(&self) -> bool {
        self.impersonator.is_some()
    }
}

/// What a service acting for itself tells about the outside request it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceContext {
    pub client_ip: Option<String>,
    pub correlation_id: Option<Uuid>,
}

/// The checked caller of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A service acting for itself (e.g. the gateway signing a visitor up, support-router
    /// reading a plan).
    Service(ServiceContext),
    /// A service acting for this user.
    User(Principal),
}

/// Proof that the caller may read this account's records (see [`Caller::read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAccount(AccountId);

impl ReadAccount {
    pub fn id(self) -> AccountId {
        self.0
    }
}

/// Proof that the caller may act (pay, change billing) for this account (see [`Caller::act_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActForAccount(AccountId);

impl ActForAccount {
    pub fn id(self) -> AccountId {
        self.0
    }

    /// Acting includes reading.
    pub fn read(self) -> ReadAccount {
        ReadAccount(self.0)
    }
}

impl Caller {
    /// May this caller read `account`? Customers: their own only (NOT_FOUND otherwise, so other
    /// tenants' ids are not confirmed); staff and services: any.
    pub fn read(&self, account: AccountId) -> Result<ReadAccount, Status> {
        match self {
            Self::Service(_) => Ok(ReadAccount(account)),
            Self::User(p) if p.is_staff() || p.account_id == account => Ok(ReadAccount(account)),
            Self::User(_) => Err(Status::not_found("account not found")),
        }
    }

    /// May this caller act (pay, change billing) for `account`? Only the account's own customers,
    /// never through an impersonation session; services may.
    pub fn act_for(&self, account: AccountId) -> Result<ActForAccount, Status> {
        match self {
            Self::Service(_) => Ok(ActForAccount(account)),
            Self::User(p) if p.account_id != account && !p.is_staff() => Err(Status::not_found("account not found")),
            Self::User(p) if p.is_impersonated() => Err(Status::permission_denied("an impersonation session cannot do this")),
            Self::User(p) if p.role != Role::Customer || p.account_id != account => {
                Err(Status::permission_denied("only the account's own users can do this"))
            }
            Self::User(_) => Ok(ActForAccount(account)),
        }
    }
}

/// Who may make a call at all. An RPC names its guard's type, and gets the caller in that shape.
pub trait Guard: Sized {
    fn admit(caller: Caller) -> Result<Self, Status>;
}

/// Anyone holding the service token, for themselves or for any user.
#[derive(Debug, Clone)]
pub struct AnyCaller(pub Caller);

/// Only a service acting for itself (sign-up, log-in, session checks happen before any user is known).
#[derive(Debug, Clone)]
pub struct ServiceCaller(pub ServiceContext);

/// A signed-in user of any role.
#[derive(Debug, Clone)]
pub struct UserCaller(pub Principal);

/// Support agents and admins (an impersonation session acts as the impersonated customer, so it
/// is never staff).
#[derive(Debug, Clone)]
pub struct Staff(pub Principal);

/// Admins acting as themselves.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

/// A service acting for itself, or a staff user.
#[derive(Debug, Clone)]
pub struct ServiceOrStaff(pub Caller);

impl Guard for AnyCaller {
    fn admit(caller: Caller) -> Result<Self, Status> {
        Ok(Self(caller))
    }
}

impl Guard for ServiceCaller {
    fn admit(caller: Caller) -> Result<Self, Status> {
        match caller {
            Caller::Service(ctx) => Ok(Self(ctx)),
            Caller::User(_) => Err(Status::permission_denied("only Switchboard services may call this")),
        }
    }
}

impl Guard for UserCaller {
    fn admit(caller: Caller) -> Result<Self, Status> {
        match caller {
            Caller::User(p) => Ok(Self(p)),
            Caller::Service(_) => Err(Status::permission_denied("this call acts for a signed-in user")),
        }
    }
}

impl Guard for Staff {
    fn admit(caller: Caller) -> Result<Self, Status> {
        let UserCaller(p) = UserCaller::admit(caller)?;
        if p.is_staff() { Ok(Self(p)) } else { Err(Status::permission_denied("staff only")) }
    }
}

impl Guard for Admin {
    fn admit(caller: Caller) -> Result<Self, Status> {
        let UserCaller(p) = UserCaller::admit(caller)?;
        // An impersonation session acts with the impersonated user's role, never an admin's.
        if p.role == Role::Admin && !p.is_impersonated() { Ok(Self(p)) } else { Err(Status::permission_denied("admins only")) }
    }
}

impl Guard for ServiceOrStaff {
    fn admit(caller: Caller) -> Result<Self, Status> {
        match caller {
            Caller::User(p) if !p.is_staff() => Err(Status::permission_denied("staff only")),
            other => Ok(Self(other)),
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

    /// Whether the call presents a service token at all (identity also accepts users' bearer tokens).
    pub fn presented(md: &MetadataMap) -> bool {
        header(md, SERVICE_TOKEN_HEADER).is_some()
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
        let Some(user) = header(md, USER_ID) else {
            return Ok(Caller::Service(ServiceContext {
                client_ip: header(md, CLIENT_IP_HEADER).map(str::to_owned),
                correlation_id: header(md, CORRELATION_HEADER).and_then(|c| Uuid::parse_str(c).ok()),
            }));
        };
        let bad = |what: &str| Status::invalid_argument(format!("forwarded principal: bad {what}"));
        Ok(Caller::User(Principal {
            user_id: user.parse().map_err(|_| bad("user id"))?,
            account_id: header(md, ACCOUNT_ID).and_then(|a| a.parse().ok()).ok_or_else(|| bad("account id"))?,
            role: header(md, ROLE).and_then(|r| r.parse().ok()).ok_or_else(|| bad("role"))?,
            impersonator: match header(md, IMPERSONATOR) {
                Some(i) => Some(i.parse().map_err(|_| bad("impersonator id"))?),
                None => None,
            },
        }))
    }

    /// The caller in the shape guard `G` admits, or the status that refuses the call.
    pub fn authorize<G: Guard, T>(&self, req: &Request<T>) -> Result<G, Status> {
        G::admit(self.check(req.metadata())?)
    }
}

fn header<'a>(md: &'a MetadataMap, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// How an outgoing call identifies itself: the service token plus, when acting for a user, their
/// principal, or the outside request's context when acting for itself.
pub enum OnBehalfOf<'a> {
    Service(&'a ServiceContext),
    User(&'a Principal),
}

/// Adds the service token and who the call is for to an outgoing call's metadata.
pub fn attach(md: &mut MetadataMap, token: &SecretString, on_behalf_of: OnBehalfOf<'_>) {
    let mut put = |k: &'static str, v: &str| {
        if let Ok(v) = v.parse() {
            md.insert(k, v);
        }
    };
    put(SERVICE_TOKEN_HEADER, token.expose_secret());
    match on_behalf_of {
        OnBehalfOf::Service(ctx) => {
            if let Some(ip) = &ctx.client_ip {
                put(CLIENT_IP_HEADER, ip);
            }
            if let Some(c) = ctx.correlation_id {
                put(CORRELATION_HEADER, &c.to_string());
            }
        }
        OnBehalfOf::User(p) => {
            put(USER_ID, &p.user_id.to_string());
            put(ACCOUNT_ID, &p.account_id.to_string());
            put(ROLE, p.role.as_str());
            if let Some(i) = p.impersonator {
                put(IMPERSONATOR, &i.to_string());
            }
        }
    }
}

/// A request carrying the service token and who it is for.
pub fn request<T>(msg: T, token: &SecretString, on_behalf_of: OnBehalfOf<'_>) -> Request<T> {
    let mut r = Request::new(msg);
    attach(r.metadata_mut(), token, on_behalf_of);
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn principal(role: Role, impersonated: bool) -> Principal {
        Principal { user_id: UserId::new(), account_id: AccountId::new(), role, impersonator: impersonated.then(UserId::new) }
    }

    #[test]
    fn round_trip_and_token_check() {
        let token = SecretString::from("a-service-token-long-enough");
        let auth = ServiceAuth::new(&token);
        let p = principal(Role::Customer, true);
        let mut md = MetadataMap::new();
        attach(&mut md, &token, OnBehalfOf::User(&p));
        assert_eq!(auth.check(&md).ok(), Some(Caller::User(p)));
        let ctx = ServiceContext { client_ip: Some("10.0.0.7".into()), correlation_id: Some(Uuid::now_v7()) };
        let mut md = MetadataMap::new();
        attach(&mut md, &token, OnBehalfOf::Service(&ctx));
        assert_eq!(auth.check(&md).ok(), Some(Caller::Service(ctx)));
        let mut md = MetadataMap::new();
        attach(&mut md, &SecretString::from("some-other-token-entirely"), OnBehalfOf::Service(&ServiceContext::default()));
        assert_eq!(auth.check(&md).map_err(|s| s.code()), Err(tonic::Code::Unauthenticated));
        assert_eq!(auth.check(&MetadataMap::new()).map_err(|s| s.code()), Err(tonic::Code::Unauthenticated));
    }

    #[test]
    fn tenant_and_role_rules() {
        let own = principal(Role::Customer, false);
        let account = own.account_id;
        let other = AccountId::new();
        let customer = Caller::User(own.clone());
        assert!(customer.read(account).is_ok() && customer.act_for(account).is_ok());
        assert_eq!(customer.read(other).map_err(|s| s.code()), Err(tonic::Code::NotFound));
        assert_eq!(customer.act_for(other).map_err(|s| s.code()), Err(tonic::Code::NotFound));
        let impersonated = Caller::User(Principal { impersonator: Some(UserId::new()), ..own });
        assert!(impersonated.read(account).is_ok());
        assert_eq!(impersonated.act_for(account).map_err(|s| s.code()), Err(tonic::Code::PermissionDenied));
        let agent = Caller::User(principal(Role::Agent, false));
        assert!(agent.read(other).is_ok());
        assert_eq!(agent.act_for(other).map_err(|s| s.code()), Err(tonic::Code::PermissionDenied));
        assert!(Caller::Service(ServiceContext::default()).act_for(other).is_ok());
    }

    #[test]
    fn guards_admit_only_their_callers() {
        let user = |role, imp| Caller::User(principal(role, imp));
        let service = Caller::Service(ServiceContext::default());
        let code = |r: Result<(), Status>| r.err().map(|s| s.code());
        assert_eq!(code(Staff::admit(user(Role::Agent, false)).map(drop)), None);
        assert_eq!(code(Staff::admit(user(Role::Customer, false)).map(drop)), Some(tonic::Code::PermissionDenied));
        assert_eq!(code(Staff::admit(service.clone()).map(drop)), Some(tonic::Code::PermissionDenied));
        assert_eq!(code(Admin::admit(user(Role::Admin, false)).map(drop)), None);
        assert_eq!(code(Admin::admit(user(Role::Agent, false)).map(drop)), Some(tonic::Code::PermissionDenied));
        // An admin's impersonation session never has admin powers.
        assert_eq!(code(Admin::admit(user(Role::Admin, true)).map(drop)), Some(tonic::Code::PermissionDenied));
        assert_eq!(code(ServiceCaller::admit(user(Role::Admin, false)).map(drop)), Some(tonic::Code::PermissionDenied));
        assert_eq!(code(ServiceCaller::admit(service.clone()).map(drop)), None);
        assert_eq!(code(UserCaller::admit(service.clone()).map(drop)), Some(tonic::Code::PermissionDenied));
        assert_eq!(code(ServiceOrStaff::admit(service).map(drop)), None);
        assert_eq!(code(ServiceOrStaff::admit(user(Role::Customer, false)).map(drop)), Some(tonic::Code::PermissionDenied));
    }
}
