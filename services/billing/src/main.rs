//! The billing binary: `billing` serves, `billing migrate` only migrates. Configuration: see the README.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sb_runtime::main(billing::def()).await
}
