//! Delivery feedback on PostgreSQL: SendGrid's signed event batches
//! through `POST /api/feedback/{transport}`, and the recipient look-up
//! `GET /api/messages?recipient=` over 1,000,000 stored messages.
//!
//! One store (a schema of its own, dropped at the end) holds 1,000,000
//! finished messages: 900,000 over the six days before today, written by
//! SQL (`generate_series`) into day partitions that are then attached, as
//! Herald attaches its own, so every partition index is built and valid;
//! and 100,000 sent today through the storage layer's own write path
//! (`enqueue_many`, `claim_due`, `record_outcomes`), each with a `sent`
//! event naming SendGrid's message id. Recipients are drawn so that a
//! typical address has a handful of messages (200,000 addresses, about 5
//! each) and a hundred list addresses have hundreds (about 360 each). The
//! store is vacuumed and analysed before anything is measured.
//!
//! Recipient look-up: the route through an actix-web test service, for
//! random typical and list addresses; the client's time per request.
//!
//! Ingestion: batches of 1,000 SendGrid events (delivered, open, click,
//! bounce with hard and soft ones, spamreport; half naming the stamp, half
//! only SendGrid's `sg_message_id`), signed with a P-256 key made here,
//! posted to the route (verification, parsing and the storage write are
//! all in the measured path; signing, the provider's work, is not). Then
//! the same work apart: verification and parsing alone, and
//! `Storage::record_feedback` alone, to say where the time goes.
//!
//! Run: `cargo bench --bench feedback` (PostgreSQL at 127.0.0.1:5432 or
//! `HERALD_TEST_DATABASE_URL`). Environment: `HERALD_BENCH_ROUNDS`
//! (default 6) of `HERALD_BENCH_BATCHES` batches each (default 20),
//! `HERALD_BENCH_LOOKUPS` typical addresses looked up (default 300).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::test;
use chrono::{DateTime, Utc};
use common::Fixture;
use common::keys::SendgridSigner;
use herald::config::Settings;
use herald::domain::{EnqueueRequest, Stamp};
use herald::feedback::sendgrid::SendgridEvents;
use herald::feedback::{FeedbackSource, Inbound};
use herald::storage::{FeedbackBatch, Outcome, OutcomeKind, Storage};
use herald::time::{Clock, SystemClock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TRANSPORT: &str = "mail";
const BATCH: usize = 1_000;
/// Messages sent today through the storage API: what events are about.
const SENT_TODAY: usize = 100_000;
/// Days before today filled by SQL, and messages per day.
const HISTORY_DAYS: u64 = 6;
const PER_DAY: i64 = 150_000;
/// Typical addresses (`user<n>@example.org`) and list addresses
/// (`list<n>@example.org`, every 25th message).
const TYPICAL: i64 = 200_000;
const LISTS: i64 = 100;
const SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn settings(url: &str, signer: &SendgridSigner) -> Arc<Settings> {
    let text = format!(
        r#"
[storage]
url = {url}

[transports.mail]
kind = "sendgrid"
api_key_env = "BENCH_SENDGRID_KEY"
base_url = "http://127.0.0.1:9"
event_webhook_public_key = "{key}"

[routes]
email = "mail"
"#,
        url = toml::Value::String(url.to_owned()),
        key = signer.public_key,
    );
    Arc::new(
        Settings::from_toml(&text, Path::new("bench.toml"), |var| {
            (var == "BENCH_SENDGRID_KEY").then(|| "SG.bench-key".to_owned())
        })
        .expect("valid bench settings"),
    )
}

/// A message sent today: its stamp, SendGrid's id and its address.
struct Sent {
    stamp: Stamp,
    provider_id: String,
    address: String,
}

/// 100,000 emails enqueued, claimed and sent through the storage API,
/// each `sent` event naming SendGrid's id.
async fn send_today(storage: &dyn Storage, settings: &Settings, now: DateTime<Utc>) -> Vec<Sent> {
    let policy = settings.enqueue_policy();
    let mut sent = Vec::with_capacity(SENT_TODAY);
    let mut addresses: HashMap<Stamp, String> = HashMap::new();
    for start in (0..SENT_TODAY).step_by(BATCH) {
        let batch: Vec<_> = (start..start + BATCH)
            .map(|n| {
                let address = format!("rcpt{n}@example.net");
                let request: EnqueueRequest = serde_json::from_value(json!({
                    "channel": "email",
                    "transport": TRANSPORT,
                    "category": "receipt",
                    "email": {
                        "from": "shop@example.com",
                        "to": [address],
                        "subject": format!("Your receipt #{n}"),
                        "text": "Thank you for your order. It is on its way.",
                    },
                }))
                .expect("a valid request");
                request
                    .into_new_message(&policy, now)
                    .expect("a valid message")
            })
            .collect();
        let enqueued = storage.enqueue_many(batch, now).await.expect("enqueue");
        for (n, e) in (start..).zip(&enqueued) {
            addresses.insert(e.id, format!("rcpt{n}@example.net"));
        }
        let claimed = storage
            .claim_due(TRANSPORT, common::NODE, BATCH, Duration::from_secs(30), now)
            .await
            .expect("claim");
        let outcomes: Vec<Outcome> = claimed
            .iter()
            .map(|m| {
                let token = m.claim_token.expect("a claimed message has a token");
                let provider_id = format!("sg{}", m.id.to_string().to_lowercase());
                sent.push(Sent {
                    stamp: m.id,
                    provider_id: provider_id.clone(),
                    address: addresses.remove(&m.id).unwrap_or_default(),
                });
                Outcome {
                    provider_message_id: Some(provider_id),
                    duration_ms: Some(120),
                    ..Outcome::new(m, token, OutcomeKind::Sent)
                }
            })
            .collect();
        storage
            .record_outcomes(outcomes, now)
            .await
            .expect("record");
    }
    sent
}

/// The six days before today, 150,000 finished messages each, written by
/// SQL into a partition that is then attached (its indexes built then).
async fn fill_history(client: &tokio_postgres::Client, today: chrono::NaiveDate) {
    let template = client
        .query_one(
            "SELECT payload::text, metadata::text FROM finished_messages LIMIT 1",
            &[],
        )
        .await
        .expect("a message sent today to copy");
    let payload: String = template.get(0);
    let metadata: String = template.get(1);
    for back in (1..=HISTORY_DAYS).rev() {
        let began = Instant::now();
        let day = today - chrono::Days::new(back);
        let next = day + chrono::Days::new(1);
        let suffix = day.format("%Y%m%d");
        client
            .batch_execute(&format!(
                "CREATE TABLE message_events_p{suffix} (LIKE message_events INCLUDING DEFAULTS);
                 ALTER TABLE message_events ATTACH PARTITION message_events_p{suffix}
                     FOR VALUES FROM ('{day}') TO ('{next}');
                 CREATE TABLE finished_messages_p{suffix} (LIKE finished_messages INCLUDING DEFAULTS);"
            ))
            .await
            .expect("the day's partitions");
        let first = back as i64 * PER_DAY;
        // Ids are ULIDs: the millisecond, then 80 bits of md5. Every 25th
        // message goes to a list address, every tenth to two addresses.
        client
            .execute(
                &format!(
                    "INSERT INTO finished_messages_p{suffix} (id, channel, transport, category,
                         status, priority, payload, metadata, fingerprint, idempotency_key,
                         attempts, max_attempts, created_at, available_at, sent_at, last_error,
                         updated_at, finished_on, recipients)
                     SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0')
                             || substr(md5(i::text), 1, 20))::uuid,
                            'email', 'mail', 'receipt', 'sent', 5, $1::text::json,
                            $2::text::json, md5(i::text), NULL, 1, 5, t, t,
                            t + interval '1 second', NULL, t + interval '1 second',
                            DATE '{day}',
                            CASE WHEN i % 25 = 0
                                 THEN ARRAY['list' || (i / 25) % {LISTS} || '@example.org']
                                 WHEN i % 10 = 1
                                 THEN ARRAY['user' || (hashint8(i) & 2147483647) % {TYPICAL}
                                            || '@example.org',
                                            'user' || (hashint8(-i) & 2147483647) % {TYPICAL}
                                            || '@example.org']
                                 ELSE ARRAY['user' || (hashint8(i) & 2147483647) % {TYPICAL}
                                            || '@example.org'] END
                     FROM generate_series($3::bigint, $3::bigint + $4::bigint - 1) AS i,
                          LATERAL (SELECT TIMESTAMPTZ '{day} 00:00:00+00'
                                          + (i - $3) * (interval '86399 seconds' / $4)) AS x(t)"
                ),
                &[&payload, &metadata, &first, &PER_DAY],
            )
            .await
            .expect("the day's messages");
        client
            .batch_execute(&format!(
                "ALTER TABLE finished_messages ATTACH PARTITION finished_messages_p{suffix}
                     FOR VALUES FROM ('{day}') TO ('{next}')"
            ))
            .await
            .expect("attach the day");
        eprintln!(
            "  {day}: {PER_DAY} messages in {:.1} s",
            began.elapsed().as_secs_f64()
        );
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

macro_rules! app {
    ($storage:expr, $settings:expr) => {{
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let state = herald::http::AppState::new($storage.clone(), clock, $settings.clone());
        test::init_service(
            actix_web::App::new()
                .app_data(actix_web::web::Data::new(state))
                .configure(herald::http::configure),
        )
        .await
    }};
}

/// The route's answer to `uri`: times in ms and items per answer.
async fn lookups<S, B>(app: &S, addresses: &[String]) -> (Vec<f64>, Vec<usize>)
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let mut times = Vec::with_capacity(addresses.len());
    let mut items = Vec::with_capacity(addresses.len());
    for address in addresses {
        let uri = format!("/api/messages?recipient={address}");
        let started = Instant::now();
        let response =
            test::call_service(app, test::TestRequest::get().uri(&uri).to_request()).await;
        assert!(
            response.status().is_success(),
            "{uri}: {}",
            response.status()
        );
        let body = test::read_body(response).await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let page: Value = serde_json::from_slice(&body).expect("a page");
        items.push(page["items"].as_array().map_or(0, Vec::len));
    }
    times.sort_by(f64::total_cmp);
    (times, items)
}

