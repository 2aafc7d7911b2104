//! The transports against real servers: an SMTP server (mailin-embedded)
//! and an HTTP server (wiremock) on 127.0.0.1, and a real directory.
//! Transports are built from config text through `build_all`, as the
//! engine builds them, unless a test is about one constructor's options.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use chrono::{TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod apns;
#[path = "../common/mod.rs"]
mod common;
mod fcm;
mod mailgun;
mod postmark;
mod sendgrid;
mod ses;
mod slack;
mod twilio;

use common::smtp::{smtp_server, smtp_tls_server};
use herald::config::Settings;
use herald::domain::{Channel, EnqueuePolicy, EnqueueRequest, Message, Priority, TransportIntake};
use herald::time::SystemClock;
use herald::transports::{self, Transport, TransportError, WebhookOptions, WebhookTransport};

const SECRET: &str = "hook-secret";

// ---------------------------------------------------------------- fixtures

/// A stored message, made from an enqueue body the way the API makes it,
/// so the payload JSON has exactly the stored shape.
fn stored(body: serde_json::Value) -> Message {
    let request: EnqueueRequest = serde_json::from_value(body).expect("a valid request body");
    let intake = |channels: Vec<Channel>, native: Vec<Channel>| TransportIntake {
        channels,
        max_attempts: 3,
        allowed_url_hosts: Some(vec!["127.0.0.1".into(), "hooks.example.com".into()]),
        native,
    };
    let policy = EnqueuePolicy {
        transports: HashMap::from([
            ("mail".to_string(), intake(vec![Channel::Email], vec![])),
            (
                "hooks".to_string(),
                intake(vec![Channel::Sms, Channel::Chat, Channel::Webhook], vec![]),
            ),
            // A provider kind's: push and chat in the providers' shapes.
            (
                "provider".to_string(),
                intake(
                    vec![Channel::Push, Channel::Chat],
                    vec![Channel::Push, Channel::Chat],
                ),
            ),
        ]),
        routes: HashMap::from([
            (Channel::Email, "mail".to_string()),
            (Channel::Sms, "hooks".to_string()),
            (Channel::Chat, "hooks".to_string()),
            (Channel::Webhook, "hooks".to_string()),
        ]),
        default_priority: Priority::new(4).expect("4 is a priority"),
        category_priorities: BTreeMap::new(),
    };
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date");
    let new = request
        .into_new_message(&policy, now)
        .expect("a valid message");
    common::as_claimed(new, now)
}

fn receipt_email() -> Message {
    stored(serde_json::json!({
        "channel": "email",
        "email": {
            "from": "Shop <shop@example.com>",
            "to": ["alice@example.com"],
            "cc": ["carol@example.com"],
            "bcc": ["audit@example.com"],
            "subject": "Your receipt",
            "text": "Thanks for your order.",
            "html": "<p>Thanks for your order.</p>",
            "headers": {"X-Campaign": "winter"},
            "attachments": [{
                "filename": "receipt.txt",
                "content_type": "text/plain",
                "content_base64": base64::engine::general_purpose::STANDARD.encode("total: 42 EUR")
            }]
        }
    }))
}

fn chat(payload: serde_json::Value, url: Option<String>) -> Message {
    stored(serde_json::json!({
        "channel": "chat",
        "chat": {"payload": payload, "url": url}
    }))
}

/// Builds every transport of a config text (the `[transports.*]` tables).
fn build(config: &str) -> BTreeMap<String, Arc<dyn Transport>> {
    let settings = Settings::from_toml(config, Path::new("transports-test.toml"), |var| {
        (var == "HOOK_SECRET").then(|| SECRET.to_owned())
    })
    .unwrap_or_else(|e| panic!("test config: {e}"));
    transports::build_all(&settings.transports, Arc::new(SystemClock))
        .expect("the transports build")
        .into_iter()
        .map(|(name, gated)| (name, gated.transport))
        .collect()
}

