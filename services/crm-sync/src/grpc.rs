//! The `switchboard.crm.v1.Crm` gRPC service: admits the caller by the RPC's guard, converts
//! wire ↔ domain, calls the service and maps errors. Nothing else.

use chrono::{DateTime, Utc};
use sb_proto::crm::v1::{self as pb, crm_server};
use sb_runtime::caller::{AnyCaller, ServiceAuth, ServiceOrStaff};
use secrecy::SecretString;
use tonic::{Request, Response, Status};

use crate::{
    contact_book::BookContact,
    domain::{AccountId, ContactSync, SyncStatus},
    error::CrmSyncError,
    service::CrmSync,
};

pub struct CrmService {
    sync: CrmSync,
    auth: ServiceAuth,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    sb_proto::timestamp(t.timestamp(), t.timestamp_subsec_nanos() as i32)
}

fn status_pb(s: SyncStatus) -> i32 {
    (match s {
        SyncStatus::Pending => pb::SyncStatus::Pending,
        SyncStatus::Synced => pb::SyncStatus::Synced,
        SyncStatus::Failed => pb::SyncStatus::Failed,
    }) as i32
}

fn contact_status_pb(c: ContactSync, crm: &str) -> pb::ContactStatus {
    pb::ContactStatus {
        user_id: c.user_id.to_string(),
        account_id: c.account_id.to_string(),
        email: c.email.to_string(),
        crm_contact_id: c.crm_contact_id.unwrap_or_default(),
        lifecycle_stage: c.lifecycle_stage,
        status: status_pb(c.status),
        last_error: c.last_error,
        attempts: c.attempts,
        next_attempt_at: c.next_attempt_at.map(ts),
        synced_at: c.synced_at.map(ts),
        crm: crm.to_owned(),
    }
}

fn book_contact_pb(r: BookContact) -> pb::BookContact {
    pb::BookContact {
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
    }
}

fn err(e: CrmSyncError) -> Status {
    e.into()
}

impl CrmService {
    pub fn new(sync: CrmSync, service_token: &SecretString) -> Self {
        Self { sync, auth: ServiceAuth::new(service_token) }
    }

    pub fn into_server(self) -> crm_server::CrmServer<Self> {
        crm_server::CrmServer::new(self)
    }
}

#[tonic::async_trait]
impl crm_server::Crm for CrmService {
    async fn get_contact_status(&self, req: Request<pb::GetContactStatusRequest>) -> Result<Response<pb::ContactStatusList>, Status> {
        let AnyCaller(caller) = self.auth.authorize(&req)?;
        let account: AccountId = req.get_ref().account_id.parse().map_err(|e| err(CrmSyncError::Invalid(e)))?;
        let account = caller.read(account)?;
        let contacts = self.sync.contact_status(account).await.map_err(err)?;
        let crm = self.sync.crm_name();
        Ok(Response::new(pb::ContactStatusList { contacts: contacts.into_iter().map(|c| contact_status_pb(c, crm)).collect() }))
    }

    async fn list_contact_book(&self, req: Request<pb::ListContactBookRequest>) -> Result<Response<pb::ListContactBookResponse>, Status> {
        let ServiceOrStaff(_) = self.auth.authorize(&req)?;
        let body = req.into_inner();
        let rows = self.sync.contact_book(&body.query, body.limit).await.map_err(err)?;
        Ok(Response::new(pb::ListContactBookResponse { contacts: rows.into_iter().map(book_contact_pb).collect() }))
    }
}
