//! Lighthouse on the portal and the console (`tests/browser/lighthouse.mjs`, mobile defaults, in
//! Debian's Chromium with every outside host unreachable): performance, accessibility and best
//! practices each score at least 95 on the login, dashboard, billing and ticket pages and the
//! console's queues, customer 360 (billing history and refund form) and operations view.
//! Reports go to `target/lighthouse/`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_scores_at_least_95_for_performance_accessibility_and_best_practices_on_a_phone() {
    let reports = common::output_dir("lighthouse");
    let sys = common::start(&[], &[]).await;
    let customer = sys.signup("lighthouse@example.com").await;
    common::pay_pro(&sys, &customer).await;
    let ticket = common::open_ticket(&sys, &customer, "Exporting invoices", "How do I export my invoices?", "billing").await;
    let agent = sys.staff("agent.lighthouse@example.com", sb_types::Role::Agent).await;
    let admin = sys.staff("admin.lighthouse@example.com", sb_types::Role::Admin).await;
    let cookie = |token: &str| format!("sb_session={token}; sb_signed_in=1");
    let env = [
        ("CUSTOMER_COOKIE", cookie(&customer.token)),
        ("AGENT_COOKIE", cookie(&agent.token)),
        ("ADMIN_COOKIE", cookie(&admin.token)),
        ("ACCOUNT_ID", customer.account_id.clone()),
        ("TICKET_ID", ticket["ticket"]["id"].as_str().unwrap().to_owned()),
        ("REPORT_DIR", reports.display().to_string()),
    ];
    let stdout = common::run_browser_script(sys, "lighthouse.mjs", &env, Duration::from_secs(360)).await;
    println!("{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.contains("performance")).count(), 7, "{stdout}");
}
