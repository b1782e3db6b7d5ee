//! The `switchboard.identity.v1.Identity` gRPC service: converts wire ↔ domain and checks, on
//! every call, who the caller is and what they may do.

use std::sync::LazyLock;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use chrono::{DateTime, Utc};
use sb_proto::identity::v1 as pb;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    config::IdentityConfig,
    domain::{Email, Invalid, Password, Role, parse_name, token},
    store::{self, AccountRow, UserRow},
};

pub const SERVICE_TOKEN_HEADER: &str = "x-switchboard-service";
pub const CLIENT_IP_HEADER: &str = "x-client-ip";
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Another Switchboard service (holds the shared service token).
    Service { client_ip: Option<String>, correlation_id: Option<Uuid> },
    /// A signed-in user.
    User(Principal),
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub role: Role,
    pub session_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub impersonator_id: Option<Uuid>,
}

pub struct IdentityService {
    pool: PgPool,
    cfg: IdentityConfig,
    service_token_hash: [u8; 32],
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    sb_proto::timestamp(t.timestamp(), t.timestamp_subsec_nanos() as i32)
}

fn role_pb(r: Role) -> i32 {
    match r {
        Role::Customer => pb::Role::Customer as i32,
        Role::Agent => pb::Role::Agent as i32,
        Role::Admin => pb::Role::Admin as i32,
    }
}

fn user_pb(u: &UserRow) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        account_id: u.account_id.to_string(),
        email: u.email.clone(),
        name: u.name.clone(),
        role: role_pb(u.role()),
        created_at: Some(ts(u.created_at)),
    }
}

fn account_pb(a: &AccountRow) -> pb::Account {
    pb::Account { id: a.id.to_string(), name: a.name.clone(), created_at: Some(ts(a.created_at)) }
}

fn principal_pb(p: &Principal) -> pb::Principal {
    pb::Principal {
        user_id: p.user_id.to_string(),
        account_id: p.account_id.to_string(),
        role: role_pb(p.role),
        session_id: p.session_id.to_string(),
        expires_at: Some(ts(p.expires_at)),
        impersonator_id: p.impersonator_id.map(|i| i.to_string()).unwrap_or_default(),
    }
}

/// 5xx-class failures are logged here with their cause and reach the caller without it.
fn internal(e: impl std::fmt::Display) -> Status {
    warn!(error = %e, "identity internal error");
    Status::internal("internal error")
}

fn invalid_argument(e: Invalid) -> Status {
    Status::invalid_argument(e.to_string())
}

fn parse_id(field: &str, raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw).map_err(|_| Status::invalid_argument(format!("{field}: not a valid id")))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares two digests without an early exit.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Argon2id verification of an unknown email runs against this, so a missing account costs the
/// same time as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash_password_blocking("dummy password for timing"));

fn hash_password_blocking(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
}

/// Hashes off the async runtime (argon2id is deliberately slow).
pub async fn hash_password(password: &Password) -> Result<String, Status> {
    let pw = password.expose().to_owned();
    tokio::task::spawn_blocking(move || hash_password_blocking(&pw)).await.map_err(internal)
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false)
}

fn header<'a>(md: &'a MetadataMap, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

impl IdentityService {
    pub fn new(pool: PgPool, cfg: IdentityConfig, service_token: &SecretString) -> Self {
        LazyLock::force(&DUMMY_HASH);
        Self { pool, cfg, service_token_hash: sha256(service_token.expose_secret().as_bytes()) }
    }

    pub fn into_server(self) -> pb::identity_server::IdentityServer<Self> {
        pb::identity_server::IdentityServer::new(self)
    }

