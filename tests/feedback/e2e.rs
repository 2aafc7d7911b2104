//! Delivery feedback end to end, on both backends: an email sent through
//! the sendgrid transport to a real local server checking the request,
//! then SendGrid's signed events posted to `/api/feedback/mail` (signed
//! with a P-256 key made here), and what the message, the suppression
//! list and the next enqueue show for it. Refusals record nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::test;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald::config::Settings;
use herald::engine::{Engine, EngineOptions};
use herald::time::{Clock, SystemClock};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::Fixture;
use crate::common::keys::SendgridSigner;

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[actix::test] async fn $name() { super::$name(crate::common::Fixture::sqlite().await).await; } )*
        }
        mod postgres {
            $( #[actix::test] async fn $name() { super::$name(crate::common::Fixture::postgres().await).await; } )*
        }
    };
}

on_both_backends!(
    sendgrid_events_reach_their_message_and_a_bounce_suppresses_the_address,
    refused_requests_record_nothing,
    a_standard_webhooks_replay_is_refused_and_unknown_messages_are_counted,
);

const SIGNATURE: &str = "X-Twilio-Email-Event-Webhook-Signature";
const TIMESTAMP: &str = "X-Twilio-Email-Event-Webhook-Timestamp";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn now_s() -> i64 {
    SystemClock.now().timestamp()
}

fn settings(f: &Fixture, provider: &MockServer, signer: &SendgridSigner) -> Arc<Settings> {
    let text = format!(
        r#"
[storage]
url = "{url}"

[feedback]
max_body_bytes = 65536

[transports.mail]
kind = "sendgrid"
api_key_env = "TEST_SENDGRID_KEY"
base_url = "{base}"
event_webhook_public_key = "{key}"
feedback_secret_env = "TEST_FEEDBACK_SECRET"
"#,
        url = f.options.url,
        base = provider.uri(),
        key = signer.public_key,
    );
    Arc::new(
        Settings::from_toml(&text, Path::new("test.toml"), |var| match var {
            "TEST_SENDGRID_KEY" => Some("SG.test-key".to_owned()),
            "TEST_FEEDBACK_SECRET" => Some(SECRET.to_owned()),
            _ => None,
        })
        .expect("valid test settings"),
    )
}

async fn start(f: &Fixture, settings: Arc<Settings>) -> Engine {
    herald::transports::install_crypto_provider();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let transports =
        herald::transports::build_all(&settings.transports, clock.clone()).expect("transports");
    let options = EngineOptions {
        poll_interval: Duration::from_millis(50),
        ..EngineOptions::default()
    };
    Engine::start(f.storage.clone(), clock, settings, transports, options)
        .await
        .expect("engine starts")
}

/// SendGrid's Mail Send, answering with the message id it assigns.
async fn provider() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .and(header("authorization", "Bearer SG.test-key"))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sgid-0001"))
        .mount(&server)
        .await;
    server
}

fn email(to: &[&str]) -> Value {
    json!({
        "channel": "email",
        "transport": "mail",
        "email": {"from": "shop@example.com", "to": to, "subject": "Your receipt", "text": "Thanks."}
    })
}

/// SendGrid's mock, a signer, and an engine and app delivering through
/// `mail` to that mock, on `f`'s store.
macro_rules! running {
    ($f:expr) => {{
        let server = provider().await;
        let signer = SendgridSigner::new();
        let settings = settings(&$f, &server, &signer);
        let engine = start(&$f, settings.clone()).await;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let state = herald::http::AppState::new($f.storage.clone(), clock, settings.clone())
            .with_engine(engine.clone());
        let app = test::init_service(
            actix_web::App::new()
                .app_data(actix_web::web::Data::new(state))
                .configure(herald::http::configure),
        )
        .await;
        (server, signer, engine, app)
    }};
}

