//! The `mailgun` transport against a wiremock server standing in for
//! Mailgun's API: the multipart request as Mailgun documents it, read
//! back part by part, the stamp in `v:stamp` and the headers, and each
//! answer classified.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use herald::config::Settings;
use herald::transports::{Transport, TransportError};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::{receipt_email, with_env};

const API_KEY: &str = "key-test-0123456789abcdef";

fn mailgun_config(base_url: &str) -> String {
    format!(
        r#"
        [transports.mg]
        kind = "mailgun"
        domain = "mg.example.com"
        api_key_env = "MAILGUN_API_KEY"
        base_url = "{base_url}"
        timeout_ms = 2000
        "#
    )
}

fn mailgun(server: &MockServer) -> Arc<dyn Transport> {
    with_env(
        &mailgun_config(&server.uri()),
        "mg",
        &[("MAILGUN_API_KEY", API_KEY)],
    )
}

/// One part of a multipart/form-data body.
#[derive(Debug)]
struct FormPart {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    value: Vec<u8>,
}

impl FormPart {
    fn text(&self) -> String {
        String::from_utf8(self.value.clone()).expect("a text part")
    }
}

/// A quoted parameter (`name="..."`) of a Content-Disposition header.
fn parameter(disposition: &str, key: &str) -> Option<String> {
    let start = disposition.find(&format!("{key}=\""))? + key.len() + 2;
    let end = disposition[start..].find('"')? + start;
    Some(disposition[start..end].to_owned())
}

/// The parts of `request`'s multipart/form-data body, split on the
/// boundary its Content-Type names, as a receiving server splits them.
fn form_parts(request: &Request) -> Vec<FormPart> {
    let content_type = request
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .expect("a content type");
    assert!(
        content_type.starts_with("multipart/form-data;"),
        "{content_type}"
    );
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("a boundary")
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let body = &request.body;
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(at) = body[i..]
        .windows(delimiter.len())
        .position(|w| w == delimiter.as_bytes())
    {
        starts.push(i + at);
        i += at + delimiter.len();
    }
    let closing = *starts.last().expect("a closing delimiter");
    assert_eq!(
        &body[closing + delimiter.len()..closing + delimiter.len() + 2],
        b"--"
    );
    starts
        .windows(2)
        .map(|pair| {
            // Each part sits between "--boundary\r\n" and "\r\n--boundary".
            let part = &body[pair[0] + delimiter.len() + 2..pair[1] - 2];
            let split = part
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("headers, then the value");
            let headers = String::from_utf8(part[..split].to_vec()).expect("text headers");
            let header = |name: &str| {
                headers.split("\r\n").find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_owned())
                })
            };
            let disposition = header("content-disposition").expect("a disposition");
            assert!(disposition.starts_with("form-data;"), "{disposition}");
            FormPart {
                name: parameter(&disposition, "name").expect("a name"),
                filename: parameter(&disposition, "filename"),
                content_type: header("content-type"),
                value: part[split + 4..].to_vec(),
            }
        })
        .collect()
}

#[tokio::test]
async fn mailgun_posts_a_multipart_message_with_the_stamp_and_keeps_its_id() {
    let server = MockServer::start().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("api:{API_KEY}"));
    Mock::given(method("POST"))
        .and(path("/v3/mg.example.com/messages"))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "<20260101000000.1.ABCDEF@mg.example.com>",
            "message": "Queued. Thank you."
        })))
        .expect(1)
        .mount(&server)
        .await;
    let message = receipt_email();

    let delivery = mailgun(&server).deliver(&message).await.expect("accepted");
    assert_eq!(delivery.transport, "mg");
    assert_eq!(
        delivery.provider_message_id.as_deref(),
        Some("<20260101000000.1.ABCDEF@mg.example.com>")
    );
    assert_eq!(delivery.detail, Some(serde_json::json!({"status": 200})));

    let requests = server.received_requests().await.expect("recorded");
    let parts = form_parts(&requests[0]);
    let stamp = message.id.to_string();
    let fields: Vec<(&str, String)> = parts
        .iter()
        .filter(|p| p.filename.is_none())
        .map(|p| (p.name.as_str(), p.text()))
        .collect();
    let expected: Vec<(&str, String)> = [
        ("from", "Shop <shop@example.com>"),
        ("to", "alice@example.com"),
        ("cc", "carol@example.com"),
        ("bcc", "audit@example.com"),
        ("subject", "Your receipt"),
        ("text", "Thanks for your order."),
        ("html", "<p>Thanks for your order.</p>"),
        ("h:X-Campaign", "winter"),
        ("h:X-Stamp-ID", stamp.as_str()),
        ("h:X-Tracking-ID", stamp.as_str()),
        ("v:stamp", stamp.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    assert_eq!(fields, expected);

    let files: Vec<&FormPart> = parts.iter().filter(|p| p.filename.is_some()).collect();
    assert_eq!(files.len(), 1, "{parts:?}");
    assert_eq!(files[0].name, "attachment");
    assert_eq!(files[0].filename.as_deref(), Some("receipt.txt"));
    assert_eq!(files[0].content_type.as_deref(), Some("text/plain"));
    assert_eq!(files[0].value, b"total: 42 EUR");
}

#[tokio::test]
async fn mailgun_sends_every_recipient_and_the_reply_to_as_its_own_field() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mg.example.com/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_string("Queued"))
        .mount(&server)
        .await;
    let message = super::stored(serde_json::json!({
        "channel": "email",
        "email": {
            "from": "shop@example.com",
            "to": ["\"Doe, Jane\" <jane@example.com>", "bob@example.com"],
            "reply_to": "Help Desk <help@example.com>",
            "subject": "HTML only",
            "html": "<p>Hi</p>"
        }
    }));
    // An accepted email without an id that parses is still sent: failing
    // it would send it twice.
    let delivery = mailgun(&server).deliver(&message).await.expect("accepted");
    assert_eq!(delivery.provider_message_id, None);

    let requests = server.received_requests().await.expect("recorded");
    let parts = form_parts(&requests[0]);
    let values = |name: &str| -> Vec<String> {
        parts
            .iter()
            .filter(|p| p.name == name)
            .map(FormPart::text)
            .collect()
    };
    assert_eq!(
        values("to"),
        ["\"Doe, Jane\" <jane@example.com>", "bob@example.com"]
    );
    assert_eq!(values("h:Reply-To"), ["Help Desk <help@example.com>"]);
    for absent in ["cc", "bcc", "text", "attachment"] {
        assert!(values(absent).is_empty(), "{absent}: {parts:?}");
    }
}

