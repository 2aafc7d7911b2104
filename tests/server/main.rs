//! Black-box tests of the `herald` binary: started the way an operator
//! starts it, probed over HTTP, stopped with SIGTERM.

mod bench;
mod browser;
#[path = "../common/mod.rs"]
mod common;
mod connections;
mod console;
mod faults;
mod metrics;
mod recovery;
mod schemathesis;
mod shutdown;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::Fixture;
use common::proxy::Proxy;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const STARTUP: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `herald` run in `dir` on that directory's config.toml alone: the
/// environment of the test run cannot pick another config or database.
fn herald_in(dir: &Path) -> Command {
    run_in(dir, HERALD)
}

/// `program` run in `dir` with the environment [`herald_in`] gives; for a
/// program that runs herald (a shell that lowers a limit first).
fn run_in(dir: &Path, program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(dir)
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_DATABASE_URL");
    command
}

/// A running `herald` that is killed if the test forgets to stop it.
struct Herald {
    child: Child,
    base: String,
}

impl Herald {
    /// Starts `herald` in `dir` (which holds its config.toml).
    fn start(dir: &Path, env: &[(&str, &str)]) -> Herald {
        let mut command = herald_in(dir);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        Herald::spawn(command, env)
    }

    /// Starts `command` (herald, or a program that runs it) on a free port.
    fn spawn(mut command: Command, env: &[(&str, &str)]) -> Herald {
        let port = free_port();
        command.env("HERALD_LISTEN", format!("127.0.0.1:{port}"));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start herald");
        Herald {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_until_live(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll herald") {
                panic!("herald exited during start-up: {status}");
            }
            let live = client
                .get(format!("{}/health/live", self.base))
                .send()
                .await;
            if live.is_ok_and(|response| response.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("herald did not answer /health/live within {STARTUP:?}");
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll herald") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "herald did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

/// A fresh directory holding the repository's default config.toml.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        dir.path().join("config.toml"),
    )
    .expect("copy config.toml");
    dir
}

/// A migrated SQLite store in a directory of its own, with its URL.
async fn sqlite_store() -> (
    tempfile::TempDir,
    String,
    std::sync::Arc<dyn herald::storage::Storage>,
) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("herald.db").display());
    let storage = herald::storage::open(&herald::storage::StorageOptions::new(url.clone()))
        .await
        .expect("open");
    storage.migrate().await.expect("migrate");
    (dir, url, storage)
}

