//! Delivery through the whole engine with real transports and real
//! servers: a webhook receiver and a provider API (wiremock) and an SMTP server
//! (mailin-embedded), on both storage backends.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Fixture;
use herald::config::Settings;
use herald::domain::{EnqueueRequest, EventKind, MessageWithEvents, Stamp, Status};
use herald::engine::{Engine, EngineOptions};
use herald::storage::Storage;
use herald::time::{Clock, SystemClock};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn settings(storage_url: &str, transports: &str) -> Arc<Settings> {
    let text = format!(
        "[storage]\nurl = \"{storage_url}\"\n\n[defaults]\nretry_delay_ms = 100\nmax_retry_delay_ms = 500\n\n{transports}"
    );
    Arc::new(
        Settings::from_toml(&text, Path::new("test.toml"), |var| {
            (var == "TEST_PROVIDER_TOKEN").then(|| "provider-token".to_owned())
        })
        .expect("valid test settings"),
    )
}

/// One webhook transport, `hooks`, posting to `server`.
fn hooks_settings(f: &Fixture, server: &MockServer) -> Arc<Settings> {
    settings(
        &f.options.url,
        &format!(
            "[transports.hooks]\nkind = \"webhook\"\nurl = \"{}/hook\"\n",
            server.uri()
        ),
    )
}

async fn start(f: &Fixture, settings: Arc<Settings>) -> Engine {
    herald::transports::install_crypto_provider();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let transports =
        herald::transports::build_all(&settings.transports, clock.clone()).expect("transports");
    let options = EngineOptions {
        poll_interval: Duration::from_millis(50),
        ..EngineOptions::default()
    };
    Engine::start(f.storage.clone(), clock, settings, transports, options)
        .await
        .expect("engine starts")
}

/// Enqueues through the same validation the API uses.
async fn enqueue(storage: &dyn Storage, settings: &Settings, body: serde_json::Value) -> Stamp {
    let request: EnqueueRequest = serde_json::from_value(body).expect("a valid body");
    let now = SystemClock.now();
    let message = request
        .into_new_message(&settings.enqueue_policy(), now)
        .expect("valid message");
    storage.enqueue(message, now).await.expect("enqueue").id
}

fn webhook(transport: &str) -> serde_json::Value {
    serde_json::json!({ "channel": "webhook", "transport": transport, "webhook": { "payload": { "text": "deploy finished" } } })
}

async fn settled(storage: &dyn Storage, id: Stamp) -> MessageWithEvents {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = storage.get_message(id).await.expect("get").expect("exists");
        if matches!(stored.message.status, Status::Sent | Status::Dead) {
            return stored;
        }
        assert!(
            Instant::now() < deadline,
            "message {id} did not settle: {:?}",
            stored.message.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kinds(stored: &MessageWithEvents) -> Vec<EventKind> {
    stored.events.iter().map(|e| e.kind).collect()
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[actix::test] async fn $name() { super::$name(crate::common::Fixture::sqlite().await).await; } )*
        }
        mod postgres {
            $( #[actix::test] async fn $name() { super::$name(crate::common::Fixture::postgres().await).await; } )*
        }
    };
}

on_both_backends!(
    a_webhook_failing_twice_then_succeeding_is_one_message_with_three_attempts,
    a_webhook_4xx_dead_letters_at_once,
    a_429_retry_after_delays_the_next_attempt,
    failover_moves_delivery_to_the_healthy_member,
    emails_reach_a_real_smtp_server_with_their_stamp,
    operators_see_and_control_transports_over_http,
    an_alert_fires_once_through_a_transport_and_resolves,
    a_provider_s_id_is_kept_and_a_recipient_who_said_stop_is_dead_lettered_so,
);

