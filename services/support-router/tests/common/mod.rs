//! support-router's test helpers on top of the shared harness (`sb_testkit::service`): its gRPC
//! client, principals to call as, identity's and billing's announcements published on the bus the
//! way those services do, and a fake billing (the real wire protocol, `GetAccess` only) behind a
//! proxy a test can cut.

// Test support shared by several test binaries, each using part of it; a failed unwrap is a failed test.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use chrono::{DateTime, Utc};
use sb_bus::{
    Envelope,
    events::{AccessChanged, UserSignedUp, UserUpdated},
};
use sb_proto::{
    billing::v1::{self as billing_pb, billing_server},
    support::v1::{self as pb, support_client::SupportClient},
};
use sb_runtime::caller::{Principal, Role, ServiceAuth};
pub use sb_testkit::service::{TestService, as_service, as_service_for_ip, as_user};
use sb_testkit::{
    proxy::TcpProxy,
    service::{SERVICE_TOKEN, WAIT, vars},
    wait_for,
};
use sb_types::{AccessStatus, AccountId, Email, UserId};
use secrecy::SecretString;
use tonic::{Request, Response, Status, transport::Channel};

/// What the fake billing answers for an account it was told nothing about.
pub const NO_PLAN: (&str, AccessStatus) = ("", AccessStatus::None);

/// billing's `GetAccess`, answered from a table the test fills (other RPCs are unimplemented).
/// Checks the service token like billing does.
/// An account's plan as the fake billing answers it: name, status, since.
type Plan = (String, AccessStatus, DateTime<Utc>);

#[derive(Clone, Default)]
pub struct FakeBilling {
    plans: Arc<Mutex<HashMap<AccountId, Plan>>>,
    calls: Arc<AtomicUsize>,
}

impl FakeBilling {
    pub fn set(&self, account: AccountId, plan: &str, status: AccessStatus) {
        self.plans.lock().unwrap().insert(account, (plan.to_owned(), status, Utc::now()));
    }

    /// `GetAccess` calls answered so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Serves on a free local port until the test ends.
    pub async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = billing_server::BillingServer::new(self.clone());
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming).await;
        });
        addr
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("the fake billing answers GetAccess only"))
}

#[tonic::async_trait]
impl billing_server::Billing for FakeBilling {
    async fn list_plans(&self, _: Request<billing_pb::ListPlansRequest>) -> Result<Response<billing_pb::PlanList>, Status> {
        unimplemented()
    }

    async fn get_access(&self, req: Request<billing_pb::GetAccessRequest>) -> Result<Response<billing_pb::Access>, Status> {
        ServiceAuth::new(&SecretString::from(SERVICE_TOKEN)).check(req.metadata())?;
        let account: AccountId = req.get_ref().account_id.parse().map_err(|_| Status::invalid_argument("account_id"))?;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let status_pb = |s: AccessStatus| match s {
            AccessStatus::None => billing_pb::AccessStatus::None,
            AccessStatus::Pending => billing_pb::AccessStatus::Pending,
            AccessStatus::Active => billing_pb::AccessStatus::Active,
            AccessStatus::PastDue => billing_pb::AccessStatus::PastDue,
            AccessStatus::Revoked => billing_pb::AccessStatus::Revoked,
        } as i32;
        let known = self.plans.lock().unwrap().get(&account).cloned();
        Ok(Response::new(match known {
            Some((plan, status, since)) => billing_pb::Access {
                account_id: account.to_string(),
                status: status_pb(status),
                plan,
                since: Some(sb_proto::timestamp(since.timestamp(), since.timestamp_subsec_nanos() as i32)),
                ..Default::default()
            },
            // billing's answer for an account with no checkout: none, with no time.
            None => billing_pb::Access { account_id: account.to_string(), status: status_pb(NO_PLAN.1), ..Default::default() },
        }))
    }

