//! The `switchboard.billing.v1.Billing` gRPC service: checks the caller, converts wire ↔ domain.

use chrono::{DateTime, Utc};
use sb_proto::billing::v1::{self as pb, billing_server};
use sb_runtime::caller::{Caller, ServiceAuth};
use tonic::{Request, Response, Status};
use tracing::warn;
use uuid::Uuid;

use crate::{
    domain::AccessStatus,
    local::{self, Sender},
    service::{Billing, CheckoutError},
    store,
};

pub struct BillingService {
    billing: Billing,
    auth: ServiceAuth,
    sender: Sender,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    sb_proto::timestamp(t.timestamp(), t.timestamp_subsec_nanos() as i32)
}

fn status_pb(s: AccessStatus) -> i32 {
    (match s {
        AccessStatus::None => pb::AccessStatus::None,
        AccessStatus::Pending => pb::AccessStatus::Pending,
        AccessStatus::Active => pb::AccessStatus::Active,
        AccessStatus::PastDue => pb::AccessStatus::PastDue,
        AccessStatus::Revoked => pb::AccessStatus::Revoked,
    }) as i32
}

/// 5xx-class failures are logged here with their cause and reach the caller without it.
fn internal(e: impl std::fmt::Display) -> Status {
    warn!(error = %e, "billing internal error");
    Status::internal("internal error")
}

fn account_id(raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw).map_err(|_| Status::invalid_argument("account_id: not a valid id"))
}

fn api_status(e: crate::stripe_api::ApiError) -> Status {
    match e {
        crate::stripe_api::ApiError::Unavailable(m) => {
            warn!(error = %m, "Stripe unavailable");
            Status::unavailable("Stripe is unavailable; try again shortly")
        }
        crate::stripe_api::ApiError::Refused(m) => {
            warn!(error = %m, "Stripe refused a request");
            Status::failed_precondition("Stripe refused the request; see billing's log")
        }
    }
}

impl BillingService {
    pub fn new(billing: Billing, token: &secrecy::SecretString, sender: Sender) -> Self {
        Self { billing, auth: ServiceAuth::new(token), sender }
    }

    pub fn into_server(self) -> billing_server::BillingServer<Self> {
        billing_server::BillingServer::new(self)
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.auth.check(req.metadata())
    }

    fn require_local(&self) -> Result<(), Status> {
        if self.billing.cfg.local() { Ok(()) } else { Err(Status::failed_precondition("Stripe is configured; local checkout is off")) }
    }

    async fn access(&self, conn: &mut sqlx::PgConnection, account: Uuid) -> Result<pb::Access, Status> {
        // One round trip: this answers every `/v1/me`.
        let (row, customer) = store::access_with_customer(conn, account).await.map_err(internal)?;
        let customer = customer.unwrap_or_default();
        Ok(match row {
            Some(a) => pb::Access {
                account_id: account.to_string(),
                status: status_pb(a.status),
                entitlements: if a.status.grants() { self.billing.cfg.plans.entitlements(&a.plan) } else { Vec::new() },
                plan: a.plan,
                since: Some(ts(a.since)),
                reason: a.reason,
                cause_event_id: a.cause_event_id,
                cause_event_type: a.cause_event_type,
                grace_until: a.grace_until.map(ts),
                stripe_customer_id: customer,
            },
            None => pb::Access {
                account_id: account.to_string(),
                status: status_pb(AccessStatus::None),
                reason: "no checkout started".into(),
                stripe_customer_id: customer,
                ..Default::default()
            },
        })
    }

    fn local_view(c: &store::CheckoutRow) -> pb::LocalCheckout {
        let status = if c.status == "open" && c.expires_at <= Utc::now() { "expired".to_owned() } else { c.status.clone() };
        pb::LocalCheckout {
            id: c.session_id.clone(),
            account_id: c.account_id.to_string(),
            plan: c.plan.clone(),
            amount: c.amount,
            currency: c.currency.clone(),
            status,
            success_url: c.success_url.clone(),
            cancel_url: c.cancel_url.clone(),
        }
    }

    async fn local_checkout(&self, caller: &Caller, session_id: &str, conn: &mut sqlx::PgConnection) -> Result<store::CheckoutRow, Status> {
        let c = store::checkout(conn, session_id, true).await.map_err(internal)?;
        let c = c.filter(|c| c.local).ok_or_else(|| Status::not_found("checkout session not found"))?;
        caller.may_read(c.account_id).map_err(|_| Status::not_found("checkout session not found"))?;
        Ok(c)
    }
}

#[tonic::async_trait]
impl billing_server::Billing for BillingService {
    async fn get_access(&self, req: Request<pb::GetAccessRequest>) -> Result<Response<pb::Access>, Status> {
        let caller = self.caller(&req)?;
        let account = account_id(&req.get_ref().account_id)?;
        caller.may_read(account)?;
        let mut conn = self.billing.pool.acquire().await.map_err(internal)?;
        Ok(Response::new(self.access(&mut conn, account).await?))
    }

