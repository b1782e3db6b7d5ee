//! `GET /v1/me` through the real gateway, identity, billing and crm-sync (release build, real
//! PostgreSQL; `/v1/me` asks identity, then billing and crm-sync in parallel), beside the
//! gateway's no-database `GET /v1/status` as the baseline: maximum throughput with a closed loop,
//! then latency percentiles at a fixed rate of 50 % of that maximum (open loop: requests are
//! dispatched on schedule whatever the responses do, so a stall is not hidden by waiting).
//!
//!   cargo bench -p gateway --bench me        (BENCH_SECONDS, BENCH_CONCURRENCY to change)

#![allow(clippy::unwrap_used)] // a benchmark that cannot set itself up should stop loudly

#[path = "../tests/common/mod.rs"]
mod common;
mod load;
use load::{env_num, fixed_rate, pct};

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Requests per second with `concurrency` clients sending back to back for `secs`.
async fn max_throughput(client: &reqwest::Client, url: &str, token: &str, concurrency: u64, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, token, done, stop) = (client.clone(), url.to_owned(), token.to_owned(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
                    assert!(r.status().is_success(), "{url}: {}", r.status());
                    r.bytes().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // The services and the load generator get separate runtimes, so the generator's timers and
    // tasks do not queue behind the servers' (they still share the machine's cores).
    let servers = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let clients = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sys = servers.block_on(common::start(&[], &[]));
    let user = servers.block_on(sys.signup("bench@me.test"));
    let secs = env_num("BENCH_SECONDS", 5);
    let concurrency = env_num("BENCH_CONCURRENCY", 16);
    let me = sys.url("/v1/me");
    let status = sys.url("/v1/status");
    clients.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        // Warm-up: connections, pools, prepared statements.
        max_throughput(&client, &me, &user.token, concurrency, 1).await;

        println!(
            "gateway GET /v1/me benchmark (release; identity + billing + crm-sync + gateway in this process on one runtime, the load generator on another; real PostgreSQL; {} CPUs)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!("  closed loop: {concurrency} clients for {secs} s; fixed rate (open loop): 50 % of that maximum for {secs} s");
        println!();
        println!("  {:<34} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}", "endpoint", "max req/s", "rate", "p50 ms", "p95 ms", "p99 ms", "max ms");
        let mut p95_me = f64::NAN;
        for (name, url) in [("GET /v1/status (baseline, no DB)", &status), ("GET /v1/me (3 services + PostgreSQL)", &me)] {
            let max = max_throughput(&client, url, &user.token, concurrency, secs).await;
            let rate = (max * 0.5).max(1.0);
            let lat = fixed_rate(rate, (rate * secs as f64) as u64, |_| client.get(url).bearer_auth(&user.token)).await;
            println!(
                "  {:<34} {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                name,
                max,
                rate,
                pct(&lat, 0.50),
                pct(&lat, 0.95),
                pct(&lat, 0.99),
                lat.last().copied().unwrap_or(f64::NAN)
            );
            p95_me = pct(&lat, 0.95);
        }
        println!();
        println!("  target: /v1/me p95 <= 2 ms at 50 % of max -> {}", if p95_me <= 2.0 { "MET" } else { "MISSED" });
    });
    servers.block_on(sys.stop());
}
