//! The ai-assist binary: `ai-assist` serves, `ai-assist migrate` only migrates. Configuration: see the README.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sb_runtime::main(ai_assist::def()).await
}