    async fn get_billing(&self, req: Request<pb::GetBillingRequest>) -> Result<Response<pb::BillingView>, Status> {
        let caller = self.caller(&req)?;
        let account = account_id(&req.get_ref().account_id)?;
        caller.may_read(account)?;
        let mut conn = self.billing.pool.acquire().await.map_err(internal)?;
        let access = self.access(&mut conn, account).await?;
        let subscriptions = store::subscriptions(&mut conn, account).await.map_err(internal)?;
        let invoices = store::invoices(&mut conn, account, 50).await.map_err(internal)?;
        let history = store::history(&mut conn, account, 50).await.map_err(internal)?;
        Ok(Response::new(pb::BillingView {
            access: Some(access),
            subscriptions: subscriptions
                .into_iter()
                .map(|s| pb::Subscription {
                    id: s.fact.id,
                    stripe_customer_id: s.fact.customer,
                    status: s.fact.status,
                    plan: s.plan,
                    price_id: s.fact.price_id,
                    current_period_end: s.fact.current_period_end.map(ts),
                    as_of: Some(ts(s.fact.as_of)),
                })
                .collect(),
            invoices: invoices
                .into_iter()
                .map(|i| pb::Invoice {
                    id: i.id,
                    subscription_id: i.subscription_id,
                    status: i.status,
                    amount_due: i.amount_due,
                    amount_paid: i.amount_paid,
                    currency: i.currency,
                    created: Some(ts(i.as_of)),
                })
                .collect(),
            history: history
                .into_iter()
                .map(|h| pb::AccessChange {
                    from: status_pb(h.from),
                    to: status_pb(h.to),
                    plan: h.plan,
                    reason: h.reason,
                    cause_event_id: h.cause_event_id,
                    cause_event_type: h.cause_event_type,
                    at: Some(ts(h.at)),
                })
                .collect(),
        }))
    }

    async fn create_checkout_session(
        &self,
        req: Request<pb::CreateCheckoutSessionRequest>,
    ) -> Result<Response<pb::CheckoutSession>, Status> {
        let caller = self.caller(&req)?;
        let body = req.into_inner();
        let account = account_id(&body.account_id)?;
        caller.may_act_for(account)?;
        let row = self.billing.start_checkout(account, &body.plan, &body.customer_email).await.map_err(|e| match e {
            CheckoutError::UnknownPlan(msg) => Status::invalid_argument(msg),
            CheckoutError::AlreadyActive => {
                Status::failed_precondition("the account already has an active subscription; manage it in the billing portal")
            }
            CheckoutError::Stripe(e) => api_status(e),
            CheckoutError::Database(e) => internal(e),
        })?;
        Ok(Response::new(pb::CheckoutSession { id: row.session_id, url: row.url, plan: row.plan, expires_at: Some(ts(row.expires_at)) }))
    }

    async fn create_portal_session(&self, req: Request<pb::CreatePortalSessionRequest>) -> Result<Response<pb::PortalSession>, Status> {
        let caller = self.caller(&req)?;
        let account = account_id(&req.get_ref().account_id)?;
        caller.may_act_for(account)?;
        let mut conn = self.billing.pool.acquire().await.map_err(internal)?;
        let customer = store::customer_for_account(&mut conn, account)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::failed_precondition("no billing account yet: complete a checkout first"))?;
        let cfg = &self.billing.cfg;
        let url = match &self.billing.stripe {
            Some(api) => api.create_portal(&customer, &format!("{}/v1/me", cfg.public_url)).await.map_err(api_status)?,
            None => format!("{}/billing/local/portal", cfg.public_url),
        };
        Ok(Response::new(pb::PortalSession { url }))
    }

    async fn get_local_checkout(&self, req: Request<pb::GetLocalCheckoutRequest>) -> Result<Response<pb::LocalCheckout>, Status> {
        self.require_local()?;
        let caller = self.caller(&req)?;
        let mut conn = self.billing.pool.acquire().await.map_err(internal)?;
        let c = self.local_checkout(&caller, &req.get_ref().session_id, &mut conn).await?;
        Ok(Response::new(Self::local_view(&c)))
    }

    async fn complete_local_checkout(&self, req: Request<pb::CompleteLocalCheckoutRequest>) -> Result<Response<pb::LocalCheckout>, Status> {
        self.require_local()?;
        let caller = self.caller(&req)?;
        let mut tx = self.billing.pool.begin().await.map_err(internal)?;
        let c = self.local_checkout(&caller, &req.get_ref().session_id, &mut tx).await?;
        caller.may_act_for(c.account_id)?;
        let view = Self::local_view(&c);
        match view.status.as_str() {
            "open" => {}
            "complete" => return Ok(Response::new(view)),
            _ => return Err(Status::failed_precondition("this checkout session has expired; start a new one")),
        }
        let customer = match store::customer_for_account(&mut tx, c.account_id).await.map_err(internal)? {
            Some(existing) => existing,
            // Derived from the session, so confirming twice names the same customer.
            None => format!("cus_local_{}", local::suffix_of(&c.session_id).chars().take(14).collect::<String>()),
        };
        local::queue_checkout_paid(&mut tx, &c, &customer).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.sender.wake();
        Ok(Response::new(view))
    }

    async fn cancel_local_subscription(
        &self,
        req: Request<pb::CancelLocalSubscriptionRequest>,
    ) -> Result<Response<pb::CancelLocalSubscriptionResponse>, Status> {
        self.require_local()?;
        let caller = self.caller(&req)?;
        let account = account_id(&req.get_ref().account_id)?;
        caller.may_act_for(account)?;
        let mut tx = self.billing.pool.begin().await.map_err(internal)?;
        let sub = store::live_subscription(&mut tx, account)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::failed_precondition("no active subscription to cancel"))?;
        local::queue_subscription_cancelled(&mut tx, &sub, account).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.sender.wake();
        Ok(Response::new(pb::CancelLocalSubscriptionResponse { subscription_id: sub.fact.id }))
    }
}
