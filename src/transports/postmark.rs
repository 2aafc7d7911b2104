//! The `postmark` transport: an email sent through Postmark's `/email`
//! API (JSON, the server token in `X-Postmark-Server-Token`). The stamp
//! travels as the message's `Metadata.stamp`, which Postmark's webhooks
//! hand back with every event, and in the `X-Stamp-ID` and
//! `X-Tracking-ID` headers every email carries; the answer's `MessageID`
//! is kept as the provider's id. Postmark says why it refused in the
//! answer's `ErrorCode`, which this module reads: an inactive recipient
//! (hard bounce, spam complaint, manual suppression) is gone for good, a
//! bad server token is the transport's outage.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them; the
//! webhooks' credentials check is [`crate::feedback::postmark`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::config::{KindTable, TransportSettings};
use crate::domain::{Channel, EmailPayload, Message, Stamp};
use crate::feedback::FeedbackSource;
use crate::feedback::postmark::PostmarkEvents;
use crate::time::Clock;

use super::email::{STAMP_HEADER, TRACKING_HEADER, email_payload, mailbox};
use super::http::{self, Answer, Caller};
use super::{Delivery, Gated, KindSpec, RecipientGone, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "postmark",
    keys: &[
        "server_token_env",
        "message_stream",
        "base_url",
        "timeout_ms",
        "webhook_username",
        "webhook_password_env",
    ],
    channels: &[Channel::Email],
    native: &[],
    configure,
};

/// Postmark's API root, where `base_url` is unset.
pub const DEFAULT_BASE_URL: &str = "https://api.postmarkapp.com";
/// The single-email endpoint, under the API root.
const SEND_PATH: &str = "/email";
/// The request header carrying the server token.
const TOKEN_HEADER: &str = "X-Postmark-Server-Token";

/// Postmark's `ErrorCode`s this transport tells apart; every other one
/// is classified by its HTTP status.
const BAD_SERVER_TOKEN: i64 = 10;
const INACTIVE_RECIPIENT: i64 = 406;

/// Where and how to call Postmark.
#[derive(Debug, Clone)]
pub struct PostmarkOptions {
    /// The server token, marked sensitive so it is never shown.
    pub server_token: HeaderValue,
    /// The stream the emails go to; Postmark's default transactional
    /// stream when unset.
    pub message_stream: Option<String>,
    /// The API root; [`SEND_PATH`] is appended.
    pub base_url: Url,
    /// Bounds the whole request: connect, send, and the answer.
    pub timeout: Duration,
    /// The webhooks' credentials check, when they are set.
    pub feedback: Option<Arc<dyn FeedbackSource>>,
}

/// The `postmark` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostmarkKeys {
    /// Environment variable holding the server token. Required.
    server_token_env: Option<String>,
    /// The message stream's id. Default: the server's transactional stream.
    message_stream: Option<String>,
    /// The API root. Default `https://api.postmarkapp.com`.
    base_url: Option<String>,
    /// Time-out of one delivery, in ms. Default 10000.
    timeout_ms: Option<u64>,
    /// The basic auth user set in the webhooks' URL. Default unset: no
    /// native event webhook; set with `webhook_password_env`.
    webhook_username: Option<String>,
    /// Environment variable holding that user's password.
    webhook_password_env: Option<String>,
}

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: PostmarkKeys = table.keys()?;
    let timeout = table.timeout(keys.timeout_ms);
    let base_url = http::configure_base_url(table, keys.base_url.as_deref(), DEFAULT_BASE_URL);
    if keys.server_token_env.is_none() {
        table.problem(
            "server_token_env",
            "a postmark transport needs the server token's variable",
        );
    }
    let server_token = http::secret_header(
        table,
        "server_token_env",
        keys.server_token_env.as_deref(),
        str::to_owned,
    );
    let message_stream = match keys.message_stream.map(|s| s.trim().to_owned()) {
        Some(stream) if stream.is_empty() => {
            table.problem("message_stream", "is blank; leave it out for the default");
            None
        }
        stream => Some(stream),
    };
    let feedback = match (
        keys.webhook_username.as_deref(),
        keys.webhook_password_env.as_deref(),
    ) {
        (None, None) => Some(None),
        (Some(user), Some(var)) => {
            let password = table.secret("webhook_password_env", Some(var));
            // Basic auth cannot carry a user with a colon: the password
            // would start there.
            if user.is_empty() || user.contains(':') {
                table.problem("webhook_username", "a user name without `:`");
                None
            } else {
                password.map(|p| {
                    Some(Arc::new(PostmarkEvents::new(user, p.expose())) as Arc<dyn FeedbackSource>)
                })
            }
        }
        (Some(_), None) => {
            table.problem(
                "webhook_password_env",
                "`webhook_username` is set: its password's variable is needed too",
            );
            None
        }
        (None, Some(_)) => {
            table.problem(
                "webhook_username",
                "`webhook_password_env` is set: the user name is needed too",
            );
            None
        }
    };
    Some(Arc::new(PostmarkOptions {
        server_token: server_token?,
        message_stream: message_stream?,
        base_url: base_url?,
        timeout: timeout?,
        feedback: feedback?,
    }))
}

