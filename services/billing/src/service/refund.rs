//! Refunds an admin asks for: the intent is recorded first (in one short transaction that also
//! checks what is left to refund of the payment), then Stripe is asked with the request's id as
//! the `Idempotency-Key`, then its answer is recorded. The same request again — a double click,
//! a retry after a timeout — finds the first by its idempotency key and never refunds twice.
//!
//! With the embedded local checkout the refund is decided at once and billing queues the
//! `charge.refunded` Stripe would send. In both cases access follows that event, through the
//! same path as every other Stripe event, per `BILLING_REFUND_POLICY`.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use tracing::{info, warn};
use uuid::Uuid;

use super::{Billing, Payments, Result};
use crate::{
    domain::{InvoiceStatus, RefundAsk, RefundRequest, RefundStatus},
    error::BillingError,
    local, store,
    stripe_api::{self, ApiError},
};

/// How long one attempt has the turn to ask Stripe about a request: longer than Stripe may take
/// to answer, so a concurrent attempt (a double click) waits for this one instead of asking too.
const ASKING_LEASE: Duration = Duration::from_secs(stripe_api::REQUEST_TIMEOUT.as_secs() * 2 + 5);

impl Billing {
    /// Issues (or finds again) the refund `ask` describes. Returns the request as it stands: a
    /// request Stripe has not answered yet stays `requested` and is sent again when asked again.
    pub async fn refund(&self, ask: RefundAsk) -> Result<RefundRequest> {
        let request = self.record_refund(&ask).await?;
        if request.status != RefundStatus::Requested {
            return Ok(request);
        }
        let Payments::Stripe(api) = &*self.payments else { return Ok(request) };
        if !store::claim_refund_turn(&mut *self.pool.acquire().await?, request.id, ASKING_LEASE).await? {
            // Another attempt is asking Stripe right now.
            return Ok(request);
        }
        // No connection is held while Stripe answers.
        let asked = async {
            let payment = api
                .invoice_payment(&request.invoice_id)
                .await?
                .ok_or_else(|| ApiError::Refused(format!("invoice {} has no paid payment in Stripe", request.invoice_id)))?;
            let metadata = HashMap::from([
                ("account_id".to_owned(), request.account_id.to_string()),
                ("switchboard_refund".to_owned(), request.id.to_string()),
                ("reason".to_owned(), request.reason.clone()),
            ]);
            api.create_refund(&payment, request.amount, metadata, &request.id.to_string()).await
        }
        .await;
        let mut conn = self.pool.acquire().await?;
        let answered = match asked {
            Ok(r) => {
                let status = r.status.parse::<RefundStatus>().unwrap_or(RefundStatus::Pending);
                let failure = r.failure_reason.unwrap_or_default();
                info!(refund = %request.id, stripe_refund = %r.id, %status, "refund issued through Stripe");
                store::refund_answered(&mut conn, request.id, status, &r.id, r.charge.as_deref().unwrap_or(""), &failure).await?
            }
            Err(ApiError::Refused(why)) => {
                warn!(refund = %request.id, error = %why, "Stripe refused a refund");
                store::refund_answered(&mut conn, request.id, RefundStatus::Failed, "", "", &why).await?
            }
            Err(e @ ApiError::Unavailable { .. }) => {
                // Recorded as requested; asking again (same key) is safe and may ask at once.
                store::release_refund_turn(&mut conn, request.id).await?;
                return Err(e.into());
            }
        };
        metrics::counter!("billing_refunds_total", "kind" => "stripe").increment(1);
        answered.ok_or(BillingError::NotFound("refund request"))
    }

    /// Records the intent (or finds the request with the same idempotency key) in one
    /// transaction holding the invoice's lock.
    async fn record_refund(&self, ask: &RefundAsk) -> Result<RefundRequest> {
        let mut tx = self.pool.begin().await?;
        // The invoice first: concurrent requests for one payment queue here, so the second sees
        // the first (by key, or in what is left to refund).
        let locked = store::lock_account_invoice(&mut tx, ask.account, &ask.invoice_id).await?;
        if let Some(earlier) = store::refund_request_by_key(&mut tx, &ask.idempotency_key).await? {
            return if earlier.repeats(ask) { Ok(earlier) } else { Err(BillingError::IdempotencyKeyReused) };
        }
        let (invoice, customer) = locked.ok_or(BillingError::NotFound("invoice"))?;
        if invoice.status != InvoiceStatus::Paid || invoice.amount_paid <= 0 {
            return Err(BillingError::NothingToRefund(format!("invoice {} is {} with nothing paid", invoice.id, invoice.status)));
        }
        let left = invoice.amount_paid - store::refunds_counted(&mut tx, &invoice.id).await?;
        if left <= 0 {
            return Err(BillingError::NothingToRefund(format!("invoice {} is refunded in full already", invoice.id)));
        }
        let amount = ask.amount.unwrap_or(left);
        if amount > left {
            return Err(crate::domain::Invalid::new("amount", format!("at most {left} (minor units) is left to refund")).into());
        }
        let now = Utc::now();
        let mut request = RefundRequest {
            id: Uuid::new_v4(),
            idempotency_key: ask.idempotency_key.clone(),
            account_id: ask.account,
            invoice_id: invoice.id.clone(),
            amount,
            currency: invoice.currency.clone(),
            reason: ask.reason.clone(),
            requested_by: ask.requested_by,
            status: RefundStatus::Requested,
            stripe_refund_id: None,
            charge_id: None,
            failure: None,
            created_at: now,
            updated_at: now,
        };
        let local = match &*self.payments {
            Payments::Local(local) => {
                // Decided here: the refund is made, and Stripe's `charge.refunded` queued with it.
                let refunded = invoice.amount_paid - left + amount;
                let (refund_id, webhook) = local::charge_refunded(&invoice.id, &customer, invoice.amount_paid, refunded, now);
                store::queue_local_webhook(&mut tx, &webhook).await?;
                request.status = RefundStatus::Succeeded;
                request.stripe_refund_id = Some(refund_id);
                request.charge_id = Some(local::charge_for(&invoice.id));
                Some(local)
            }
            Payments::Stripe(_) => None,
        };
        if !store::insert_refund_request(&mut tx, &request).await? {
            // The same key was recorded for another invoice in the meantime.
            return Err(BillingError::IdempotencyKeyReused);
        }
        tx.commit().await?;
        info!(refund = %request.id, account = %request.account_id, invoice = %request.invoice_id, amount, "refund requested");
        if let Some(local) = local {
            local.wake();
            metrics::counter!("billing_refunds_total", "kind" => "local").increment(1);
        }
        Ok(request)
    }
}