    fn session_ttl(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.cfg.session_ttl).unwrap_or(chrono::Duration::hours(12))
    }

    /// Resolves a session token to its principal (`None`: unknown, expired or revoked).
    pub async fn principal(&self, token: &str) -> Result<Option<Principal>, Status> {
        if !token::well_formed(token) {
            return Ok(None);
        }
        let row = store::session_by_token(&self.pool, token).await.map_err(internal)?;
        Ok(row.map(|s| Principal {
            user_id: s.user_id,
            account_id: s.account_id,
            role: Role::parse(&s.role).unwrap_or(Role::Customer),
            session_id: s.session_id,
            expires_at: s.expires_at,
            impersonator_id: s.impersonator_id,
        }))
    }

    /// Establishes the caller from metadata: a service token, or a user's bearer token.
    async fn caller(&self, md: &MetadataMap) -> Result<Caller, Status> {
        if let Some(given) = header(md, SERVICE_TOKEN_HEADER) {
            if !same_digest(&sha256(given.as_bytes()), &self.service_token_hash) {
                return Err(Status::unauthenticated("invalid service credential"));
            }
            let client_ip = header(md, CLIENT_IP_HEADER).map(str::to_owned);
            let correlation_id = header(md, CORRELATION_HEADER).and_then(|c| Uuid::parse_str(c).ok());
            return Ok(Caller::Service { client_ip, correlation_id });
        }
        let bearer = header(md, "authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        match bearer {
            Some(t) => {
                self.principal(t).await?.map(Caller::User).ok_or_else(|| Status::unauthenticated("session is invalid or has expired"))
            }
            None => Err(Status::unauthenticated("no credentials")),
        }
    }

    async fn service_caller(&self, md: &MetadataMap) -> Result<(Option<String>, Option<Uuid>), Status> {
        match self.caller(md).await? {
            Caller::Service { client_ip, correlation_id } => Ok((client_ip, correlation_id)),
            Caller::User(_) => Err(Status::permission_denied("only Switchboard services may call this")),
        }
    }

    async fn user_caller(&self, md: &MetadataMap) -> Result<Principal, Status> {
        match self.caller(md).await? {
            Caller::User(p) => Ok(p),
            Caller::Service { .. } => Err(Status::permission_denied("this call acts for a signed-in user")),
        }
    }

    async fn staff_caller(&self, md: &MetadataMap) -> Result<Principal, Status> {
        let p = self.user_caller(md).await?;
        if p.role.is_staff() { Ok(p) } else { Err(Status::permission_denied("staff only")) }
    }

    async fn admin_caller(&self, md: &MetadataMap) -> Result<Principal, Status> {
        let p = self.user_caller(md).await?;
        // An impersonation session acts with the impersonated user's role, never an admin's.
        if p.role == Role::Admin && p.impersonator_id.is_none() { Ok(p) } else { Err(Status::permission_denied("admins only")) }
    }

    fn grant(&self, user: &UserRow, s: store::NewSession) -> pb::SessionGrant {
        pb::SessionGrant { token: s.token, expires_at: Some(ts(s.expires_at)), user: Some(user_pb(user)) }
    }

    /// Staff see every account; anyone else only their own. Others' records are reported as
    /// missing, not forbidden, so ids cannot be probed.
    fn may_see_account(p: &Principal, account_id: Uuid) -> bool {
        p.role.is_staff() || p.account_id == account_id
    }
}

fn limit(requested: u32, default: i64, max: i64) -> i64 {
    if requested == 0 { default } else { i64::from(requested).min(max) }
}

#[tonic::async_trait]
impl pb::identity_server::Identity for IdentityService {
    async fn sign_up(&self, req: Request<pb::SignUpRequest>) -> Result<Response<pb::SessionGrant>, Status> {
        let (client_ip, correlation_id) = self.service_caller(req.metadata()).await?;
        let r = req.into_inner();
        let email = Email::parse(&r.email).map_err(invalid_argument)?;
        let password = Password::parse(&r.password).map_err(invalid_argument)?;
        let name = parse_name("name", &r.name).map_err(invalid_argument)?;
        let account_name = if r.account_name.trim().is_empty() {
            name.clone()
        } else {
            parse_name("account_name", &r.account_name).map_err(invalid_argument)?
        };
        let hash = hash_password(&password).await?;
        let created = store::sign_up(
            &self.pool,
            store::SignUp {
                email: &email,
                name: &name,
                account_name: &account_name,
                password_hash: &hash,
                session_ttl: self.session_ttl(),
                client_ip: client_ip.as_deref(),
                correlation_id,
            },
        )
        .await
        .map_err(internal)?;
        let Some((user, account, session)) = created else {
            return Err(Status::already_exists("an account with this email already exists"));
        };
        info!(user_id = %user.id, account_id = %account.id, "signed up");
        Ok(Response::new(self.grant(&user, session)))
    }

