//! Configuration: the TOML file (`config.toml`, or `HERALD_CONFIG`), the
//! environment overrides (`HERALD_DATABASE_URL`, `HERALD_LISTEN`), and
//! validation into typed runtime [`Settings`].
//!
//! Loading reports every problem at once, each naming its key
//! (`transports.hooks.rate_limit: must be at least 1`), so a broken config
//! is fixed in one round. Unknown keys are errors.
//!
//! A transport table's keys of its kind (`path`, `host`, `url`, ...) are
//! not declared here: each kind reads and checks its own through a
//! [`KindTable`] (see [`crate::transports::KINDS`]), while the keys every
//! kind shares (tuning, `retention`, the feedback keys) and the checks
//! across transports (groups' members, routes) stay here.

mod raw;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use raw::{KindTable, RawConfig, RawTransport, Tuning, open_file_limit};

use crate::domain::{Channel, EnqueuePolicy, Priority, TransportIntake};
use crate::feedback::{DEFAULT_TOLERANCE, FeedbackSource};
use crate::storage::StorageOptions;
use crate::transports::TransportKind;

/// The config file read when `HERALD_CONFIG` is not set.
pub const DEFAULT_CONFIG_PATH: &str = "config.toml";

/// A secret from the config or the environment; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Enqueue,
    Read,
    Admin,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: Secret,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Every address `listen` names: a host name may resolve to several
    /// (`localhost`: 127.0.0.1 and ::1); never empty.
    pub listen: Vec<SocketAddr>,
    pub max_body_bytes: usize,
    /// On a stop signal: time for HTTP requests and deliveries in flight.
    pub shutdown_grace: Duration,
    /// Longest a client may take to send a request's head.
    pub head_timeout: Duration,
    /// Longest a request body may take to arrive once its head is read.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive: Duration,
    /// HTTP connections open at once, across all workers; below the
    /// process's open-file limit.
    pub max_connections: NonZeroUsize,
}

/// How waiting priorities are set and aged.
#[derive(Debug, Clone)]
pub struct PrioritySettings {
    pub default: Priority,
    pub categories: BTreeMap<String, Priority>,
    pub aging: Duration,
}

/// Delivery tuning of one transport, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    /// Deliveries per minute.
    pub rate_limit: NonZeroU32,
    /// Deliveries allowed at once above the steady rate.
    pub burst_limit: NonZeroU32,
    /// Deliveries in flight at most.
    pub concurrency: NonZeroUsize,
    /// Messages claimed per claim.
    pub batch_size: NonZeroUsize,
    /// Claimed messages kept ready beyond those in flight.
    pub prefetch_count: usize,
    pub lease: Duration,
    pub max_retries: u32,
    pub retry_delay: Duration,
    pub retry_multiplier: f64,
    pub max_retry_delay: Duration,
    pub circuit_failure_threshold: NonZeroU32,
    pub circuit_open: Duration,
    /// Cost of one delivery, for the analytics; `None` when not configured.
    pub cost_per_message: Option<f64>,
}

impl DeliverySettings {
    /// A message's attempts: the first plus `max_retries`.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }
}

#[derive(Debug, Clone)]
pub struct TransportSettings {
    pub name: String,
    /// Its kind and the kind's own settings.
    pub kind: Arc<dyn TransportKind>,
    pub delivery: DeliverySettings,
    /// Channels this transport can deliver.
    pub channels: Vec<Channel>,
    /// Those of its channels it takes in the provider shape (push:
    /// `{token, ...}`, chat: `{channel, text, ...}`), not `{payload, url?}`.
    pub native: Vec<Channel>,
    /// How `/api/feedback/<name>` verifies and reads what it is posted.
    pub feedback: FeedbackSettings,
}

/// A transport's event webhook: which schemes it takes, and how old a
/// signed timestamp may be.
#[derive(Debug, Clone)]
pub struct FeedbackSettings {
    /// Standard Webhooks over Herald's event JSON (`feedback_secret_env`);
    /// `None` refuses that format.
    pub standard: Option<Arc<dyn FeedbackSource>>,
    /// The kind's own format and signature scheme, when its keys
    /// configure one ([`TransportKind::feedback`]).
    pub native: Option<Arc<dyn FeedbackSource>>,
    /// `feedback_tolerance_s`; default [`DEFAULT_TOLERANCE`].
    pub tolerance: Duration,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        FeedbackSettings {
            standard: None,
            native: None,
            tolerance: DEFAULT_TOLERANCE,
        }
    }
}

/// How long analytics rollups are kept, and at what resolution.
#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    /// Minute rollups older than this merge into hourly rows.
    pub compact_after: Duration,
    /// Rollups older than this are deleted.
    pub retention: Duration,
}

/// What an alert rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// Failed attempts / attempts over a window, from the rollups.
    FailureRate,
    /// Seconds the circuit breaker has been open.
    BreakerOpen,
    /// Messages dead-lettered over a window, from the rollups.
    DeadLetters,
    /// Seconds the oldest queued message has been waiting.
    OldestQueued,
    /// Messages queued.
    QueueDepth,
    /// Bounce reports (hard and soft) / messages sent over a window, from
    /// the rollups.
    BounceRate,
    /// Complaint reports / messages sent over a window, from the rollups.
    ComplaintRate,
}