fn one(config: &str, name: &str) -> Arc<dyn Transport> {
    build(config)
        .remove(name)
        .unwrap_or_else(|| panic!("transport `{name}`"))
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

fn smtp_config(port: u16) -> String {
    format!(
        r#"
        [transports.smtp-main]
        kind = "smtp"
        host = "127.0.0.1"
        port = {port}
        tls = "none"
        timeout_ms = 5000
        "#
    )
}

// ------------------------------------------------------------------ SMTP

#[tokio::test]
async fn smtp_delivers_a_multipart_email_with_both_stamp_headers() {
    let server = smtp_server(None);
    let smtp = one(&smtp_config(server.port), "smtp-main");
    let message = receipt_email();

    let delivery = smtp.deliver(&message).await.expect("delivered");
    assert_eq!(delivery.transport, "smtp-main");
    let detail = delivery.detail.expect("the server's reply");
    assert_eq!(detail["code"], 250);

    let received = server.received();
    assert_eq!(received.len(), 1);
    let email = &received[0];
    assert_eq!(email.from, "shop@example.com");
    assert_eq!(
        email.to,
        [
            "alice@example.com",
            "carol@example.com",
            "audit@example.com"
        ]
    );
    assert_eq!(email.header("Subject").as_deref(), Some("Your receipt"));
    assert_eq!(
        email.header("From").as_deref(),
        Some("Shop <shop@example.com>")
    );
    assert_eq!(email.header("X-Stamp-ID"), Some(message.id.to_string()));
    assert_eq!(email.header("X-Tracking-ID"), Some(message.id.to_string()));
    assert_eq!(email.header("X-Campaign").as_deref(), Some("winter"));
    assert_eq!(email.header("Bcc"), None, "bcc stays off the headers");
    assert!(email.data.contains("multipart/mixed"));
    assert!(email.data.contains("multipart/alternative"));
    assert!(email.data.contains("<p>Thanks for your order.</p>"));
    assert!(email.data.contains("filename=\"receipt.txt\""));
    assert!(email.data.contains("total: 42 EUR"));
}

#[tokio::test]
async fn smtp_reuses_its_pooled_connection_for_the_next_email() {
    let server = smtp_server(None);
    let smtp = one(&smtp_config(server.port), "smtp-main");
    let first = receipt_email();
    let second = receipt_email();
    smtp.deliver(&first).await.expect("first delivered");
    // lettre hands a used connection back to its pool on a spawned task;
    // give that task its turn before the next delivery asks the pool.
    tokio::time::sleep(Duration::from_millis(50)).await;
    smtp.deliver(&second).await.expect("second delivered");
    assert_eq!(server.sessions.load(Ordering::SeqCst), 1, "one connection");
    let stamps: Vec<Option<String>> = server
        .received()
        .iter()
        .map(|r| r.header("X-Stamp-ID"))
        .collect();
    assert_eq!(
        stamps,
        [Some(first.id.to_string()), Some(second.id.to_string())]
    );
}

/// STARTTLS to a server whose certificate only `ca_file` vouches for,
/// then AUTH PLAIN.
fn smtp_tls_config(port: u16, ca_file: &Path) -> String {
    format!(
        r#"
        [transports.smtp-main]
        kind = "smtp"
        host = "127.0.0.1"
        port = {port}
        tls = "starttls"
        username = "herald"
        password_env = "SMTP_PASSWORD"
        ca_file = "{}"
        timeout_ms = 5000
        "#,
        ca_file.display()
    )
}

fn smtp_with_password(config: &str, password: &'static str) -> Arc<dyn Transport> {
    let settings = Settings::from_toml(config, Path::new("transports-test.toml"), |var| {
        (var == "SMTP_PASSWORD").then(|| password.to_owned())
    })
    .unwrap_or_else(|e| panic!("test config: {e}"));
    transports::build_all(&settings.transports, Arc::new(SystemClock))
        .expect("the transports build")
        .remove("smtp-main")
        .expect("smtp-main")
        .transport
}

#[tokio::test]
async fn smtp_authenticates_over_starttls_trusting_its_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, ca) = smtp_tls_server(dir.path(), ("herald", "correct horse"));
    let smtp = smtp_with_password(&smtp_tls_config(server.port, &ca), "correct horse");
    let message = receipt_email();
    smtp.deliver(&message)
        .await
        .expect("delivered over TLS with AUTH");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("X-Stamp-ID"),
        Some(message.id.to_string())
    );
}

