//! Schemathesis against a live `herald`, once with `[[api_keys]]` (the key
//! passed in schemathesis' header option) and once without: every request
//! it derives from `/api/openapi.json` must be answered without a 5xx, with
//! a documented status, content type, headers and body, and the server must
//! refuse what the description forbids and accept what it allows. The
//! mutating routes (pause, resume, cancel, replay) run against a throw-away
//! SQLite store. `schemathesis_hooks.py` keeps generated queries to the one
//! rule across parameters that no parameter's schema can state (`until`
//! after `since`).

use std::path::Path;
use std::process::{Command, Output};

use crate::{Herald, client};

/// The version `.ci/run` installs and these checks were verified with.
const PINNED: &str = "4.32.5";
const KEY: &str = "schemathesis-key-0123456789";

/// Checks run in both configurations. `negative_data_rejection` and
/// `positive_data_acceptance` hold the description to the server in both
/// directions: nothing it forbids is accepted, nothing it allows refused.
const CHECKS: &[&str] = &[
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "unsupported_method",
    "missing_required_header",
    "use_after_free",
    "ensure_resource_availability",
];

/// `python3 -m schemathesis.cli`, or why it cannot run. Under CI it must:
/// `.ci/run` installs it.
fn schemathesis() -> Option<Command> {
    let probe = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .output();
    let problem = match &probe {
        Ok(output) if output.status.success() => {
            let version = String::from_utf8_lossy(&output.stdout);
            if !version.contains(PINNED) {
                eprintln!("schemathesis: {} (verified with {PINNED})", version.trim());
            }
            None
        }
        Ok(output) => Some(format!(
            "`python3 -m schemathesis.cli` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(err) => Some(format!("python3 cannot be run: {err}")),
    };
    match problem {
        None => {
            let mut command = Command::new("python3");
            command.args(["-m", "schemathesis.cli"]);
            Some(command)
        }
        Some(problem) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{problem}; .ci/run installs schemathesis=={PINNED}")
        }
        Some(problem) => {
            eprintln!(
                "skipped: {problem} (python3 -m pip install schemathesis=={PINNED} to run it)"
            );
            None
        }
    }
}

/// A config on a temporary SQLite store with an email, a webhook (sms,
/// chat, push and webhook; per-message URLs to one host) and the keys
/// given.
fn write_config(dir: &Path, keys: &str) {
    let config = format!(
        r#"
[storage]
url = "sqlite://data/herald.db"
{keys}
[transports.outbox]
kind = "file"
path = "outbox"

[transports.hooks]
kind = "webhook"
url = "http://127.0.0.1:9/notify"
allowed_url_hosts = ["hooks.example.com"]

[routes]
email = "outbox"
sms = "hooks"
"#
    );
    std::fs::write(dir.join("config.toml"), config).expect("write config");
}

/// Runs schemathesis against a fresh `herald` on that config, sending
/// `key` if given; fails the test with schemathesis' report on any
/// failure.
async fn fuzz(keys: &str, key: Option<&str>) {
    let Some(mut schemathesis) = schemathesis() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_config(dir.path(), keys);
    let client = client();
    let mut herald = Herald::start(dir.path(), &[]);
    herald.wait_until_live(&client).await;
    let report = dir.path().join("schemathesis-report");
    let mut checks = CHECKS.to_vec();
    let mut extra = Vec::new();
    if let Some(key) = key {
        // With keys, a request without one, or with a wrong one, must be
        // refused.
        checks.push("ignored_auth");
        extra = vec![
            "--header".to_owned(),
            format!("Authorization: Bearer {key}"),
        ];
    }
    let checks = checks.join(",");
    // The coverage phase alone derives about 2,000 cases: fuzzing and the
    // stateful phase at 10 examples an operation keep the run to a few
    // hundred. A fixed seed makes a failure reproducible; one worker,
    // because hypothesis' lambda descriptions race in CPython's parser
    // under threads.
    let spec = format!("{}/api/openapi.json", herald.base);
    let report = report.display().to_string();
    let cwd = dir.path().to_path_buf();
    let args = [
        "run",
        &spec,
        "--checks",
        &checks,
        "--phases",
        "examples,fuzzing,stateful",
        "--max-examples",
        "10",
        "--seed",
        "20261201",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        "--report-dir",
        &report,
    ]
    .map(str::to_owned);
    let hooks = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/server/schemathesis_hooks.py"
    );
    let output: Output = tokio::task::spawn_blocking(move || {
        schemathesis
            .env("SCHEMATHESIS_HOOKS", hooks)
            .args(args)
            .args(extra)
            .current_dir(cwd)
            .output()
    })
    .await
    .expect("the schemathesis task")
    .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
    assert!(herald.terminate().success());
}

#[tokio::test]
async fn schemathesis_finds_nothing_with_api_keys() {
    let keys =
        format!("\n[[api_keys]]\nkey = \"{KEY}\"\nroles = [\"enqueue\", \"read\", \"admin\"]\n");
    fuzz(&keys, Some(KEY)).await;
}

#[tokio::test]
async fn schemathesis_finds_nothing_without_api_keys() {
    fuzz("", None).await;
}
