//! The HTTP API through real HTTP: the app built by the same
//! `http::configure` that `main` uses, on a real store (every test runs on
//! SQLite and on PostgreSQL), plus tests over a real socket.

#[path = "../common/mod.rs"]
mod common;
mod console;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::{App, HttpServer, test, web};
use common::proxy::Proxy;
use common::{Fixture, t0};
use herald::config::Settings;
use herald::domain::{Stamp, Status};
use herald::http::{self, AppState};
use herald::storage::{MessageFilter, MinuteMetrics, Outcome, OutcomeKind, PageRequest, Storage};
use herald::time::{Clock, ManualClock};
use serde_json::{Value, json};

const ENQUEUE_KEY: &str = "enqueue-key-0123456789";
const READ_KEY: &str = "read-key-0123456789";
const ADMIN_KEY: &str = "admin-key-0123456789";
const ALL_KEY: &str = "all-roles-key-0123456789";
const MAX_BODY: usize = 1024 * 1024;
const LEASE: Duration = Duration::from_secs(30);

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $name() {
                    let fixture = crate::common::Fixture::sqlite().await;
                    super::$name(&fixture).await;
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $name() {
                    let fixture = crate::common::Fixture::postgres().await;
                    super::$name(&fixture).await;
                }
            )*
        }
    };
}

on_both_backends!(
    enqueue_answers_202_and_the_message_reads_back_with_its_events,
    an_idempotency_key_answers_200_with_the_same_message_and_one_row,
    a_batch_stores_every_message_and_answers_per_item,
    a_batch_with_an_invalid_message_stores_nothing_and_names_it,
    invalid_enqueue_bodies_are_refused_naming_the_field_and_store_nothing,
    oversized_bodies_are_413_and_non_json_bodies_415,
    reading_one_message_refuses_bad_ids_and_parameters,
    listing_pages_without_gaps_or_duplicates,
    listing_filters_and_refuses_bad_parameters_by_name,
    cancel_applies_to_queued_messages_only,
    retry_replays_a_dead_message_under_the_same_id,
    dead_letters_are_listed_and_replayed_in_bulk,
    messages_filter_and_count_by_key_category_and_creation_time,
    dead_letters_group_by_error_class_and_replay_by_filter,
    a_replay_job_replays_every_match_of_its_filter_and_reports_progress,
    a_replay_job_left_running_by_a_dead_process_is_resumed,
    every_route_needs_its_role_when_keys_are_configured,
    without_keys_the_api_is_open,
    queue_analytics_report_known_traffic_exactly,
    message_flow_and_bottlenecks_report_known_traffic_exactly,
    analytics_filter_by_channel_and_category,
    failures_and_transport_performance_report_known_traffic_exactly,
    deliverability_reports_known_feedback_exactly,
    a_steady_rate_reads_the_same_at_any_moment_of_the_minute,
    quantiles_of_a_fast_transport_stay_apart,
    a_transport_held_by_its_rate_limit_is_named_in_its_first_minute,
    a_wrong_method_is_405_naming_the_allowed_ones,
    alerts_are_listed_by_state_and_bad_parameters_named,
    a_push_to_tokens_makes_a_message_per_token_once,
);

/// Transports `mail` and `other` (file, email), `hooks` (webhook, with an
/// allow-list for per-message URLs); email and sms have routes.
fn settings(with_keys: bool) -> Settings {
    settings_with(with_keys, "")
}

/// [`settings`] with the transports' tables `extra` besides.
fn settings_with(with_keys: bool, extra: &str) -> Settings {
    let keys = if with_keys {
        format!(
            r#"
            [[api_keys]]
            key = "{ENQUEUE_KEY}"
            roles = ["enqueue"]
            [[api_keys]]
            key = "{READ_KEY}"
            roles = ["read"]
            [[api_keys]]
            key = "{ADMIN_KEY}"
            roles = ["admin"]
            [[api_keys]]
            key = "{ALL_KEY}"
            roles = ["enqueue", "read", "admin"]
            "#
        )
    } else {
        String::new()
    };
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:8080"
        max_body_bytes = {MAX_BODY}
        {keys}
        [transports.mail]
        kind = "file"
        path = "outbox"
        cost_per_message = 0.002
        [transports.other]
        kind = "file"
        path = "outbox-other"
        [transports.hooks]
        kind = "webhook"
        url = "http://127.0.0.1:9/notify"
        allowed_url_hosts = ["hooks.example.com"]
        {extra}
        [routes]
        email = "mail"
        sms = "hooks"
        webhook = "hooks"
        "#
    );
    Settings::from_toml(&toml, std::path::Path::new("test.toml"), |_| None)
        .expect("the test config is valid")
}

fn state(fixture: &Fixture, settings: Settings) -> (web::Data<AppState>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let state = AppState::new(
        fixture.storage.clone(),
        clock.clone() as Arc<dyn Clock>,
        Arc::new(settings),
    );
    (web::Data::new(state), clock)
}

/// The app under test, and the store and clock behind it.
struct Api<S> {
    app: S,
    storage: Arc<dyn Storage>,
    clock: Arc<ManualClock>,
    /// Sent as the bearer key unless a request says otherwise.
    key: Option<&'static str>,
}

/// A response: status, headers and the body as JSON (`Null` when empty or
/// not JSON).
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: header::HeaderMap,
    body: Value,
}

impl Reply {
    fn field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

async fn api(
    fixture: &Fixture,
    with_keys: bool,
) -> Api<
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
> {
    api_on(fixture, with_keys, settings(with_keys)).await
}

async fn api_on(
    fixture: &Fixture,
    with_keys: bool,
    settings: Settings,
) -> Api<
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
> {
    let (state, clock) = state(fixture, settings);
    let app = test::init_service(App::new().app_data(state).configure(http::configure)).await;
    Api {
        app,
        storage: fixture.storage.clone(),
        clock,
        key: with_keys.then_some(ALL_KEY),
    }
}

impl<S, B> Api<S>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    async fn send(&self, request: test::TestRequest) -> Reply {
        let request = match self.key {
            Some(key) => request.insert_header((header::AUTHORIZATION, format!("Bearer {key}"))),
            None => request,
        };
        self.send_as_is(request).await
    }

    async fn send_as_is(&self, request: test::TestRequest) -> Reply {
        let response = test::call_service(&self.app, request.to_request()).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = test::read_body(response).await;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(test::TestRequest::get().uri(uri)).await
    }

    async fn post(&self, uri: &str, body: &Value) -> Reply {
        self.send(test::TestRequest::post().uri(uri).set_json(body))
            .await
    }

    async fn post_raw(&self, uri: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.send(
            test::TestRequest::post()
                .uri(uri)
                .insert_header((header::CONTENT_TYPE, content_type))
                .set_payload(body.into()),
        )
        .await
    }

    /// Enqueues `body`, expecting 202; returns the id.
    async fn enqueue(&self, body: &Value) -> Stamp {
        let reply = self.post("/api/messages", body).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        reply.body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("an id")
    }

    /// Every stored message, counted through the storage listing.
    async fn stored(&self) -> usize {
        stored(self.storage.as_ref()).await
    }

    /// Claims every due `transport` message and fails it permanently.
    async fn kill_all(&self, transport: &str) {
        self.kill_all_with(transport, "550 no such user").await;
    }

    /// [`Api::kill_all`] with this error.
    async fn kill_all_with(&self, transport: &str, error: &str) {
        let now = self.clock.now();
        let claimed = self
            .storage
            .claim_due(transport, common::NODE, 1000, LEASE, now)
            .await
            .expect("claim");
        let outcomes = claimed
            .iter()
            .map(|m| {
                let kind = OutcomeKind::Failed {
                    error: error.into(),
                    retry_at: None,
                };
                Outcome {
                    duration_ms: Some(5),
                    error_class: Some("rejected".into()),
                    ..Outcome::new(m, m.claim_token.expect("a token"), kind)
                }
            })
            .collect();
        self.storage
            .record_outcomes(outcomes, now)
            .await
            .expect("record");
    }
}

async fn stored(storage: &dyn Storage) -> usize {
    let mut count = 0;
    let mut after = None;
    loop {
        let page = storage
            .list_messages(
                &MessageFilter::default(),
                PageRequest { after, limit: 1000 },
            )
            .await
            .expect("list");
        count += page.items.len();
        match page.next {
            Some(next) => after = Some(next),
            None => return count,
        }
    }
}

fn email(subject: &str) -> Value {
    json!({
        "channel": "email",
        "email": {
            "from": "Shop <shop@example.com>",
            "to": ["alice@example.com"],
            "subject": subject,
            "text": "Thanks for your order."
        }
    })
}

fn email_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = email("Receipt");
    edit(&mut body);
    body
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// A push provider's transport `phones` (FCM, with a key made for the
/// test), besides the others.
fn with_push_provider(dir: &std::path::Path) -> Settings {
    let (account, _) = common::keys::service_account(dir, None);
    settings_with(
        false,
        &format!(
            "[transports.phones]\nkind = \"fcm\"\nservice_account_file = \"{}\"\n",
            account.display()
        ),
    )
}

async fn a_push_to_tokens_makes_a_message_per_token_once(f: &Fixture) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let api = api_on(f, false, with_push_provider(dir.path())).await;
    let body = json!({
        "channel": "push", "transport": "phones", "idempotency_key": "order-42-shipped",
        "push": {"tokens": ["device-a", "device-b", "device-c"], "title": "Shipped"}
    });
    let reply = api.post("/api/messages", &body).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let made = reply.body["messages"]
        .as_array()
        .expect("the messages")
        .clone();
    assert_eq!(made.len(), 3);
    assert_eq!(reply.body["id"], made[0]["id"]);
    for (message, token) in made.iter().zip(["device-a", "device-b", "device-c"]) {
        let id = message["id"].as_str().expect("an id");
        let stored = api
            .get(&format!("/api/messages/{id}?include=payload"))
            .await;
        assert_eq!(stored.body["payload"]["token"], token, "{}", stored.body);
        assert_eq!(stored.body["payload"]["title"], "Shipped");
    }
    let again = api.post("/api/messages", &body).await;
    assert_eq!(
        again.status, 200,
        "a repeat makes none again: {}",
        again.body
    );
    assert_eq!(again.body["messages"], json!(made));
    assert_eq!(stored(f.storage.as_ref()).await, 3);

    // In a batch, each token's message answers under the request's index.
    let batch = json!({"messages": [
        {"channel": "push", "transport": "phones", "push": {"tokens": ["d1", "d2"], "body": "Hi"}},
        {"channel": "push", "transport": "phones", "push": {"token": "d3", "body": "Hi"}},
    ]});
    let reply = api.post("/api/messages/batch", &batch).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let indexes: Vec<u64> = reply.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["index"].as_u64().expect("an index"))
        .collect();
    assert_eq!(indexes, [0, 0, 1]);

    for (push, field) in [
        (json!({"tokens": [], "title": "x"}), "push.tokens"),
        (
            json!({"tokens": ["ok", "not a token"], "title": "x"}),
            "push.tokens[1]",
        ),
        (
            json!({"token": "a", "tokens": ["b"], "title": "x"}),
            "push.token",
        ),
    ] {
        let reply = api
            .post(
                "/api/messages",
                &json!({"channel": "push", "transport": "phones", "push": push}),
            )
            .await;
        assert_eq!(reply.status, 422, "{}", reply.body);
        assert_eq!(reply.body["error"]["field"], field, "{}", reply.body);
    }
    assert_eq!(
        stored(f.storage.as_ref()).await,
        6,
        "refused requests store nothing"
    );
}

