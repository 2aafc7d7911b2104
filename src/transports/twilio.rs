//! The `twilio` transport: SMS (and MMS) through Twilio's Messages API,
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded,
//! with HTTP basic auth of the account SID and auth token. The answer's
//! `sid` is the provider's id of the message, which Twilio's status
//! callbacks name it by; its error `code`s are read the way Twilio's
//! error dictionary documents them (a STOP, an invalid number, a rate
//! limit, a bad credential).
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them; the status
//! callbacks' verifier is [`crate::feedback::twilio`], keyed by the same
//! auth token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use crate::config::{KindTable, TransportSettings};
use crate::domain::{Channel, Message, Payload};
use crate::feedback::FeedbackSource;
use crate::feedback::twilio::TwilioEvents;
use crate::time::Clock;

use super::http::{Answer, Caller};
use super::{Delivery, Gated, KindSpec, RecipientGone, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "twilio",
    keys: &[
        "account_sid",
        "auth_token_env",
        "from",
        "messaging_service_sid",
        "status_callback",
        "base_url",
        "timeout_ms",
    ],
    channels: &[Channel::Sms],
    native: &[],
    configure,
};

/// Where the Messages API lives.
const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// The `twilio` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TwilioKeys {
    /// The account SID (`AC...`). Required.
    account_sid: Option<String>,
    /// Environment variable holding the account's auth token. Required.
    auth_token_env: Option<String>,
    /// The sender: an E.164 number or an alphanumeric sender id. A
    /// message's own `from` wins.
    from: Option<String>,
    /// Send through a Messaging Service (`MG...`) instead of, or besides,
    /// a sender number.
    messaging_service_sid: Option<String>,
    /// URL Twilio posts the message's status changes to.
    status_callback: Option<String>,
    /// The API's root. Default https://api.twilio.com.
    base_url: Option<String>,
    /// Time-out of one delivery, in ms. Default 10000.
    timeout_ms: Option<u64>,
}

/// A Twilio account to send through, validated.
#[derive(Debug, Clone)]
pub struct TwilioOptions {
    /// `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`.
    messages_url: url::Url,
    /// `Basic base64(account_sid:auth_token)`, marked sensitive.
    authorization: HeaderValue,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    status_callback: Option<String>,
    timeout: Duration,
    /// The status callbacks' verifier: the auth token signs them.
    feedback: Arc<dyn FeedbackSource>,
}

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: TwilioKeys = table.keys()?;
    let timeout = table.timeout(keys.timeout_ms);
    let account_sid = match keys.account_sid {
        Some(sid) if is_sid(&sid, "AC") => Some(sid),
        Some(_) => {
            table.problem("account_sid", "an account SID: `AC` and 32 hex digits");
            None
        }
        None => {
            table.problem("account_sid", "a twilio transport needs its account_sid");
            None
        }
    };
    if keys.auth_token_env.is_none() {
        table.problem(
            "auth_token_env",
            "a twilio transport needs the auth token's environment variable",
        );
    }
    let token = table.secret("auth_token_env", keys.auth_token_env.as_deref());
    if let Some(sid) = &keys.messaging_service_sid
        && !is_sid(sid, "MG")
    {
        table.problem(
            "messaging_service_sid",
            "a Messaging Service SID: `MG` and 32 hex digits",
        );
    }
    if keys.from.is_none() && keys.messaging_service_sid.is_none() {
        table.problem(
            "from",
            "a twilio transport sends from `from` or through `messaging_service_sid`",
        );
    }
    let status_callback = match keys.status_callback.as_deref().map(url::Url::parse) {
        Some(Ok(url)) if matches!(url.scheme(), "http" | "https") => Some(url.to_string()),
        Some(_) => {
            table.problem("status_callback", "an http(s) URL");
            None
        }
        None => None,
    };
    let base = super::http::configure_base_url(table, keys.base_url.as_deref(), DEFAULT_BASE_URL)?;
    let account_sid = account_sid?;
    let messages_url = super::http::endpoint(
        &base,
        &format!("/2010-04-01/Accounts/{account_sid}/Messages.json"),
    );
    let token = token?;
    let authorization = super::http::basic_auth(&account_sid, token.expose())?;
    let feedback = Arc::new(TwilioEvents::new(token.expose(), status_callback.clone()));
    if keys.from.is_none() && keys.messaging_service_sid.is_none() {
        return None;
    }
    Some(Arc::new(TwilioOptions {
        messages_url,
        authorization,
        from: keys.from,
        messaging_service_sid: keys.messaging_service_sid,
        status_callback,
        timeout: timeout?,
        feedback,
    }))
}

