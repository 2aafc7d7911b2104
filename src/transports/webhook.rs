//! The `webhook` transport: an HTTP POST of JSON to a provider (chat, push,
//! SMS gateways, or the client's own endpoint), signed with HMAC-SHA256 so
//! the receiver can check it came from Herald (`X-Herald-Signature`, and
//! Standard Webhooks' `webhook-signature`, which the published libraries
//! verify, replays included), with the answer classified
//! for retrying. It owns the server-side request forgery guard at delivery
//! time: a per-message URL must be on the transport's allow-list, and
//! redirects are never followed.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::{KindTable, Secret, TransportSettings};
use crate::domain::{Channel, Message, Payload};
use crate::time::{Clock, SystemClock};

use super::{Delivery, Gated, KindSpec, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "webhook",
    keys: &[
        "url",
        "secret_env",
        "signing_secret_env",
        "timeout_ms",
        "allowed_url_hosts",
        "headers",
        "header_env",
        "auth",
        "token_env",
        "username",
        "password_env",
        "body",
    ],
    channels: &[Channel::Sms, Channel::Chat, Channel::Push, Channel::Webhook],
    native: &[],
    configure,
};

/// The header carrying the message's stamp.
pub const STAMP_HEADER: &str = "X-Herald-Stamp";
/// The header carrying `sha256=<hex HMAC of the raw body>`.
pub const SIGNATURE_HEADER: &str = "X-Herald-Signature";
/// Standard Webhooks' headers: the message id (the stamp, the same on
/// every retry, so receivers can drop duplicates), the send time in Unix
/// seconds, and `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";
/// How a Standard Webhooks secret is written: `whsec_` and base64.
const SIGNING_SECRET_PREFIX: &str = "whsec_";

/// Where and how to post.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Where messages without their own `url` go.
    pub url: url::Url,
    /// Signs each body when set (`X-Herald-Signature`).
    pub secret: Option<Secret>,
    /// Signs each request the Standard Webhooks way when set.
    pub signing_key: Option<SigningKey>,
    /// Bounds the whole request: connect, send, and the answer.
    pub timeout: Duration,
    /// Hosts a per-message `url` may name; `None` refuses them all.
    pub allowed_url_hosts: Option<Vec<String>>,
    /// Headers sent with every request (`headers`, and `header_env`'s
    /// values read at start), `Authorization` from `auth` among them.
    pub headers: reqwest::header::HeaderMap,
    /// How the payload is encoded.
    pub body: BodyEncoding,
}

/// `body = "json" | "form"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    #[default]
    Json,
    /// `application/x-www-form-urlencoded` of the payload's top-level
    /// fields, as SMS gateways and many provider APIs take it.
    Form,
}

/// `auth = "bearer" | "basic"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Auth {
    Bearer,
    Basic,
}

/// Headers a transport's `headers` and `header_env` may not set: Herald
/// writes them itself (the stamp and the signatures, which receivers
/// trust) or another key does (`auth`, `body`).
const OWN_HEADERS: &[&str] = &[
    "x-herald-stamp",
    "x-herald-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
];

/// A Standard Webhooks signing key: the bytes a `whsec_...` secret
/// encodes. Never shown.
#[derive(Clone)]
pub struct SigningKey(Arc<[u8]>);

