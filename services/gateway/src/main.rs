//! The gateway binary: `gateway` serves, `gateway migrate` only migrates. Configuration: see the README.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sb_runtime::main(gateway::def()).await
}
