//! Transports: how a message leaves Herald. One small async trait,
//! [`Transport`], and one error type whose variants carry their retry
//! meaning, so the retry code asks [`TransportError`] what to do and never
//! looks at provider specifics. No lettre or reqwest type crosses this seam.
//!
//! The kinds: [`smtp`] (lettre, pooled, TLS), [`file`] (`.eml` files),
//! [`webhook`] (signed HTTP POST of JSON), the providers' own APIs
//! ([`twilio`] for SMS, [`slack`] for chat, [`fcm`] and [`apns`] for push,
//! [`sendgrid`], [`postmark`], [`mailgun`] and [`ses`] for email, over
//! [`http`]), [`null`] (accepts everything),
//! and the groups in [`group`] (`failover`, `round_robin`) over other
//! transports. [`email`] builds the MIME message the SMTP and file
//! transports share. [`build_all`] turns the configured transports into
//! ready [`Transport`] values, each with its [`Gate`].
//!
//! Each kind's module owns all of that kind: its [`KindSpec`] (the keys
//! of its `[transports.<name>]` table, the channels it carries, how those
//! keys are checked), the validated settings it yields (a
//! [`TransportKind`]), and how the transport is built from them. [`KINDS`]
//! registers them: a new kind is a new module and one line there.

pub mod apns;
pub mod email;
pub mod fcm;
pub mod file;
pub mod group;
pub mod http;
pub mod mailgun;
pub mod null;
pub mod postmark;
pub mod sendgrid;
pub mod ses;
pub mod slack;
pub mod smtp;
pub mod twilio;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::config::{KindTable, TransportSettings};
use crate::domain::{Channel, Message};
use crate::engine::Gate;
use crate::time::Clock;

pub use apns::{ApnsOptions, ApnsTransport};
pub use file::FileTransport;
pub use group::{FailoverTransport, RoundRobinTransport};
pub use mailgun::{MailgunOptions, MailgunTransport};
pub use null::NullTransport;
pub use postmark::{PostmarkOptions, PostmarkTransport};
pub use sendgrid::{SendgridOptions, SendgridTransport};
pub use ses::{SesOptions, SesTransport};
pub use smtp::{SmtpOptions, SmtpTransport, TlsMode};
pub use webhook::{WebhookOptions, WebhookTransport};

/// Every transport kind, in the order the config's error messages list
/// them. Each module's spec is visible to this module only, so a kind left
/// out of the table is dead code, which the lints refuse.
pub const KINDS: &[&KindSpec] = &[
    &file::KIND,
    &smtp::KIND,
    &webhook::KIND,
    &twilio::KIND,
    &slack::KIND,
    &fcm::KIND,
    &apns::KIND,
    &sendgrid::KIND,
    &postmark::KIND,
    &mailgun::KIND,
    &ses::KIND,
    &null::KIND,
    &group::FAILOVER,
    &group::ROUND_ROBIN,
];

/// The kind `kind = "..."` names, if there is one.
pub fn kind(name: &str) -> Option<&'static KindSpec> {
    KINDS.iter().copied().find(|spec| spec.name == name)
}

/// One kind of transport as the config sees it. The keys every kind
/// shares (`kind`, the tuning keys, `retention`) are not listed here:
/// config validation reads those itself.
pub struct KindSpec {
    /// What `kind = "..."` says.
    pub name: &'static str,
    /// The keys its table may set besides the shared ones; any other is
    /// reported as not a key of this kind.
    pub keys: &'static [&'static str],
    /// The channels it delivers. A group's are found later, as those all
    /// of its members deliver.
    pub channels: &'static [Channel],
    /// Those of `channels` it takes in the provider shape (push `{token,
    /// ...}`, chat `{channel, text, ...}`) rather than `{payload, url?}`.
    pub native: &'static [Channel],
    /// Checks its keys, reporting each problem to the table, and yields
    /// its settings when there is none.
    pub configure: fn(&mut KindTable<'_>) -> Option<Arc<dyn TransportKind>>,
}

