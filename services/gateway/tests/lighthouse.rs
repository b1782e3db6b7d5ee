//! Lighthouse on the portal and the console (`tests/browser/lighthouse.mjs`, mobile defaults, in
//! Debian's Chromium with every outside host unreachable): performance, accessibility and best
//! practices each score at least 95 on the login, dashboard, billing, ticket and console pages.
//! Reports go to `target/lighthouse/`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::{path::PathBuf, process::Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_scores_at_least_95_for_performance_accessibility_and_best_practices_on_a_phone() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let browser = root.join("tests/browser");
    assert!(
        browser.join("node_modules/lighthouse").is_dir(),
        "tests/browser/node_modules is missing: run `bash scripts/install-test-tools.sh` (`make test` does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);

    let sys = common::start(&[], &[]).await;
    let customer = sys.signup("lighthouse@example.com").await;
    common::pay_pro(&sys, &customer).await;
    let ticket = common::open_ticket(&sys, &customer, "Exporting invoices", "How do I export my invoices?", "billing").await;
    let agent = sys.staff("agent.lighthouse@example.com", sb_types::Role::Agent).await;
    let cookie = |token: &str| format!("sb_session={token}; sb_signed_in=1");

    let out = tokio::process::Command::new("node")
        .arg(browser.join("lighthouse.mjs"))
        .env("BASE_URL", &sys.base)
        .env("CUSTOMER_COOKIE", cookie(&customer.token))
        .env("AGENT_COOKIE", cookie(&agent.token))
        .env("TICKET_ID", ticket["ticket"]["id"].as_str().unwrap())
        .env("CHROMIUM", &chromium)
        .env("REPORT_DIR", target.join("lighthouse"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(240), out).await.expect("Lighthouse took over 4 minutes").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    sys.stop().await;
    println!("{stdout}");
    assert!(out.status.success(), "Lighthouse found pages below 95:\n{stderr}\n{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.contains("performance")).count(), 5, "{stdout}");
}
