//! The `switchboard.identity.v1.Identity` gRPC service: authenticates the caller (another
//! service's token, or a user's session token, since identity is where sessions live), admits
//! them by the RPC's guard, converts wire ↔ domain and maps errors. Nothing else.

use chrono::{DateTime, Utc};
use sb_proto::identity::v1 as pb;
use sb_runtime::caller::{Admin, AnyCaller, Caller, Guard, ServiceAuth, ServiceCaller, Staff, UserCaller};
use secrecy::SecretString;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    domain::{Account, Email, Grant, Password, Role, Session, User, UserId, parse_name},
    error::IdentityError,
    service::{Identity, SignUp},
    store::AuditRecord,
};

pub struct IdentityService {
    identity: Identity,
    auth: ServiceAuth,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    sb_proto::timestamp(t.timestamp(), t.timestamp_subsec_nanos() as i32)
}

fn role_pb(r: Role) -> i32 {
    (match r {
        Role::Customer => pb::Role::Customer,
        Role::Agent => pb::Role::Agent,
        Role::Admin => pb::Role::Admin,
    }) as i32
}

fn user_pb(u: &User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        account_id: u.account_id.to_string(),
        email: u.email.to_string(),
        name: u.name.clone(),
        role: role_pb(u.role),
        created_at: Some(ts(u.created_at)),
    }
}

fn account_pb(a: &Account) -> pb::Account {
    pb::Account { id: a.id.to_string(), name: a.name.clone(), created_at: Some(ts(a.created_at)) }
}

fn principal_pb(s: &Session) -> pb::Principal {
    let p = &s.principal;
    pb::Principal {
        user_id: p.user_id.to_string(),
        account_id: p.account_id.to_string(),
        role: role_pb(p.role),
        session_id: s.id.to_string(),
        expires_at: Some(ts(s.expires_at)),
        impersonator_id: p.impersonator.map(|i| i.to_string()).unwrap_or_default(),
    }
}

fn grant_pb(g: Grant) -> pb::SessionGrant {
    pb::SessionGrant {
        token: g.session.token.expose().to_owned(),
        expires_at: Some(ts(g.session.expires_at)),
        user: Some(user_pb(&g.user)),
    }
}

fn id<T: std::str::FromStr<Err = sb_types::Invalid>>(raw: &str) -> Result<T, Status> {
    raw.parse().map_err(|e: sb_types::Invalid| Status::invalid_argument(e.to_string()))
}

fn limit(requested: u32, default: i64, max: i64) -> i64 {
    if requested == 0 { default } else { i64::from(requested).min(max) }
}

fn audit_pb(a: AuditRecord) -> pb::AuditEntry {
    let s = |id: Option<String>| id.unwrap_or_default();
    pb::AuditEntry {
        id: a.id.to_string(),
        at: Some(ts(a.at)),
        actor_user_id: s(a.actor_user_id.map(|i| i.to_string())),
        action: a.action,
        target_user_id: s(a.target_user_id.map(|i| i.to_string())),
        account_id: s(a.account_id.map(|i| i.to_string())),
        detail_json: a.detail.to_string(),
    }
}

fn err(e: IdentityError) -> Status {
    e.into()
}

impl IdentityService {
    pub fn new(identity: Identity, service_token: &SecretString) -> Self {
        Self { identity, auth: ServiceAuth::new(service_token) }
    }

    pub fn into_server(self) -> pb::identity_server::IdentityServer<Self> {
        pb::identity_server::IdentityServer::new(self)
    }

    /// The caller from metadata: a service token (with a forwarded principal or not), else a
    /// user's `Authorization: Bearer` session token, with that session.
    async fn caller(&self, md: &MetadataMap) -> Result<(Caller, Option<Session>), Status> {
        if ServiceAuth::presented(md) {
            return Ok((self.auth.check(md)?, None));
        }
        let bearer = md.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        let Some(token) = bearer.filter(|t| !t.is_empty()) else { return Err(Status::unauthenticated("no credentials")) };
        let session = self.identity.authenticate(token).await.map_err(err)?.ok_or_else(|| Status::from(IdentityError::SessionInvalid))?;
        Ok((Caller::User(session.principal.clone()), Some(session)))
    }

    /// The caller in the shape guard `G` admits.
    async fn authorize<G: Guard, T>(&self, req: &Request<T>) -> Result<G, Status> {
        G::admit(self.caller(req.metadata()).await?.0)
    }

    /// A caller who signed in with a session token of their own (log-out, `GetMe`).
    async fn session<T>(&self, req: &Request<T>) -> Result<Session, Status> {
        match self.caller(req.metadata()).await? {
            (_, Some(session)) => Ok(session),
            (Caller::Service(_), None) => Err(Status::permission_denied("this call acts for a signed-in user")),
            (Caller::User(_), None) => Err(Status::permission_denied("this call needs the user's own session token")),
        }
    }
}

#[tonic::async_trait]
impl pb::identity_server::Identity for IdentityService {
    async fn sign_up(&self, req: Request<pb::SignUpRequest>) -> Result<Response<pb::SessionGrant>, Status> {
        let ServiceCaller(ctx) = self.authorize(&req).await?;
        let r = req.into_inner();
        let invalid = |e: sb_types::Invalid| Status::from(IdentityError::Invalid(e));
        let name = parse_name("name", &r.name).map_err(invalid)?;
        let account_name = sb_types::parse_optional_line("account_name", &r.account_name, sb_types::NAME_MAX_CHARS)
            .map_err(invalid)?
            .unwrap_or_else(|| name.clone());
        let s = SignUp {
            email: Email::parse(&r.email).map_err(invalid)?,
            password: Password::parse(&r.password).map_err(invalid)?,
            name,
            account_name,
        };
        let grant = self.identity.sign_up(&ctx, s).await.map_err(err)?;
        Ok(Response::new(grant_pb(grant)))
    }

