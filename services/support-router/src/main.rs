//! The support-router binary: `support-router` serves, `support-router migrate` only migrates. Configuration: see the README.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sb_runtime::main(support_router::def()).await
}
