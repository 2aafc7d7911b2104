//! The `slack` transport: chat messages through Slack's Web API method
//! `chat.postMessage` with a bot token. Slack answers a refused call with
//! HTTP 200 and `{"ok": false, "error": "<code>"}`, so the answer is read
//! by its `error` the way Slack's method documentation lists them (a
//! revoked token, a missing channel, a rate limit). The message's `ts` is
//! the provider's id of it; the stamp travels as the message's metadata.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use crate::config::{KindTable, TransportSettings};
use crate::domain::{Channel, Message, Payload};
use crate::time::Clock;

use super::http::{Answer, Caller};
use super::{Delivery, Gated, KindSpec, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "slack",
    keys: &["token_env", "base_url", "timeout_ms"],
    channels: &[Channel::Chat],
    native: &[Channel::Chat],
    configure,
};

/// Where the Web API lives.
const DEFAULT_BASE_URL: &str = "https://slack.com";
/// The metadata event type the stamp travels under.
const METADATA_EVENT: &str = "herald_message";

/// The `slack` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackKeys {
    /// Environment variable holding the bot token (`xoxb-...`). Required.
    token_env: Option<String>,
    /// The API's root. Default https://slack.com.
    base_url: Option<String>,
    /// Time-out of one delivery, in ms. Default 10000.
    timeout_ms: Option<u64>,
}

/// A Slack workspace to post to, validated.
#[derive(Debug, Clone)]
pub struct SlackOptions {
    /// `{base_url}/api/chat.postMessage`.
    post_url: url::Url,
    /// `Bearer <token>`, marked sensitive.
    authorization: HeaderValue,
    timeout: Duration,
}

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: SlackKeys = table.keys()?;
    let timeout = table.timeout(keys.timeout_ms);
    if keys.token_env.is_none() {
        table.problem(
            "token_env",
            "a slack transport needs the bot token's environment variable",
        );
    }
    let authorization =
        super::http::secret_header(table, "token_env", keys.token_env.as_deref(), |token| {
            format!("Bearer {token}")
        });
    let base = super::http::configure_base_url(table, keys.base_url.as_deref(), DEFAULT_BASE_URL)?;
    Some(Arc::new(SlackOptions {
        post_url: super::http::endpoint(&base, "/api/chat.postMessage"),
        authorization: authorization?,
        timeout: timeout?,
    }))
}

impl TransportKind for SlackOptions {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(SlackTransport::new(
            settings.name.clone(),
            self.clone(),
            clock,
        )?))
    }
}

/// Posts chat messages to one Slack workspace.
pub struct SlackTransport {
    http: Caller,
    options: SlackOptions,
}

impl SlackTransport {
    pub fn new(
        name: String,
        options: SlackOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TransportError> {
        let http = Caller::new(name, &options.post_url, options.timeout, clock)?;
        Ok(SlackTransport { http, options })
    }
}

/// The body of `chat.postMessage` for `message`.
fn request_body(message: &Message) -> Result<Vec<u8>, TransportError> {
    let Payload::Chat(chat) = Payload::from_json(message.channel, &message.payload)
        .map_err(|e| TransportError::InvalidMessage(format!("the stored payload: {e}")))?
    else {
        return Err(TransportError::InvalidMessage(format!(
            "a slack transport posts chat messages in `{{channel, text}}` shape, not this `{}` payload",
            message.channel
        )));
    };
    let mut body = serde_json::json!({
        "channel": chat.channel,
        "text": chat.text,
        "metadata": {
            "event_type": METADATA_EVENT,
            "event_payload": { "stamp": message.id.to_string() },
        },
    });
    if let Some(blocks) = chat.blocks {
        body["blocks"] = serde_json::Value::from(blocks);
    }
    if let Some(ts) = chat.thread_ts {
        body["thread_ts"] = serde_json::Value::String(ts);
    }
    serde_json::to_vec(&body).map_err(|e| TransportError::InvalidMessage(format!("body: {e}")))
}

/// What `chat.postMessage` answers.
#[derive(Deserialize)]
struct SlackAnswer {
    ok: bool,
    error: Option<String>,
    ts: Option<String>,
    channel: Option<String>,
}

/// Reads `ok: false` by its `error`, as Slack documents the method's
/// errors; one not named here is the message's fault, as most are.
fn classify_error(error: &str, answer: &Answer, now: SystemTime) -> TransportError {
    let message = format!("{}: slack: {error}", answer.host);
    let code = Some(answer.status);
    match error {
        "invalid_auth"
        | "not_authed"
        | "account_inactive"
        | "token_revoked"
        | "token_expired"
        | "no_permission"
        | "missing_scope"
        | "not_allowed_token_type"
        | "ekm_access_denied"
        | "team_access_not_granted" => TransportError::Unauthorized { code, message },
        "ratelimited" | "rate_limited" => TransportError::Temporary {
            code,
            message,
            retry_after: answer.retry_after(now),
        },
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            TransportError::Temporary {
                code,
                message,
                retry_after: None,
            }
        }
        _ => TransportError::Rejected { code, message },
    }
}

#[async_trait]
impl Transport for SlackTransport {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn kind(&self) -> &'static str {
        "slack"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let body = request_body(message)?;
        let request = self
            .http
            .client
            .post(self.options.post_url.clone())
            .header(AUTHORIZATION, self.options.authorization.clone())
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body);
        let answer = self.http.send(request).await?;
        let now = self.http.now();
        if !answer.is_success() {
            return Err(answer.failure(now));
        }
        let Some(reply) = answer.json::<SlackAnswer>() else {
            // A 2xx that is not Slack's answer: the post may have
            // happened, and retrying could post twice; the operator
            // should look.
            return Err(TransportError::Local(format!(
                "{}: an answer that is not Slack's: {}",
                self.http.host,
                answer.describe()
            )));
        };
        if !reply.ok {
            let error = reply.error.as_deref().unwrap_or("unknown_error");
            return Err(classify_error(error, &answer, now));
        }
        Ok(Delivery {
            transport: self.http.name.clone(),
            detail: Some(serde_json::json!({ "channel": reply.channel })),
            provider_message_id: reply.ts,
        })
    }
}
