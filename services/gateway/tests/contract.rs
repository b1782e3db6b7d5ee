//! The REST contract is what is served: Schemathesis, with all of its checks, drives the gateway
//! (identity, billing and crm-sync behind it) from `/openapi.json` and finds no answer the
//! document does not describe, no schema-valid request refused and no invalid one accepted.
//!
//! Needs Schemathesis: `scripts/install-test-tools.sh` installs it (pinned) and `make test` passes
//! its path in `SB_SCHEMATHESIS`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;

const EMAIL: &str = "contract@example.com";
const WEBHOOK_SECRET: &str = "whsec_contract_test_secret";

fn schemathesis() -> PathBuf {
    let path =
        std::env::var_os("SB_SCHEMATHESIS").map(PathBuf::from).unwrap_or_else(|| "/opt/switchboard-schemathesis/bin/schemathesis".into());
    assert!(path.exists(), "Schemathesis is not at {} (run scripts/install-test-tools.sh, or set SB_SCHEMATHESIS)", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_with_all_checks_finds_the_served_api_as_documented() {
    let st = schemathesis();
    let secret = [("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)];
    // The fuzzer logs in with wrong passwords from one address: keep the address throttle out of
    // the way of the session it signs in with (the throttle has tests of its own).
    let identity = [("IDENTITY_LOGIN_IP_MAX_FAILURES", "1000000"), ("IDENTITY_LOGIN_MAX_FAILURES", "1000000")];
    // Every service the document's routes reach, ai-assist too.
    let sys = common::start_full_with_ai(&identity, &secret, &[], &secret).await;
    sys.signup(EMAIL).await;
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract/hooks.py");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract/schemathesis.toml");
    // Schemathesis keeps a cache in its working directory: not in the checkout.
    let workdir = std::env::temp_dir().join(sb_testkit::unique("schemathesis"));
    std::fs::create_dir_all(&workdir).unwrap();
    let out = tokio::process::Command::new(st)
        .current_dir(&workdir)
        .args([
            "--config-file",
            config,
            "run",
            &sys.url("/openapi.json"),
            "--checks",
            "all",
            "--max-examples",
            "20",
            "--seed",
            "20261127",
            // Hypothesis's "data generation is too slow" check measures the generator on a busy
            // CI machine (the suite runs in parallel on two cores), not the API.
            "--suppress-health-check=too_slow",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", hooks)
        .env("SB_CONTRACT_BASE", &sys.base)
        .env("SB_CONTRACT_EMAIL", EMAIL)
        .env("SB_CONTRACT_PASSWORD", common::PASSWORD)
        .env("SB_CONTRACT_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("SB_CONTRACT_SIGNATURE_PATTERN", gateway::routes::webhook::SIGNATURE_PATTERN)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "Schemathesis found the API differs from its document (report above)");
    let _ = std::fs::remove_dir_all(&workdir);
    sys.stop().await;
}
