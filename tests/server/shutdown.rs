//! Starting on a host name, and the one ordered stop: the engine first,
//! then HTTP, then the process is gone.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use herald::app::{self, StartOptions};
use herald::config::Settings;
use herald::domain::Status;
use herald::storage::{self, StorageOptions};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{Herald, client, free_port, herald_in, workdir};

#[tokio::test]
async fn listen_takes_a_host_name() {
    let dir = workdir();
    let port = free_port();
    let child = herald_in(dir.path())
        .env("HERALD_LISTEN", format!("localhost:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start herald");
    // localhost is loopback wherever it points, so no API keys are needed.
    let mut herald = Herald {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    herald.wait_until_live(&client()).await;
    assert!(herald.terminate().success());
}

/// A webhook transport whose receiver answers after `delay`, on SQLite in
/// `dir`.
fn settings(dir: &Path, receiver: &MockServer) -> Settings {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\nurl = \"sqlite://{}\"\n\n\
         [transports.hooks]\nkind = \"webhook\"\nurl = \"{}/hook\"\n\n[routes]\nwebhook = \"hooks\"\n",
        dir.join("herald.db").display(),
        receiver.uri()
    );
    Settings::from_toml(&text, Path::new("test.toml"), |_| None).expect("valid settings")
}

async fn slow_receiver(delay: Duration) -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200).set_delay(delay))
        .mount(&receiver)
        .await;
    receiver
}

async fn until_received(receiver: &MockServer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the delivery never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_requested_stop_finishes_deliveries_before_http_closes() {
    let receiver = slow_receiver(Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = settings(dir.path(), &receiver);
    let url = settings.storage.url.clone();
    let running = app::start(
        settings,
        StartOptions {
            handle_signals: false,
        },
    )
    .await
    .expect("the server starts");
    let base = format!("http://{}", running.addrs()[0]);
    let client = client();
    let enqueued: serde_json::Value = client
        .post(format!("{base}/api/messages"))
        .json(&json!({"channel": "webhook", "webhook": {"payload": {"n": 1}}}))
        .send()
        .await
        .expect("enqueue")
        .json()
        .await
        .expect("JSON");
    let id: herald::domain::Stamp = enqueued["id"]
        .as_str()
        .expect("an id")
        .parse()
        .expect("a stamp");
    until_received(&receiver).await;

    // The way `herald bench` stops its server.
    let stop = running.stop_handle();
    stop.stop();
    let stopping = actix_web::rt::spawn(running.wait());
    // The engine is waiting for the delivery in flight; HTTP, stopped
    // after it, still answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = client
        .get(format!("{base}/health/live"))
        .send()
        .await
        .expect("HTTP answers while the engine stops");
    assert_eq!(live.status(), 200);
    stopping
        .await
        .expect("the stop ran")
        .expect("the stop is clean");
    assert!(
        client
            .get(format!("{base}/health/live"))
            .send()
            .await
            .is_err(),
        "HTTP is closed once the stop returns"
    );

    let store = storage::open(&StorageOptions::new(url))
        .await
        .expect("reopen");
    let message = store.get_message(id).await.expect("read").expect("stored");
    assert_eq!(
        message.message.status,
        Status::Sent,
        "the outcome was written before the stop returned"
    );
}

#[tokio::test]
async fn the_process_exits_as_soon_as_it_has_stopped() {
    let receiver = slow_receiver(Duration::from_secs(30)).await;
    let dir = workdir();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nshutdown_grace_ms = 500\n\n[transports.hooks]\nkind = \"webhook\"\n\
             url = \"{}/hook\"\n\n[routes]\nwebhook = \"hooks\"\n",
            receiver.uri()
        ),
    )
    .expect("write config");
    let log_path = dir.path().join("herald.log");
    let log = File::create(&log_path).expect("create the log");
    let mut command = herald_in(dir.path());
    command
        .stdout(log.try_clone().expect("share the log"))
        .stderr(log);
    let client = client();
    let mut herald = Herald::spawn(command, &[("HERALD_LOG_JSON", "true")]);
    herald.wait_until_live(&client).await;
    let response = client
        .post(format!("{}/api/messages", herald.base))
        .json(&json!({"channel": "webhook", "webhook": {"payload": {"n": 1}}}))
        .send()
        .await
        .expect("enqueue");
    assert_eq!(response.status(), 202);
    // A delivery still in flight when the grace ends: its work is left
    // behind on the runtime.
    until_received(&receiver).await;

    let sent = Command::new("kill")
        .args(["-TERM", &herald.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let stopped = |log: &str| log.contains(r#""message":"stopped""#);
    let deadline = Instant::now() + Duration::from_secs(20);
    let stopped_at = loop {
        // Exit first, then the log: a process that logs and exits between
        // the two reads is seen to have logged.
        let exited = herald.child.try_wait().expect("poll herald").is_some();
        let text = std::fs::read_to_string(&log_path).expect("read the log");
        if stopped(&text) {
            break Instant::now();
        }
        assert!(!exited, "herald exited without logging `stopped`:\n{text}");
        assert!(Instant::now() < deadline, "herald did not stop:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let status = loop {
        if let Some(status) = herald.child.try_wait().expect("poll herald") {
            break status;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(1),
            "herald lived on after logging `stopped`"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}
