//! The `apns` transport: push notifications through Apple's provider API
//! (`POST /3/device/{token}` over HTTP/2) with token-based auth, an ES256
//! JWT signed with the team's `.p8` key. The stamp travels as `apns-id`
//! (the ULID as a UUID, the same on every retry), which APNs echoes and
//! names failures by. APNs says why it refused in the answer's `reason`,
//! which this module reads: a bad or unregistered device token is gone
//! for good, a refused provider token is the transport's outage.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them; and the
//! provider token, signed once and shared by every delivery until it is
//! due for renewal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::config::{KindTable, TransportSettings};
use crate::domain::{Channel, Message, Payload, PushPayload};
use crate::time::Clock;

use super::http::{self, Answer, Caller};
use super::{Delivery, Gated, KindSpec, RecipientGone, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "apns",
    keys: &[
        "key_file",
        "key_id",
        "team_id",
        "topic",
        "environment",
        "base_url",
        "push_type",
        "priority",
        "timeout_ms",
    ],
    channels: &[Channel::Push],
    native: &[Channel::Push],
    configure,
};

/// APNs' production root, where neither `environment` nor `base_url` says
/// otherwise.
pub const PRODUCTION_BASE_URL: &str = "https://api.push.apple.com";
/// APNs' development root, for apps built with the development
/// entitlement: their device tokens are unknown to production.
pub const SANDBOX_BASE_URL: &str = "https://api.sandbox.push.apple.com";
/// Under the API root; the device token is appended as one more segment.
const DEVICE_PATH: &str = "/3/device";

/// Apple refuses a provider token older than an hour and one renewed
/// more often than every 20 minutes (`TooManyProviderTokenUpdates`); 50
/// minutes keeps clear of both, with room for clocks that disagree.
const TOKEN_LIFETIME: TimeDelta = TimeDelta::minutes(50);
/// An idle connection is kept this long: Apple asks providers to keep
/// their connections open rather than reconnect per notification.
const POOL_IDLE: Duration = Duration::from_secs(3600);
/// How often an idle connection is pinged, so one the network dropped
/// is found before a notification is sent on it.
const KEEP_ALIVE_PING: Duration = Duration::from_secs(60);
/// Apple's key and team ids are 10 characters.
const ID_LEN: usize = 10;

/// `apns-push-type`: what the notification does on the device. It must
/// match the payload, or APNs may delay or drop the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushType {
    /// Shows an alert, plays a sound or sets the badge.
    Alert,
    /// Wakes the app in the background (`content-available`), shows
    /// nothing.
    Background,
}

impl PushType {
    pub fn as_str(self) -> &'static str {
        match self {
            PushType::Alert => "alert",
            PushType::Background => "background",
        }
    }
}

/// The team's signing key, as read from its `.p8` file. Its `Debug` shows
/// nothing of the key.
#[derive(Clone)]
pub struct SigningKey(EncodingKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// The key in `pem`, a PKCS#8 P-256 private key (the `.p8` file Apple
    /// hands out). A key that parses but cannot sign ES256 (another
    /// curve, a damaged file) is refused here rather than at the first
    /// delivery.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, String> {
        let key = EncodingKey::from_ec_pem(pem)
            .map_err(|e| format!("not a PKCS#8 EC private key in PEM: {e}"))?;
        let key = SigningKey(key);
        key.sign("0000000000", "0000000000", 0)
            .map_err(|e| format!("cannot sign ES256 with it (a P-256 key is needed): {e}"))?;
        Ok(key)
    }

    /// A provider token: `{"alg": "ES256", "kid"}` over `{"iss", "iat"}`,
    /// as APNs documents it.
    fn sign(&self, key_id: &str, team_id: &str, issued_at: i64) -> Result<String, String> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            iat: i64,
        }
        let mut header = Header::new(Algorithm::ES256);
        header.typ = None;
        header.kid = Some(key_id.to_owned());
        let claims = Claims {
            iss: team_id,
            iat: issued_at,
        };
        jsonwebtoken::encode(&header, &claims, &self.0).map_err(|e| e.to_string())
    }
}

