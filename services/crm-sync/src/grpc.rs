//! The `switchboard.crm.v1.Crm` gRPC service: checks the caller, converts wire ↔ rows.

use chrono::{DateTime, Utc};
use sb_proto::crm::v1::{self as pb, crm_server};
use sb_runtime::caller::{Caller, ServiceAuth};
use tonic::{Request, Response, Status};
use tracing::warn;
use uuid::Uuid;

use crate::{service::Sync, store};

pub struct CrmService {
    sync: Sync,
    auth: ServiceAuth,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    sb_proto::timestamp(t.timestamp(), t.timestamp_subsec_nanos() as i32)
}

fn internal(e: impl std::fmt::Display) -> Status {
    warn!(error = %e, "crm-sync internal error");
    Status::internal("internal error")
}

impl CrmService {
    pub fn new(sync: Sync, token: &secrecy::SecretString) -> Self {
        Self { sync, auth: ServiceAuth::new(token) }
    }

    pub fn into_server(self) -> crm_server::CrmServer<Self> {
        crm_server::CrmServer::new(self)
    }
}

fn status_pb(s: &str) -> i32 {
    (match s {
        "synced" => pb::SyncStatus::Synced,
        "failed" => pb::SyncStatus::Failed,
        _ => pb::SyncStatus::Pending,
    }) as i32
}

#[tonic::async_trait]
impl crm_server::Crm for CrmService {
    async fn get_contact_status(&self, req: Request<pb::GetContactStatusRequest>) -> Result<Response<pb::ContactStatusList>, Status> {
        let caller = self.auth.check(req.metadata())?;
        let account = Uuid::parse_str(&req.get_ref().account_id).map_err(|_| Status::invalid_argument("account_id: not a valid id"))?;
        caller.may_read(account)?;
        let mut conn = self.sync.pool.acquire().await.map_err(internal)?;
        let users = store::users_of_account(&mut conn, account).await.map_err(internal)?;
        let crm = self.sync.crm.name().to_owned();
        Ok(Response::new(pb::ContactStatusList {
            contacts: users
                .into_iter()
                .map(|u| pb::ContactStatus {
                    user_id: u.user_id.to_string(),
                    account_id: u.account_id.to_string(),
                    email: u.email,
                    crm_contact_id: u.crm_contact_id.unwrap_or_default(),
                    lifecycle_stage: u.lifecycle_stage,
                    status: status_pb(&u.status),
                    last_error: u.last_error,
                    attempts: u.attempts,
                    next_attempt_at: u.next_attempt_at.map(ts),
                    synced_at: u.synced_at.map(ts),
                    crm: crm.clone(),
                })
                .collect(),
        }))
    }

    async fn list_contact_book(&self, req: Request<pb::ListContactBookRequest>) -> Result<Response<pb::ListContactBookResponse>, Status> {
        match self.auth.check(req.metadata())? {
            Caller::Service => {}
            Caller::User(p) if p.is_staff() => {}
            Caller::User(_) => return Err(Status::permission_denied("staff only")),
        }
        let body = req.into_inner();
        let limit = i64::from(if body.limit <= 0 { 50 } else { body.limit.min(500) });
        let rows = store::contact_book(&self.sync.pool, body.query.trim(), limit).await.map_err(internal)?;
        Ok(Response::new(pb::ListContactBookResponse {
            contacts: rows
                .into_iter()
                .map(|r| pb::BookContact {
                    id: r.id.to_string(),
                    email: r.email,
                    name: r.name,
                    account_id: r.account_id,
                    account_name: r.account_name,
                    plan: r.plan,
                    stripe_customer_id: r.stripe_customer_id,
                    access_status: r.access_status,
                    lifecycle_stage: r.lifecycle_stage,
                    created_at: Some(ts(r.created_at)),
                    updated_at: Some(ts(r.updated_at)),
                })
                .collect(),
        }))
    }
}