impl SigningKey {
    /// Reads a secret written `whsec_<base64>` (the prefix may be left
    /// out, as the published libraries allow).
    pub fn parse(secret: &str) -> Result<SigningKey, String> {
        use base64::Engine;
        let encoded = secret.strip_prefix(SIGNING_SECRET_PREFIX).unwrap_or(secret);
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("not a `whsec_` secret: its base64 does not decode ({e})"))?;
        if key.is_empty() {
            return Err("not a `whsec_` secret: it is empty".into());
        }
        Ok(SigningKey(key.into()))
    }

    /// The `webhook-signature` value of a request with the message id
    /// `id`, sent at `timestamp` (Unix seconds), carrying `body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        use base64::Engine;
        match self.mac(id, &timestamp.to_string(), body) {
            Some(mac) => {
                let signature =
                    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
                format!("v1,{signature}")
            }
            None => String::from("v1,"),
        }
    }

    /// Whether `signature` (a `v1` entry's bytes) is this key's over the
    /// message `id` sent at `timestamp` (as its header wrote it) with
    /// `body`; compared in constant time.
    pub fn verifies(&self, id: &str, timestamp: &str, body: &[u8], signature: &[u8]) -> bool {
        self.mac(id, timestamp, body)
            .is_some_and(|mac| mac.verify_slice(signature).is_ok())
    }

    /// The HMAC over what Standard Webhooks signs: `id.timestamp.body`.
    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).ok()?;
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        Some(mac)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

/// The `webhook` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookKeys {
    /// Endpoint URL. Required.
    url: Option<String>,
    /// Environment variable holding the HMAC secret.
    secret_env: Option<String>,
    /// Environment variable holding a Standard Webhooks secret (`whsec_...`).
    signing_secret_env: Option<String>,
    /// Time-out of one delivery, in ms. Default 10000.
    timeout_ms: Option<u64>,
    /// Hosts a per-message `url` may point at. Unset: per-message URLs are refused.
    allowed_url_hosts: Option<Vec<String>>,
    /// Headers with literal values, sent with every request.
    headers: Option<std::collections::BTreeMap<String, String>>,
    /// Headers whose values are secrets: header name -> environment variable.
    header_env: Option<std::collections::BTreeMap<String, String>>,
    /// `bearer` (with `token_env`) or `basic` (with `username`, `password_env`).
    auth: Option<Auth>,
    /// auth = "bearer": environment variable holding the token.
    token_env: Option<String>,
    /// auth = "basic": the user name.
    username: Option<String>,
    /// auth = "basic": environment variable holding the password.
    password_env: Option<String>,
    /// `json` (default) or `form`.
    body: Option<BodyEncoding>,
}

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: WebhookKeys = table.keys()?;
    let timeout = table.timeout(keys.timeout_ms);
    let url = match keys.url.as_deref().map(url::Url::parse) {
        Some(Ok(url)) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(url)
        }
        Some(Ok(url)) => {
            table.problem("url", format!("`{url}` is not an http(s) URL with a host"));
            None
        }
        Some(Err(e)) => {
            table.problem("url", format!("not a URL: {e}"));
            None
        }
        None => {
            table.problem("url", "a webhook transport needs a url");
            None
        }
    };
    let secret = table.secret("secret_env", keys.secret_env.as_deref());
    let signing_key = table
        .secret("signing_secret_env", keys.signing_secret_env.as_deref())
        .and_then(|secret| match SigningKey::parse(secret.expose()) {
            Ok(key) => Some(key),
            Err(problem) => {
                table.problem("signing_secret_env", problem);
                None
            }
        });
    let headers = configure_headers(table, &keys);
    let allowed_url_hosts = keys.allowed_url_hosts.map(|hosts| {
        hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect()
    });
    Some(Arc::new(WebhookOptions {
        url: url?,
        secret,
        signing_key,
        timeout: timeout?,
        allowed_url_hosts,
        headers: headers?,
        body: keys.body.unwrap_or_default(),
    }))
}

