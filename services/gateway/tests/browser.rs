//! The portal and the console in a real browser: Debian's Chromium, driven by
//! `tests/browser/portal.mjs` (playwright-core, axe-core), against every service of this harness
//! (ai-assist too). The script's own header says what the flow checks. `make test` installs
//! Chromium and the npm packages (`scripts/install-test-tools.sh`); screenshots go to
//! `target/browser-screenshots/portal`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_customer_signs_up_pays_and_opens_a_ticket_and_an_agent_answers_it_with_the_ai_draft() {
    let shots = common::output_dir("browser-screenshots/portal");
    let sys = common::start_with_ai(&[]).await;
    let agent = sys.staff("agent.browser@example.com", sb_types::Role::Agent).await;
    // Another account's ticket, which the new customer must not be able to open.
    let other = sys.signup("someone.else@example.com").await;
    let theirs = common::open_ticket(&sys, &other, "Not yours", "Another account's question.", "technical").await;
    let env = [
        ("OTHER_TICKET_ID", theirs["ticket"]["id"].as_str().unwrap().to_owned()),
        ("SCREENSHOT_DIR", shots.display().to_string()),
        ("AGENT_EMAIL", agent.email.clone()),
        ("AGENT_PASSWORD", common::PASSWORD.to_owned()),
    ];
    common::run_browser_script(sys, "portal.mjs", &env, Duration::from_secs(120)).await;
    // A screenshot of every state the flow went through.
    let taken = std::fs::read_dir(&shots).unwrap().count();
    assert!(taken >= 13, "{taken} screenshots in {}", shots.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_purges_a_parked_message_reads_the_mailbox_exports_billing_and_acts_as_a_customer() {
    let shots = common::output_dir("browser-screenshots/console");
    let sys = common::start(&[], &[]).await;
    let admin = sys.staff("admin.browser@example.com", sb_types::Role::Admin).await;
    let agent = sys.staff("agent.console@example.com", sb_types::Role::Agent).await;
    let customer = sys.signup("grace.customer@example.com").await;
    common::pay_pro(&sys, &customer).await;
    common::park_unreadable(&sys, &customer.account_id).await;
    let env = [
        ("SCREENSHOT_DIR", shots.display().to_string()),
        ("ADMIN_EMAIL", admin.email.clone()),
        ("AGENT_EMAIL", agent.email.clone()),
        ("PASSWORD", common::PASSWORD.to_owned()),
        ("CUSTOMER_EMAIL", customer.email.clone()),
    ];
    common::run_browser_script(sys, "console.mjs", &env, Duration::from_secs(120)).await;
    let taken = std::fs::read_dir(&shots).unwrap().count();
    assert!(taken >= 9, "{taken} screenshots in {}", shots.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_outage_shows_as_sync_pending_in_the_console_and_then_synced() {
    let shots = common::output_dir("browser-screenshots/crm-outage");
    std::fs::create_dir_all(&shots).unwrap();
    let hubspot = sb_testkit::hubspot::FakeHubSpot::start().await.unwrap();
    hubspot.fail_always(503);
    let (token, base) = (hubspot.token(), hubspot.base_url());
    // A ladder long enough that the sign-up is still pending (not parked) when the agent looks.
    let crm = [
        ("CRM_SYNC_HUBSPOT_TOKEN", token.as_str()),
        ("CRM_SYNC_HUBSPOT_BASE_URL", base.as_str()),
        ("SWITCHBOARD_RETRY_DELAYS", "2s,5s,10s,20s"),
    ];
    let sys = common::start_full(&[], &[], &crm, &[]).await;
    let agent = sys.staff("agent.crm@example.com", sb_types::Role::Agent).await;
    let customer = sys.signup("during.outage@example.com").await;
    let recover = shots.join("recover-now");
    let env = [
        ("SCREENSHOT_DIR", shots.display().to_string()),
        ("AGENT_EMAIL", agent.email.clone()),
        ("PASSWORD", common::PASSWORD.to_owned()),
        ("CUSTOMER_EMAIL", customer.email.clone()),
        ("RECOVER_FILE", recover.display().to_string()),
    ];
    // HubSpot comes back once the script has seen (and photographed) the pending state.
    let heal = async {
        sb_testkit::wait_for(Duration::from_secs(90), "the script to see the sync pending", || async { recover.exists().then_some(()) })
            .await;
        hubspot.recover();
    };
    let (_, ()) = tokio::join!(common::run_browser_script(sys, "crm.mjs", &env, Duration::from_secs(120)), heal);
    assert!(hubspot.contact(&customer.email).is_some(), "the contact reached HubSpot after the outage");
}
