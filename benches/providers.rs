//! Each provider transport against a local server that answers as the
//! provider does after 1 ms: deliveries per second at 64 in flight, the
//! way one transport actor drives its transport (one thread). The server
//! runs on a thread of its own. What is measured is Herald's side of a
//! provider call: building and signing the request, the keep-alive
//! connection, reading and classifying the answer, with token and
//! signing work cached as it is in production.
//!
//! Run: `cargo bench --bench providers`. Options via environment:
//! `HERALD_BENCH_DELIVERIES` (default 20000 per kind),
//! `HERALD_BENCH_CONCURRENCY` (64), `HERALD_BENCH_KINDS` (a comma list;
//! default every kind below).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures::StreamExt;
use herald::config::Settings;
use herald::domain::{EnqueueRequest, Message};
use herald::time::{Clock, SystemClock};
use herald::transports::Transport;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Answers every provider's send the way the provider does, after 1 ms.
/// The body is read, as a provider reads it, so the connection stays
/// open for the next request.
async fn answer(req: HttpRequest, _body: web::Bytes) -> HttpResponse {
    actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    let path = req.path();
    if path.starts_with("/3/device/") {
        let id = req
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("00000000-0000-0000-0000-000000000000")
            .to_owned();
        HttpResponse::Ok().insert_header(("apns-id", id)).finish()
    } else if path == "/v2/email/outbound-emails" {
        HttpResponse::Ok().json(serde_json::json!({"MessageId": "ses-0123"}))
    } else if path.ends_with("/messages") && path.starts_with("/v3/") {
        HttpResponse::Ok().json(
            serde_json::json!({"id": "<0123@mg.example.com>", "message": "Queued. Thank you."}),
        )
    } else if path == "/token" {
        HttpResponse::Ok()
            .json(serde_json::json!({"access_token": "ya29.bench", "expires_in": 3600}))
    } else if path.ends_with("/messages:send") {
        HttpResponse::Ok().json(serde_json::json!({"name": "projects/bench/messages/0:1"}))
    } else if path == "/api/chat.postMessage" {
        HttpResponse::Ok()
            .json(serde_json::json!({"ok": true, "channel": "C1", "ts": "1712345678.000200"}))
    } else if path.ends_with("/Messages.json") {
        HttpResponse::Created().json(serde_json::json!({"sid": "SM0123", "status": "queued"}))
    } else if path == "/v3/mail/send" {
        HttpResponse::Accepted()
            .insert_header(("X-Message-Id", "sg-0123"))
            .finish()
    } else if path == "/email" {
        HttpResponse::Ok()
            .json(serde_json::json!({"ErrorCode": 0, "Message": "OK", "MessageID": "pm-0123"}))
    } else {
        HttpResponse::Ok().finish()
    }
}

/// The mock provider on 127.0.0.1, on a thread of its own; its address.
fn start_server() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            // h2c for APNs, HTTP/1.1 for the rest, on one port.
            let server = HttpServer::new(|| App::new().default_service(web::to(answer)))
                .workers(1)
                .backlog(1024)
                .max_connection_rate(4096)
                .bind_auto_h2c("127.0.0.1:0")
                .expect("bind");
            let addr = server.addrs()[0];
            tx.send(format!("http://{addr}")).expect("send the address");
            server.run().await.expect("serve");
        });
    });
    rx.recv().expect("the server's address")
}