async fn enqueue_answers_202_and_the_message_reads_back_with_its_events(f: &Fixture) {
    let api = api(f, true).await;
    let mut body = email("Your receipt");
    body["category"] = json!("receipt");
    body["metadata"] = json!({"tenant": "acme"});
    let reply = api.post("/api/messages", &body).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let id = reply.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(reply.body["status"], "queued");
    let fingerprint = reply.body["fingerprint"].as_str().expect("a fingerprint");
    assert_eq!(fingerprint.len(), 64);
    let keys: HashSet<&str> = reply
        .body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, HashSet::from(["id", "status", "fingerprint"]));

    let message = api.get(&format!("/api/messages/{id}")).await;
    assert_eq!(message.status, 200, "{}", message.body);
    let m = &message.body;
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["channel"], "email");
    assert_eq!(m["transport"], "mail", "the channel's route decides");
    assert_eq!(m["category"], "receipt");
    assert_eq!(m["status"], "queued");
    assert_eq!(m["priority"], 4);
    assert_eq!(
        (m["attempts"].clone(), m["max_attempts"].clone()),
        (json!(0), json!(4))
    );
    assert_eq!(m["fingerprint"], fingerprint);
    assert_eq!(m["idempotency_key"], Value::Null);
    assert_eq!(m["metadata"], json!({"tenant": "acme"}));
    assert_eq!(m["created_at"], "2026-01-01T00:00:00.000Z");
    assert_eq!(m["available_at"], "2026-01-01T00:00:00.000Z");
    assert_eq!(m["sent_at"], Value::Null);
    assert_eq!(m["last_error"], Value::Null);
    assert!(m.get("payload").is_none(), "payload only on request");
    assert!(m.get("claim_token").is_none() && m.get("lease_until").is_none());
    let events = m["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["kind"], "queued");
    assert_eq!(events[0]["at"], "2026-01-01T00:00:00.000Z");
    for key in [
        "attempt",
        "transport",
        "started_at",
        "duration_ms",
        "error",
        "detail",
    ] {
        assert!(events[0].get(key).is_some(), "event field {key}");
    }
    assert_eq!(events[0]["started_at"], Value::Null, "no attempt yet");

    let with_payload = api
        .get(&format!("/api/messages/{id}?include=payload"))
        .await;
    assert_eq!(with_payload.status, 200);
    assert_eq!(with_payload.body["payload"]["subject"], "Your receipt");
    assert_eq!(
        with_payload.body["payload"]["to"],
        json!(["alice@example.com"])
    );
    // Stored without the fields left at their default, shown with them.
    for (key, default) in [
        ("cc", json!([])),
        ("bcc", json!([])),
        ("reply_to", Value::Null),
        ("html", Value::Null),
        ("headers", json!({})),
        ("attachments", json!([])),
    ] {
        assert_eq!(
            with_payload.body["payload"].get(key),
            Some(&default),
            "{key}"
        );
    }
    assert_eq!(api.stored().await, 1);
}

async fn an_idempotency_key_answers_200_with_the_same_message_and_one_row(f: &Fixture) {
    let api = api(f, true).await;
    let body = email_with(|b| b["idempotency_key"] = json!("order-42-receipt"));
    let first = api.post("/api/messages", &body).await;
    assert_eq!(first.status, 202, "{}", first.body);
    api.clock.advance(chrono::Duration::seconds(5));
    let second = api.post("/api/messages", &body).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(
        first.body, second.body,
        "the same id, status and fingerprint"
    );
    assert_eq!(api.stored().await, 1);

    let other_key = email_with(|b| b["idempotency_key"] = json!("order-43-receipt"));
    assert_eq!(api.post("/api/messages", &other_key).await.status, 202);
    assert_eq!(api.stored().await, 2);
}

async fn a_batch_stores_every_message_and_answers_per_item(f: &Fixture) {
    let api = api(f, true).await;
    let messages: Vec<Value> = (0..3)
        .map(|i| {
            email_with(|b| {
                b["email"]["subject"] = json!(format!("Message {i}"));
                b["idempotency_key"] = json!(format!("batch-{i}"));
            })
        })
        .collect();
    let reply = api
        .post("/api/messages/batch", &json!({ "messages": messages }))
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let results = reply.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i);
        assert_eq!(result["status"], "queued");
        let id = result["id"].as_str().expect("an id");
        let found = api
            .get(&format!("/api/messages/{id}?include=payload"))
            .await;
        assert_eq!(found.body["payload"]["subject"], format!("Message {i}"));
        assert_eq!(found.body["fingerprint"], result["fingerprint"]);
    }
    assert_eq!(api.stored().await, 3);

    // The same batch again: every message is a repeat, nothing new.
    let again = api
        .post("/api/messages/batch", &json!({ "messages": messages }))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, reply.body);
    assert_eq!(api.stored().await, 3);

    // A full batch of the largest size is one request.
    let full: Vec<Value> = (0..1000).map(|i| email(&format!("Bulk {i}"))).collect();
    let reply = api
        .post("/api/messages/batch", &json!({ "messages": full }))
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.body["results"].as_array().map(Vec::len), Some(1000));
    assert_eq!(api.stored().await, 1003);
}

async fn a_batch_with_an_invalid_message_stores_nothing_and_names_it(f: &Fixture) {
    let api = api(f, true).await;
    let mut messages: Vec<Value> = (0..5).map(|i| email(&format!("Message {i}"))).collect();
    messages[3]["email"]["to"] = json!(["not an address"]);
    let reply = api
        .post("/api/messages/batch", &json!({ "messages": messages }))
        .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.field(), "messages[3].email.to[0]");
    assert_eq!(api.stored().await, 0);

    let mut messages: Vec<Value> = (0..3).map(|i| email(&format!("Message {i}"))).collect();
    messages[1]["priority"] = json!("urgent");
    let reply = api
        .post("/api/messages/batch", &json!({ "messages": messages }))
        .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.field(), "messages[1].priority");

    let mut messages: Vec<Value> = (0..3).map(|i| email(&format!("Message {i}"))).collect();
    messages[2]["transport"] = json!("nowhere");
    let reply = api
        .post("/api/messages/batch", &json!({ "messages": messages }))
        .await;
    assert_eq!(
        (reply.status, reply.field(), reply.code()),
        (422, "messages[2].transport", "unknown_transport")
    );

    let reply = api
        .post("/api/messages/batch", &json!({ "messages": [] }))
        .await;
    assert_eq!((reply.status, reply.field()), (422, "messages"));
    let too_many: Vec<Value> = (0..1001).map(|i| email(&format!("M {i}"))).collect();
    let reply = api
        .post("/api/messages/batch", &json!({ "messages": too_many }))
        .await;
    assert_eq!(
        (reply.status, reply.field(), reply.code()),
        (422, "messages", "too_many")
    );
    let reply = api
        .post("/api/messages/batch", &json!({ "msgs": [email("x")] }))
        .await;
    assert_eq!((reply.status, reply.field()), (422, "msgs"));
    assert_eq!(api.stored().await, 0, "no batch stored anything");
}

async fn invalid_enqueue_bodies_are_refused_naming_the_field_and_store_nothing(f: &Fixture) {
    let api = api(f, true).await;
    let sms =
        |to: &str| json!({"channel": "sms", "sms": {"to": to, "body": "Your code is 123456"}});
    let attachment =
        json!({"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGVsbG8="});
    // (what is wrong, body, status, field)
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "channel missing",
            json!({"email": email("x")["email"]}),
            422,
            "channel",
        ),
        (
            "unknown channel",
            email_with(|b| b["channel"] = json!("fax")),
            422,
            "channel",
        ),
        (
            "unknown top-level field",
            email_with(|b| b["prio"] = json!(1)),
            422,
            "prio",
        ),
        (
            "unknown email field",
            email_with(|b| b["email"]["txt"] = json!("x")),
            422,
            "email.txt",
        ),
        (
            "priority too high",
            email_with(|b| b["priority"] = json!(10)),
            422,
            "priority",
        ),
        (
            "priority negative",
            email_with(|b| b["priority"] = json!(-1)),
            422,
            "priority",
        ),
        (
            "priority as text",
            email_with(|b| b["priority"] = json!("high")),
            422,
            "priority",
        ),
        (
            "unparsable send_at",
            email_with(|b| b["send_at"] = json!("tomorrow at nine")),
            422,
            "send_at",
        ),
        (
            "send_at without zone",
            email_with(|b| b["send_at"] = json!("2026-12-01T09:00:00")),
            422,
            "send_at",
        ),
        (
            "unknown transport",
            email_with(|b| b["transport"] = json!("pigeon")),
            422,
            "transport",
        ),
        (
            "transport of another channel",
            email_with(|b| b["transport"] = json!("hooks")),
            422,
            "transport",
        ),
        ("payload missing", json!({"channel": "email"}), 422, "email"),
        (
            "payload of another channel",
            email_with(|b| b["sms"] = json!({"to": "+14155550100", "body": "x"})),
            422,
            "sms",
        ),
        (
            "invalid sender",
            email_with(|b| b["email"]["from"] = json!("shop")),
            422,
            "email.from",
        ),
        (
            "invalid recipient",
            email_with(|b| b["email"]["to"] = json!(["alice@"])),
            422,
            "email.to[0]",
        ),
        (
            "recipients not a list",
            email_with(|b| b["email"]["to"] = json!("alice@example.com")),
            422,
            "email.to",
        ),
        (
            "recipient not a string",
            email_with(|b| b["email"]["to"] = json!(["alice@example.com", 7])),
            422,
            "email.to[1]",
        ),
        (
            "no recipients",
            email_with(|b| b["email"]["to"] = json!([])),
            422,
            "email.to",
        ),
        (
            "invalid cc",
            email_with(|b| b["email"]["cc"] = json!(["bob@example.com", "bob"])),
            422,
            "email.cc[1]",
        ),
        (
            "invalid reply_to",
            email_with(|b| b["email"]["reply_to"] = json!("@@")),
            422,
            "email.reply_to",
        ),
        (
            "subject missing",
            email_with(|b| {
                b["email"].as_object_mut().map(|e| e.remove("subject"));
            }),
            422,
            "email.subject",
        ),
        (
            "subject blank",
            email_with(|b| b["email"]["subject"] = json!("   ")),
            422,
            "email.subject",
        ),
        (
            "body missing",
            email_with(|b| {
                b["email"].as_object_mut().map(|e| e.remove("text"));
            }),
            422,
            "email.text",
        ),
        (
            "too many recipients",
            email_with(|b| {
                b["email"]["to"] = json!(
                    (0..101)
                        .map(|i| format!("u{i}@example.com"))
                        .collect::<Vec<_>>()
                )
            }),
            422,
            "email.to",
        ),
        (
            "too many attachments",
            email_with(|b| b["email"]["attachments"] = json!(vec![attachment.clone(); 21])),
            422,
            "email.attachments",
        ),
        (
            "attachment not base64",
            email_with(
                |b| b["email"]["attachments"] = json!([{"filename": "a.txt", "content_type": "text/plain", "content_base64": "***"}]),
            ),
            422,
            "email.attachments[0].content_base64",
        ),
        (
            "forged stamp header",
            email_with(|b| {
                b["email"]["headers"] = json!({"X-Stamp-ID": "01JDQ4Z8Y7M3V2K9W6T5R4P3N2"})
            }),
            422,
            "email.headers.X-Stamp-ID",
        ),
        (
            "metadata not an object",
            email_with(|b| b["metadata"] = json!([1, 2])),
            422,
            "metadata",
        ),
        (
            "idempotency key too long",
            email_with(|b| b["idempotency_key"] = json!("k".repeat(256))),
            422,
            "idempotency_key",
        ),
        (
            "category with spaces",
            email_with(|b| b["category"] = json!("big sale")),
            422,
            "category",
        ),
        ("sms number not E.164", sms("4155550100"), 422, "sms.to"),
        (
            "webhook url off the allow-list",
            json!({"channel": "webhook", "webhook": {"payload": {"a": 1}, "url": "http://169.254.169.254/latest"}}),
            422,
            "webhook.url",
        ),
        ("body not an object", json!("an email"), 422, "body"),
    ];
    let mut cases = cases;
    cases.extend(hostile_text_cases());
    assert!(cases.len() >= 25);
    for (what, body, status, field) in &cases {
        let reply = api.post("/api/messages", body).await;
        assert_eq!(
            (reply.status, reply.field()),
            (*status, *field),
            "{what}: {}",
            reply.body
        );
        assert!(!reply.code().is_empty(), "{what}: a code");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: a message"
        );
        assert_eq!(api.stored().await, 0, "{what}: nothing stored");
    }

    // Not JSON at all: 400, no field.
    for (what, raw) in [
        ("truncated JSON", r#"{"channel": "email", "email": {"#),
        ("trailing garbage", r#"{"channel": "email"} and more"#),
        ("empty body", ""),
    ] {
        let reply = api.post_raw("/api/messages", "application/json", raw).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "malformed_json"),
            "{what}: {}",
            reply.body
        );
        assert_eq!(api.stored().await, 0, "{what}: nothing stored");
    }
    // Each valid variant of the same bodies is accepted, so the cases above
    // failed for the reason named and not for another.
    assert_eq!(api.post("/api/messages", &email("x")).await.status, 202);
    assert_eq!(
        api.post("/api/messages", &sms("+14155550100")).await.status,
        202
    );
    // Unicode display names and internationalised addresses keep working.
    for address in [
        "Zoë Åberg <zoe@example.com>",
        "محمد عبد الله <mohammed@example.com>",
        "דוד כהן <david@example.com>",
        "用户@例子.广告",
        "josé@bücher.de",
    ] {
        let body = email_with(|b| {
            b["email"]["from"] = json!(address);
            b["email"]["to"] = json!([address]);
            b["email"]["subject"] = json!(format!("Für {address}"));
        });
        let reply = api.post("/api/messages", &body).await;
        assert_eq!(reply.status, 202, "{address}: {}", reply.body);
    }
}

