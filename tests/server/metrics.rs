//! `/metrics` of a real `herald` process after known traffic through its
//! API and a real webhook receiver. The process is the test's own, so
//! every counter started at zero and the values asserted are exact.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use herald::time::{Clock, SystemClock};

use super::{Herald, client, common};

const KEY: &str = "metrics-test-key-0123456789";
const MAX_BODY: usize = 4096;

/// A scrape, parsed: every sample by its series (`name{labels}` as
/// written), and each family's HELP and TYPE lines.
#[derive(Debug, Default)]
struct Exposition {
    samples: BTreeMap<String, f64>,
    help: BTreeMap<String, String>,
    kind: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses the text format strictly: a line is blank, `# HELP name
    /// text`, `# TYPE name kind`, or a sample `name{k="v",...} value`.
    /// Panics naming the first line that is none of these, and on a family
    /// described twice or a series given twice.
    fn parse(text: &str) -> Exposition {
        let mut parsed = Exposition::default();
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                assert!(is_metric_name(name), "bad name in `{line}`");
                let previous = parsed.help.insert(name.to_owned(), help.to_owned());
                assert!(previous.is_none(), "{name} has two HELP lines");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                assert!(is_metric_name(name), "bad name in `{line}`");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad type in `{line}`"
                );
                let previous = parsed.kind.insert(name.to_owned(), kind.to_owned());
                assert!(previous.is_none(), "{name} has two TYPE lines");
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment `{line}`");
            let (series, value) = split_sample(line);
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value in `{line}`")),
            };
            let previous = parsed.samples.insert(series.to_owned(), value);
            assert!(previous.is_none(), "`{series}` given twice");
        }
        parsed
    }

    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// The family a sample belongs to: its name, less a histogram's
    /// `_bucket` / `_sum` / `_count`.
    fn family_of<'a>(&self, series: &'a str) -> &'a str {
        let name = series.split('{').next().unwrap_or(series);
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && self.kind.get(base).map(String::as_str) == Some("histogram")
            {
                return base;
            }
        }
        name
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Splits `name{labels} value` at the space after the labels, checking
/// the labels' syntax (quoted values with `\\`, `\"` and `\n` escapes).
fn split_sample(line: &str) -> (&str, &str) {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    assert!(is_metric_name(&line[..name_end]), "bad name in `{line}`");
    let mut end = name_end;
    if line[name_end..].starts_with('{') {
        let bytes = line.as_bytes();
        let mut i = name_end + 1;
        loop {
            if bytes.get(i) == Some(&b'}') {
                end = i + 1;
                break;
            }
            let key_start = i;
            while bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
            {
                i += 1;
            }
            assert!(i > key_start, "bad label name in `{line}`");
            assert_eq!(
                bytes.get(i..i + 2),
                Some(&b"=\""[..]),
                "bad label in `{line}`"
            );
            i += 2;
            loop {
                match bytes.get(i) {
                    Some(b'\\') => {
                        assert!(
                            matches!(bytes.get(i + 1), Some(b'\\' | b'"' | b'n')),
                            "bad escape in `{line}`"
                        );
                        i += 2;
                    }
                    Some(b'"') => break,
                    Some(_) => i += 1,
                    None => panic!("unterminated label value in `{line}`"),
                }
            }
            i += 1;
            if bytes.get(i) == Some(&b',') {
                i += 1;
            }
        }
    }
    let value = line[end..]
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no value in `{line}`"));
    assert!(!value.contains(' '), "trailing text in `{line}`");
    (&line[..end], value)
}

