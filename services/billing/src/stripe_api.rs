//! The real Stripe adapter, used when `SWITCHBOARD_STRIPE_API_KEY` is set: checkout and portal
//! sessions, reading a subscription or customer back, and listing subscriptions for
//! reconciliation. Requests and responses are async-stripe's types; they travel over this module's
//! own small HTTP client (reqwest), because async-stripe's drops the response headers and a 429's
//! `Retry-After` must reach the retry ladder. The base URL is configurable so tests point it at a
//! fake Stripe.

use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use stripe_billing::{
    billing_portal_session::CreateBillingPortalSession,
    invoice_payment::{ListInvoicePayment, ListInvoicePaymentStatus},
    subscription::{ListSubscription, ListSubscriptionStatus, RetrieveSubscription},
};
use stripe_checkout::checkout_session::{CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData};
use stripe_client_core::{
    CustomizedStripeRequest, IdempotencyKey, RequestStrategy, StripeClient, StripeClientErr, StripeMethod, StripeRequest,
};
use stripe_core::{
    customer::{RetrieveCustomer, RetrieveCustomerReturned},
    refund::{CreateRefund, CreateRefundReason},
};
use stripe_shared::{CheckoutSessionMode, InvoicesPaymentsInvoicePaymentAssociatedPaymentType, Subscription};

use crate::domain::{AccountId, Invalid, Plan, Source, SubscriptionFact, account_metadata, fact_rank, metadata_account, timestamp};

/// How long one request to Stripe may take (connect, send, answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A Stripe API failure, split the way callers need it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Stripe (or the network) may answer later: 5xx, 429, timeouts, refused connections, an
    /// answer that does not read. `retry_after`: how long Stripe asked us to wait, if it said.
    #[error("Stripe unavailable: {reason}")]
    Unavailable { reason: String, retry_after: Option<Duration> },
    /// Stripe refused the request (4xx): retrying will not help.
    #[error("Stripe refused the request: {0}")]
    Refused(String),
}

impl ApiError {
    fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable { reason: reason.into(), retry_after: None }
    }
}

impl StripeClientErr for ApiError {
    fn deserialize_err(msg: impl std::fmt::Display) -> Self {
        Self::unavailable(format!("Stripe's answer did not read: {msg}"))
    }
}

/// Stripe's error body: `{"error": {"type", "code", "message", ...}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// The `Retry-After` of an answer, in whole seconds (Stripe's form; an HTTP date is not used).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// The failure an error answer stands for. Stripe's message is kept (it names no secret of ours).
fn failure(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]) -> ApiError {
    let detail = serde_json::from_slice::<ErrorBody>(body).ok().map(|b| b.error);
    let message = detail.as_ref().and_then(|d| d.message.clone()).unwrap_or_default();
    let code = detail.and_then(|d| d.code).map(|c| format!(" ({c})")).unwrap_or_default();
    let reason = format!("{status}{code}: {message}");
    match status {
        429 => ApiError::Unavailable { reason, retry_after: retry_after(headers) },
        400..=499 => ApiError::Refused(reason),
        _ => ApiError::Unavailable { reason, retry_after: retry_after(headers) },
    }
}

/// Sends async-stripe's requests with Stripe's headers and reads every answer's status and headers.
struct Transport {
    http: reqwest::Client,
    /// `https://api.stripe.com`, without a trailing slash.
    base: String,
    key: SecretString,
}

impl StripeClient for Transport {
    type Err = ApiError;

    async fn execute(&self, req: CustomizedStripeRequest) -> Result<Bytes, ApiError> {
        // billing customizes a request only with an idempotency key (no connected accounts, the
        // client's own timeout).
        let (req, overrides) = req.into_pieces();
        let idempotency_key = overrides.request_strategy.and_then(|s| s.get_key());
        let mut url = format!("{}/v1{}", self.base, req.path);
        if let Some(q) = req.query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(&q);
        }
        let method = match req.method {
            StripeMethod::Get => reqwest::Method::GET,
            StripeMethod::Post => reqwest::Method::POST,
            StripeMethod::Delete => reqwest::Method::DELETE,
        };
        let mut call = self
            .http
            .request(method, url)
            .bearer_auth(self.key.expose_secret())
            .header("stripe-version", stripe_shared::version::VERSION.as_str());
        if let Some(key) = idempotency_key {
            call = call.header("idempotency-key", key.as_str());
        }
        if let Some(body) = req.body {
            call = call.header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        }
        let answer = call.send().await.map_err(|e| ApiError::unavailable(format!("no answer: {}", without_url(e))))?;
        let (status, headers) = (answer.status(), answer.headers().clone());
        let body = answer.bytes().await.map_err(|e| ApiError::unavailable(format!("answer cut short: {}", without_url(e))))?;
        if status.is_success() { Ok(body) } else { Err(failure(status.as_u16(), &headers, &body)) }
    }
}

