//! Storage-layer throughput on both backends: batch enqueue, and the
//! delivery path's claim + record-outcome round trip, at batch sizes 1, 10
//! and 100. Figures and the machine go into BENCHMARKS.md.
//!
//! Run: `cargo bench --bench storage` (PostgreSQL at 127.0.0.1:5432 or
//! `HERALD_TEST_DATABASE_URL`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Fixture, emails, t0};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald::storage::{Outcome, OutcomeKind, Storage};

const BATCH_SIZES: [usize; 3] = [1, 10, 100];
const LEASE: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn bench_backend(c: &mut Criterion, backend: &str) {
    let rt = runtime();
    let fixture = rt.block_on(async {
        match backend {
            "postgres" => Fixture::postgres().await,
            _ => Fixture::sqlite().await,
        }
    });
    let storage = fixture.storage.clone();
    let fixture = std::sync::Arc::new(fixture);

    let mut group = c.benchmark_group(format!("enqueue_batch/{backend}"));
    for size in BATCH_SIZES {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.to_async(&rt).iter_custom(|iters| {
                let storage = storage.clone();
                async move {
                    let batches: Vec<_> = (0..iters).map(|_| emails(size, t0())).collect();
                    let start = Instant::now();
                    for batch in batches {
                        storage.enqueue_many(batch, t0()).await.expect("enqueue");
                    }
                    start.elapsed()
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("claim_and_complete/{backend}"));
    for size in BATCH_SIZES {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.to_async(&rt).iter_custom(|iters| {
                let storage = storage.clone();
                let fixture = fixture.clone();
                async move {
                    // Fill the queue first (untimed) so no claim comes back short.
                    let total = iters as usize * size;
                    for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
                        storage
                            .enqueue_many(emails(chunk.len(), t0()), t0())
                            .await
                            .expect("fill");
                    }
                    fixture.analyze().await;
                    let start = Instant::now();
                    for _ in 0..iters {
                        complete_one_batch(storage.as_ref(), size).await;
                    }
                    start.elapsed()
                }
            })
        });
    }
    group.finish();

    // The same round trip from four concurrent workers, as the engine runs
    // several transports (and nodes) at once: how far batching scales.
    let mut group = c.benchmark_group(format!("claim_and_complete_4_workers/{backend}"));
    let size = 100;
    group.throughput(Throughput::Elements(4 * size as u64));
    group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
        b.to_async(&rt).iter_custom(|iters| {
            let storage = storage.clone();
            let fixture = fixture.clone();
            async move {
                let total = 4 * iters as usize * size;
                for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
                    storage
                        .enqueue_many(emails(chunk.len(), t0()), t0())
                        .await
                        .expect("fill");
                }
                fixture.analyze().await;
                let start = Instant::now();
                let workers: Vec<_> = (0..4)
                    .map(|_| {
                        let storage = storage.clone();
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                complete_one_batch(storage.as_ref(), size).await;
                            }
                        })
                    })
                    .collect();
                for worker in workers {
                    worker.await.expect("worker");
                }
                start.elapsed()
            }
        })
    });
    group.finish();
    drop(storage);
    drop(fixture);
}

/// One delivery-path round trip: claim `size`, report them all sent.
async fn complete_one_batch(storage: &dyn Storage, size: usize) {
    let claimed = storage
        .claim_due("mail", common::NODE, size, LEASE, t0())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), size, "the queue was filled for every claim");
    let outcomes = claimed
        .iter()
        .map(|m| Outcome {
            duration_ms: Some(1),
            ..Outcome::new(m, m.claim_token.expect("token"), OutcomeKind::Sent)
        })
        .collect();
    storage
        .record_outcomes(outcomes, t0())
        .await
        .expect("record");
}

fn storage_benches(c: &mut Criterion) {
    bench_backend(c, "sqlite");
    bench_backend(c, "postgres");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = storage_benches
}
criterion_main!(benches);
