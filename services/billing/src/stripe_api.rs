//! The real Stripe adapter (async-stripe), used when `SWITCHBOARD_STRIPE_API_KEY` is set: checkout
//! and portal sessions, refetching a subscription or customer, and listing subscriptions for
//! reconciliation. The base URL is configurable so tests point it at a fake Stripe.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use stripe_billing::{
    billing_portal_session::CreateBillingPortalSession,
    subscription::{ListSubscription, ListSubscriptionStatus, RetrieveSubscription},
};
use stripe_checkout::checkout_session::{CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData};
use stripe_core::customer::{RetrieveCustomer, RetrieveCustomerReturned};
use stripe_shared::{CheckoutSessionMode, Subscription};
use uuid::Uuid;

use crate::domain::{Plan, Source, SubscriptionFact, account_metadata, fact_rank, timestamp};

/// A Stripe API failure, split the way the bus needs it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Stripe (or the network) may answer later: 5xx, 429, timeouts, refused connections.
    #[error("Stripe unavailable: {0}")]
    Unavailable(String),
    /// Stripe refused the request (4xx): retrying will not help.
    #[error("Stripe refused the request: {0}")]
    Refused(String),
}

impl From<stripe::StripeError> for ApiError {
    fn from(e: stripe::StripeError) -> Self {
        match &e {
            stripe::StripeError::Stripe(err, status) if (400..500).contains(status) && *status != 429 => {
                // Stripe's message, without anything we sent.
                Self::Refused(format!("{status}: {}", err.message.clone().unwrap_or_default()))
            }
            other => Self::Unavailable(other.to_string()),
        }
    }
}

pub struct StripeApi {
    client: stripe::Client,
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
        let client = stripe::ClientBuilder::new(key.expose_secret())
            .url(format!("{}/", base_url.trim_end_matches('/')))
            .timeout(Duration::from_secs(10))
            .app_info("switchboard-billing", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
            .build()
            .map_err(|e| anyhow::anyhow!("building the Stripe client: {e}"))?;
        Ok(Self { client })
    }

    /// A subscription-mode Checkout Session for `plan`, carrying the account id as
    /// `client_reference_id` and in the session's and subscription's metadata.
    pub async fn create_checkout(
        &self,
        account: Uuid,
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
        let s = req.send(&self.client).await?;
        Ok(CreatedCheckout {
            id: s.id.to_string(),
            url: s.url.unwrap_or_default(),
            expires_at: timestamp(s.expires_at).unwrap_or_else(Utc::now),
        })
    }

    pub async fn create_portal(&self, customer: &str, return_url: &str) -> Result<String, ApiError> {
        let s = CreateBillingPortalSession::new().customer(customer).return_url(return_url).send(&self.client).await?;
        Ok(s.url)
    }

    pub async fn subscription(&self, id: &str) -> Result<Subscription, ApiError> {
        Ok(RetrieveSubscription::new(id).send(&self.client).await?)
    }

    /// The account id a customer carries in its metadata, if any.
    pub async fn customer_account(&self, customer: &str) -> Result<Option<Uuid>, ApiError> {
        Ok(match RetrieveCustomer::new(customer).send(&self.client).await? {
            RetrieveCustomerReturned::Customer(c) => {
                c.metadata.as_ref().and_then(|m| m.get("account_id")).and_then(|a| Uuid::parse_str(a).ok())
            }
            RetrieveCustomerReturned::DeletedCustomer(_) => None,
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
            let page = req.send(&self.client).await?;
            after = page.data.last().map(|s| s.id.to_string());
            out.extend(page.data);
            if !page.has_more || after.is_none() {
                return Ok(out);
            }
        }
    }
}

/// A subscription read back from Stripe, as a fact that outranks events of the same second.
pub fn fact_from_stripe(
    sub: &Subscription,
    as_of: DateTime<Utc>,
    rank: i32,
    cause_event_id: &str,
    cause_event_type: &str,
) -> SubscriptionFact {
    let item = sub.items.data.first();
    SubscriptionFact {
        id: sub.id.to_string(),
        customer: sub.customer.id().to_string(),
        status: sub.status.as_str().to_owned(),
        price_id: item.map(|i| i.price.id.to_string()).unwrap_or_default(),
        current_period_end: item.and_then(|i| timestamp(i.current_period_end)),
        as_of,
        rank: rank.max(fact_rank(sub.status.as_str(), Source::Subscription)),
        paid_at: None,
        cause_event_id: cause_event_id.to_owned(),
        cause_event_type: cause_event_type.to_owned(),
    }
}