fn print_latency(what: &str, times: &[f64], items: &[usize]) {
    let mean_items = items.iter().sum::<usize>() as f64 / items.len().max(1) as f64;
    println!(
        "| {what} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {mean_items:.1} |",
        times.len(),
        percentile(times, 0.50),
        percentile(times, 0.95),
        percentile(times, 0.99),
        times.last().copied().unwrap_or_default(),
    );
}

async fn measure_lookups<S, B>(app: &S, client: &tokio_postgres::Client, count: usize)
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let mut rng = StdRng::seed_from_u64(7);
    let typical: Vec<String> = (0..count)
        .map(|_| format!("user{}@example.org", rng.random_range(0..TYPICAL)))
        .collect();
    let lists: Vec<String> = (0..LISTS).map(|n| format!("list{n}@example.org")).collect();
    // Warm the plan cache and the pool's connections.
    lookups(app, &typical[..10]).await;
    let (typical_times, typical_items) = lookups(app, &typical).await;
    let (list_times, list_items) = lookups(app, &lists).await;
    let counts = client
        .query_one(
            "SELECT count(*) FILTER (WHERE r LIKE 'user%'),
                    count(DISTINCT r) FILTER (WHERE r LIKE 'user%'),
                    count(*) FILTER (WHERE r LIKE 'list%')
             FROM finished_messages, unnest(recipients) AS r",
            &[],
        )
        .await
        .expect("counts");
    let (typical_n, typical_distinct, list_n): (i64, i64, i64) =
        (counts.get(0), counts.get(1), counts.get(2));
    println!(
        "\nrecipient look-up (PostgreSQL, {} messages per typical address on average, {} per list address; first page of 50):",
        typical_n / typical_distinct.max(1),
        list_n / LISTS,
    );
    println!("| addresses | requests | p50 ms | p95 ms | p99 ms | max ms | items per answer |");
    print_latency("typical", &typical_times, &typical_items);
    print_latency("list (hundreds each)", &list_times, &list_items);
    let mut all: Vec<f64> = typical_times.iter().chain(&list_times).copied().collect();
    all.sort_by(f64::total_cmp);
    print_latency(
        "all",
        &all,
        &typical_items
            .iter()
            .chain(&list_items)
            .copied()
            .collect::<Vec<_>>(),
    );
    for address in [&typical[0], &lists[0]] {
        let plan = client
            .query(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY ON)
                 SELECT id FROM finished_messages WHERE recipients @> ARRAY[$1::text]
                 ORDER BY id DESC LIMIT 51",
                &[address],
            )
            .await
            .expect("a plan");
        eprintln!("  plan for {address}:");
        for row in plan.iter().take(12) {
            eprintln!("    {}", row.get::<_, String>(0));
        }
    }
    // The route's statement is prepared once and run many times: after
    // five runs PostgreSQL may keep a generic plan, made without knowing
    // the address. What that plan would be for this query:
    client
        .batch_execute(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE by_recipient(text[]) AS
                 SELECT id FROM finished_messages WHERE recipients @> $1
                 ORDER BY id DESC LIMIT 51",
        )
        .await
        .expect("prepare");
    let generic = client
        .simple_query(&format!(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) EXECUTE by_recipient('{{{}}}')",
            typical[0]
        ))
        .await
        .expect("the generic plan");
    eprintln!("  generic plan for {}:", typical[0]);
    for message in &generic {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            eprintln!("    {}", row.get(0).unwrap_or_default());
        }
    }
    client
        .batch_execute("DEALLOCATE by_recipient; RESET plan_cache_mode")
        .await
        .expect("reset");
}