/// The headers `headers`, `header_env` and `auth` add to every request,
/// each problem reported under its key.
fn configure_headers(
    table: &mut KindTable<'_>,
    keys: &WebhookKeys,
) -> Option<reqwest::header::HeaderMap> {
    use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName};
    let mut headers = HeaderMap::new();
    let mut ok = true;
    let literal = keys.headers.iter().flatten().map(|(name, value)| {
        (
            format!("headers.{name}"),
            name,
            Some(Secret::new(value.clone())),
        )
    });
    let from_env: Vec<_> = keys
        .header_env
        .iter()
        .flatten()
        .map(|(name, var)| {
            let key = format!("header_env.{name}");
            let value = table.secret(&key, Some(var));
            (key, name, value)
        })
        .collect();
    for (key, name, value) in literal.chain(from_env) {
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            table.problem(&key, format!("`{name}` is not a header name"));
            ok = false;
            continue;
        };
        if OWN_HEADERS.contains(&header.as_str())
            || (header == AUTHORIZATION && keys.auth.is_some())
        {
            table.problem(&key, format!("`{name}` is set by Herald or by another key"));
            ok = false;
            continue;
        }
        let Some(value) = value else {
            ok = false;
            continue;
        };
        match HeaderValue::from_str(value.expose()) {
            Ok(mut value) => {
                value.set_sensitive(key.starts_with("header_env."));
                headers.insert(header, value);
            }
            Err(_) => {
                table.problem(&key, "not a header value (one line of visible ASCII)");
                ok = false;
            }
        }
    }
    let authorization = match keys.auth {
        None => {
            for (key, set) in [
                ("token_env", keys.token_env.is_some()),
                ("username", keys.username.is_some()),
                ("password_env", keys.password_env.is_some()),
            ] {
                if set {
                    table.problem(key, "needs `auth` (\"bearer\" or \"basic\")");
                    ok = false;
                }
            }
            None
        }
        Some(Auth::Bearer) => {
            if keys.token_env.is_none() {
                table.problem("token_env", "auth = \"bearer\" needs the token's variable");
            }
            for (key, set) in [
                ("username", keys.username.is_some()),
                ("password_env", keys.password_env.is_some()),
            ] {
                if set {
                    table.problem(key, "belongs to auth = \"basic\"");
                    ok = false;
                }
            }
            table
                .secret("token_env", keys.token_env.as_deref())
                .map(|token| format!("Bearer {}", token.expose()))
        }
        Some(Auth::Basic) => {
            if keys.token_env.is_some() {
                table.problem("token_env", "belongs to auth = \"bearer\"");
                ok = false;
            }
            if keys.username.is_none() {
                table.problem("username", "auth = \"basic\" needs a username");
            }
            if keys.password_env.is_none() {
                table.problem(
                    "password_env",
                    "auth = \"basic\" needs the password's variable",
                );
            }
            let password = table.secret("password_env", keys.password_env.as_deref());
            match (&keys.username, password) {
                (Some(user), Some(password)) => {
                    use base64::Engine;
                    let pair = format!("{user}:{}", password.expose());
                    Some(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    ))
                }
                _ => None,
            }
        }
    };
    if keys.auth.is_some() {
        match authorization.as_deref().map(HeaderValue::from_str) {
            Some(Ok(mut value)) => {
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
            Some(Err(_)) => {
                table.problem("auth", "the credentials do not make a header value");
                ok = false;
            }
            // Each missing part was reported above.
            None => ok = false,
        }
    }
    ok.then_some(headers)
}

impl TransportKind for WebhookOptions {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn allowed_url_hosts(&self) -> Option<&[String]> {
        self.allowed_url_hosts.as_deref()
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(WebhookTransport::with_clock(
            settings.name.clone(),
            self.clone(),
            clock,
        )?))
    }
}

