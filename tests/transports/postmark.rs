//! The `postmark` transport against a wiremock server standing in for
//! Postmark's API: the request as Postmark documents it, the stamp in
//! `Metadata` and the headers, and each answer classified, by its
//! `ErrorCode` where that says more than the status.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use herald::config::Settings;
use herald::transports::{RecipientGone, Transport, TransportError};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{receipt_email, stored, with_env};

const TOKEN: &str = "pm-server-token-0123";

fn postmark_config(base_url: &str, extra: &str) -> String {
    format!(
        r#"
        [transports.pm]
        kind = "postmark"
        server_token_env = "POSTMARK_SERVER_TOKEN"
        base_url = "{base_url}"
        timeout_ms = 2000
        {extra}
        "#
    )
}

fn postmark(server: &MockServer, extra: &str) -> Arc<dyn Transport> {
    with_env(
        &postmark_config(&server.uri(), extra),
        "pm",
        &[("POSTMARK_SERVER_TOKEN", TOKEN)],
    )
}

fn accepted(message_id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "To": "alice@example.com",
        "SubmittedAt": "2026-01-01T00:00:00.0000000Z",
        "MessageID": message_id,
        "ErrorCode": 0,
        "Message": "OK"
    }))
}

#[tokio::test]
async fn postmark_posts_email_with_the_stamp_and_keeps_its_message_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/email"))
        .and(header("x-postmark-server-token", TOKEN))
        .and(header("accept", "application/json"))
        .and(header("content-type", "application/json"))
        .respond_with(accepted("b7bc2f4a-e38e-4336-af7d-e6c392c2f817"))
        .expect(1)
        .mount(&server)
        .await;
    let message = receipt_email();

    let delivery = postmark(&server, "message_stream = \"receipts\"")
        .deliver(&message)
        .await
        .expect("accepted");
    assert_eq!(delivery.transport, "pm");
    assert_eq!(
        delivery.provider_message_id.as_deref(),
        Some("b7bc2f4a-e38e-4336-af7d-e6c392c2f817")
    );
    assert_eq!(delivery.detail, Some(serde_json::json!({"status": 200})));

    let requests = server.received_requests().await.expect("recorded");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).expect("JSON");
    let stamp = message.id.to_string();
    assert_eq!(
        body,
        serde_json::json!({
            "From": "Shop <shop@example.com>",
            "To": "alice@example.com",
            "Cc": "carol@example.com",
            "Bcc": "audit@example.com",
            "Subject": "Your receipt",
            "TextBody": "Thanks for your order.",
            "HtmlBody": "<p>Thanks for your order.</p>",
            "Headers": [
                {"Name": "X-Campaign", "Value": "winter"},
                {"Name": "X-Stamp-ID", "Value": stamp},
                {"Name": "X-Tracking-ID", "Value": stamp}
            ],
            "Metadata": {"stamp": stamp},
            "MessageStream": "receipts",
            "Attachments": [{
                "Name": "receipt.txt",
                "Content": "dG90YWw6IDQyIEVVUg==",
                "ContentType": "text/plain"
            }]
        })
    );
}

#[tokio::test]
async fn postmark_joins_recipients_and_leaves_out_what_the_email_lacks() {
    let server = MockServer::start().await;
    // An accepted email without Postmark's id is still sent: failing it
    // would send it twice.
    Mock::given(method("POST"))
        .and(path("/email"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"ErrorCode": 0})))
        .mount(&server)
        .await;
    let message = stored(serde_json::json!({
        "channel": "email",
        "email": {
            "from": "shop@example.com",
            "to": ["\"Doe, Jane\" <jane@example.com>", "bob@example.com"],
            "reply_to": "Help Desk <help@example.com>",
            "subject": "HTML only",
            "html": "<p>Hi</p>"
        }
    }));

    let delivery = postmark(&server, "")
        .deliver(&message)
        .await
        .expect("accepted");
    assert_eq!(delivery.provider_message_id, None);

    let requests = server.received_requests().await.expect("recorded");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).expect("JSON");
    // The quoted name keeps its comma from splitting the list.
    assert_eq!(
        body["To"],
        "\"Doe, Jane\" <jane@example.com>, bob@example.com"
    );
    assert_eq!(body["ReplyTo"], "Help Desk <help@example.com>");
    assert_eq!(body["HtmlBody"], "<p>Hi</p>");
    let fields = body.as_object().expect("an object");
    for absent in ["Cc", "Bcc", "TextBody", "MessageStream", "Attachments"] {
        assert!(!fields.contains_key(absent), "{absent}: {body}");
    }
}