/// Invisible, bidirectional and control characters where a client could
/// use them to disguise an address or inject a header: (what, body,
/// status, field), as in the table above.
fn hostile_text_cases() -> Vec<(&'static str, Value, u16, &'static str)> {
    let sms = |edit: fn(&mut Value)| {
        let mut body = json!({"channel": "sms", "sms": {"to": "+14155550100", "from": "Herald", "body": "Your code is 123456"}});
        edit(&mut body);
        body
    };
    vec![
        (
            "zero-width space in a recipient",
            email_with(|b| b["email"]["to"] = json!(["ali\u{200B}ce@example.com"])),
            400,
            "email.to[0]",
        ),
        (
            "right-to-left override in the sender",
            email_with(|b| b["email"]["from"] = json!("\u{202E}moc.elpmaxe@pohs")),
            400,
            "email.from",
        ),
        (
            "bidi override in a display name",
            email_with(|b| b["email"]["from"] = json!("Shop\u{202E}lapyap <shop@example.com>")),
            400,
            "email.from",
        ),
        (
            "word joiner in a cc",
            email_with(|b| b["email"]["cc"] = json!(["bob@exam\u{2060}ple.com"])),
            400,
            "email.cc[0]",
        ),
        (
            "byte-order mark in a bcc",
            email_with(|b| {
                b["email"]["bcc"] = json!(["ok@example.com", "\u{FEFF}eve@example.com"])
            }),
            400,
            "email.bcc[1]",
        ),
        (
            "soft hyphen in reply_to",
            email_with(|b| b["email"]["reply_to"] = json!("sup\u{00AD}port@example.com")),
            400,
            "email.reply_to",
        ),
        (
            "right-to-left mark in a recipient",
            email_with(|b| b["email"]["to"] = json!(["alice@example.com\u{200F}"])),
            400,
            "email.to[0]",
        ),
        (
            "NUL in a recipient",
            email_with(|b| b["email"]["to"] = json!(["alice\u{0}@example.com"])),
            400,
            "email.to[0]",
        ),
        (
            "C1 control in a recipient",
            email_with(|b| b["email"]["to"] = json!(["alice@example.com\u{85}"])),
            400,
            "email.to[0]",
        ),
        (
            "NUL in the subject",
            email_with(|b| b["email"]["subject"] = json!("Receipt\u{0}")),
            400,
            "email.subject",
        ),
        (
            "header injection through the subject",
            email_with(|b| b["email"]["subject"] = json!("Hi\r\nBcc: victim@example.com")),
            400,
            "email.subject",
        ),
        (
            "tab in the subject",
            email_with(|b| b["email"]["subject"] = json!("Hi\tthere")),
            400,
            "email.subject",
        ),
        (
            "DEL in the subject",
            email_with(|b| b["email"]["subject"] = json!("Hi\u{7F}")),
            400,
            "email.subject",
        ),
        (
            "escape in the text body",
            email_with(|b| b["email"]["text"] = json!("Thanks\u{1B}[2J")),
            400,
            "email.text",
        ),
        (
            "NUL in the HTML body",
            email_with(|b| b["email"]["html"] = json!("<p>Thanks\u{0}</p>")),
            400,
            "email.html",
        ),
        (
            "C1 control in the HTML body",
            email_with(|b| b["email"]["html"] = json!("<p>\u{9B}31m</p>")),
            400,
            "email.html",
        ),
        (
            "NUL in a header value",
            email_with(|b| b["email"]["headers"] = json!({"X-Campaign": "a\u{0}b"})),
            400,
            "email.headers.X-Campaign",
        ),
        (
            "zero-width space in an SMS number",
            sms(|b| b["sms"]["to"] = json!("+1415555\u{200B}0100")),
            400,
            "sms.to",
        ),
        (
            "bidi override in an SMS sender",
            sms(|b| b["sms"]["from"] = json!("Her\u{202E}ald")),
            400,
            "sms.from",
        ),
        (
            "NUL in an SMS body",
            sms(|b| b["sms"]["body"] = json!("code\u{0}123456")),
            400,
            "sms.body",
        ),
        (
            "bell in an SMS body",
            sms(|b| b["sms"]["body"] = json!("code\u{7}")),
            400,
            "sms.body",
        ),
    ]
}

async fn oversized_bodies_are_413_and_non_json_bodies_415(f: &Fixture) {
    let api = api(f, true).await;
    let big = email_with(|b| b["email"]["text"] = json!("x".repeat(MAX_BODY + 1)));
    let reply = api.post("/api/messages", &big).await;
    assert_eq!(
        (reply.status, reply.code()),
        (413, "payload_too_large"),
        "{}",
        reply.body
    );
    let reply = api
        .post("/api/messages/batch", &json!({"messages": [big]}))
        .await;
    assert_eq!(reply.status, 413);

    let body = email("x").to_string();
    let reply = api
        .post_raw("/api/messages", "text/plain", body.clone())
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (415, "unsupported_media_type")
    );
    let reply = api
        .send(
            test::TestRequest::post()
                .uri("/api/messages")
                .set_payload(body.clone()),
        )
        .await;
    assert_eq!(reply.status, 415, "no content type");
    let reply = api
        .post_raw(
            "/api/messages/batch",
            "application/x-www-form-urlencoded",
            "messages=1",
        )
        .await;
    assert_eq!(reply.status, 415);
    assert_eq!(api.stored().await, 0);

    let reply = api
        .post_raw("/api/messages", "application/json; charset=utf-8", body)
        .await;
    assert_eq!(reply.status, 202, "JSON with a charset is JSON");
}

async fn reading_one_message_refuses_bad_ids_and_parameters(f: &Fixture) {
    let api = api(f, true).await;
    let id = api.enqueue(&email("x")).await;
    let reply = api
        .get(&format!("/api/messages/{}", Stamp::generate()))
        .await;
    assert_eq!((reply.status, reply.code()), (404, "not_found"));
    let reply = api.get("/api/messages/not-a-ulid").await;
    assert_eq!((reply.status, reply.field()), (400, "id"));
    let reply = api
        .get(&format!("/api/messages/{id}?include=secrets"))
        .await;
    assert_eq!((reply.status, reply.field()), (400, "include"));
    let reply = api.get(&format!("/api/messages/{id}?verbose=1")).await;
    assert_eq!(
        (reply.status, reply.field(), reply.code()),
        (400, "verbose", "unknown_parameter")
    );
    let reply = api.get("/api/nothing/here").await;
    assert_eq!((reply.status, reply.code()), (404, "not_found"));
}

async fn listing_pages_without_gaps_or_duplicates(f: &Fixture) {
    let api = api(f, true).await;
    let mut enqueued = HashSet::new();
    for i in 0..23 {
        enqueued.insert(
            api.enqueue(&email(&format!("Message {i}")))
                .await
                .to_string(),
        );
    }
    let mut seen = Vec::new();
    let mut uri = "/api/messages?limit=5".to_owned();
    let mut pages = 0;
    loop {
        let page = api.get(&uri).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let ids = ids_of(&page.body);
        assert!(ids.len() <= 5);
        assert!(page.body.get("next").is_some(), "next is always present");
        seen.extend(ids);
        pages += 1;
        match page.body["next"].as_str() {
            Some(next) => uri = format!("/api/messages?limit=5&after={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 23, "no duplicates");
    assert_eq!(
        seen.iter().cloned().collect::<HashSet<_>>(),
        enqueued,
        "no gaps"
    );
    let mut newest_first = seen.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, newest_first, "newest first");

    let default = api.get("/api/messages").await;
    assert_eq!(ids_of(&default.body).len(), 23, "the default page holds 50");
    assert_eq!(default.body["next"], Value::Null);
    assert!(
        default.body["items"][0].get("events").is_none(),
        "lists carry no events"
    );
}

async fn listing_filters_and_refuses_bad_parameters_by_name(f: &Fixture) {
    let api = api(f, true).await;
    let first = api.enqueue(&email("Same")).await;
    let second = api.enqueue(&email("Same")).await;
    let other = api
        .enqueue(&email_with(|b| b["transport"] = json!("other")))
        .await;
    let text = api
        .enqueue(&json!({"channel": "sms", "sms": {"to": "+14155550100", "body": "hi"}}))
        .await;
    api.storage
        .cancel(second, api.clock.now())
        .await
        .expect("cancel");

    let ids = |reply: Reply| ids_of(&reply.body);
    assert_eq!(
        ids(api.get("/api/messages?transport=other").await),
        [other.to_string()]
    );
    assert_eq!(
        ids(api.get("/api/messages?channel=sms").await),
        [text.to_string()]
    );
    assert_eq!(
        ids(api.get("/api/messages?status=cancelled").await),
        [second.to_string()]
    );
    let fingerprint = api.get(&format!("/api/messages/{first}")).await.body["fingerprint"]
        .as_str()
        .expect("a fingerprint")
        .to_owned();
    let same = ids(api
        .get(&format!("/api/messages?fingerprint={fingerprint}"))
        .await);
    assert_eq!(same, [second.to_string(), first.to_string()]);
    assert_eq!(
        ids(api
            .get(&format!(
                "/api/messages?fingerprint={fingerprint}&status=queued&transport=mail&channel=email"
            ))
            .await),
        [first.to_string()],
        "filters combine"
    );
    assert_eq!(
        ids(api.get("/api/messages?status=&transport=").await).len(),
        4,
        "empty parameters are absent"
    );
    let with_payload = api.get("/api/messages?channel=sms&include=payload").await;
    assert_eq!(with_payload.body["items"][0]["payload"]["body"], "hi");

    for (query, field) in [
        ("status=lost", "status"),
        ("channel=fax", "channel"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("after=page-2", "after"),
        ("fingerprint=abc", "fingerprint"),
        ("include=events", "include"),
        ("sort=asc", "sort"),
        ("status=queued&status=dead", "status"),
    ] {
        let reply = api.get(&format!("/api/messages?{query}")).await;
        assert_eq!(
            (reply.status, reply.field()),
            (400, field),
            "{query}: {}",
            reply.body
        );
    }
}

async fn cancel_applies_to_queued_messages_only(f: &Fixture) {
    let api = api(f, true).await;
    let queued = api.enqueue(&email("a")).await;
    let reply = api
        .post(&format!("/api/messages/{queued}/cancel"), &json!({}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["id"], queued.to_string());
    assert_eq!(reply.body["status"], "cancelled");
    let kinds: Vec<&str> = reply.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["queued", "cancelled"]);

    let again = api
        .send(test::TestRequest::post().uri(&format!("/api/messages/{queued}/cancel")))
        .await;
    assert_eq!(
        (again.status, again.code()),
        (409, "conflict"),
        "already final"
    );

    let busy = api.enqueue(&email("b")).await;
    api.storage
        .claim_due("mail", common::NODE, 10, LEASE, api.clock.now())
        .await
        .expect("claim");
    let reply = api
        .send(test::TestRequest::post().uri(&format!("/api/messages/{busy}/cancel")))
        .await;
    assert_eq!(reply.status, 409, "being delivered: {}", reply.body);
    assert_eq!(
        api.get(&format!("/api/messages/{busy}")).await.body["status"],
        "processing"
    );

    let reply = api
        .send(test::TestRequest::post().uri(&format!("/api/messages/{}/cancel", Stamp::generate())))
        .await;
    assert_eq!(reply.status, 404);
    let reply = api
        .send(test::TestRequest::post().uri("/api/messages/nope/cancel"))
        .await;
    assert_eq!((reply.status, reply.field()), (400, "id"));
}

async fn retry_replays_a_dead_message_under_the_same_id(f: &Fixture) {
    let api = api(f, true).await;
    let id = api.enqueue(&email("a")).await;
    let reply = api
        .send(test::TestRequest::post().uri(&format!("/api/messages/{id}/retry")))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (409, "conflict"),
        "queued is not dead"
    );

    api.clock.advance(chrono::Duration::milliseconds(1_500));
    api.kill_all("mail").await;
    let reply = api
        .send(test::TestRequest::post().uri(&format!("/api/messages/{id}/retry")))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["id"], id.to_string(), "the same id");
    // One event for the attempt, carrying its start (the claim).
    let started: Vec<(&str, &Value)> = reply.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["kind"].as_str().unwrap_or(""), &e["started_at"]))
        .collect();
    assert_eq!(
        started,
        [
            ("queued", &Value::Null),
            ("attempt_failed", &json!("2026-01-01T00:00:01.500Z")),
            ("dead_lettered", &Value::Null),
            ("replayed", &Value::Null),
        ]
    );
    assert_eq!(reply.body["status"], "queued");
    assert_eq!(reply.body["attempts"], 0, "fresh attempts");
    let kinds: Vec<&str> = reply.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"queued"));
    assert_eq!(kinds.last(), Some(&"replayed"));
    assert!(kinds.contains(&"dead_lettered"));
    assert_eq!(api.stored().await, 1, "no new message");

    let reply = api
        .send(test::TestRequest::post().uri(&format!("/api/messages/{}/retry", Stamp::generate())))
        .await;
    assert_eq!(reply.status, 404);
}