/// One batch of SendGrid events about `sent` messages, as SendGrid posts
/// them.
fn batch_body(sent: &[Sent], rng: &mut StdRng, sequence: &mut u64, now_s: i64) -> String {
    let events: Vec<Value> = (0..BATCH)
        .map(|i| {
            let message = &sent[rng.random_range(0..sent.len())];
            *sequence += 1;
            let mut event = json!({
                "email": message.address,
                "timestamp": now_s - rng.random_range(0..300),
                "sg_event_id": format!("ev-{sequence}"),
                "sg_message_id": format!("{}.filter0001.{sequence}.0", message.provider_id),
                "smtp-id": format!("<{}@example.com>", message.provider_id),
            });
            let roll: f64 = rng.random();
            let fields = match roll {
                r if r < 0.40 => json!({"event": "delivered", "response": "250 2.0.0 OK"}),
                r if r < 0.65 => json!({"event": "open", "useragent": "Mozilla/5.0", "ip": "192.0.2.7"}),
                r if r < 0.80 => json!({"event": "click", "url": "https://example.com/track", "ip": "192.0.2.7"}),
                r if r < 0.90 => json!({"event": "bounce", "type": "bounce", "status": "5.1.1",
                    "reason": "550 5.1.1 The email account that you tried to reach does not exist"}),
                r if r < 0.95 => json!({"event": "bounce", "type": "blocked", "status": "4.7.1",
                    "reason": "421 4.7.1 Try again later"}),
                _ => json!({"event": "spamreport"}),
            };
            if let (Some(event), Some(fields)) = (event.as_object_mut(), fields.as_object()) {
                event.extend(fields.clone());
                // Half name the stamp (a custom arg), half only SendGrid's id.
                if i % 2 == 0 {
                    event.insert("stamp".into(), json!(message.stamp.to_string()));
                }
            }
            event
        })
        .collect();
    serde_json::to_string(&events).expect("JSON")
}

