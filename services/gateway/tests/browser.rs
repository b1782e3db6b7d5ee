//! The portal and the console in a real browser: Debian's Chromium, driven by `tests/browser/portal.mjs`
//! (playwright-core, axe-core), against every service of this harness (ai-assist too). The
//! script's own header says what the flow checks. `make test` installs Chromium and the npm
//! packages (`scripts/install-test-tools.sh`); screenshots go to `target/browser-screenshots/portal`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::{path::PathBuf, process::Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_customer_signs_up_pays_and_opens_a_ticket_and_an_agent_answers_it_with_the_ai_draft() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let browser = root.join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `bash scripts/install-test-tools.sh` (`make test` does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(PathBuf::from(&chromium).exists(), "{chromium} is missing: `make test` installs Debian's chromium");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let shots = target.join("browser-screenshots/portal");
    let _ = std::fs::remove_dir_all(&shots);

    let sys = common::start_with_ai(&[]).await;
    let agent = sys.staff("agent.browser@example.com", sb_types::Role::Agent).await;
    let out = tokio::process::Command::new("node")
        .arg(browser.join("portal.mjs"))
        .env("BASE_URL", &sys.base)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .env("AGENT_EMAIL", &agent.email)
        .env("AGENT_PASSWORD", common::PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out).await.expect("the browser flow took over 2 minutes").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    sys.stop().await;
    assert!(out.status.success(), "the browser flow failed:\n{stderr}\n{stdout}");
    // A screenshot of every state the flow went through.
    let taken = std::fs::read_dir(&shots).unwrap().count();
    assert!(taken >= 13, "{taken} screenshots in {}", shots.display());
}
