//! The five analytics routes' latency over a large store, on both
//! backends, through the real server and real HTTP; then the console's
//! pages over the same store (`analytics/console.rs`).
//!
//! The store is filled through the storage layer's own write path
//! (`enqueue_many`, `claim_due`, `record_outcomes`) on a simulated clock
//! that walks the last seven days minute by minute, so the rollups,
//! failure counts, events and dead letters are exactly what a week of
//! traffic leaves behind: three transports (email, SMS, webhook) with six
//! categories, transient and permanent failures with retries, dead
//! letters, and at the end a backlog and messages scheduled for tomorrow.
//! Rollups are sealed into hours and compacted as the engine does it, and
//! the store is vacuumed every four simulated hours, as autovacuum would
//! (this machine's PostgreSQL runs with autovacuum off). The server then
//! starts on that store (transports paused, so nothing but the routes
//! runs) and each route is asked the same question many times in a row;
//! the figures are the client's wall-clock times per request.
//!
//! Run: `cargo bench --bench analytics` (PostgreSQL at 127.0.0.1:5432 or
//! `HERALD_TEST_DATABASE_URL`). Environment: `HERALD_BENCH_MESSAGES`
//! (default 1,000,000), `HERALD_BENCH_REQUESTS` per case (default 100),
//! `HERALD_BENCH_BACKENDS` (default `postgres,sqlite`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "analytics/console.rs"]
mod console;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::Fixture;
use herald::app::{self, StartOptions};
use herald::config::Settings;
use herald::domain::{EnqueuePolicy, EnqueueRequest, Message, NewMessage};
use herald::storage::{Outcome, OutcomeKind, Storage};
use herald::time::{Clock, SystemClock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DAYS: i64 = 7;
const LEASE: Duration = Duration::from_secs(30);
/// What is left queued at the end: a backlog on the slowest transport.
const BACKLOG_SHARE: f64 = 0.02;
/// What is left scheduled for later (`send_at` in the future).
const SCHEDULED_SHARE: f64 = 0.005;

/// One simulated transport: what it carries and how it behaves.
struct Provider {
    name: &'static str,
    channel: &'static str,
    categories: &'static [&'static str],
    /// Share of the traffic.
    share: f64,
    /// How long after a message is due it is claimed, ms.
    claim_lag_ms: i64,
    /// Range of one delivery call, ms.
    duration_ms: (u64, u64),
    /// Share of the claim -> call time spent in the rate limiter.
    limited_share: f64,
    /// (probability per attempt, class, error, permanent)
    failures: &'static [(f64, &'static str, &'static str, bool)],
    cost: f64,
}

const PROVIDERS: [Provider; 3] = [
    Provider {
        name: "smtp-main",
        channel: "email",
        categories: &["receipt", "password-reset", "newsletter"],
        share: 0.55,
        claim_lag_ms: 800,
        duration_ms: (40, 400),
        limited_share: 0.1,
        failures: &[
            (
                0.04,
                "transient",
                "451 4.7.1 greylisted, try again later for <user{n}@example.com>",
                false,
            ),
            (0.005, "timeout", "timed out after 30000 ms", false),
            (
                0.006,
                "rejected",
                "550 5.1.1 <user{n}@example.com>: recipient address rejected",
                true,
            ),
        ],
        cost: 0.0004,
    },
    Provider {
        name: "sms",
        channel: "sms",
        categories: &["otp", "alert"],
        share: 0.25,
        claim_lag_ms: 5_000,
        duration_ms: (150, 1500),
        limited_share: 0.8,
        failures: &[
            (
                0.06,
                "transient",
                "HTTP 503 from provider, request {n}",
                false,
            ),
            (0.01, "permanent", "HTTP 400: invalid number +1555{n}", true),
        ],
        cost: 0.0075,
    },
    Provider {
        name: "hooks",
        channel: "webhook",
        categories: &["order-event"],
        share: 0.20,
        claim_lag_ms: 200,
        duration_ms: (20, 200),
        limited_share: 0.0,
        failures: &[
            (
                0.03,
                "connection",
                "connection refused (10.0.{n}.1:443)",
                false,
            ),
            (0.01, "timeout", "timed out after 5000 ms", false),
        ],
        cost: 0.0,
    },
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn settings_text(url: &str) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\nurl = {}\n\n",
        toml::Value::String(url.to_owned())
    );
    for p in &PROVIDERS {
        text.push_str(&format!(
            "[transports.{}]\nkind = \"null\"\ncost_per_message = {}\n\n",
            p.name, p.cost
        ));
    }
    text.push_str(
        "[routes]\nemail = \"smtp-main\"\nsms = \"sms\"\nwebhook = \"hooks\"\n\
         chat = \"hooks\"\npush = \"hooks\"\n",
    );
    text
}