/// Twilio through the engine: the message SID lands on the `sent` event
/// and finds the message again; a STOP (21610) dead-letters at once with
/// the reason suppression reads.
async fn a_provider_s_id_is_kept_and_a_recipient_who_said_stop_is_dead_lettered_so(f: Fixture) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("To=%2B14155550100"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": "SM00000000000000000000000000000001", "status": "queued"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("To=%2B14155550199"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400
        })))
        .mount(&server)
        .await;
    let settings = settings(
        &f.options.url,
        &format!(
            "[transports.texts]\nkind = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
             auth_token_env = \"TEST_PROVIDER_TOKEN\"\nfrom = \"+14155550000\"\nbase_url = \"{}\"\n",
            server.uri()
        ),
    );
    let engine = start(&f, settings.clone()).await;
    let sms = |to: &str| serde_json::json!({"channel": "sms", "transport": "texts", "sms": {"to": to, "body": "Your code is 1234"}});
    let sent = enqueue(f.storage.as_ref(), &settings, sms("+14155550100")).await;
    let stopped = enqueue(f.storage.as_ref(), &settings, sms("+14155550199")).await;

    let stored = settled(f.storage.as_ref(), sent).await;
    assert_eq!(stored.message.status, Status::Sent);
    let event = stored
        .events
        .iter()
        .find(|e| e.kind == EventKind::Sent)
        .expect("a sent event");
    assert_eq!(
        event.detail,
        Some(serde_json::json!({"provider_message_id": "SM00000000000000000000000000000001"}))
    );
    assert_eq!(
        f.storage
            .find_by_provider_id("texts", "SM00000000000000000000000000000001")
            .await
            .expect("find"),
        Some(sent)
    );

    let dead = settled(f.storage.as_ref(), stopped).await;
    assert_eq!(dead.message.status, Status::Dead);
    assert_eq!(dead.message.attempts, 1, "never retried");
    let last = dead.events.last().expect("events");
    assert_eq!(last.kind, EventKind::DeadLettered);
    assert_eq!(
        last.detail,
        Some(serde_json::json!({"reason": "recipient_unsubscribed"}))
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn a_webhook_failing_twice_then_succeeding_is_one_message_with_three_attempts(f: Fixture) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&server)
        .await;
    let settings = hooks_settings(&f, &server);
    let engine = start(&f, settings.clone()).await;
    let id = enqueue(f.storage.as_ref(), &settings, webhook("hooks")).await;

    let stored = settled(f.storage.as_ref(), id).await;
    assert_eq!(stored.message.status, Status::Sent);
    assert_eq!(stored.message.attempts, 3);
    let failures = stored
        .events
        .iter()
        .filter(|e| e.kind == EventKind::AttemptFailed)
        .count();
    assert_eq!(failures, 2, "{:?}", kinds(&stored));
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 3);
    for request in &requests {
        let stamp = request
            .headers
            .get("x-herald-stamp")
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            stamp,
            Some(id.to_string().as_str()),
            "every attempt carries the same stamp"
        );
    }
    let listed = f
        .storage
        .list_messages(
            &Default::default(),
            herald::storage::PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(
        listed.items.len(),
        1,
        "retries are events, never new messages"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn a_webhook_4xx_dead_letters_at_once(f: Fixture) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422))
        .mount(&server)
        .await;
    let settings = hooks_settings(&f, &server);
    let engine = start(&f, settings.clone()).await;
    let id = enqueue(f.storage.as_ref(), &settings, webhook("hooks")).await;
    let stored = settled(f.storage.as_ref(), id).await;
    assert_eq!(stored.message.status, Status::Dead);
    assert_eq!(
        stored.message.attempts, 1,
        "a permanent failure is not retried"
    );
    assert_eq!(kinds(&stored).last(), Some(&EventKind::DeadLettered));
    assert!(
        stored
            .message
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("422"))
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn a_429_retry_after_delays_the_next_attempt(f: Fixture) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&server)
        .await;
    let settings = hooks_settings(&f, &server);
    let engine = start(&f, settings.clone()).await;
    let id = enqueue(f.storage.as_ref(), &settings, webhook("hooks")).await;
    let stored = settled(f.storage.as_ref(), id).await;
    assert_eq!(stored.message.status, Status::Sent);
    let failed_at = stored
        .events
        .iter()
        .find(|e| e.kind == EventKind::AttemptFailed)
        .expect("a failed attempt")
        .at;
    let second_claim = stored
        .events
        .iter()
        .find(|e| e.kind == EventKind::Sent)
        .and_then(|e| e.started_at)
        .expect("the second attempt's start, on its `sent` event");
    // retry_delay_ms is 100: only the Retry-After explains a wait near
    // 2 s. The failure event is stamped when the tracker writes it, a few
    // ms after the attempt the Retry-After counts from.
    assert!(
        second_claim - failed_at >= chrono::Duration::milliseconds(1750),
        "retried after {:?}",
        second_claim - failed_at
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn failover_moves_delivery_to_the_healthy_member(f: Fixture) {
    let broken = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&broken)
        .await;
    let healthy = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&healthy)
        .await;
    let transports = format!(
        "[transports.primary]\nkind = \"webhook\"\nurl = \"{}/hook\"\n\n[transports.backup]\nkind = \"webhook\"\nurl = \"{}/hook\"\n\n[transports.alerts]\nkind = \"failover\"\nmembers = [\"primary\", \"backup\"]\n",
        broken.uri(),
        healthy.uri()
    );
    let settings = settings(&f.options.url, &transports);
    let engine = start(&f, settings.clone()).await;
    let id = enqueue(f.storage.as_ref(), &settings, webhook("alerts")).await;
    let stored = settled(f.storage.as_ref(), id).await;
    assert_eq!(stored.message.status, Status::Sent);
    assert_eq!(
        stored.message.transport, "alerts",
        "the message keeps its transport"
    );
    let sent = stored
        .events
        .iter()
        .find(|e| e.kind == EventKind::Sent)
        .expect("sent event");
    assert_eq!(
        sent.transport.as_deref(),
        Some("backup"),
        "the event names the member used"
    );
    assert_eq!(healthy.received_requests().await.map(|r| r.len()), Some(1));
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn emails_reach_a_real_smtp_server_with_their_stamp(f: Fixture) {
    let smtp = common::smtp::smtp_server(None);
    let transports = format!(
        "[transports.smtp-main]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        smtp.port
    );
    let settings = settings(&f.options.url, &transports);
    let engine = start(&f, settings.clone()).await;
    let mut ids = BTreeMap::new();
    for i in 0..3 {
        let body = serde_json::json!({
            "channel": "email", "transport": "smtp-main",
            "email": { "from": "shop@example.com", "to": [format!("user{i}@example.com")], "subject": format!("Receipt {i}"), "text": "Thanks" }
        });
        let id = enqueue(f.storage.as_ref(), &settings, body).await;
        ids.insert(format!("<user{i}@example.com>"), id);
    }
    for id in ids.values() {
        assert_eq!(
            settled(f.storage.as_ref(), *id).await.message.status,
            Status::Sent
        );
    }
    let received = smtp.received();
    assert_eq!(received.len(), 3);
    for mail in received {
        let to = mail.to.first().cloned().unwrap_or_default();
        let id = ids
            .get(&to)
            .or_else(|| ids.get(&format!("<{to}>")))
            .unwrap_or_else(|| panic!("unexpected recipient {to}"));
        assert_eq!(mail.header("X-Stamp-ID"), Some(id.to_string()));
        assert_eq!(mail.header("X-Tracking-ID"), Some(id.to_string()));
    }
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn operators_see_and_control_transports_over_http(f: Fixture) {
    use actix_web::test;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let settings = hooks_settings(&f, &server);
    let engine = start(&f, settings.clone()).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = herald::http::AppState::new(f.storage.clone(), clock, settings.clone())
        .with_engine(engine.clone());
    let app = test::init_service(
        actix_web::App::new()
            .app_data(actix_web::web::Data::new(state))
            .configure(herald::http::configure),
    )
    .await;
    let get = |uri: &str| test::TestRequest::get().uri(uri).to_request();
    let post = |uri: &str| test::TestRequest::post().uri(uri).to_request();

    let listed: serde_json::Value =
        test::call_and_read_body_json(&app, get("/api/transports")).await;
    let hooks = &listed["transports"][0];
    assert_eq!(
        (hooks["name"].as_str(), hooks["kind"].as_str()),
        (Some("hooks"), Some("webhook"))
    );
    assert_eq!(
        (hooks["paused"].as_bool(), hooks["circuit"].as_str()),
        (Some(false), Some("closed"))
    );
    assert_eq!(hooks["rate_limit"], 600);

    let paused: serde_json::Value =
        test::call_and_read_body_json(&app, post("/api/transports/hooks/pause")).await;
    assert_eq!(paused["paused"], true);
    let id = enqueue(f.storage.as_ref(), &settings, webhook("hooks")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed: serde_json::Value =
        test::call_and_read_body_json(&app, get("/api/transports")).await;
    assert_eq!(
        listed["transports"][0]["depth"], 1,
        "paused: the message waits"
    );
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(0));
    let resumed: serde_json::Value =
        test::call_and_read_body_json(&app, post("/api/transports/hooks/resume")).await;
    assert_eq!(resumed["paused"], false);
    assert_eq!(
        settled(f.storage.as_ref(), id).await.message.status,
        Status::Sent
    );
    let missing = test::call_service(&app, post("/api/transports/nope/pause")).await;
    assert_eq!(missing.status(), 404);

    let metrics = test::call_service(&app, get("/metrics")).await;
    assert_eq!(metrics.status(), 200);
    let text = String::from_utf8(test::read_body(metrics).await.to_vec()).expect("utf-8");
    // Counters are per process, shared with the other tests that deliver
    // through a transport named `hooks`: this test's delivery is in them.
    for series in [
        "herald_deliveries_total{transport=\"hooks\",channel=\"webhook\",outcome=\"sent\"}",
        "herald_delivery_duration_seconds_count{transport=\"hooks\"}",
    ] {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(value >= Some(1.0), "`{series}` is {value:?} in:\n{text}");
    }
    for line in [
        "herald_circuit_state{transport=\"hooks\",state=\"closed\"} 1",
        "herald_transport_paused{transport=\"hooks\"} 0",
        "# TYPE herald_queue_depth gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    let ready: serde_json::Value = test::call_and_read_body_json(&app, get("/health/ready")).await;
    assert_eq!(ready["checks"]["transports"]["status"], "ok", "{ready}");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The requests `server` received on `path`, as JSON, with their stamps.
async fn received_on(server: &MockServer, path: &str) -> Vec<(serde_json::Value, String)> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == path)
        .map(|r| {
            let stamp = r
                .headers
                .get("x-herald-stamp")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (r.body_json().expect("a JSON body"), stamp)
        })
        .collect()
}

/// Waits (generously: not a performance assertion) until `check` answers.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole server (engine, alerter, HTTP) with a queue-depth rule on a
/// paused transport; the notices go through a webhook transport to a real
/// receiver.
async fn an_alert_fires_once_through_a_transport_and_resolves(f: Fixture) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[storage]
url = "{storage}"

[engine]
poll_interval_ms = 50

[transports.pager]
kind = "webhook"
url = "{uri}/alerts"

[transports.hooks]
kind = "webhook"
url = "{uri}/hook"

[alerts]
transport = "pager"
evaluate_every_s = 1
cooldown_s = 3600

[[alerts.rules]]
name = "backlog"
kind = "queue_depth"
transport = "hooks"
threshold = 2
"#,
        storage = f.options.url,
        uri = receiver.uri()
    );
    let settings =
        Settings::from_toml(&text, Path::new("test.toml"), |_| None).expect("valid settings");
    let options = herald::app::StartOptions {
        handle_signals: false,
    };
    let running = herald::app::start(settings, options)
        .await
        .expect("the server starts");
    let base = format!("http://{}", running.addrs()[0]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let response = client.get(url).send().await.expect("answered");
            let status = response.status().as_u16();
            (
                status,
                response.json::<serde_json::Value>().await.expect("JSON"),
            )
        }
    };
    let post = |path: &str, body: Option<serde_json::Value>| {
        let mut request = client.post(format!("{base}{path}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.expect("answered").status().as_u16() }
    };

    assert_eq!(post("/api/transports/hooks/pause", None).await, 200);
    for _ in 0..3 {
        assert_eq!(post("/api/messages", Some(webhook("hooks"))).await, 202);
    }

    // Three queued on `hooks`, above the threshold of 2: one notice.
    let fired = until("the fired notice arrives", || async {
        received_on(&receiver, "/alerts").await.into_iter().next()
    })
    .await;
    let (notice, stamp) = fired;
    assert_eq!(notice["alert"]["notice"], "fired");
    assert_eq!(notice["alert"]["rule"], "backlog");
    assert_eq!(notice["alert"]["transport"], "hooks");
    assert_eq!(notice["alert"]["value"], 3.0);
    assert_eq!(notice["alert"]["threshold"], 2.0);
    // The notice's id is recorded on the incident once its enqueue has
    // answered, so the notice may arrive a moment before.
    let incident = until("the incident names its notice", || async {
        let (status, active) = get("/api/alerts?state=active".into()).await;
        assert_eq!(status, 200);
        let incident = active["alerts"][0].clone();
        (!incident["fired_message_id"].is_null()).then_some(incident)
    })
    .await;
    assert_eq!(incident["rule"], "backlog");
    assert_eq!(incident["state"], "active");
    assert_eq!(
        incident["fired_message_id"],
        stamp.as_str(),
        "the notice is tracked"
    );
    let (_, tracked) = get(format!("/api/messages/{stamp}")).await;
    assert_eq!(tracked["category"], "alert");
    let tracked = until("the notice is recorded as sent", || async {
        let (_, message) = get(format!("/api/messages/{stamp}")).await;
        (message["status"] == "sent").then_some(message)
    })
    .await;
    assert_eq!(tracked["transport"], "pager");

    // Still above the threshold for two more evaluations: no second notice.
    let fired_at = incident["fired_at"].as_str().expect("fired_at").to_owned();
    let fired_at = chrono::DateTime::parse_from_rfc3339(&fired_at).expect("RFC 3339");
    until("two more evaluations", || async {
        let (_, active) = get("/api/alerts?state=active".into()).await;
        let checked_at = active["alerts"][0]["checked_at"].as_str()?.to_owned();
        let checked_at = chrono::DateTime::parse_from_rfc3339(&checked_at).ok()?;
        (checked_at - fired_at >= chrono::Duration::seconds(2)).then_some(())
    })
    .await;
    assert_eq!(
        received_on(&receiver, "/alerts").await.len(),
        1,
        "one incident, one alert"
    );

    // The backlog drains: the incident resolves and says so, once.
    assert_eq!(post("/api/transports/hooks/resume", None).await, 200);
    let resolved = until("the resolve notice arrives", || async {
        received_on(&receiver, "/alerts").await.into_iter().nth(1)
    })
    .await;
    let (notice, resolve_stamp) = resolved;
    assert_eq!(notice["alert"]["notice"], "resolved");
    assert_eq!(notice["alert"]["id"], incident["id"]);
    assert_eq!(notice["alert"]["value"], 0.0);
    assert!(
        notice["alert"]["duration_s"]
            .as_i64()
            .is_some_and(|d| d >= 2)
    );
    assert_eq!(received_on(&receiver, "/hook").await.len(), 3);

    let (_, active) = get("/api/alerts?state=active".into()).await;
    assert_eq!(active["alerts"], serde_json::json!([]));
    // As for the fired notice, the id follows the notice's enqueue.
    let resolved = until("the incident names its resolve notice", || async {
        let (_, resolved) = get("/api/alerts?state=resolved&limit=10".into()).await;
        (!resolved["alerts"][0]["resolved_message_id"].is_null()).then_some(resolved)
    })
    .await;
    assert_eq!(resolved["alerts"][0]["id"], incident["id"]);
    assert_eq!(resolved["alerts"][0]["state"], "resolved");
    assert_eq!(
        resolved["alerts"][0]["resolved_message_id"],
        resolve_stamp.as_str()
    );
    let (status, refused) = get("/api/alerts?state=sleeping".into()).await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["field"], "state");

    running.shutdown().await.expect("stops cleanly");
}