/// A reqwest error without its URL (the query carries request parameters).
fn without_url(e: reqwest::Error) -> String {
    if e.is_timeout() { format!("timed out after {REQUEST_TIMEOUT:?}") } else { e.without_url().to_string() }
}

pub struct StripeApi {
    transport: Transport,
}

/// The payment of an invoice a refund takes money back from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    PaymentIntent(String),
    /// A charge made without a payment intent (older integrations).
    Charge(String),
}

/// A refund Stripe made (or is making).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRefund {
    pub id: String,
    /// Stripe's status: pending, requires_action, succeeded, failed or canceled.
    pub status: String,
    pub charge: Option<String>,
    pub failure_reason: Option<String>,
}

/// A created checkout session.
#[derive(Debug, Clone)]
pub struct CreatedCheckout {
    pub id: String,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

impl StripeApi {
    pub fn new(key: &SecretString, base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("switchboard-billing/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("building the Stripe client: {e}"))?;
        Ok(Self { transport: Transport { http, base: base_url.trim_end_matches('/').to_owned(), key: key.clone() } })
    }

    /// A subscription-mode Checkout Session for `plan`, carrying the account id as
    /// `client_reference_id` and in the session's and subscription's metadata.
    pub async fn create_checkout(
        &self,
        account: AccountId,
        plan: &Plan,
        customer: Option<&str>,
        email: Option<&str>,
        success_url: &str,
        cancel_url: &str,
    ) -> Result<CreatedCheckout, ApiError> {
        let item = CreateCheckoutSessionLineItems { price: Some(plan.price_id.clone()), quantity: Some(1), ..Default::default() };
        let mut sub_data = CreateCheckoutSessionSubscriptionData::new();
        sub_data.metadata = Some(account_metadata(account));
        let mut req = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .client_reference_id(account.to_string())
            .metadata(account_metadata(account))
            .subscription_data(sub_data)
            .line_items(vec![item])
            .success_url(success_url)
            .cancel_url(cancel_url);
        if let Some(c) = customer {
            req = req.customer(c);
        } else if let Some(e) = email.filter(|e| !e.is_empty()) {
            req = req.customer_email(e);
        }
        let s = req.send(&self.transport).await?;
        Ok(CreatedCheckout {
            id: s.id.to_string(),
            url: s.url.unwrap_or_default(),
            expires_at: timestamp(s.expires_at).unwrap_or_else(Utc::now),
        })
    }

    pub async fn create_portal(&self, customer: &str, return_url: &str) -> Result<String, ApiError> {
        let s = CreateBillingPortalSession::new().customer(customer).return_url(return_url).send(&self.transport).await?;
        Ok(s.url)
    }

    pub async fn subscription(&self, id: &str) -> Result<Subscription, ApiError> {
        RetrieveSubscription::new(id).send(&self.transport).await
    }

    /// The account id a customer carries in its metadata, if any.
    pub async fn customer_account(&self, customer: &str) -> Result<Option<AccountId>, ApiError> {
        Ok(match RetrieveCustomer::new(customer).send(&self.transport).await? {
            RetrieveCustomerReturned::Customer(c) => c.metadata.as_ref().and_then(metadata_account),
            RetrieveCustomerReturned::DeletedCustomer(_) => None,
        })
    }

    /// The paid payment of an invoice (API versions since 2025-03 link them through
    /// `invoice_payments`; an invoice no longer names its charge). `None` when it has none.
    pub async fn invoice_payment(&self, invoice: &str) -> Result<Option<Payment>, ApiError> {
        let page =
            ListInvoicePayment::new().invoice(invoice).status(ListInvoicePaymentStatus::Paid).limit(10).send(&self.transport).await?;
        Ok(page.data.iter().find_map(|p| match p.payment.type_ {
            InvoicesPaymentsInvoicePaymentAssociatedPaymentType::PaymentIntent => {
                p.payment.payment_intent.as_ref().map(|pi| Payment::PaymentIntent(pi.id().to_string()))
            }
            InvoicesPaymentsInvoicePaymentAssociatedPaymentType::Charge => {
                p.payment.charge.as_ref().map(|c| Payment::Charge(c.id().to_string()))
            }
            _ => None,
        }))
    }

    /// Refunds `amount` of `payment`, with `key` as the `Idempotency-Key`: asking again with the
    /// same key answers the same refund and never refunds twice.
    pub async fn create_refund(
        &self,
        payment: &Payment,
        amount: i64,
        metadata: std::collections::HashMap<String, String>,
        key: &str,
    ) -> Result<CreatedRefund, ApiError> {
        let key = IdempotencyKey::new(key).map_err(|e| ApiError::Refused(format!("idempotency key: {e}")))?;
        let mut req = CreateRefund::new().amount(amount).reason(CreateRefundReason::RequestedByCustomer).metadata(metadata);
        req = match payment {
            Payment::PaymentIntent(pi) => req.payment_intent(pi.as_str()),
            Payment::Charge(ch) => req.charge(ch.as_str()),
        };
        let r = req.customize().request_strategy(RequestStrategy::Idempotent(key)).send(&self.transport).await?;
        Ok(CreatedRefund {
            id: r.id.to_string(),
            status: r.status.unwrap_or_else(|| "pending".to_owned()),
            charge: r.charge.as_ref().map(|c| c.id().to_string()),
            failure_reason: r.failure_reason,
        })
    }

    /// Every subscription in the Stripe account, all statuses, following pagination.
    pub async fn all_subscriptions(&self) -> Result<Vec<Subscription>, ApiError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut req = ListSubscription::new().status(ListSubscriptionStatus::All).limit(100);
            if let Some(a) = &after {
                req = req.starting_after(a.clone());
            }
            let page = req.send(&self.transport).await?;
            after = page.data.last().map(|s| s.id.to_string());
            out.extend(page.data);
            if !page.has_more || after.is_none() {
                return Ok(out);
            }
        }
    }
}

