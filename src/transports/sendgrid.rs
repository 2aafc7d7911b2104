//! The `sendgrid` transport: an email sent through SendGrid's v3 Mail Send
//! API (`POST /v3/mail/send`, JSON, the API key as a bearer token). The
//! stamp travels as the personalization's `custom_args.stamp`, which
//! SendGrid's event webhook hands back with every event, and in the
//! `X-Stamp-ID` and `X-Tracking-ID` headers every email carries; the
//! answer's `X-Message-Id` is kept as the provider's id.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them; the event
//! webhook's verifier is [`crate::feedback::sendgrid`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use crate::config::{KindTable, TransportSettings};
use crate::domain::{Channel, EmailPayload, Message, Stamp};
use crate::feedback::FeedbackSource;
use crate::feedback::sendgrid::SendgridEvents;
use crate::time::Clock;

use super::email::{STAMP_HEADER, TRACKING_HEADER, email_payload, mailbox};
use super::http::{self, Caller};
use super::{Delivery, Gated, KindSpec, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "sendgrid",
    keys: &[
        "api_key_env",
        "base_url",
        "timeout_ms",
        "event_webhook_public_key",
        "event_webhook_public_key_file",
    ],
    channels: &[Channel::Email],
    native: &[],
    configure,
};

/// SendGrid's API root, where `base_url` is unset.
pub const DEFAULT_BASE_URL: &str = "https://api.sendgrid.com";
/// The Mail Send endpoint, under the API root.
const SEND_PATH: &str = "/v3/mail/send";
/// The answer's header naming SendGrid's id of the message.
const MESSAGE_ID_HEADER: &str = "x-message-id";

/// Where and how to call SendGrid.
#[derive(Debug, Clone)]
pub struct SendgridOptions {
    /// `Bearer <API key>`, marked sensitive so it is never shown.
    pub authorization: HeaderValue,
    /// The API root; [`SEND_PATH`] is appended.
    pub base_url: Url,
    /// Bounds the whole request: connect, send, and the answer.
    pub timeout: Duration,
    /// The Signed Event Webhook's verifier, when a public key is set.
    pub feedback: Option<Arc<dyn FeedbackSource>>,
}

/// The `sendgrid` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendgridKeys {
    /// Environment variable holding the API key. Required.
    api_key_env: Option<String>,
    /// The API root. Default `https://api.sendgrid.com`.
    base_url: Option<String>,
    /// Time-out of one delivery, in ms. Default 10000.
    timeout_ms: Option<u64>,
    /// The Signed Event Webhook's public key, base64 as SendGrid's
    /// settings show it. Default unset: no native event webhook.
    event_webhook_public_key: Option<String>,
    /// A file holding that key instead (base64 or PEM).
    event_webhook_public_key_file: Option<String>,
}

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: SendgridKeys = table.keys()?;
    let timeout = table.timeout(keys.timeout_ms);
    let base_url = http::configure_base_url(table, keys.base_url.as_deref(), DEFAULT_BASE_URL);
    if keys.api_key_env.is_none() {
        table.problem(
            "api_key_env",
            "a sendgrid transport needs the API key's variable",
        );
    }
    let authorization =
        http::secret_header(table, "api_key_env", keys.api_key_env.as_deref(), |key| {
            format!("Bearer {key}")
        });
    let feedback = configure_feedback(
        table,
        keys.event_webhook_public_key.as_deref(),
        keys.event_webhook_public_key_file.as_deref(),
    );
    Some(Arc::new(SendgridOptions {
        authorization: authorization?,
        base_url: base_url?,
        timeout: timeout?,
        feedback: feedback?,
    }))
}

/// The event webhook's verifier from one of the two key settings:
/// `Some(None)` when neither is set, `None` after a problem.
fn configure_feedback(
    table: &mut KindTable<'_>,
    key: Option<&str>,
    file: Option<&str>,
) -> Option<Option<Arc<dyn FeedbackSource>>> {
    let (setting, text) = match (key, file) {
        (None, None) => return Some(None),
        (Some(_), Some(_)) => {
            table.problem(
                "event_webhook_public_key_file",
                "set the key or its file, not both",
            );
            return None;
        }
        (Some(key), None) => ("event_webhook_public_key", key.to_owned()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => ("event_webhook_public_key_file", text),
            Err(e) => {
                table.problem(
                    "event_webhook_public_key_file",
                    format!("cannot read `{path}`: {e}"),
                );
                return None;
            }
        },
    };
    match SendgridEvents::from_public_key(&text) {
        Ok(source) => Some(Some(Arc::new(source))),
        Err(message) => {
            table.problem(setting, message);
            None
        }
    }
}

impl TransportKind for SendgridOptions {
    fn name(&self) -> &'static str {
        "sendgrid"
    }

    fn feedback(&self) -> Option<Arc<dyn FeedbackSource>> {
        self.feedback.clone()
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(SendgridTransport::new(
            settings.name.clone(),
            self.clone(),
            clock,
        )?))
    }
}

/// Sends emails through SendGrid's Mail Send API.
pub struct SendgridTransport {
    http: Caller,
    authorization: HeaderValue,
    endpoint: Url,
}

