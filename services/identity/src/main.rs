//! The identity binary: `identity` serves, `identity migrate` only migrates. Configuration: see the README.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sb_runtime::main(identity::def()).await
}