/// The `apns` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApnsKeys {
    /// Path of the `.p8` signing key, read at load. Required.
    key_file: Option<String>,
    /// The signing key's 10-character id. Required.
    key_id: Option<String>,
    /// The developer team's 10-character id. Required.
    team_id: Option<String>,
    /// The app's bundle id (`apns-topic`). Required.
    topic: Option<String>,
    /// `production` (default) or `sandbox`.
    environment: Option<String>,
    /// The API root; overrides `environment`.
    base_url: Option<String>,
    /// `alert` (default) or `background`.
    push_type: Option<String>,
    /// `apns-priority`: 10 (at once), 5 (power-aware) or 1 (lowest).
    /// Default 10, or 5 for background pushes.
    priority: Option<u8>,
    /// Time-out of one delivery, in ms. Default 10000.
    timeout_ms: Option<u64>,
}

/// One app's APNs settings, validated.
#[derive(Debug, Clone)]
pub struct ApnsOptions {
    pub key: SigningKey,
    pub key_id: String,
    pub team_id: String,
    /// `apns-topic`: the app's bundle id.
    pub topic: String,
    /// The API root; [`DEVICE_PATH`] and the token are appended.
    pub base_url: Url,
    pub push_type: PushType,
    /// `apns-priority`.
    pub priority: u8,
    /// Bounds the whole request: connect, send, and the answer.
    pub timeout: Duration,
}

/// `value` if it is one of Apple's 10-character ids, else a problem
/// reported under `key`.
fn apple_id(table: &mut KindTable<'_>, key: &str, value: Option<String>) -> Option<String> {
    let Some(value) = value else {
        table.problem(
            key,
            "an apns transport needs it (10 characters, from Apple)",
        );
        return None;
    };
    let value = value.trim().to_owned();
    if value.len() != ID_LEN || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        table.problem(
            key,
            format!("`{value}` is not {ID_LEN} letters and digits, as Apple's ids are"),
        );
        return None;
    }
    Some(value)
}

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: ApnsKeys = table.keys()?;
    let timeout = table.timeout(keys.timeout_ms);
    let key = match keys.key_file.map(PathBuf::from) {
        None => {
            table.problem(
                "key_file",
                "an apns transport needs the path of its .p8 signing key",
            );
            None
        }
        Some(path) => match std::fs::read(&path) {
            Err(e) => {
                table.problem("key_file", format!("cannot read {}: {e}", path.display()));
                None
            }
            Ok(pem) => SigningKey::from_pem(&pem)
                .map_err(|e| table.problem("key_file", format!("{}: {e}", path.display())))
                .ok(),
        },
    };
    let key_id = apple_id(table, "key_id", keys.key_id);
    let team_id = apple_id(table, "team_id", keys.team_id);
    let topic = match keys.topic.map(|t| t.trim().to_owned()) {
        None => {
            table.problem("topic", "an apns transport needs the app's bundle id");
            None
        }
        Some(topic) if topic.is_empty() || !topic.bytes().all(|b| b.is_ascii_graphic()) => {
            table.problem("topic", "a bundle id is visible ASCII, not blank");
            None
        }
        Some(topic) => Some(topic),
    };
    let environment_root = match keys.environment.as_deref() {
        None | Some("production") => Some(PRODUCTION_BASE_URL),
        Some("sandbox") => Some(SANDBOX_BASE_URL),
        Some(other) => {
            table.problem(
                "environment",
                format!("`{other}` is not `production` or `sandbox`"),
            );
            None
        }
    };
    let base_url = http::configure_base_url(
        table,
        keys.base_url.as_deref(),
        environment_root.unwrap_or(PRODUCTION_BASE_URL),
    );
    // An unknown `environment` is a problem even where `base_url` would
    // override it: the operator meant one of the two.
    let base_url = environment_root.and(base_url);
    let push_type = match keys.push_type.as_deref() {
        None | Some("alert") => Some(PushType::Alert),
        Some("background") => Some(PushType::Background),
        Some(other) => {
            table.problem(
                "push_type",
                format!("`{other}` is not `alert` or `background`"),
            );
            None
        }
    };
    let priority = match (keys.priority, push_type) {
        // Apple refuses priority 10 for a background push.
        (None, Some(PushType::Background)) => Some(5),
        (None, _) => Some(10),
        (Some(10), Some(PushType::Background)) => {
            table.problem(
                "priority",
                "a background push is sent at 5 or 1; APNs refuses 10",
            );
            None
        }
        (Some(p @ (10 | 5 | 1)), _) => Some(p),
        (Some(other), _) => {
            table.problem("priority", format!("{other} is not 10, 5 or 1"));
            None
        }
    };
    Some(Arc::new(ApnsOptions {
        key: key?,
        key_id: key_id?,
        team_id: team_id?,
        topic: topic?,
        base_url: base_url?,
        push_type: push_type?,
        priority: priority?,
        timeout: timeout?,
    }))
}