    async fn get_billing(&self, _: Request<billing_pb::GetBillingRequest>) -> Result<Response<billing_pb::BillingView>, Status> {
        unimplemented()
    }

    async fn create_checkout_session(
        &self,
        _: Request<billing_pb::CreateCheckoutSessionRequest>,
    ) -> Result<Response<billing_pb::CheckoutSession>, Status> {
        unimplemented()
    }

    async fn create_portal_session(
        &self,
        _: Request<billing_pb::CreatePortalSessionRequest>,
    ) -> Result<Response<billing_pb::PortalSession>, Status> {
        unimplemented()
    }

    async fn get_local_checkout(
        &self,
        _: Request<billing_pb::GetLocalCheckoutRequest>,
    ) -> Result<Response<billing_pb::LocalCheckout>, Status> {
        unimplemented()
    }

    async fn complete_local_checkout(
        &self,
        _: Request<billing_pb::CompleteLocalCheckoutRequest>,
    ) -> Result<Response<billing_pb::LocalCheckout>, Status> {
        unimplemented()
    }

    async fn refund_payment(&self, _: Request<billing_pb::RefundPaymentRequest>) -> Result<Response<billing_pb::Refund>, Status> {
        unimplemented()
    }

    async fn cancel_local_subscription(
        &self,
        _: Request<billing_pb::CancelLocalSubscriptionRequest>,
    ) -> Result<Response<billing_pb::CancelLocalSubscriptionResponse>, Status> {
        unimplemented()
    }
}

/// A running support-router with its fake billing (reached through a proxy the test can cut).
pub struct Harness {
    pub svc: TestService,
    pub billing: FakeBilling,
    pub billing_proxy: TcpProxy,
}

/// support-router on a fresh database and bus prefix, its billing the fake (answering `none` for
/// every account until told otherwise), the plan refresher every 200 ms; `extra` adds or
/// overrides settings.
pub async fn start(extra: &[(&str, &str)]) -> Harness {
    let billing = FakeBilling::default();
    let billing_proxy = TcpProxy::start(billing.serve().await).await.unwrap();
    let url = format!("http://{}", billing_proxy.addr());
    let mut settings = vec![
        ("SUPPORT_ROUTER_BILLING_URL", url.as_str()),
        ("SUPPORT_ROUTER_BILLING_TIMEOUT", "1s"),
        ("SUPPORT_ROUTER_PLAN_REFRESH_INTERVAL", "200ms"),
    ];
    settings.extend_from_slice(extra);
    let svc = TestService::start(&support_router::def(), &vars(&settings)).await;
    Harness { svc, billing, billing_proxy }
}

impl Harness {
    pub fn client(&self) -> SupportClient<Channel> {
        SupportClient::new(self.svc.channel.clone())
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.svc.db.pool
    }

    /// Announces a customer as identity does at sign-up, and waits until support-router knows them.
    pub async fn sign_up(&self, p: &Principal, email: &str, name: &str) {
        self.svc
            .publish(&Envelope::of(&UserSignedUp {
                user_id: p.user_id,
                account_id: p.account_id,
                email: Email::parse(email).unwrap(),
                name: name.into(),
                account_name: format!("{name}'s company"),
                role: p.role,
            }))
            .await;
        self.wait_known(p).await;
    }

    /// A customer who signed up before support-router was deployed (it never saw the sign-up, so
    /// knows nothing of the account's plan) and has since changed their profile.
    pub async fn known_from_before(&self, p: &Principal, email: &str, name: &str) {
        let updated = UserUpdated { user_id: p.user_id, account_id: p.account_id, email: Email::parse(email).unwrap(), name: name.into() };
        self.svc.publish(&Envelope::of(&updated)).await;
        self.wait_known(p).await;
    }

