//! Generated protobuf messages, gRPC clients and servers for every Switchboard API.

pub mod billing {
    pub mod v1 {
        tonic::include_proto!("switchboard.billing.v1");
    }
}

pub mod crm {
    pub mod v1 {
        tonic::include_proto!("switchboard.crm.v1");
    }
}

pub mod identity {
    pub mod v1 {
        use std::fmt;

        tonic::include_proto!("switchboard.identity.v1");

        // Debug without the secrets (build.rs skips the derived one for these messages).

        impl fmt::Debug for SignUpRequest {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("SignUpRequest")
                    .field("email", &self.email)
                    .field("password", &"[redacted]")
                    .field("name", &self.name)
                    .field("account_name", &self.account_name)
                    .finish()
            }
        }

        impl fmt::Debug for LogInRequest {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("LogInRequest").field("email", &self.email).field("password", &"[redacted]").finish()
            }
        }

        impl fmt::Debug for SessionGrant {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("SessionGrant")
                    .field("token", &"[redacted]")
                    .field("expires_at", &self.expires_at)
                    .field("user", &self.user)
                    .finish()
            }
        }

        impl fmt::Debug for AuthenticateRequest {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("AuthenticateRequest").field("token", &"[redacted]").finish()
            }
        }
    }
}

pub mod support {
    pub mod v1 {
        tonic::include_proto!("switchboard.support.v1");
    }
}

pub mod ai {
    pub mod v1 {
        tonic::include_proto!("switchboard.ai.v1");
    }
}

pub mod ops {
    pub mod v1 {
        tonic::include_proto!("switchboard.ops.v1");
    }
}

pub use prost_types;

/// A protobuf timestamp from a chrono-free (seconds, nanos) pair.
pub fn timestamp(seconds: i64, nanos: i32) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos }
}

/// Encoded descriptors of every Switchboard proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("switchboard_descriptor");

#[cfg(test)]
mod tests {
    use super::identity::v1 as pb;

    #[test]
    fn messages_with_secrets_debug_without_them() {
        let secret = "hunter2-secret-value";
        let shown = [
            format!("{:?}", pb::SignUpRequest { password: secret.into(), email: "a@b.co".into(), ..Default::default() }),
            format!("{:?}", pb::LogInRequest { password: secret.into(), email: "a@b.co".into() }),
            format!("{:?}", pb::SessionGrant { token: secret.into(), ..Default::default() }),
            format!("{:?}", pb::AuthenticateRequest { token: secret.into() }),
        ];
        for s in shown {
            assert!(!s.contains(secret) && s.contains("[redacted]"), "{s}");
        }
    }
}
