//! Generated protobuf messages, gRPC clients and servers for every Switchboard API.

pub mod ops {
    pub mod v1 {
        tonic::include_proto!("switchboard.ops.v1");
    }
}

/// Encoded descriptors of every Switchboard proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("switchboard_descriptor");