/// A round's batches, signed: (body, signature, timestamp).
fn round(
    signer: &SendgridSigner,
    sent: &[Sent],
    rng: &mut StdRng,
    sequence: &mut u64,
    batches: usize,
) -> Vec<(String, String, String)> {
    let now_s = SystemClock.now().timestamp();
    (0..batches)
        .map(|_| {
            let body = batch_body(sent, rng, sequence, now_s);
            let (signature, timestamp) = signer.sign(now_s, &body);
            (body, signature, timestamp)
        })
        .collect()
}

/// Median, min and max of a round's events per second.
fn spread(rates: &mut [f64]) -> String {
    rates.sort_by(f64::total_cmp);
    format!(
        "median {:.0} events/s (min {:.0}, max {:.0}; {} rounds)",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        rates.len()
    )
}

#[derive(Default, Debug)]
struct Totals {
    received: u64,
    applied: u64,
    duplicates: u64,
    unmatched: u64,
    suppressed: u64,
}

async fn measure_ingestion<S, B>(
    app: &S,
    client: &tokio_postgres::Client,
    storage: &dyn Storage,
    signer: &SendgridSigner,
    sent: &[Sent],
    rounds: usize,
    batches: usize,
) where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let mut rng = StdRng::seed_from_u64(11);
    let mut sequence = 0u64;
    let source = SendgridEvents::from_public_key(&signer.public_key).expect("the key");
    let events_per_round = (batches * BATCH) as f64;
    let accept = |body: &str, signature: &str, timestamp: &str| {
        let headers = vec![
            (SIGNATURE.to_owned(), signature.to_owned()),
            (TIMESTAMP.to_owned(), timestamp.to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        let body = body.as_bytes().to_vec();
        let source = &source;
        async move {
            let inbound = Inbound {
                headers: &headers,
                body: &body,
                url: "http://localhost/api/feedback/mail",
                now: SystemClock.now(),
                tolerance: Duration::from_secs(300),
            };
            source.accept(inbound).await.expect("verified")
        }
    };

    // Through the route: verification, parsing and the write.
    let wal_before: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("the WAL position")
        .get(0);
    let mut route_rates = Vec::new();
    let mut totals = Totals::default();
    for r in 0..rounds + 1 {
        let posts = round(signer, sent, &mut rng, &mut sequence, batches);
        let started = Instant::now();
        for (body, signature, timestamp) in posts {
            let request = test::TestRequest::post()
                .uri("/api/feedback/mail")
                .insert_header(("Content-Type", "application/json"))
                .insert_header((SIGNATURE, signature))
                .insert_header((TIMESTAMP, timestamp))
                .set_payload(body)
                .to_request();
            let response = test::call_service(app, request).await;
            assert_eq!(response.status().as_u16(), 202, "the batch is taken");
            let answer: Value =
                serde_json::from_slice(&test::read_body(response).await).expect("an answer");
            let field = |name: &str| answer[name].as_u64().unwrap_or_default();
            totals.received += field("received");
            totals.applied += field("applied");
            totals.duplicates += field("duplicates");
            totals.unmatched += field("unmatched");
            totals.suppressed += field("suppressed");
        }
        let rate = events_per_round / started.elapsed().as_secs_f64();
        // The first round warms the plans and the caches.
        if r > 0 {
            route_rates.push(rate);
        }
    }
    println!(
        "\ningestion (PostgreSQL, batches of {BATCH} SendGrid events, {batches} batches per round, one request at a time):"
    );
    println!(
        "- through the route (verify, parse, record): {}",
        spread(&mut route_rates)
    );
    println!("  answers summed: {totals:?}");
    let wal: f64 = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
            &[&wal_before],
        )
        .await
        .expect("the WAL written")
        .get(0);
    let updates = client
        .query_one(
            "SELECT coalesce(sum(n_tup_upd), 0)::int8, coalesce(sum(n_tup_hot_upd), 0)::int8
             FROM pg_stat_user_tables WHERE relname LIKE 'finished_messages_p%'",
            &[],
        )
        .await
        .expect("update counts");
    println!(
        "  WAL written: {:.0} bytes per event; finished_messages rows updated {}, of which HOT {}",
        wal / totals.received.max(1) as f64,
        updates.get::<_, i64>(0),
        updates.get::<_, i64>(1),
    );

    // The same work apart: verification and parsing, then the write.
    let mut parse_rates = Vec::new();
    let mut storage_rates = Vec::new();
    for r in 0..rounds + 1 {
        let posts = round(signer, sent, &mut rng, &mut sequence, batches);
        let started = Instant::now();
        let mut accepted = Vec::with_capacity(posts.len());
        for (body, signature, timestamp) in &posts {
            accepted.push(accept(body, signature, timestamp).await);
        }
        let parse_rate = events_per_round / started.elapsed().as_secs_f64();
        let started = Instant::now();
        for batch in accepted {
            storage
                .record_feedback(
                    FeedbackBatch {
                        transport: TRANSPORT.to_owned(),
                        events: batch.events,
                        nonce: batch.nonce,
                    },
                    SystemClock.now(),
                )
                .await
                .expect("recorded");
        }
        let storage_rate = events_per_round / started.elapsed().as_secs_f64();
        if r > 0 {
            parse_rates.push(parse_rate);
            storage_rates.push(storage_rate);
        }
    }
    println!(
        "- verification and parsing alone: {}",
        spread(&mut parse_rates)
    );
    println!(
        "- Storage::record_feedback alone: {}",
        spread(&mut storage_rates)
    );
}

