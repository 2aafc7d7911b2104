//! The `apns` transport against a local HTTP/2 server (h2c, prior
//! knowledge: wiremock speaks HTTP/1 only) that records each request as
//! APNs receives it and answers as scripted, the way APNs answers: an
//! `apns-id` header on success, `{"reason"}` on a refusal. The signing key
//! is made for each test and written to a temporary file.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{HeaderMap, Request, Response, Version};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::json;

use herald::config::Settings;
use herald::domain::Message;
use herald::time::{Clock, ManualClock};
use herald::transports::apns::{PushType, SigningKey};
use herald::transports::{ApnsOptions, ApnsTransport, RecipientGone, Transport};

use super::{stored, with_env};

const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "DEF123GHIJ";
const TOPIC: &str = "com.example.shop";

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Received {
    version: Version,
    method: String,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The provider token, without its `bearer ` scheme.
    fn jwt(&self) -> &str {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("bearer "))
            .unwrap_or_else(|| panic!("a bearer token: {:?}", self.headers))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An answer to give: status, headers, body.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
}

fn refusal(status: u16, body: &'static str) -> Reply {
    Reply {
        status,
        headers: vec![],
        body,
    }
}

#[derive(Default)]
struct ServerState {
    received: Vec<Received>,
    /// Answered in order; once empty, every request is accepted.
    script: VecDeque<Reply>,
}

/// An HTTP/2 cleartext server on 127.0.0.1 standing in for APNs.
struct ApnsServer {
    addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
}