impl TransportKind for PostmarkOptions {
    fn name(&self) -> &'static str {
        "postmark"
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
        Ok(Arc::new(PostmarkTransport::new(
            settings.name.clone(),
            self.clone(),
            clock,
        )?))
    }
}

/// Sends emails through Postmark's `/email` API.
pub struct PostmarkTransport {
    http: Caller,
    server_token: HeaderValue,
    message_stream: Option<String>,
    endpoint: Url,
}

impl PostmarkTransport {
    /// The transport `name` sends through, reading the time
    /// (for `Retry-After` dates) from `clock`.
    pub fn new(
        name: impl Into<String>,
        options: PostmarkOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TransportError> {
        let endpoint = http::endpoint(&options.base_url, SEND_PATH);
        Ok(PostmarkTransport {
            http: Caller::new(name.into(), &endpoint, options.timeout, clock)?,
            server_token: options.server_token,
            message_stream: options.message_stream,
            endpoint,
        })
    }
}

/// `raw` as Postmark reads an address. Written again from its parts, so a
/// display name with a comma is quoted and cannot split the comma-joined
/// `To` list into a recipient nobody named.
fn address(raw: &str, field: &str) -> Result<String, TransportError> {
    Ok(mailbox(raw, field)?.to_string())
}

/// `raws` comma-joined, as Postmark's `To`, `Cc` and `Bcc` take them.
fn address_list(raws: &[String], field: &str) -> Result<String, TransportError> {
    raws.iter()
        .enumerate()
        .map(|(i, raw)| address(raw, &format!("{field}[{i}]")))
        .collect::<Result<Vec<_>, _>>()
        .map(|list| list.join(", "))
}

/// The `/email` request body for `email`, stamped with `stamp`.
fn request_body(
    stamp: Stamp,
    email: &EmailPayload,
    message_stream: Option<&str>,
) -> Result<Value, TransportError> {
    let stamp = stamp.to_string();
    let text = email.text.as_deref().filter(|t| !t.trim().is_empty());
    let html = email.html.as_deref().filter(|t| !t.trim().is_empty());
    if text.is_none() && html.is_none() {
        return Err(TransportError::InvalidMessage(
            "an email needs a body: `text`, `html` or both".into(),
        ));
    }
    // Validation refuses custom headers named like the stamp's, so these
    // are the only values they can have.
    let headers: Vec<Value> = email
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .chain([STAMP_HEADER, TRACKING_HEADER].map(|name| (name, stamp.as_str())))
        .map(|(name, value)| json!({ "Name": name, "Value": value }))
        .collect();
    let mut body = json!({
        "From": address(&email.from, "from")?,
        "To": address_list(&email.to, "to")?,
        "Subject": email.subject,
        "Headers": headers,
        "Metadata": { "stamp": stamp },
    });
    let optional = [
        (
            "Cc",
            (!email.cc.is_empty()).then(|| address_list(&email.cc, "cc")),
        ),
        (
            "Bcc",
            (!email.bcc.is_empty()).then(|| address_list(&email.bcc, "bcc")),
        ),
        (
            "ReplyTo",
            email.reply_to.as_deref().map(|r| address(r, "reply_to")),
        ),
        ("TextBody", text.map(|t| Ok(t.to_owned()))),
        ("HtmlBody", html.map(|h| Ok(h.to_owned()))),
        ("MessageStream", message_stream.map(|s| Ok(s.to_owned()))),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            body[field] = Value::String(value?);
        }
    }
    if !email.attachments.is_empty() {
        // Both sides speak standard base64, which enqueue checked: the
        // content goes through as it was given.
        body["Attachments"] = email
            .attachments
            .iter()
            .map(|a| {
                json!({
                    "Name": a.filename,
                    "Content": a.content_base64,
                    "ContentType": a.content_type,
                })
            })
            .collect();
    }
    Ok(body)
}

