//! Sign-up latency of the build people try first: the six service binaries of one profile (the
//! debug build `make run` starts, unless `BENCH_PROFILE=release`), started as processes, and
//! `BENCH_SIGNUPS` (40) sign-ups through the gateway one after another, each timed from request
//! to answer. A sign-up hashes the password (argon2), stores the user and the session and queues
//! `identity.user.signed_up.v1`; what follows it (CRM contact, welcome email) is not waited for.
//!
//!   cargo build --locked --workspace --bins && cargo bench -p system-tests --bench signup
//!
//! No target: the figures are for comparing builds (e.g. the dev profile with and without the
//! optimised password hashing, built into another `CARGO_TARGET_DIR`).

#![allow(clippy::unwrap_used)] // a benchmark that cannot set itself up should stop loudly

use std::time::{Duration, Instant};

use sb_testkit::report::env_num;
use serde_json::json;
use system_tests::Six;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn main() {
    let profile = std::env::var("BENCH_PROFILE").unwrap_or_else(|_| "debug".into());
    let n: usize = env_num("BENCH_SIGNUPS", 40);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut six = Six::start(&profile);
        six.wait_ready().await;
        let http = reqwest::Client::new();
        let base = six.gateway_url.clone();
        let mut times = Vec::with_capacity(n);
        let mut failed = 0u64;
        // One sign-up first, not counted: connections and prepared statements.
        for i in 0..=n {
            let body = json!({"email": format!("signup{i}@bench.test"), "password": "correct horse battery staple", "name": "Bench"});
            let started = Instant::now();
            let status =
                http.post(format!("{base}/v1/signup")).json(&body).timeout(Duration::from_secs(30)).send().await.map(|r| r.status());
            let took = started.elapsed().as_secs_f64() * 1e3;
            match status {
                Ok(s) if s == 201 => {
                    if i > 0 {
                        times.push(took);
                    }
                }
                _ => failed += 1,
            }
        }
        times.sort_by(f64::total_cmp);
        println!("sign-up latency, {profile} build of the six services, {} sign-ups one after another (ms)", times.len());
        if !times.is_empty() {
            println!(
                "  p50 {:.1}   p95 {:.1}   max {:.1}   mean {:.1}",
                percentile(&times, 0.5),
                percentile(&times, 0.95),
                times[times.len() - 1],
                times.iter().sum::<f64>() / times.len() as f64
            );
        }
        six.kill_and_clean_up(failed).await;
        assert_eq!(failed, 0, "every sign-up succeeds");
    });
}
