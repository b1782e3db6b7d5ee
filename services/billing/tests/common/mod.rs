//! billing's test helpers on top of the shared harness (`sb_testkit::service`): its gRPC client,
//! settings for a fake Stripe, principals to call as, Stripe events handed over the way the gateway
//! does, and waiting for an account's access.

// Test support shared by several test binaries, each using part of it; a failed unwrap is a failed test.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use billing::domain::AccountId;
use sb_bus::{Envelope, events::StripeEventReceived};
use sb_proto::billing::v1::{self as pb, billing_client::BillingClient};
use sb_runtime::caller::{Principal, Role, UserId};
use sb_stripe::objects;
pub use sb_testkit::service::{TestService, as_service, as_user};
use sb_testkit::{
    service::{WAIT, vars},
    stripe::FakeStripe,
    wait_for,
};
use serde_json::Value;
use tonic::transport::Channel;
use uuid::Uuid;

/// A Stripe test key and signing secret for starting billing against a fake Stripe.
pub const STRIPE_KEY: &str = "sk_test_switchboard_billing_tests";
pub const WEBHOOK_SECRET: &str = "whsec_switchboard_billing_tests";
/// Where billing is told browsers reach the portal (return URLs hang off it).
pub const PUBLIC_URL: &str = "http://portal.switchboard.test";

/// billing on a fresh database and bus prefix; `extra` adds or overrides settings. Without a
/// Stripe key it runs its embedded local checkout, whose webhooks go by default to a closed local
/// port (they fail fast and wait on their backoff); set `BILLING_LOCAL_WEBHOOK_URL` to receive them.
pub async fn start(extra: &[(&str, &str)]) -> TestService {
    let nowhere = format!("http://127.0.0.1:{}/webhooks/stripe", sb_testkit::smtp::closed_port());
    let mut settings = vec![("SWITCHBOARD_PUBLIC_URL", PUBLIC_URL), ("BILLING_LOCAL_WEBHOOK_URL", nowhere.as_str())];
    settings.extend_from_slice(extra);
    TestService::start(&billing::def(), &vars(&settings)).await
}

/// billing using `stripe` (with [`STRIPE_KEY`] and [`WEBHOOK_SECRET`]); `extra` as for [`start`].
pub async fn start_with_stripe(stripe: &FakeStripe, extra: &[(&str, &str)]) -> TestService {
    let base = stripe.base_url();
    let mut settings = vec![
        ("SWITCHBOARD_STRIPE_API_KEY", STRIPE_KEY),
        ("SWITCHBOARD_STRIPE_API_BASE", base.as_str()),
        ("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    settings.extend_from_slice(extra);
    start(&settings).await
}

/// What a billing test does with the running service.
pub trait BillingTest {
    fn client(&self) -> BillingClient<Channel>;
    /// Hands billing a verified Stripe event exactly as the gateway does: a
    /// `stripe.event.received.v1` envelope published to the events exchange. Returns the envelope.
    async fn publish_stripe_event(&self, stripe_event: Value) -> Envelope;
    /// The account's access, asked as a service.
    async fn access(&self, account: AccountId) -> pb::Access;
    /// Waits until the account's access has `status`, and returns it.
    async fn wait_access(&self, account: AccountId, status: pb::AccessStatus) -> pb::Access;
    /// What billing recorded about a Stripe event id (`applied`, `ignored`, `unlinked`), if anything.
    async fn event_outcome(&self, stripe_event_id: &str) -> Option<String>;
}

impl BillingTest for TestService {
    fn client(&self) -> BillingClient<Channel> {
        BillingClient::new(self.channel.clone())
    }

    async fn publish_stripe_event(&self, stripe_event: Value) -> Envelope {
        let received: StripeEventReceived = serde_json::from_value(stripe_event).unwrap();
        let env = Envelope::of(&received);
        self.publish(&env).await;
        env
    }

    async fn access(&self, account: AccountId) -> pb::Access {
        self.client().get_access(as_service(pb::GetAccessRequest { account_id: account.to_string() })).await.unwrap().into_inner()
    }

    async fn wait_access(&self, account: AccountId, status: pb::AccessStatus) -> pb::Access {
        wait_for(WAIT, &format!("access of {account} to be {status:?}"), || async move {
            Some(self.access(account).await).filter(|a| a.status == status as i32)
        })
        .await
    }

    async fn event_outcome(&self, stripe_event_id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT outcome FROM stripe_events WHERE event_id = $1")
            .bind(stripe_event_id)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap()
    }
}

/// A customer user of `account`.
pub fn customer(account: AccountId) -> Principal {
    Principal { user_id: UserId::new(), account_id: account, role: Role::Customer, impersonator: None }
}

/// An admin acting as a customer of `account`.
pub fn impersonating(account: AccountId) -> Principal {
    Principal { impersonator: Some(UserId::new()), ..customer(account) }
}

/// Staff (agent or admin) of the founder's own account.
pub fn staff(role: Role) -> Principal {
    Principal { user_id: UserId::new(), account_id: AccountId::new(), role, impersonator: None }
}

/// Stripe's `created` for an event happening now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Stripe `event` object wrapping `object`, with a fresh `evt_` id (returned too).
pub fn stripe_event(event_type: &str, created: i64, object: Value) -> (String, Value) {
    let id = format!("evt_test_{}", Uuid::now_v7().simple());
    let ev = objects::event(&id, event_type, created, object);
    (id, ev)
}
