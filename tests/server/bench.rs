//! `herald bench` as operators run it: the real binary, CI-sized runs,
//! asserting what the bench verified (every message enqueued, sent once,
//! nothing lost or duplicated), never a speed.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::{HERALD, Herald, client, common};

fn bench(args: &[&str]) -> Output {
    Command::new(HERALD)
        .arg("bench")
        .args(args)
        .args(["--json", "--timeout", "120"])
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_DATABASE_URL")
        .env_remove("HERALD_BENCH_API_KEY")
        .output()
        .expect("run herald bench")
}

/// The JSON report, after checking the run exited as expected.
fn report(output: &Output, success: bool) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.success(),
        success,
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}): {stdout}\nstderr: {stderr}"))
}

/// The correctness checks of a clean run of `n` messages.
fn assert_verified(report: &Value, n: u64) {
    let v = &report["verification"];
    assert_eq!(v["passed"], true, "{report:#}");
    assert_eq!(v["enqueued"], n, "{report:#}");
    assert_eq!(v["sent"], n, "{report:#}");
    assert_eq!(v["stored"], n, "{report:#}");
    assert_eq!(v["events_checked"], n, "{report:#}");
    assert_eq!(v["lost"], 0);
    assert_eq!(v["duplicates"], 0);
    assert_eq!(v["event_problems"], 0);
    assert_eq!(v["not_sent"], serde_json::json!({}));
    assert_eq!(report["enqueue"]["errors"], serde_json::json!({}));
    assert_eq!(report["latency_ms"]["count"], n);
    assert_eq!(report["end_to_end"]["sent"], n);
}

/// Whether a PostgreSQL schema exists.
async fn schema_exists(schema: &str) -> bool {
    let (client, connection) =
        tokio_postgres::connect(&common::postgres_base_url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .expect("query pg_namespace")
        .is_some()
}

/// The bench schema named in the report's store description.
fn bench_schema(report: &Value) -> String {
    let store = report["target"]["store"].as_str().expect("a store");
    store
        .split_whitespace()
        .find(|word| word.starts_with("herald_bench_"))
        .unwrap_or_else(|| panic!("no schema in {store}"))
        .to_owned()
}

#[test]
fn bench_batches_on_sqlite_deliver_every_message_once() {
    let output = bench(&["--messages", "2000", "--batch-size", "100"]);
    let report = report(&output, true);
    assert_verified(&report, 2000);
    assert_eq!(report["target"]["backend"], "sqlite");
    assert_eq!(report["enqueue"]["requests"], 20);
}

#[test]
fn bench_single_enqueues_on_sqlite_deliver_every_message_once() {
    let output = bench(&["--messages", "300", "--clients", "4"]);
    let report = report(&output, true);
    assert_verified(&report, 300);
    assert_eq!(report["enqueue"]["requests"], 300);
}

#[test]
fn bench_can_hold_delivery_until_everything_is_enqueued() {
    let output = bench(&["--messages", "500", "--batch-size", "50", "--deliver-after"]);
    let report = report(&output, true);
    assert_verified(&report, 500);
    assert_eq!(report["load"]["deliver_after"], true);
    assert_eq!(
        report["end_to_end"]["sent_while_enqueuing"], 0,
        "nothing is delivered while the transport is held: {report:#}"
    );
}

#[tokio::test]
async fn bench_batches_on_postgres_deliver_every_message_once_and_drop_their_schema() {
    let url = common::postgres_base_url();
    let output = bench(&[
        "--messages",
        "2000",
        "--batch-size",
        "100",
        "--storage",
        &url,
    ]);
    let report = report(&output, true);
    assert_verified(&report, 2000);
    assert_eq!(report["target"]["backend"], "postgres");
    let schema = bench_schema(&report);
    assert!(!schema_exists(&schema).await, "{schema} was left behind");
}

#[test]
fn bench_single_enqueues_at_a_rate_on_postgres_deliver_every_message_once() {
    let url = common::postgres_base_url();
    let output = bench(&["--messages", "300", "--rate", "300", "--storage", &url]);
    let report = report(&output, true);
    assert_verified(&report, 300);
    assert_eq!(report["load"]["rate"], 300);
}

const KEY: &str = "bench-test-key-0123456789";

fn serve(dir: &Path, transport: &str) -> Herald {
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[storage]\nurl = \"sqlite://herald.db\"\n\n\
             [[api_keys]]\nkey = \"{KEY}\"\nroles = [\"enqueue\", \"read\"]\n\n\
             {transport}\n"
        ),
    )
    .expect("write config");
    Herald::start(dir, &[])
}

#[tokio::test]
async fn bench_against_a_running_server_counts_only_its_own_messages() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut herald = serve(
        dir.path(),
        "[transports.sink]\nkind = \"null\"\nrate_limit = 600000\nburst_limit = 1000",
    );
    herald.wait_until_live(&client()).await;
    let run = |messages: &'static str| {
        bench(&[
            "--url",
            &herald.base,
            "--api-key",
            KEY,
            "--transport",
            "sink",
            "--messages",
            messages,
            "--batch-size",
            "50",
        ])
    };
    // The second run shares the server with the first run's messages.
    assert_verified(&report(&run("200"), true), 200);
    let second = report(&run("150"), true);
    assert_verified(&second, 150);
    assert_eq!(second["target"]["server"], herald.base.as_str());
    assert!(herald.terminate().success());
}

#[tokio::test]
async fn bench_fails_when_messages_are_not_delivered() {
    // An SMTP server that refuses connections: every message is
    // dead-lettered after its single attempt.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut herald = serve(
        dir.path(),
        &format!(
            "[transports.smtp]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {closed_port}\n\
             max_retries = 0\ncircuit_failure_threshold = 1000\nrate_limit = 600000\nburst_limit = 1000"
        ),
    );
    herald.wait_until_live(&client()).await;
    let output = bench(&[
        "--url",
        &herald.base,
        "--api-key",
        KEY,
        "--transport",
        "smtp",
        "--messages",
        "20",
    ]);
    let report = report(&output, false);
    let v = &report["verification"];
    assert_eq!(v["passed"], false);
    assert_eq!(v["enqueued"], 20);
    assert_eq!(v["sent"], 0);
    assert_eq!(v["not_sent"]["dead"], 20, "{report:#}");
    assert!(herald.terminate().success());
}