impl SendgridTransport {
    /// The transport `name` sends through, reading the time
    /// (for `Retry-After` dates) from `clock`.
    pub fn new(
        name: impl Into<String>,
        options: SendgridOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TransportError> {
        let endpoint = http::endpoint(&options.base_url, SEND_PATH);
        Ok(SendgridTransport {
            http: Caller::new(name.into(), &endpoint, options.timeout, clock)?,
            authorization: options.authorization,
            endpoint,
        })
    }
}

/// `{"email", "name"?}`, SendGrid's address object.
fn address(raw: &str, field: &str) -> Result<Value, TransportError> {
    let Mailbox { name, email } = mailbox(raw, field)?;
    let mut address = json!({ "email": email.to_string() });
    if let Some(name) = name.filter(|n| !n.trim().is_empty()) {
        address["name"] = Value::String(name);
    }
    Ok(address)
}

fn addresses(raws: &[String], field: &str) -> Result<Value, TransportError> {
    raws.iter()
        .enumerate()
        .map(|(i, raw)| address(raw, &format!("{field}[{i}]")))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// The Mail Send request body for `email`, stamped with `stamp`.
fn request_body(stamp: Stamp, email: &EmailPayload) -> Result<Value, TransportError> {
    let stamp = stamp.to_string();
    let mut personalization = json!({
        "to": addresses(&email.to, "to")?,
        "custom_args": { "stamp": stamp },
    });
    if !email.cc.is_empty() {
        personalization["cc"] = addresses(&email.cc, "cc")?;
    }
    if !email.bcc.is_empty() {
        personalization["bcc"] = addresses(&email.bcc, "bcc")?;
    }
    // SendGrid refuses an empty `value`, and wants text/plain before
    // text/html; a blank body is left out as the SMTP transport leaves it.
    let content: Vec<Value> = [("text/plain", &email.text), ("text/html", &email.html)]
        .into_iter()
        .filter_map(|(kind, body)| {
            body.as_deref()
                .filter(|b| !b.trim().is_empty())
                .map(|b| json!({ "type": kind, "value": b }))
        })
        .collect();
    if content.is_empty() {
        return Err(TransportError::InvalidMessage(
            "an email needs a body: `text`, `html` or both".into(),
        ));
    }
    // Validation refuses custom headers named like the stamp's, so these
    // are the only values they can have.
    let mut headers: Map<String, Value> = email
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    for name in [STAMP_HEADER, TRACKING_HEADER] {
        headers.insert(name.to_owned(), Value::String(stamp.clone()));
    }
    let mut body = json!({
        "personalizations": [personalization],
        "from": address(&email.from, "from")?,
        "subject": email.subject,
        "content": content,
        "headers": headers,
    });
    if let Some(reply_to) = &email.reply_to {
        body["reply_to"] = address(reply_to, "reply_to")?;
    }
    if !email.attachments.is_empty() {
        // Both sides speak standard base64, which enqueue checked: the
        // content goes through as it was given.
        body["attachments"] = email
            .attachments
            .iter()
            .map(|a| {
                json!({
                    "content": a.content_base64,
                    "type": a.content_type,
                    "filename": a.filename,
                })
            })
            .collect();
    }
    Ok(body)
}

#[async_trait]
impl Transport for SendgridTransport {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn kind(&self) -> &'static str {
        "sendgrid"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let email = email_payload(message)?;
        let body = serde_json::to_vec(&request_body(message.id, &email)?)
            .map_err(|e| TransportError::InvalidMessage(format!("request body: {e}")))?;
        let request = self
            .http
            .client
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let answer = self.http.send(request).await?;
        if answer.is_success() {
            // The email is accepted whether or not the id came with it:
            // failing it now would send it again.
            return Ok(self.http.delivered(
                &answer,
                answer
                    .header(MESSAGE_ID_HEADER)
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned),
            ));
        }
        // SendGrid's statuses mean what HTTP's do: 401/403 a refused key,
        // 400/413 a request it will never take, 429 (with Retry-After) and
        // 5xx for now.
        Err(answer.failure(self.http.now()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn email() -> EmailPayload {
        EmailPayload {
            from: "Shop <shop@example.com>".into(),
            to: vec!["Alice <alice@example.com>".into(), "bob@example.com".into()],
            cc: vec![],
            bcc: vec![],
            reply_to: None,
            subject: "Your receipt".into(),
            text: None,
            html: Some("<p>Thanks</p>".into()),
            headers: BTreeMap::new(),
            attachments: vec![],
        }
    }

    #[test]
    fn a_minimal_email_sends_only_the_fields_it_has() {
        let stamp = Stamp::generate();
        let body = request_body(stamp, &email()).unwrap();
        assert_eq!(
            body,
            json!({
                "personalizations": [{
                    "to": [
                        {"email": "alice@example.com", "name": "Alice"},
                        {"email": "bob@example.com"}
                    ],
                    "custom_args": {"stamp": stamp.to_string()}
                }],
                "from": {"email": "shop@example.com", "name": "Shop"},
                "subject": "Your receipt",
                "content": [{"type": "text/html", "value": "<p>Thanks</p>"}],
                "headers": {"X-Stamp-ID": stamp.to_string(), "X-Tracking-ID": stamp.to_string()}
            })
        );
    }

    #[test]
    fn an_address_that_does_not_parse_is_the_message_s_fault() {
        let mut bad = email();
        bad.to.push("not an address".into());
        let err = request_body(Stamp::generate(), &bad).unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("email.to[2]"), "{err}");
    }
}
