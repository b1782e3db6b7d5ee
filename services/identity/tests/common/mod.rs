//! identity's test helpers on top of the shared harness (`sb_testkit::service`): its gRPC client,
//! requests as the gateway sends them, and staff users created the way an operator does.

#![allow(dead_code, clippy::unwrap_used)] // test support code: a failed unwrap is a failed test

use sb_proto::identity::v1::{self as pb, identity_client::IdentityClient};
pub use sb_testkit::service::{TestService, as_service_for_ip as as_service};
use tonic::{Request, transport::Channel};

pub const PASSWORD: &str = "correct horse battery staple";

/// identity on a fresh database and bus prefix; `extra` adds or overrides settings.
pub async fn start(extra: &[(&str, &str)]) -> TestService {
    TestService::start(&identity::def(), &sb_testkit::service::vars(extra)).await
}

pub trait IdentityTest {
    fn client(&self) -> IdentityClient<Channel>;
}

impl IdentityTest for TestService {
    fn client(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }
}

/// A request made with a signed-in user's own session token.
pub fn as_user<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn signup(email: &str) -> pb::SignUpRequest {
    pb::SignUpRequest {
        email: email.into(),
        password: PASSWORD.into(),
        name: "Ada Lovelace".into(),
        account_name: "Analytical Engines Ltd".into(),
    }
}

pub fn login(email: &str, password: &str) -> pb::LogInRequest {
    pb::LogInRequest { email: email.into(), password: password.into() }
}

/// Creates a staff (or customer) user as `identity create-user` does, and signs them in.
pub async fn staff(id: &TestService, email: &str, role: identity::domain::Role) -> String {
    let service = identity::service::Identity::with_defaults(id.db.pool.clone()).unwrap();
    let parsed = identity::domain::Email::parse(email).unwrap();
    let password = identity::domain::Password::parse(PASSWORD).unwrap();
    service.create_user("Founder's team", &parsed, "Staff Member", role, &password).await.expect("new user");
    id.client().log_in(as_service(login(email, PASSWORD), "10.0.0.1")).await.unwrap().into_inner().token
}
