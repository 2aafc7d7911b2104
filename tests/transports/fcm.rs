//! The `fcm` transport against a local server standing in for Google's
//! token endpoint and FCM's HTTP v1 API: the grant is checked as Google
//! documents it (a JWT bearer assertion, RS256, verified here with the
//! public half of a key made for the test), the send as FCM documents it,
//! and the answers are FCM's own.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use herald::config::Settings;
use herald::domain::Message;
use herald::time::{Clock, ManualClock, SystemClock};
use herald::transports::{self, RecipientGone, Transport, TransportError};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::stored;
use crate::common::keys::service_account;

const SEND: &str = "/v1/projects/herald-test/messages:send";
const ACCESS_TOKEN: &str = "ya29.test-access-token";

/// A project on `server`: its key file in `dir`, its transport on `clock`,
/// and the public key that verifies its grants.
struct Project {
    transport: Arc<dyn Transport>,
    public_key: String,
    token_url: String,
}

fn project(server: &MockServer, dir: &Path, clock: Arc<dyn Clock>) -> Project {
    let token_url = format!("{}/token", server.uri());
    let (file, public_key) = service_account(dir, Some(&token_url));
    let config = format!(
        "[transports.phones]\nkind = \"fcm\"\nservice_account_file = \"{}\"\nbase_url = \"{}\"\n",
        file.display(),
        server.uri()
    );
    let settings = Settings::from_toml(&config, Path::new("fcm-test.toml"), |_| None)
        .unwrap_or_else(|e| panic!("test config: {e}"));
    let transport = transports::build_all(&settings.transports, clock)
        .expect("the transports build")
        .remove("phones")
        .expect("the transport")
        .transport;
    Project {
        transport,
        public_key,
        token_url,
    }
}

async fn grants(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .filter(|r| r.url.path() == "/token")
        .count()
}

async fn mount_token(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": ACCESS_TOKEN,
            "expires_in": 3599,
            "token_type": "Bearer"
        })))
        .mount(server)
        .await;
}

fn push(body: serde_json::Value) -> Message {
    stored(serde_json::json!({ "channel": "push", "transport": "provider", "push": body }))
}

fn system_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(SystemClock.now()))
}

#[tokio::test]
async fn fcm_grants_a_token_with_a_signed_assertion_and_sends_the_documented_message() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .and(header("content-type", "application/json; charset=utf-8"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "name": "projects/herald-test/messages/0:1500415314455276%31bd1c9631bd1c96"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = system_clock();
    let project = project(&server, dir.path(), clock.clone());
    let message = push(serde_json::json!({
        "token": "device-token-1",
        "title": "Shipped",
        "body": "Your order is on its way",
        "data": {"order": "42"},
        "ttl_s": 600
    }));
    let delivery = project.transport.deliver(&message).await.expect("sent");
    assert_eq!(
        delivery.provider_message_id.as_deref(),
        Some("projects/herald-test/messages/0:1500415314455276%31bd1c9631bd1c96")
    );

    let requests = server.received_requests().await.expect("recorded");
    let grant: Vec<(String, String)> = url::form_urlencoded::parse(&requests[0].body)
        .into_owned()
        .collect();
    assert_eq!(grant.len(), 2, "{grant:?}");
    assert_eq!(
        (grant[0].0.as_str(), grant[0].1.as_str()),
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    assert_eq!(grant[1].0, "assertion");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[project.token_url.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let token = jsonwebtoken::decode::<serde_json::Value>(
        &grant[1].1,
        &DecodingKey::from_rsa_pem(project.public_key.as_bytes()).expect("the public key"),
        &validation,
    )
    .expect("the assertion verifies with the service account's public key");
    assert_eq!(token.header.kid.as_deref(), Some("key-1"));
    let claims = token.claims;
    assert_eq!(claims["iss"], "herald@herald-test.iam.gserviceaccount.com");
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );
    assert_eq!(claims["iat"], clock.now().timestamp());
    assert_eq!(claims["exp"], clock.now().timestamp() + 3600);

    let sent: serde_json::Value = serde_json::from_slice(&requests[1].body).expect("JSON");
    assert_eq!(
        sent,
        serde_json::json!({"message": {
            "token": "device-token-1",
            "notification": {"title": "Shipped", "body": "Your order is on its way"},
            "data": {"order": "42", "herald_stamp": message.id.to_string()},
            "android": {"ttl": "600s"},
            "apns": {"headers": {"apns-expiration": (clock.now().timestamp() + 600).to_string()}}
        }})
    );
}

#[tokio::test]
async fn fcm_fetches_one_token_for_concurrent_deliveries_and_another_once_it_ages() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "projects/p/messages/1"}))
                // Slow enough that the deliveries overlap.
                .set_delay(Duration::from_millis(20)),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = system_clock();
    let project = project(&server, dir.path(), clock.clone());
    let messages: Vec<Message> = (0..20)
        .map(|i| push(serde_json::json!({"token": format!("device-{i}"), "title": "Hi"})))
        .collect();
    let results = join_all(messages.iter().map(|m| project.transport.deliver(m))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(grants(&server).await, 1, "one grant for all 20");

    // Within the token's life less the margin: still the same token.
    clock.advance(chrono::Duration::minutes(50));
    project.transport.deliver(&messages[0]).await.expect("sent");
    assert_eq!(grants(&server).await, 1);
    // Close to its end (3599 s less five minutes): a new one.
    clock.advance(chrono::Duration::minutes(5));
    project.transport.deliver(&messages[0]).await.expect("sent");
    assert_eq!(grants(&server).await, 2);
}