/// Posts messages to an HTTP endpoint.
pub struct WebhookTransport {
    name: String,
    options: WebhookOptions,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl WebhookTransport {
    pub fn new(name: impl Into<String>, options: WebhookOptions) -> Result<Self, TransportError> {
        Self::with_clock(name, options, Arc::new(SystemClock))
    }

    /// Like [`WebhookTransport::new`], reading the time (for `Retry-After`
    /// dates) from `clock`.
    pub fn with_clock(
        name: impl Into<String>,
        options: WebhookOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TransportError> {
        let name = name.into();
        let client = super::http::client(&name, options.timeout)?;
        Ok(WebhookTransport {
            name,
            options,
            client,
            clock,
        })
    }

    /// The URL to post to: the message's own when it names one and the
    /// allow-list admits its host, else the transport's.
    fn destination(&self, own_url: Option<&str>) -> Result<url::Url, TransportError> {
        match own_url {
            None => Ok(self.options.url.clone()),
            Some(raw) => check_allowed(raw, self.options.allowed_url_hosts.as_deref()),
        }
    }
}

/// Enqueue checked the per-message URL already; checking again here keeps
/// a row written another way (an older version, a hand edit, a config
/// whose allow-list shrank since) from reaching an arbitrary host.
fn check_allowed(raw: &str, allowed: Option<&[String]>) -> Result<url::Url, TransportError> {
    let Some(allowed) = allowed else {
        return Err(TransportError::InvalidMessage(
            "this transport does not accept a per-message url".into(),
        ));
    };
    let url = url::Url::parse(raw)
        .map_err(|e| TransportError::InvalidMessage(format!("per-message url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TransportError::InvalidMessage(format!(
            "per-message url: scheme `{}` is not http(s)",
            url.scheme()
        )));
    }
    let host = url.host_str().unwrap_or_default();
    if allowed.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        Ok(url)
    } else {
        Err(TransportError::InvalidMessage(format!(
            "per-message url: host `{host}` is not on the allow-list"
        )))
    }
}

impl BodyEncoding {
    fn content_type(self) -> &'static str {
        match self {
            BodyEncoding::Json => "application/json",
            BodyEncoding::Form => "application/x-www-form-urlencoded",
        }
    }

    /// The bytes of `document` in this encoding. A form takes an object
    /// of scalars (numbers and booleans as their JSON text, nulls left
    /// out) and lists of scalars (the field repeated); anything nested
    /// deeper is refused, as no form could carry it faithfully.
    fn encode(self, document: &serde_json::Value) -> Result<Vec<u8>, TransportError> {
        use serde_json::Value;
        match self {
            BodyEncoding::Json => serde_json::to_vec(document)
                .map_err(|e| TransportError::InvalidMessage(format!("payload: {e}"))),
            BodyEncoding::Form => {
                let nested = || {
                    TransportError::InvalidMessage(
                        "a form body takes an object of scalars or lists of scalars".into(),
                    )
                };
                let Value::Object(fields) = document else {
                    return Err(nested());
                };
                let scalar = |value: &Value| match value {
                    Value::String(text) => Some(text.clone()),
                    Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
                    _ => None,
                };
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (name, value) in fields {
                    match value {
                        Value::Null => {}
                        Value::Array(items) => {
                            for item in items {
                                form.append_pair(name, &scalar(item).ok_or_else(nested)?);
                            }
                        }
                        other => {
                            form.append_pair(name, &scalar(other).ok_or_else(nested)?);
                        }
                    }
                }
                Ok(form.finish().into_bytes())
            }
        }
    }
}

/// The body in `encoding` and, for generic payloads, the message's own URL.
fn request_body(
    message: &Message,
    encoding: BodyEncoding,
) -> Result<(Vec<u8>, Option<String>), TransportError> {
    let payload = Payload::from_json(message.channel, &message.payload).map_err(|e| {
        TransportError::InvalidMessage(format!("the stored payload does not parse: {e}"))
    })?;
    let (document, url) = match payload {
        Payload::Email(_) => {
            return Err(TransportError::InvalidMessage(
                "a webhook transport cannot deliver an email".into(),
            ));
        }
        Payload::Sms(sms) => {
            let mut document = serde_json::json!({ "to": sms.to, "body": sms.body });
            if let Some(from) = sms.from {
                document["from"] = serde_json::Value::String(from);
            }
            if !sms.media_urls.is_empty() {
                document["media_urls"] = serde_json::json!(sms.media_urls);
            }
            (document, None)
        }
        Payload::Push(_) | Payload::Chat(_) => {
            return Err(TransportError::InvalidMessage(
                "a webhook transport takes `{payload, url?}`, not a provider's push or chat shape"
                    .into(),
            ));
        }
        Payload::Generic(_, generic) => (generic.payload, generic.url),
    };
    // The signature covers these exact bytes, so they are serialised once
    // here and sent as they are.
    Ok((encoding.encode(&document)?, url))
}