    async fn log_in(&self, req: Request<pb::LogInRequest>) -> Result<Response<pb::SessionGrant>, Status> {
        let (client_ip, _) = self.service_caller(req.metadata()).await?;
        let r = req.into_inner();
        let Ok(email) = Email::parse(&r.email) else {
            return Err(Status::unauthenticated("wrong email or password"));
        };
        let email_key = format!("email:{email}");
        let mut keys = vec![email_key.clone()];
        if let Some(ip) = &client_ip {
            keys.push(format!("ip:{ip}"));
        }
        if let Some(secs) = store::throttle_blocked(&self.pool, &keys).await.map_err(internal)? {
            metrics::counter!("identity_login_failures_total", "reason" => "throttled").increment(1);
            let mut status = Status::resource_exhausted("too many failed logins; try again later");
            if let Ok(v) = secs.max(1).to_string().parse() {
                status.metadata_mut().insert("retry-after-seconds", v);
            }
            return Err(status);
        }
        let candidate = store::login_candidate(&self.pool, &email).await.map_err(internal)?;
        let hash = candidate.as_ref().map_or_else(|| DUMMY_HASH.clone(), |(_, h)| h.clone());
        let ok = verify_password(r.password, hash).await && candidate.is_some();
        let Some((user, _)) = candidate.filter(|_| ok) else {
            metrics::counter!("identity_login_failures_total", "reason" => "bad_credentials").increment(1);
            let window = chrono::Duration::from_std(self.cfg.login_window).unwrap_or(chrono::Duration::minutes(15));
            store::throttle_failure(&self.pool, &email_key, self.cfg.login_max_failures, window).await.map_err(internal)?;
            if let Some(ip) = &client_ip {
                store::throttle_failure(&self.pool, &format!("ip:{ip}"), self.cfg.login_ip_max_failures, window).await.map_err(internal)?;
            }
            return Err(Status::unauthenticated("wrong email or password"));
        };
        store::throttle_reset(&self.pool, &email_key).await.map_err(internal)?;
        let mut tx = self.pool.begin().await.map_err(internal)?;
        let session = store::create_session(&mut tx, user.id, None, self.session_ttl(), client_ip.as_deref()).await.map_err(internal)?;
        store::audit(
            &mut tx,
            Some(user.id),
            "session.created",
            Some(user.id),
            Some(user.account_id),
            client_ip.as_deref(),
            serde_json::json!({}),
        )
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(Response::new(self.grant(&user, session)))
    }

    async fn log_out(&self, req: Request<pb::LogOutRequest>) -> Result<Response<pb::LogOutResponse>, Status> {
        let p = self.user_caller(req.metadata()).await?;
        store::revoke_session(&self.pool, p.session_id).await.map_err(internal)?;
        Ok(Response::new(pb::LogOutResponse {}))
    }

    async fn authenticate(&self, req: Request<pb::AuthenticateRequest>) -> Result<Response<pb::Principal>, Status> {
        self.service_caller(req.metadata()).await?;
        let p =
            self.principal(&req.into_inner().token).await?.ok_or_else(|| Status::unauthenticated("session is invalid or has expired"))?;
        Ok(Response::new(principal_pb(&p)))
    }

    async fn get_me(&self, req: Request<pb::GetMeRequest>) -> Result<Response<pb::Me>, Status> {
        let p = self.user_caller(req.metadata()).await?;
        let user =
            store::user(&self.pool, p.user_id).await.map_err(internal)?.ok_or_else(|| Status::unauthenticated("user no longer exists"))?;
        let account = store::account(&self.pool, p.account_id).await.map_err(internal)?;
        let impersonator = match p.impersonator_id {
            Some(id) => store::user(&self.pool, id).await.map_err(internal)?,
            None => None,
        };
        Ok(Response::new(pb::Me {
            user: Some(user_pb(&user)),
            account: account.as_ref().map(account_pb),
            principal: Some(principal_pb(&p)),
            impersonator: impersonator.as_ref().map(user_pb),
        }))
    }

    async fn update_profile(&self, req: Request<pb::UpdateProfileRequest>) -> Result<Response<pb::User>, Status> {
        let p = self.user_caller(req.metadata()).await?;
        let r = req.into_inner();
        let user = match r.name {
            Some(name) => {
                let name = parse_name("name", &name).map_err(invalid_argument)?;
                store::update_name(&self.pool, p.user_id, &name).await.map_err(internal)?
            }
            None => store::user(&self.pool, p.user_id).await.map_err(internal)?,
        };
        user.map(|u| Response::new(user_pb(&u))).ok_or_else(|| Status::unauthenticated("user no longer exists"))
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        let p = self.user_caller(req.metadata()).await?;
        let id = parse_id("user_id", &req.into_inner().user_id)?;
        let user = store::user(&self.pool, id).await.map_err(internal)?;
        match user {
            Some(u) if IdentityService::may_see_account(&p, u.account_id) => Ok(Response::new(user_pb(&u))),
            _ => Err(Status::not_found("no such user")),
        }
    }

    async fn get_account(&self, req: Request<pb::GetAccountRequest>) -> Result<Response<pb::AccountView>, Status> {
        let p = self.user_caller(req.metadata()).await?;
        let id = parse_id("account_id", &req.into_inner().account_id)?;
        if !IdentityService::may_see_account(&p, id) {
            return Err(Status::not_found("no such account"));
        }
        let account = store::account(&self.pool, id).await.map_err(internal)?.ok_or_else(|| Status::not_found("no such account"))?;
        let users = store::account_users(&self.pool, id).await.map_err(internal)?;
        Ok(Response::new(pb::AccountView { account: Some(account_pb(&account)), users: users.iter().map(user_pb).collect() }))
    }