async fn post(
    client: &reqwest::Client,
    url: String,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut request = client.post(url).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn scrape(client: &reqwest::Client, base: &str) -> (String, Exposition) {
    let response = client
        .get(format!("{base}/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("a text body");
    let parsed = Exposition::parse(&text);
    (text, parsed)
}

fn webhook(transport: &str, text: &str) -> Value {
    json!({ "channel": "webhook", "transport": transport, "webhook": { "payload": { "text": text } } })
}

/// Waits until `id` is sent or dead and returns its status.
async fn settled(client: &reqwest::Client, base: &str, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client
            .get(format!("{base}/api/messages/{id}"))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("get the message");
        let message: Value = response.json().await.expect("a message");
        let status = message["status"].as_str().unwrap_or_default().to_owned();
        if status == "sent" || status == "dead" {
            return status;
        }
        assert!(Instant::now() < deadline, "{id} did not settle: {message}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One webhook transport that answers 200 and one that answers 500 (two
/// attempts per message; its breaker opens at the fourth consecutive
/// failure, which is the last attempt of two messages), then traffic of
/// every kind the counters tell apart.
async fn metrics_count_known_traffic_exactly(storage_url: &str) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ok"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/down"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&receiver)
        .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_config(dir.path(), storage_url, &receiver.uri());
    let client = client();
    let mut herald = Herald::start(dir.path(), &[]);
    herald.wait_until_live(&client).await;
    let base = herald.base.clone();
    let single = format!("{base}/api/messages");

    let mut keyed = webhook("hooks-ok", "deploy finished");
    keyed["idempotency_key"] = json!("metrics-deploy-1");
    let (status, created) = post(&client, single.clone(), Some(KEY), &keyed).await;
    assert_eq!(status, 202, "{created}");
    let sent_id = created["id"].as_str().expect("an id").to_owned();
    let (status, _) = post(&client, single.clone(), Some(KEY), &keyed).await;
    assert_eq!(status, 200, "a known idempotency key");
    let (status, body) = post(
        &client,
        single.clone(),
        Some(KEY),
        &webhook("no-such-transport", "x"),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = post(&client, single.clone(), None, &keyed).await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &client,
        single.clone(),
        Some(KEY),
        &webhook("hooks-ok", &"x".repeat(MAX_BODY)),
    )
    .await;
    assert_eq!(status, 413);
    let (status, batch) = post(
        &client,
        format!("{base}/api/messages/batch"),
        Some(KEY),
        &json!({ "messages": [webhook("hooks-down", "a"), webhook("hooks-down", "b")] }),
    )
    .await;
    assert_eq!(status, 202, "{batch}");
    let mut later = webhook("hooks-ok", "reminder");
    later["send_at"] = json!((SystemClock.now() + chrono::Duration::days(1)).to_rfc3339());
    let (status, body) = post(&client, single.clone(), Some(KEY), &later).await;
    assert_eq!(status, 202, "{body}");

    assert_eq!(settled(&client, &base, &sent_id).await, "sent");
    for result in batch["results"].as_array().expect("results") {
        let id = result["id"].as_str().expect("an id");
        assert_eq!(settled(&client, &base, id).await, "dead");
    }
    let (status, _) = post(
        &client,
        format!("{base}/api/messages/{sent_id}/cancel"),
        Some(KEY),
        &json!({}),
    )
    .await;
    assert_eq!(status, 409, "a sent message cannot be cancelled");

    // The tracker counts a batch just after storing it, so the API can
    // show a status a moment before it is counted: wait for the finishing
    // outcomes (every other figure is settled before them).
    let sent =
        "herald_deliveries_total{transport=\"hooks-ok\",channel=\"webhook\",outcome=\"sent\"}";
    let dead =
        "herald_deliveries_total{transport=\"hooks-down\",channel=\"webhook\",outcome=\"dead\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let (text, metrics) = loop {
        let (text, metrics) = scrape(&client, &base).await;
        let finished = metrics.get(sent) == Some(1.0) && metrics.get(dead) == Some(2.0);
        if finished || Instant::now() > deadline {
            break (text, metrics);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let expected: &[(&str, f64)] = &[
        (
            "herald_enqueue_requests_total{endpoint=\"single\",result=\"accepted\"}",
            2.0,
        ),
        (
            "herald_enqueue_requests_total{endpoint=\"single\",result=\"duplicate\"}",
            1.0,
        ),
        (
            "herald_enqueue_requests_total{endpoint=\"single\",result=\"invalid\"}",
            1.0,
        ),
        (
            "herald_enqueue_requests_total{endpoint=\"single\",result=\"unauthorized\"}",
            1.0,
        ),
        (
            "herald_enqueue_requests_total{endpoint=\"single\",result=\"too_large\"}",
            1.0,
        ),
        (
            "herald_enqueue_requests_total{endpoint=\"batch\",result=\"accepted\"}",
            1.0,
        ),
        (
            "herald_messages_enqueued_total{transport=\"hooks-ok\",channel=\"webhook\"}",
            2.0,
        ),
        (
            "herald_messages_enqueued_total{transport=\"hooks-down\",channel=\"webhook\"}",
            2.0,
        ),
        (sent, 1.0),
        (
            "herald_deliveries_total{transport=\"hooks-down\",channel=\"webhook\",outcome=\"retried\"}",
            2.0,
        ),
        (dead, 2.0),
        (
            "herald_delivery_failures_total{transport=\"hooks-down\",class=\"transient\"}",
            4.0,
        ),
        (
            "herald_delivery_duration_seconds_count{transport=\"hooks-ok\"}",
            1.0,
        ),
        (
            "herald_delivery_duration_seconds_count{transport=\"hooks-down\"}",
            4.0,
        ),
        (
            "herald_delivery_duration_seconds_bucket{transport=\"hooks-down\",le=\"+Inf\"}",
            4.0,
        ),
        (
            "herald_queue_wait_seconds_count{transport=\"hooks-down\"}",
            4.0,
        ),
        (
            "herald_processing_seconds_count{transport=\"hooks-down\"}",
            4.0,
        ),
        (
            "herald_rate_limiter_wait_seconds_count{transport=\"hooks-down\"}",
            4.0,
        ),
        (
            "herald_message_attempts_count{transport=\"hooks-ok\",outcome=\"sent\"}",
            1.0,
        ),
        (
            "herald_message_attempts_sum{transport=\"hooks-ok\",outcome=\"sent\"}",
            1.0,
        ),
        (
            "herald_message_attempts_count{transport=\"hooks-down\",outcome=\"dead\"}",
            2.0,
        ),
        (
            "herald_message_attempts_sum{transport=\"hooks-down\",outcome=\"dead\"}",
            4.0,
        ),
        (
            "herald_end_to_end_seconds_count{transport=\"hooks-ok\",outcome=\"sent\"}",
            1.0,
        ),
        (
            "herald_end_to_end_seconds_count{transport=\"hooks-down\",outcome=\"dead\"}",
            2.0,
        ),
        (
            "herald_circuit_transitions_total{transport=\"hooks-down\",to=\"open\"}",
            1.0,
        ),
        (
            "herald_circuit_state{transport=\"hooks-down\",state=\"open\"}",
            1.0,
        ),
        (
            "herald_circuit_state{transport=\"hooks-ok\",state=\"closed\"}",
            1.0,
        ),
        ("herald_dead_letters{transport=\"hooks-down\"}", 2.0),
        ("herald_transport_paused{transport=\"hooks-ok\"}", 0.0),
        ("herald_transport_running{transport=\"hooks-ok\"}", 1.0),
        ("herald_transport_concurrency{transport=\"hooks-ok\"}", 8.0),
        (
            "herald_queue_depth{transport=\"hooks-ok\",priority=\"4\",state=\"queued\"}",
            1.0,
        ),
        (
            "herald_queue_depth{transport=\"hooks-ok\",priority=\"4\",state=\"processing\"}",
            0.0,
        ),
        // Due tomorrow: it has not waited yet.
        (
            "herald_queue_oldest_age_seconds{transport=\"hooks-ok\"}",
            0.0,
        ),
        (
            "herald_storage_operation_duration_seconds_count{op=\"enqueue\"}",
            3.0,
        ),
        (
            "herald_storage_operation_duration_seconds_count{op=\"enqueue_many\"}",
            1.0,
        ),
        (
            "herald_storage_operation_duration_seconds_count{op=\"cancel\"}",
            1.0,
        ),
        (
            "herald_storage_errors_total{op=\"cancel\",class=\"conflict\"}",
            1.0,
        ),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(series, value)| metrics.get(series) != Some(*value))
        .map(|(series, value)| format!("{series}: want {value}, got {:?}", metrics.get(series)))
        .collect();
    assert!(wrong.is_empty(), "{}\n\n{text}", wrong.join("\n"));
    let build = format!(
        "herald_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metrics.get(&build), Some(1.0), "{build}");
    for op in ["claim_due", "record_outcomes", "queue_depth", "migrate"] {
        let series = format!("herald_storage_operation_duration_seconds_count{{op=\"{op}\"}}");
        assert!(
            metrics.get(&series).is_some_and(|n| n >= 1.0),
            "{series} missing:\n{text}"
        );
    }
    for series in metrics.samples.keys() {
        let family = metrics.family_of(series);
        assert!(
            metrics.help.contains_key(family) && metrics.kind.contains_key(family),
            "{series} has no HELP or TYPE"
        );
    }
    let families: Vec<&String> = metrics.kind.keys().collect();
    assert!(
        families.len() >= 20,
        "{} families: {families:?}",
        families.len()
    );
    assert!(
        families.iter().all(|name| name.starts_with("herald_")),
        "{families:?}"
    );
    assert!(herald.terminate().success());
}

fn write_config(dir: &Path, storage_url: &str, receiver: &str) {
    std::fs::write(
        dir.join("config.toml"),
        format!(
            r#"
[server]
max_body_bytes = {MAX_BODY}

[storage]
url = "{storage_url}"

[[api_keys]]
key = "{KEY}"
roles = ["enqueue", "read", "admin"]

[transports.hooks-ok]
kind = "webhook"
url = "{receiver}/ok"

[transports.hooks-down]
kind = "webhook"
url = "{receiver}/down"
max_retries = 1
retry_delay_ms = 10
max_retry_delay_ms = 10
circuit_failure_threshold = 4
circuit_open_ms = 600000

[routes]
webhook = "hooks-ok"
"#
        ),
    )
    .expect("write config");
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly_on_sqlite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("herald.db").display());
    metrics_count_known_traffic_exactly(&url).await;
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly_on_postgres() {
    let fixture = common::Fixture::postgres().await;
    metrics_count_known_traffic_exactly(&fixture.options.url).await;
}
