//! Ticket intake through the real gateway and support-router (release build, real PostgreSQL and
//! RabbitMQ, every service in this process; the load generator on its own runtime): `POST
//! /v1/tickets` at a fixed rate (open loop: dispatch never waits for answers, so a stall shows),
//! beside the gateway's no-database `GET /v1/status` at the same rate in the same round, as the
//! baseline. Several rounds, each reported; the target holds only if every round meets it.
//!
//!   cargo bench -p gateway --bench tickets   (BENCH_RATE 200, BENCH_SECONDS 5, BENCH_ROUNDS 5)

#![allow(clippy::unwrap_used)] // a benchmark that cannot set itself up should stop loudly

#[path = "../tests/common/mod.rs"]
mod common;
mod load;
use load::{env_num, fixed_rate, pct};

use sb_testkit::probe::CpuTimes;
use serde_json::json;

fn main() {
    let servers = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let clients = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sys = servers.block_on(common::start(&[], &[]));
    // Customers to spread the tickets over (each ticket distinct: no idempotent replays).
    let users: Vec<common::User> = servers.block_on(async {
        let mut users = Vec::new();
        for i in 0..20 {
            users.push(sys.signup(&format!("bench{i}@tickets.test")).await);
        }
        users
    });
    let rate = env_num("BENCH_RATE", 200) as f64;
    let secs = env_num("BENCH_SECONDS", 5);
    let rounds = env_num("BENCH_ROUNDS", 5);
    let n = (rate * secs as f64) as u64;
    let (tickets, status) = (sys.url("/v1/tickets"), sys.url("/v1/status"));
    clients.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        let intake = |round: u64| {
            let (client, tickets, users) = (client.clone(), tickets.clone(), users.clone());
            move |i: u64| {
                let u = &users[(i % users.len() as u64) as usize];
                let body = json!({
                    "subject": format!("Bench ticket {round}-{i}"),
                    "body": "How do I export my invoices to a spreadsheet?",
                    "category": "technical",
                });
                client.post(&tickets).bearer_auth(&u.token).json(&body)
            }
        };
        // Warm-up: connections, pools, prepared statements.
        fixed_rate(rate, (rate as u64).min(200), intake(0)).await;

        println!(
            "ticket intake benchmark (release; identity + billing + crm-sync + support-router + gateway in this process, the load generator on another runtime; real PostgreSQL and RabbitMQ; {} CPUs)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!("  open loop at {rate:.0} req/s for {secs} s per row; {rounds} rounds, each a baseline row then an intake row");
        println!();
        println!("  CPU ms/req: CPU time used while the row ran, per request (this process = every service and the load generator; PostgreSQL; RabbitMQ)");
        println!();
        println!(
            "  {:<6} {:<36} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10} {:>22}",
            "round", "request", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "p99 ratio", "CPU ms/req app/db/mq"
        );
        let mut worst = 0.0f64;
        let mut met = true;
        let (mut rounds_p99, mut base_worst) = (Vec::new(), 0.0f64);
        for round in 1..=rounds {
            let before = CpuTimes::now();
            let base = fixed_rate(rate, n, |_| client.get(&status)).await;
            let base_cpu = CpuTimes::now().since(before);
            let before = CpuTimes::now();
            let lat = fixed_rate(rate, n, intake(round)).await;
            let lat_cpu = CpuTimes::now().since(before);
            let row = |name: &str, l: &[f64], ratio: String, cpu: CpuTimes| {
                let per = |s: f64| s * 1e3 / l.len().max(1) as f64;
                let cpu = format!("{:.2}/{:.2}/{:.2}", per(cpu.app), per(cpu.db), per(cpu.broker));
                println!(
                    "  {round:<6} {name:<36} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {ratio:>10} {cpu:>22}",
                    l.len(),
                    pct(l, 0.50),
                    pct(l, 0.95),
                    pct(l, 0.99),
                    l.last().copied().unwrap_or(f64::NAN)
                );
            };
            row("GET /v1/status (baseline)", &base, String::new(), base_cpu);
            let p99 = pct(&lat, 0.99);
            row("POST /v1/tickets", &lat, format!("{:.1}x", p99 / pct(&base, 0.99)), lat_cpu);
            worst = worst.max(p99);
            met &= p99 <= 20.0;
            rounds_p99.push(p99);
            base_worst = base_worst.max(pct(&base, 0.99));
        }
        println!();
        println!(
            "  target: intake p99 <= 20 ms at {rate:.0} tickets/s in every round -> {}   (worst round p99 {worst:.2} ms)",
            if met { "MET" } else { "MISSED" }
        );
        let figure = sb_testkit::report::Figure::at_most(&format!("ticket intake p99 at {rate:.0}/s"), "ms", 20.0, rounds_p99)
            .baseline("GET /v1/status p99, same rate", base_worst);
        sb_testkit::report::write("tickets", &[figure]).unwrap();
    });
    servers.block_on(sys.stop());
}
