//! The `ses` transport's SNS webhook against a local HTTPS server standing
//! in for SNS: it serves a signing certificate made here for a fresh RSA
//! key, answers subscription confirmations, and records every request.
//! Messages are signed by openssl over a string to sign built here, apart
//! from the crate's, as SNS signs them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use herald::config::Settings;
use herald::feedback::{Accepted, BounceType, FeedbackKind, FeedbackSource, Inbound, Refusal};
use herald::time::{Clock, SystemClock};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::common::keys::rsa_key;

const CERT_PATH: &str = "/SimpleNotificationService-test.pem";
const FAILING_CERT_PATH: &str = "/SimpleNotificationService-gone.pem";
const CONFIRM_PATH: &str = "/confirm";
const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:herald-feedback";
const STAMP: &str = "01JH0000000000000000000000";
const SES_ID: &str = "0102018f00000000-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee-000000";

/// The stand-in for SNS's certificate host.
struct Sns {
    port: u16,
    /// The CA that signed the server's certificate, which Herald must be
    /// told to trust.
    ca_file: PathBuf,
    /// The key SNS signs with; the server serves its certificate.
    signing_key: PathBuf,
    /// Path and query of each request, in order.
    requests: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Sns {
    async fn start() -> Sns {
        herald::transports::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let (signing_key, _) = rsa_key(dir.path());
        let signing_cert = dir.path().join("signing-cert.pem");
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-new",
                "-days",
                "2",
                "-subj",
                "/CN=sns.amazonaws.com",
            ])
            .arg("-key")
            .arg(&signing_key)
            .arg("-out")
            .arg(&signing_cert)
            .output()
            .expect("openssl runs");
        assert!(made.status.success(), "{made:?}");
        let signing_cert = std::fs::read_to_string(signing_cert).expect("the certificate");

        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Herald test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(
            ca_params,
            rcgen::KeyPair::generate().expect("a key"),
        )
        .expect("the CA");
        let issuer: &rcgen::Issuer<'_, rcgen::KeyPair> = &ca;
        let server_key = rcgen::KeyPair::generate().expect("a key");
        let server_cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("params")
                .signed_by(&server_key, issuer)
                .expect("the server's certificate");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write the CA");

        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .expect("the TLS config");
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let signing_cert = Arc::new(signing_cert);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(
                    acceptor.clone(),
                    stream,
                    Arc::clone(&recorded),
                    Arc::clone(&signing_cert),
                ));
            }
        });
        Sns {
            port,
            ca_file,
            signing_key,
            requests,
            _dir: dir,
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }

    fn cert_url(&self) -> String {
        self.url("127.0.0.1", CERT_PATH)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("not poisoned").clone()
    }

    /// The source of an ses transport configured to fetch from this server.
    fn source(&self) -> Arc<dyn FeedbackSource> {
        self.source_with("")
    }

    /// [`Sns::source`] with `extra` keys.
    fn source_with(&self, extra: &str) -> Arc<dyn FeedbackSource> {
        let keys = format!(
            "sns_cert_hosts = [\"127.0.0.1\"]\nsns_ca_file = {:?}\n{extra}",
            self.ca_file.display().to_string()
        );
        source_from(&keys)
    }

    /// `fields` signed with the server's key under `version`, as SNS signs.
    fn signed(&self, mut fields: Value, version: &str) -> Value {
        fields["SignatureVersion"] = json!(version);
        let signature = openssl_sign(&self.signing_key, version, &string_to_sign(&fields));
        fields["Signature"] = json!(signature);
        fields
    }

    fn notification(&self, message: &str, timestamp: DateTime<Utc>, cert_url: &str) -> Value {
        json!({
            "Type": "Notification",
            "MessageId": "8e2f4a9c-0000-4000-8000-000000000001",
            "TopicArn": TOPIC,
            "Subject": "Amazon SES Email Event Notification",
            "Message": message,
            "Timestamp": sns_time(timestamp),
            "SigningCertURL": cert_url,
            "UnsubscribeURL": self.url("127.0.0.1", "/?Action=Unsubscribe"),
        })
    }

    fn confirmation(&self, kind: &str) -> Value {
        json!({
            "Type": kind,
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e2425",
            "TopicArn": TOPIC,
            "Message": format!("You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
            "SubscribeURL": self.url("127.0.0.1", &format!("{CONFIRM_PATH}?Action=ConfirmSubscription&Token=2336412f37fb687f5d51e6e2425")),
            "Timestamp": sns_time(now()),
            "SigningCertURL": self.cert_url(),
        })
    }
}

