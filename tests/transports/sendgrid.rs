//! The `sendgrid` transport against a wiremock server standing in for
//! SendGrid's API: the request as SendGrid documents it, the stamp in
//! `custom_args` and the headers, and each answer classified.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use herald::config::Settings;
use herald::transports::{Transport, TransportError};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{receipt_email, stored, with_env};

const API_KEY: &str = "SG.test-key.0123456789";

fn sendgrid_config(base_url: &str) -> String {
    format!(
        r#"
        [transports.sg]
        kind = "sendgrid"
        api_key_env = "SENDGRID_API_KEY"
        base_url = "{base_url}"
        timeout_ms = 2000
        "#
    )
}

fn sendgrid(server: &MockServer) -> Arc<dyn Transport> {
    with_env(
        &sendgrid_config(&server.uri()),
        "sg",
        &[("SENDGRID_API_KEY", API_KEY)],
    )
}

#[tokio::test]
async fn sendgrid_posts_mail_send_with_the_stamp_and_keeps_its_message_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .and(header(
            "authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-7Hq2kX"))
        .expect(1)
        .mount(&server)
        .await;
    let message = receipt_email();

    let delivery = sendgrid(&server).deliver(&message).await.expect("accepted");
    assert_eq!(delivery.transport, "sg");
    assert_eq!(delivery.provider_message_id.as_deref(), Some("sg-7Hq2kX"));
    assert_eq!(delivery.detail, Some(serde_json::json!({"status": 202})));

    let requests = server.received_requests().await.expect("recorded");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).expect("JSON");
    let stamp = message.id.to_string();
    assert_eq!(
        body,
        serde_json::json!({
            "personalizations": [{
                "to": [{"email": "alice@example.com"}],
                "cc": [{"email": "carol@example.com"}],
                "bcc": [{"email": "audit@example.com"}],
                "custom_args": {"stamp": stamp}
            }],
            "from": {"email": "shop@example.com", "name": "Shop"},
            "subject": "Your receipt",
            "content": [
                {"type": "text/plain", "value": "Thanks for your order."},
                {"type": "text/html", "value": "<p>Thanks for your order.</p>"}
            ],
            "headers": {
                "X-Campaign": "winter",
                "X-Stamp-ID": stamp,
                "X-Tracking-ID": stamp
            },
            "attachments": [{
                "content": "dG90YWw6IDQyIEVVUg==",
                "type": "text/plain",
                "filename": "receipt.txt"
            }]
        })
    );
}

#[tokio::test]
async fn sendgrid_sends_display_names_and_reply_to_and_only_the_bodies_given() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&server)
        .await;
    let message = stored(serde_json::json!({
        "channel": "email",
        "email": {
            "from": "shop@example.com",
            "to": ["Alice Example <alice@example.com>", "bob@example.com"],
            "reply_to": "Help Desk <help@example.com>",
            "subject": "Plain only",
            "text": "Just text."
        }
    }));

    // An accepted email without SendGrid's id is still sent: failing it
    // would send it twice.
    let delivery = sendgrid(&server).deliver(&message).await.expect("accepted");
    assert_eq!(delivery.provider_message_id, None);

    let requests = server.received_requests().await.expect("recorded");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).expect("JSON");
    assert_eq!(
        body["personalizations"][0]["to"],
        serde_json::json!([
            {"email": "alice@example.com", "name": "Alice Example"},
            {"email": "bob@example.com"}
        ])
    );
    assert_eq!(
        body["from"],
        serde_json::json!({"email": "shop@example.com"})
    );
    assert_eq!(
        body["reply_to"],
        serde_json::json!({"email": "help@example.com", "name": "Help Desk"})
    );
    assert_eq!(
        body["content"],
        serde_json::json!([{"type": "text/plain", "value": "Just text."}])
    );
    let personalization = body["personalizations"][0].as_object().expect("an object");
    assert!(!personalization.contains_key("cc"));
    assert!(!personalization.contains_key("bcc"));
    assert!(body.get("attachments").is_none());
}

/// Delivers the receipt to a SendGrid answering `template`.
async fn answer(template: ResponseTemplate) -> TransportError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(template)
        .mount(&server)
        .await;
    sendgrid(&server)
        .deliver(&receipt_email())
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn sendgrid_answers_classify_for_retrying() {
    // A refused key is the transport's outage, not the message's fault.
    for status in [401, 403] {
        let err = answer(ResponseTemplate::new(status).set_body_string(
            r#"{"errors":[{"message":"The provided authorization grant is invalid"}]}"#,
        ))
        .await;
        assert!(
            err.is_unauthorized() && !err.is_permanent(),
            "{status}: {err}"
        );
    }
    for status in [400, 413] {
        let err = answer(ResponseTemplate::new(status).set_body_string(
            r#"{"errors":[{"message":"Does not contain a valid address.","field":"personalizations.0.to.0.email"}]}"#,
        ))
        .await;
        assert!(err.is_permanent(), "{status}: {err}");
        assert!(matches!(err, TransportError::Rejected { code: Some(c), .. } if c == status));
    }
    assert!(
        answer(ResponseTemplate::new(400).set_body_string("Does not contain a valid address"))
            .await
            .to_string()
            .contains("Does not contain a valid address")
    );

    let err = answer(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    for status in [500, 502, 503] {
        let err = answer(ResponseTemplate::new(status)).await;
        assert!(
            err.is_transient() && !err.is_unauthorized(),
            "{status}: {err}"
        );
    }
}

#[test]
fn sendgrid_without_its_key_is_a_problem_naming_api_key_env() {
    let load = |config: &str| {
        Settings::from_toml(config, Path::new("transports-test.toml"), |_| None)
            .expect_err("refused")
    };
    let unset = load(&sendgrid_config("http://127.0.0.1:9"));
    let keys: Vec<&str> = unset.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["transports.sg.api_key_env"], "{unset}");
    assert!(unset.to_string().contains("SENDGRID_API_KEY"), "{unset}");

    let missing = load("[transports.sg]\nkind = \"sendgrid\"\n");
    let keys: Vec<&str> = missing.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["transports.sg.api_key_env"], "{missing}");

    let bad_url =
        load("[transports.sg]\nkind = \"sendgrid\"\napi_key_env = \"K\"\nbase_url = \"ftp://x\"\n");
    let mut keys: Vec<&str> = bad_url.problems().iter().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["transports.sg.api_key_env", "transports.sg.base_url"],
        "{bad_url}"
    );
}

#[test]
fn sendgrid_settings_never_show_the_key() {
    let settings = Settings::from_toml(
        &sendgrid_config("http://127.0.0.1:9"),
        Path::new("transports-test.toml"),
        |var| (var == "SENDGRID_API_KEY").then(|| API_KEY.to_owned()),
    )
    .expect("valid");
    let shown = format!("{:?}", settings.transports);
    assert!(shown.contains("SendgridOptions"), "{shown}");
    assert!(!shown.contains(API_KEY), "{shown}");
}
