//! The crm-sync binary: `crm-sync` serves, `crm-sync migrate` only migrates. Configuration: see the README.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sb_runtime::main(crm_sync::def()).await
}