/// The kinds measured: name, its config table's keys, and the enqueue
/// body one message of it has.
fn kinds(base: &str, dir: &Path) -> Vec<(&'static str, String, serde_json::Value)> {
    let email = serde_json::json!({
        "channel": "email",
        "email": {"from": "Shop <shop@example.com>", "to": ["alice@example.com"],
                  "subject": "Your receipt", "text": "Thanks for your order.",
                  "html": "<p>Thanks for your order.</p>"}
    });
    vec![
        (
            "webhook",
            format!("url = \"{base}/hook\"\nsecret_env = \"BENCH_SECRET\""),
            serde_json::json!({"channel": "webhook", "webhook": {"payload": {"event": "order.shipped", "order": 42}}}),
        ),
        (
            "twilio",
            format!(
                "account_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token_env = \"BENCH_SECRET\"\nfrom = \"+14155550000\"\nbase_url = \"{base}\""
            ),
            serde_json::json!({"channel": "sms", "sms": {"to": "+14155550100", "body": "Your code is 123456"}}),
        ),
        (
            "slack",
            format!("token_env = \"BENCH_SECRET\"\nbase_url = \"{base}\""),
            serde_json::json!({"channel": "chat", "chat": {"channel": "C0123456789", "text": "Deploy finished"}}),
        ),
        (
            "fcm",
            format!(
                "service_account_file = \"{}\"\nbase_url = \"{base}\"",
                common::keys::service_account(dir, Some(&format!("{base}/token")))
                    .0
                    .display()
            ),
            serde_json::json!({"channel": "push", "push": {"token": "device-token-1", "title": "Shipped", "data": {"order": "42"}}}),
        ),
        (
            "apns",
            format!(
                "key_file = \"{}\"\nkey_id = \"ABC123DEFG\"\nteam_id = \"DEF123GHIJ\"\ntopic = \"com.example.app\"\nbase_url = \"{base}\"",
                common::keys::p256_key(dir).display()
            ),
            serde_json::json!({"channel": "push", "push": {"token": "a1b2c3d4", "title": "Shipped", "data": {"order": "42"}}}),
        ),
        (
            "sendgrid",
            format!("api_key_env = \"BENCH_SECRET\"\nbase_url = \"{base}\""),
            email.clone(),
        ),
        (
            "postmark",
            format!("server_token_env = \"BENCH_SECRET\"\nbase_url = \"{base}\""),
            email.clone(),
        ),
        (
            "mailgun",
            format!(
                "domain = \"mg.example.com\"\napi_key_env = \"BENCH_SECRET\"\nbase_url = \"{base}\""
            ),
            email.clone(),
        ),
        (
            "ses",
            format!(
                "region = \"eu-west-1\"\naccess_key_id_env = \"BENCH_KEY_ID\"\nsecret_access_key_env = \"BENCH_SECRET\"\nendpoint = \"{base}\""
            ),
            email,
        ),
    ]
}

/// `body`, enqueued through `transport` as the API would, as the engine
/// hands it to the transport.
fn message(settings: &Settings, transport: &str, mut body: serde_json::Value) -> Message {
    body["transport"] = serde_json::json!(transport);
    let request: EnqueueRequest = serde_json::from_value(body).expect("an enqueue body");
    let now = SystemClock.now();
    let new = request
        .into_new_message(&settings.enqueue_policy(), now)
        .expect("a valid message");
    common::as_claimed(new, now)
}

/// Deliveries per second of `count` messages, `concurrency` at a time,
/// and the slowest of the fastest 99 %.
async fn drive(
    transport: &Arc<dyn Transport>,
    messages: &[Message],
    concurrency: usize,
) -> (f64, Duration) {
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(messages)
        .map(|m| {
            let transport = transport.clone();
            async move {
                let at = Instant::now();
                transport.deliver(m).await.expect("delivered");
                at.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let rate = messages.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    (rate, p99)
}

fn main() {
    let count = env_or("HERALD_BENCH_DELIVERIES", 20_000) as usize;
    let concurrency = env_or("HERALD_BENCH_CONCURRENCY", 64) as usize;
    let only: Option<Vec<String>> = std::env::var("HERALD_BENCH_KINDS")
        .ok()
        .map(|v| v.split(',').map(|k| k.trim().to_owned()).collect());
    let base = start_server();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!("{count} deliveries per kind, {concurrency} in flight, 1 ms answers");
    println!("{:<10} {:>12} {:>10}", "kind", "deliveries/s", "p99 ms");
    for (kind, keys, body) in kinds(&base, dir.path()) {
        if only.as_ref().is_some_and(|o| !o.iter().any(|k| k == kind)) {
            continue;
        }
        let config = format!("[transports.bench]\nkind = \"{kind}\"\n{keys}\n");
        let settings = Settings::from_toml(&config, Path::new("bench.toml"), |var| match var {
            "BENCH_SECRET" => Some("bench-secret-0123456789".to_owned()),
            "BENCH_KEY_ID" => Some("AKIDEXAMPLE".to_owned()),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let messages: Vec<Message> = (0..count)
            .map(|_| message(&settings, "bench", body.clone()))
            .collect();
        runtime.block_on(async {
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let transport = herald::transports::build_all(&settings.transports, clock)
                .expect("the transport builds")
                .remove("bench")
                .expect("the transport")
                .transport;
            // Connections opened and tokens fetched first, as in a running node.
            drive(&transport, &messages[..concurrency * 4], concurrency).await;
            let (rate, p99) = drive(&transport, &messages, concurrency).await;
            println!(
                "{kind:<10} {rate:>12.0} {:>10.2}",
                p99.as_secs_f64() * 1000.0
            );
        });
    }
}