#[tokio::test]
async fn smtp_with_a_wrong_password_sends_nothing_and_is_not_the_message_s_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, ca) = smtp_tls_server(dir.path(), ("herald", "correct horse"));
    let smtp = smtp_with_password(&smtp_tls_config(server.port, &ca), "wrong");
    let err = smtp.deliver(&receipt_email()).await.unwrap_err();
    assert!(
        !err.is_permanent(),
        "bad credentials must not dead-letter the message: {err:?}"
    );
    assert!(
        matches!(
            err,
            TransportError::Unauthorized {
                code: Some(535),
                ..
            }
        ),
        "the transport's outage, which opens its breaker: {err:?}"
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn smtp_refuses_a_certificate_it_was_not_told_to_trust() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _ca) = smtp_tls_server(dir.path(), ("herald", "correct horse"));
    let untrusting =
        smtp_tls_config(server.port, Path::new("unused")).replace("ca_file = \"unused\"\n", "");
    let smtp = smtp_with_password(&untrusting, "correct horse");
    let err = smtp.deliver(&receipt_email()).await.unwrap_err();
    assert!(!err.is_permanent(), "{err:?}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn smtp_550_for_a_recipient_is_permanent() {
    let server = smtp_server(Some((550, "No such user")));
    let smtp = one(&smtp_config(server.port), "smtp-main");
    let err = smtp.deliver(&receipt_email()).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(
        matches!(
            err,
            TransportError::Rejected {
                code: Some(550),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("No such user"), "{err}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn smtp_451_for_a_recipient_is_transient() {
    let server = smtp_server(Some((451, "Greylisted, try later")));
    let smtp = one(&smtp_config(server.port), "smtp-main");
    let err = smtp.deliver(&receipt_email()).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        matches!(
            err,
            TransportError::Temporary {
                code: Some(451),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn smtp_with_nothing_listening_is_a_transient_connection_error() {
    let smtp = one(&smtp_config(closed_port()), "smtp-main");
    let err = smtp.deliver(&receipt_email()).await.unwrap_err();
    assert!(matches!(err, TransportError::Connection(_)), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn an_email_transport_refuses_a_message_of_another_channel() {
    let server = smtp_server(None);
    let smtp = one(&smtp_config(server.port), "smtp-main");
    let sms = stored(serde_json::json!({
        "channel": "sms",
        "sms": {"to": "+14155550100", "body": "hi"}
    }));
    let err = smtp.deliver(&sms).await.unwrap_err();
    assert!(matches!(err, TransportError::InvalidMessage(_)), "{err:?}");
    assert!(server.received().is_empty());
}

// ------------------------------------------------------------------ file

#[tokio::test]
async fn file_writes_an_eml_with_the_stamp_into_a_directory_it_creates() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let outbox = dir.path().join("outbox").join("today");
    let file = one(
        &format!(
            "[transports.outbox]\nkind = \"file\"\npath = {:?}\n",
            outbox.display().to_string()
        ),
        "outbox",
    );
    let message = receipt_email();
    let delivery = file.deliver(&message).await.expect("written");
    assert_eq!(delivery.transport, "outbox");

    let named = delivery.detail.expect("the file")["file"]
        .as_str()
        .expect("a path")
        .to_owned();
    let entries: Vec<_> = std::fs::read_dir(&outbox)
        .expect("the directory exists")
        .map(|e| e.expect("an entry").path())
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].display().to_string(), named);
    assert_eq!(entries[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let text = std::fs::read_to_string(&entries[0]).expect("readable");
    assert!(text.contains(&format!("X-Stamp-ID: {}\r\n", message.id)));
    assert!(text.contains(&format!("X-Tracking-ID: {}\r\n", message.id)));
    assert!(text.contains("Subject: Your receipt\r\n"));
}

// --------------------------------------------------------------- webhook

fn webhook_config(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
        [transports.{name}]
        kind = "webhook"
        url = "{url}"
        secret_env = "HOOK_SECRET"
        timeout_ms = 2000
        {extra}
        "#
    )
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn webhook_posts_the_payload_with_the_stamp_and_a_verifiable_signature() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/notify"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let hooks = one(
        &webhook_config("hooks", &format!("{}/notify", server.uri()), ""),
        "hooks",
    );
    let payload = serde_json::json!({"text": "deploy finished", "channel": "#ops", "n": 3});
    let message = chat(payload.clone(), None);

    let delivery = hooks.deliver(&message).await.expect("delivered");
    assert_eq!(delivery.transport, "hooks");
    assert_eq!(delivery.detail, Some(serde_json::json!({"status": 202})));

    let requests = server.received_requests().await.expect("recording is on");
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&request.body).unwrap(),
        payload
    );
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("x-herald-stamp"), Some(message.id.to_string()));
    assert_eq!(
        header("x-herald-signature"),
        Some(expected_signature(&request.body)),
        "the signature covers the exact bytes received"
    );
}

/// A `whsec_` secret made for the test, and its key bytes.
fn standard_webhooks_secret() -> (String, Vec<u8>) {
    let key: Vec<u8> = [
        ulid::Ulid::generate().to_bytes(),
        ulid::Ulid::generate().to_bytes(),
    ]
    .concat();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    (secret, key)
}

/// With `signing_secret_env`, each request carries Standard Webhooks'
/// headers, verified here as the specification says a receiver does:
/// HMAC-SHA256 with the secret's key over `id.timestamp.body`, base64,
/// after `v1,`; the id is the stamp, the same on a retry.
#[tokio::test]
async fn webhook_signs_the_standard_webhooks_way() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let (secret, key) = standard_webhooks_secret();
    let config = format!(
        "{}\nsigning_secret_env = \"HOOK_SIGNING\"\n",
        webhook_config("hooks", &server.uri(), "")
    );
    let hooks = with_env(
        &config,
        "hooks",
        &[("HOOK_SECRET", SECRET), ("HOOK_SIGNING", &secret)],
    );
    let message = chat(serde_json::json!({"text": "deploy finished"}), None);
    let before = herald::time::Clock::now(&SystemClock).timestamp();
    hooks.deliver(&message).await.expect("delivered");
    hooks.deliver(&message).await.expect("delivered again");
    let after = herald::time::Clock::now(&SystemClock).timestamp();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("header {name}"))
        };
        let id = header("webhook-id");
        assert_eq!(id, message.id.to_string(), "the stamp, on every attempt");
        let timestamp: i64 = header("webhook-timestamp").parse().expect("Unix seconds");
        assert!((before..=after).contains(&timestamp), "{timestamp}");
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(&request.body);
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(header("webhook-signature"), format!("v1,{expected}"));
        // The older signature stays for existing receivers.
        assert_eq!(
            header("x-herald-signature"),
            expected_signature(&request.body)
        );
    }
}

