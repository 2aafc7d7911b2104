//! Delivery feedback: what providers report after hand-over (delivered,
//! bounced, complained, opened, ...), verified the way each provider
//! documents and read into one [`FeedbackEvent`] shape.
//!
//! This module owns the inbound side only: a [`FeedbackSource`] checks one
//! request's signature (or credentials) and parses its body. Matching the
//! events to messages, the delivery state and the suppression list are
//! storage's ([`crate::storage::Storage::record_feedback`]); the route is
//! [`crate::http::feedback`].
//!
//! One module per scheme: [`standard`] (Standard Webhooks over Herald's
//! own event JSON, for any transport), and the providers' own formats:
//! [`sendgrid`] (the Signed Event Webhook, ECDSA), [`mailgun`] (HMAC of
//! a timestamp and token inside the body), [`postmark`] (basic auth),
//! [`twilio`] (`X-Twilio-Signature` over the URL and form parameters),
//! [`ses`] (SNS notifications of SES's bounces, complaints and events).

pub mod mailgun;
pub mod postmark;
pub mod sendgrid;
pub mod ses;
pub mod standard;
pub mod twilio;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Stamp;

/// Default `feedback_tolerance_s`: how far a signed timestamp may be from
/// now, either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The most events one request may carry; providers batch far fewer.
pub const MAX_EVENTS: usize = 10_000;

/// What a provider says happened to a message after hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackKind {
    Delivered,
    Bounced,
    Complained,
    Opened,
    Clicked,
    Unsubscribed,
    /// Dropped by the provider after it accepted the message (a
    /// suppression of its own, a policy).
    Rejected,
    /// The receiving side put off delivery for now; the provider retries.
    DeferredDownstream,
}

impl FeedbackKind {
    pub const ALL: [FeedbackKind; 8] = [
        FeedbackKind::Delivered,
        FeedbackKind::Bounced,
        FeedbackKind::Complained,
        FeedbackKind::Opened,
        FeedbackKind::Clicked,
        FeedbackKind::Unsubscribed,
        FeedbackKind::Rejected,
        FeedbackKind::DeferredDownstream,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Delivered => "delivered",
            FeedbackKind::Bounced => "bounced",
            FeedbackKind::Complained => "complained",
            FeedbackKind::Opened => "opened",
            FeedbackKind::Clicked => "clicked",
            FeedbackKind::Unsubscribed => "unsubscribed",
            FeedbackKind::Rejected => "rejected",
            FeedbackKind::DeferredDownstream => "deferred_downstream",
        }
    }

    pub fn parse(text: &str) -> Option<FeedbackKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for FeedbackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bounce's kind: `hard` (the address is gone for good) or `soft` (a
/// full mailbox, a greylisting, a message too large).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceType {
    Hard,
    Soft,
}

impl BounceType {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceType::Hard => "hard",
            BounceType::Soft => "soft",
        }
    }
}

/// How an event names its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The stamp Herald sent with it (custom args, user variables,
    /// metadata, the `X-Stamp-ID` header).
    Stamp(Stamp),
    /// The provider's own id, recorded on the `sent` event.
    ProviderId(String),
    /// Both: the stamp wins, the id is kept for the record.
    Both(Stamp, String),
}

impl Target {
    pub fn stamp(&self) -> Option<Stamp> {
        match self {
            Target::Stamp(s) | Target::Both(s, _) => Some(*s),
            Target::ProviderId(_) => None,
        }
    }

    pub fn provider_id(&self) -> Option<&str> {
        match self {
            Target::ProviderId(id) | Target::Both(_, id) => Some(id),
            Target::Stamp(_) => None,
        }
    }

    /// The stamp when `stamp` parses as one, else the provider id; `None`
    /// when there is neither.
    pub fn from_parts(stamp: Option<&str>, provider_id: Option<&str>) -> Option<Target> {
        let stamp = stamp.and_then(|s| s.trim().parse::<Stamp>().ok());
        let provider_id = provider_id
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        match (stamp, provider_id) {
            (Some(s), Some(id)) => Some(Target::Both(s, id)),
            (Some(s), None) => Some(Target::Stamp(s)),
            (None, Some(id)) => Some(Target::ProviderId(id)),
            (None, None) => None,
        }
    }
}

/// One provider event, read into Herald's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackEvent {
    pub target: Target,
    pub kind: FeedbackKind,
    /// For `bounced`.
    pub bounce: Option<BounceType>,
    /// The address, number or token the event is about, as the provider
    /// names it; `None` when it does not (then it is the message's only
    /// recipient, or all of them).
    pub recipient: Option<String>,
    /// When the provider says it happened.
    pub at: DateTime<Utc>,
    /// The provider's raw reason or SMTP diagnostic.
    pub reason: Option<String>,
    /// The provider's own id of this event (`sg_event_id`, Mailgun's
    /// `id`, ...): applying an event twice is a no-op by it. Without one,
    /// (kind, recipient, at) is the event's identity.
    pub event_id: Option<String>,
}