impl ApnsServer {
    async fn start(script: Vec<Reply>) -> ApnsServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(ServerState {
            received: Vec::new(),
            script: script.into(),
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        ApnsServer { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().expect("state").received.clone()
    }
}

async fn answer(state: &Mutex<ServerState>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let received = Received {
        version: parts.version,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    };
    let apns_id = received.header("apns-id").unwrap_or_default().to_owned();
    let reply = {
        let mut state = state.lock().expect("state");
        state.received.push(received);
        state.script.pop_front()
    };
    let mut response = Response::builder();
    let body = match reply {
        Some(reply) => {
            response = response.status(reply.status);
            for (name, value) in reply.headers {
                response = response.header(name, value);
            }
            reply.body
        }
        None => {
            response = response.status(200).header("apns-id", apns_id);
            ""
        }
    };
    response
        .body(Full::new(Bytes::from(body)))
        .expect("a response")
}

/// A P-256 key pair as Apple hands out the private half (PKCS#8 PEM),
/// the private key written to a file in `dir`.
struct TestKey {
    file: std::path::PathBuf,
    private_pem: String,
    public_pem: String,
}

fn test_key(dir: &Path) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key");
    let private_pem = pair.serialize_pem();
    let file = dir.join("AuthKey.p8");
    std::fs::write(&file, &private_pem).expect("the key file");
    TestKey {
        file,
        private_pem,
        public_pem: pair.public_key_pem(),
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

fn options(key: &TestKey, server: &ApnsServer, push_type: PushType) -> ApnsOptions {
    ApnsOptions {
        key: SigningKey::from_pem(key.private_pem.as_bytes()).expect("the test key"),
        key_id: KEY_ID.into(),
        team_id: TEAM_ID.into(),
        topic: TOPIC.into(),
        base_url: server.url().parse().expect("a URL"),
        push_type,
        priority: if push_type == PushType::Alert { 10 } else { 5 },
        timeout: Duration::from_secs(5),
    }
}

fn with_clock(key: &TestKey, server: &ApnsServer, clock: Arc<ManualClock>) -> ApnsTransport {
    ApnsTransport::new("ios", options(key, server, PushType::Alert), clock).expect("built")
}

fn push(body: serde_json::Value) -> Message {
    stored(json!({ "channel": "push", "transport": "provider", "push": body }))
}

const TOKEN: &str = "0f9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

fn simple_push() -> Message {
    push(json!({"token": TOKEN, "title": "Hi", "body": "There"}))
}

/// The token's header and claims, its signature checked with `key`'s
/// public half.
fn verified(jwt: &str, key: &TestKey) -> (jsonwebtoken::Header, serde_json::Value) {
    let decoding = DecodingKey::from_ec_pem(key.public_pem.as_bytes()).expect("the public key");
    let mut validation = Validation::new(Algorithm::ES256);
    // Apple's provider tokens carry no `exp` or `aud`: their age is iat's.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(jwt, &decoding, &validation)
        .expect("a token signed with the team's key");
    (data.header, data.claims)
}

#[tokio::test]
async fn apns_posts_the_documented_request_over_http2_with_a_verifiable_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key(dir.path());
    let server = ApnsServer::start(vec![]).await;
    let config = format!(
        "[transports.ios]\nkind = \"apns\"\nkey_file = {:?}\nkey_id = \"{KEY_ID}\"\n\
         team_id = \"{TEAM_ID}\"\ntopic = \"{TOPIC}\"\nbase_url = \"{}\"\n",
        key.file.display().to_string(),
        server.url()
    );
    let apns = with_env(&config, "ios", &[]);
    assert_eq!(apns.kind(), "apns");
    let message = push(json!({
        "token": TOKEN,
        "title": "Your order shipped",
        "body": "It arrives on Friday.",
        "data": {"order": "42", "screen": "orders"},
        "badge": 3,
        "sound": "default",
        "ttl_s": 3600,
        "collapse_key": "order-42"
    }));
    let before = herald::time::SystemClock.now().timestamp();
    let delivery = apns.deliver(&message).await.expect("delivered");
    let after = herald::time::SystemClock.now().timestamp();

    let stamp_uuid = uuid::Uuid::from(message.id.0).hyphenated().to_string();
    assert_eq!(delivery.transport, "ios");
    assert_eq!(
        delivery.provider_message_id.as_deref(),
        Some(stamp_uuid.as_str())
    );
    let received = server.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.version, Version::HTTP_2);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/3/device/{TOKEN}"));
    assert_eq!(request.header("apns-id"), Some(stamp_uuid.as_str()));
    assert_eq!(request.header("apns-topic"), Some(TOPIC));
    assert_eq!(request.header("apns-push-type"), Some("alert"));
    assert_eq!(request.header("apns-priority"), Some("10"));
    assert_eq!(request.header("apns-collapse-id"), Some("order-42"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let expiration: i64 = request
        .header("apns-expiration")
        .and_then(|v| v.parse().ok())
        .expect("a numeric apns-expiration");
    assert!(
        (before + 3600..=after + 3600).contains(&expiration),
        "{expiration}"
    );
    assert_eq!(
        request.json(),
        json!({
            "aps": {
                "alert": {"title": "Your order shipped", "body": "It arrives on Friday."},
                "badge": 3,
                "sound": "default"
            },
            "order": "42",
            "screen": "orders"
        })
    );
    let (header, claims) = verified(request.jwt(), &key);
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(KEY_ID));
    let iat = claims["iat"].as_i64().expect("a numeric iat");
    assert!((before..=after).contains(&iat), "{iat}");
    assert_eq!(claims, json!({"iss": TEAM_ID, "iat": iat}));
}

#[tokio::test]
async fn apns_without_ttl_or_collapse_key_asks_for_no_storage_and_sends_no_collapse_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key(dir.path());
    let server = ApnsServer::start(vec![Reply {
        status: 200,
        headers: vec![("apns-id", "7c4c8f4e-0000-4000-8000-000000000001")],
        body: "",
    }])
    .await;
    let apns = with_clock(&key, &server, Arc::new(ManualClock::new(t0())));
    let delivery = apns
        .deliver(&push(json!({"token": TOKEN, "body": "Hello"})))
        .await
        .expect("delivered");
    // The id APNs answers with is the one kept.
    assert_eq!(
        delivery.provider_message_id.as_deref(),
        Some("7c4c8f4e-0000-4000-8000-000000000001")
    );
    let request = &server.received()[0];
    assert_eq!(request.header("apns-expiration"), Some("0"));
    assert_eq!(request.header("apns-collapse-id"), None);
    assert_eq!(request.json(), json!({"aps": {"alert": {"body": "Hello"}}}));
}

#[tokio::test]
async fn apns_background_pushes_carry_content_available_at_priority_5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key(dir.path());
    let server = ApnsServer::start(vec![]).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let apns = ApnsTransport::new(
        "ios-sync",
        options(&key, &server, PushType::Background),
        clock,
    )
    .expect("built");
    apns.deliver(&push(
        json!({"token": TOKEN, "data": {"sync": "inbox"}, "ttl_s": 60}),
    ))
    .await
    .expect("delivered");
    let request = &server.received()[0];
    assert_eq!(request.header("apns-push-type"), Some("background"));
    assert_eq!(request.header("apns-priority"), Some("5"));
    let expiration = (t0().timestamp() + 60).to_string();
    assert_eq!(request.header("apns-expiration"), Some(expiration.as_str()));
    assert_eq!(
        request.json(),
        json!({"aps": {"content-available": 1}, "sync": "inbox"})
    );
}

/// A [`ManualClock`] that also moves one second on every reading, so
/// that tokens signed at two readings differ in their `iat` (ES256 here
/// signs deterministically: one `iat`, one token).
struct Ticking {
    manual: ManualClock,
    readings: AtomicI64,
}