    async fn list_customers(&self, req: Request<pb::ListCustomersRequest>) -> Result<Response<pb::ListCustomersResponse>, Status> {
        self.staff_caller(req.metadata()).await?;
        let r = req.into_inner();
        let accounts = store::search_customers(&self.pool, r.query.trim(), limit(r.limit, 50, 200)).await.map_err(internal)?;
        let mut customers = Vec::with_capacity(accounts.len());
        for a in &accounts {
            let users = store::account_users(&self.pool, a.id).await.map_err(internal)?;
            customers.push(pb::CustomerSummary { account: Some(account_pb(a)), users: users.iter().map(user_pb).collect() });
        }
        Ok(Response::new(pb::ListCustomersResponse { customers }))
    }

    async fn revoke_sessions(&self, req: Request<pb::RevokeSessionsRequest>) -> Result<Response<pb::RevokeSessionsResponse>, Status> {
        let admin = self.admin_caller(req.metadata()).await?;
        let id = parse_id("user_id", &req.into_inner().user_id)?;
        let target = store::user(&self.pool, id).await.map_err(internal)?.ok_or_else(|| Status::not_found("no such user"))?;
        let mut tx = self.pool.begin().await.map_err(internal)?;
        let revoked = store::revoke_user_sessions(&mut tx, target.id).await.map_err(internal)?;
        store::audit(
            &mut tx,
            Some(admin.user_id),
            "sessions.revoked",
            Some(target.id),
            Some(target.account_id),
            None,
            serde_json::json!({"revoked": revoked}),
        )
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(Response::new(pb::RevokeSessionsResponse { revoked: revoked as u32 }))
    }

    async fn impersonate(&self, req: Request<pb::ImpersonateRequest>) -> Result<Response<pb::SessionGrant>, Status> {
        let admin = self.admin_caller(req.metadata()).await?;
        let r = req.into_inner();
        let id = parse_id("user_id", &r.user_id)?;
        let reason = parse_name("reason", &r.reason).map_err(invalid_argument)?;
        let max = self.cfg.impersonation_max.as_secs();
        let ttl = match u64::from(r.ttl_seconds) {
            0 => 900.min(max),
            t if t > max => return Err(Status::invalid_argument(format!("ttl_seconds: at most {max}"))),
            t => t,
        };
        let target = store::user(&self.pool, id).await.map_err(internal)?.ok_or_else(|| Status::not_found("no such user"))?;
        if target.role() != Role::Customer {
            return Err(Status::permission_denied("only customers can be impersonated"));
        }
        let mut tx = self.pool.begin().await.map_err(internal)?;
        let session = store::create_session(&mut tx, target.id, Some(admin.user_id), chrono::Duration::seconds(ttl as i64), None)
            .await
            .map_err(internal)?;
        store::audit(
            &mut tx,
            Some(admin.user_id),
            "impersonation.started",
            Some(target.id),
            Some(target.account_id),
            None,
            serde_json::json!({"reason": reason, "ttl_seconds": ttl}),
        )
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        info!(admin = %admin.user_id, target = %target.id, ttl, "impersonation started");
        Ok(Response::new(self.grant(&target, session)))
    }

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.admin_caller(req.metadata()).await?;
        let r = req.into_inner();
        let user = if r.user_id.is_empty() { None } else { Some(parse_id("user_id", &r.user_id)?) };
        let rows = store::list_audit(&self.pool, user, limit(r.limit, 100, 1000)).await.map_err(internal)?;
        let s = |id: Option<Uuid>| id.map(|i| i.to_string()).unwrap_or_default();
        Ok(Response::new(pb::ListAuditResponse {
            entries: rows
                .into_iter()
                .map(|a| pb::AuditEntry {
                    id: a.id.to_string(),
                    at: Some(ts(a.at)),
                    actor_user_id: s(a.actor_user_id),
                    action: a.action,
                    target_user_id: s(a.target_user_id),
                    account_id: s(a.account_id),
                    detail_json: a.detail.to_string(),
                })
                .collect(),
        }))
    }

    async fn list_mailbox(&self, req: Request<pb::ListMailboxRequest>) -> Result<Response<pb::ListMailboxResponse>, Status> {
        self.admin_caller(req.metadata()).await?;
        let r = req.into_inner();
        let to = Some(r.to.trim()).filter(|t| !t.is_empty());
        let rows = sb_mail::MailboxMailer::list(&self.pool, limit(r.limit, 50, 500), to).await.map_err(internal)?;
        Ok(Response::new(pb::ListMailboxResponse {
            emails: rows
                .into_iter()
                .map(|m| pb::StoredEmail {
                    id: m.id.to_string(),
                    to: m.to,
                    subject: m.subject,
                    text_body: m.text_body,
                    template: m.template,
                    created_at: Some(ts(m.created_at)),
                })
                .collect(),
        }))
    }
}