/// A transport's kind with its validated settings: what
/// [`TransportSettings::kind`] holds, and what builds the transport.
pub trait TransportKind: fmt::Debug + Send + Sync + 'static {
    /// The kind's name, as in its [`KindSpec`].
    fn name(&self) -> &'static str;

    /// A group's member transports, in order; empty for a plain transport.
    fn members(&self) -> &[String] {
        &[]
    }

    /// Hosts a per-message `url` may name; `None` refuses them all.
    fn allowed_url_hosts(&self) -> Option<&[String]> {
        None
    }

    /// The kind's own event webhook (`POST /api/feedback/<name>`), when
    /// its keys configure one: the provider's format and signature
    /// scheme. The generic Standard Webhooks format any transport may
    /// take is configured apart (`feedback_secret_env`).
    fn feedback(&self) -> Option<Arc<dyn crate::feedback::FeedbackSource>> {
        None
    }

    /// Builds the transport `settings` describe (`settings.kind` is
    /// `self`). `members` are a group's members, built and in order; a
    /// plain transport gets none.
    fn build(
        &self,
        settings: &TransportSettings,
        members: Vec<Gated>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError>;
}

/// A way to deliver messages.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// The configured name (`smtp-main`).
    fn name(&self) -> &str;

    /// `smtp`, `file`, `webhook`, `twilio`, `slack`, `fcm`, `apns`,
    /// `sendgrid`, `postmark`, `mailgun`, `ses`, `null`, `failover`,
    /// `round_robin`.
    fn kind(&self) -> &'static str;

    /// Delivers one message. The message carries its stamp (`id`), which
    /// the transport puts on the wire (`X-Stamp-ID`, `X-Herald-Stamp`).
    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError>;

    /// One attempt as the engine makes it: [`Transport::deliver`] given
    /// at most `limit`. A group applies `limit` to each member's call and
    /// reports the members it tried, so that waiting for a member's rate
    /// limiter is not mistaken for a hung delivery.
    async fn attempt(&self, message: &Message, limit: Duration) -> Attempted {
        Attempted {
            member: self.name().to_owned(),
            result: within(limit, self.deliver(message)).await,
            passed_over: Vec::new(),
            limited: Duration::ZERO,
        }
    }

    /// Whether an attempt could be made now. A group answers false while
    /// every member's circuit breaker is open: its actor then claims
    /// nothing, as it does while its own breaker is open.
    fn is_available(&self) -> bool {
        true
    }
}

/// What one attempt through a transport came to.
#[derive(Debug)]
pub struct Attempted {
    /// Whose answer ended the attempt: the transport itself, or for a
    /// group the member that delivered or failed last.
    pub member: String,
    pub result: Result<Delivery, TransportError>,
    /// Group members that failed transiently before it, in the order tried.
    pub passed_over: Vec<MemberFailure>,
    /// Time spent waiting for members' rate limiters.
    pub limited: Duration,
}

/// A group member that failed within an attempt that then went on to the
/// next member.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberFailure {
    pub member: String,
    pub error: TransportError,
    /// The member's call.
    pub took: Duration,
}

/// `delivery`, or a time-out once `limit` has passed.
pub async fn within(
    limit: Duration,
    delivery: impl std::future::Future<Output = Result<Delivery, TransportError>>,
) -> Result<Delivery, TransportError> {
    tokio::time::timeout(limit, delivery)
        .await
        .unwrap_or_else(|_| {
            Err(TransportError::Timeout(format!(
                "no result within {limit:?}"
            )))
        })
}

/// A successful delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// The transport that delivered: for a group, the member used.
    pub transport: String,
    /// Provider's answer worth keeping (SMTP reply, HTTP status, file path).
    pub detail: Option<serde_json::Value>,
    /// The provider's own id of the message (Twilio's SID, FCM's `name`,
    /// ...), which its delivery receipts name it by: kept on the `sent`
    /// event as `detail.provider_message_id`.
    pub provider_message_id: Option<String>,
}

impl Delivery {
    /// Delivered by `transport`, with nothing more to keep.
    pub fn by(transport: &str) -> Delivery {
        Delivery {
            transport: transport.to_owned(),
            detail: None,
            provider_message_id: None,
        }
    }
}

/// Why a provider says a recipient cannot be reached, ever: the
/// `dead_lettered` event's `detail.reason`, which suppression reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientGone {
    /// No such number, token or address (an unregistered device token,
    /// an invalid phone number).
    Invalid,
    /// The recipient asked not to be sent to (an SMS STOP).
    Unsubscribed,
}

impl RecipientGone {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientGone::Invalid => "recipient_invalid",
            RecipientGone::Unsubscribed => "recipient_unsubscribed",
        }
    }
}