#[test]
fn a_signing_secret_that_is_not_whsec_base64_is_refused_naming_its_key() {
    let config = format!(
        "{}\nsigning_secret_env = \"HOOK_SIGNING\"\n",
        webhook_config("hooks", "http://127.0.0.1:9/", "")
    );
    for bad in ["whsec_not base64!", "whsec_"] {
        let err = Settings::from_toml(
            &config,
            Path::new("transports-test.toml"),
            |var| match var {
                "HOOK_SECRET" => Some(SECRET.to_owned()),
                "HOOK_SIGNING" => Some(bad.to_owned()),
                _ => None,
            },
        )
        .expect_err("refused");
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["transports.hooks.signing_secret_env"],
            "{bad}: {err}"
        );
    }
}

/// Builds `config`'s transport `name` with `vars` as the environment.
fn with_env(config: &str, name: &str, vars: &[(&str, &str)]) -> Arc<dyn Transport> {
    let settings = Settings::from_toml(config, Path::new("transports-test.toml"), |var| {
        vars.iter()
            .find(|(v, _)| *v == var)
            .map(|(_, value)| (*value).to_owned())
    })
    .unwrap_or_else(|e| panic!("test config: {e}"));
    transports::build_all(&settings.transports, Arc::new(SystemClock))
        .expect("the transports build")
        .remove(name)
        .expect("the transport")
        .transport
}

