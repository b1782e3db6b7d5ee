//! Resident memory of the six release service binaries: idle after start, then after a warm-up
//! and after `BENCH_LOAD_SECONDS` (300) of mixed load through the gateway — sign-ups, `/v1/me`
//! over the signed-up users' tokens, tickets (which ai-assist drafts for), and paid checkouts on
//! the local checkout (billing's signed webhooks to the gateway, access changes to crm-sync and
//! support-router). The leak check compares after the load with after the warm-up: pools,
//! prepared statements and allocator arenas fill during the warm-up, so what grows beyond it
//! over the load is what a long run would keep growing.
//!
//!   cargo build --release --locked --workspace --bins && cargo bench -p system-tests --bench memory
//!   (BENCH_LOAD_SECONDS 300, BENCH_WARMUP_SECONDS 30, BENCH_SETTLE_SECONDS 5; needs the release binaries)

#![allow(clippy::unwrap_used)] // a benchmark that cannot set itself up should stop loudly

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sb_testkit::report::{Figure, env_num, num, write};
use serde_json::json;
use system_tests::{Six, pay, sign_up};

/// Each service's resident memory now, in MB (10^6 bytes).
fn resident(six: &Six) -> Vec<f64> {
    six.running.iter().map(|r| sb_testkit::probe::memory_of(r.child.id()).map_or(f64::NAN, |(rss, _)| rss as f64 / 1e6)).collect()
}

/// Each service's thread count now (`Threads:` of `/proc/<pid>/status`): every thread may get a
/// malloc arena of its own, so threads started during the load show as growth.
fn threads(six: &Six) -> Vec<u64> {
    let of = |pid: u32| -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
    };
    six.running.iter().map(|r| of(r.child.id()).unwrap_or(0)).collect()
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn count(&self, ok: bool) {
        if ok { &self.ok } else { &self.failed }.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `task` every `every` for `secs`, each run on its own task (open loop).
async fn every(secs: u64, every: Duration, task: impl Fn(u64) -> tokio::task::JoinHandle<()>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut running = Vec::new();
    let mut i = 0;
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        running.push(task(i));
        i += 1;
        running.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
    }
    for h in running {
        let _ = h.await;
    }
}

/// Mixed load for `secs`: 5 sign-ups/s, 100 `/v1/me`/s, 5 tickets/s, 1 paid checkout/s.
async fn load(six: &Six, secs: u64, tag: &str, counts: &Arc<Counts>) {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = six.gateway_url.clone();
    let mut tokens = Vec::new();
    for i in 0..20 {
        tokens.extend(sign_up(&http, &base, &format!("seed{i}-{tag}@memory.test")).await);
    }
    let tokens = Arc::new(tokens);
    let signups = every(secs, Duration::from_millis(200), |i| {
        let (http, base, counts, email) = (http.clone(), base.clone(), counts.clone(), format!("user{i}-{tag}@memory.test"));
        tokio::spawn(async move { counts.count(sign_up(&http, &base, &email).await.is_some()) })
    });
    let me = every(secs, Duration::from_millis(10), |i| {
        let (http, base, counts, tokens) = (http.clone(), base.clone(), counts.clone(), tokens.clone());
        tokio::spawn(async move {
            let token = &tokens[i as usize % tokens.len()];
            counts.count(http.get(format!("{base}/v1/me")).bearer_auth(token).send().await.is_ok_and(|r| r.status() == 200));
        })
    });
    let tickets = every(secs, Duration::from_millis(200), |i| {
        let (http, base, counts, tokens) = (http.clone(), base.clone(), counts.clone(), tokens.clone());
        tokio::spawn(async move {
            let token = &tokens[i as usize % tokens.len()];
            let body = json!({"subject": format!("Question {i}"), "body": "How do I export my invoices?", "category": "billing"});
            counts.count(
                http.post(format!("{base}/v1/tickets")).bearer_auth(token).json(&body).send().await.is_ok_and(|r| r.status() == 201),
            );
        })
    });
    let payments = every(secs, Duration::from_secs(1), |i| {
        let (http, base, counts) = (http.clone(), base.clone(), counts.clone());
        let email = format!("payer{i}-{tag}@memory.test");
        tokio::spawn(async move {
            let ok = match sign_up(&http, &base, &email).await {
                Some(token) => pay(&http, &base, &token).await,
                None => false,
            };
            counts.count(ok);
        })
    });
    tokio::join!(signups, me, tickets, payments);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let load_secs = env_num("BENCH_LOAD_SECONDS", 300);
    let warmup_secs = env_num("BENCH_WARMUP_SECONDS", 30);
    let settle = Duration::from_secs(env_num("BENCH_SETTLE_SECONDS", 5));
    rt.block_on(async {
        let mut six = Six::start("release");
        six.wait_ready().await;
        tokio::time::sleep(settle).await;
        let idle = resident(&six);
        let counts = Arc::new(Counts::default());
        load(&six, warmup_secs, "warm", &counts).await;
        tokio::time::sleep(settle).await;
        let warm = resident(&six);
        let (warm_conns, warm_threads) = (system_tests::connections(&six.db).await, threads(&six));
        load(&six, load_secs, "load", &counts).await;
        tokio::time::sleep(settle).await;
        let after = resident(&six);
        let (after_conns, after_threads) = (system_tests::connections(&six.db).await, threads(&six));

        println!(
            "resident memory of the six release services (VmRSS, MB): idle after start, after a {warmup_secs} s warm-up and after {load_secs} s of mixed load (each read {} s after the load stops)",
            settle.as_secs()
        );
        println!("  {:<16} {:>8} {:>10} {:>11} {:>8}   PostgreSQL connections, threads: warmed up / after", "service", "idle", "warmed up", "after load", "growth");
        let mut figures = Vec::new();
        let mut growths = Vec::new();
        for (i, r) in six.running.iter().enumerate() {
            let growth = (after[i] / warm[i] - 1.0) * 100.0;
            println!(
                "  {:<16} {:>8.1} {:>10.1} {:>11.1} {:>7.1}%   {} / {}, {} / {}",
                r.name, idle[i], warm[i], after[i], growth, warm_conns[i], after_conns[i], warm_threads[i], after_threads[i]
            );
            figures.push(Figure::at_most(&format!("{} idle resident memory", r.name), "MB", 30.0, vec![idle[i]]));
            growths.push((r.name, growth));
        }
        let (worst_name, worst_growth) = growths.iter().copied().fold(("", f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
        figures.push(
            Figure::at_most("largest growth over the load (leak check)", "%", 10.0, vec![worst_growth])
                .baseline(&format!("{worst_name}, after the warm-up"), warm[growths.iter().position(|g| g.0 == worst_name).unwrap_or(0)]),
        );
        let (ok, failed) = (counts.ok.load(Ordering::Relaxed), counts.failed.load(Ordering::Relaxed));
        println!("  requests and flows: {ok} succeeded, {failed} failed");
        for f in &figures {
            println!("  target: {} {} -> {}   ({})", f.name, f.target_text(), if f.met() { "MET" } else { "MISSED" }, num(f.worst()));
        }
        write("memory", &figures).unwrap();
        six.kill_and_clean_up(failed).await;
        assert_eq!(failed, 0, "every request of the load succeeds");
    });
}