fn fcm_error(status: u16, google: &str, fcm: Option<&str>) -> ResponseTemplate {
    let details = match fcm {
        Some(code) => serde_json::json!([{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": code
        }]),
        None => serde_json::json!([]),
    };
    ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "error": {"code": status, "message": format!("{google} from FCM"), "status": google, "details": details}
    }))
}

/// What one push comes to against an FCM answering `answer`, and how many
/// grants the project asked for by then (one delivery before it, fine).
async fn answered(answer: ResponseTemplate) -> (TransportError, usize) {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(answer)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let project = project(&server, dir.path(), system_clock());
    let message = push(serde_json::json!({"token": "device-1", "title": "Hi"}));
    let err = project
        .transport
        .deliver(&message)
        .await
        .expect_err("refused");
    // The next attempt shows whether the token was kept.
    let _ = project.transport.deliver(&message).await;
    (err, grants(&server).await)
}

#[tokio::test]
async fn fcm_answers_are_classified_by_their_error_code() {
    let (gone, _) = answered(fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"))).await;
    assert_eq!(
        gone.recipient_gone(),
        Some(RecipientGone::Invalid),
        "{gone}"
    );
    assert!(gone.to_string().contains("UNREGISTERED"), "{gone}");
    let (invalid, _) = answered(fcm_error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"))).await;
    assert!(
        invalid.is_permanent() && invalid.recipient_gone().is_none(),
        "{invalid}"
    );
    let (quota, _) = answered(
        fcm_error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"))
            .insert_header("Retry-After", "10"),
    )
    .await;
    assert!(quota.is_transient(), "{quota}");
    assert_eq!(quota.retry_after(), Some(Duration::from_secs(10)));
    for (status, google, fcm) in [
        (503, "UNAVAILABLE", Some("UNAVAILABLE")),
        (500, "INTERNAL", Some("INTERNAL")),
    ] {
        let (err, grants) = answered(fcm_error(status, google, fcm)).await;
        assert!(err.is_transient() && !err.is_unauthorized(), "{err}");
        assert_eq!(grants, 1, "a provider fault keeps the token");
    }
    let (auth, grants) = answered(fcm_error(401, "UNAUTHENTICATED", None)).await;
    assert!(auth.is_unauthorized(), "{auth}");
    assert_eq!(grants, 2, "a refused token is fetched again");
}

#[tokio::test]
async fn fcm_with_its_grant_refused_is_the_transport_s_outage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_grant", "error_description": "Invalid JWT Signature."
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let project = project(&server, dir.path(), system_clock());
    let err = project
        .transport
        .deliver(&push(
            serde_json::json!({"token": "device-1", "title": "Hi"}),
        ))
        .await
        .expect_err("no token");
    assert!(err.is_unauthorized(), "{err}");
}

#[test]
fn fcm_key_file_problems_are_named_at_start() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let no_project = dir.path().join("no-project.json");
    std::fs::write(
        &no_project,
        serde_json::json!({
            "client_email": "a@b.iam.gserviceaccount.com",
            "private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
        })
        .to_string(),
    )
    .expect("write");
    let config = format!(
        "[transports.a]\nkind = \"fcm\"\nservice_account_file = \"{}\"\n\n\
         [transports.b]\nkind = \"fcm\"\nservice_account_file = \"{}\"\n\n\
         [transports.c]\nkind = \"fcm\"\n",
        dir.path().join("missing.json").display(),
        no_project.display()
    );
    let err =
        Settings::from_toml(&config, Path::new("fcm-test.toml"), |_| None).expect_err("refused");
    let mut keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "transports.a.service_account_file",
            "transports.b.project_id",
            "transports.b.service_account_file",
            "transports.c.service_account_file",
        ],
        "{err}"
    );
}
