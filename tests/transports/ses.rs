//! The `ses` transport against a wiremock server standing in for SES's
//! v2 API. The server checks each request's SigV4 signature as SES would,
//! recomputed here from the made-up credentials by a separate
//! implementation of the algorithm, so a request the real service would
//! refuse is refused here too. Also: the raw MIME as sent, the stamp, and
//! each answer classified by its error type.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{TimeZone, Utc};
use herald::config::{Secret, Settings};
use herald::time::ManualClock;
use herald::transports::{SesOptions, SesTransport, Transport, TransportError};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use url::Url;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::{receipt_email, with_env};

const KEY_ID: &str = "AKIDTESTONLY0EXAMPLE";
const SECRET: &str = "made-up/secret+key-for-tests-only";
const REGION: &str = "eu-west-1";
const SEND_PATH: &str = "/v2/email/outbound-emails";

fn options(server: &MockServer, secret: &str, session_token: Option<&str>) -> SesOptions {
    SesOptions {
        region: REGION.into(),
        access_key_id: Secret::new(KEY_ID),
        secret_access_key: Secret::new(secret),
        session_token: session_token.map(Secret::new),
        endpoint: Url::parse(&server.uri()).expect("the server's URL"),
        configuration_set: Some("receipts".into()),
        timeout: Duration::from_secs(2),
        feedback: None,
    }
}

/// An SES transport whose clock stands at 2026-01-01 12:00:00 UTC.
fn at_noon(options: SesOptions) -> SesTransport {
    let noon = Utc
        .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid date");
    SesTransport::new("ses", options, Arc::new(ManualClock::new(noon)))
        .expect("the transport builds")
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// What a receiver checks of SigV4: the `Authorization` header's scope,
/// and its signature recomputed from `secret` over the request as
/// received (method, path, query, the headers it says it signed, the
/// body's hash). The reason it does not hold, if it does not.
fn check_signature(request: &Request, secret: &str) -> Result<(), String> {
    let authorization = header(request, "authorization").ok_or("no Authorization")?;
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .ok_or(format!("no {name}"))
    };
    let (credential, signed_headers, signature) = (
        field("Credential")?,
        field("SignedHeaders")?,
        field("Signature")?,
    );
    let amz_date = header(request, "x-amz-date").ok_or("no X-Amz-Date")?;
    let date = amz_date.get(..8).ok_or("a short X-Amz-Date")?;
    let scope = format!("{date}/{REGION}/ses/aws4_request");
    if credential != format!("{KEY_ID}/{scope}") {
        return Err(format!("credential {credential}, scope {scope}"));
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    for required in ["host", "x-amz-date", "content-type"] {
        if !signed.contains(&required) {
            return Err(format!("{required} is not signed: {signed_headers}"));
        }
    }
    let mut sorted = signed.clone();
    sorted.sort_unstable();
    if sorted != signed {
        return Err(format!("signed headers out of order: {signed_headers}"));
    }
    let canonical_headers: String = signed
        .iter()
        .map(|name| {
            let values: Vec<String> = request
                .headers
                .get_all(*name)
                .iter()
                .map(|v| {
                    let text = v.to_str().unwrap_or_default();
                    text.split_whitespace().collect::<Vec<_>>().join(" ")
                })
                .collect();
            format!("{name}:{}\n", values.join(","))
        })
        .collect();
    let body_hash = hex::encode(Sha256::digest(&request.body));
    if let Some(claimed) = header(request, "x-amz-content-sha256")
        && claimed != body_hash
    {
        return Err("x-amz-content-sha256 is not the body's hash".into());
    }
    let mut query: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{body_hash}",
        request.method.as_str(),
        request.url.path(),
        query.join("&"),
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let key = hmac(format!("AWS4{secret}").as_bytes(), date);
    let key = hmac(&key, REGION);
    let key = hmac(&key, "ses");
    let key = hmac(&key, "aws4_request");
    let expected = hex::encode(hmac(&key, &string_to_sign));
    if signature != expected {
        return Err(format!(
            "signature {signature}, expected {expected} over\n{canonical_request}"
        ));
    }
    Ok(())
}

/// A stand-in for SES that answers `accepted` to a request whose
/// signature holds for `secret`, and 403 `SignatureDoesNotMatch` as SES
/// does to any other.
async fn ses_server(secret: &'static str, accepted: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(
            move |request: &Request| match check_signature(request, secret) {
                Ok(()) => accepted.clone(),
                Err(reason) => ResponseTemplate::new(403)
                    .insert_header("x-amzn-ErrorType", "SignatureDoesNotMatch")
                    .set_body_json(serde_json::json!({ "message": reason })),
            },
        )
        .mount(&server)
        .await;
    server
}

fn accepted() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(serde_json::json!({"MessageId": "0102018c-test-message-id-000000"}))
}