#[tokio::test]
async fn webhook_sends_its_headers_and_a_bearer_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer tok-123",
        ))
        .and(wiremock::matchers::header("x-team", "ops"))
        .and(wiremock::matchers::header("x-api-key", "key-456"))
        .and(wiremock::matchers::header(
            "content-type",
            "application/json",
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let config = r#"
        [transports.hooks]
        kind = "webhook"
        url = "URL"
        auth = "bearer"
        token_env = "HOOK_TOKEN"
        headers = { "X-Team" = "ops" }
        header_env = { "X-Api-Key" = "HOOK_KEY" }
    "#
    .replace("URL", &server.uri());
    let hooks = with_env(
        &config,
        "hooks",
        &[("HOOK_TOKEN", "tok-123"), ("HOOK_KEY", "key-456")],
    );
    hooks
        .deliver(&chat(serde_json::json!({"text": "hi"}), None))
        .await
        .expect("the server took the headers");
}

/// An SMS gateway that takes a form with basic auth, as Twilio-like APIs do.
#[tokio::test]
async fn webhook_posts_a_form_with_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let config = r#"
        [transports.gateway]
        kind = "webhook"
        url = "URL"
        auth = "basic"
        username = "AC123"
        password_env = "GATEWAY_PASSWORD"
        body = "form"
    "#
    .replace("URL", &server.uri());
    let gateway = with_env(&config, "gateway", &[("GATEWAY_PASSWORD", "p@ss:word")]);
    let sms = stored(serde_json::json!({
        "channel": "sms",
        "sms": {"to": "+14155550100", "from": "Herald", "body": "Your code is 1234 & more"}
    }));
    gateway.deliver(&sms).await.expect("delivered");
    let requests = server.received_requests().await.unwrap();
    let request = &requests[0];
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    let credentials = base64::engine::general_purpose::STANDARD.encode("AC123:p@ss:word");
    assert_eq!(
        header("authorization"),
        Some(format!("Basic {credentials}").as_str())
    );
    assert_eq!(
        header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(
        fields,
        [
            ("body".to_string(), "Your code is 1234 & more".to_string()),
            ("from".to_string(), "Herald".to_string()),
            ("to".to_string(), "+14155550100".to_string()),
        ]
    );

    // A nested document cannot be a form: refused, not mangled.
    let err = gateway
        .deliver(&chat(serde_json::json!({"a": {"b": 1}}), None))
        .await
        .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
}

#[test]
fn webhook_header_and_auth_mistakes_are_named_at_start() {
    let config = r#"
        [transports.a]
        kind = "webhook"
        url = "http://127.0.0.1:9/"
        auth = "bearer"
        headers = { "Content-Type" = "text/plain", "Bad Name" = "x" }
        header_env = { "X-Key" = "UNSET_VAR" }

        [transports.b]
        kind = "webhook"
        url = "http://127.0.0.1:9/"
        username = "someone"

        [transports.c]
        kind = "webhook"
        url = "http://127.0.0.1:9/"
        body = "xml"
    "#;
    let err = Settings::from_toml(config, Path::new("transports-test.toml"), |_| None)
        .expect_err("refused");
    let mut keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "transports.a.header_env.X-Key",
            "transports.a.headers.Bad Name",
            "transports.a.headers.Content-Type",
            "transports.a.token_env",
            "transports.b.username",
            "transports.c.body",
        ],
        "{err}"
    );
}

#[tokio::test]
async fn webhook_without_a_secret_sends_no_signature() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let hooks = WebhookTransport::new(
        "hooks",
        WebhookOptions {
            url: format!("{}/notify", server.uri()).parse().unwrap(),
            secret: None,
            signing_key: None,
            timeout: Duration::from_secs(2),
            allowed_url_hosts: None,
            headers: Default::default(),
            body: Default::default(),
        },
    )
    .unwrap();
    hooks
        .deliver(&chat(serde_json::json!({"a": 1}), None))
        .await
        .expect("delivered");
    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].headers.get("x-herald-signature").is_none());
    assert!(requests[0].headers.get("x-herald-stamp").is_some());
}

#[tokio::test]
async fn webhook_posts_an_sms_as_to_from_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let hooks = one(
        &webhook_config("hooks", &format!("{}/sms", server.uri()), ""),
        "hooks",
    );
    let sms = stored(serde_json::json!({
        "channel": "sms",
        "sms": {"to": "+14155550100", "from": "Herald", "body": "Your code is 1234"}
    }));
    hooks.deliver(&sms).await.expect("delivered");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&requests[0].body).unwrap(),
        serde_json::json!({"to": "+14155550100", "from": "Herald", "body": "Your code is 1234"})
    );
}

/// Delivers one chat message to a server answering `template`.
async fn answer(template: ResponseTemplate) -> TransportError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&server)
        .await;
    let hooks = one(&webhook_config("hooks", &server.uri(), ""), "hooks");
    hooks
        .deliver(&chat(serde_json::json!({"a": 1}), None))
        .await
        .expect_err("the server refused")
}