impl Clock for Ticking {
    fn now(&self) -> DateTime<Utc> {
        self.manual.now() + TimeDelta::seconds(self.readings.fetch_add(1, Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apns_signs_one_token_for_concurrent_deliveries_and_renews_it_after_50_minutes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key(dir.path());
    let server = ApnsServer::start(vec![]).await;
    let clock = Arc::new(Ticking {
        manual: ManualClock::new(t0()),
        readings: AtomicI64::new(0),
    });
    let apns = Arc::new(
        ApnsTransport::new(
            "ios",
            options(&key, &server, PushType::Alert),
            clock.clone(),
        )
        .expect("built"),
    );

    let deliveries: Vec<_> = (0..20)
        .map(|_| {
            let apns = apns.clone();
            tokio::spawn(async move { apns.deliver(&simple_push()).await })
        })
        .collect();
    for delivery in deliveries {
        delivery.await.expect("joined").expect("delivered");
    }
    // Still young at 49 minutes (and the readings' seconds).
    clock.manual.advance(TimeDelta::minutes(49));
    apns.deliver(&simple_push()).await.expect("delivered");

    let received = server.received();
    assert_eq!(received.len(), 21);
    let first = received[0].jwt().to_owned();
    assert!(
        received.iter().all(|r| r.jwt() == first),
        "every delivery shares one token"
    );
    let (_, claims) = verified(&first, &key);
    let signed_at = claims["iat"].as_i64().expect("iat");
    assert!(
        (t0().timestamp()..t0().timestamp() + 20).contains(&signed_at),
        "{signed_at}"
    );

    clock.manual.advance(TimeDelta::minutes(1));
    apns.deliver(&simple_push()).await.expect("delivered");
    let renewed = server.received()[21].jwt().to_owned();
    assert_ne!(renewed, first);
    let (_, claims) = verified(&renewed, &key);
    assert!(
        claims["iat"].as_i64() >= Some(signed_at + 50 * 60),
        "{claims}"
    );
}

/// What one push comes to against an APNs answering `reply`.
async fn refused(reply: Reply) -> herald::transports::TransportError {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key(dir.path());
    let server = ApnsServer::start(vec![reply]).await;
    with_clock(&key, &server, Arc::new(ManualClock::new(t0())))
        .deliver(&simple_push())
        .await
        .expect_err("refused")
}

/// What the second push comes to, the first having gone through.
async fn refused_after_a_push(reply: Reply) -> herald::transports::TransportError {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key(dir.path());
    let server = ApnsServer::start(vec![refusal(200, ""), reply]).await;
    let transport = with_clock(&key, &server, Arc::new(ManualClock::new(t0())));
    transport
        .deliver(&simple_push())
        .await
        .expect("the first push");
    transport
        .deliver(&simple_push())
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn apns_answers_are_classified_by_their_reason() {
    for (status, body) in [
        (400, r#"{"reason":"BadDeviceToken"}"#),
        (400, r#"{"reason":"DeviceTokenNotForTopic"}"#),
        (
            410,
            r#"{"reason":"Unregistered","timestamp":1767225600000}"#,
        ),
    ] {
        let err = refused_after_a_push(refusal(status, body)).await;
        assert_eq!(err.recipient_gone(), Some(RecipientGone::Invalid), "{err}");
        assert!(err.is_permanent());
    }
    // Before any push went through, a bad token may be the wrong
    // `environment` answering every token: dead-lettered, not suppressed.
    let unproven = refused(refusal(400, r#"{"reason":"BadDeviceToken"}"#)).await;
    assert_eq!(unproven.recipient_gone(), None, "{unproven}");
    assert!(unproven.is_permanent() && unproven.to_string().contains("environment"));
    let gone = refused(refusal(410, r#"{"reason":"Unregistered"}"#)).await;
    assert_eq!(gone.recipient_gone(), Some(RecipientGone::Invalid));
    let err = refused(refusal(403, r#"{"reason":"InvalidProviderToken"}"#)).await;
    assert!(err.is_unauthorized() && !err.is_permanent(), "{err}");

    let limited = refused(Reply {
        status: 429,
        headers: vec![("retry-after", "30")],
        body: r#"{"reason":"TooManyRequests"}"#,
    })
    .await;
    assert!(
        limited.is_transient() && !limited.is_unauthorized(),
        "{limited}"
    );
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(30)));

    for body in [
        r#"{"reason":"ServiceUnavailable"}"#,
        r#"{"reason":"Shutdown"}"#,
    ] {
        let down = refused(refusal(503, body)).await;
        assert!(down.is_transient() && !down.is_unauthorized(), "{down}");
    }
    let down = refused(refusal(500, r#"{"reason":"InternalServerError"}"#)).await;
    assert!(down.is_transient(), "{down}");

    for body in [r#"{"reason":"BadTopic"}"#, r#"{"reason":"BadCollapseId"}"#] {
        let bad = refused(refusal(400, body)).await;
        assert!(
            bad.is_permanent() && bad.recipient_gone().is_none(),
            "{bad}"
        );
        assert!(bad.to_string().contains("Bad"), "{bad}");
    }
    let large = refused(refusal(413, r#"{"reason":"PayloadTooLarge"}"#)).await;
    assert!(
        large.is_permanent() && large.recipient_gone().is_none(),
        "{large}"
    );
}

#[tokio::test]
async fn apns_signs_a_fresh_token_after_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key(dir.path());
    let server = ApnsServer::start(vec![
        refusal(503, r#"{"reason":"ServiceUnavailable"}"#),
        refusal(403, r#"{"reason":"InvalidProviderToken"}"#),
    ])
    .await;
    let clock = Arc::new(ManualClock::new(t0()));
    let apns = with_clock(&key, &server, clock.clone());
    let message = simple_push();

    assert!(apns.deliver(&message).await.is_err());
    clock.advance(TimeDelta::seconds(1));
    let err = apns.deliver(&message).await.expect_err("refused");
    assert!(err.is_unauthorized(), "{err}");
    clock.advance(TimeDelta::seconds(1));
    apns.deliver(&message).await.expect("delivered");

    let received = server.received();
    let iats: Vec<i64> = received
        .iter()
        .map(|r| verified(r.jwt(), &key).1["iat"].as_i64().expect("iat"))
        .collect();
    // A 503 leaves the token alone; a refused token is not sent again.
    assert_eq!(
        iats,
        [t0().timestamp(), t0().timestamp(), t0().timestamp() + 2]
    );
    // A retry is the same notification to APNs.
    let ids: Vec<_> = received.iter().map(|r| r.header("apns-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0] && id.is_some()),
        "{ids:?}"
    );
}

#[tokio::test]
async fn apns_refuses_a_generic_payload_without_a_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key(dir.path());
    let server = ApnsServer::start(vec![]).await;
    // As a webhook-kind transport's push is stored: no policy here routes
    // push to one, so the stored payload is swapped.
    let mut generic = simple_push();
    generic.payload = json!({"payload": {"token": TOKEN}});
    let err = with_clock(&key, &server, Arc::new(ManualClock::new(t0())))
        .deliver(&generic)
        .await
        .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
    assert!(server.received().is_empty());
}

fn problem_keys(config: &str) -> Vec<String> {
    match Settings::from_toml(config, Path::new("apns-test.toml"), |_| None) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems().iter().map(|p| p.key.clone()).collect(),
    }
}

#[test]
fn apns_config_mistakes_are_named_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key(dir.path());
    let table = |key_file: &Path, extra: &str| {
        format!(
            "[transports.ios]\nkind = \"apns\"\nkey_file = {:?}\nkey_id = \"{KEY_ID}\"\n\
             team_id = \"{TEAM_ID}\"\ntopic = \"{TOPIC}\"\n{extra}\n",
            key_file.display().to_string()
        )
    };
    assert!(problem_keys(&table(&key.file, "")).is_empty());
    assert_eq!(
        problem_keys(&table(&dir.path().join("missing.p8"), "")),
        ["transports.ios.key_file"]
    );
    let not_a_key = dir.path().join("not-a-key.p8");
    std::fs::write(
        &not_a_key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("written");
    assert_eq!(
        problem_keys(&table(&not_a_key, "")),
        ["transports.ios.key_file"]
    );
    assert_eq!(
        problem_keys(&table(&key.file, "environment = \"staging\"")),
        ["transports.ios.environment"]
    );
    assert_eq!(
        problem_keys(&table(
            &key.file,
            "push_type = \"background\"\npriority = 10"
        )),
        ["transports.ios.priority"]
    );
    assert_eq!(
        problem_keys(&table(&key.file, "push_type = \"voip\"")),
        ["transports.ios.push_type"]
    );
    let short_ids = table(&key.file, "")
        .replace(KEY_ID, "ABC")
        .replace(TEAM_ID, "");
    assert_eq!(
        problem_keys(&short_ids),
        ["transports.ios.key_id", "transports.ios.team_id"]
    );

    // The sandbox is chosen by `environment` unless `base_url` says
    // otherwise.
    let settings = Settings::from_toml(
        &table(&key.file, "environment = \"sandbox\""),
        Path::new("apns-test.toml"),
        |_| None,
    )
    .expect("valid");
    let shown = format!("{:?}", settings.transports["ios"].kind);
    assert!(shown.contains("api.sandbox.push.apple.com"), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}
