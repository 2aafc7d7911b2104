//! The `fcm` transport: push notifications through Firebase Cloud
//! Messaging's HTTP v1 API, `POST /v1/projects/{project}/messages:send`,
//! authorised by an OAuth2 access token that a service account's key
//! earns: a JWT bearer grant signed RS256, posted to the token URL.
//!
//! The access token is cached until shortly before it expires and fetched
//! once for every delivery waiting on it (the fetch holds the cache's
//! lock); a refusal of it drops it, so the next attempt fetches another.
//! Answers are read by FCM's `errorCode` (`UNREGISTERED`, `QUOTA_EXCEEDED`,
//! ...) before the status. The answer's `name` is the provider's id.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks (the key file is read and its key parsed at
//! start), and the transport built from them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use url::Url;

use crate::config::{KindTable, TransportSettings};
use crate::domain::{Channel, Message, Payload, PushPayload};
use crate::time::Clock;

use super::http::{self, Answer, Caller};
use super::{Delivery, Gated, KindSpec, RecipientGone, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "fcm",
    keys: &[
        "service_account_file",
        "project_id",
        "token_url",
        "base_url",
        "timeout_ms",
    ],
    channels: &[Channel::Push],
    native: &[Channel::Push],
    configure,
};

const DEFAULT_BASE_URL: &str = "https://fcm.googleapis.com";
const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The scope an FCM send needs.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// How long the grant asks the token to live (Google's maximum).
const GRANT_LIFETIME_S: i64 = 3600;
/// A cached token is given up this long before it expires, so that no
/// delivery sets out with one that ends on the way.
const REFRESH_MARGIN_S: i64 = 300;
/// The data key the stamp travels under, for the app to report opens by.
const STAMP_DATA_KEY: &str = "herald_stamp";

/// The `fcm` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcmKeys {
    /// A service account's JSON key file. Required.
    service_account_file: Option<String>,
    /// The Firebase project. Default: the key file's `project_id`.
    project_id: Option<String>,
    /// Where access tokens are granted. Default: the key file's
    /// `token_uri`, else https://oauth2.googleapis.com/token.
    token_url: Option<String>,
    /// The API's root. Default https://fcm.googleapis.com.
    base_url: Option<String>,
    /// Time-out of one delivery (and of a token fetch), in ms. Default 10000.
    timeout_ms: Option<u64>,
}

/// The fields of a service account key file this transport uses.
#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    project_id: Option<String>,
    token_uri: Option<String>,
}

/// A project to push through, validated, its signing key parsed.
#[derive(Clone)]
pub struct FcmOptions {
    send_url: Url,
    token_url: Url,
    client_email: String,
    key_id: Option<String>,
    key: Arc<EncodingKey>,
    timeout: Duration,
}

impl std::fmt::Debug for FcmOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmOptions")
            .field("send_url", &self.send_url)
            .field("token_url", &self.token_url)
            .field("client_email", &self.client_email)
            .field("key", &"[redacted]")
            .finish()
    }
}

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: FcmKeys = table.keys()?;
    let timeout = table.timeout(keys.timeout_ms);
    let base = http::configure_base_url(table, keys.base_url.as_deref(), DEFAULT_BASE_URL);
    let Some(path) = keys.service_account_file else {
        table.problem(
            "service_account_file",
            "an fcm transport needs a service account's key file",
        );
        return None;
    };
    let account = match std::fs::read_to_string(&path)
        .map_err(|e| format!("`{path}` cannot be read: {e}"))
        .and_then(|text| {
            serde_json::from_str::<ServiceAccount>(&text)
                .map_err(|e| format!("`{path}` is not a service account key file: {e}"))
        }) {
        Ok(account) => account,
        Err(problem) => {
            table.problem("service_account_file", problem);
            return None;
        }
    };
    let key = match EncodingKey::from_rsa_pem(account.private_key.as_bytes()) {
        Ok(key) => Some(key),
        Err(e) => {
            table.problem(
                "service_account_file",
                format!("`{path}`: its private_key is not an RSA key in PEM: {e}"),
            );
            None
        }
    };
    let project = keys.project_id.or(account.project_id);
    let project = match project {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            Some(p)
        }
        Some(p) => {
            table.problem("project_id", format!("`{p}` is not a project id"));
            None
        }
        None => {
            table.problem(
                "project_id",
                "neither set nor in the key file (`project_id`)",
            );
            None
        }
    };
    let token_text = keys
        .token_url
        .or(account.token_uri)
        .unwrap_or_else(|| DEFAULT_TOKEN_URL.to_owned());
    let token_url = match Url::parse(&token_text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(url)
        }
        _ => {
            table.problem(
                "token_url",
                format!("`{token_text}` is not an http(s) URL with a host"),
            );
            None
        }
    };
    let project = project?;
    Some(Arc::new(FcmOptions {
        send_url: http::endpoint(&base?, &format!("/v1/projects/{project}/messages:send")),
        token_url: token_url?,
        client_email: account.client_email,
        key_id: account.private_key_id,
        key: Arc::new(key?),
        timeout: timeout?,
    }))
}

