//! Storage faults as outages, on the real binary: a SQLite file on a
//! small tmpfs that the test fills, and a PostgreSQL schema whose tables
//! refuse writes with the server's own SQLSTATEs (53100 disk_full, 25006
//! read_only_sql_transaction). While the store cannot write, enqueues and
//! other writes answer 503 naming the cause with `Retry-After` and store
//! nothing, readiness is 503, and outcomes of deliveries in flight are
//! kept until they can be written: once the store writes again, each of
//! those messages is `sent` after exactly one delivery, and enqueues and
//! readiness recover without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{Herald, client, common, get_json};
use common::Fixture;

/// Messages delivering when the store stops writing.
const IN_FLIGHT: usize = 4;
/// How long the webhook takes to answer: the window in which the test
/// takes the store's writes away.
const DELIVERY: Duration = Duration::from_secs(2);
/// Long enough for the outage to end before any lease does, so a second
/// delivery can only mean a lost outcome.
const LEASE_MS: u64 = 8000;
/// Generous bound on anything the test waits for.
const PATIENCE: Duration = Duration::from_secs(30);

/// A tmpfs mounted on a fresh directory, unmounted when dropped (the test
/// drops it last, after the server that holds files in it).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None`, with the reason printed, where this machine cannot mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Tmpfs { dir }),
            Ok(output) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(err) => {
                eprintln!("skipped: cannot run mount: {err}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.dir.path()).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Something still holds a file: detach it now, it goes when freed.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Fills the filesystem holding `path` until a write fails for lack of
/// space; removing the file frees it again.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match file.write_all(&chunk).and_then(|()| file.sync_all()) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(28) => break, // ENOSPC
            Err(err) => panic!("filling the disk: {err}"),
        }
    }
    // The last partial chunk may have left a few bytes: take them too.
    let byte = [0u8; 1];
    while file.write_all(&byte).and_then(|()| file.sync_all()).is_ok() {}
}

/// What the test needs of a running server and its webhook.
struct Run {
    herald: Herald,
    hook: MockServer,
    client: reqwest::Client,
}

async fn start(dir: &Path, storage_url: &str) -> Run {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(DELIVERY))
        .mount(&hook)
        .await;
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[storage]\nurl = \"{storage_url}\"\n\n\
             [transports.hooks]\nkind = \"webhook\"\nurl = \"{}/notify\"\n\
             timeout_ms = 10000\nlease_ms = {LEASE_MS}\n\n\
             [routes]\nwebhook = \"hooks\"\n",
            hook.uri()
        ),
    )
    .expect("write config");
    let client = client();
    let mut herald = Herald::start(dir, &[]);
    herald.wait_until_live(&client).await;
    Run {
        herald,
        hook,
        client,
    }
}

fn message(n: usize) -> Value {
    json!({"channel": "webhook", "webhook": {"payload": {"n": n}}})
}

impl Run {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.herald.base)
    }

    /// Status, `Retry-After` and body of a POST.
    async fn post(&self, path: &str, body: Value) -> (u16, Option<String>, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, retry_after, response.json().await.expect("JSON"))
    }

    async fn enqueue(&self, n: usize) -> String {
        let (status, _, body) = self.post("/api/messages", message(n)).await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().expect("an id").to_owned()
    }

    async fn ready(&self) -> (u16, Value) {
        get_json(&self.client, self.url("/health/ready")).await
    }

    async fn status_of(&self, id: &str) -> String {
        let (code, body) = get_json(&self.client, self.url(&format!("/api/messages/{id}"))).await;
        assert_eq!(code, 200, "{body}");
        body["status"].as_str().expect("a status").to_owned()
    }

    async fn stored(&self) -> usize {
        let (code, body) = get_json(&self.client, self.url("/api/messages?limit=100")).await;
        assert_eq!(code, 200, "{body}");
        body["items"].as_array().expect("items").len()
    }

    /// Deliveries the webhook received, by stamp.
    async fn deliveries(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for request in self.hook.received_requests().await.expect("recorded") {
            if let Some(stamp) = request.headers.get("x-herald-stamp") {
                let stamp = stamp.to_str().expect("an ASCII stamp").to_owned();
                *counts.entry(stamp).or_default() += 1;
            }
        }
        counts
    }

    async fn wait_for(&self, what: &str, mut done: impl AsyncFnMut(&Run) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self).await {
            assert!(Instant::now() < deadline, "{what} within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The outage from a client's side: every write refused the same way,
/// nothing stored; reads still served.
async fn writes_are_refused(run: &Run, code: &str, stored_before: usize) {
    let answers = [
        run.post("/api/messages", message(99)).await,
        run.post("/api/messages/batch", json!({"messages": [message(98)]}))
            .await,
        run.post("/api/transports/hooks/pause", json!({})).await,
    ];
    for (status, retry_after, body) in answers {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(
            retry_after
                .as_deref()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s > 0),
            "Retry-After in seconds: {retry_after:?}"
        );
    }
    assert_eq!(run.stored().await, stored_before, "nothing was stored");
    let (status, body) = run.ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["storage"]["status"], "down", "{body}");
    assert_eq!(body["checks"]["storage"]["code"], code, "{body}");
}