/// `uri`'s answer: status and JSON body (`null` when there is none).
async fn call<S, B>(app: &S, request: actix_http::Request) -> (u16, Value)
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let response = test::call_service(app, request).await;
    let status = response.status().as_u16();
    let body = test::read_body(response).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn sendgrid_post(signer: &SendgridSigner, body: &str, timestamp: i64) -> actix_http::Request {
    let (signature, timestamp) = signer.sign(timestamp, body);
    test::TestRequest::post()
        .uri("/api/feedback/mail")
        .insert_header(("Content-Type", "application/json"))
        .insert_header((SIGNATURE, signature))
        .insert_header((TIMESTAMP, timestamp))
        .set_payload(body.to_owned())
        .to_request()
}

async fn until_sent<S, B>(app: &S, id: &str) -> Value
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let uri = format!("/api/messages/{id}");
        let (_, message) = call(app, get(&uri)).await;
        if message["status"] == "sent" {
            return message;
        }
        assert!(Instant::now() < deadline, "not sent: {message}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn get(uri: &str) -> actix_http::Request {
    test::TestRequest::get().uri(uri).to_request()
}

fn enqueue_request(body: &Value) -> actix_http::Request {
    test::TestRequest::post()
        .uri("/api/messages")
        .set_json(body)
        .to_request()
}