/// A subscription read back from Stripe, as a fact that outranks events of the same second
/// (`rank`). A status billing does not know is an error.
pub fn fact_from_stripe(
    sub: &Subscription,
    as_of: DateTime<Utc>,
    rank: i32,
    cause_event_id: &str,
    cause_event_type: &str,
) -> Result<SubscriptionFact, Invalid> {
    let item = sub.items.data.first();
    let status = sub.status.as_str().parse().map_err(|e: Invalid| Invalid::new("subscription.status", e.message))?;
    Ok(SubscriptionFact {
        id: sub.id.to_string(),
        customer: sub.customer.id().to_string(),
        status,
        price_id: item.map(|i| i.price.id.to_string()).unwrap_or_default(),
        current_period_end: item.and_then(|i| timestamp(i.current_period_end)),
        as_of,
        rank: rank.max(fact_rank(status, Source::Subscription)),
        paid_at: None,
        cause_event_id: cause_event_id.to_owned(),
        cause_event_type: cause_event_type.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::*;

    #[test]
    fn error_answers_split_into_refused_and_unavailable_with_the_wait_stripe_asked_for() {
        let body = br#"{"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"}}"#;
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(
            failure(429, &headers, body),
            ApiError::Unavailable { reason: "429 (rate_limit): Too many requests".into(), retry_after: Some(Duration::from_secs(2)) }
        );
        assert_eq!(failure(429, &HeaderMap::new(), b"").to_string(), "Stripe unavailable: 429: ");
        assert!(matches!(failure(404, &headers, b"{}"), ApiError::Refused(m) if m.starts_with("404")));
        assert!(matches!(failure(503, &HeaderMap::new(), b"not json"), ApiError::Unavailable { retry_after: None, .. }));
    }
}
