//! The console over the analytics bench's store: each page as the
//! browser opens it (its API calls at once, as `Promise.all` sends them),
//! timed as a whole and call by call, and what the overview's live
//! refresh costs the machine.
//!
//! The calls are the ones `src/http/console/web/js/pages/*.js` make; the
//! filter values (a recipient, a fingerprint, an idempotency key, a dead
//! letter's stamp and error class) are read from the store first, so
//! every search finds something.

use std::time::{Duration, Instant};

use herald::time::{Clock, SystemClock};
use serde_json::Value;

/// The overview refreshes this often (`REFRESH_S` in overview.js).
const REFRESH: Duration = Duration::from_secs(5);

struct Sample {
    id: String,
    fingerprint: String,
    recipient: String,
    idempotency_key: String,
    dead_transport: String,
    error_class: String,
    since: String,
    until: String,
    next_page: String,
}

async fn json(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.expect("a response");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

async fn sample(http: &reqwest::Client, base: &str) -> Sample {
    let page = json(
        http,
        &format!("{base}/api/messages?transport=smtp-main&status=sent&limit=50&include=payload"),
    )
    .await;
    let first = &page["items"][0];
    let keyed = json(
        http,
        &format!("{base}/api/messages?limit=1&idempotency_key=order-500000"),
    )
    .await;
    let idempotency_key = keyed["items"][0]["idempotency_key"]
        .as_str()
        .unwrap_or("order-500000")
        .to_owned();
    let groups = json(http, &format!("{base}/api/queue/dead-letters/groups")).await;
    let group = &groups["groups"][0];
    let dead = json(http, &format!("{base}/api/queue/dead-letters?limit=1")).await;
    let yesterday = SystemClock.now() - chrono::Duration::days(1);
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    Sample {
        id: text(&dead["items"][0]["id"]),
        fingerprint: text(&first["fingerprint"]),
        recipient: text(&first["payload"]["to"][0]),
        idempotency_key,
        dead_transport: text(&group["transport"]),
        error_class: group["error_class"].as_str().unwrap_or("").to_owned(),
        since: (yesterday - chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        until: yesterday.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        next_page: text(&page["next"]),
    }
}

/// Each page with the calls it makes when it opens.
fn pages(s: &Sample) -> Vec<(String, Vec<String>)> {
    let search = |name: &str, filter: &str| {
        (
            format!("messages: {name}"),
            vec![
                "/api/transports".to_owned(),
                format!("/api/messages/count?{filter}"),
                format!("/api/messages?limit=50&{filter}"),
            ],
        )
    };
    let analytics = |window: &str, bucket: &str| {
        (
            format!("analytics {window}"),
            vec![
                format!("/api/queue/analytics?window={window}&bucket={bucket}"),
                format!("/api/analytics/message-flow?window={window}"),
                format!("/api/analytics/transport-performance?window={window}"),
                format!("/api/queue/failures?window={window}"),
                format!("/api/queue/bottlenecks?window={window}"),
                format!("/api/analytics/deliverability?window={window}&bucket={bucket}"),
            ],
        )
    };
    let encode = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    vec![
        (
            "page assets".into(),
            vec![
                "/".into(),
                "/console/assets/js/main.js".into(),
                "/console/assets/vendor/uplot/uPlot.iife.min.js".into(),
            ],
        ),
        ("session".into(), vec!["/console/session".into()]),
        (
            "overview".into(),
            vec![
                "/api/queue/analytics?window=1h&bucket=1m".into(),
                "/api/analytics/message-flow?window=15m".into(),
                "/api/queue/bottlenecks?window=15m".into(),
                "/api/alerts?state=active&limit=20".into(),
            ],
        ),
        (
            "transports".into(),
            vec![
                "/api/transports".into(),
                "/api/queue/bottlenecks?window=15m".into(),
            ],
        ),
        search("newest", ""),
        (
            "messages: second page".into(),
            vec![format!("/api/messages?limit=50&after={}", s.next_page)],
        ),
        search("recipient", &format!("recipient={}", encode(&s.recipient))),
        search("fingerprint", &format!("fingerprint={}", s.fingerprint)),
        search(
            "idempotency key",
            &format!("idempotency_key={}", encode(&s.idempotency_key)),
        ),
        search("status dead", "status=dead"),
        search("status queued", "status=queued"),
        search("delivery delivered", "delivery=delivered"),
        search("transport sms", "transport=sms"),
        search("channel webhook", "channel=webhook"),
        search("category otp", "category=otp"),
        search(
            "an hour yesterday",
            &format!("since={}&until={}", encode(&s.since), encode(&s.until)),
        ),
        search(
            "sent receipts of smtp-main",
            "status=sent&transport=smtp-main&category=receipt",
        ),
        (
            "message detail".into(),
            vec![format!("/api/messages/{}", s.id)],
        ),
        (
            "message payload".into(),
            vec![format!("/api/messages/{}?include=payload", s.id)],
        ),
        (
            "dead letters".into(),
            vec![
                "/api/queue/dead-letters/groups".into(),
                "/api/queue/dead-letters?limit=100".into(),
            ],
        ),
        (
            "dead letters: one group".into(),
            vec![
                "/api/queue/dead-letters/groups".into(),
                format!(
                    "/api/queue/dead-letters?limit=100&transport={}&error_class={}",
                    s.dead_transport,
                    encode(&s.error_class)
                ),
            ],
        ),
        analytics("1h", "1m"),
        analytics("24h", "15m"),
        analytics("7d", "1h"),
        (
            "alerts".into(),
            vec![
                "/api/alerts?state=active&limit=200".into(),
                "/api/alerts?state=resolved&limit=100".into(),
            ],
        ),
        (
            "suppressions".into(),
            vec!["/api/suppressions?limit=100".into()],
        ),
    ]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Busy and total jiffies of the whole machine, from /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .expect("the cpu line")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

async fn open(http: &reqwest::Client, base: &str, calls: &[String]) -> (f64, Vec<f64>) {
    let started = Instant::now();
    let each = futures::future::join_all(calls.iter().map(|call| async move {
        let began = Instant::now();
        let url = format!("{base}{call}");
        let response = http.get(&url).send().await.expect("a response");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.bytes().await.expect("a body");
        began.elapsed().as_secs_f64() * 1000.0
    }))
    .await;
    (started.elapsed().as_secs_f64() * 1000.0, each)
}

pub async fn measure(backend: &str, base: &str, requests: usize) {
    let http = reqwest::Client::new();
    let sample = sample(&http, base).await;
    println!("\n{backend} console: page | calls | page p50 | page p95 | slowest call p95 (ms)");
    for (name, calls) in pages(&sample) {
        let mut page_times = Vec::with_capacity(requests);
        let mut call_times: Vec<Vec<f64>> = vec![Vec::with_capacity(requests); calls.len()];
        for i in 0..requests + 3 {
            let (page, each) = open(&http, base, &calls).await;
            if i >= 3 {
                page_times.push(page);
                for (times, t) in call_times.iter_mut().zip(each) {
                    times.push(t);
                }
            }
        }
        page_times.sort_by(f64::total_cmp);
        let (slowest, slowest_p95) = calls
            .iter()
            .zip(call_times.iter_mut())
            .map(|(call, times)| {
                times.sort_by(f64::total_cmp);
                (call, percentile(times, 0.95))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("a call");
        println!(
            "| {name} | {} | {:.1} | {:.1} | {slowest_p95:.1} `{slowest}` |",
            calls.len(),
            percentile(&page_times, 0.50),
            percentile(&page_times, 0.95),
        );
    }

    // The live overview: its refresh repeated back to back; the machine's
    // busy time per refresh (Herald, its database and this client
    // together, so an upper bound) over the refresh interval.
    let overview = pages(&sample)
        .into_iter()
        .find(|(name, _)| name == "overview")
        .expect("the overview")
        .1;
    let refreshes = requests.max(20);
    let (busy_before, total_before) = machine_jiffies();
    let started = Instant::now();
    for _ in 0..refreshes {
        open(&http, base, &overview).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let (busy_after, total_after) = machine_jiffies();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy_share = (busy_after - busy_before) as f64 / (total_after - total_before).max(1) as f64;
    let core_seconds_per_refresh = busy_share * cores * wall / refreshes as f64;
    println!(
        "{backend} live overview: {:.1} ms of CPU per refresh (machine-wide: Herald, database and client), \
         {:.2} % of one core at one refresh every {} s",
        core_seconds_per_refresh * 1000.0,
        core_seconds_per_refresh / REFRESH.as_secs_f64() * 100.0,
        REFRESH.as_secs()
    );
}