async fn dead_letters_are_listed_and_replayed_in_bulk(f: &Fixture) {
    let api = api(f, true).await;
    let mut dead_mail = HashSet::new();
    for i in 0..3 {
        dead_mail.insert(api.enqueue(&email(&format!("m{i}"))).await.to_string());
    }
    let dead_other = api
        .enqueue(&email_with(|b| b["transport"] = json!("other")))
        .await;
    api.kill_all("mail").await;
    api.kill_all("other").await;
    let alive = api.enqueue(&email("still queued")).await;

    let all = api.get("/api/queue/dead-letters").await;
    assert_eq!(all.status, 200, "{}", all.body);
    let ids = ids_of(&all.body);
    assert_eq!(ids.len(), 4);
    assert!(!ids.contains(&alive.to_string()));
    assert!(
        all.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|m| m["status"] == "dead" && m["last_error"] == "550 no such user")
    );

    let first = api.get("/api/queue/dead-letters?limit=3").await;
    let next = first.body["next"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let second = api
        .get(&format!("/api/queue/dead-letters?limit=3&after={next}"))
        .await;
    let mut paged = ids_of(&first.body);
    paged.extend(ids_of(&second.body));
    assert_eq!(paged, ids, "pages join up");
    assert_eq!(second.body["next"], Value::Null);

    let other = api.get("/api/queue/dead-letters?transport=other").await;
    assert_eq!(ids_of(&other.body), [dead_other.to_string()]);
    for (query, field) in [
        ("status=queued", "status"),
        ("limit=0", "limit"),
        ("after=x", "after"),
    ] {
        let reply = api.get(&format!("/api/queue/dead-letters?{query}")).await;
        assert_eq!((reply.status, reply.field()), (400, field), "{query}");
    }

    for (body, field) in [
        (json!({"transport": "pigeon"}), "transport"),
        (json!({"limit": 0}), "limit"),
        (json!({"limit": 1001}), "limit"),
        (json!({"limit": -3}), "limit"),
        (json!({"transports": "mail"}), "transports"),
    ] {
        let reply = api.post("/api/queue/dead-letters/replay", &body).await;
        assert_eq!(
            (reply.status, reply.field()),
            (422, field),
            "{body}: {}",
            reply.body
        );
    }
    assert_eq!(
        ids_of(&api.get("/api/queue/dead-letters").await.body).len(),
        4
    );

    let reply = api
        .post(
            "/api/queue/dead-letters/replay",
            &json!({"transport": "mail", "limit": 2}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let replayed: Vec<String> =
        serde_json::from_value(reply.body["replayed"].clone()).expect("ids");
    assert_eq!(replayed.len(), 2);
    assert!(replayed.iter().all(|id| dead_mail.contains(id)));

    // No body at all: everything left, every transport.
    let reply = api
        .send(test::TestRequest::post().uri("/api/queue/dead-letters/replay"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["replayed"].as_array().map(Vec::len), Some(2));
    let left = api.get("/api/queue/dead-letters").await;
    assert_eq!(ids_of(&left.body).len(), 0);
    let queued = api.get("/api/messages?status=queued").await;
    assert_eq!(
        ids_of(&queued.body).len(),
        5,
        "replayed under their own ids"
    );
    let reply = api.post("/api/queue/dead-letters/replay", &json!({})).await;
    assert_eq!(
        (reply.status, reply.body["replayed"].clone()),
        (200, json!([]))
    );
}

async fn messages_filter_and_count_by_key_category_and_creation_time(f: &Fixture) {
    let api = api(f, true).await;
    let early = api
        .enqueue(&email_with(|b| b["category"] = json!("receipt")))
        .await;
    api.clock.advance(chrono::Duration::seconds(10));
    let keyed = api
        .enqueue(&email_with(|b| {
            b["category"] = json!("receipt");
            b["idempotency_key"] = json!("order 42/é");
        }))
        .await;
    api.clock.advance(chrono::Duration::seconds(10));
    let late = api.enqueue(&email("late")).await;

    let ids = |reply: Reply| {
        assert_eq!(reply.status, 200, "{}", reply.body);
        ids_of(&reply.body)
    };
    assert_eq!(
        ids(api
            .get("/api/messages?idempotency_key=order%2042%2F%C3%A9")
            .await),
        [keyed.to_string()]
    );
    assert_eq!(
        ids(api.get("/api/messages?category=receipt").await),
        [keyed.to_string(), early.to_string()]
    );
    assert_eq!(
        ids(api
            .get("/api/messages?since=2026-01-01T00:00:10Z&until=2026-01-01T00:00:20Z")
            .await),
        [keyed.to_string()],
        "since inclusive, until exclusive"
    );
    assert_eq!(
        ids(api
            .get("/api/messages?since=2026-01-01T01:00:10%2B01:00")
            .await),
        [late.to_string(), keyed.to_string()],
        "an offset is an instant"
    );
    assert_eq!(
        ids(api
            .get("/api/messages?category=receipt&until=2026-01-01T00:00:00.001Z")
            .await),
        [early.to_string()]
    );

    let count = api
        .get("/api/messages/count?category=receipt&since=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(count.status, 200, "{}", count.body);
    assert_eq!(count.body, json!({"count": 2, "estimated": false}));
    assert_eq!(
        api.get("/api/messages/count").await.body,
        json!({"count": 3, "estimated": false})
    );

    for route in ["/api/messages", "/api/messages/count"] {
        for (query, field) in [
            ("idempotency_key=a%01b", "idempotency_key"),
            ("category=no%20spaces", "category"),
            ("since=yesterday", "since"),
            ("since=2026-01-01", "since"),
            ("since=2026-01-01t00:00:00z", "since"),
            ("until=2026-02-30T00:00:00Z", "until"),
            ("until=2026-01-01T23:59:60Z", "until"),
            (
                "since=2026-01-01T00:00:10Z&until=2026-01-01T00:00:10Z",
                "until",
            ),
            (
                "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
                "until",
            ),
            ("error_class=timeout", "error_class"),
        ] {
            let reply = api.get(&format!("{route}?{query}")).await;
            assert_eq!(
                (reply.status, reply.field()),
                (400, field),
                "{route}?{query}: {}",
                reply.body
            );
        }
    }
    let paged = api.get("/api/messages/count?limit=5").await;
    assert_eq!(
        (paged.status, paged.field()),
        (400, "limit"),
        "a count has no pages"
    );
}

async fn dead_letters_group_by_error_class_and_replay_by_filter(f: &Fixture) {
    let api = api(f, true).await;
    let mut rejected = HashSet::new();
    for i in 0..3 {
        rejected.insert(api.enqueue(&email(&format!("r{i}"))).await.to_string());
    }
    api.kill_all_with("mail", "rejected (550): no such user")
        .await;
    api.clock.advance(chrono::Duration::seconds(5));
    let timed_out = api.enqueue(&email("slow")).await;
    api.kill_all_with("mail", "timed out: no answer in 30s")
        .await;
    api.enqueue(&email_with(|b| b["transport"] = json!("other")))
        .await;
    api.kill_all("other").await;

    let groups = api.get("/api/queue/dead-letters/groups").await;
    assert_eq!(groups.status, 200, "{}", groups.body);
    assert_eq!(
        groups.body,
        json!({"groups": [
            {"transport": "mail", "error_class": "rejected", "count": 3,
             "oldest": "2026-01-01T00:00:00.000Z", "newest": "2026-01-01T00:00:00.000Z",
             "sample_error": "rejected (550): no such user"},
            {"transport": "mail", "error_class": "timeout", "count": 1,
             "oldest": "2026-01-01T00:00:05.000Z", "newest": "2026-01-01T00:00:05.000Z",
             "sample_error": "timed out: no answer in 30s"},
            {"transport": "other", "error_class": "unknown", "count": 1,
             "oldest": "2026-01-01T00:00:05.000Z", "newest": "2026-01-01T00:00:05.000Z",
             "sample_error": "550 no such user"},
        ]})
    );
    let of_other = api
        .get("/api/queue/dead-letters/groups?transport=other&error_class=unknown")
        .await;
    assert_eq!(of_other.body["groups"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        ids_of(
            &api.get("/api/queue/dead-letters?error_class=timeout")
                .await
                .body
        ),
        [timed_out.to_string()]
    );
    assert_eq!(
        ids_of(
            &api.get("/api/queue/dead-letters?since=2026-01-01T00:00:01Z&transport=mail")
                .await
                .body
        ),
        [timed_out.to_string()]
    );
    for route in ["/api/queue/dead-letters", "/api/queue/dead-letters/groups"] {
        for (query, field) in [
            ("error_class=bad", "error_class"),
            ("category=a%20b", "category"),
            ("channel=fax", "channel"),
            ("since=now", "since"),
            ("status=queued", "status"),
        ] {
            let reply = api.get(&format!("{route}?{query}")).await;
            assert_eq!(
                (reply.status, reply.field()),
                (400, field),
                "{route}?{query}"
            );
        }
    }
    for (body, field) in [
        (json!({"error_class": "bad"}), "error_class"),
        (json!({"category": "a b"}), "category"),
        (json!({"channel": "fax"}), "channel"),
    ] {
        let reply = api.post("/api/queue/dead-letters/replay", &body).await;
        assert_eq!(
            (reply.status, reply.field()),
            (422, field),
            "{body}: {}",
            reply.body
        );
    }

    // The console's loop: replay by filter until nothing is left.
    let mut replayed = Vec::new();
    loop {
        let reply = api
            .post(
                "/api/queue/dead-letters/replay",
                &json!({"error_class": "rejected", "channel": "email", "limit": 2}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let batch: Vec<String> =
            serde_json::from_value(reply.body["replayed"].clone()).expect("ids");
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 2);
        replayed.extend(batch);
        assert!(replayed.len() <= rejected.len(), "each once: {replayed:?}");
    }
    assert_eq!(replayed.into_iter().collect::<HashSet<_>>(), rejected);
    let left = api.get("/api/queue/dead-letters/groups").await;
    let classes: Vec<&str> = left.body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["error_class"].as_str())
        .collect();
    assert_eq!(classes, ["timeout", "unknown"]);
}

/// How long a job's owner may go without advancing it in these tests.
const JOB_TIMEOUT: chrono::Duration = chrono::Duration::seconds(6);

/// Runs, as [`common::NODE`], every replay job it may take now.
async fn run_replay_jobs<S>(api: &Api<S>) -> usize {
    let now = api.clock.now();
    herald::engine::run_replay_jobs(
        api.storage.as_ref(),
        api.clock.as_ref(),
        common::NODE,
        now - JOB_TIMEOUT,
    )
    .await
    .expect("replay jobs")
}

async fn a_replay_job_replays_every_match_of_its_filter_and_reports_progress(f: &Fixture) {
    let api = api(f, true).await;
    let mut rejected = HashSet::new();
    for i in 0..3 {
        rejected.insert(api.enqueue(&email(&format!("r{i}"))).await.to_string());
    }
    api.kill_all_with("mail", "rejected (550): no such user")
        .await;
    let timed_out = api.enqueue(&email("slow")).await;
    api.kill_all_with("mail", "timed out: no answer in 30s")
        .await;
    let other = api
        .enqueue(&email_with(|b| b["transport"] = json!("other")))
        .await;
    api.kill_all_with("other", "rejected (550): no such user")
        .await;

    let jobs = "/api/queue/dead-letters/replay-jobs";
    for (body, field) in [
        (json!({"transport": "pigeon"}), "transport"),
        (json!({"error_class": "bad"}), "error_class"),
        (json!({"category": "a b"}), "category"),
        (json!({"channel": "fax"}), "channel"),
        (json!({"limit": 10}), "limit"),
    ] {
        let reply = api.post(jobs, &body).await;
        assert_eq!(
            (reply.status, reply.field()),
            (422, field),
            "{body}: {}",
            reply.body
        );
    }
    assert_eq!(
        api.get(jobs).await.body,
        json!({"items": []}),
        "a refused job is not stored"
    );

    let started = api
        .post(
            jobs,
            &json!({"transport": "mail", "error_class": "rejected"}),
        )
        .await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        started.body,
        json!({
            "id": id, "state": "running", "total": 3, "replayed": 0,
            "filter": {"transport": "mail", "channel": null, "category": null,
                       "error_class": "rejected"},
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
            "finished_at": null, "error": null,
        })
    );
    let read = api.get(&format!("{jobs}/{id}")).await;
    assert_eq!((read.status, &read.body), (200, &started.body));

    api.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(run_replay_jobs(&api).await, 1);
    let done = api.get(&format!("{jobs}/{id}")).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(
        (
            &done.body["state"],
            &done.body["replayed"],
            &done.body["total"]
        ),
        (&json!("done"), &json!(3), &json!(3))
    );
    assert_eq!(done.body["finished_at"], "2026-01-01T00:00:01.000Z");
    assert_eq!(run_replay_jobs(&api).await, 0, "a done job runs no more");

    let left: HashSet<String> = ids_of(&api.get("/api/queue/dead-letters").await.body)
        .into_iter()
        .collect();
    assert_eq!(
        left,
        HashSet::from([timed_out.to_string(), other.to_string()])
    );
    for id in &rejected {
        let message = api.get(&format!("/api/messages/{id}")).await;
        assert_eq!(message.body["status"], "queued", "{}", message.body);
        let last = message.body["events"]
            .as_array()
            .and_then(|events| events.last())
            .expect("events");
        assert_eq!(last["kind"], "replayed");
    }

    let second = api.post(jobs, &json!({})).await;
    assert_eq!(second.status, 202, "{}", second.body);
    assert_eq!(second.body["total"], 2);
    let listed = api.get(jobs).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let ids: Vec<&str> = listed.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|job| job["id"].as_str())
        .collect();
    assert_eq!(ids, [second.body["id"].as_str().expect("id"), id.as_str()]);
    assert_eq!(
        api.get(&format!("{jobs}?limit=1")).await.body["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let reply = api.get(&format!("{jobs}?limit=0")).await;
    assert_eq!((reply.status, reply.field()), (400, "limit"));
    let reply = api.get(&format!("{jobs}/not-an-id")).await;
    assert_eq!((reply.status, reply.field()), (400, "id"));
    let reply = api.get(&format!("{jobs}/{}", Stamp::generate())).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}

async fn a_replay_job_left_running_by_a_dead_process_is_resumed(f: &Fixture) {
    let api = api(f, true).await;
    for i in 0..3 {
        api.enqueue(&email(&format!("d{i}"))).await;
    }
    api.kill_all("mail").await;
    let jobs = "/api/queue/dead-letters/replay-jobs";
    let started = api.post(jobs, &json!({"transport": "mail"})).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id: Stamp = started.body["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("an id");

    // Another process took the job, replayed one batch and died.
    let now = api.clock.now();
    let job = api
        .storage
        .take_replay_job("dead-node", now, now - JOB_TIMEOUT)
        .await
        .expect("take")
        .expect("taken");
    let batch = api
        .storage
        .replay_dead(&job.dead_letters(), 2, now)
        .await
        .expect("replay");
    assert!(
        api.storage
            .advance_replay_job(
                id,
                "dead-node",
                batch.len() as u64,
                herald::storage::ReplayJobState::Running,
                None,
                now,
            )
            .await
            .expect("advance")
    );
    let halfway = api.get(&format!("{jobs}/{id}")).await;
    assert_eq!(
        (&halfway.body["state"], &halfway.body["replayed"]),
        (&json!("running"), &json!(2))
    );
    assert_eq!(
        run_replay_jobs(&api).await,
        0,
        "not while its owner may still be alive"
    );

    api.clock
        .advance(JOB_TIMEOUT + chrono::Duration::seconds(1));
    assert_eq!(run_replay_jobs(&api).await, 1);
    let done = api.get(&format!("{jobs}/{id}")).await;
    assert_eq!(
        (
            &done.body["state"],
            &done.body["replayed"],
            &done.body["total"]
        ),
        (&json!("done"), &json!(3), &json!(3))
    );
    assert_eq!(
        ids_of(&api.get("/api/queue/dead-letters").await.body).len(),
        0
    );
    assert!(
        !api.storage
            .advance_replay_job(
                id,
                "dead-node",
                1,
                herald::storage::ReplayJobState::Running,
                None,
                api.clock.now(),
            )
            .await
            .expect("advance"),
        "the dead process, back, cannot advance the job it lost"
    );
}

/// Every route that needs a key, with the role it needs.
fn protected_routes(id: Stamp) -> Vec<(Method, String, &'static str)> {
    vec![
        (Method::POST, "/api/messages".into(), "enqueue"),
        (Method::POST, "/api/messages/batch".into(), "enqueue"),
        (Method::GET, "/api/messages".into(), "read"),
        (Method::GET, format!("/api/messages/{id}"), "read"),
        (Method::GET, "/api/messages/count".into(), "read"),
        (Method::GET, "/api/queue/dead-letters".into(), "read"),
        (Method::GET, "/api/queue/dead-letters/groups".into(), "read"),
        (Method::POST, format!("/api/messages/{id}/cancel"), "admin"),
        (Method::POST, format!("/api/messages/{id}/retry"), "admin"),
        (
            Method::POST,
            "/api/queue/dead-letters/replay".into(),
            "admin",
        ),
        (
            Method::POST,
            "/api/queue/dead-letters/replay-jobs".into(),
            "admin",
        ),
        (
            Method::GET,
            "/api/queue/dead-letters/replay-jobs".into(),
            "read",
        ),
        (
            Method::GET,
            format!("/api/queue/dead-letters/replay-jobs/{id}"),
            "read",
        ),
        (Method::GET, "/api/transports".into(), "read"),
        (Method::GET, "/api/queue/analytics".into(), "read"),
        (Method::GET, "/api/queue/failures".into(), "read"),
        (Method::GET, "/api/queue/bottlenecks".into(), "read"),
        (Method::GET, "/api/analytics/message-flow".into(), "read"),
        (Method::GET, "/api/analytics/deliverability".into(), "read"),
        (Method::GET, "/api/alerts".into(), "read"),
        (
            Method::GET,
            "/api/analytics/transport-performance".into(),
            "read",
        ),
        (
            Method::POST,
            format!("/api/transports/{SOME_TRANSPORT}/pause"),
            "admin",
        ),
        (
            Method::POST,
            format!("/api/transports/{SOME_TRANSPORT}/resume"),
            "admin",
        ),
        (Method::GET, "/metrics".into(), "read"),
        (Method::GET, "/api/suppressions".into(), "read"),
        (Method::POST, "/api/suppressions".into(), "admin"),
        (Method::DELETE, SOME_SUPPRESSION.into(), "admin"),
    ]
}

/// A suppression in the protected-route table's paths.
const SOME_SUPPRESSION: &str = "/api/suppressions/email/someone@example.org";

/// A transport name in the protected-route table's paths.
const SOME_TRANSPORT: &str = "some-transport";

fn template_of(path: &str, id: Stamp) -> String {
    path.replace(&id.to_string(), "{id}")
        .replace(SOME_TRANSPORT, "{name}")
        .replace(SOME_SUPPRESSION, "/api/suppressions/{channel}/{address}")
}

async fn every_route_needs_its_role_when_keys_are_configured(f: &Fixture) {
    let mut api = api(f, true).await;
    let id = api.enqueue(&email("target")).await;
    api.key = None;
    let routes = protected_routes(id);
    // The table covers every registered route that is not public. The
    // providers' event webhooks check the provider's own credentials.
    let public = [
        "/health/live",
        "/health/ready",
        "/api/openapi.json",
        "/api/feedback/{transport}",
    ];
    let mut registered: Vec<(Method, String)> = http::routes()
        .into_iter()
        .filter(|r| !public.contains(&r.path))
        .map(|r| (r.method, r.path.to_owned()))
        .collect();
    let mut tested: Vec<(Method, String)> = routes
        .iter()
        .map(|(m, p, _)| (m.clone(), template_of(p, id)))
        .collect();
    registered.sort_by(|a, b| (a.1.clone(), a.0.as_str()).cmp(&(b.1.clone(), b.0.as_str())));
    tested.sort_by(|a, b| (a.1.clone(), a.0.as_str()).cmp(&(b.1.clone(), b.0.as_str())));
    assert_eq!(registered, tested);

    let request = |method: &Method, path: &str| {
        let request = test::TestRequest::default()
            .method(method.clone())
            .uri(path);
        if method == Method::POST {
            request.set_json(json!({"messages": [email("x")]}))
        } else {
            request
        }
    };
    // No key is asked of a provider: it is answered by its transport's
    // own scheme (here, none is configured).
    let reply = api
        .send_as_is(test::TestRequest::post().uri("/api/feedback/outbox"))
        .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    for (method, path, role) in &routes {
        let reply = api.send_as_is(request(method, path)).await;
        assert_eq!(reply.status, 401, "{method} {path} without a key");
        let challenge = reply
            .headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        assert!(
            challenge.is_some_and(|c| c.starts_with("Bearer")),
            "{method} {path}: {challenge:?}"
        );
        assert_eq!(reply.code(), "unauthorized");

        let reply = api
            .send_as_is(
                request(method, path)
                    .insert_header((header::AUTHORIZATION, "Bearer not-a-configured-key-123")),
            )
            .await;
        assert_eq!(reply.status, 401, "{method} {path} with an unknown key");
        let reply = api
            .send_as_is(
                request(method, path)
                    .insert_header((header::AUTHORIZATION, format!("Basic {ALL_KEY}"))),
            )
            .await;
        assert_eq!(reply.status, 401, "{method} {path} with another scheme");

        for (key, key_role) in [
            (ENQUEUE_KEY, "enqueue"),
            (READ_KEY, "read"),
            (ADMIN_KEY, "admin"),
        ] {
            let reply = api
                .send_as_is(
                    request(method, path)
                        .insert_header((header::AUTHORIZATION, format!("Bearer {key}"))),
                )
                .await;
            if key_role == *role {
                assert!(
                    ![401, 403].contains(&reply.status),
                    "{method} {path} with the {key_role} key: {} {}",
                    reply.status,
                    reply.body
                );
            } else {
                assert_eq!(
                    (reply.status, reply.code()),
                    (403, "forbidden"),
                    "{method} {path} with the {key_role} key"
                );
            }
        }
    }
    // Of all those requests only the enqueue key's batch stored anything.
    assert_eq!(api.stored().await, 2);

    for path in public.iter().filter(|p| !p.starts_with("/api/feedback")) {
        let reply = api.send_as_is(test::TestRequest::get().uri(path)).await;
        assert_eq!(reply.status, 200, "{path} needs no key");
    }
}

async fn without_keys_the_api_is_open(f: &Fixture) {
    let api = api(f, false).await;
    assert_eq!(api.key, None);
    let id = api.enqueue(&email("open")).await;
    assert_eq!(api.get(&format!("/api/messages/{id}")).await.status, 200);
    let reply = api
        .send(test::TestRequest::post().uri(&format!("/api/messages/{id}/cancel")))
        .await;
    assert_eq!(reply.status, 200);
}

#[actix_web::test]
async fn the_spec_lists_exactly_the_registered_routes() {
    let fixture = Fixture::sqlite().await;
    let api = api(&fixture, true).await;
    let reply = api
        .send_as_is(test::TestRequest::get().uri("/api/openapi.json"))
        .await;
    assert_eq!(reply.status, 200);
    let spec = reply.body;
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with('3')));
    let mut documented = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut registered: Vec<String> = http::routes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    documented.sort();
    registered.sort();
    assert_eq!(documented, registered);

    // Each protected operation names the role its route enforces.
    let id = Stamp::generate();
    for (method, path, role) in protected_routes(id) {
        let path = template_of(&path, id);
        let operation = &spec["paths"][&path][method.as_str().to_lowercase()];
        assert_eq!(
            operation["security"],
            json!([{"bearer": [role]}]),
            "{method} {path}"
        );
        for status in ["401", "403"] {
            assert!(
                operation["responses"].get(status).is_some(),
                "{method} {path} documents {status}"
            );
        }
    }
    let schemas = spec["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "EnqueueRequest",
        "EmailPayload",
        "EnqueueResponse",
        "BatchRequest",
        "BatchResponse",
        "MessageDetail",
        "MessagePage",
        "ErrorBody",
        "ReplayRequest",
        "ReplayResponse",
    ] {
        assert!(schemas.contains_key(name), "schema {name}");
    }
    let started_at = &schemas["EventView"]["properties"]["started_at"];
    assert_eq!(started_at["format"], "date-time", "{started_at}");
    assert!(
        spec["components"]["schemas"]["EventView"]["required"]
            .as_array()
            .is_none_or(|r| !r.contains(&json!("started_at"))),
        "absent on most events"
    );
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let docs = test::call_service(
        &api.app,
        test::TestRequest::get().uri("/api/docs/").to_request(),
    )
    .await;
    assert_eq!(docs.status(), StatusCode::OK);
    let html = test::read_body(docs).await;
    assert!(
        String::from_utf8_lossy(&html).contains("swagger"),
        "the docs page"
    );
    let redirect = test::call_service(
        &api.app,
        test::TestRequest::get().uri("/api/docs").to_request(),
    )
    .await;
    assert!(redirect.status().is_redirection());
}

/// The published description is as strict as the server: bounds, patterns
/// and enums where the server checks them, the payload tied to its
/// channel, transports named from the config, and a key asked for only
/// when keys are configured.
#[actix_web::test]
async fn the_spec_states_what_the_server_enforces() {
    let fixture = Fixture::sqlite().await;
    let spec = |with_keys| {
        let fixture = &fixture;
        async move {
            let api = api(fixture, with_keys).await;
            let reply = api
                .send_as_is(test::TestRequest::get().uri("/api/openapi.json"))
                .await;
            assert_eq!(reply.status, 200);
            assert_eq!(
                reply
                    .headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.as_bytes()),
                Some(&b"application/json"[..])
            );
            reply.body
        }
    };
    let keyed = spec(true).await;
    let open = spec(false).await;
    let param = |spec: &Value, path: &str, method: &str, name: &str| -> Value {
        spec["paths"][path][method]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{method} {path} has parameter {name}"))
    };
    let schema = |name: &str| keyed["components"]["schemas"][name].clone();

    for path in ["/api/messages", "/api/queue/dead-letters", "/api/alerts"] {
        let limit = param(&keyed, path, "get", "limit");
        assert_eq!(
            (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
            (&json!(1), &json!(1000)),
            "{path}"
        );
        assert_eq!(limit["allowEmptyValue"], true, "{path}: `limit=` is absent");
    }
    let stamp = schema("Stamp");
    assert_eq!(
        stamp["pattern"],
        "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$"
    );
    for (path, method, name) in [
        ("/api/messages/{id}", "get", "id"),
        ("/api/messages/{id}/cancel", "post", "id"),
        ("/api/messages", "get", "after"),
        ("/api/queue/dead-letters", "get", "after"),
    ] {
        assert_eq!(
            param(&keyed, path, method, name)["schema"]["$ref"],
            "#/components/schemas/Stamp",
            "{method} {path} {name}"
        );
    }
    assert_eq!(
        param(&keyed, "/api/messages", "get", "status")["schema"]["$ref"],
        "#/components/schemas/Status"
    );
    assert_eq!(
        param(&keyed, "/api/queue/analytics", "get", "channel")["schema"]["$ref"],
        "#/components/schemas/Channel"
    );
    assert_eq!(
        schema("Channel")["enum"],
        json!(["email", "sms", "chat", "push", "webhook"])
    );
    assert!(schema("Window")["pattern"].is_string());
    assert_eq!(
        schema("Bucket")["enum"],
        json!(["1m", "5m", "15m", "1h", "1d"])
    );
    assert_eq!(
        schema("TransportName")["enum"],
        json!(["hooks", "mail", "other"]),
        "the configured transports"
    );
    assert_eq!(
        schema("BatchRequest")["properties"]["messages"]["minItems"],
        1
    );

    // One body per channel some transport delivers, told apart by `channel`.
    let enqueue = schema("EnqueueRequest");
    assert_eq!(enqueue["discriminator"]["propertyName"], "channel");
    let variants: Vec<&str> = enqueue["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .filter_map(|v| v["$ref"].as_str())
        .collect();
    assert_eq!(
        variants,
        [
            "#/components/schemas/EmailEnqueueRequest",
            "#/components/schemas/SmsEnqueueRequest",
            "#/components/schemas/ChatEnqueueRequest",
            "#/components/schemas/PushEnqueueRequest",
            "#/components/schemas/WebhookEnqueueRequest",
        ]
    );
    let email = schema("EmailEnqueueRequest");
    assert_eq!(email["properties"]["channel"]["enum"], json!(["email"]));
    assert_eq!(email["required"], json!(["channel", "email"]));
    assert!(email["properties"].get("sms").is_none());
    assert_eq!(
        email["properties"]["transport"]["enum"],
        json!(["mail", "other", null])
    );
    let chat = schema("ChatEnqueueRequest");
    assert_eq!(
        chat["required"],
        json!(["channel", "chat", "transport"]),
        "chat has no route"
    );

    // A key only where keys are configured.
    let operations = |spec: &Value| -> Vec<Value> {
        spec["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().expect("item").values().cloned())
            .collect()
    };
    assert!(
        operations(&keyed)
            .iter()
            .any(|op| op.get("security").is_some())
    );
    for operation in operations(&open) {
        assert!(operation.get("security").is_none(), "{operation}");
        assert!(operation["responses"].get("401").is_none(), "{operation}");
    }
    assert!(open["components"].get("securitySchemes").is_none());
}

/// Over a real socket: the server as `main` builds it, a real client.
#[actix_web::test]
async fn the_api_works_over_a_real_socket() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fixture = Fixture::postgres().await;
    let (state, _clock) = state(&fixture, settings(true));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(http::configure)
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let response = client
        .post(format!("{base}/api/messages"))
        .bearer_auth(ENQUEUE_KEY)
        .json(&email("over the wire"))
        .send()
        .await
        .expect("enqueue");
    assert_eq!(response.status().as_u16(), 202);
    let created: Value = response.json().await.expect("JSON");
    let id = created["id"].as_str().expect("an id");

    let response = client
        .get(format!("{base}/api/messages/{id}"))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .expect("read");
    assert_eq!(response.status().as_u16(), 200);
    let message: Value = response.json().await.expect("JSON");
    assert_eq!(message["events"][0]["kind"], "queued");

    let response = client
        .get(format!("{base}/api/messages/{id}"))
        .send()
        .await
        .expect("read without a key");
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));

    let oversized = vec![b' '; MAX_BODY + 1];
    let response = client
        .post(format!("{base}/api/messages"))
        .bearer_auth(ENQUEUE_KEY)
        .header("content-type", "application/json")
        .body(oversized)
        .send()
        .await
        .expect("an oversized request is answered");
    assert_eq!(response.status().as_u16(), 413);
    let error: Value = response.json().await.expect("JSON");
    assert_eq!(error["error"]["code"], "payload_too_large");

    let response = client
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .expect("spec");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(stored(fixture.storage.as_ref()).await, 1);
    handle.stop(true).await;
}

/// Storage going away is a 503 that clients may retry, never a 500.
#[actix_web::test]
async fn unreachable_storage_is_503_not_500() {
    let fixture = Fixture::postgres().await;
    let proxy = Proxy::start(common::postgres_host_port()).await;
    let options = herald::storage::StorageOptions {
        url: fixture
            .options
            .url
            .replace(&common::postgres_host_port(), &proxy.addr),
        pool_size: 2,
        ..fixture.options.clone()
    };
    let through_proxy = herald::storage::open(&options)
        .await
        .expect("open via the proxy");
    let clock = Arc::new(ManualClock::new(t0()));
    let state = web::Data::new(AppState::new(
        through_proxy,
        clock as Arc<dyn Clock>,
        Arc::new(settings(false)),
    ));
    let app = test::init_service(App::new().app_data(state).configure(http::configure)).await;
    let enqueue = || {
        test::TestRequest::post()
            .uri("/api/messages")
            .set_json(email("x"))
            .to_request()
    };
    assert_eq!(test::call_service(&app, enqueue()).await.status(), 202);

    drop(proxy); // the database is now unreachable
    let requests = [
        enqueue(),
        test::TestRequest::get().uri("/api/messages").to_request(),
        test::TestRequest::get()
            .uri(&format!("/api/messages/{}", Stamp::generate()))
            .to_request(),
        test::TestRequest::post()
            .uri(&format!("/api/messages/{}/cancel", Stamp::generate()))
            .to_request(),
        test::TestRequest::get()
            .uri("/api/queue/dead-letters")
            .to_request(),
        test::TestRequest::post()
            .uri("/api/messages/batch")
            .set_json(json!({"messages": [email("y")]}))
            .to_request(),
    ];
    for request in requests {
        let path = request.path().to_owned();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|s| s > 0),
            "{path}: Retry-After in seconds"
        );
        let body: Value = test::read_body_json(response).await;
        assert_eq!(body["error"]["code"], "storage_unavailable", "{path}");
    }
    assert_eq!(
        stored(fixture.storage.as_ref()).await,
        1,
        "nothing more was stored"
    );
    assert_eq!(
        fixture
            .storage
            .list_messages(
                &MessageFilter {
                    status: Some(Status::Queued),
                    ..Default::default()
                },
                PageRequest {
                    after: None,
                    limit: 10
                }
            )
            .await
            .expect("list")
            .items
            .len(),
        1
    );
}

async fn queue_analytics_report_known_traffic_exactly(f: &Fixture) {
    let api = api(f, false).await;
    for i in 0..4 {
        api.enqueue(&email(&format!("analytics {i}"))).await;
    }
    api.clock.advance(chrono::Duration::seconds(2));
    let now = api.clock.now();
    let mut claimed = api
        .storage
        .claim_due("mail", common::NODE, 10, LEASE, now)
        .await
        .expect("claim");
    claimed.sort_by_key(|m| m.id);
    assert_eq!(claimed.len(), 4);
    let outcome = |i: usize, duration: u64, kind: OutcomeKind| Outcome {
        transport: "mail".into(),
        duration_ms: Some(duration),
        // As the engine computes it: claimed (updated_at) - available_at.
        wait_ms: Some((claimed[i].updated_at - claimed[i].available_at).num_milliseconds() as u64),
        error_class: Some("transient".into()),
        ..Outcome::new(&claimed[i], claimed[i].claim_token.expect("a token"), kind)
    };
    let failed = |retry_at| OutcomeKind::Failed {
        error: "451 later".into(),
        retry_at,
    };
    let outcomes = vec![
        outcome(0, 100, OutcomeKind::Sent),
        outcome(1, 300, OutcomeKind::Sent),
        outcome(2, 200, failed(Some(now + chrono::Duration::seconds(60)))),
        outcome(3, 400, failed(None)),
    ];
    api.storage
        .record_outcomes(outcomes, now)
        .await
        .expect("record");

    let reply = api.get("/api/queue/analytics?window=15m&bucket=1m").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = &reply.body;
    assert_eq!(body["window"], "15m");
    assert_eq!(body["failureRate"], 0.5);
    assert_eq!(body["averageWaitTime"], 2000.0);
    assert_eq!(body["queueDepth"]["total"], 1, "the retried message waits");
    assert_eq!(body["queueDepth"]["byTransport"]["mail"]["queued"], 1);
    assert_eq!(body["processingRate"]["last1m"], 2.0 / 60.0);
    assert_eq!(body["throughputMetrics"]["perSecond"], 2.0 / 900.0);
    let series = body["throughputMetrics"]["series"]
        .as_array()
        .expect("series");
    assert_eq!(series.len(), 1);
    assert_eq!(
        (
            &series[0]["sent"],
            &series[0]["failed"],
            &series[0]["retried"],
            &series[0]["dead"]
        ),
        (&json!(2), &json!(2), &json!(1), &json!(1))
    );
    let mail = body["transportBreakdown"]
        .as_array()
        .and_then(|all| all.iter().find(|t| t["transport"] == "mail"))
        .expect("mail figures");
    assert_eq!(mail["averageLatencyMs"], 250.0);
    assert_eq!(mail["depth"], 1);
    assert_eq!(body["priorityDistribution"][0]["queued"], 1);

    // Outside the window nothing counts.
    api.clock.advance(chrono::Duration::minutes(20));
    let later = api.get("/api/queue/analytics?window=15m").await;
    assert_eq!(later.body["failureRate"], 0.0);
    assert_eq!(later.body["averageWaitTime"], Value::Null);

    for (query, field) in [
        ("window=0m", "window"),
        ("window=90d", "window"),
        ("bucket=2m", "bucket"),
        ("transport=nope", "transport"),
        ("channel=fax", "channel"),
        ("category=not%20one", "category"),
        ("surprise=1", "surprise"),
    ] {
        let bad = api.get(&format!("/api/queue/analytics?{query}")).await;
        assert_eq!(
            (bad.status, bad.field()),
            (400, field),
            "{query}: {}",
            bad.body
        );
    }
}

/// Known traffic for the flow and bottleneck routes: an sms for `hooks`
/// queued six minutes and never sent; four `mail` emails (two of category
/// `receipt`) that waited 2 s and ended sent, sent, retried and dead with
/// set processing, limiter and delivery times; a minute of open breaker
/// on `mail`.
async fn known_flow_traffic<S, B>(api: &Api<S>) -> chrono::DateTime<chrono::Utc>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    api.enqueue(&json!({"channel": "sms", "sms": {"to": "+14155550100", "body": "Your code"}}))
        .await;
    api.clock.advance(chrono::Duration::minutes(6));
    for i in 0..4 {
        let body = email_with(|b| {
            b["email"]["subject"] = json!(format!("flow {i}"));
            if i < 2 {
                b["category"] = json!("receipt");
            }
        });
        api.enqueue(&body).await;
    }
    api.clock.advance(chrono::Duration::seconds(2));
    let now = api.clock.now();
    let mut claimed = api
        .storage
        .claim_due("mail", common::NODE, 10, LEASE, now)
        .await
        .expect("claim");
    claimed.sort_by_key(|m| m.id);
    assert_eq!(claimed.len(), 4);
    let failed = |retry_at| OutcomeKind::Failed {
        error: "451 later".into(),
        retry_at,
    };
    // (kind, processing, limited, delivery, total)
    let plan = [
        (OutcomeKind::Sent, 500, 400, 100, 2600),
        (OutcomeKind::Sent, 1500, 1500, 300, 3800),
        (
            failed(Some(now + chrono::Duration::seconds(60))),
            0,
            0,
            200,
            2200,
        ),
        (failed(None), 1000, 100, 400, 3400),
    ];
    let outcomes = plan
        .into_iter()
        .zip(&claimed)
        .map(
            |((kind, processing, limited, delivery, total), m)| Outcome {
                duration_ms: Some(delivery),
                wait_ms: Some((m.updated_at - m.available_at).num_milliseconds() as u64),
                processing_ms: Some(processing),
                limited_ms: Some(limited),
                total_ms: Some(total),
                error_class: Some("transient".into()),
                ..Outcome::new(m, m.claim_token.expect("a token"), kind)
            },
        )
        .collect();
    api.storage
        .record_outcomes(outcomes, now)
        .await
        .expect("record");
    api.storage
        .add_rollups(vec![MinuteMetrics {
            minute: now - chrono::Duration::seconds(2),
            transport: "mail".into(),
            breaker_open_ms: 60_000,
            ..MinuteMetrics::default()
        }])
        .await
        .expect("breaker time");
    now
}