/// `sha256=<hex HMAC-SHA256 of body>`, the `X-Herald-Signature` value.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail; the fallback
    // keeps the function total without a panic path.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::from("sha256="),
    }
}

#[async_trait]
impl Transport for WebhookTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let (body, own_url) = request_body(message, self.options.body)?;
        let url = self.destination(own_url.as_deref())?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let stamp = HeaderValue::from_str(&message.id.to_string())
            .map_err(|e| TransportError::InvalidMessage(format!("stamp: {e}")))?;
        let mut request = self
            .client
            .post(url)
            .headers(self.options.headers.clone())
            .header(CONTENT_TYPE, self.options.body.content_type())
            .header(STAMP_HEADER, stamp);
        if let Some(secret) = &self.options.secret {
            request = request.header(
                SIGNATURE_HEADER,
                signature(secret.expose().as_bytes(), &body),
            );
        }
        if let Some(key) = &self.options.signing_key {
            let id = message.id.to_string();
            let timestamp = self.clock.now().timestamp();
            request = request
                .header(WEBHOOK_SIGNATURE_HEADER, key.sign(&id, timestamp, &body))
                .header(WEBHOOK_ID_HEADER, id)
                .header(WEBHOOK_TIMESTAMP_HEADER, timestamp.to_string());
        }
        let answer = super::http::send(request.body(body), &host).await?;
        if answer.is_success() {
            return Ok(Delivery {
                transport: self.name.clone(),
                detail: Some(serde_json::json!({ "status": answer.status })),
                provider_message_id: None,
            });
        }
        Err(answer.failure(SystemTime::from(self.clock.now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;
    use crate::transports::tests::message;

    #[test]
    fn signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn per_message_urls_need_an_allow_list_naming_their_host() {
        let allowed = vec!["hooks.example.com".to_string()];
        assert!(check_allowed("https://hooks.example.com/a", Some(&allowed)).is_ok());
        assert!(check_allowed("https://HOOKS.example.com/a", Some(&allowed)).is_ok());
        for refused in [
            check_allowed("https://hooks.example.com/a", None),
            check_allowed("https://evil.example.net/a", Some(&allowed)),
            check_allowed("ftp://hooks.example.com/a", Some(&allowed)),
            check_allowed("not a url", Some(&allowed)),
        ] {
            assert!(refused.unwrap_err().is_permanent());
        }
    }

    #[test]
    fn sms_bodies_carry_to_from_and_body() {
        let sms = message(
            Channel::Sms,
            serde_json::json!({"to": "+14155550100", "from": "Herald", "body": "hi"}),
        );
        let (body, url) = request_body(&sms, BodyEncoding::Json).unwrap();
        assert_eq!(url, None);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"to": "+14155550100", "from": "Herald", "body": "hi"})
        );
        let no_sender = message(
            Channel::Sms,
            serde_json::json!({"to": "+14155550100", "body": "hi"}),
        );
        let (body, _) = request_body(&no_sender, BodyEncoding::Json).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"to": "+14155550100", "body": "hi"})
        );
    }

    #[test]
    fn generic_bodies_are_the_payload_document_and_emails_are_refused() {
        let chat = message(
            Channel::Chat,
            serde_json::json!({"payload": {"text": "deploy done"}, "url": "https://hooks.example.com/x"}),
        );
        let (body, url) = request_body(&chat, BodyEncoding::Json).unwrap();
        assert_eq!(body, br#"{"text":"deploy done"}"#);
        assert_eq!(url.as_deref(), Some("https://hooks.example.com/x"));

        let email = message(
            Channel::Email,
            serde_json::json!({"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}),
        );
        assert!(
            request_body(&email, BodyEncoding::Json)
                .unwrap_err()
                .is_permanent()
        );
    }
}
