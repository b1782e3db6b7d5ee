//! Load-generation pieces the gateway's benchmarks share.

use std::time::Duration;

pub use sb_testkit::report::env_num;

/// The `p` quantile (0..=1) of sorted values (NaN when there are none).
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Latencies (ms, sorted) of `n` requests at `rate` per second (open loop: dispatch never waits
/// for responses, so a server stall still shows), each measured from its dispatch; measuring from
/// dispatch leaves out only the generator's ~1 ms timer lag. Every answer must be a success; a
/// request that could not be sent or read is infinitely slow.
pub async fn fixed_rate<F>(rate: f64, n: u64, request: F) -> Vec<f64>
where
    F: Fn(u64) -> reqwest::RequestBuilder,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let req = request(i);
        tasks.push(tokio::spawn(async move {
            let sent = tokio::time::Instant::now().max(due);
            // A request the generator could not even send (out of sockets behind a stall)
            // counts as never answered.
            let Ok(r) = req.send().await else { return f64::INFINITY };
            assert!(r.status().is_success(), "{}", r.status());
            if r.bytes().await.is_err() {
                return f64::INFINITY;
            }
            sent.elapsed().as_secs_f64() * 1e3
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    let slow = std::env::var("BENCH_TRACE_SLOW_MS").ok().and_then(|v| v.parse::<f64>().ok());
    for (i, t) in tasks.into_iter().enumerate() {
        let ms = t.await.unwrap();
        if slow.is_some_and(|s| ms > s) {
            let at = start + interval * i as u32;
            let ago = tokio::time::Instant::now().duration_since(at);
            let wall = chrono::Utc::now() - chrono::Duration::from_std(ago).unwrap_or_default();
            eprintln!("slow: #{i} at {} took {ms:.1} ms", wall.format("%H:%M:%S%.3f"));
        }
        out.push(ms);
    }
    out.sort_by(f64::total_cmp);
    out
}