fn settings(url: &str) -> Settings {
    Settings::from_toml(&settings_text(url), Path::new("bench.toml"), |_| None).expect("settings")
}

fn new_message(
    p: &Provider,
    n: u64,
    rng: &mut StdRng,
    policy: &EnqueuePolicy,
    send_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> NewMessage {
    let category = p.categories[rng.random_range(0..p.categories.len())];
    let body = match p.channel {
        "email" => serde_json::json!({ "email": {
            "from": "shop@example.com",
            "to": [format!("user{n}@example.com")],
            "subject": format!("Your {category} #{n}"),
            "text": "Thank you for your order. It is on its way.",
        }}),
        "sms" => serde_json::json!({ "sms": {
            "to": format!("+1555{n:07}"),
            "body": format!("Your code is {}", n % 1_000_000),
        }}),
        _ => serde_json::json!({ "webhook": {
            "payload": { "event": category, "order": n },
        }}),
    };
    let mut request = serde_json::json!({
        "channel": p.channel,
        "transport": p.name,
        "category": category,
        "priority": rng.random_range(0..10),
        "metadata": { "tenant": format!("tenant-{}", n % 7) },
        "send_at": send_at,
    });
    // Every tenth message comes with a key, as retried client calls do;
    // the console's search by key finds them.
    if n.is_multiple_of(10) {
        request["idempotency_key"] = serde_json::json!(format!("order-{n}"));
    }
    if let (Some(request), Some(body)) = (request.as_object_mut(), body.as_object()) {
        request.extend(body.clone());
    }
    let request: EnqueueRequest = serde_json::from_value(request).expect("a valid request");
    request
        .into_new_message(policy, now)
        .expect("a valid message")
}

/// What one claimed message's attempt comes to, with its timings.
fn attempt(
    p: &Provider,
    message: &Message,
    claimed_at: DateTime<Utc>,
    rng: &mut StdRng,
) -> (Outcome, DateTime<Utc>) {
    let token = message.claim_token.expect("a claimed message has a token");
    let duration = rng.random_range(p.duration_ms.0..=p.duration_ms.1);
    let processing = rng.random_range(0..200u64);
    let limited = (processing as f64 * p.limited_share) as u64;
    let done = claimed_at + chrono::Duration::milliseconds((processing + duration) as i64);
    let mut roll: f64 = rng.random();
    let mut kind = OutcomeKind::Sent;
    let mut class = None;
    for (chance, failure_class, error, permanent) in p.failures {
        if roll < *chance {
            let error = error.replace("{n}", &rng.random_range(0..10_000).to_string());
            let backoff = 60_000 * 2i64.pow(message.attempts.saturating_sub(1).min(6));
            kind = OutcomeKind::Failed {
                error,
                retry_at: (!permanent).then(|| done + chrono::Duration::milliseconds(backoff)),
            };
            class = Some((*failure_class).to_owned());
            break;
        }
        roll -= chance;
    }
    let finishes = match &kind {
        OutcomeKind::Sent => true,
        OutcomeKind::Failed { retry_at, .. } => {
            retry_at.is_none() || message.attempts >= message.max_attempts
        }
        OutcomeKind::Released { .. } => false,
    };
    let ms = |d: chrono::Duration| d.num_milliseconds().max(0) as u64;
    let outcome = Outcome {
        duration_ms: Some(duration),
        wait_ms: Some(ms(claimed_at - message.available_at)),
        processing_ms: Some(processing),
        limited_ms: Some(limited),
        total_ms: finishes.then(|| ms(done - message.created_at)),
        error_class: class,
        ..Outcome::new(message, token, kind)
    };
    (outcome, done)
}

/// Claims and settles everything of every transport that is due by `t`
/// (plus each transport's claim lag).
async fn deliver(storage: &dyn Storage, t: DateTime<Utc>, rng: &mut StdRng) -> u64 {
    let mut attempts = 0;
    for p in &PROVIDERS {
        let claimed_at = t + chrono::Duration::milliseconds(p.claim_lag_ms);
        loop {
            let claimed = storage
                .claim_due(p.name, common::NODE, 1000, LEASE, claimed_at)
                .await
                .expect("claim");
            if claimed.is_empty() {
                break;
            }
            attempts += claimed.len() as u64;
            let mut last = claimed_at;
            let outcomes: Vec<Outcome> = claimed
                .iter()
                .map(|m| {
                    let (outcome, done) = attempt(p, m, claimed_at, rng);
                    last = last.max(done);
                    outcome
                })
                .collect();
            storage
                .record_outcomes(outcomes, last)
                .await
                .expect("record");
            if claimed.len() < 1000 {
                break;
            }
        }
    }
    attempts
}

/// A week of traffic ending at `end`, then the backlog.
async fn fill(f: &Fixture, total: u64, end: DateTime<Utc>) {
    let policy = settings(&f.options.url).enqueue_policy();
    let storage = f.storage.as_ref();
    let mut rng = StdRng::seed_from_u64(42);
    let minutes = DAYS * 24 * 60;
    let start = end - chrono::Duration::days(DAYS);
    let backlog = (total as f64 * BACKLOG_SHARE) as u64;
    let scheduled = (total as f64 * SCHEDULED_SHARE) as u64;
    let steady = total - backlog - scheduled;
    // A daily swing: twice as much at the peak as in the trough.
    let weight = |m: i64| 1.0 + (std::f64::consts::TAU * m as f64 / 1440.0).sin() / 3.0;
    let weights: f64 = (0..minutes).map(weight).sum();
    let began = Instant::now();
    let (mut enqueued, mut attempts, mut owed) = (0u64, 0u64, 0.0f64);
    for m in 0..minutes {
        let t = start + chrono::Duration::minutes(m);
        owed += steady as f64 * weight(m) / weights;
        let count = (owed.floor() as u64).min(steady - enqueued);
        owed -= count as f64;
        let mut batch = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let pick: f64 = rng.random();
            let mut acc = 0.0;
            let p = PROVIDERS
                .iter()
                .find(|p| {
                    acc += p.share;
                    pick < acc
                })
                .unwrap_or(&PROVIDERS[0]);
            batch.push(new_message(
                p,
                enqueued + batch.len() as u64,
                &mut rng,
                &policy,
                None,
                t,
            ));
        }
        enqueued += count;
        for chunk in batch.chunks(1000) {
            storage
                .enqueue_many(chunk.to_vec(), t)
                .await
                .expect("enqueue");
        }
        attempts += deliver(storage, t, &mut rng).await;
        if (m + 1) % 240 == 0 {
            f.vacuum().await;
        }
        if (m + 1) % 1440 == 0 {
            eprintln!(
                "  day {} of {DAYS}: {enqueued} messages, {attempts} attempts, {:.0} s",
                (m + 1) / 1440,
                began.elapsed().as_secs_f64()
            );
        }
    }
    // The backlog: the SMS provider has fallen behind over the last ten
    // minutes; a few messages are scheduled for tomorrow.
    let sms = &PROVIDERS[1];
    for chunk in (0..backlog).collect::<Vec<_>>().chunks(100) {
        let left = (backlog - chunk[0]) as i64;
        let t = end - chrono::Duration::milliseconds(600_000 * left / backlog.max(1) as i64);
        let batch = chunk
            .iter()
            .map(|i| new_message(sms, enqueued + i - chunk[0], &mut rng, &policy, None, t))
            .collect();
        storage.enqueue_many(batch, t).await.expect("backlog");
        enqueued += chunk.len() as u64;
    }
    let tomorrow = end + chrono::Duration::days(1);
    let mut batch = Vec::new();
    for _ in 0..scheduled {
        let p = &PROVIDERS[enqueued as usize % PROVIDERS.len()];
        batch.push(new_message(
            p,
            enqueued,
            &mut rng,
            &policy,
            Some(tomorrow),
            end,
        ));
        enqueued += 1;
    }
    for chunk in batch.chunks(1000) {
        storage
            .enqueue_many(chunk.to_vec(), end)
            .await
            .expect("scheduled");
    }
    let compact = settings(&f.options.url).analytics;
    let (merged, purged) = storage
        .compact_rollups(
            end - herald::storage::SEAL_LAG,
            end - chrono::Duration::from_std(compact.compact_after).expect("hours"),
            end - chrono::Duration::from_std(compact.retention).expect("days"),
        )
        .await
        .expect("compact");
    f.vacuum().await;
    eprintln!(
        "  filled: {enqueued} messages, {attempts} attempts in {:.0} s; compaction merged {merged} minute rows, purged {purged}",
        began.elapsed().as_secs_f64()
    );
}

