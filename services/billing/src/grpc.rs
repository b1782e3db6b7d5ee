//! The `switchboard.billing.v1.Billing` gRPC service: admits the caller by the RPC's guard (and,
//! for an account's records, by a read or act-for proof), converts wire ↔ domain, calls the service
//! and maps its errors. Nothing else.

use chrono::{DateTime, Utc};
use sb_proto::billing::v1::{self as pb, billing_server};
use sb_runtime::caller::{Admin, AnyCaller, Caller, ServiceAuth};
use secrecy::SecretString;
use tonic::{Request, Response, Status};

use crate::{
    domain::{AccessStatus, AccountId, Checkout, Invalid, RefundAsk, RefundRequest},
    error::BillingError,
    service::{AccountAccess, Billing},
};

pub struct BillingService {
    billing: Billing,
    auth: ServiceAuth,
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

fn err(e: BillingError) -> Status {
    e.into()
}

fn account_id(raw: &str) -> Result<AccountId, Status> {
    raw.parse().map_err(|e: Invalid| err(e.into()))
}

fn access_pb(a: AccountAccess) -> pb::Access {
    let stripe_customer_id = a.stripe_customer_id.unwrap_or_default();
    match a.access {
        Some(access) => pb::Access {
            account_id: a.account_id.to_string(),
            status: status_pb(access.status),
            plan: access.plan,
            entitlements: a.entitlements,
            since: Some(ts(access.since)),
            reason: access.reason,
            cause_event_id: access.cause_event_id,
            cause_event_type: access.cause_event_type,
            grace_until: access.grace_until.map(ts),
            stripe_customer_id,
        },
        None => pb::Access {
            account_id: a.account_id.to_string(),
            status: status_pb(AccessStatus::None),
            reason: "no checkout started".into(),
            stripe_customer_id,
            ..Default::default()
        },
    }
}

fn local_checkout_pb(c: Checkout) -> pb::LocalCheckout {
    pb::LocalCheckout {
        status: c.status_at(Utc::now()).as_str().to_owned(),
        id: c.session_id,
        account_id: c.account_id.to_string(),
        plan: c.plan,
        amount: c.amount,
        currency: c.currency,
        success_url: c.success_url,
        cancel_url: c.cancel_url,
    }
}

/// A refund as `staff` or a customer sees it (the reason and requester are staff-only).
fn refund_pb(r: RefundRequest, staff: bool) -> pb::Refund {
    pb::Refund {
        id: r.id.to_string(),
        account_id: r.account_id.to_string(),
        invoice_id: r.invoice_id,
        amount: r.amount,
        currency: r.currency,
        status: r.status.as_str().to_owned(),
        reason: if staff { r.reason } else { String::new() },
        requested_by: if staff { r.requested_by.to_string() } else { String::new() },
        stripe_refund_id: r.stripe_refund_id.unwrap_or_default(),
        charge_id: r.charge_id.unwrap_or_default(),
        failure: r.failure.unwrap_or_default(),
        created: Some(ts(r.created_at)),
    }
}

impl BillingService {
    pub fn new(billing: Billing, service_token: &SecretString) -> Self {
        Self { billing, auth: ServiceAuth::new(service_token) }
    }

    pub fn into_server(self) -> billing_server::BillingServer<Self> {
        billing_server::BillingServer::new(self)
    }
}

#[tonic::async_trait]
impl billing_server::Billing for BillingService {
    async fn list_plans(&self, req: Request<pb::ListPlansRequest>) -> Result<Response<pb::PlanList>, Status> {
        let AnyCaller(_) = self.auth.authorize(&req)?;
        let plans = self
            .billing
            .plans()
            .iter()
            .map(|p| pb::Plan {
                name: p.name.clone(),
                amount: p.amount,
                currency: crate::domain::CURRENCY.to_owned(),
                entitlements: p.entitlements.clone(),
            })
            .collect();
        Ok(Response::new(pb::PlanList { plans }))
    }

    async fn get_access(&self, req: Request<pb::GetAccessRequest>) -> Result<Response<pb::Access>, Status> {
        let AnyCaller(caller) = self.auth.authorize(&req)?;
        let account = caller.read(account_id(&req.get_ref().account_id)?)?;
        let access = self.billing.access(account).await.map_err(err)?;
        Ok(Response::new(access_pb(access)))
    }