/// Delivers the receipt to a Mailgun answering `template`.
async fn answer(template: ResponseTemplate) -> TransportError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mg.example.com/messages"))
        .respond_with(template)
        .mount(&server)
        .await;
    mailgun(&server)
        .deliver(&receipt_email())
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn mailgun_answers_classify_by_status() {
    // A refused key is the transport's outage, not the message's fault.
    let err = answer(ResponseTemplate::new(401).set_body_string("Forbidden")).await;
    assert!(err.is_unauthorized() && !err.is_permanent(), "{err}");

    let err = answer(
        ResponseTemplate::new(400)
            .set_body_json(serde_json::json!({"message": "to parameter is not a valid address"})),
    )
    .await;
    assert!(err.is_permanent(), "{err}");
    assert!(matches!(
        err,
        TransportError::Rejected {
            code: Some(400),
            ..
        }
    ));
    assert!(err.to_string().contains("not a valid address"), "{err}");

    let err = answer(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    let err = answer(ResponseTemplate::new(500)).await;
    assert!(err.is_transient() && !err.is_unauthorized(), "{err}");
}

#[test]
fn mailgun_config_problems_name_their_keys() {
    let load = |config: &str, vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_toml(config, Path::new("transports-test.toml"), move |var| {
            vars.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
        })
    };
    let keys = |err: &herald::config::ConfigError| -> Vec<String> {
        let mut keys: Vec<String> = err.problems().iter().map(|p| p.key.clone()).collect();
        keys.sort_unstable();
        keys
    };
    let unset = load(&mailgun_config("http://127.0.0.1:9"), &[]).expect_err("refused");
    assert_eq!(keys(&unset), ["transports.mg.api_key_env"], "{unset}");
    assert!(unset.to_string().contains("MAILGUN_API_KEY"), "{unset}");

    let missing = load("[transports.mg]\nkind = \"mailgun\"\n", &[]).expect_err("refused");
    assert_eq!(
        keys(&missing),
        ["transports.mg.api_key_env", "transports.mg.domain"],
        "{missing}"
    );

    let key = [("MAILGUN_API_KEY", API_KEY)];
    let regional = |region: &str| {
        format!(
            "[transports.mg]\nkind = \"mailgun\"\ndomain = \"mg.example.com\"\n\
             api_key_env = \"MAILGUN_API_KEY\"\nregion = \"{region}\"\n"
        )
    };
    let bad_region = load(&regional("asia"), &key).expect_err("refused");
    assert_eq!(keys(&bad_region), ["transports.mg.region"], "{bad_region}");
    assert!(bad_region.to_string().contains("asia"), "{bad_region}");
    for region in ["us", "eu"] {
        load(&regional(region), &key).unwrap_or_else(|e| panic!("{region}: {e}"));
    }

    let bad_domain = load(
        &mailgun_config("http://127.0.0.1:9").replace("mg.example.com", "mg.example.com/../x"),
        &key,
    )
    .expect_err("refused");
    assert_eq!(keys(&bad_domain), ["transports.mg.domain"], "{bad_domain}");
}

#[test]
fn mailgun_settings_never_show_the_key() {
    let settings = Settings::from_toml(
        &mailgun_config("http://127.0.0.1:9"),
        Path::new("transports-test.toml"),
        |var| (var == "MAILGUN_API_KEY").then(|| API_KEY.to_owned()),
    )
    .expect("valid");
    let shown = format!("{:?}", settings.transports);
    assert!(shown.contains("MailgunOptions"), "{shown}");
    assert!(!shown.contains(API_KEY), "{shown}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("api:{API_KEY}"));
    assert!(!shown.contains(&basic), "{shown}");
}
