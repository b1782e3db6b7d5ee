//! billing's one error type, and how each case reaches a caller over gRPC (exhaustively: a new
//! case must decide its status). Outages (the database, Stripe) become UNAVAILABLE with a retry
//! hint; bugs INTERNAL, logged and never sent. Bus handlers map the same type in `events`.

use sb_runtime::status;
use tonic::Status;
use tracing::warn;

use crate::{domain::Invalid, stripe_api::ApiError};

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// An input that breaks a rule (a request field, a Stripe event's field); names the field.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("plan: unknown plan {plan:?} (one of: {known})")]
    UnknownPlan { plan: String, known: String },
    #[error("the account already has an active subscription; manage it in the billing portal")]
    AlreadyActive,
    #[error("no billing account yet: complete a checkout first")]
    NoCustomer,
    #[error("no active subscription to cancel")]
    NoLiveSubscription,
    #[error("this checkout session has expired; start a new one")]
    CheckoutExpired,
    #[error("Stripe is configured; local checkout is off")]
    LocalCheckoutOff,
    #[error("nothing to refund: {0}")]
    NothingToRefund(String),
    #[error("idempotency_key: already used for a different refund; send a new key for a new refund")]
    IdempotencyKeyReused,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Stripe(#[from] ApiError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<BillingError> for Status {
    fn from(e: BillingError) -> Self {
        let msg = e.to_string();
        match e {
            BillingError::Invalid(_) | BillingError::UnknownPlan { .. } | BillingError::IdempotencyKeyReused => {
                Status::invalid_argument(msg)
            }
            BillingError::AlreadyActive
            | BillingError::NothingToRefund(_)
            | BillingError::NoCustomer
            | BillingError::NoLiveSubscription
            | BillingError::CheckoutExpired
            | BillingError::LocalCheckoutOff => Status::failed_precondition(msg),
            BillingError::NotFound(_) => Status::not_found(msg),
            BillingError::Stripe(ApiError::Unavailable { reason, retry_after }) => {
                warn!(error = %reason, "Stripe unavailable");
                let wait = retry_after.map_or(status::OUTAGE_RETRY_SECS, |d| d.as_secs_f64().ceil() as u64);
                status::with_retry_after(Status::unavailable("Stripe is unavailable; try again shortly"), wait)
            }
            BillingError::Stripe(ApiError::Refused(reason)) => {
                warn!(error = %reason, "Stripe refused a request");
                Status::failed_precondition("Stripe refused the request; see billing's log")
            }
            BillingError::Database(e) => status::database(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;

    use super::*;

    fn retry_hint(s: &Status) -> Option<&str> {
        s.metadata().get(status::RETRY_AFTER).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn outages_ask_the_caller_to_come_back_and_refusals_say_nothing_of_stripes_words() {
        let limited = Status::from(BillingError::Stripe(ApiError::Unavailable {
            reason: "429 (rate_limit): slow down".into(),
            retry_after: Some(Duration::from_millis(2500)),
        }));
        assert_eq!((limited.code(), retry_hint(&limited)), (Code::Unavailable, Some("3")));
        let down = Status::from(BillingError::Stripe(ApiError::Unavailable { reason: "503".into(), retry_after: None }));
        assert_eq!(retry_hint(&down), Some("2"));
        let refused = Status::from(BillingError::Stripe(ApiError::Refused("400: No such customer: 'cus_secret'".into())));
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(!refused.message().contains("cus_secret"));
        let db = Status::from(BillingError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!((db.code(), retry_hint(&db).is_some()), (Code::Unavailable, true));
        assert_eq!(Status::from(BillingError::Database(sqlx::Error::RowNotFound)).code(), Code::Internal);
        assert_eq!(Status::from(BillingError::AlreadyActive).code(), Code::FailedPrecondition);
        let plan = Status::from(BillingError::UnknownPlan { plan: "gold".into(), known: "starter, pro".into() });
        assert_eq!((plan.code(), plan.message()), (Code::InvalidArgument, "plan: unknown plan \"gold\" (one of: starter, pro)"));
    }
}