    async fn log_in(&self, req: Request<pb::LogInRequest>) -> Result<Response<pb::SessionGrant>, Status> {
        let ServiceCaller(ctx) = self.authorize(&req).await?;
        let r = req.into_inner();
        let grant = self.identity.log_in(&ctx, &r.email, r.password).await.map_err(err)?;
        Ok(Response::new(grant_pb(grant)))
    }

    async fn log_out(&self, req: Request<pb::LogOutRequest>) -> Result<Response<pb::LogOutResponse>, Status> {
        let session = self.session(&req).await?;
        self.identity.log_out(&session).await.map_err(err)?;
        Ok(Response::new(pb::LogOutResponse {}))
    }

    async fn authenticate(&self, req: Request<pb::AuthenticateRequest>) -> Result<Response<pb::Principal>, Status> {
        let ServiceCaller(_) = self.authorize(&req).await?;
        let session =
            self.identity.authenticate(&req.get_ref().token).await.map_err(err)?.ok_or_else(|| err(IdentityError::SessionInvalid))?;
        Ok(Response::new(principal_pb(&session)))
    }

    async fn get_me(&self, req: Request<pb::GetMeRequest>) -> Result<Response<pb::Me>, Status> {
        let session = self.session(&req).await?;
        let me = self.identity.me(&session.principal).await.map_err(err)?;
        Ok(Response::new(pb::Me {
            user: Some(user_pb(&me.user)),
            account: me.account.as_ref().map(account_pb),
            principal: Some(principal_pb(&session)),
            impersonator: me.impersonator.as_ref().map(user_pb),
        }))
    }

    async fn update_profile(&self, req: Request<pb::UpdateProfileRequest>) -> Result<Response<pb::User>, Status> {
        let UserCaller(p) = self.authorize(&req).await?;
        let user = self.identity.update_profile(&p, req.into_inner().name).await.map_err(err)?;
        Ok(Response::new(user_pb(&user)))
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        let UserCaller(p) = self.authorize(&req).await?;
        let user_id: UserId = id(&req.get_ref().user_id)?;
        let user = self.identity.user(&Caller::User(p), user_id).await.map_err(err)?;
        Ok(Response::new(user_pb(&user)))
    }

    async fn get_account(&self, req: Request<pb::GetAccountRequest>) -> Result<Response<pb::AccountView>, Status> {
        let AnyCaller(caller) = self.authorize(&req).await?;
        let account = caller.read(id(&req.get_ref().account_id)?).map_err(|_| err(IdentityError::NotFound("account")))?;
        let (account, users) = self.identity.account(account).await.map_err(err)?;
        Ok(Response::new(pb::AccountView { account: Some(account_pb(&account)), users: users.iter().map(user_pb).collect() }))
    }

    async fn list_customers(&self, req: Request<pb::ListCustomersRequest>) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let staff: Staff = self.authorize(&req).await?;
        let r = req.into_inner();
        let found = self.identity.list_customers(&staff, r.query.trim(), limit(r.limit, 50, 200)).await.map_err(err)?;
        Ok(Response::new(pb::ListCustomersResponse {
            customers: found
                .iter()
                .map(|(a, users)| pb::CustomerSummary { account: Some(account_pb(a)), users: users.iter().map(user_pb).collect() })
                .collect(),
        }))
    }

    async fn revoke_sessions(&self, req: Request<pb::RevokeSessionsRequest>) -> Result<Response<pb::RevokeSessionsResponse>, Status> {
        let admin: Admin = self.authorize(&req).await?;
        let revoked = self.identity.revoke_sessions(&admin, id(&req.get_ref().user_id)?).await.map_err(err)?;
        Ok(Response::new(pb::RevokeSessionsResponse { revoked: u32::try_from(revoked).unwrap_or(u32::MAX) }))
    }

    async fn impersonate(&self, req: Request<pb::ImpersonateRequest>) -> Result<Response<pb::SessionGrant>, Status> {
        let admin: Admin = self.authorize(&req).await?;
        let r = req.into_inner();
        let grant = self.identity.impersonate(&admin, id(&r.user_id)?, &r.reason, r.ttl_seconds).await.map_err(err)?;
        Ok(Response::new(grant_pb(grant)))
    }

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        let admin: Admin = self.authorize(&req).await?;
        let r = req.into_inner();
        let user = if r.user_id.is_empty() { None } else { Some(id(&r.user_id)?) };
        let rows = self.identity.audit_log(&admin, user, limit(r.limit, 100, 1000)).await.map_err(err)?;
        Ok(Response::new(pb::ListAuditResponse { entries: rows.into_iter().map(audit_pb).collect() }))
    }

    async fn record_audit(&self, req: Request<pb::RecordAuditRequest>) -> Result<Response<pb::AuditEntry>, Status> {
        let admin: Admin = self.authorize(&req).await?;
        let r = req.into_inner();
        let account = if r.account_id.is_empty() { None } else { Some(id(&r.account_id)?) };
        let a = self.identity.record_audit(&admin, &r.action, account, &r.detail_json).await.map_err(err)?;
        Ok(Response::new(audit_pb(a)))
    }

    async fn list_mailbox(&self, req: Request<pb::ListMailboxRequest>) -> Result<Response<pb::ListMailboxResponse>, Status> {
        let admin: Admin = self.authorize(&req).await?;
        let r = req.into_inner();
        let to = Some(r.to.trim()).filter(|t| !t.is_empty());
        let rows = self.identity.mailbox(&admin, to, limit(r.limit, 50, 500)).await.map_err(err)?;
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