fn close(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

async fn message_flow_and_bottlenecks_report_known_traffic_exactly(f: &Fixture) {
    let api = api(f, false).await;
    known_flow_traffic(&api).await;

    let flow = api.get("/api/analytics/message-flow?window=15m").await;
    assert_eq!(flow.status, 200, "{}", flow.body);
    let body = &flow.body;
    assert_eq!(
        body["stages"],
        json!({"queuedNow": 2, "processingNow": 0, "claimed": 4, "sent": 2,
               "retried": 1, "dead": 1, "deferred": 0, "cancelled": 0})
    );
    let t = &body["timings"];
    // Four waits of 2000 ms, all the histogram knows is that they are in
    // (1000, 2000]: the estimate spreads them over it.
    assert_eq!(
        t["queueWait"],
        json!({"count": 4, "p50": 1500.0, "p95": 1950.0, "p99": 1990.0,
               "average": 2000.0, "max": 2000})
    );
    // Processing 0, 500, 1000, 1500: p50 interpolates in (200, 500], p95
    // in (1000, 1500], the bucket ending at the maximum.
    assert_eq!(t["processing"]["p50"], 500.0);
    assert!(
        close(&t["processing"]["p95"], 1400.0),
        "{}",
        t["processing"]
    );
    assert_eq!(t["processing"]["average"], 750.0);
    assert_eq!(t["delivery"]["p50"], 200.0);
    assert_eq!(t["delivery"]["average"], 250.0);
    assert_eq!(t["delivery"]["max"], 400);
    // Only the three finished messages have an end-to-end time: 2600,
    // 3400 and 3800 ms, in (2000, 3800].
    let total = &t["total"];
    assert_eq!(
        (&total["count"], &total["average"], &total["max"]),
        (&json!(3), &json!(9800.0 / 3.0), &json!(3800))
    );
    for (quantile, expected) in [("p50", 2900.0), ("p95", 3710.0), ("p99", 3782.0)] {
        assert!(close(&total[quantile], expected), "{quantile}: {total}");
    }
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .expect("a list")
            .iter()
            .map(|g| g["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(names(&body["byTransport"]), ["hooks", "mail"]);
    assert_eq!(names(&body["byChannel"]), ["email", "sms"]);
    assert_eq!(body["byTransport"][0]["stages"]["queuedNow"], 1);
    assert_eq!(
        body["byTransport"][0]["timings"]["delivery"]["p50"],
        Value::Null
    );
    assert_eq!(body["byChannel"][0]["stages"]["claimed"], 4);

    let report = api.get("/api/queue/bottlenecks?window=15m").await;
    assert_eq!(report.status, 200, "{}", report.body);
    let transports = report.body["transports"].as_array().expect("transports");
    let of = |name: &str| {
        transports
            .iter()
            .find(|t| t["transport"] == name)
            .unwrap_or_else(|| panic!("{name} in {transports:?}"))
    };
    let mail = of("mail");
    assert_eq!((&mail["attempts"], &mail["sent"]), (&json!(4), &json!(2)));
    assert_eq!(mail["averageQueueWaitMs"], 2000.0);
    assert_eq!(mail["averageProcessingMs"], 750.0);
    assert_eq!(mail["averageDeliveryMs"], 250.0);
    assert!(close(&mail["timeShare"]["queueWait"], 8000.0 / 12000.0));
    assert!(close(&mail["timeShare"]["processing"], 3000.0 / 12000.0));
    assert!(close(&mail["timeShare"]["delivery"], 1000.0 / 12000.0));
    assert_eq!(mail["rateLimitedMs"], 2000);
    assert!(close(&mail["rateLimitedShareOfWait"], 2000.0 / 11000.0));
    // 4 attempts in the 2 s of the current minute so far: 120 a minute.
    assert!(close(&mail["peakRateLimitUse"], 120.0 / 600.0));
    assert_eq!(mail["breakerOpenMs"], 60_000);
    assert!(close(&mail["breakerOpenShare"], 60.0 / 900.0));
    assert!(close(
        &mail["concurrencySaturation"],
        1000.0 / (900_000.0 * 8.0)
    ));
    assert_eq!(mail["queued"], 1);
    assert_eq!(
        mail["oldestQueuedAgeMs"],
        Value::Null,
        "the retried message is not due yet"
    );
    let hooks = of("hooks");
    assert_eq!(hooks["queued"], 1);
    assert_eq!(hooks["oldestQueuedAgeMs"], 362_000);

    let findings: Vec<(&str, &str, &str)> = report.body["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["transport"].as_str().unwrap_or(""),
                f["severity"].as_str().unwrap_or(""),
                f["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        findings,
        [
            ("hooks", "critical", "stalled"),
            ("mail", "warning", "breaker")
        ]
    );
    let breaker = &mail["findings"][0];
    assert_eq!(
        breaker["setting"],
        "transports.mail.circuit_failure_threshold"
    );
    assert!(
        breaker["message"].as_str().is_some_and(
            |m| m.starts_with("mail: circuit breaker open 7 % of the window (1.0 min)")
        ),
        "{breaker}"
    );

    // Outside the window only live counts remain.
    api.clock.advance(chrono::Duration::minutes(20));
    let later = api.get("/api/analytics/message-flow?window=15m").await;
    assert_eq!(later.body["stages"]["claimed"], 0);
    assert_eq!(later.body["stages"]["queuedNow"], 2);
    for path in ["/api/queue/bottlenecks", "/api/analytics/message-flow"] {
        for (query, field) in [
            ("window=1s", "window"),
            ("transport=nope", "transport"),
            ("channel=fax", "channel"),
            ("bucket=1m", "bucket"),
        ] {
            let bad = api.get(&format!("{path}?{query}")).await;
            assert_eq!(
                (bad.status, bad.field()),
                (400, field),
                "{path}?{query}: {}",
                bad.body
            );
        }
    }
}

async fn analytics_filter_by_channel_and_category(f: &Fixture) {
    let api = api(f, false).await;
    known_flow_traffic(&api).await;

    let receipts = api
        .get("/api/analytics/message-flow?window=15m&category=receipt")
        .await;
    assert_eq!(receipts.status, 200, "{}", receipts.body);
    assert_eq!(receipts.body["stages"]["claimed"], 2);
    assert_eq!(receipts.body["stages"]["sent"], 2);
    assert_eq!(receipts.body["timings"]["total"]["count"], 2);
    assert_eq!(receipts.body["stages"]["queuedNow"], 0);

    let sms = api
        .get("/api/analytics/message-flow?window=15m&channel=sms")
        .await;
    assert_eq!(sms.body["stages"]["claimed"], 0);
    assert_eq!(sms.body["stages"]["queuedNow"], 1);

    let queue = api
        .get("/api/queue/analytics?window=15m&channel=email")
        .await;
    assert_eq!(queue.status, 200, "{}", queue.body);
    assert_eq!(
        queue.body["queueDepth"]["total"], 1,
        "only the retried email"
    );
    assert_eq!(queue.body["failureRate"], 0.5);
    let receipts = api
        .get("/api/queue/analytics?window=15m&category=receipt")
        .await;
    assert_eq!(receipts.body["failureRate"], 0.0);

    let failures = api
        .get("/api/queue/failures?window=15m&category=receipt")
        .await;
    assert_eq!(failures.status, 200, "{}", failures.body);
    assert_eq!(failures.body["totalFailures"], 0);
    let failures = api
        .get("/api/queue/failures?window=15m&channel=email")
        .await;
    assert_eq!(failures.body["totalFailures"], 2);
    assert_eq!(failures.body["deadLetters"]["count"], 1);
    let none = api.get("/api/queue/failures?window=15m&channel=sms").await;
    assert_eq!(none.body["deadLetters"]["count"], 0);

    let performance = api
        .get("/api/analytics/transport-performance?window=15m&transport=mail&category=receipt")
        .await;
    assert_eq!(performance.status, 200, "{}", performance.body);
    let mail = &performance.body["transports"][0];
    assert_eq!(
        (&mail["attempts"], &mail["successRate"]),
        (&json!(2), &json!(1.0))
    );

    // The breaker is the transport's, whatever the channel: its time stays.
    let bottlenecks = api
        .get("/api/queue/bottlenecks?window=15m&transport=mail&channel=email&category=receipt")
        .await;
    assert_eq!(bottlenecks.status, 200, "{}", bottlenecks.body);
    let mail = &bottlenecks.body["transports"][0];
    assert_eq!(
        (&mail["attempts"], &mail["breakerOpenMs"]),
        (&json!(2), &json!(60_000))
    );
}
async fn alerts_are_listed_by_state_and_bad_parameters_named(f: &Fixture) {
    let api = api(f, true).await;
    let now = api.clock.now();
    let incident = |rule: &str| herald::storage::NewAlert {
        id: herald::domain::monotonic_ulid(),
        rule: rule.to_owned(),
        kind: "failure_rate".to_owned(),
        transport: "mail".to_owned(),
        threshold: 0.5,
        window_s: Some(300),
        value: 0.75,
        fired_at: now,
    };
    let over = api
        .storage
        .open_alert(incident("failing"), now)
        .await
        .expect("open")
        .expect("opened");
    api.storage
        .resolve_alert(over.id, 0.0, now + chrono::Duration::seconds(90))
        .await
        .expect("resolve");
    let going_on = api
        .storage
        .open_alert(incident("still-failing"), now)
        .await
        .expect("open")
        .expect("opened");

    let listed = api.get("/api/alerts").await;
    assert_eq!(listed.status, 200);
    let ids: Vec<&str> = listed.body["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, [going_on.id.to_string(), over.id.to_string()]);
    let resolved = api.get("/api/alerts?state=resolved").await.body;
    let entry = &resolved["alerts"][0];
    assert_eq!(resolved["alerts"].as_array().map(Vec::len), Some(1));
    assert_eq!(entry["rule"], "failing");
    assert_eq!(entry["state"], "resolved");
    assert_eq!(entry["kind"], "failure_rate");
    assert_eq!(entry["window_s"], 300);
    assert_eq!(
        (entry["fired_value"].as_f64(), entry["last_value"].as_f64()),
        (Some(0.75), Some(0.0))
    );
    assert_eq!(entry["duration_s"], 90);
    assert_eq!(entry["notified"], true);
    assert_eq!(entry["fired_message_id"], Value::Null);
    let active = api.get("/api/alerts?state=active&limit=1").await.body;
    assert_eq!(active["alerts"][0]["id"], going_on.id.to_string());
    assert_eq!(active["alerts"][0]["resolved_at"], Value::Null);

    for (query, field) in [
        ("state=firing", "state"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("rule=failing", "rule"),
    ] {
        let reply = api.get(&format!("/api/alerts?{query}")).await;
        assert_eq!(reply.status, 400, "{query}");
        assert_eq!(reply.body["error"]["field"], field, "{query}");
    }
}

async fn failures_and_transport_performance_report_known_traffic_exactly(f: &Fixture) {
    let api = api(f, false).await;
    let now = known_flow_traffic(&api).await;

    let failures = api.get("/api/queue/failures?window=15m").await;
    assert_eq!(failures.status, 200, "{}", failures.body);
    let body = &failures.body;
    assert_eq!(body["totalFailures"], 2);
    assert_eq!(body["byClass"], json!({"transient": 2}));
    assert_eq!(
        body["byTransport"],
        json!([{"transport": "mail", "failed": 2, "retried": 1, "dead": 1,
                "byClass": {"transient": 2}}])
    );
    assert_eq!(
        body["topErrors"],
        json!([{"transport": "mail", "class": "transient", "error": "# later", "count": 2}])
    );
    assert_eq!(
        body["retrySuccessRate"], 0.0,
        "the one retried-or-lost message died"
    );
    assert_eq!(
        body["attemptsDistribution"],
        json!({"1": 3, "2": 0, "3": 0, "4+": 0})
    );
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        body["deadLetters"],
        json!({"count": 1, "oldest": at,
               "byTransport": [{"transport": "mail", "count": 1, "oldest": at}]})
    );

    let report = api
        .get("/api/analytics/transport-performance?window=15m&transport=mail")
        .await;
    assert_eq!(report.status, 200, "{}", report.body);
    let mail = &report.body["transports"][0];
    assert_eq!(
        (
            &mail["attempts"],
            &mail["sent"],
            &mail["failed"],
            &mail["dead"]
        ),
        (&json!(4), &json!(2), &json!(2), &json!(1))
    );
    assert_eq!(mail["successRate"], 0.5);
    // Delivery 100, 200, 300, 400 ms in the 100/200/500 ms buckets, the
    // last ending at the 400 ms maximum.
    assert_eq!(
        mail["latencyMs"],
        json!({"p50": 200.0, "p95": 380.0, "p99": 396.0, "average": 250.0, "max": 400.0})
    );
    assert!(close(&mail["attemptsPerMessage"], 4.0 / 3.0));
    assert_eq!(mail["reliabilityScore"], 65.0);
    assert_eq!(mail["costPerMessage"], 0.002);
    assert!(close(&mail["totalCost"], 0.008));
}

/// A `mail` rollup row of one minute.
fn sent_in(minute: chrono::DateTime<chrono::Utc>, sent: u64) -> MinuteMetrics {
    MinuteMetrics {
        minute,
        transport: "mail".into(),
        channel: "email".into(),
        sent,
        ..MinuteMetrics::default()
    }
}

async fn a_steady_rate_reads_the_same_at_any_moment_of_the_minute(f: &Fixture) {
    let api = api(f, false).await;
    let start = t0() + chrono::Duration::minutes(30);
    // One a second: 60 in each of the 16 minutes before `start`.
    let earlier = (1..=16)
        .map(|back| sent_in(start - chrono::Duration::minutes(back), 60))
        .collect();
    api.storage.add_rollups(earlier).await.expect("rollups");
    let mut counted = 0;
    for offset in [0, 1, 15, 30, 45, 59] {
        // And one for each second of the current minute that has passed.
        api.storage
            .add_rollups(vec![sent_in(start, offset - counted)])
            .await
            .expect("rollups");
        counted = offset;
        api.clock
            .set(start + chrono::Duration::seconds(offset as i64));
        let reply = api.get("/api/queue/analytics?window=15m").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let rate = &reply.body["processingRate"];
        for span in ["last1m", "last5m", "last15m"] {
            assert!(
                close(&rate[span], 1.0),
                "{offset} s into the minute, {span}: {}",
                rate[span]
            );
        }
    }
}

async fn quantiles_of_a_fast_transport_stay_apart(f: &Fixture) {
    let api = api(f, false).await;
    for i in 0..8 {
        api.enqueue(&email(&format!("fast {i}"))).await;
    }
    let now = api.clock.now();
    let claimed = api
        .storage
        .claim_due("mail", common::NODE, 10, LEASE, now)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 8);
    // Deliveries and queue waits of 1 to 8 ms.
    let outcomes = claimed
        .iter()
        .zip(1..)
        .map(|(m, ms)| Outcome {
            transport: "mail".into(),
            duration_ms: Some(ms),
            wait_ms: Some(ms),
            ..Outcome::new(m, m.claim_token.expect("a token"), OutcomeKind::Sent)
        })
        .collect();
    api.storage
        .record_outcomes(outcomes, now)
        .await
        .expect("record");
    let apart = |summary: &Value, what: &str| {
        let [p50, p95, max] = ["p50", "p95", "max"].map(|q| summary[q].as_f64().unwrap_or(0.0));
        assert!(
            0.0 < p50 && p50 < p95 && p95 < max && max == 8.0,
            "{what}: {summary}"
        );
    };
    let performance = api
        .get("/api/analytics/transport-performance?window=15m&transport=mail")
        .await;
    assert_eq!(performance.status, 200, "{}", performance.body);
    apart(&performance.body["transports"][0]["latencyMs"], "latency");
    let flow = api.get("/api/analytics/message-flow?window=15m").await;
    assert_eq!(flow.status, 200, "{}", flow.body);
    apart(&flow.body["timings"]["delivery"], "delivery");
    apart(&flow.body["timings"]["queueWait"], "queue wait");
}

async fn a_transport_held_by_its_rate_limit_is_named_in_its_first_minute(f: &Fixture) {
    let api = api_on(
        f,
        false,
        settings_with(
            false,
            r#"
            [transports.slow]
            kind = "file"
            path = "outbox-slow"
            rate_limit = 60
            "#,
        ),
    )
    .await;
    let start = t0() + chrono::Duration::minutes(30);
    // From `start` on, one attempt a second, each after 5 s in the queue.
    let mut counted = 0;
    for offset in [5, 20, 40] {
        let attempts = offset - counted;
        counted = offset;
        api.storage
            .add_rollups(vec![MinuteMetrics {
                transport: "slow".into(),
                latency_count: attempts,
                latency_sum_ms: 5 * attempts,
                wait_count: attempts,
                wait_sum_ms: 5000 * attempts,
                ..sent_in(start, attempts)
            }])
            .await
            .expect("rollups");
        api.clock
            .set(start + chrono::Duration::seconds(offset as i64));
        let report = api
            .get("/api/queue/bottlenecks?window=15m&transport=slow")
            .await;
        assert_eq!(report.status, 200, "{}", report.body);
        let slow = &report.body["transports"][0];
        assert!(close(&slow["peakRateLimitUse"], 1.0), "{offset} s: {slow}");
        let kinds: Vec<&Value> = report.body["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| &f["kind"])
            .collect();
        assert!(
            kinds.contains(&&json!("rate_limit")),
            "{offset} s: {kinds:?}"
        );
    }
}

async fn deliverability_reports_known_feedback_exactly(f: &Fixture) {
    use herald::feedback::{BounceType, FeedbackEvent, FeedbackKind, Target};
    let api = api(f, false).await;
    for i in 0..4 {
        api.enqueue(&email_with(|b| {
            b["email"]["to"] = json!([format!("user{i}@Example.com")]);
            if i < 2 {
                b["category"] = json!("receipt");
            }
        }))
        .await;
    }
    api.clock.advance(chrono::Duration::seconds(2));
    let sent_at = api.clock.now();
    let mut claimed = api
        .storage
        .claim_due("mail", common::NODE, 10, LEASE, sent_at)
        .await
        .expect("claim");
    claimed.sort_by_key(|m| m.id);
    let outcomes = claimed
        .iter()
        .map(|m| Outcome::new(m, m.claim_token.expect("a token"), OutcomeKind::Sent))
        .collect();
    api.storage
        .record_outcomes(outcomes, sent_at)
        .await
        .expect("record");

    api.clock.advance(chrono::Duration::seconds(60));
    let report = |i: usize, kind| FeedbackEvent {
        target: Target::Stamp(claimed[i].id),
        kind,
        bounce: None,
        recipient: Some(format!("user{i}@example.com")),
        at: sent_at,
        reason: None,
        event_id: Some(format!("{i}-{kind:?}")),
    };
    let bounce = FeedbackEvent {
        bounce: Some(BounceType::Hard),
        reason: Some("550 5.1.1 user unknown".into()),
        ..report(3, FeedbackKind::Bounced)
    };
    let events = vec![
        report(0, FeedbackKind::Delivered),
        report(1, FeedbackKind::Delivered),
        report(2, FeedbackKind::Delivered),
        bounce,
        report(0, FeedbackKind::Complained),
        report(0, FeedbackKind::Opened),
        report(1, FeedbackKind::Opened),
        report(0, FeedbackKind::Clicked),
    ];
    let batch = herald::storage::FeedbackBatch {
        transport: "mail".into(),
        events,
        nonce: None,
    };
    api.storage
        .record_feedback(batch, api.clock.now())
        .await
        .expect("feedback");

    let reply = api.get("/api/analytics/deliverability?window=15m").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = &reply.body;
    assert_eq!(
        body["totals"],
        json!({"sent": 4, "delivered": 3, "bouncedHard": 1, "bouncedSoft": 0,
               "complained": 1, "opened": 2, "clicked": 1, "unsubscribed": 0})
    );
    assert_eq!(
        body["rates"],
        json!({"delivered": 0.75, "bounced": 0.25, "bouncedHard": 0.25, "bouncedSoft": 0.0,
               "complained": 0.25, "opened": 0.5, "clicked": 0.25, "unsubscribed": 0.0})
    );
    assert_eq!(body["byTransport"][0]["transport"], "mail");
    let series: Vec<(u64, u64)> = body["series"]
        .as_array()
        .expect("a series")
        .iter()
        .map(|p| {
            (
                p["sent"].as_u64().unwrap_or(0),
                p["delivered"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        series,
        [(4, 0), (0, 3)],
        "sends and reports in their minutes"
    );
    assert_eq!(
        body["topBounceReasons"],
        json!([{"bounceType": "hard", "reason": "# #.#.# user unknown", "count": 1}])
    );
    assert_eq!(
        body["topBounceDomains"],
        json!([{"domain": "example.com", "bouncedHard": 1, "bouncedSoft": 0}])
    );

    let receipts = api
        .get("/api/analytics/deliverability?window=15m&category=receipt&bucket=5m")
        .await;
    assert_eq!(receipts.status, 200, "{}", receipts.body);
    assert_eq!(receipts.body["totals"]["sent"], 2);
    assert_eq!(receipts.body["totals"]["delivered"], 2);
    assert_eq!(receipts.body["topBounceReasons"], json!([]));
    let quiet = api
        .get("/api/analytics/deliverability?window=15m&transport=other")
        .await;
    assert_eq!(quiet.body["rates"]["delivered"], Value::Null, "none sent");

    let performance = api
        .get("/api/analytics/transport-performance?window=15m")
        .await;
    assert_eq!(performance.status, 200, "{}", performance.body);
    let of = |name: &str| {
        performance.body["transports"]
            .as_array()
            .and_then(|all| all.iter().find(|t| t["transport"] == name))
            .cloned()
            .expect("the transport")
    };
    let mail = of("mail");
    assert_eq!(
        (
            &mail["deliveryRate"],
            &mail["bounceRate"],
            &mail["complaintRate"]
        ),
        (&json!(0.75), &json!(0.25), &json!(0.25))
    );
    assert_eq!(of("other")["deliveryRate"], Value::Null);

    for (query, field) in [("bucket=2m", "bucket"), ("window=0m", "window")] {
        let bad = api
            .get(&format!("/api/analytics/deliverability?{query}"))
            .await;
        assert_eq!((bad.status, bad.field()), (400, field), "{query}");
    }
}

async fn a_wrong_method_is_405_naming_the_allowed_ones(f: &Fixture) {
    let api = api(f, false).await;
    let reply = api
        .send(test::TestRequest::delete().uri("/api/messages"))
        .await;
    assert_eq!((reply.status, reply.code()), (405, "method_not_allowed"));
    assert_eq!(
        reply
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok()),
        Some("POST, GET, HEAD")
    );
    // Health checkers send HEAD: every GET route answers it.
    for path in ["/health/live", "/api/messages"] {
        let reply = api
            .send(test::TestRequest::default().method(Method::HEAD).uri(path))
            .await;
        assert_eq!(reply.status, 200, "HEAD {path}");
    }
    let reply = api.get("/api/queue/dead-letters/replay").await;
    assert_eq!(reply.status, 405);
    assert_eq!(
        reply
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let reply = api.get("/api/nothing-here").await;
    assert_eq!((reply.status, reply.code()), (404, "not_found"));
    assert_eq!(api.stored().await, 0);
}