/// Why a delivery failed, classified for retrying.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// The provider refused for good (SMTP 5xx, HTTP 4xx other than
    /// 408/429): dead-letter at once.
    #[error("rejected{}: {message}", code.map(|c| format!(" ({c})")).unwrap_or_default())]
    Rejected { code: Option<u16>, message: String },
    /// The provider says the recipient is gone for good (an unregistered
    /// token, an invalid number, a STOP): dead-letter at once, saying why.
    #[error("{}{}: {message}", reason.as_str(), code.map(|c| format!(" ({c})")).unwrap_or_default())]
    RecipientGone {
        reason: RecipientGone,
        code: Option<u16>,
        message: String,
    },
    /// The provider refused the transport's credentials (HTTP 401/403, a
    /// revoked token): an outage of the transport, not a fault of the
    /// message. The breaker opens and the message goes back unattempted,
    /// so a bad key never uses up the queue's attempts.
    #[error("credentials refused{}: {message}", code.map(|c| format!(" ({c})")).unwrap_or_default())]
    Unauthorized { code: Option<u16>, message: String },
    /// The provider refused for now (SMTP 4xx, HTTP 5xx, 408, 429): retry,
    /// not before `retry_after` when the provider said so.
    #[error("temporary failure{}: {message}", code.map(|c| format!(" ({c})")).unwrap_or_default())]
    Temporary {
        code: Option<u16>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No answer in time: retry.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Could not reach the provider: retry.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The message cannot be sent as it is (bad address, unbuildable
    /// email): dead-letter at once.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The transport itself is misconfigured or failing locally (e.g. an
    /// unwritable directory): retry, an operator can fix it.
    #[error("transport failure: {0}")]
    Local(String),
    /// Nothing was tried: every member of a group is shut off by its
    /// circuit breaker. The engine hands the claim back; it costs the
    /// message no attempt.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Coarse failure classes for analytics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Timeout,
    Connection,
    Rejected,
    Permanent,
    Transient,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connection => "connection",
            ErrorClass::Rejected => "rejected",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Transient => "transient",
        }
    }
}

impl TransportError {
    /// Worth another attempt later.
    pub fn is_transient(&self) -> bool {
        !self.is_permanent()
    }

    /// No attempt can succeed: dead-letter now.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TransportError::Rejected { .. }
                | TransportError::InvalidMessage(_)
                | TransportError::RecipientGone { .. }
        )
    }

    /// The provider refused the credentials: see
    /// [`TransportError::Unauthorized`].
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, TransportError::Unauthorized { .. })
    }

    /// For a recipient gone for good, why.
    pub fn recipient_gone(&self) -> Option<RecipientGone> {
        match self {
            TransportError::RecipientGone { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, TransportError::Timeout(_))
    }

    /// Nothing was attempted: the message is handed back, not failed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, TransportError::Unavailable(_))
    }

    /// The earliest retry the provider asked for (a 429's Retry-After).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TransportError::Temporary { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            TransportError::Timeout(_) => ErrorClass::Timeout,
            TransportError::Connection(_) => ErrorClass::Connection,
            TransportError::Rejected { .. } | TransportError::RecipientGone { .. } => {
                ErrorClass::Rejected
            }
            TransportError::InvalidMessage(_) => ErrorClass::Permanent,
            TransportError::Unauthorized { .. } => ErrorClass::Transient,
            TransportError::Temporary { .. }
            | TransportError::Local(_)
            | TransportError::Unavailable(_) => ErrorClass::Transient,
        }
    }

    /// Classifies an HTTP status answered by a provider.
    pub fn from_http_status(
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    ) -> TransportError {
        match status {
            401 | 403 => TransportError::Unauthorized {
                code: Some(status),
                message,
            },
            408 | 429 | 500..=599 => TransportError::Temporary {
                code: Some(status),
                message,
                retry_after,
            },
            _ => TransportError::Rejected {
                code: Some(status),
                message,
            },
        }
    }
}

/// Makes rustls use the ring provider for the whole process. rustls
/// cannot pick a provider by itself when more than one is compiled in
/// (a dependency may bring aws-lc-rs), and the HTTP client needs one
/// installed; STACK.md has the story. Call it once at start-up; the
/// transports that use TLS call it too, so calling it again is harmless.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is the goal.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A configured transport ready to run, with the gate (rate limiter and
/// circuit breaker) that every path to it passes through.
#[derive(Clone)]
pub struct Gated {
    pub transport: Arc<dyn Transport>,
    pub gate: Gate,
}