#[tokio::test]
async fn ses_sends_signed_raw_mime_with_the_stamp_and_keeps_its_message_id() {
    let server = ses_server(SECRET, accepted()).await;
    let message = receipt_email();

    let delivery = at_noon(options(&server, SECRET, None))
        .deliver(&message)
        .await
        .unwrap_or_else(|e| panic!("the signature holds: {e}"));
    assert_eq!(delivery.transport, "ses");
    assert_eq!(
        delivery.provider_message_id.as_deref(),
        Some("0102018c-test-message-id-000000")
    );

    let requests = server.received_requests().await.expect("recorded");
    let request = &requests[0];
    assert_eq!(header(request, "content-type"), Some("application/json"));
    // The signature's time is the transport's clock's.
    assert_eq!(header(request, "x-amz-date"), Some("20260101T120000Z"));
    assert!(
        header(request, "authorization").is_some_and(|a| a.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={KEY_ID}/20260101/{REGION}/ses/aws4_request, SignedHeaders="
        ))),
        "{:?}",
        header(request, "authorization")
    );
    assert_eq!(header(request, "x-amz-security-token"), None);

    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON");
    let stamp = message.id.to_string();
    let raw = body["Content"]["Raw"]["Data"].as_str().expect("raw data");
    let mime = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .expect("base64");
    let mime = String::from_utf8(mime).expect("text");
    assert!(mime.contains(&format!("X-Stamp-ID: {stamp}\r\n")), "{mime}");
    assert!(
        mime.contains(&format!("X-Tracking-ID: {stamp}\r\n")),
        "{mime}"
    );
    assert!(mime.contains("Subject: Your receipt\r\n"), "{mime}");
    assert!(mime.contains("X-Campaign: winter\r\n"), "{mime}");
    assert!(mime.contains("filename=\"receipt.txt\""), "{mime}");
    assert!(
        !mime.contains("audit@example.com"),
        "bcc stays off the headers"
    );
    assert_eq!(
        body["Destination"],
        serde_json::json!({
            "ToAddresses": ["alice@example.com"],
            "CcAddresses": ["carol@example.com"],
            "BccAddresses": ["audit@example.com"]
        })
    );
    assert_eq!(
        body["EmailTags"],
        serde_json::json!([{"Name": "stamp", "Value": stamp}])
    );
    assert_eq!(body["ConfigurationSetName"], "receipts");
}

#[tokio::test]
async fn ses_signs_the_session_token_of_temporary_credentials() {
    let server = ses_server(SECRET, accepted()).await;
    at_noon(options(&server, SECRET, Some("session-token-made-up")))
        .deliver(&receipt_email())
        .await
        .unwrap_or_else(|e| panic!("the signature holds: {e}"));
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(
        header(&requests[0], "x-amz-security-token"),
        Some("session-token-made-up")
    );
    let authorization = header(&requests[0], "authorization").expect("signed");
    assert!(
        authorization.contains("x-amz-security-token"),
        "{authorization}"
    );
}

#[tokio::test]
async fn ses_with_a_wrong_secret_is_refused_and_that_is_the_transport_s_outage() {
    let server = ses_server(SECRET, accepted()).await;
    let err = at_noon(options(&server, "not-the-secret", None))
        .deliver(&receipt_email())
        .await
        .expect_err("the receiver's check fails");
    assert!(err.is_unauthorized() && !err.is_permanent(), "{err}");
    assert!(err.to_string().contains("signature"), "{err}");
}

fn ses_config(endpoint: &str) -> String {
    format!(
        r#"
        [transports.ses]
        kind = "ses"
        region = "{REGION}"
        access_key_id_env = "SES_ACCESS_KEY_ID"
        secret_access_key_env = "SES_SECRET_ACCESS_KEY"
        endpoint = "{endpoint}"
        timeout_ms = 2000
        "#
    )
}

/// Delivers the receipt, through a transport built from config, to an SES
/// answering `template` to a well-signed request.
async fn answer(template: ResponseTemplate) -> TransportError {
    let server = ses_server(SECRET, template).await;
    with_env(
        &ses_config(&server.uri()),
        "ses",
        &[
            ("SES_ACCESS_KEY_ID", KEY_ID),
            ("SES_SECRET_ACCESS_KEY", SECRET),
        ],
    )
    .deliver(&receipt_email())
    .await
    .expect_err("refused")
}

fn refusal(status: u16, error_type: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("x-amzn-ErrorType", error_type)
        .set_body_json(serde_json::json!({ "message": message }))
}