/// The parts of Postmark's answer this transport reads.
#[derive(Deserialize)]
struct PostmarkAnswer {
    #[serde(rename = "ErrorCode")]
    error_code: Option<i64>,
    #[serde(rename = "MessageID")]
    message_id: Option<String>,
}

/// A refusal, classified by Postmark's `ErrorCode` where it says more
/// than the status does, else by the status ([`Answer::failure`]).
fn failure(answer: &Answer, now: SystemTime) -> TransportError {
    let error_code = answer.json::<PostmarkAnswer>().and_then(|a| a.error_code);
    let code = Some(answer.status);
    match (answer.status, error_code) {
        (400..=499, Some(BAD_SERVER_TOKEN)) => TransportError::Unauthorized {
            code,
            message: answer.describe(),
        },
        (422, Some(INACTIVE_RECIPIENT)) => TransportError::RecipientGone {
            // Postmark deactivates a recipient after a hard bounce, a spam
            // complaint or a manual suppression; each means "stop sending
            // here", which suppression reads as unsubscribed.
            reason: RecipientGone::Unsubscribed,
            code,
            message: answer.describe(),
        },
        // 300 (invalid email request) and the other 422s are the request's
        // fault, as any other 4xx; 401 is a refused token, 429 and 5xx
        // are for now.
        _ => answer.failure(now),
    }
}

#[async_trait]
impl Transport for PostmarkTransport {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn kind(&self) -> &'static str {
        "postmark"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let email = email_payload(message)?;
        let body = request_body(message.id, &email, self.message_stream.as_deref())?;
        let body = serde_json::to_vec(&body)
            .map_err(|e| TransportError::InvalidMessage(format!("request body: {e}")))?;
        let request = self
            .http
            .client
            .post(self.endpoint.clone())
            .header(TOKEN_HEADER, self.server_token.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let answer = self.http.send(request).await?;
        if answer.is_success() {
            // The email is accepted whether or not the id came with it:
            // failing it now would send it again.
            let provider_message_id = answer
                .json::<PostmarkAnswer>()
                .and_then(|a| a.message_id)
                .filter(|id| !id.trim().is_empty());
            return Ok(self.http.delivered(&answer, provider_message_id));
        }
        Err(failure(&answer, self.http.now()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn email() -> EmailPayload {
        EmailPayload {
            from: "shop@example.com".into(),
            to: vec!["\"Doe, Jane\" <jane@example.com>".into()],
            cc: vec![],
            bcc: vec![],
            reply_to: None,
            subject: "Hi".into(),
            text: Some("Hello".into()),
            html: Some("  ".into()),
            headers: BTreeMap::new(),
            attachments: vec![],
        }
    }

    #[test]
    fn a_minimal_email_sends_only_the_fields_it_has() {
        let stamp = Stamp::generate();
        let body = request_body(stamp, &email(), None).unwrap();
        assert_eq!(
            body,
            json!({
                "From": "shop@example.com",
                "To": "\"Doe, Jane\" <jane@example.com>",
                "Subject": "Hi",
                "TextBody": "Hello",
                "Headers": [
                    {"Name": "X-Stamp-ID", "Value": stamp.to_string()},
                    {"Name": "X-Tracking-ID", "Value": stamp.to_string()}
                ],
                "Metadata": {"stamp": stamp.to_string()}
            })
        );
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Default::default(),
            body: body.as_bytes().to_vec(),
            host: "api.postmarkapp.com".into(),
        }
    }

    #[test]
    fn error_codes_say_more_than_the_status() {
        let now = SystemTime::UNIX_EPOCH;
        let gone = failure(
            &answer(422, r#"{"ErrorCode":406,"Message":"inactive"}"#),
            now,
        );
        assert_eq!(gone.recipient_gone(), Some(RecipientGone::Unsubscribed));
        let token = failure(
            &answer(422, r#"{"ErrorCode":10,"Message":"bad token"}"#),
            now,
        );
        assert!(token.is_unauthorized(), "{token}");
        let invalid = failure(&answer(422, r#"{"ErrorCode":300,"Message":"x"}"#), now);
        assert!(invalid.is_permanent() && invalid.recipient_gone().is_none());
        // A code in an answer that is not JSON is not guessed at.
        let garbled = failure(&answer(422, "ErrorCode 406"), now);
        assert!(garbled.is_permanent() && garbled.recipient_gone().is_none());
        assert!(failure(&answer(500, r#"{"ErrorCode":406}"#), now).is_transient());
    }
}