impl TransportKind for FcmOptions {
    fn name(&self) -> &'static str {
        "fcm"
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(FcmTransport::new(
            settings.name.clone(),
            self.clone(),
            clock,
        )?))
    }
}

/// An access token and when to stop using it.
struct AccessToken {
    authorization: HeaderValue,
    refresh_at: DateTime<Utc>,
}

/// Pushes through one Firebase project.
pub struct FcmTransport {
    http: Caller,
    options: FcmOptions,
    /// The token URL's host, for error messages.
    token_host: String,
    /// Held across a fetch: concurrent deliveries wait for one grant.
    token: Mutex<Option<AccessToken>>,
}

/// The JWT bearer grant's claims (RFC 7523, as Google documents them).
#[derive(Serialize)]
struct GrantClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<i64>,
}

impl FcmTransport {
    /// Builds the transport; `clock` dates the grants and the cache.
    pub fn new(
        name: String,
        options: FcmOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TransportError> {
        let http = Caller::new(name, &options.send_url, options.timeout, clock)?;
        let token_host = options.token_url.host_str().unwrap_or_default().to_owned();
        Ok(FcmTransport {
            http,
            options,
            token_host,
            token: Mutex::new(None),
        })
    }

    /// The `Authorization` value to send with: the cached token while it
    /// is fresh, else a new one, fetched once for all who wait.
    async fn authorization(&self) -> Result<HeaderValue, TransportError> {
        let mut cached = self.token.lock().await;
        let now = self.http.clock.now();
        if let Some(token) = cached.as_ref().filter(|t| now < t.refresh_at) {
            return Ok(token.authorization.clone());
        }
        let fresh = self.grant(now).await?;
        let authorization = fresh.authorization.clone();
        *cached = Some(fresh);
        Ok(authorization)
    }

    /// Forgets the token `refused` if it is still the cached one (another
    /// delivery may have replaced it already).
    async fn forget(&self, refused: &HeaderValue) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.authorization == *refused) {
            *cached = None;
        }
    }

    async fn grant(&self, now: DateTime<Utc>) -> Result<AccessToken, TransportError> {
        let iat = now.timestamp();
        let claims = GrantClaims {
            iss: &self.options.client_email,
            scope: SCOPE,
            aud: self.options.token_url.as_str(),
            iat,
            exp: iat + GRANT_LIFETIME_S,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.options.key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &self.options.key)
            .map_err(|e| TransportError::Local(format!("signing the token grant: {e}")))?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let request = self
            .http
            .client
            .post(self.options.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form);
        let answer = http::send(request, &self.token_host).await?;
        if !answer.is_success() {
            // A refused grant (a revoked or deleted key, `invalid_grant`)
            // is the transport's credentials, whatever status carries it.
            return Err(match answer.failure(SystemTime::from(now)) {
                TransportError::Rejected { code, message } => {
                    TransportError::Unauthorized { code, message }
                }
                other => other,
            });
        }
        let token: TokenAnswer = answer.json().ok_or_else(|| TransportError::Temporary {
            code: Some(answer.status),
            message: format!("{}: a token answer without access_token", self.token_host),
            retry_after: None,
        })?;
        let lifetime = token.expires_in.unwrap_or(GRANT_LIFETIME_S).max(0);
        let keep = (lifetime - REFRESH_MARGIN_S).max(lifetime / 2);
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.access_token))
            .map_err(|_| TransportError::Local("the access token is not a header value".into()))?;
        authorization.set_sensitive(true);
        Ok(AccessToken {
            authorization,
            refresh_at: now + chrono::Duration::seconds(keep),
        })
    }
}