/// The questions asked, as an operator's dashboard asks them.
const CASES: [(&str, &str); 19] = [
    ("/api/queue/analytics", "window=15m"),
    ("/api/queue/analytics", "window=1h"),
    ("/api/queue/analytics", "window=24h"),
    ("/api/queue/analytics", "window=24h&bucket=1h"),
    ("/api/queue/analytics", "window=7d&bucket=1h"),
    ("/api/queue/analytics", "window=7d&bucket=1h&transport=sms"),
    ("/api/queue/bottlenecks", "window=1h"),
    ("/api/queue/bottlenecks", "window=24h"),
    ("/api/queue/bottlenecks", "window=7d"),
    ("/api/queue/failures", "window=1h"),
    ("/api/queue/failures", "window=24h"),
    ("/api/queue/failures", "window=7d"),
    ("/api/analytics/message-flow", "window=1h"),
    ("/api/analytics/message-flow", "window=24h"),
    ("/api/analytics/message-flow", "window=7d"),
    ("/api/analytics/message-flow", "window=7d&channel=email"),
    ("/api/analytics/transport-performance", "window=1h"),
    ("/api/analytics/transport-performance", "window=24h"),
    (
        "/api/analytics/transport-performance",
        "window=7d&category=otp",
    ),
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(backend: &str, f: &Fixture, requests: usize) {
    let now = SystemClock.now();
    for p in &PROVIDERS {
        f.storage
            .set_paused(p.name, true, now)
            .await
            .expect("pause");
    }
    let running = app::start(
        settings(&f.options.url),
        StartOptions {
            handle_signals: false,
        },
    )
    .await
    .expect("the server starts");
    let base = format!("http://{}", running.addrs()[0]);
    let http = reqwest::Client::new();
    println!("\n{backend}: route | query | p50 | p95 | p99 | max (ms) | response bytes");
    for (path, query) in CASES {
        let url = format!("{base}{path}?{query}");
        let mut times = Vec::with_capacity(requests);
        let mut bytes = 0;
        for i in 0..requests + 5 {
            let started = Instant::now();
            let response = http.get(&url).send().await.expect("a response");
            assert!(
                response.status().is_success(),
                "{url}: {}",
                response.status()
            );
            bytes = response.bytes().await.expect("a body").len();
            if i >= 5 {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| `{path}` | `{query}` | {:.1} | {:.1} | {:.1} | {:.1} | {bytes} |",
            percentile(&times, 0.50),
            percentile(&times, 0.95),
            percentile(&times, 0.99),
            times.last().copied().unwrap_or_default(),
        );
    }
    let database = (backend == "postgres").then_some(f.options.url.as_str());
    console::measure(backend, &base, database, requests).await;
    running.shutdown().await.expect("shutdown");
}

fn main() {
    let total = env_or("HERALD_BENCH_MESSAGES", 1_000_000);
    let requests = env_or("HERALD_BENCH_REQUESTS", 100) as usize;
    let backends =
        std::env::var("HERALD_BENCH_BACKENDS").unwrap_or_else(|_| "postgres,sqlite".into());
    herald::transports::install_crypto_provider();
    actix::System::new().block_on(async move {
        for backend in backends.split(',').map(str::trim) {
            let fixture = match backend {
                "postgres" => Fixture::postgres().await,
                "sqlite" => Fixture::sqlite().await,
                other => panic!("unknown backend {other}: postgres or sqlite"),
            };
            eprintln!("{backend}: filling {total} messages over {DAYS} days");
            let end = SystemClock.now();
            fill(&fixture, total, end).await;
            measure(backend, &fixture, requests).await;
        }
    });
}
