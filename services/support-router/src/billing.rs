//! billing, asked over gRPC (`switchboard.billing.v1.Billing/GetAccess`) for the plan of an
//! account no `billing.access.changed.v1` has told about yet. Only the background refresher asks;
//! intake never waits on billing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sb_proto::billing::v1::{self as pb, billing_client::BillingClient};
use sb_runtime::caller::{OnBehalfOf, ServiceContext};
use sb_runtime::upstream::Upstream;
use secrecy::SecretString;

use crate::domain::{AccessStatus, AccountId, PlanProjection};

/// Why billing gave no plan.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("billing unavailable: {0}")]
    Unavailable(String),
    #[error("billing's answer is unreadable: {0}")]
    Unreadable(String),
}

#[derive(Clone)]
pub struct BillingPlans {
    client: BillingClient<Upstream>,
    token: SecretString,
    timeout: Duration,
}

impl BillingPlans {
    /// A client of billing at `url` (connects lazily; every call bounded by `timeout`).
    pub fn new(url: &str, timeout: Duration, token: SecretString) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?.connect_timeout(timeout).timeout(timeout).connect_lazy();
        Ok(Self { client: BillingClient::new(Upstream::new("billing", channel)), token, timeout })
    }

    /// The account's plan as billing knows it now.
    pub async fn plan(&self, account: AccountId) -> Result<PlanProjection, BillingError> {
        let req = sb_runtime::caller::request(
            pb::GetAccessRequest { account_id: account.to_string() },
            &self.token,
            OnBehalfOf::Service(&ServiceContext::default()),
        );
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(self.timeout, client.get_access(req))
            .await
            .map_err(|_| BillingError::Unavailable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|s| BillingError::Unavailable(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        projection(&answer)
    }
}

/// billing's answer as a projection. An account billing has no record of answers `none` without
/// a time: it is stored as the oldest news, so any `billing.access.changed` replaces it.
pub fn projection(a: &pb::Access) -> Result<PlanProjection, BillingError> {
    let status = match pb::AccessStatus::try_from(a.status) {
        Ok(pb::AccessStatus::None) => AccessStatus::None,
        Ok(pb::AccessStatus::Pending) => AccessStatus::Pending,
        Ok(pb::AccessStatus::Active) => AccessStatus::Active,
        Ok(pb::AccessStatus::PastDue) => AccessStatus::PastDue,
        Ok(pb::AccessStatus::Revoked) => AccessStatus::Revoked,
        Ok(pb::AccessStatus::Unspecified) | Err(_) => return Err(BillingError::Unreadable(format!("access status {}", a.status))),
    };
    let since = match &a.since {
        Some(t) => DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            .ok_or_else(|| BillingError::Unreadable("since is out of range".into()))?,
        None => DateTime::<Utc>::UNIX_EPOCH,
    };
    Ok(PlanProjection { plan: a.plan.clone(), status, since })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn answers_become_projections() {
        let a = pb::Access {
            status: pb::AccessStatus::Active as i32,
            plan: "pro".into(),
            since: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            ..Default::default()
        };
        let p = projection(&a).unwrap();
        assert_eq!((p.plan.as_str(), p.status, p.since.timestamp()), ("pro", AccessStatus::Active, 1_700_000_000));
        let none = projection(&pb::Access { status: pb::AccessStatus::None as i32, ..Default::default() }).unwrap();
        assert_eq!(none.since, DateTime::<Utc>::UNIX_EPOCH);
        assert!(projection(&pb::Access::default()).is_err());
    }
}