impl TransportKind for ApnsOptions {
    fn name(&self) -> &'static str {
        "apns"
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(ApnsTransport::new(
            settings.name.clone(),
            self.clone(),
            clock,
        )?))
    }
}

/// A provider token and when it was signed.
struct Signed {
    bearer: HeaderValue,
    issued_at: DateTime<Utc>,
}

/// Sends push notifications to one app through APNs.
pub struct ApnsTransport {
    http: Caller,
    options: ApnsOptions,
    /// `{base_url}/3/device`.
    device_url: Url,
    /// The token every delivery sends until it is due for renewal. A std
    /// mutex: it is held only to sign (no await), and holding it while
    /// signing makes concurrent deliveries share one signing instead of
    /// each renewing the token, which Apple refuses when done too often.
    token: Mutex<Option<Signed>>,
    /// A push has gone through since this process started, so
    /// `environment` is right: until then a BadDeviceToken may be the
    /// wrong environment's answer to every token, which must not put
    /// them all on the suppression list.
    delivered_once: AtomicBool,
}

/// An HTTP/2-only client: APNs speaks nothing else. Over TLS that is ALPN
/// `h2` alone, so a server offering only HTTP/1.1 fails the handshake
/// instead of being sent requests APNs would refuse; over plain `http`
/// (tests, a local relay) it is h2c with prior knowledge. Otherwise as
/// [`http::client`]: bounded, no redirects.
fn client(name: &str, timeout: Duration) -> Result<reqwest::Client, TransportError> {
    super::install_crypto_provider();
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(POOL_IDLE)
        .http2_keep_alive_interval(KEEP_ALIVE_PING)
        .http2_keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TransportError::Local(format!("transport `{name}`: HTTP client: {e}")))
}

