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

/// CPU time a process has used, in clock ticks (/proc/<pid>/stat).
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0; // gone: it used nothing more
    };
    // After "pid (comm)": state is the first field, utime the 12th, stime the 13th.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The processes doing the server's work: this one (the server runs in
/// it, beside the client) and, on PostgreSQL, the sessions of its pool,
/// which the test URL names by `application_name`.
async fn server_processes(database_url: Option<&str>) -> Vec<String> {
    let mut pids = vec!["self".to_owned()];
    if let Some(url) = database_url {
        let name = url::Url::parse(url)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "application_name")
                    .map(|(_, v)| v.into_owned())
            })
            .expect("the bench URL names its sessions");
        let client = super::common::connect(&super::common::postgres_base_url()).await;
        let rows = client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .await
            .expect("list the server's sessions");
        pids.extend(rows.iter().map(|r| r.get::<_, i32>(0).to_string()));
    }
    pids
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

pub async fn measure(backend: &str, base: &str, database_url: Option<&str>, requests: usize) {
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

    // The live overview: its refresh repeated back to back, and the CPU
    // the server's processes spent on it (this process includes the
    // client's share, so it is an upper bound) over the refresh interval.
    let overview = pages(&sample)
        .into_iter()
        .find(|(name, _)| name == "overview")
        .expect("the overview")
        .1;
    let refreshes = requests.max(20);
    // Warm, so every pooled session the refreshes use exists.
    for _ in 0..3 {
        open(&http, base, &overview).await;
    }
    let pids = server_processes(database_url).await;
    let before: u64 = pids.iter().map(|p| cpu_ticks(p)).sum();
    for _ in 0..refreshes {
        open(&http, base, &overview).await;
    }
    let after: u64 = pids.iter().map(|p| cpu_ticks(p)).sum();
    let per_refresh = (after - before) as f64 / ticks_per_second() / refreshes as f64;
    println!(
        "{backend} live overview: {:.1} ms of CPU per refresh (Herald, its database sessions and the client), \
         {:.2} % of one core at one refresh every {} s",
        per_refresh * 1000.0,
        per_refresh / REFRESH.as_secs_f64() * 100.0,
        REFRESH.as_secs()
    );
}
