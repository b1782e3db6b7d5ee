//! Operators replay a large DLQ without the replay holding it in memory.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use common::*;
use sb_bus::{
    dlq::{Ops, Selector},
    publisher::{self, headers, lstr},
};

const MESSAGES: usize = 50_000;
/// Each parked event carries this much padding: 50,000 of them are about 100 MB.
const PAD: usize = 2_000;
/// What a replay of any length may add to the process's resident memory.
const MAX_GROWTH_BYTES: u64 = 32 << 20;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    kb.unwrap_or(0) * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_of_fifty_thousand_messages_replays_with_flat_memory() {
    let cfg = bus_config("dlq50k");
    let conn = publisher::connect(&cfg, "dlq test").await.unwrap();
    // No binding and no consumer: replayed events stay on the work queue to be counted.
    let names = sb_bus::topology::declare_service(&conn, &cfg, SERVICE, &[]).await.unwrap();
    let p = sb_bus::Publisher::open(&conn, &cfg).await.unwrap();
    let pad = "x".repeat(PAD);
    let t0 = std::time::Instant::now();
    let mut inflight = Vec::new();
    for i in 0..MESSAGES {
        let env = sb_bus::Envelope::raw("test-producer", TEST_EVENT, serde_json::json!({"n": i, "pad": pad}));
        let props = publisher::with_headers(
            &publisher::event_properties(&env, &Default::default()),
            &[(headers::REASON, lstr("downstream refused it"))],
            &[],
        );
        inflight.push(p.start_to_queue(&names.dlq, &env.to_json(), props).await.unwrap());
        if inflight.len() == 2_000 {
            for c in inflight.drain(..) {
                publisher::confirmed(c).await.unwrap();
            }
        }
    }
    for c in inflight.drain(..) {
        publisher::confirmed(c).await.unwrap();
    }

    println!("parked {MESSAGES} in {:?}", t0.elapsed());
    let t1 = std::time::Instant::now();
    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let ops = Ops::connect(cfg.clone()).await.unwrap();
    let replayed = ops.replay(SERVICE, Selector::All).await.unwrap();
    sampler.abort();
    println!("replay took {:?}", t1.elapsed());
    let growth = peak.load(Ordering::SeqCst).saturating_sub(baseline);
    println!("replayed {replayed} messages of {PAD} B padding; resident memory grew by {:.1} MiB", growth as f64 / 1048576.0);
    assert_eq!(replayed, MESSAGES);
    let depths = ops.depths(&[SERVICE]).await.unwrap();
    let depth = |role: &str| depths.iter().find(|d| d.role == role).and_then(|d| d.messages).unwrap();
    assert_eq!((depth("work"), depth("dlq")), (MESSAGES as u32, 0), "every message moved exactly once");
    assert!(growth < MAX_GROWTH_BYTES, "replaying grew resident memory by {growth} bytes (limit {MAX_GROWTH_BYTES})");
    ops.close().await;
    let _ = conn.close(200, "done".into()).await;
    cleanup(&cfg).await;
}