/// Runs the outage: `refuse` takes the store's writes away, `restore`
/// gives them back; `code` is what the API must answer meanwhile.
async fn an_outage_is_survived(
    run: &Run,
    code: &str,
    refuse: impl AsyncFnOnce(),
    restore: impl AsyncFnOnce(),
) {
    let (status, body) = run.ready().await;
    assert_eq!(status, 200, "{body}");
    let mut ids = Vec::new();
    for n in 0..IN_FLIGHT {
        ids.push(run.enqueue(n).await);
    }
    // Every message is at the webhook, which answers after DELIVERY.
    run.wait_for("deliveries start", async |run| {
        run.deliveries().await.len() == IN_FLIGHT
    })
    .await;
    let started = Instant::now();
    refuse().await;

    writes_are_refused(run, code, IN_FLIGHT).await;
    // The deliveries end during the outage; their outcomes cannot be
    // written yet, so the messages are still `processing`.
    tokio::time::sleep((DELIVERY + Duration::from_millis(500)).saturating_sub(started.elapsed()))
        .await;
    for id in &ids {
        assert_eq!(run.status_of(id).await, "processing");
    }
    assert_eq!(run.ready().await.0, 503, "still out");

    restore().await;
    run.wait_for("readiness recovers", async |run| run.ready().await.0 == 200)
        .await;
    let late = run.enqueue(IN_FLIGHT).await;
    ids.push(late.clone());
    for id in &ids {
        run.wait_for("every message is sent", async |run| {
            run.status_of(id).await == "sent"
        })
        .await;
    }
    // Past every lease taken before the outage: a lost outcome would
    // have brought its message back for a second delivery by now.
    tokio::time::sleep((Duration::from_millis(2 * LEASE_MS)).saturating_sub(started.elapsed()))
        .await;
    let deliveries = run.deliveries().await;
    for id in &ids {
        assert_eq!(deliveries.get(id), Some(&1), "{id}: {deliveries:?}");
        assert_eq!(run.status_of(id).await, "sent");
    }
    assert_eq!(deliveries.len(), ids.len(), "{deliveries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_sqlite_is_an_outage_that_passes() {
    let Some(tmpfs) = Tmpfs::mount("16m") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = tmpfs.path().join("herald.db");
    let run = start(dir.path(), &format!("sqlite://{}", db.display())).await;
    let filler: PathBuf = tmpfs.path().join("filler");
    an_outage_is_survived(
        &run,
        "storage_full",
        async || fill(&filler),
        async || std::fs::remove_file(&filler).expect("remove the filler"),
    )
    .await;
    assert!(run.herald.terminate().success());
    drop(tmpfs); // after the server: it held the database open
}

/// Makes every table of the test schema refuse writes with `sqlstate`,
/// as a full tablespace or a read-only server does, and lifts it again.
struct Refusal {
    client: tokio_postgres::Client,
    tables: Vec<String>,
}

impl Refusal {
    async fn prepare(url: &str) -> Refusal {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
            .batch_execute(
                "CREATE FUNCTION herald_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                   RAISE EXCEPTION 'simulated: writes refused (%)', TG_ARGV[0]
                     USING ERRCODE = TG_ARGV[0];
                 END $$",
            )
            .await
            .expect("create the refusing trigger function");
        let tables = client
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                &[],
            )
            .await
            .expect("list tables")
            .iter()
            .map(|row| row.get(0))
            .collect();
        Refusal { client, tables }
    }

    async fn refuse(&self, sqlstate: &str) {
        let sql: String = self
            .tables
            .iter()
            .map(|t| {
                format!(
                    "CREATE TRIGGER herald_test_refuse BEFORE INSERT OR UPDATE OR DELETE ON {t}
                     FOR EACH STATEMENT EXECUTE FUNCTION herald_test_refuse('{sqlstate}');"
                )
            })
            .collect();
        self.client
            .batch_execute(&sql)
            .await
            .expect("refuse writes");
    }

    async fn restore(&self) {
        let sql: String = self
            .tables
            .iter()
            .map(|t| format!("DROP TRIGGER herald_test_refuse ON {t};"))
            .collect();
        self.client.batch_execute(&sql).await.expect("allow writes");
    }
}

async fn postgres_refusing_writes_is_an_outage_that_passes(sqlstate: &str, code: &str) {
    let fixture = Fixture::postgres().await;
    let refusal = Refusal::prepare(&fixture.options.url).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run = start(dir.path(), &fixture.options.url).await;
    an_outage_is_survived(
        &run,
        code,
        async || refusal.refuse(sqlstate).await,
        async || refusal.restore().await,
    )
    .await;
    assert!(run.herald.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_postgres_disk_is_an_outage_that_passes() {
    postgres_refusing_writes_is_an_outage_that_passes("53100", "storage_full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_postgres_is_an_outage_that_passes() {
    postgres_refusing_writes_is_an_outage_that_passes("25006", "storage_unavailable").await;
}
