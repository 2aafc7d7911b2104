//! Connections cannot be hoarded: silent, idle and slow clients are cut
//! off at the `[server]` timeouts, and a flood of connections cannot take
//! the descriptors the server needs to answer anyone else.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{HERALD, Herald, client, run_in};

/// The open-file limit the flooded server runs under.
const OPEN_FILES: usize = 256;
const HEAD_TIMEOUT_MS: u64 = 1000;
const BODY_TIMEOUT_MS: u64 = 1500;
const KEEP_ALIVE_MS: u64 = 1000;

/// A config with short timeouts, a file transport, SQLite: everything in
/// `dir`. The log goes to `dir/herald.log`.
fn start(dir: &Path, open_files: Option<usize>) -> Herald {
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[server]\nhead_timeout_ms = {HEAD_TIMEOUT_MS}\nbody_timeout_ms = {BODY_TIMEOUT_MS}\n\
             keep_alive_ms = {KEEP_ALIVE_MS}\n\n\
             [transports.outbox]\nkind = \"file\"\npath = \"outbox\"\n\n[routes]\nemail = \"outbox\"\n"
        ),
    )
    .expect("write config");
    let mut command = match open_files {
        // The shell execs herald: the child's pid is herald's.
        Some(limit) => {
            let mut command = run_in(dir, "sh");
            command
                .arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\""))
                .arg(HERALD);
            command
        }
        None => run_in(dir, HERALD),
    };
    let log = File::create(dir.join("herald.log")).expect("create the log");
    command
        .stdout(log.try_clone().expect("share the log"))
        .stderr(log);
    Herald::spawn(command, &[("HERALD_LOG_JSON", "true")])
}

fn addr(herald: &Herald) -> String {
    herald.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (end of stream, or a
/// reset); `None` if it is still open after `within`.
async fn read_until_closed<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    within: Duration,
) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_leaves_the_server_answering() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client();
    let mut herald = start(dir.path(), Some(OPEN_FILES));
    herald.wait_until_live(&client).await;
    let addr = addr(&herald);

    // More connections than the process could hold descriptors for, all
    // silent. Those beyond the limit wait in the listen queue.
    let flood = OPEN_FILES + 64;
    let connects = (0..flood).map(|_| {
        let addr = addr.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr))
                .await
                .ok()
                .and_then(Result::ok)
        }
    });
    let silent: Vec<TcpStream> = futures::future::join_all(connects)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(
        silent.len() > OPEN_FILES,
        "only {} of {flood} connections opened",
        silent.len()
    );

    // While they are held open, the server answers and its store works:
    // the connection limit kept descriptors for both.
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client");
    let live = patient
        .get(format!("{}/health/live", herald.base))
        .send()
        .await
        .expect("/health/live answers under the flood");
    assert_eq!(live.status(), 200);
    let ready = patient
        .get(format!("{}/health/ready", herald.base))
        .send()
        .await
        .expect("/health/ready answers under the flood");
    assert_eq!(ready.status(), 200);

    // Every silent connection is closed by the server, a batch per head
    // timeout; none is left to hold a descriptor.
    let closes = silent.into_iter().map(|mut stream| async move {
        read_until_closed(&mut stream, Duration::from_secs(120)).await
    });
    let closed = futures::future::join_all(closes).await;
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} silent connections were never closed");

    let log = std::fs::read_to_string(dir.path().join("herald.log")).expect("read the log");
    assert!(
        log.contains(&format!(r#""open_file_limit":{OPEN_FILES}"#)),
        "the server did not run under the lowered limit"
    );
    let starved: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("Too many open files"))
        .take(5)
        .collect();
    assert!(
        starved.is_empty(),
        "the server ran out of descriptors:\n{}",
        starved.join("\n")
    );
    assert!(herald.terminate().success());
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_at_their_timeouts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client();
    let mut herald = start(dir.path(), None);
    herald.wait_until_live(&client).await;
    let addr = addr(&herald);
    // actix-web's own defaults are 5 s for both: closing well before that
    // shows the configured timeouts apply.
    let bound = Duration::from_millis(HEAD_TIMEOUT_MS.max(KEEP_ALIVE_MS) + 2500);

    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let opened = Instant::now();
    let answer = read_until_closed(&mut silent, Duration::from_secs(30))
        .await
        .expect("a silent connection is closed");
    assert!(
        opened.elapsed() < bound,
        "closed after {:?}",
        opened.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: herald\r\n\r\n")
        .await
        .expect("send a request");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    let answered = Instant::now();
    read_until_closed(&mut idle, Duration::from_secs(30))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(
        answered.elapsed() < bound,
        "closed after {:?}",
        answered.elapsed()
    );
    assert!(herald.terminate().success());
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_with_408_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client();
    let mut herald = start(dir.path(), None);
    herald.wait_until_live(&client).await;

    const LENGTH: usize = 1000;
    const EVERY: Duration = Duration::from_millis(50);
    let stream = TcpStream::connect(addr(&herald)).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            format!(
                "POST /api/messages HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\n\
                 Content-Length: {LENGTH}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("send the head");
    let started = Instant::now();
    // A byte at a time: the whole body would take LENGTH * EVERY = 50 s.
    let trickle = tokio::spawn(async move {
        for _ in 0..LENGTH {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(EVERY).await;
        }
    });
    let answer = read_until_closed(&mut reader, Duration::from_secs(40))
        .await
        .expect("the server answers and closes");
    let cut_off = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(answer.contains(r#""field":"body""#), "{answer}");
    assert!(
        cut_off < Duration::from_millis(BODY_TIMEOUT_MS) + Duration::from_secs(10),
        "cut off after {cut_off:?}, not at the body timeout"
    );

    let listed: serde_json::Value = client
        .get(format!("{}/api/messages", herald.base))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["items"], serde_json::json!([]), "nothing stored");

    // The published description says so too.
    let spec: serde_json::Value = client
        .get(format!("{}/api/openapi.json", herald.base))
        .send()
        .await
        .expect("the spec")
        .json()
        .await
        .expect("JSON");
    for (route, operation) in [
        ("/api/messages", "post"),
        ("/api/messages/batch", "post"),
        ("/api/queue/dead-letters/replay", "post"),
        ("/api/queue/dead-letters/replay-jobs", "post"),
    ] {
        let responses = &spec["paths"][route][operation]["responses"];
        assert!(responses.get("408").is_some(), "{route}: {responses}");
    }
    assert!(herald.terminate().success());
}