async fn vacuum(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "VACUUM ANALYZE messages, finished_messages, message_events, suppressions,
                 soft_bounces, feedback_nonces, feedback_unmatched",
        )
        .await
        .expect("VACUUM");
}

/// Whether every index of the partitioned `finished_messages` is valid.
async fn indexes_valid(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT bool_and(i.indisvalid) FROM pg_index i
             WHERE i.indrelid IN ('finished_messages'::regclass, 'message_events'::regclass)",
            &[],
        )
        .await
        .expect("index validity")
        .get::<_, Option<bool>>(0)
        .unwrap_or(false)
}

fn main() {
    let rounds = env_or("HERALD_BENCH_ROUNDS", 6);
    let batches = env_or("HERALD_BENCH_BATCHES", 20);
    let lookup_count = env_or("HERALD_BENCH_LOOKUPS", 300);
    herald::transports::install_crypto_provider();
    actix::System::new().block_on(async move {
        let fixture = Fixture::postgres().await;
        let client = fixture.side_postgres().await.expect("a PostgreSQL store");
        let signer = SendgridSigner::new();
        let settings = settings(&fixture.options.url, &signer);
        let now = SystemClock.now();
        let began = Instant::now();
        eprintln!("sending {SENT_TODAY} messages today through the storage API");
        let sent = send_today(fixture.storage.as_ref(), &settings, now).await;
        eprintln!(
            "  {} sent in {:.1} s; filling {HISTORY_DAYS} days of history by SQL",
            sent.len(),
            began.elapsed().as_secs_f64()
        );
        fill_history(&client, now.date_naive()).await;
        // Upkeep completes what the migration declared, as a node does.
        for _ in 0..10 {
            if indexes_valid(&client).await {
                break;
            }
            fixture.storage.move_finished(1000).await.expect("upkeep");
        }
        assert!(
            indexes_valid(&client).await,
            "every finished_messages and message_events index is valid"
        );
        vacuum(&client).await;
        let stored: i64 = client
            .query_one("SELECT count(*) FROM finished_messages", &[])
            .await
            .expect("count")
            .get(0);
        eprintln!(
            "store ready: {stored} finished messages, indexes valid, vacuumed, in {:.0} s",
            began.elapsed().as_secs_f64()
        );

        let app = app!(fixture.storage, settings);
        measure_lookups(&app, &client, lookup_count).await;
        measure_ingestion(
            &app,
            &client,
            fixture.storage.as_ref(),
            &signer,
            &sent,
            rounds,
            batches,
        )
        .await;
        let suppressed: i64 = client
            .query_one("SELECT count(*) FROM suppressions", &[])
            .await
            .expect("count")
            .get(0);
        println!("suppressions at the end: {suppressed}");
    });
}