#[tokio::test]
async fn webhook_statuses_classify_for_retrying() {
    for status in [500, 502, 503, 408, 429] {
        let err = answer(ResponseTemplate::new(status)).await;
        assert!(err.is_transient(), "{status}: {err}");
        assert!(
            matches!(err, TransportError::Temporary { code: Some(c), .. } if c == status),
            "{err:?}"
        );
    }
    for status in [400, 404, 410, 422] {
        let err = answer(ResponseTemplate::new(status)).await;
        assert!(err.is_permanent(), "{status}: {err}");
    }
    // A refused credential is the transport's outage, not the message's.
    for status in [401, 403] {
        let err = answer(ResponseTemplate::new(status)).await;
        assert!(
            err.is_unauthorized() && !err.is_permanent(),
            "{status}: {err}"
        );
    }
    let err = answer(ResponseTemplate::new(404).set_body_string("no such hook")).await;
    assert!(err.to_string().contains("no such hook"), "{err}");
    let err = answer(ResponseTemplate::new(500).set_body_string("x".repeat(100_000))).await;
    assert!(
        err.to_string().len() < 1_000,
        "the error keeps a prefix only"
    );
}

#[tokio::test]
async fn webhook_honours_retry_after_on_429_and_503() {
    let err = answer(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    let err = answer(ResponseTemplate::new(503).insert_header("Retry-After", "120")).await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    let err = answer(ResponseTemplate::new(429)).await;
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn webhook_slower_than_its_timeout_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let hooks = one(
        &webhook_config("hooks", &server.uri(), "")
            .replace("timeout_ms = 2000", "timeout_ms = 200"),
        "hooks",
    );
    let started = std::time::Instant::now();
    let err = hooks
        .deliver(&chat(serde_json::json!({"a": 1}), None))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn webhook_with_nothing_listening_is_a_connection_error() {
    let hooks = one(
        &webhook_config(
            "hooks",
            &format!("http://127.0.0.1:{}/x", closed_port()),
            "",
        ),
        "hooks",
    );
    let err = hooks
        .deliver(&chat(serde_json::json!({"a": 1}), None))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Connection(_)), "{err:?}");
}

