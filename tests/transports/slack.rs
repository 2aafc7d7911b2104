//! The `slack` transport against a local server that checks each request
//! as Slack's `chat.postMessage` documents it, and answers as Slack does
//! (HTTP 200 with `ok: false` for most refusals).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use herald::config::Settings;
use herald::domain::Message;
use herald::transports::{Transport, TransportError};

use super::{stored, with_env};

const TOKEN: &str = "xoxb-test-token";

fn transport(base: &str) -> Arc<dyn Transport> {
    let config = format!(
        "[transports.team]\nkind = \"slack\"\ntoken_env = \"SLACK_TOKEN\"\nbase_url = \"{base}\"\n"
    );
    with_env(&config, "team", &[("SLACK_TOKEN", TOKEN)])
}

fn chat(body: serde_json::Value) -> Message {
    stored(serde_json::json!({ "channel": "chat", "transport": "provider", "chat": body }))
}

#[tokio::test]
async fn slack_posts_the_documented_message_and_keeps_its_ts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json; charset=utf-8"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "ok": true,
            "channel": "C0123456789",
            "ts": "1712345678.000200",
            "message": {"text": "Deploy finished"}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let message = chat(serde_json::json!({
        "channel": "C0123456789",
        "text": "Deploy finished",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* finished"}}],
        "thread_ts": "1712345678.000100"
    }));
    let delivery = transport(&server.uri())
        .deliver(&message)
        .await
        .expect("posted");
    assert_eq!(
        delivery.provider_message_id.as_deref(),
        Some("1712345678.000200")
    );
    let requests = server.received_requests().await.expect("recorded");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).expect("JSON");
    assert_eq!(
        body,
        serde_json::json!({
            "channel": "C0123456789",
            "text": "Deploy finished",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* finished"}}],
            "thread_ts": "1712345678.000100",
            "metadata": {
                "event_type": "herald_message",
                "event_payload": {"stamp": message.id.to_string()}
            }
        })
    );
}

/// What one chat message comes to against a Slack answering `answer`.
async fn answered(answer: ResponseTemplate) -> TransportError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer)
        .mount(&server)
        .await;
    transport(&server.uri())
        .deliver(&chat(serde_json::json!({"channel": "C1", "text": "hi"})))
        .await
        .expect_err("refused")
}

fn not_ok(error: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": false, "error": error}))
}

#[tokio::test]
async fn slack_answers_are_classified_by_their_error() {
    for error in ["invalid_auth", "token_revoked", "missing_scope"] {
        let err = answered(not_ok(error)).await;
        assert!(err.is_unauthorized(), "{error}: {err}");
    }
    for error in [
        "channel_not_found",
        "is_archived",
        "msg_too_long",
        "invalid_blocks",
    ] {
        let err = answered(not_ok(error)).await;
        assert!(err.is_permanent(), "{error}: {err}");
        assert!(err.to_string().contains(error), "{err}");
    }
    let limited = answered(not_ok("ratelimited").insert_header("Retry-After", "30")).await;
    assert!(limited.is_transient(), "{limited}");
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(30)));
    // Slack's documented rate limit answer: HTTP 429 with Retry-After.
    let limited = answered(ResponseTemplate::new(429).insert_header("Retry-After", "2")).await;
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
    let down = answered(not_ok("internal_error")).await;
    assert!(down.is_transient() && !down.is_unauthorized(), "{down}");
    let down = answered(ResponseTemplate::new(503)).await;
    assert!(down.is_transient(), "{down}");
}

#[tokio::test]
async fn slack_refuses_a_generic_payload_without_a_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let generic = stored(serde_json::json!({
        "channel": "chat", "transport": "hooks", "chat": {"payload": {"text": "hi"}}
    }));
    let err = transport(&server.uri())
        .deliver(&generic)
        .await
        .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
}

#[test]
fn slack_config_and_routing_mistakes_are_named_at_start() {
    let config = "
        [transports.team]
        kind = \"slack\"
        token_env = \"UNSET\"

        [transports.other]
        kind = \"slack\"

        [transports.fine]
        kind = \"slack\"
        token_env = \"SET\"

        [routes]
        email = \"fine\"
    ";
    let err = Settings::from_toml(config, Path::new("slack-test.toml"), |var| {
        (var == "SET").then(|| TOKEN.to_owned())
    })
    .expect_err("refused");
    let mut keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "routes.email",
            "transports.other.token_env",
            "transports.team.token_env",
        ],
        "{err}"
    );
}