impl AlertKind {
    pub const ALL: [AlertKind; 7] = [
        AlertKind::FailureRate,
        AlertKind::BreakerOpen,
        AlertKind::DeadLetters,
        AlertKind::OldestQueued,
        AlertKind::QueueDepth,
        AlertKind::BounceRate,
        AlertKind::ComplaintRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::FailureRate => "failure_rate",
            AlertKind::BreakerOpen => "breaker_open",
            AlertKind::DeadLetters => "dead_letters",
            AlertKind::OldestQueued => "oldest_queued",
            AlertKind::QueueDepth => "queue_depth",
            AlertKind::BounceRate => "bounce_rate",
            AlertKind::ComplaintRate => "complaint_rate",
        }
    }

    pub fn parse(text: &str) -> Option<AlertKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Kinds measured over a window of rollups.
    pub fn has_window(self) -> bool {
        matches!(
            self,
            AlertKind::FailureRate
                | AlertKind::DeadLetters
                | AlertKind::BounceRate
                | AlertKind::ComplaintRate
        )
    }

    /// Kinds whose value is a fraction of 0 to 1 (mostly).
    pub fn is_rate(self) -> bool {
        matches!(
            self,
            AlertKind::FailureRate | AlertKind::BounceRate | AlertKind::ComplaintRate
        )
    }
}

/// What a rule does when it opens an incident, besides recording it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AlertAction {
    /// Send the notices (unless within the cooldown).
    #[default]
    Notify,
    /// Notify, and pause the incident's transport as
    /// `POST /api/transports/{name}/pause` does.
    Pause,
}

impl AlertAction {
    pub fn parse(text: &str) -> Option<AlertAction> {
        match text {
            "notify" => Some(AlertAction::Notify),
            "pause" => Some(AlertAction::Pause),
            _ => None,
        }
    }
}

/// One `[[alerts.rules]]` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    pub name: String,
    pub kind: AlertKind,
    /// The transport watched; `None` watches each configured transport
    /// separately.
    pub transport: Option<String>,
    pub threshold: f64,
    /// For the windowed kinds.
    pub window: Option<Duration>,
    /// A new incident within this time of the last notified one of the
    /// same rule and transport is recorded but not notified.
    pub cooldown: Duration,
    pub action: AlertAction,
}

/// `[alerts]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// The transport notices go through.
    pub transport: String,
    pub channel: Channel,
    /// email: sender; sms: sender number.
    pub from: Option<String>,
    /// email: recipients; sms: the one number.
    pub to: Vec<String>,
    pub evaluate_every: Duration,
    pub rules: Vec<AlertRule>,
}

/// Validated runtime settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings came from.
    pub source: PathBuf,
    pub server: ServerSettings,
    pub storage: StorageOptions,
    pub api_keys: Vec<ApiKey>,
    pub transports: BTreeMap<String, TransportSettings>,
    pub routes: BTreeMap<Channel, String>,
    pub priority: PrioritySettings,
    pub analytics: AnalyticsSettings,
    /// How long finished messages are kept (`[retention]`, with the
    /// transports' and categories' overrides).
    pub retention: crate::storage::Retention,
    /// The delivery loop's timings (`[engine]`).
    pub engine: crate::engine::EngineOptions,
    /// Alerting; `None` without an `[alerts]` table.
    pub alerts: Option<AlertSettings>,
    /// `[feedback]`: the provider event webhooks' route.
    pub feedback: FeedbackRoute,
}

/// `[feedback]`, as the route reads it (the rest is storage's).
#[derive(Debug, Clone)]
pub struct FeedbackRoute {
    /// Larger bodies are refused with 413.
    pub max_body_bytes: usize,
}

/// One problem with the configuration, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n  {}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found by validation (empty for read and parse errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

impl Settings {
    /// Loads the config named by `HERALD_CONFIG` (default `config.toml`)
    /// with the process environment's overrides.
    pub fn load() -> Result<Settings, ConfigError> {
        Self::load_with(|name| std::env::var(name).ok())
    }

    /// Like [`Settings::load`], reading variables through `env`.
    pub fn load_with(env: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let path = env("HERALD_CONFIG").unwrap_or_else(|| DEFAULT_CONFIG_PATH.to_owned());
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: PathBuf::from(&path),
            source,
        })?;
        Self::from_toml(&text, Path::new(&path), env)
    }

    /// Parses and validates config text; `env` answers environment lookups
    /// (overrides and `*_env` secrets).
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(url) = env("HERALD_DATABASE_URL").filter(|u| !u.is_empty()) {
            raw.storage.url = Some(url);
        }
        if let Some(listen) = env("HERALD_LISTEN").filter(|l| !l.is_empty()) {
            raw.server.listen = Some(listen);
        }
        raw.validate(path, &env)
            .map_err(|problems| ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
    }

    /// What enqueue validation needs to know about transports and routes.
    pub fn enqueue_policy(&self) -> EnqueuePolicy {
        EnqueuePolicy {
            transports: self
                .transports
                .iter()
                .map(|(name, t)| {
                    let intake = TransportIntake {
                        channels: t.channels.clone(),
                        max_attempts: t.delivery.max_attempts(),
                        allowed_url_hosts: t.kind.allowed_url_hosts().map(<[String]>::to_vec),
                        native: t.native.clone(),
                    };
                    (name.clone(), intake)
                })
                .collect::<HashMap<_, _>>(),
            routes: self.routes.iter().map(|(c, t)| (*c, t.clone())).collect(),
            default_priority: self.priority.default,
            category_priorities: self.priority.categories.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