/// The v1 `message` for `push`, stamped.
fn request_body(message: &Message, now: DateTime<Utc>) -> Result<Vec<u8>, TransportError> {
    let Payload::Push(push) = Payload::from_json(message.channel, &message.payload)
        .map_err(|e| TransportError::InvalidMessage(format!("the stored payload: {e}")))?
    else {
        return Err(TransportError::InvalidMessage(format!(
            "an fcm transport pushes `{{token, ...}}` payloads, not this `{}` one",
            message.channel
        )));
    };
    let body = json!({ "message": fcm_message(&push, &message.id.to_string(), now) });
    serde_json::to_vec(&body).map_err(|e| TransportError::InvalidMessage(format!("body: {e}")))
}

fn fcm_message(push: &PushPayload, stamp: &str, now: DateTime<Utc>) -> Value {
    let mut message = json!({ "token": push.token });
    let mut notification = serde_json::Map::new();
    if let Some(title) = &push.title {
        notification.insert("title".into(), json!(title));
    }
    if let Some(body) = &push.body {
        notification.insert("body".into(), json!(body));
    }
    if !notification.is_empty() {
        message["notification"] = Value::Object(notification);
    }
    let mut data: BTreeMap<&str, &str> = push
        .data
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    data.insert(STAMP_DATA_KEY, stamp);
    message["data"] = json!(data);
    // Android and APNs each say TTL, collapsing, sound and badge their own way.
    let mut android = serde_json::Map::new();
    if let Some(ttl) = push.ttl_s {
        android.insert("ttl".into(), json!(format!("{ttl}s")));
    }
    if let Some(key) = &push.collapse_key {
        android.insert("collapse_key".into(), json!(key));
    }
    if let Some(sound) = &push.sound {
        android.insert("notification".into(), json!({ "sound": sound }));
    }
    if !android.is_empty() {
        message["android"] = Value::Object(android);
    }
    let mut headers = serde_json::Map::new();
    if let Some(ttl) = push.ttl_s {
        let expires = now.timestamp() + i64::try_from(ttl).unwrap_or(i64::MAX / 2);
        headers.insert("apns-expiration".into(), json!(expires.to_string()));
    }
    if let Some(key) = &push.collapse_key {
        headers.insert("apns-collapse-id".into(), json!(key));
    }
    let mut aps = serde_json::Map::new();
    if let Some(badge) = push.badge {
        aps.insert("badge".into(), json!(badge));
    }
    if let Some(sound) = &push.sound {
        aps.insert("sound".into(), json!(sound));
    }
    let mut apns = serde_json::Map::new();
    if !headers.is_empty() {
        apns.insert("headers".into(), Value::Object(headers));
    }
    if !aps.is_empty() {
        apns.insert("payload".into(), json!({ "aps": aps }));
    }
    if !apns.is_empty() {
        message["apns"] = Value::Object(apns);
    }
    message
}

