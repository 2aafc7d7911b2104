//! The `twilio` transport against a local server that checks each request
//! as Twilio's Messages API documents it, and answers as Twilio does.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use herald::config::Settings;
use herald::transports::{RecipientGone, TransportError};

use super::{stored, with_env};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token";
const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

fn config(base: &str, extra: &str) -> String {
    format!(
        "[transports.sms]\nkind = \"twilio\"\naccount_sid = \"{ACCOUNT}\"\n\
         auth_token_env = \"TWILIO_TOKEN\"\nbase_url = \"{base}\"\n{extra}\n"
    )
}

fn transport(base: &str, extra: &str) -> std::sync::Arc<dyn herald::transports::Transport> {
    with_env(&config(base, extra), "sms", &[("TWILIO_TOKEN", TOKEN)])
}

fn sms(body: serde_json::Value) -> herald::domain::Message {
    stored(serde_json::json!({ "channel": "sms", "sms": body }))
}

fn basic() -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{TOKEN}"));
    format!("Basic {pair}")
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn twilio_posts_the_documented_form_and_keeps_the_message_sid() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(header("authorization", basic().as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": "SM0123456789abcdef0123456789abcdef",
            "status": "queued",
            "account_sid": ACCOUNT
        })))
        .expect(1)
        .mount(&server)
        .await;
    let twilio = transport(
        &server.uri(),
        "from = \"+14155550000\"\nstatus_callback = \"https://herald.example.com/api/feedback/sms\"",
    );
    let message = sms(serde_json::json!({
        "to": "+14155550100",
        "body": "Your code is 1234",
        "media_urls": ["https://cdn.example.com/a.png", "https://cdn.example.com/b.png"]
    }));
    let delivery = twilio.deliver(&message).await.expect("sent");
    assert_eq!(
        delivery.provider_message_id.as_deref(),
        Some("SM0123456789abcdef0123456789abcdef")
    );
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(
        form(&requests[0].body),
        pairs(&[
            ("To", "+14155550100"),
            ("From", "+14155550000"),
            ("Body", "Your code is 1234"),
            ("MediaUrl", "https://cdn.example.com/a.png"),
            ("MediaUrl", "https://cdn.example.com/b.png"),
            (
                "StatusCallback",
                "https://herald.example.com/api/feedback/sms"
            ),
        ])
    );
}

#[tokio::test]
async fn twilio_sends_through_a_messaging_service_and_a_message_may_name_its_sender() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"sid": "SM1"})))
        .mount(&server)
        .await;
    let twilio = transport(
        &server.uri(),
        &format!("messaging_service_sid = \"{SERVICE}\""),
    );
    twilio
        .deliver(&sms(
            serde_json::json!({"to": "+14155550100", "body": "hi"}),
        ))
        .await
        .expect("sent");
    twilio
        .deliver(&sms(
            serde_json::json!({"to": "+14155550100", "from": "Herald", "body": "hi"}),
        ))
        .await
        .expect("sent");
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(
        form(&requests[0].body),
        pairs(&[
            ("To", "+14155550100"),
            ("MessagingServiceSid", SERVICE),
            ("Body", "hi"),
        ])
    );
    assert_eq!(
        form(&requests[1].body),
        pairs(&[
            ("To", "+14155550100"),
            ("From", "Herald"),
            ("MessagingServiceSid", SERVICE),
            ("Body", "hi"),
        ])
    );
}

/// What one SMS comes to against a Twilio answering `status` with the
/// error `code` (and `retry_after`, when given).
async fn refused(status: u16, code: u32, retry_after: Option<&str>) -> TransportError {
    let server = MockServer::start().await;
    let mut answer = ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "code": code,
        "message": format!("error {code}"),
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status
    }));
    if let Some(wait) = retry_after {
        answer = answer.insert_header("Retry-After", wait);
    }
    Mock::given(method("POST"))
        .respond_with(answer)
        .mount(&server)
        .await;
    transport(&server.uri(), "from = \"+14155550000\"")
        .deliver(&sms(
            serde_json::json!({"to": "+14155550100", "body": "hi"}),
        ))
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn twilio_answers_are_classified_by_their_error_codes() {
    let stop = refused(400, 21610, None).await;
    assert_eq!(
        stop.recipient_gone(),
        Some(RecipientGone::Unsubscribed),
        "{stop}"
    );
    assert!(stop.is_permanent());
    assert!(stop.to_string().contains("21610"), "{stop}");
    let invalid = refused(400, 21211, None).await;
    assert_eq!(
        invalid.recipient_gone(),
        Some(RecipientGone::Invalid),
        "{invalid}"
    );
    let bad_request = refused(400, 21602, None).await;
    assert!(
        bad_request.is_permanent() && bad_request.recipient_gone().is_none(),
        "{bad_request}"
    );
    let limited = refused(429, 20429, Some("3")).await;
    assert!(limited.is_transient(), "{limited}");
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
    let auth = refused(401, 20003, None).await;
    assert!(auth.is_unauthorized(), "{auth}");
    let down = refused(503, 20500, None).await;
    assert!(down.is_transient() && !down.is_unauthorized(), "{down}");
}

#[test]
fn twilio_config_mistakes_are_named_at_start() {
    let config = "
        [transports.a]
        kind = \"twilio\"
        account_sid = \"AC123\"
        auth_token_env = \"UNSET\"
        from = \"+14155550000\"

        [transports.b]
        kind = \"twilio\"
        account_sid = \"AC0123456789abcdef0123456789abcdef\"
        messaging_service_sid = \"XX1\"

        [transports.c]
        kind = \"twilio\"
        account_sid = \"AC0123456789abcdef0123456789abcdef\"
        auth_token_env = \"SET\"
        base_url = \"ftp://api.example.com\"
    ";
    let err = Settings::from_toml(config, Path::new("twilio-test.toml"), |var| {
        (var == "SET").then(|| "token".to_owned())
    })
    .expect_err("refused");
    let mut keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "transports.a.account_sid",
            "transports.a.auth_token_env",
            "transports.b.auth_token_env",
            "transports.b.messaging_service_sid",
            "transports.c.base_url",
            "transports.c.from",
        ],
        "{err}"
    );
}