/// One inbound request, as a [`FeedbackSource`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// Header names are lowercase.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// The URL the provider posted to, as it sees it (scheme, host, path,
    /// query): Twilio signs it.
    pub url: &'a str,
    pub now: DateTime<Utc>,
    /// `feedback_tolerance_s`.
    pub tolerance: Duration,
}

impl Inbound<'_> {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `at` is within the tolerance of now.
    pub fn is_timely(&self, at: DateTime<Utc>) -> bool {
        let skew = (self.now - at).abs();
        skew.to_std().is_ok_and(|skew| skew <= self.tolerance)
    }
}

/// A verified request's content.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Accepted {
    pub events: Vec<FeedbackEvent>,
    /// A value the provider never signs twice (Mailgun's token, a
    /// Standard Webhooks id with its timestamp): storage records it with
    /// the events, and a request that repeats it is a replay.
    pub nonce: Option<String>,
    /// Events the source read but that say nothing Herald tracks (a
    /// SendGrid `processed`): counted, not stored.
    pub ignored: usize,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Bad or missing signature or credentials, a timestamp outside the
    /// tolerance, a replay: 401, nothing recorded.
    #[error("{0}")]
    Unauthorized(String),
    /// Signed, but not the provider's format: 400, naming what is wrong.
    #[error("{field}: {message}")]
    Malformed { field: String, message: String },
    /// Could not check it now (the signing certificate did not load): 503,
    /// so the provider retries.
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    pub fn malformed(field: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal::Malformed {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A provider's event webhook: verifies one request and reads its events.
#[async_trait]
pub trait FeedbackSource: fmt::Debug + Send + Sync + 'static {
    /// The scheme's name (`sendgrid`, `standard_webhooks`, ...), for logs.
    fn scheme(&self) -> &'static str;

    /// Verifies `request` and reads its events. Nothing may be recorded
    /// from a request this refuses.
    async fn accept(&self, request: Inbound<'_>) -> Result<Accepted, Refusal>;
}

/// Parses `body` as JSON into `T`, a refusal naming the field that did
/// not fit (`events[3].kind`) as an enqueue's errors name it.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut reader).map_err(|err| {
        let refused = crate::domain::ValidationError::from_json_error(None, &err);
        Refusal::malformed(refused.field, refused.message)
    })
}

/// A signed Unix timestamp in seconds, refused unless within the
/// tolerance of now: an old one may be a replay.
pub(crate) fn timely_unix_seconds(
    request: &Inbound<'_>,
    text: &str,
    header: &str,
) -> Result<DateTime<Utc>, Refusal> {
    let at = text
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| Refusal::Unauthorized(format!("{header} is not a Unix timestamp")))?;
    if !request.is_timely(at) {
        return Err(Refusal::Unauthorized(format!(
            "{header} is outside the tolerance of {}s",
            request.tolerance.as_secs()
        )));
    }
    Ok(at)
}

/// Unix seconds, possibly fractional, as providers date their events.
pub(crate) fn from_unix_seconds(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() {
        return None;
    }
    // Whole microseconds: an f64 of today's seconds carries no finer.
    let micros = (secs * 1e6).round();
    if micros.abs() > 9.0e18 {
        return None;
    }
    DateTime::from_timestamp_micros(micros as i64)
}

/// The header `name` (lowercase) or a refusal saying it is missing.
pub(crate) fn required_header<'a>(request: &Inbound<'a>, name: &str) -> Result<&'a str, Refusal> {
    request
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| Refusal::Unauthorized(format!("no {name} header")))
}

/// Refuses a batch larger than [`MAX_EVENTS`].
pub(crate) fn check_batch(len: usize, field: &str) -> Result<(), Refusal> {
    if len > MAX_EVENTS {
        return Err(Refusal::malformed(
            field,
            format!("{len} events; at most {MAX_EVENTS} in one request"),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A request with `headers` and `body`, now at `now_secs`, with the
    /// default tolerance.
    pub fn inbound<'a>(
        headers: &'a [(String, String)],
        body: &'a [u8],
        url: &'a str,
        now_secs: i64,
    ) -> Inbound<'a> {
        Inbound {
            headers,
            body,
            url,
            now: DateTime::from_timestamp(now_secs, 0).expect("a test time"),
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    pub fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
            .collect()
    }

    /// Runs `source.accept` to completion on a throw-away runtime.
    pub fn accept(source: &dyn FeedbackSource, request: Inbound<'_>) -> Result<Accepted, Refusal> {
        futures::executor::block_on(source.accept(request))
    }

    pub fn is_unauthorized(result: &Result<Accepted, Refusal>) -> bool {
        matches!(result, Err(Refusal::Unauthorized(_)))
    }
}