async fn sendgrid_events_reach_their_message_and_a_bounce_suppresses_the_address(f: Fixture) {
    let (server, signer, engine, app) = running!(f);

    let (status, stored) = call(
        &app,
        enqueue_request(&email(&["Ann <ann@example.org>", "bob@example.org"])),
    )
    .await;
    assert_eq!(status, 202, "{stored}");
    let id = stored["id"].as_str().expect("an id").to_owned();
    let sent = until_sent(&app, &id).await;
    let sent_event = sent["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == "sent"))
        .expect("a sent event");
    assert_eq!(sent_event["detail"]["provider_message_id"], "sgid-0001");

    // Delivered to Ann (found by the stamp SendGrid hands back), bounced
    // for Bob (found by SendGrid's id alone), as SendGrid posts them.
    let ts = now_s();
    let events = json!([
        {"email": "ann@example.org", "timestamp": ts - 5, "event": "delivered",
         "sg_event_id": "ev-delivered-ann", "sg_message_id": "sgid-0001.filter0001.1.0",
         "stamp": id, "response": "250 OK"},
        {"email": "bob@example.org", "timestamp": ts - 4, "event": "bounce", "type": "bounce",
         "sg_event_id": "ev-bounce-bob", "sg_message_id": "sgid-0001.filter0001.1.0",
         "reason": "550 5.1.1 The email account that you tried to reach does not exist"},
        {"email": "ann@example.org", "timestamp": ts - 4, "event": "processed",
         "sg_event_id": "ev-processed", "sg_message_id": "sgid-0001.filter0001.1.0"}
    ])
    .to_string();
    let (status, answer) = call(&app, sendgrid_post(&signer, &events, ts)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (
            &answer["applied"],
            &answer["ignored"],
            &answer["suppressed"]
        ),
        (&json!(2), &json!(1), &json!(1)),
        "{answer}"
    );

    // The same events again (SendGrid retries), and a late "delivered"
    // for Bob that must not undo his bounce.
    let (status, again) = call(&app, sendgrid_post(&signer, &events, ts + 1)).await;
    assert_eq!(status, 202);
    assert_eq!(
        (&again["applied"], &again["duplicates"]),
        (&json!(0), &json!(2))
    );
    let late = json!([
        {"email": "bob@example.org", "timestamp": ts - 6, "event": "delivered",
         "sg_event_id": "ev-delivered-bob", "sg_message_id": "sgid-0001.filter0001.1.0"}
    ])
    .to_string();
    let (status, late) = call(&app, sendgrid_post(&signer, &late, ts + 2)).await;
    assert_eq!((status, &late["applied"]), (202, &json!(1)));

    let uri = format!("/api/messages/{id}");
    let (_, message) = call(&app, get(&uri)).await;
    let delivery = &message["delivery"];
    assert_eq!(delivery["state"], "bounced", "{message}");
    assert!(delivery["delivered_at"].is_string(), "{delivery}");
    let recipients: Vec<(&str, &str)> = delivery["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap_or_default(),
                r["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        recipients,
        [
            ("ann@example.org", "delivered"),
            ("bob@example.org", "bounced")
        ]
    );
    assert_eq!(delivery["recipients"][1]["bounce"], "hard");
    let kinds: Vec<&str> = message["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds[kinds.len() - 3..],
        ["delivered", "bounced", "delivered"]
    );

    // The reports are in the deliverability figures at once.
    let (_, report) = call(&app, get("/api/analytics/deliverability?window=1h")).await;
    let totals = &report["totals"];
    assert_eq!(
        (&totals["delivered"], &totals["bouncedHard"]),
        (&json!(2), &json!(1)),
        "{report}"
    );
    assert_eq!(
        report["topBounceDomains"][0]["domain"], "example.org",
        "{report}"
    );

    let (_, listed) = call(&app, get("/api/suppressions?channel=email")).await;
    let entry = &listed["items"][0];
    assert_eq!(
        (&entry["address"], &entry["reason"], &entry["source_stamp"]),
        (&json!("bob@example.org"), &json!("hard_bounce"), &json!(id)),
        "{listed}"
    );

    // Support asks: what did we send Bob, and did it arrive?
    let (_, to_bob) = call(
        &app,
        get("/api/messages?recipient=Bob@Example.org&delivery=bounced"),
    )
    .await;
    assert_eq!(to_bob["items"][0]["id"], json!(id), "{to_bob}");

    // The next message to Bob is not sent, and says why.
    let (status, next) = call(&app, enqueue_request(&email(&["bob@example.org"]))).await;
    assert_eq!(status, 202, "{next}");
    assert_eq!(next["status"], "suppressed", "{next}");
    assert_eq!(next["suppressed"], json!(["bob@example.org"]));
    // To Ann and Bob: Bob is left out.
    let (status, both) = call(
        &app,
        enqueue_request(&email(&["ann@example.org", "bob@example.org"])),
    )
    .await;
    assert_eq!((status, &both["status"]), (202, &json!("queued")), "{both}");
    assert_eq!(both["suppressed"], json!(["bob@example.org"]));
    let both_id = both["id"].as_str().expect("an id").to_owned();
    until_sent(&app, &both_id).await;
    let requests = server.received_requests().await.unwrap_or_default();
    let last: Value = serde_json::from_slice(&requests.last().expect("a request").body)
        .expect("JSON to SendGrid");
    assert_eq!(
        last["personalizations"][0]["to"],
        json!([{"email": "ann@example.org"}]),
        "{last}"
    );
    assert_eq!(requests.len(), 2, "the suppressed message was never sent");

    // Taken off the list, Bob can be sent to again.
    let (status, _) = call(
        &app,
        test::TestRequest::delete()
            .uri("/api/suppressions/email/bob@example.org")
            .to_request(),
    )
    .await;
    assert_eq!(status, 204);
    let (_, after) = call(&app, enqueue_request(&email(&["bob@example.org"]))).await;
    assert_eq!(after["status"], "queued", "{after}");
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn refused_requests_record_nothing(f: Fixture) {
    let (_server, signer, engine, app) = running!(f);
    let (_, stored) = call(&app, enqueue_request(&email(&["carol@example.org"]))).await;
    let id = stored["id"].as_str().expect("an id").to_owned();
    until_sent(&app, &id).await;
    let uri = format!("/api/messages/{id}");
    let events_now = || async {
        let (_, message) = call(&app, get(&uri)).await;
        message["events"].as_array().map(Vec::len)
    };
    let before = events_now().await;
    let ts = now_s();
    let body = json!([{"email": "carol@example.org", "timestamp": ts, "event": "spamreport",
                       "sg_event_id": "ev-spam", "stamp": id}])
    .to_string();

    // Signed by another key.
    let other = SendgridSigner::new();
    let (status, refused) = call(&app, sendgrid_post(&other, &body, ts)).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    // Signed, then changed.
    let (signature, timestamp) = signer.sign(ts, &body);
    let tampered = body.replace("spamreport", "delivered");
    let request = test::TestRequest::post()
        .uri("/api/feedback/mail")
        .insert_header((SIGNATURE, signature))
        .insert_header((TIMESTAMP, timestamp))
        .set_payload(tampered)
        .to_request();
    assert_eq!(call(&app, request).await.0, 401);
    // No signature at all.
    let request = test::TestRequest::post()
        .uri("/api/feedback/mail")
        .set_payload(body.clone())
        .to_request();
    assert_eq!(call(&app, request).await.0, 401);
    // Signed an hour ago.
    assert_eq!(
        call(&app, sendgrid_post(&signer, &body, ts - 3600)).await.0,
        401
    );
    // Larger than `feedback.max_body_bytes`.
    let padding = "x".repeat(70_000);
    let big = format!(
        "[{{\"email\":\"carol@example.org\",\"timestamp\":{ts},\"event\":\"open\",\"pad\":\"{padding}\",\"stamp\":\"{id}\"}}]"
    );
    let (status, too_large) = call(&app, sendgrid_post(&signer, &big, ts)).await;
    assert_eq!(
        (status, &too_large["error"]["code"]),
        (413, &json!("payload_too_large"))
    );
    // A transport that is not configured.
    let request = test::TestRequest::post()
        .uri("/api/feedback/nope")
        .set_payload(body.clone())
        .to_request();
    assert_eq!(call(&app, request).await.0, 404);

    assert_eq!(events_now().await, before, "nothing recorded");
    let (_, listed) = call(&app, get("/api/suppressions")).await;
    assert_eq!(listed["items"], json!([]), "nothing suppressed");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// Herald's own event format under Standard Webhooks signatures.
fn standard_post(id: &str, timestamp: i64, body: &str) -> actix_http::Request {
    use hmac::{Hmac, KeyInit, Mac};
    let key = STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("the secret's key");
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).expect("a key");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    test::TestRequest::post()
        .uri("/api/feedback/mail")
        .insert_header(("webhook-id", id.to_owned()))
        .insert_header(("webhook-timestamp", timestamp.to_string()))
        .insert_header(("webhook-signature", format!("v1,{signature}")))
        .set_payload(body.to_owned())
        .to_request()
}

async fn a_standard_webhooks_replay_is_refused_and_unknown_messages_are_counted(f: Fixture) {
    let (_server, _signer, engine, app) = running!(f);
    let (_, stored) = call(&app, enqueue_request(&email(&["dan@example.org"]))).await;
    let id = stored["id"].as_str().expect("an id").to_owned();
    until_sent(&app, &id).await;

    let at = SystemClock.now().to_rfc3339();
    let body = json!({"events": [
        {"stamp": id, "kind": "complained", "recipient": "dan@example.org", "at": at, "id": "c-1"},
        {"provider_message_id": "not-ours", "kind": "delivered", "at": at}
    ]})
    .to_string();
    let ts = now_s();
    let (status, answer) = call(&app, standard_post("msg_1", ts, &body)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (&answer["applied"], &answer["unmatched"]),
        (&json!(1), &json!(1))
    );
    // The identical request again is a replay.
    let (status, replay) = call(&app, standard_post("msg_1", ts, &body)).await;
    assert_eq!(status, 401, "{replay}");
    // A sender's retry (new timestamp) is taken, and applies nothing twice.
    let (status, retry) = call(&app, standard_post("msg_1", ts + 1, &body)).await;
    assert_eq!((status, &retry["duplicates"]), (202, &json!(1)), "{retry}");

    let uri = format!("/api/messages/{id}");
    let (_, message) = call(&app, get(&uri)).await;
    assert_eq!(message["delivery"]["state"], "complained");
    let (_, listed) = call(&app, get("/api/suppressions")).await;
    assert_eq!(listed["items"][0]["reason"], "complaint", "{listed}");

    let response = test::call_service(&app, get("/metrics")).await;
    let text = String::from_utf8(test::read_body(response).await.to_vec()).expect("utf-8");
    let unmatched = text
        .lines()
        .find_map(|l| l.strip_prefix("herald_feedback_unmatched_total{transport=\"mail\"}"))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(unmatched >= Some(1.0), "{text}");
    engine.shutdown(Duration::from_secs(5)).await;
}