/// Builds every configured transport with its gate. Plain transports are
/// built first; each group then holds `Arc`s of its members and their
/// gates, so a member's pool (SMTP connections, HTTP client), rate limiter
/// and breaker are shared by the member and its groups. `clock` dates the
/// breakers' openings.
///
/// Call it inside the Tokio (actix) runtime that will run the deliveries:
/// the SMTP pool spawns its idle-connection reaper on the runtime current
/// when it is built (outside one, the SMTP transport reports an error).
/// Nothing connects here; an unreachable server shows up as delivery
/// errors, not as a start-up failure.
pub fn build_all(
    settings: &BTreeMap<String, TransportSettings>,
    clock: Arc<dyn Clock>,
) -> Result<BTreeMap<String, Gated>, TransportError> {
    install_crypto_provider();
    let mut built: BTreeMap<String, Gated> = BTreeMap::new();
    for (name, transport) in settings {
        if transport.kind.members().is_empty() {
            let gated = Gated {
                transport: build_plain(transport, clock.clone())?,
                gate: Gate::for_transport(transport, clock.clone()),
            };
            built.insert(name.clone(), gated);
        }
    }
    for (name, transport) in settings {
        let members = transport.kind.members();
        if members.is_empty() {
            continue;
        }
        let mut group_members = Vec::with_capacity(members.len());
        for member in members {
            // Config validation already refuses unknown members and nested
            // groups; a hand-built settings map gets a clear error instead.
            let (Some(built_member), Some(member_settings)) =
                (built.get(member), settings.get(member))
            else {
                return Err(TransportError::Local(format!(
                    "transport `{name}`: member `{member}` is not a configured plain transport"
                )));
            };
            if !member_settings.kind.members().is_empty() {
                return Err(TransportError::Local(format!(
                    "transport `{name}`: member `{member}` is a group"
                )));
            }
            group_members.push(built_member.clone());
        }
        let group = transport
            .kind
            .build(transport, group_members, clock.clone())?;
        let gated = Gated {
            transport: group,
            gate: Gate::for_transport(transport, clock.clone()),
        };
        built.insert(name.clone(), gated);
    }
    Ok(built)
}

/// Builds one transport that is not a group.
pub fn build_plain(
    settings: &TransportSettings,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Transport>, TransportError> {
    if !settings.kind.members().is_empty() {
        return Err(TransportError::Local(format!(
            "transport `{}` is a group; build it with build_all",
            settings.name
        )));
    }
    settings.kind.build(settings, Vec::new(), clock)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{Channel, Fingerprint, Priority, Stamp, Status};

    /// A stored message of `channel` carrying `payload`, as a transport
    /// receives it from the engine.
    pub(crate) fn message(channel: Channel, payload: serde_json::Value) -> Message {
        let now = crate::time::from_millis(1_767_225_600_000);
        Message {
            id: Stamp::generate(),
            channel,
            transport: "test".into(),
            category: None,
            status: Status::Processing,
            priority: Priority::MIN,
            payload,
            metadata: serde_json::json!({}),
            fingerprint: Fingerprint::from_stored("0".repeat(64)),
            idempotency_key: None,
            attempts: 1,
            max_attempts: 3,
            created_at: now,
            available_at: now,
            lease_until: None,
            claim_token: None,
            sent_at: None,
            last_error: None,
            updated_at: now,
            delivery: Default::default(),
        }
    }

    #[test]
    fn http_statuses_classify_as_the_design_says() {
        let class = |s| TransportError::from_http_status(s, String::new(), None);
        assert!(class(500).is_transient());
        assert!(class(503).is_transient());
        assert!(class(408).is_transient());
        assert!(class(429).is_transient());
        assert!(class(401).is_unauthorized() && !class(401).is_permanent());
        assert!(class(403).is_unauthorized());
        assert!(class(400).is_permanent());
        assert!(class(404).is_permanent());
        assert!(class(410).is_permanent());
    }

    #[test]
    fn retry_after_comes_only_from_temporary_failures() {
        let wait = Some(Duration::from_secs(7));
        assert_eq!(
            TransportError::from_http_status(429, "slow down".into(), wait).retry_after(),
            wait
        );
        assert_eq!(TransportError::Timeout("x".into()).retry_after(), None);
        assert_eq!(
            TransportError::Timeout("x".into()).class(),
            ErrorClass::Timeout
        );
    }
}