/// Delivers the receipt to a Postmark answering `template`.
async fn answer(template: ResponseTemplate) -> TransportError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/email"))
        .respond_with(template)
        .mount(&server)
        .await;
    postmark(&server, "")
        .deliver(&receipt_email())
        .await
        .expect_err("refused")
}

fn refusal(status: u16, error_code: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(serde_json::json!({"ErrorCode": error_code, "Message": message}))
}

#[tokio::test]
async fn postmark_answers_classify_by_error_code_and_status() {
    let err = answer(refusal(
        422,
        406,
        "You tried to send to recipient(s) that have been marked as inactive.",
    ))
    .await;
    assert_eq!(
        err.recipient_gone(),
        Some(RecipientGone::Unsubscribed),
        "{err}"
    );
    assert!(err.is_permanent());
    assert!(err.to_string().contains("marked as inactive"), "{err}");

    let err = answer(refusal(422, 300, "Invalid 'From' address")).await;
    assert!(
        err.is_permanent() && err.recipient_gone().is_none(),
        "{err}"
    );
    assert!(matches!(
        err,
        TransportError::Rejected {
            code: Some(422),
            ..
        }
    ));
    let err = answer(refusal(400, 409, "JSON required")).await;
    assert!(err.is_permanent(), "{err}");

    // A refused token is the transport's outage, not the message's fault.
    let err = answer(refusal(401, 10, "Bad or missing Server API token")).await;
    assert!(err.is_unauthorized() && !err.is_permanent(), "{err}");
    let err = answer(refusal(422, 10, "Bad or missing Server API token")).await;
    assert!(err.is_unauthorized() && !err.is_permanent(), "{err}");

    let err = answer(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    for status in [500, 503] {
        let err = answer(ResponseTemplate::new(status)).await;
        assert!(
            err.is_transient() && !err.is_unauthorized(),
            "{status}: {err}"
        );
    }
}

#[test]
fn postmark_without_its_token_is_a_problem_naming_server_token_env() {
    let load = |config: &str| {
        Settings::from_toml(config, Path::new("transports-test.toml"), |_| None)
            .expect_err("refused")
    };
    let keys = |err: &herald::config::ConfigError| -> Vec<String> {
        let mut keys: Vec<String> = err.problems().iter().map(|p| p.key.clone()).collect();
        keys.sort_unstable();
        keys
    };
    let unset = load(&postmark_config("http://127.0.0.1:9", ""));
    assert_eq!(keys(&unset), ["transports.pm.server_token_env"], "{unset}");
    assert!(
        unset.to_string().contains("POSTMARK_SERVER_TOKEN"),
        "{unset}"
    );

    let missing = load("[transports.pm]\nkind = \"postmark\"\n");
    assert_eq!(
        keys(&missing),
        ["transports.pm.server_token_env"],
        "{missing}"
    );

    let blank_stream = load(&postmark_config(
        "http://127.0.0.1:9/?x=1",
        "message_stream = \" \"",
    ));
    assert_eq!(
        keys(&blank_stream),
        [
            "transports.pm.base_url",
            "transports.pm.message_stream",
            "transports.pm.server_token_env"
        ],
        "{blank_stream}"
    );
}
