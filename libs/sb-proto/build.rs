//! Compiles every file under proto/ with protox (pure Rust: no protoc needed) and tonic-prost-build.

use std::{env, path::PathBuf};

const SECRET_MESSAGES: [&str; 4] = [
    "switchboard.identity.v1.SignUpRequest",
    "switchboard.identity.v1.LogInRequest",
    "switchboard.identity.v1.SessionGrant",
    "switchboard.identity.v1.AuthenticateRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let protos = [
        "switchboard/ops/v1/ops.proto",
        "switchboard/identity/v1/identity.proto",
        "switchboard/billing/v1/billing.proto",
        "switchboard/crm/v1/crm.proto",
        "switchboard/support/v1/support.proto",
        "switchboard/ai/v1/ai.proto",
    ];
    let fds = protox::compile(protos, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // compile_fds does not write the descriptor set itself; reflection needs it.
    std::fs::write(out.join("switchboard_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // Messages that carry a password or a session token get a hand-written Debug (src/lib.rs)
    // that leaves the secret out.
    tonic_prost_build::configure().skip_debug(SECRET_MESSAGES).compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