impl ApnsTransport {
    /// The transport `name` sends through, dating its provider tokens and
    /// expirations by `clock`.
    pub fn new(
        name: impl Into<String>,
        options: ApnsOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TransportError> {
        let name = name.into();
        let client = client(&name, options.timeout)?;
        let device_url = http::endpoint(&options.base_url, DEVICE_PATH);
        Ok(ApnsTransport {
            http: Caller::with_client(name, client, &device_url, clock),
            options,
            device_url,
            token: Mutex::new(None),
            delivered_once: AtomicBool::new(false),
        })
    }

    /// The token to send now: the cached one while it is young enough,
    /// else a new one, cached.
    fn bearer(&self, now: DateTime<Utc>) -> Result<HeaderValue, TransportError> {
        let mut token = self
            .token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(signed) = token.as_ref() {
            let age = now - signed.issued_at;
            // A clock set back leaves the token as young as it was.
            if age < TOKEN_LIFETIME {
                return Ok(signed.bearer.clone());
            }
        }
        let jwt = self
            .options
            .key
            .sign(&self.options.key_id, &self.options.team_id, now.timestamp())
            .map_err(|e| {
                TransportError::Local(format!(
                    "{}: signing the provider token: {e}",
                    self.http.name
                ))
            })?;
        let mut bearer = HeaderValue::from_str(&format!("bearer {jwt}")).map_err(|e| {
            TransportError::Local(format!("{}: the provider token: {e}", self.http.name))
        })?;
        bearer.set_sensitive(true);
        *token = Some(Signed {
            bearer: bearer.clone(),
            issued_at: now,
        });
        Ok(bearer)
    }

    /// Forgets `sent` after APNs refused it, so the next delivery signs
    /// anew. A token signed since by another delivery is kept: dropping
    /// it too would renew the token once per refused delivery.
    fn forget(&self, sent: &HeaderValue) {
        let mut token = self
            .token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if token.as_ref().is_some_and(|signed| signed.bearer == sent) {
            *token = None;
        }
    }

    /// `{base_url}/3/device/{token}`, the token one escaped path segment.
    fn device(&self, token: &str) -> Result<Url, TransportError> {
        let mut url = self.device_url.clone();
        url.path_segments_mut()
            .map_err(|()| {
                TransportError::Local(format!("{}: base_url has no path", self.http.name))
            })?
            .push(token);
        Ok(url)
    }
}

/// The push `message` carries, in the provider shape.
fn push_payload(message: &Message) -> Result<PushPayload, TransportError> {
    match Payload::from_json(message.channel, &message.payload)
        .map_err(|e| TransportError::InvalidMessage(format!("the stored payload: {e}")))?
    {
        Payload::Push(push) => Ok(push),
        _ => Err(TransportError::InvalidMessage(format!(
            "an apns transport sends pushes in `{{token, ...}}` shape, not this `{}` payload",
            message.channel
        ))),
    }
}

/// The notification's JSON: Apple's `aps` dictionary, with the data's
/// keys beside it at the top level, where the app reads them.
fn request_body(push: &PushPayload, push_type: PushType) -> Result<Value, TransportError> {
    let mut aps = serde_json::Map::new();
    let visible = push.title.is_some() || push.body.is_some() || push.sound.is_some();
    match push_type {
        PushType::Alert => {
            let mut alert = serde_json::Map::new();
            if let Some(title) = &push.title {
                alert.insert("title".into(), json!(title));
            }
            if let Some(body) = &push.body {
                alert.insert("body".into(), json!(body));
            }
            if !alert.is_empty() {
                aps.insert("alert".into(), Value::Object(alert));
            }
            if let Some(badge) = push.badge {
                aps.insert("badge".into(), json!(badge));
            }
            if let Some(sound) = &push.sound {
                aps.insert("sound".into(), json!(sound));
            }
        }
        // APNs may drop a background push whose payload would show
        // something: the message and the transport disagree, which no
        // retry mends.
        PushType::Background if visible || push.badge.is_some() => {
            return Err(TransportError::InvalidMessage(
                "a background push carries data only; title, body, badge and sound need \
                 push_type `alert`"
                    .into(),
            ));
        }
        PushType::Background => {
            aps.insert("content-available".into(), json!(1));
        }
    }
    let mut body = serde_json::Map::new();
    body.insert("aps".into(), Value::Object(aps));
    for (key, value) in &push.data {
        if key == "aps" {
            return Err(TransportError::InvalidMessage(
                "data key `aps` is APNs' own dictionary".into(),
            ));
        }
        body.insert(key.clone(), json!(value));
    }
    Ok(Value::Object(body))
}

/// What APNs answers to a refused notification.
#[derive(Deserialize)]
struct ApnsRefusal {
    reason: String,
}

/// A refusal, classified by its `reason` where that says more than the
/// status, else by the status ([`Answer::failure`]: other 400s, 404, 405
/// and 413 permanent; 403 the credentials; 429 and 5xx for now). The
/// flag says the provider token itself was refused.
fn failure(answer: &Answer, now: SystemTime) -> (TransportError, bool) {
    let reason = answer.json::<ApnsRefusal>().map(|r| r.reason);
    let code = Some(answer.status);
    match (answer.status, reason.as_deref()) {
        // 410: the token is no longer active for the topic (the app was
        // removed, notifications turned off). BadDeviceToken also answers
        // a token of the other environment, which a wrong `environment`
        // shows as every push refused so.
        (410, _) | (400, Some("BadDeviceToken" | "DeviceTokenNotForTopic")) => (
            TransportError::RecipientGone {
                reason: RecipientGone::Invalid,
                code,
                message: answer.describe(),
            },
            false,
        ),
        (403, Some("InvalidProviderToken" | "ExpiredProviderToken" | "MissingProviderToken")) => (
            TransportError::Unauthorized {
                code,
                message: answer.describe(),
            },
            true,
        ),
        _ => (answer.failure(now), false),
    }
}

#[async_trait]
impl Transport for ApnsTransport {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn kind(&self) -> &'static str {
        "apns"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let push = push_payload(message)?;
        let body = request_body(&push, self.options.push_type)?;
        let body = serde_json::to_vec(&body)
            .map_err(|e| TransportError::InvalidMessage(format!("request body: {e}")))?;
        let now = self.http.clock.now();
        let bearer = self.bearer(now)?;
        // APNs keeps a notification for an offline device until this
        // instant; 0 asks it to try once and keep nothing.
        let expiration = push
            .ttl_s
            .and_then(|ttl| i64::try_from(ttl).ok())
            .map_or(0, |ttl| now.timestamp().saturating_add(ttl));
        let apns_id = uuid::Uuid::from(message.id.0).hyphenated().to_string();
        let mut request = self
            .http
            .client
            .post(self.device(&push.token)?)
            .header(AUTHORIZATION, bearer.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("apns-id", apns_id.as_str())
            .header("apns-topic", self.options.topic.as_str())
            .header("apns-push-type", self.options.push_type.as_str())
            .header("apns-priority", self.options.priority.to_string())
            .header("apns-expiration", expiration.to_string());
        if let Some(collapse) = &push.collapse_key {
            request = request.header("apns-collapse-id", collapse.as_str());
        }
        let answer = self.http.send(request.body(body)).await?;
        if answer.is_success() {
            self.delivered_once.store(true, Ordering::Relaxed);
            let provider_message_id = answer
                .header("apns-id")
                .filter(|id| !id.trim().is_empty())
                .map_or(apns_id, str::to_owned);
            return Ok(self.http.delivered(&answer, Some(provider_message_id)));
        }
        let (error, token_refused) = failure(&answer, SystemTime::from(now));
        if token_refused {
            self.forget(&bearer);
        }
        Err(unproven(error, &answer, &self.delivered_once))
    }
}

/// `error`, except that a BadDeviceToken before any push went through is
/// a plain refusal: dead-lettered, but not a gone recipient (see
/// `ApnsTransport::delivered_once`).
fn unproven(error: TransportError, answer: &Answer, delivered_once: &AtomicBool) -> TransportError {
    match error {
        TransportError::RecipientGone { code, message, .. }
            if answer.status == 400 && !delivered_once.load(Ordering::Relaxed) =>
        {
            TransportError::Rejected {
                code,
                message: format!(
                    "{message} (no push has gone through this transport yet: if every token is \
                     refused so, check `environment`; not suppressed)"
                ),
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn push() -> PushPayload {
        PushPayload {
            token: "ab".repeat(32),
            title: None,
            body: None,
            data: BTreeMap::new(),
            badge: None,
            sound: None,
            ttl_s: None,
            collapse_key: None,
        }
    }

    #[test]
    fn an_alert_carries_only_what_the_push_has() {
        let mut p = push();
        p.body = Some("Hi".into());
        p.data.insert("order".into(), "42".into());
        assert_eq!(
            request_body(&p, PushType::Alert).unwrap(),
            json!({"aps": {"alert": {"body": "Hi"}}, "order": "42"})
        );
        assert_eq!(
            request_body(&push(), PushType::Alert).unwrap(),
            json!({"aps": {}})
        );
    }

    #[test]
    fn a_background_push_is_data_only() {
        let mut p = push();
        p.data.insert("sync".into(), "1".into());
        assert_eq!(
            request_body(&p, PushType::Background).unwrap(),
            json!({"aps": {"content-available": 1}, "sync": "1"})
        );
        p.title = Some("Hi".into());
        assert!(request_body(&p, PushType::Background).is_err());
    }

    #[test]
    fn data_cannot_replace_the_aps_dictionary() {
        let mut p = push();
        p.data.insert("aps".into(), "x".into());
        let err = request_body(&p, PushType::Alert).unwrap_err();
        assert!(err.is_permanent(), "{err}");
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Default::default(),
            body: body.as_bytes().to_vec(),
            host: "api.push.apple.com".into(),
        }
    }

    #[test]
    fn reasons_say_more_than_the_status() {
        let now = SystemTime::UNIX_EPOCH;
        let (gone, _) = failure(&answer(400, r#"{"reason":"DeviceTokenNotForTopic"}"#), now);
        assert_eq!(gone.recipient_gone(), Some(RecipientGone::Invalid));
        let (gone, _) = failure(&answer(410, r#"{"reason":"ExpiredToken"}"#), now);
        assert_eq!(gone.recipient_gone(), Some(RecipientGone::Invalid));
        let (refused, drop) = failure(&answer(403, r#"{"reason":"ExpiredProviderToken"}"#), now);
        assert!(refused.is_unauthorized() && drop, "{refused}");
        let (forbidden, drop) = failure(&answer(403, r#"{"reason":"Forbidden"}"#), now);
        assert!(forbidden.is_unauthorized() && !drop, "{forbidden}");
        let (large, _) = failure(&answer(413, r#"{"reason":"PayloadTooLarge"}"#), now);
        assert!(large.is_permanent() && large.recipient_gone().is_none());
        let (updates, _) = failure(
            &answer(429, r#"{"reason":"TooManyProviderTokenUpdates"}"#),
            now,
        );
        assert!(updates.is_transient() && !updates.is_unauthorized());
        // A reason in an answer that is not JSON is not guessed at.
        let (garbled, _) = failure(&answer(400, "BadDeviceToken"), now);
        assert!(garbled.is_permanent() && garbled.recipient_gone().is_none());
    }
}
