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
        tonic::include_proto!("switchboard.identity.v1");
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