/// One HTTP/1.1 exchange over TLS: the request's target recorded, the
/// certificate or a confirmation answered, and the connection closed.
async fn answer(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    requests: Arc<Mutex<Vec<String>>>,
    signing_cert: Arc<String>,
) {
    let Ok(mut tls) = acceptor.accept(stream).await else {
        return;
    };
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    requests.lock().expect("not poisoned").push(target.clone());
    let (status, body) = match target.split('?').next().unwrap_or_default() {
        CERT_PATH => ("200 OK", signing_cert.as_str()),
        CONFIRM_PATH => ("200 OK", "<ConfirmSubscriptionResponse/>"),
        FAILING_CERT_PATH => ("500 Internal Server Error", ""),
        _ => ("404 Not Found", ""),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(response.as_bytes()).await;
    let _ = tls.shutdown().await;
}

/// The string SNS signs, per AWS's "Verifying the signatures of Amazon
/// SNS messages": the type's fields, present ones only, name and value
/// on a line each, in name order.
fn string_to_sign(fields: &Value) -> String {
    let names: &[&str] = if fields["Type"] == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    names
        .iter()
        .filter_map(|name| Some(format!("{name}\n{}\n", fields.get(*name)?.as_str()?)))
        .collect()
}

/// `text` signed by openssl with `key`: SHA1withRSA for version 1,
/// SHA256withRSA for 2; base64.
fn openssl_sign(key: &Path, version: &str, text: &str) -> String {
    let digest = if version == "1" { "-sha1" } else { "-sha256" };
    let mut child = Command::new("openssl")
        .args(["dgst", digest, "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl signs");
    assert!(out.status.success(), "{out:?}");
    base64::engine::general_purpose::STANDARD.encode(out.stdout)
}

/// The wall clock: the signing certificate openssl made is valid around it.
fn now() -> DateTime<Utc> {
    SystemClock.now()
}

fn sns_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The SNS webhook of an ses transport with `extra` keys, from config.
fn source_from(extra: &str) -> Arc<dyn FeedbackSource> {
    let settings = Settings::from_toml(&ses_config(extra), Path::new("feedback-test.toml"), env)
        .unwrap_or_else(|e| panic!("test config: {e}"));
    settings.transports["mail"]
        .kind
        .feedback()
        .expect("an ses transport answers SNS")
}

fn ses_config(extra: &str) -> String {
    format!(
        "[transports.mail]\nkind = \"ses\"\nregion = \"eu-west-1\"\n\
         access_key_id_env = \"SES_ACCESS_KEY_ID\"\n\
         secret_access_key_env = \"SES_SECRET_ACCESS_KEY\"\n{extra}"
    )
}

fn env(var: &str) -> Option<String> {
    var.starts_with("SES_").then(|| format!("{var}-made-up"))
}

/// SNS's POST of `body`, as the route hands it over.
async fn post(source: &dyn FeedbackSource, body: &Value) -> Result<Accepted, Refusal> {
    let headers = vec![
        // SNS posts JSON, but says it is plain text.
        (
            "content-type".to_owned(),
            "text/plain; charset=UTF-8".to_owned(),
        ),
        (
            "x-amz-sns-message-type".to_owned(),
            body["Type"].as_str().unwrap_or_default().to_owned(),
        ),
    ];
    let body = body.to_string();
    source
        .accept(Inbound {
            headers: &headers,
            body: body.as_bytes(),
            url: "https://herald.example.com/api/feedback/mail",
            now: now(),
            tolerance: Duration::from_secs(300),
        })
        .await
}

/// SES's bounce notification for the message Herald sent as `STAMP`.
fn bounce() -> String {
    json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{
                "emailAddress": "jane@example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"
            }],
            "timestamp": "2026-12-06T10:00:01.000Z",
            "feedbackId": "0102018f-feedback-000000"
        },
        "mail": {
            "timestamp": "2026-12-06T10:00:00.000Z",
            "messageId": SES_ID,
            "source": "shop@example.com",
            "destination": ["jane@example.com"],
            "headersTruncated": false,
            "headers": [
                {"name": "From", "value": "shop@example.com"},
                {"name": "X-Stamp-ID", "value": STAMP}
            ]
        }
    })
    .to_string()
}