#[tokio::test]
async fn ses_answers_classify_by_error_type_and_status() {
    let err = answer(refusal(
        400,
        "MessageRejected",
        "Email address is not verified.",
    ))
    .await;
    assert!(err.is_permanent(), "{err}");
    assert!(matches!(
        err,
        TransportError::Rejected {
            code: Some(400),
            ..
        }
    ));
    assert!(err.to_string().contains("not verified"), "{err}");

    let err = answer(refusal(
        400,
        "MailFromDomainNotVerifiedException",
        "MAIL FROM domain not verified",
    ))
    .await;
    assert!(err.is_permanent(), "{err}");

    // The account cannot send: the breaker opens, no attempt is spent.
    for error_type in ["AccountSuspendedException", "SendingPausedException"] {
        let err = answer(refusal(400, error_type, "sending is off")).await;
        assert!(err.is_unauthorized() && !err.is_permanent(), "{err}");
    }
    // The type may come in the body alone, namespaced.
    let err = answer(ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "__type": "com.amazonaws.sesv2#AccountSuspendedException",
        "message": "suspended"
    })))
    .await;
    assert!(err.is_unauthorized(), "{err}");
    let err = answer(refusal(403, "InvalidClientTokenId", "bad key")).await;
    assert!(err.is_unauthorized(), "{err}");

    let err = answer(
        refusal(
            429,
            "TooManyRequestsException",
            "Maximum sending rate exceeded.",
        )
        .insert_header("Retry-After", "3"),
    )
    .await;
    assert!(err.is_transient() && !err.is_unauthorized(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    let err = answer(refusal(400, "LimitExceededException", "Daily quota")).await;
    assert!(err.is_transient(), "{err}");

    let err = answer(refusal(500, "InternalFailure", "oops")).await;
    assert!(err.is_transient() && !err.is_unauthorized(), "{err}");
    let err = answer(ResponseTemplate::new(400).set_body_string("no type")).await;
    assert!(err.is_permanent(), "{err}");
}

#[test]
fn ses_config_problems_name_their_keys() {
    let load = |config: &str, vars: &[(&'static str, &'static str)]| {
        let vars = vars.to_vec();
        Settings::from_toml(config, Path::new("transports-test.toml"), move |var| {
            vars.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| (*v).to_owned())
        })
    };
    let keys = |err: &herald::config::ConfigError| -> Vec<String> {
        let mut keys: Vec<String> = err.problems().iter().map(|p| p.key.clone()).collect();
        keys.sort_unstable();
        keys
    };
    let unset = load(&ses_config("http://127.0.0.1:9"), &[]).expect_err("refused");
    assert_eq!(
        keys(&unset),
        [
            "transports.ses.access_key_id_env",
            "transports.ses.secret_access_key_env"
        ],
        "{unset}"
    );
    assert!(unset.to_string().contains("SES_ACCESS_KEY_ID"), "{unset}");
    assert!(
        unset.to_string().contains("SES_SECRET_ACCESS_KEY"),
        "{unset}"
    );

    let only_id = load(
        &ses_config("http://127.0.0.1:9"),
        &[("SES_ACCESS_KEY_ID", KEY_ID)],
    )
    .expect_err("refused");
    assert_eq!(
        keys(&only_id),
        ["transports.ses.secret_access_key_env"],
        "{only_id}"
    );

    let missing = load("[transports.ses]\nkind = \"ses\"\n", &[]).expect_err("refused");
    assert_eq!(
        keys(&missing),
        [
            "transports.ses.access_key_id_env",
            "transports.ses.region",
            "transports.ses.secret_access_key_env"
        ],
        "{missing}"
    );

    let vars = [
        ("SES_ACCESS_KEY_ID", KEY_ID),
        ("SES_SECRET_ACCESS_KEY", SECRET),
    ];
    let bad_region = load(
        &ses_config("http://127.0.0.1:9").replace(REGION, "eu-west-1.evil.example"),
        &vars,
    )
    .expect_err("refused");
    assert_eq!(keys(&bad_region), ["transports.ses.region"], "{bad_region}");
    let bad_endpoint = load(&ses_config("ftp://127.0.0.1:9"), &vars).expect_err("refused");
    assert_eq!(
        keys(&bad_endpoint),
        ["transports.ses.endpoint"],
        "{bad_endpoint}"
    );
    // Without `endpoint`, the region's.
    load(
        "[transports.ses]\nkind = \"ses\"\nregion = \"us-east-1\"\n\
         access_key_id_env = \"SES_ACCESS_KEY_ID\"\n\
         secret_access_key_env = \"SES_SECRET_ACCESS_KEY\"\n",
        &vars,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn ses_settings_never_show_the_credentials() {
    let settings = Settings::from_toml(
        &ses_config("http://127.0.0.1:9").replace(
            "timeout_ms",
            "session_token_env = \"SES_SESSION_TOKEN\"\ntimeout_ms",
        ),
        Path::new("transports-test.toml"),
        |var| match var {
            "SES_ACCESS_KEY_ID" => Some(KEY_ID.to_owned()),
            "SES_SECRET_ACCESS_KEY" => Some(SECRET.to_owned()),
            "SES_SESSION_TOKEN" => Some("session-token-made-up".to_owned()),
            _ => None,
        },
    )
    .expect("valid");
    let shown = format!("{:?}", settings.transports);
    assert!(shown.contains("SesOptions"), "{shown}");
    for secret in [KEY_ID, SECRET, "session-token-made-up"] {
        assert!(!shown.contains(secret), "{shown}");
    }
}