/// FCM's error answer: a Google API error with FCM's own code in its
/// details.
#[derive(Deserialize)]
struct ErrorAnswer {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    status: Option<String>,
    message: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

/// Reads a refused send by FCM's `errorCode`, else the Google status,
/// else the HTTP status.
fn classify(answer: &Answer, now: SystemTime) -> TransportError {
    let error = answer.json::<ErrorAnswer>().map(|e| e.error);
    let fcm_code = error.as_ref().and_then(|e| {
        e.details
            .iter()
            .find_map(|d| d.get("errorCode").and_then(Value::as_str))
            .map(str::to_owned)
    });
    let status = error.as_ref().and_then(|e| e.status.clone());
    let code = fcm_code.or(status);
    let message = match (&code, error.as_ref().and_then(|e| e.message.as_deref())) {
        (Some(code), Some(text)) => format!("{}: FCM {code}: {text}", answer.host),
        _ => answer.describe(),
    };
    let http = Some(answer.status);
    match code.as_deref() {
        Some("UNREGISTERED" | "SENDER_ID_MISMATCH") => TransportError::RecipientGone {
            reason: RecipientGone::Invalid,
            code: http,
            message,
        },
        Some("INVALID_ARGUMENT") => TransportError::Rejected {
            code: http,
            message,
        },
        Some("QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" | "RESOURCE_EXHAUSTED") => {
            TransportError::Temporary {
                code: http,
                message,
                retry_after: answer.retry_after(now),
            }
        }
        Some("THIRD_PARTY_AUTH_ERROR" | "UNAUTHENTICATED" | "PERMISSION_DENIED") => {
            TransportError::Unauthorized {
                code: http,
                message,
            }
        }
        _ => match answer.failure(now) {
            TransportError::Rejected { code, .. } => TransportError::Rejected { code, message },
            other => other,
        },
    }
}

#[async_trait]
impl Transport for FcmTransport {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn kind(&self) -> &'static str {
        "fcm"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let body = request_body(message, self.http.clock.now())?;
        let authorization = self.authorization().await?;
        let request = self
            .http
            .client
            .post(self.options.send_url.clone())
            .header(AUTHORIZATION, authorization.clone())
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body);
        let answer = self.http.send(request).await?;
        if !answer.is_success() {
            let err = classify(&answer, self.http.now());
            if err.is_unauthorized() {
                self.forget(&authorization).await;
            }
            return Err(err);
        }
        let name = answer
            .json::<Value>()
            .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned));
        Ok(self.http.delivered(&answer, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> PushPayload {
        PushPayload {
            token: "device-1".into(),
            title: Some("Shipped".into()),
            body: None,
            data: BTreeMap::from([("order".into(), "42".into())]),
            badge: None,
            sound: None,
            ttl_s: None,
            collapse_key: None,
        }
    }

    #[test]
    fn a_plain_push_sends_only_what_it_has() {
        let now = crate::time::from_millis(1_767_225_600_000);
        assert_eq!(
            fcm_message(&push(), "STAMP", now),
            json!({
                "token": "device-1",
                "notification": {"title": "Shipped"},
                "data": {"order": "42", "herald_stamp": "STAMP"}
            })
        );
    }

    #[test]
    fn ttl_collapsing_sound_and_badge_go_to_each_platform_its_way() {
        let now = crate::time::from_millis(1_767_225_600_000);
        let full = PushPayload {
            body: Some("On its way".into()),
            badge: Some(3),
            sound: Some("default".into()),
            ttl_s: Some(3600),
            collapse_key: Some("order-42".into()),
            ..push()
        };
        let message = fcm_message(&full, "STAMP", now);
        assert_eq!(
            message["android"],
            json!({"ttl": "3600s", "collapse_key": "order-42", "notification": {"sound": "default"}})
        );
        assert_eq!(
            message["apns"],
            json!({
                "headers": {"apns-expiration": (now.timestamp() + 3600).to_string(), "apns-collapse-id": "order-42"},
                "payload": {"aps": {"badge": 3, "sound": "default"}}
            })
        );
        assert_eq!(
            message["notification"],
            json!({"title": "Shipped", "body": "On its way"})
        );
    }
}