#[tokio::test]
async fn webhook_does_not_follow_redirects() {
    let target = MockServer::start().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("Location", format!("{}/stolen", target.uri())),
        )
        .mount(&server)
        .await;
    let hooks = one(&webhook_config("hooks", &server.uri(), ""), "hooks");
    let err = hooks
        .deliver(&chat(serde_json::json!({"a": 1}), None))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    assert!(err.to_string().contains("not followed"), "{err}");
    assert!(target.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_per_message_url_on_the_allow_list_is_used() {
    let default = MockServer::start().await;
    let own = MockServer::start().await;
    for server in [&default, &own] {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(server)
            .await;
    }
    let hooks = one(
        &webhook_config(
            "hooks",
            &default.uri(),
            r#"allowed_url_hosts = ["127.0.0.1"]"#,
        ),
        "hooks",
    );
    hooks
        .deliver(&chat(
            serde_json::json!({"a": 1}),
            Some(format!("{}/mine", own.uri())),
        ))
        .await
        .expect("delivered");
    let requests = own.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.path(), "/mine");
    assert!(default.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_per_message_url_off_the_allow_list_is_refused_without_a_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let own_url = Some(format!("{}/elsewhere", server.uri()));
    // The message was accepted for a transport that allowed 127.0.0.1;
    // these transports do not (one names other hosts, one has no list).
    let restricted = one(
        &webhook_config(
            "hooks",
            &server.uri(),
            r#"allowed_url_hosts = ["hooks.example.com"]"#,
        ),
        "hooks",
    );
    let closed = one(&webhook_config("hooks", &server.uri(), ""), "hooks");
    for hooks in [restricted, closed] {
        let err = hooks
            .deliver(&chat(serde_json::json!({"a": 1}), own_url.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::InvalidMessage(_)), "{err:?}");
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

// ----------------------------------------------------------------- groups

#[tokio::test]
async fn failover_moves_past_a_503_to_the_next_member() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/primary"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/backup"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let config = [
        webhook_config(
            "primary",
            &format!("{}/primary", server.uri()),
            "circuit_failure_threshold = 1",
        ),
        webhook_config("backup", &format!("{}/backup", server.uri()), ""),
        "[transports.hooks]\nkind = \"failover\"\nmembers = [\"primary\", \"backup\"]\n".into(),
    ]
    .concat();
    let all = build(&config);
    let group = &all["hooks"];
    assert_eq!(group.kind(), "failover");
    let message = chat(serde_json::json!({"a": 1}), None);

    let delivery = group.deliver(&message).await.expect("delivered");
    assert_eq!(delivery.transport, "backup");
    // The primary's breaker opened at its one allowed failure: the next
    // message goes straight on.
    let delivery = group.deliver(&message).await.expect("delivered");
    assert_eq!(delivery.transport, "backup");

    let paths: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(paths, ["/primary", "/backup", "/backup"]);
    let stamps: Vec<_> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers.get("x-herald-stamp").cloned())
        .collect();
    assert!(
        stamps
            .iter()
            .all(|s| s.as_ref().and_then(|v| v.to_str().ok()) == Some(&message.id.to_string())),
        "a failover keeps the message's stamp"
    );
}

#[tokio::test]
async fn failover_from_a_dead_smtp_server_to_the_file_outbox() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = format!(
        "{}\n[transports.outbox]\nkind = \"file\"\npath = {:?}\n\
         [transports.mail]\nkind = \"failover\"\nmembers = [\"smtp-main\", \"outbox\"]\n",
        smtp_config(closed_port()),
        dir.path().display().to_string()
    );
    let group = one(&config, "mail");
    let delivery = group.deliver(&receipt_email()).await.expect("delivered");
    assert_eq!(delivery.transport, "outbox");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn round_robin_alternates_its_members() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let config = [
        webhook_config("left", &format!("{}/left", server.uri()), ""),
        webhook_config("right", &format!("{}/right", server.uri()), ""),
        "[transports.spread]\nkind = \"round_robin\"\nmembers = [\"left\", \"right\"]\n".into(),
    ]
    .concat();
    let group = one(&config, "spread");
    assert_eq!(group.kind(), "round_robin");
    let mut used = Vec::new();
    for _ in 0..4 {
        let message = chat(serde_json::json!({"a": 1}), None);
        used.push(group.deliver(&message).await.expect("delivered").transport);
    }
    assert_eq!(used, ["left", "right", "left", "right"]);
    let paths: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(paths, ["/left", "/right", "/left", "/right"]);
}

#[tokio::test]
async fn build_all_builds_every_kind_and_groups_share_their_members() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = format!(
        "{}{}\n[transports.outbox]\nkind = \"file\"\npath = {:?}\n\
         [transports.sink]\nkind = \"null\"\n\
         [transports.mail]\nkind = \"failover\"\nmembers = [\"smtp-main\", \"outbox\"]\n",
        smtp_config(closed_port()),
        webhook_config("hooks", "http://127.0.0.1:9/notify", ""),
        dir.path().display().to_string()
    );
    let all = build(&config);
    let kinds: Vec<(&str, &str)> = all.iter().map(|(n, t)| (n.as_str(), t.kind())).collect();
    assert_eq!(
        kinds,
        [
            ("hooks", "webhook"),
            ("mail", "failover"),
            ("outbox", "file"),
            ("sink", "null"),
            ("smtp-main", "smtp")
        ]
    );
    for (name, transport) in &all {
        assert_eq!(transport.name(), name);
    }
    let delivery = all["sink"]
        .deliver(&receipt_email())
        .await
        .expect("null accepts everything");
    assert_eq!(delivery.transport, "sink");
}

// ---------------------------------------------------------------- runtime

/// The engine runs transports on actix's runtime, not a plain Tokio one:
/// lettre's pool and reqwest must work there too.
#[actix::test]
async fn transports_deliver_under_the_actix_runtime() {
    let smtp_server = smtp_server(None);
    let http = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&http)
        .await;
    let config = format!(
        "{}{}",
        smtp_config(smtp_server.port),
        webhook_config("hooks", &http.uri(), "")
    );
    let all = build(&config);
    all["smtp-main"]
        .deliver(&receipt_email())
        .await
        .expect("smtp delivers");
    all["hooks"]
        .deliver(&chat(serde_json::json!({"a": 1}), None))
        .await
        .expect("webhook delivers");
    assert_eq!(smtp_server.received().len(), 1);
    drop(all);
}
