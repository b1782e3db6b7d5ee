//! The billing binary: `billing` serves, `billing migrate` only migrates, and
//! `billing reconcile [--dry-run] [--json]` compares every Stripe subscription with billing's state
//! and repairs drift (needs `SWITCHBOARD_STRIPE_API_KEY`). Configuration: see the README.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("reconcile") {
        let dry_run = args.iter().any(|a| a == "--dry-run");
        let json = args.iter().any(|a| a == "--json");
        return match reconcile(!dry_run, json).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("billing reconcile: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    sb_runtime::main(billing::def()).await
}

async fn reconcile(apply: bool, json: bool) -> anyhow::Result<()> {
    let config = sb_runtime::ServiceConfig::from_env(billing::SERVICE)?;
    let cfg = billing::config::BillingConfig::load(&config)?;
    let pool = sb_runtime::prepare_database(&config, &billing::def()).await?;
    let billing = billing::service::Billing::new(pool, cfg)?;
    let report = billing.reconcile(apply).await?;
    if json {
        let drift: Vec<serde_json::Value> = report
            .drift
            .iter()
            .map(|d| {
                serde_json::json!({"subscription_id": d.subscription_id, "stripe_customer_id": d.stripe_customer_id,
                    "account_id": d.account_id, "ours": d.ours.map(|s| s.as_str()), "stripe": d.stripe.as_str(), "repaired": d.repaired})
            })
            .collect();
        let out = serde_json::json!({"checked": report.checked, "drift": drift, "unknown_to_stripe": report.unknown_to_stripe});
        println!("{out}");
        return Ok(());
    }
    println!("checked {} Stripe subscriptions; {} differed from billing", report.checked, report.drift.len());
    for d in &report.drift {
        let account = d.account_id.map_or_else(|| "no account".to_owned(), |a| a.to_string());
        let verb = if d.repaired { "repaired" } else { "would repair" };
        println!(
            "  {} ({}, {account}): billing {} → Stripe {}: {verb}",
            d.subscription_id,
            d.stripe_customer_id,
            d.ours.map_or("unknown", |s| s.as_str()),
            d.stripe
        );
    }
    for id in &report.unknown_to_stripe {
        println!("  {id}: known to billing but not listed by Stripe (left as is)");
    }
    Ok(())
}
