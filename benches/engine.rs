//! The engine end to end through the `null` transport, on both backends:
//! throughput (messages/s from queued to sent, with a full queue) and
//! enqueue-to-sent latency at a steady moderate rate. Numbers come from
//! the store's own timestamps (`created_at` -> `sent_at`).
//!
//! Run: `cargo bench --bench engine` (PostgreSQL at 127.0.0.1:5432 or
//! `HERALD_TEST_DATABASE_URL`). Options via environment:
//! `HERALD_BENCH_MESSAGES` (default 20000), `HERALD_BENCH_RATE` (500/s),
//! `HERALD_BENCH_SECONDS` (10), `HERALD_BENCH_BACKENDS` (`sqlite,postgres`).
//! With `HERALD_BENCH_ROLLUP_ROUNDS=N` it
//! measures instead what the analytics rollups cost the delivery path:
//! N rounds, each a full-queue throughput run with rollups and one
//! without (`StorageOptions::rollups`) on fresh stores, in alternating
//! order, and reports both medians.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fixture, emails};
use herald::config::Settings;
use herald::domain::Status;
use herald::engine::{Engine, EngineOptions};
use herald::storage::{MessageFilter, PageRequest, Storage, StorageOptions};
use herald::time::{Clock, SystemClock};

const TUNING: &str = "rate_limit = 60000000\nburst_limit = 100000\nconcurrency = 256\nbatch_size = 500\nprefetch_count = 500";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start(f: &Fixture, storage: Arc<dyn Storage>) -> Engine {
    let text = format!(
        "[storage]\nurl = \"{}\"\n\n[transports.mail]\nkind = \"null\"\n{TUNING}\n",
        f.options.url
    );
    let settings =
        Arc::new(Settings::from_toml(&text, Path::new("bench.toml"), |_| None).expect("settings"));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let transports =
        herald::transports::build_all(&settings.transports, clock.clone()).expect("transports");
    Engine::start(
        storage,
        clock,
        settings,
        transports,
        EngineOptions::default(),
    )
    .await
    .expect("engine")
}

/// True while anything is queued or processing. Two index probes, not a
/// count: on a 2-core machine a count of a deep queue every few
/// milliseconds would compete with the engine it measures.
async fn busy(storage: &dyn Storage) -> bool {
    for status in [Status::Queued, Status::Processing] {
        let filter = MessageFilter {
            status: Some(status),
            ..Default::default()
        };
        let page = storage
            .list_messages(
                &filter,
                PageRequest {
                    after: None,
                    limit: 1,
                },
            )
            .await
            .expect("list");
        if !page.items.is_empty() {
            return true;
        }
    }
    false
}

/// Delivers a full queue of `total` through `storage` (a handle on `f`'s
/// store); returns messages per second.
async fn throughput(f: &Fixture, storage: Arc<dyn Storage>, total: usize) -> f64 {
    let now = SystemClock.now();
    for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
        storage
            .enqueue_many(emails(chunk.len(), now), now)
            .await
            .expect("fill");
    }
    f.analyze().await;
    let started = Instant::now();
    let engine = start(f, storage.clone()).await;
    while busy(storage.as_ref()).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    engine.shutdown(Duration::from_secs(10)).await;
    total as f64 / elapsed.as_secs_f64()
}

async fn fixture(backend: &str) -> Fixture {
    match backend {
        "postgres" => Fixture::postgres().await,
        _ => Fixture::sqlite().await,
    }
}

/// Alternating runs with and without rollups, fresh stores each.
async fn rollup_cost(backend: &str, total: usize, rounds: u64) {
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..rounds {
        // Which goes first alternates, so neither gains from the order.
        for rollups in [round % 2 == 0, round % 2 == 1] {
            let f = fixture(backend).await;
            let options = StorageOptions {
                rollups,
                ..f.options.clone()
            };
            let storage = herald::storage::open(&options).await.expect("open");
            let rate = throughput(&f, storage, total).await;
            if rollups {
                with.push(rate)
            } else {
                without.push(rate)
            }
        }
        println!(
            "rollup_cost/{backend} round {}: with rollups {:.0} msg/s, without {:.0} msg/s",
            round + 1,
            with[round as usize],
            without[round as usize]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (with, without) = (median(&mut with), median(&mut without));
    println!(
        "rollup_cost/{backend}: median with rollups {with:.0} msg/s, without {without:.0} msg/s: rollups cost {:.1} % of end-to-end throughput",
        (without - with) / without * 100.0
    );
}

async fn latency(backend: &str, f: &Fixture, rate: u64, seconds: u64) {
    let engine = start(f, f.storage.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = Vec::new();
    for _ in 0..total {
        tick.tick().await;
        let storage = f.storage.clone();
        // Open loop: each enqueue is its own request, as clients send them.
        pending.push(tokio::spawn(async move {
            let now = SystemClock.now();
            let message = emails(1, now).remove(0);
            storage.enqueue(message, now).await.expect("enqueue");
        }));
    }
    for p in pending {
        p.await.expect("enqueue task");
    }
    while busy(f.storage.as_ref()).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.shutdown(Duration::from_secs(10)).await;

    let mut latencies = Vec::with_capacity(total as usize);
    let mut after = None;
    loop {
        let filter = MessageFilter {
            status: Some(Status::Sent),
            ..Default::default()
        };
        let page = f
            .storage
            .list_messages(&filter, PageRequest { after, limit: 1000 })
            .await
            .expect("list");
        for m in &page.items {
            if let Some(sent) = m.sent_at {
                latencies.push((sent - m.created_at).num_milliseconds());
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "engine_latency/{backend}: {} messages at {rate}/s, enqueue -> sent p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        pct(0.50),
        pct(0.95),
        pct(0.99),
        latencies.last().copied().unwrap_or_default()
    );
}

fn main() {
    let total = env_or("HERALD_BENCH_MESSAGES", 20_000) as usize;
    let rate = env_or("HERALD_BENCH_RATE", 500);
    let seconds = env_or("HERALD_BENCH_SECONDS", 10);
    let rollup_rounds = env_or("HERALD_BENCH_ROLLUP_ROUNDS", 0);
    herald::transports::install_crypto_provider();
    actix::System::new().block_on(async move {
        let backends =
            std::env::var("HERALD_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
        for backend in backends.split(',').map(str::trim) {
            if rollup_rounds > 0 {
                rollup_cost(backend, total, rollup_rounds).await;
                continue;
            }
            let f = fixture(backend).await;
            let rate_sent = throughput(&f, f.storage.clone(), total).await;
            println!(
                "engine_throughput/{backend}: {total} messages queued -> sent at {rate_sent:.0} messages/s"
            );
            latency(backend, &fixture(backend).await, rate, seconds).await;
        }
    });
}
