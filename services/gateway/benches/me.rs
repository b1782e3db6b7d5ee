//! `GET /v1/me` through the real gateway, identity, billing and crm-sync (release build, real
//! PostgreSQL; `/v1/me` asks identity, then billing and crm-sync in parallel, and the gateway
//! keeps each answer a second per session token; the requests go round many users' tokens), beside the
//! gateway's no-database `GET /v1/status` as the baseline: maximum throughput with a closed loop,
//! then latency percentiles at a fixed rate of 50 % of that maximum (open loop: requests are
//! dispatched on schedule whatever the responses do, so a stall is not hidden by waiting).
//!
//! The same run measures `pgbench -S` (select-only, prepared, as many clients) on the same
//! PostgreSQL for `/v1/me`'s maximum to be compared with; the latency rows run `BENCH_ROUNDS`
//! times, and the target is judged by the worst round.
//!
//!   cargo bench -p gateway --bench me   (BENCH_SECONDS 5, BENCH_CONCURRENCY 16, BENCH_ROUNDS 5, BENCH_SESSIONS 200;
//!                                        PGBENCH: the pgbench to run, default `pgbench`)

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

/// Requests per second with `concurrency` clients sending back to back for `secs`, each client
/// going round the sessions' tokens.
async fn max_throughput(client: &reqwest::Client, url: &str, tokens: &[String], concurrency: u64, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (client, url, tokens, done, stop) = (client.clone(), url.to_owned(), tokens.to_vec(), done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut next = w as usize;
                while !stop.load(Ordering::Relaxed) {
                    next = (next + 1) % tokens.len();
                    let r = client.get(&url).bearer_auth(&tokens[next]).send().await.unwrap();
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

/// `pgbench -S` transactions per second on a scratch database of the test server, with
/// `clients` clients for `secs` (NaN, with the reason printed, when pgbench cannot run).
async fn pgbench_select_only(clients: u64, secs: u64) -> f64 {
    let pgbench = std::env::var("PGBENCH").unwrap_or_else(|_| "pgbench".into());
    let db = sb_testkit::TestDb::new("pgbench").await.unwrap();
    let run = |args: Vec<String>| {
        let pgbench = pgbench.clone();
        async move { tokio::process::Command::new(&pgbench).args(&args).output().await }
    };
    let init = run(vec!["-i".into(), "-q".into(), "-s".into(), "10".into(), db.url.clone()]).await;
    if !init.as_ref().is_ok_and(|o| o.status.success()) {
        println!("  pgbench -i failed: {:?}", init.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()));
        return f64::NAN;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
    let args = ["-S", "-M", "prepared", "-c", &clients.to_string(), "-j", &threads, "-T", &secs.to_string(), &db.url];
    let out = match run(args.iter().map(|a| a.to_string()).collect()).await {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        other => {
            println!("  pgbench -S failed: {:?}", other.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()));
            return f64::NAN;
        }
    };
    // "tps = 12345.678901 (without initial connection time)"
    out.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    // The services and the load generator get separate runtimes, so the generator's timers and
    // tasks do not queue behind the servers' (they still share the machine's cores).
    let servers = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let clients = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sys = servers.block_on(common::start(&[], &[]));
    // Many signed-in users, not one: `/v1/me` answers are kept a second per session token, so
    // with one token nearly every request would be a repeat.
    let sessions = env_num("BENCH_SESSIONS", 200).max(1);
    let tokens: Vec<String> = servers.block_on(async {
        let mut tokens = Vec::new();
        for i in 0..sessions {
            tokens.push(sys.signup(&format!("bench{i}@me.test")).await.token);
        }
        tokens
    });
    let secs = env_num("BENCH_SECONDS", 5);
    let concurrency = env_num("BENCH_CONCURRENCY", 16);
    let rounds = env_num("BENCH_ROUNDS", 5).max(1);
    let me = sys.url("/v1/me");
    let status = sys.url("/v1/status");
    clients.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        // Warm-up: connections, pools, prepared statements.
        max_throughput(&client, &me, &tokens, concurrency, 1).await;

        println!(
            "gateway GET /v1/me benchmark (release; identity + billing + crm-sync + gateway in this process on one runtime, the load generator on another; real PostgreSQL; {} CPUs)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "  closed loop: {concurrency} clients for {secs} s; then {rounds} rounds at a fixed rate (open loop) of 50 % of that maximum for {secs} s each"
        );
        println!(
            "  {sessions} signed-in users, requests going round their tokens (BENCH_SESSIONS); the gateway keeps each /v1/me answer 1 s per token (GATEWAY_ME_CACHE_TTL)"
        );
        println!();
        println!("  {:<6} {:<34} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}", "round", "endpoint", "max req/s", "rate", "p50 ms", "p95 ms", "p99 ms", "max ms");
        let endpoints = [("GET /v1/status (baseline, no DB)", &status), ("GET /v1/me (3 services + PostgreSQL)", &me)];
        let mut max = [0.0f64; 2];
        for (i, (name, url)) in endpoints.iter().enumerate() {
            max[i] = max_throughput(&client, url, &tokens, concurrency, secs).await;
            println!("  {:<6} {:<34} {:>10.0}", "max", name, max[i]);
        }
        let (mut p95_me, mut p95_status) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            for (i, (name, url)) in endpoints.iter().enumerate() {
                let rate = (max[i] * 0.5).max(1.0);
                // Each round starts warm, as a steady load would find it (for /v1/me: the other
                // rows left its answers to expire).
                max_throughput(&client, url, &tokens, concurrency, 1).await;
                let lat = fixed_rate(rate, (rate * secs as f64) as u64, |n| client.get(*url).bearer_auth(&tokens[n as usize % tokens.len()])).await;
                println!(
                    "  {:<6} {:<34} {:>10} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                    round,
                    name,
                    "",
                    rate,
                    pct(&lat, 0.50),
                    pct(&lat, 0.95),
                    pct(&lat, 0.99),
                    lat.last().copied().unwrap_or(f64::NAN)
                );
                [&mut p95_status, &mut p95_me][i].push(pct(&lat, 0.95));
            }
        }
        let tps = pgbench_select_only(concurrency, secs).await;
        println!("  {:<6} {:<34} {:>10.0}   (select-only, prepared, {concurrency} clients, same PostgreSQL)", "max", "pgbench -S", tps);
        println!();
        use sb_testkit::report::{Figure, write};
        let worst_status = p95_status.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let figures = [
            Figure::at_most("/v1/me p95 at 50 % of its max", "ms", 2.0, p95_me).baseline("GET /v1/status p95, 50 % of its max", worst_status),
            Figure::at_least("/v1/me max / pgbench -S", "x", 0.3, vec![max[1] / tps]),
        ];
        for f in &figures {
            println!("  target: {} {} -> {}   (worst round {})", f.name, f.target_text(), if f.met() { "MET" } else { "MISSED" }, sb_testkit::report::num(f.worst()));
        }
        write("me", &figures).unwrap();
    });
    servers.block_on(sys.stop());
}