/// A Twilio SID: its two-letter prefix and 32 hex digits.
fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl TransportKind for TwilioOptions {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn feedback(&self) -> Option<Arc<dyn FeedbackSource>> {
        Some(self.feedback.clone())
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(TwilioTransport::new(
            settings.name.clone(),
            self.clone(),
            clock,
        )?))
    }
}

/// Sends SMS through one Twilio account.
pub struct TwilioTransport {
    http: Caller,
    options: TwilioOptions,
}

impl TwilioTransport {
    pub fn new(
        name: String,
        options: TwilioOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TransportError> {
        let http = Caller::new(name, &options.messages_url, options.timeout, clock)?;
        Ok(TwilioTransport { http, options })
    }

    /// The form Twilio's Messages API takes for `message`.
    fn form(&self, message: &Message) -> Result<String, TransportError> {
        let Payload::Sms(sms) = Payload::from_json(message.channel, &message.payload)
            .map_err(|e| TransportError::InvalidMessage(format!("the stored payload: {e}")))?
        else {
            return Err(TransportError::InvalidMessage(format!(
                "a twilio transport sends SMS, not `{}`",
                message.channel
            )));
        };
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("To", &sms.to);
        if let Some(from) = sms.from.as_ref().or(self.options.from.as_ref()) {
            form.append_pair("From", from);
        }
        if let Some(service) = &self.options.messaging_service_sid {
            form.append_pair("MessagingServiceSid", service);
        }
        form.append_pair("Body", &sms.body);
        for media in &sms.media_urls {
            form.append_pair("MediaUrl", media);
        }
        if let Some(callback) = &self.options.status_callback {
            form.append_pair("StatusCallback", callback);
        }
        Ok(form.finish())
    }
}

/// What Twilio answers: a message resource on success, an error
/// resource otherwise.
#[derive(Deserialize)]
struct TwilioAnswer {
    sid: Option<String>,
    status: Option<serde_json::Value>,
    code: Option<u32>,
    message: Option<String>,
}

/// Reads a refused request by its Twilio error code, as Twilio's error
/// dictionary documents them; a code not named here is classified by its
/// HTTP status.
fn classify(answer: &Answer, now: SystemTime) -> TransportError {
    let body: Option<TwilioAnswer> = answer.json();
    let code = body.as_ref().and_then(|b| b.code);
    let text = match (code, body.as_ref().and_then(|b| b.message.as_deref())) {
        (Some(code), Some(message)) => format!("{}: Twilio {code}: {message}", answer.host),
        _ => answer.describe(),
    };
    let status = Some(answer.status);
    match code {
        // The recipient replied STOP: never again, until they opt back in.
        Some(21610) => TransportError::RecipientGone {
            reason: RecipientGone::Unsubscribed,
            code: status,
            message: text,
        },
        // Not a valid phone number; not a mobile number; not reachable by SMS.
        Some(21211 | 21614 | 21612) => TransportError::RecipientGone {
            reason: RecipientGone::Invalid,
            code: status,
            message: text,
        },
        // Authentication failed; the account is suspended or closed.
        Some(20003 | 20005 | 20008) => TransportError::Unauthorized {
            code: status,
            message: text,
        },
        // Too many requests, or a queue overflowing: wait and retry.
        Some(20429 | 14107 | 30001) => TransportError::Temporary {
            code: status,
            message: text,
            retry_after: answer.retry_after(now),
        },
        _ => match answer.failure(now) {
            // Keep Twilio's words for the failure its status says.
            TransportError::Rejected { code, .. } => TransportError::Rejected {
                code,
                message: text,
            },
            TransportError::Temporary {
                code, retry_after, ..
            } => TransportError::Temporary {
                code,
                message: text,
                retry_after,
            },
            other => other,
        },
    }
}

#[async_trait]
impl Transport for TwilioTransport {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn kind(&self) -> &'static str {
        "twilio"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let form = self.form(message)?;
        let request = self
            .http
            .client
            .post(self.options.messages_url.clone())
            .header(AUTHORIZATION, self.options.authorization.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(form);
        let answer = self.http.send(request).await?;
        let now = self.http.now();
        if !answer.is_success() {
            return Err(classify(&answer, now));
        }
        let body: Option<TwilioAnswer> = answer.json();
        Ok(Delivery {
            transport: self.http.name.clone(),
            detail: Some(serde_json::json!({
                "status": answer.status,
                "twilio_status": body.as_ref().and_then(|b| b.status.clone()),
            })),
            provider_message_id: body.and_then(|b| b.sid),
        })
    }
}