    async fn get_billing(&self, req: Request<pb::GetBillingRequest>) -> Result<Response<pb::BillingView>, Status> {
        let AnyCaller(caller) = self.auth.authorize(&req)?;
        let account = caller.read(account_id(&req.get_ref().account_id)?)?;
        let staff = match &caller {
            Caller::User(p) => p.is_staff(),
            Caller::Service(_) => true,
        };
        let view = self.billing.billing(account).await.map_err(err)?;
        Ok(Response::new(pb::BillingView {
            access: Some(access_pb(view.access)),
            subscriptions: view
                .subscriptions
                .into_iter()
                .map(|s| pb::Subscription {
                    id: s.fact.id,
                    stripe_customer_id: s.fact.customer,
                    status: s.fact.status.as_str().to_owned(),
                    plan: s.plan,
                    price_id: s.fact.price_id,
                    current_period_end: s.fact.current_period_end.map(ts),
                    as_of: Some(ts(s.fact.as_of)),
                })
                .collect(),
            invoices: view
                .invoices
                .into_iter()
                .map(|i| pb::Invoice {
                    id: i.id,
                    subscription_id: i.subscription_id.unwrap_or_default(),
                    status: i.status.as_str().to_owned(),
                    amount_due: i.amount_due,
                    amount_paid: i.amount_paid,
                    currency: i.currency,
                    created: Some(ts(i.as_of)),
                })
                .collect(),
            history: view
                .history
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
            refunds: view.refunds.into_iter().map(|r| refund_pb(r, staff)).collect(),
        }))
    }

    async fn create_checkout_session(
        &self,
        req: Request<pb::CreateCheckoutSessionRequest>,
    ) -> Result<Response<pb::CheckoutSession>, Status> {
        let AnyCaller(caller) = self.auth.authorize(&req)?;
        let r = req.into_inner();
        let account = caller.act_for(account_id(&r.account_id)?)?;
        let c = self.billing.start_checkout(account, &r.plan, &r.customer_email).await.map_err(err)?;
        Ok(Response::new(pb::CheckoutSession { id: c.session_id, url: c.url, plan: c.plan, expires_at: Some(ts(c.expires_at)) }))
    }

    async fn create_portal_session(&self, req: Request<pb::CreatePortalSessionRequest>) -> Result<Response<pb::PortalSession>, Status> {
        let AnyCaller(caller) = self.auth.authorize(&req)?;
        let account = caller.act_for(account_id(&req.get_ref().account_id)?)?;
        let url = self.billing.portal_session(account).await.map_err(err)?;
        Ok(Response::new(pb::PortalSession { url }))
    }

    async fn get_local_checkout(&self, req: Request<pb::GetLocalCheckoutRequest>) -> Result<Response<pb::LocalCheckout>, Status> {
        let AnyCaller(caller) = self.auth.authorize(&req)?;
        let c = self.billing.local_checkout(&caller, &req.get_ref().session_id).await.map_err(err)?;
        Ok(Response::new(local_checkout_pb(c)))
    }

    async fn complete_local_checkout(&self, req: Request<pb::CompleteLocalCheckoutRequest>) -> Result<Response<pb::LocalCheckout>, Status> {
        let AnyCaller(caller) = self.auth.authorize(&req)?;
        let session_id = &req.get_ref().session_id;
        // Whose session it is (one the caller may see), then whether they may pay for it.
        let owner = self.billing.local_checkout(&caller, session_id).await.map_err(err)?.account_id;
        let account = caller.act_for(owner)?;
        let c = self.billing.complete_local_checkout(account, session_id).await.map_err(err)?;
        Ok(Response::new(local_checkout_pb(c)))
    }

    async fn cancel_local_subscription(
        &self,
        req: Request<pb::CancelLocalSubscriptionRequest>,
    ) -> Result<Response<pb::CancelLocalSubscriptionResponse>, Status> {
        let AnyCaller(caller) = self.auth.authorize(&req)?;
        let account = caller.act_for(account_id(&req.get_ref().account_id)?)?;
        let subscription_id = self.billing.cancel_local_subscription(account).await.map_err(err)?;
        Ok(Response::new(pb::CancelLocalSubscriptionResponse { subscription_id }))
    }

    async fn refund_payment(&self, req: Request<pb::RefundPaymentRequest>) -> Result<Response<pb::Refund>, Status> {
        let Admin(admin) = self.auth.authorize(&req)?;
        let r = req.into_inner();
        let ask = RefundAsk::new(account_id(&r.account_id)?, &r.invoice_id, r.amount, &r.reason, &r.idempotency_key, admin.user_id)
            .map_err(|e| err(e.into()))?;
        let refund = self.billing.refund(ask).await.map_err(err)?;
        Ok(Response::new(refund_pb(refund, true)))
    }
}