async fn get_json(client: &reqwest::Client, url: String) -> (u16, serde_json::Value) {
    let response = client.get(url).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn the_default_config_runs_on_sqlite_and_stops_on_sigterm() {
    let dir = workdir();
    let client = client();
    let mut herald = Herald::start(dir.path(), &[]);
    herald.wait_until_live(&client).await;

    let (status, body) = get_json(&client, format!("{}/health/ready", herald.base)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["storage"]["backend"], "sqlite");
    assert!(
        dir.path().join("data/herald.db").exists(),
        "the default store is created under ./data"
    );

    let (status, body) = get_json(&client, format!("{}/no/such/route", herald.base)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    assert!(herald.terminate().success(), "SIGTERM is a clean stop");
}

#[tokio::test]
async fn the_default_config_runs_on_postgres_via_the_environment() {
    let fixture = Fixture::postgres().await; // a schema of its own
    let dir = workdir();
    let client = client();
    let mut herald = Herald::start(dir.path(), &[("HERALD_DATABASE_URL", &fixture.options.url)]);
    herald.wait_until_live(&client).await;
    let (status, body) = get_json(&client, format!("{}/health/ready", herald.base)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["storage"]["backend"], "postgres");
    assert!(
        !dir.path().join("data").exists(),
        "no SQLite file when PostgreSQL is chosen"
    );
    assert!(herald.terminate().success());
}

#[tokio::test]
async fn readiness_fails_with_a_reason_when_the_database_goes_away() {
    let fixture = Fixture::postgres().await;
    let proxy = Proxy::start(common::postgres_host_port()).await;
    let through_proxy = fixture
        .options
        .url
        .replace(&common::postgres_host_port(), &proxy.addr);
    let dir = workdir();
    let client = client();
    let mut herald = Herald::start(dir.path(), &[("HERALD_DATABASE_URL", &through_proxy)]);
    herald.wait_until_live(&client).await;
    assert_eq!(
        get_json(&client, format!("{}/health/ready", herald.base))
            .await
            .0,
        200
    );

    drop(proxy); // the database is now unreachable
    let (status, body) = get_json(&client, format!("{}/health/ready", herald.base)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    let (status, _) = get_json(&client, format!("{}/health/live", herald.base)).await;
    assert_eq!(status, 200, "liveness does not depend on the database");
    assert!(herald.terminate().success());
}

#[tokio::test]
async fn a_taken_port_stops_start_up_before_the_engine_runs() {
    let dir = workdir();
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let addr = taken.local_addr().expect("its address");
    let output = herald_in(dir.path())
        .env("HERALD_LISTEN", addr.to_string())
        .output()
        .expect("run herald");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    // The engine never started: no transport announced, nothing panicked
    // while an engine half-built was torn down.
    assert!(!stderr.contains("transport running"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn an_invalid_config_stops_start_up_naming_the_key() {
    let dir = workdir();
    let config = dir.path().join("config.toml");
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(
        &config,
        text.replace("kind = \"file\"", "kind = \"file\"\nrate_limit = 0"),
    )
    .expect("write config");
    let output = herald_in(dir.path())
        .arg("check-config")
        .output()
        .expect("run herald");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("transports.outbox.rate_limit"), "{stderr}");
}

#[tokio::test]
async fn migrate_creates_the_schema_and_exits() {
    let fixture = Fixture::postgres().await;
    // A schema with nothing in it yet: Fixture migrated its own, so use a new one.
    let schema = format!(
        "herald_test_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let (client, connection) =
        tokio_postgres::connect(&common::postgres_base_url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let url = common::with_search_path(&common::postgres_base_url(), &schema);
    let dir = workdir();
    let status = herald_in(dir.path())
        .env("HERALD_DATABASE_URL", &url)
        .arg("migrate")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run herald migrate");
    let tables = client
        .query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
            &[&schema],
        )
        .await
        .expect("list tables");
    common::drop_schema(&client, &schema).await;
    assert!(status.success());
    let names: Vec<String> = tables.iter().map(|r| r.get(0)).collect();
    for table in ["message_events", "messages", "transport_state"] {
        assert!(
            names.iter().any(|n| n == table),
            "{table} missing from {names:?}"
        );
    }
    drop(fixture);
}

async fn survives_sigkill_mid_delivery(
    storage_url: &str,
    storage: std::sync::Arc<dyn herald::storage::Storage>,
) {
    const TOTAL: usize = 1000;
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[storage]\nurl = \"{storage_url}\"\n\n[transports.mail]\nkind = \"null\"\nrate_limit = 6000\nburst_limit = 10\nlease_ms = 2000\n\n[routes]\nemail = \"mail\"\n"
        ),
    )
    .expect("write config");
    for _ in 0..TOTAL / 500 {
        storage
            .enqueue_many(common::emails(500, common::t0()), common::t0())
            .await
            .expect("enqueue");
    }
    let client = client();
    let mut herald = Herald::start(dir.path(), &[]);
    herald.wait_until_live(&client).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::unfinished(storage.as_ref()).await > (TOTAL - 150) as u64 {
        assert!(Instant::now() < deadline, "delivery did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // kill -9: no shutdown, claims left held, outcomes possibly unwritten.
    herald.child.kill().expect("SIGKILL");
    let _ = herald.child.wait();
    let left = common::unfinished(storage.as_ref()).await;
    assert!(left > 0, "killed before the end");

    let mut restarted = Herald::start(dir.path(), &[]);
    restarted.wait_until_live(&client).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while common::unfinished(storage.as_ref()).await > 0 {
        assert!(
            Instant::now() < deadline,
            "not every message was delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(restarted.terminate().success());

    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = storage
            .list_messages(
                &Default::default(),
                herald::storage::PageRequest { after, limit: 1000 },
            )
            .await
            .expect("list");
        ids.extend(page.items.iter().map(|m| (m.id, m.status)));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(ids.len(), TOTAL, "no message lost, none duplicated");
    let mut recovered = 0;
    for (id, status) in ids {
        assert_eq!(status, herald::domain::Status::Sent);
        let events = storage
            .get_message(id)
            .await
            .expect("get")
            .expect("exists")
            .events;
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == herald::domain::EventKind::Sent)
                .count(),
            1,
            "{kinds:?}"
        );
        if kinds.contains(&herald::domain::EventKind::LeaseExpired) {
            recovered += 1;
        }
    }
    assert!(
        recovered > 0,
        "the claims held at the kill were recovered through their leases"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_delivery_loses_nothing_on_sqlite() {
    let (_dir, url, storage) = sqlite_store().await;
    survives_sigkill_mid_delivery(&url, storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_delivery_loses_nothing_on_postgres() {
    let fixture = Fixture::postgres().await;
    survives_sigkill_mid_delivery(&fixture.options.url, fixture.storage.clone()).await;
}
