//! Broker chaos in the middle of a stream: every connection closed, then the broker restarted.
//! These tests disturb every other user of the broker, so `make test` runs this binary on its own.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use sb_bus::OutboxRelay;
use sb_testkit::{rabbitmqctl, wait_for};
use tokio_util::sync::CancellationToken;

const EVENTS: i64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_connections_and_restarting_the_broker_mid_stream_loses_and_duplicates_nothing() {
    let cfg = bus_config("chaos");
    let producer = database("chaos_p").await;
    let consumer_db = database("chaos_c").await;
    sqlx::query("CREATE TABLE orders (id UUID PRIMARY KEY)").execute(&producer.pool).await.unwrap();
    let consumer = start_consumer(&cfg, &consumer_db.pool, Recorder::default()).await;
    let stop_relay = CancellationToken::new();
    tokio::spawn(OutboxRelay::new(producer.pool.clone(), cfg.clone(), "test-producer").run(stop_relay.clone()));

    // Each event is its own transaction with its state change, as a service would write it.
    let pool = producer.pool.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..EVENTS {
            let env = event(None);
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind(env.id).execute(&mut *tx).await.unwrap();
            sb_bus::enqueue(&mut tx, &env).await.unwrap();
            tx.commit().await.unwrap();
        }
    });

    let applied = |n: i64| {
        let pool = consumer_db.pool.clone();
        async move { (all_effects(&pool).await.1 >= n).then_some(()) }
    };
    wait_for(Duration::from_secs(120), "1,000 events applied", || applied(1_000)).await;
    rabbitmqctl(&["close_all_connections", "switchboard chaos test"]);
    wait_for(Duration::from_secs(120), "2,500 events applied", || applied(2_500)).await;
    rabbitmqctl(&["stop_app"]);
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    writer.await.unwrap();
    wait_for(Duration::from_secs(180), "all 5,000 events applied", || applied(EVENTS)).await;
    let (rows, distinct) = all_effects(&consumer_db.pool).await;
    assert_eq!(distinct, EVENTS, "events lost");
    assert_eq!(rows, EVENTS, "effects duplicated");
    let unsent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sb_outbox WHERE published_at IS NULL").fetch_one(&producer.pool).await.unwrap();
    assert_eq!(unsent, 0);
    println!(
        "chaos: {EVENTS} events, applied {}, redelivered duplicates ignored {}",
        consumer.stats.applied.load(std::sync::atomic::Ordering::SeqCst),
        consumer.stats.duplicate.load(std::sync::atomic::Ordering::SeqCst)
    );
    stop_relay.cancel();
    consumer.stop().await;
    cleanup(&cfg).await;
}