#[tokio::test]
async fn a_signed_notification_verifies_under_both_signature_versions_fetching_the_certificate_once()
 {
    let sns = Sns::start().await;
    let source = sns.source();
    for version in ["1", "2"] {
        let body = sns.signed(sns.notification(&bounce(), now(), &sns.cert_url()), version);
        let accepted = post(source.as_ref(), &body)
            .await
            .unwrap_or_else(|e| panic!("version {version}: {e}"));
        let [event] = accepted.events.as_slice() else {
            panic!("one event: {accepted:?}");
        };
        assert_eq!(event.kind, FeedbackKind::Bounced);
        assert_eq!(event.bounce, Some(BounceType::Hard));
        assert_eq!(event.recipient.as_deref(), Some("jane@example.com"));
        assert_eq!(
            event.target.stamp().map(|s| s.to_string()).as_deref(),
            Some(STAMP)
        );
        assert_eq!(event.target.provider_id(), Some(SES_ID));
        assert_eq!(
            event.event_id.as_deref(),
            Some("8e2f4a9c-0000-4000-8000-000000000001:0")
        );
        assert_eq!(accepted.nonce, None);
    }
    assert_eq!(sns.requests(), [CERT_PATH], "fetched once, then cached");
}

#[tokio::test]
async fn concurrent_first_messages_share_one_certificate_fetch() {
    let sns = Sns::start().await;
    let source = sns.source();
    let body = sns.signed(sns.notification(&bounce(), now(), &sns.cert_url()), "2");
    let results = futures::future::join_all((0..4).map(|_| post(source.as_ref(), &body))).await;
    for result in results {
        assert_eq!(result.expect("verified").events.len(), 1);
    }
    assert_eq!(sns.requests(), [CERT_PATH]);
}

#[tokio::test]
async fn a_tampered_message_is_unauthorized() {
    let sns = Sns::start().await;
    let source = sns.source();
    let signed = sns.signed(sns.notification(&bounce(), now(), &sns.cert_url()), "2");

    let mut tampered = signed.clone();
    tampered["Message"] = json!(bounce().replace("Permanent", "Transient"));
    let mut other_subject = signed.clone();
    other_subject["Subject"] = json!("Something else");
    let mut wrong_version = signed.clone();
    wrong_version["SignatureVersion"] = json!("1");
    let mut no_signature = signed.clone();
    no_signature["Signature"] = json!("bm90IGEgc2lnbmF0dXJl");
    for body in [tampered, other_subject, wrong_version, no_signature] {
        let refused = post(source.as_ref(), &body).await;
        assert!(
            matches!(refused, Err(Refusal::Unauthorized(_))),
            "{refused:?}"
        );
    }
    assert!(
        post(source.as_ref(), &signed).await.is_ok(),
        "the original verifies"
    );
}

#[tokio::test]
async fn a_certificate_url_off_the_allowed_hosts_or_over_http_is_refused_without_a_fetch() {
    let sns = Sns::start().await;
    let source = sns.source();
    let urls = [
        // The same server, under a name not allowed.
        sns.url("localhost", CERT_PATH),
        format!("http://127.0.0.1:{}{CERT_PATH}", sns.port),
        sns.url("127.0.0.1", "/certificate.txt"),
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem".to_owned(),
    ];
    for url in urls {
        let body = sns.signed(sns.notification(&bounce(), now(), &url), "2");
        let refused = post(source.as_ref(), &body).await;
        assert!(
            matches!(refused, Err(Refusal::Unauthorized(_))),
            "{url}: {refused:?}"
        );
    }
    assert_eq!(sns.requests(), Vec::<String>::new());
}

#[tokio::test]
async fn with_sns_topic_arns_only_those_topics_are_taken() {
    let sns = Sns::start().await;
    let ours = sns.source_with(&format!("sns_topic_arns = [{TOPIC:?}]\n"));
    let theirs =
        sns.source_with("sns_topic_arns = [\"arn:aws:sns:eu-west-1:123456789012:someone-else\"]\n");
    let body = sns.signed(sns.notification(&bounce(), now(), &sns.cert_url()), "2");
    let refused = post(theirs.as_ref(), &body).await;
    assert!(
        matches!(refused, Err(Refusal::Unauthorized(_))),
        "{refused:?}"
    );
    assert_eq!(
        sns.requests(),
        Vec::<String>::new(),
        "refused before a fetch"
    );
    assert_eq!(
        post(ours.as_ref(), &body)
            .await
            .expect("our topic")
            .events
            .len(),
        1
    );
}