    async fn wait_known(&self, p: &Principal) {
        let pool = self.pool().clone();
        let user = p.user_id;
        wait_for(WAIT, "the user in the directory", || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM directory_users WHERE user_id = $1")
                    .bind(user)
                    .fetch_one(&pool)
                    .await
                    .ok()
                    .filter(|n| *n == 1)
            }
        })
        .await;
    }

    /// Announces an access change as billing does (`since` as given), and waits until it is applied
    /// (or, when older than what is known, handled).
    pub async fn access_changed(&self, account: AccountId, plan: &str, to: AccessStatus, since: DateTime<Utc>) {
        let env = Envelope::of(&AccessChanged {
            account_id: account,
            from: AccessStatus::None,
            to,
            plan: plan.into(),
            entitlements: Vec::new(),
            reason: "test".into(),
            cause_event_id: String::new(),
            cause_event_type: String::new(),
            stripe_customer_id: None,
            grace_until: None,
            since,
        });
        self.svc.publish(&env).await;
        let pool = self.pool().clone();
        wait_for(WAIT, "the access change handled", || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sb_inbox WHERE event_id = $1")
                    .bind(env.id)
                    .fetch_one(&pool)
                    .await
                    .ok()
                    .filter(|n| *n == 1)
            }
        })
        .await;
    }

    /// Opens a ticket as `p` (the portal).
    pub async fn open(&self, p: &Principal, subject: &str, body: &str, category: pb::Category) -> pb::TicketView {
        let req = pb::CreateTicketRequest { subject: subject.into(), body: body.into(), category: category as i32, ..Default::default() };
        self.client().create_ticket(as_user(req, p)).await.unwrap().into_inner()
    }

    pub async fn get(&self, p: &Principal, id: &str) -> Result<pb::TicketView, Status> {
        self.client().get_ticket(as_user(pb::GetTicketRequest { ticket_id: id.into() }, p)).await.map(Response::into_inner)
    }

    pub async fn list(&self, p: &Principal, req: pb::ListTicketsRequest) -> Vec<pb::Ticket> {
        self.client().list_tickets(as_user(req, p)).await.unwrap().into_inner().tickets
    }

    pub async fn reply(&self, p: &Principal, id: &str, body: &str) -> Result<pb::TicketView, Status> {
        self.client()
            .add_message(as_user(pb::AddMessageRequest { ticket_id: id.into(), body: body.into() }, p))
            .await
            .map(Response::into_inner)
    }

    pub async fn resolve(&self, p: &Principal, id: &str) -> Result<pb::TicketView, Status> {
        self.client().resolve(as_user(pb::ResolveRequest { ticket_id: id.into() }, p)).await.map(Response::into_inner)
    }

    /// How many tickets are stored.
    pub async fn ticket_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM tickets").fetch_one(self.pool()).await.unwrap()
    }

    /// `data` of the outbox events of this type about this ticket.
    pub async fn events(&self, event_type: &str, ticket_id: &str) -> Vec<serde_json::Value> {
        self.svc.outbox(event_type).await.into_iter().filter(|e| e["ticket_id"] == ticket_id).collect()
    }

    pub async fn stop(self) {
        self.svc.stop().await;
    }
}

/// A customer of `account`.
pub fn customer(account: AccountId) -> Principal {
    Principal { user_id: UserId::new(), account_id: account, role: Role::Customer, impersonator: None }
}

/// A customer of a new account.
pub fn new_customer() -> Principal {
    customer(AccountId::new())
}

/// Staff (agent or admin) of the founder's own account.
pub fn staff(role: Role) -> Principal {
    Principal { user_id: UserId::new(), account_id: AccountId::new(), role, impersonator: None }
}

/// An admin acting as `customer`.
pub fn impersonating(customer: &Principal, admin: &Principal) -> Principal {
    Principal { impersonator: Some(admin.user_id), ..customer.clone() }
}

pub fn ticket(v: &pb::TicketView) -> &pb::Ticket {
    v.ticket.as_ref().unwrap()
}

pub fn clock_state(c: &Option<pb::Clock>) -> pb::ClockState {
    pb::ClockState::try_from(c.as_ref().unwrap().state).unwrap()
}