#[tokio::test]
async fn a_message_outside_the_tolerance_is_unauthorized_without_a_fetch() {
    let sns = Sns::start().await;
    let source = sns.source();
    for skew in [chrono::Duration::hours(-1), chrono::Duration::hours(1)] {
        let body = sns.signed(
            sns.notification(&bounce(), now() + skew, &sns.cert_url()),
            "2",
        );
        let refused = post(source.as_ref(), &body).await;
        assert!(
            matches!(refused, Err(Refusal::Unauthorized(_))),
            "{refused:?}"
        );
    }
    assert_eq!(sns.requests(), Vec::<String>::new());
}

#[tokio::test]
async fn a_subscription_confirmation_visits_its_subscribe_url_once() {
    let sns = Sns::start().await;
    let source = sns.source();
    let body = sns.signed(sns.confirmation("SubscriptionConfirmation"), "1");
    let accepted = post(source.as_ref(), &body).await.expect("confirmed");
    assert_eq!(accepted, Accepted::default(), "no events");
    assert_eq!(
        sns.requests(),
        [
            CERT_PATH.to_owned(),
            format!("{CONFIRM_PATH}?Action=ConfirmSubscription&Token=2336412f37fb687f5d51e6e2425")
        ]
    );
}

#[tokio::test]
async fn a_forged_subscription_confirmation_is_not_confirmed() {
    let sns = Sns::start().await;
    let source = sns.source();
    let mut body = sns.signed(sns.confirmation("SubscriptionConfirmation"), "2");
    body["SubscribeURL"] = json!(sns.url(
        "127.0.0.1",
        "/confirm?Action=ConfirmSubscription&Token=other"
    ));
    let refused = post(source.as_ref(), &body).await;
    assert!(
        matches!(refused, Err(Refusal::Unauthorized(_))),
        "{refused:?}"
    );
    assert_eq!(sns.requests(), [CERT_PATH], "nothing confirmed");
}

#[tokio::test]
async fn an_unsubscribe_confirmation_is_verified_and_ignored() {
    let sns = Sns::start().await;
    let source = sns.source();
    let body = sns.signed(sns.confirmation("UnsubscribeConfirmation"), "2");
    let accepted = post(source.as_ref(), &body).await.expect("verified");
    assert_eq!(accepted, Accepted::default());
    assert_eq!(sns.requests(), [CERT_PATH], "no visit to SubscribeURL");
}

#[tokio::test]
async fn a_certificate_that_does_not_load_is_unavailable_and_tried_again_next_time() {
    let sns = Sns::start().await;
    let source = sns.source();
    let url = sns.url("127.0.0.1", FAILING_CERT_PATH);
    let body = sns.signed(sns.notification(&bounce(), now(), &url), "2");
    for _ in 0..2 {
        let refused = post(source.as_ref(), &body).await;
        assert!(
            matches!(refused, Err(Refusal::Unavailable(_))),
            "{refused:?}"
        );
    }
    assert_eq!(sns.requests(), [FAILING_CERT_PATH, FAILING_CERT_PATH]);
}

#[tokio::test]
async fn without_its_ca_file_the_local_server_is_not_trusted() {
    let sns = Sns::start().await;
    let source = source_from("sns_cert_hosts = [\"127.0.0.1\"]\n");
    let body = sns.signed(sns.notification(&bounce(), now(), &sns.cert_url()), "2");
    match post(source.as_ref(), &body).await {
        Err(Refusal::Unavailable(why)) => {
            assert!(why.contains("signing certificate from 127.0.0.1"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sns.requests(), Vec::<String>::new(), "no TLS, no request");
}

#[test]
fn the_sns_keys_are_checked_at_load() {
    let problems = |extra: &str| -> Vec<String> {
        match Settings::from_toml(&ses_config(extra), Path::new("feedback-test.toml"), env) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(|p| p.key.clone()).collect(),
        }
    };
    assert_eq!(problems(""), Vec::<String>::new(), "SNS's hosts by default");
    for bad in [
        "sns_cert_hosts = []",
        "sns_cert_hosts = [\"\"]",
        "sns_cert_hosts = [\"sns.amazonaws.*\"]",
        "sns_cert_hosts = [\"https://sns.amazonaws.com\"]",
    ] {
        assert_eq!(problems(bad), ["transports.mail.sns_cert_hosts"], "{bad}");
    }
    for bad in [
        "sns_topic_arns = []",
        "sns_topic_arns = [\"herald-feedback\"]",
    ] {
        assert_eq!(problems(bad), ["transports.mail.sns_topic_arns"], "{bad}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    for path in [dir.path().join("missing.pem"), not_pem] {
        let key = format!("sns_ca_file = {:?}", path.display().to_string());
        assert_eq!(problems(&key), ["transports.mail.sns_ca_file"], "{key}");
    }
}
