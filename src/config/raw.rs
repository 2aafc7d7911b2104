//! The config file as written, and its validation into [`Settings`].

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{
    AlertAction, AlertKind, AlertRule, AlertSettings, AnalyticsSettings, ApiKey, DeliverySettings,
    FeedbackSettings, PrioritySettings, Problem, Role, Secret, ServerSettings, Settings,
    TransportSettings,
};
use crate::domain::{Channel, Priority, check_category};
use crate::feedback::{self, FeedbackSource, standard::StandardWebhooks};
use crate::storage::{
    self, DEFAULT_PRIORITY_AGING, Retention, RetentionOverride, RetentionRule, StorageOptions,
};
use crate::transports::{self, KINDS, TransportKind};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
pub const DEFAULT_HEAD_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_KEEP_ALIVE_MS: u64 = 5_000;
/// Descriptors the process holds whatever its load: stdio, each runtime's
/// epoll and event fds, listeners, the metrics and SQLite threads' files.
/// An idle server on SQLite holds about 40.
const BASE_FDS: u64 = 64;
/// Per storage connection: a PostgreSQL socket, or SQLite's database and
/// WAL files (plus the shared memory file).
const FDS_PER_STORAGE_CONNECTION: u64 = 3;
/// Per transport: an SMTP pool's sockets, a webhook client's keep-alive
/// sockets, the file transport's open .eml files.
const FDS_PER_TRANSPORT: u64 = 16;
pub const DEFAULT_STORAGE_URL: &str = "sqlite://data/herald.db";
pub const DEFAULT_POOL_SIZE: usize = 16;
pub const DEFAULT_RATE_LIMIT: u32 = 600;
pub const DEFAULT_BURST_LIMIT: u32 = 20;
pub const DEFAULT_CONCURRENCY: u32 = 8;
pub const DEFAULT_BATCH_SIZE: u32 = 10;
pub const DEFAULT_PREFETCH_COUNT: u32 = 5;
pub const DEFAULT_LEASE_MS: u64 = 30_000;
pub const DEFAULT_MAX_RETRIES: u32 = 3;
pub const DEFAULT_RETRY_DELAY_MS: u64 = 1_000;
pub const DEFAULT_RETRY_MULTIPLIER: f64 = 2.0;
pub const DEFAULT_MAX_RETRY_DELAY_MS: u64 = 60_000;
pub const DEFAULT_CIRCUIT_FAILURE_THRESHOLD: u32 = 5;
pub const DEFAULT_CIRCUIT_OPEN_MS: u64 = 30_000;
/// `timeout_ms`, for the kinds that take it.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_PRIORITY: i64 = 4;
pub const DEFAULT_COMPACT_AFTER_HOURS: u64 = 48;
pub const DEFAULT_RETENTION_DAYS: u64 = 90;
// `[retention]`'s defaults; 0 would keep for ever.
pub const DEFAULT_SENT_RETENTION_DAYS: u64 = 30;
pub const DEFAULT_DEAD_RETENTION_DAYS: u64 = 14;
pub const DEFAULT_CANCELLED_RETENTION_DAYS: u64 = 30;
/// Longest retention that is not for ever, in days (about a century):
/// longer is surely a typo for 0, and the cut-offs computed from it stay
/// far inside the clock's range.
const MAX_RETENTION_DAYS: u64 = 36_500;
const MAX_RETENTION_S: u64 = MAX_RETENTION_DAYS * 86_400;
pub const DEFAULT_ALERT_EVALUATE_EVERY_S: u64 = 30;
pub const DEFAULT_ALERT_COOLDOWN_S: u64 = 900;
/// Longest alert rule name: it goes into notices' idempotency keys.
const MAX_ALERT_RULE_NAME: usize = 64;
/// Shortest alert window: the rollups are per minute.
const MIN_ALERT_WINDOW_S: u64 = 60;
/// Shortest lease accepted: a heartbeat must fit inside it comfortably.
const MIN_LEASE_MS: u64 = 1_000;
/// Shortest API key accepted from config.
const MIN_API_KEY_LEN: usize = 16;

/// `[server]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// `host:port` to listen on, the host an address or a name (every
    /// address it resolves to is bound). Default `127.0.0.1:8080`;
    /// `HERALD_LISTEN` overrides.
    pub listen: Option<String>,
    /// Largest request body, in bytes. Default 10485760 (10 MiB).
    pub max_body_bytes: Option<usize>,
    /// On SIGTERM, how long deliveries in flight may take to finish, in ms. Default 10000.
    pub shutdown_grace_ms: Option<u64>,
    /// Longest a client may take to send a request's line and headers, in
    /// ms; then the connection is answered 408 and closed. Default 5000.
    pub head_timeout_ms: Option<u64>,
    /// Longest a request body may take to arrive once the head is read, in
    /// ms; a slower body is answered 408. Default 30000.
    pub body_timeout_ms: Option<u64>,
    /// How long an idle keep-alive connection stays open, in ms. Default 5000.
    pub keep_alive_ms: Option<u64>,
    /// HTTP connections open at once, across all workers. Default: the
    /// open-file limit less what storage, transports and the process need.
    pub max_connections: Option<usize>,
}

/// `[storage]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// `sqlite://path` or `postgres://user@host:port/db`. Default
    /// `sqlite://data/herald.db`; `HERALD_DATABASE_URL` overrides.
    pub url: Option<String>,
    /// PostgreSQL connections (SQLite: reader threads, at most 8). Default 16.
    pub pool_size: Option<usize>,
    /// PostgreSQL: single enqueues written at once, at most `pool_size`
    /// (SQLite: always one writer). Default 2.
    pub enqueue_writers: Option<usize>,
}

/// `[[api_keys]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// The key itself.
    pub key: Option<String>,
    /// Or the environment variable holding it.
    pub key_env: Option<String>,
    pub roles: Vec<Role>,
}

/// `[analytics]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalytics {
    /// Minute rollups older than this, in hours, merge into hourly rows. Default 48.
    pub compact_after_hours: Option<u64>,
    /// Rollups older than this, in days, are deleted. Default 90.
    pub retention_days: Option<u64>,
}

/// `[engine]`: the delivery loop's timings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    /// Fallback claim poll when no work signal arrives. Default 500.
    pub poll_interval_ms: Option<u64>,
    /// How often expired leases are looked for. Default 1000.
    pub recovery_interval_ms: Option<u64>,
    /// How often old dead letters are purged and rollups compacted. Default 60.
    pub purge_interval_s: Option<u64>,
    /// Longest one delivery may run, whatever the transport. Default 120000.
    pub delivery_timeout_ms: Option<u64>,
    /// This node's identity, stable across restarts. Default: host name
    /// and listen address.
    pub node_id: Option<String>,
    /// Time between this node's heartbeats in storage, in ms; a node is
    /// presumed dead after three missed beats. Default 2000.
    pub heartbeat_ms: Option<u64>,
}

/// `[suppression]`: which provider reports put a recipient on the
/// suppression list, and for how long.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuppression {
    /// `global` (an entry holds for every transport) or `transport` (only
    /// for the transport that reported it). Default `global`.
    pub scope: Option<String>,
    /// Hard bounces suppress. Default true.
    pub hard_bounce: Option<bool>,
    /// Spam complaints suppress. Default true.
    pub complaint: Option<bool>,
    /// Unsubscribes suppress. Default true.
    pub unsubscribe: Option<bool>,
    /// The providers' recipient-gone dead letters (an invalid number or
    /// token, an SMS STOP) suppress. Default true.
    pub recipient_gone: Option<bool>,
    /// Soft bounces within the window that suppress; 0: never. Default 3.
    pub soft_bounce_limit: Option<u32>,
    /// The soft bounces' window, in seconds. Default 604800 (a week).
    pub soft_bounce_window_s: Option<u64>,
    /// How long an automatic entry holds, in seconds; 0: until removed.
    /// Default 0.
    pub expire_after_s: Option<u64>,
}

/// `[feedback] max_body_bytes` when not set.
const DEFAULT_FEEDBACK_MAX_BODY: usize = 4 * 1024 * 1024;

/// `[feedback]`: the inbound provider event webhooks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeedback {
    /// How long a report whose message is not found is kept (and matched
    /// again), in seconds. Default 86400.
    pub unmatched_keep_s: Option<u64>,
    /// Largest body a feedback request may have, in bytes; larger is 413.
    /// Default 4194304 (SendGrid posts up to a few thousand events, SNS
    /// up to 256 KiB escaped).
    pub max_body_bytes: Option<usize>,
}

/// Bounds of `engine.heartbeat_ms`: beats far apart make takeover slow,
/// beats very close together load the store for nothing.
const MIN_HEARTBEAT_MS: u64 = 100;
const MAX_HEARTBEAT_MS: u64 = 60_000;

/// A node id is shown in logs, the API and the nodes table: plain text.
fn valid_node_id(id: &str) -> bool {
    (1..=200).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// `[alerts]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// The transport alert notices go through. Required.
    pub transport: Option<String>,
    /// Channel of the notices. Default: webhook when the transport delivers
    /// it, else email.
    pub channel: Option<String>,
    /// email: the sender (required); sms: the sender number (optional).
    pub from: Option<String>,
    /// email: the recipients (required); sms: the one number (required).
    pub to: Option<Vec<String>>,
    /// Seconds between evaluations of the rules. Default 30.
    pub evaluate_every_s: Option<u64>,
    /// Default cooldown of a rule, in seconds. Default 900.
    pub cooldown_s: Option<u64>,
    #[serde(default)]
    pub rules: Vec<RawAlertRule>,
}

/// `[[alerts.rules]]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertRule {
    /// Unique; letters, digits, '-' and '_'.
    pub name: Option<String>,
    /// failure_rate | breaker_open | dead_letters | oldest_queued |
    /// queue_depth | bounce_rate | complaint_rate
    pub kind: Option<String>,
    /// The transport watched. Unset: every transport, each on its own.
    pub transport: Option<String>,
    /// failure_rate, bounce_rate, complaint_rate: a fraction (0 to 1);
    /// breaker_open, oldest_queued: seconds; dead_letters, queue_depth:
    /// messages.
    pub threshold: Option<f64>,
    /// failure_rate, dead_letters, bounce_rate, complaint_rate: the window
    /// measured, in seconds.
    pub window_s: Option<u64>,
    /// Overrides `[alerts] cooldown_s`, in seconds.
    pub cooldown_s: Option<u64>,
    /// notify (default): record and notify; pause: also pause the
    /// incident's transport (persisted, on every node) until resumed.
    pub action: Option<String>,
}

/// `[priority]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPriority {
    /// Priority of a message that names none and whose category has none. Default 4.
    pub default: Option<i64>,
    /// Category -> priority.
    #[serde(default)]
    pub categories: BTreeMap<String, i64>,
    /// Seconds of waiting that raise a message's effective priority by one. Default 60.
    pub aging_s: Option<u64>,
}

/// `[retention]`, `[transports.<name>.retention]` and
/// `[retention.categories.<name>]`: how long finished messages are kept.
/// Each key a category sets beats the transport's, which beats
/// `[retention]`'s, which beats the default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Days a sent message is kept; 0 keeps it for ever. Default 30.
    pub sent_days: Option<u64>,
    /// Days a dead letter is kept; 0 keeps it for ever. Default 14.
    pub dead_days: Option<u64>,
    /// Days a cancelled message is kept; 0 keeps it for ever. Default 30.
    pub cancelled_days: Option<u64>,
    /// Seconds after sending when a sent message's payload is dropped (its
    /// metadata, fingerprint and events stay); at least 1. Default: kept.
    pub payload_after_sent_s: Option<u64>,
    /// `[retention]` only: category -> the keys it overrides.
    pub categories: Option<BTreeMap<String, RawRetention>>,
}

/// Declares the delivery tuning keys once: the `[defaults]` table, the same
/// keys on every transport table, and how a transport's unset keys fall
/// back to `[defaults]`.
macro_rules! tuning {
    ($( $(#[doc = $doc:literal])* $field:ident : $ty:ty ),* $(,)?) => {
        /// `[defaults]`: delivery tuning every transport inherits.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Tuning {
            $( $(#[doc = $doc])* pub $field: Option<$ty>, )*
            /// Deprecated alias of `[retention] dead_days`, in seconds.
            pub dlq_max_age_s: Option<u64>,
        }

        /// `[transports.<name>]`: the keys every kind shares. The kind's
        /// own keys are left in `keys` for its
        /// [`KindSpec`](crate::transports::KindSpec) to read.
        #[derive(Debug, Clone, Default, Deserialize)]
        pub struct RawTransport {
            /// One of the kinds of [`KINDS`].
            pub kind: String,
            /// Overrides of `[retention]` for this transport's messages.
            pub retention: Option<RawRetention>,
            /// Environment variable holding the Standard Webhooks secret
            /// (`whsec_...`) that signs Herald's event JSON posted to
            /// `/api/feedback/<name>`. Default unset: the format is refused.
            pub feedback_secret_env: Option<String>,
            /// How far a feedback request's signed timestamp may be from
            /// now, either way, in seconds. Default 300.
            pub feedback_tolerance_s: Option<u64>,
            $( $(#[doc = $doc])* pub $field: Option<$ty>, )*
            /// Deprecated alias of this transport's `retention.dead_days`, in seconds.
            pub dlq_max_age_s: Option<u64>,
            /// Every other key: the kind's, and any unknown one. Validation
            /// reports those the kind does not take, as serde cannot deny
            /// unknown fields beside a flattened map.
            #[serde(flatten)]
            pub keys: toml::Table,
        }

        /// The keys of `[transports.<name>]` that are not the kind's own.
        #[cfg(test)]
        pub(super) const SHARED_TRANSPORT_KEYS: &[&str] =
            &["kind", "retention", "feedback_secret_env", "feedback_tolerance_s",
              $( stringify!($field), )* "dlq_max_age_s"];

        impl RawTransport {
            fn tuning(&self, defaults: &Tuning) -> Tuning {
                // `dlq_max_age_s` is retention, resolved with it per level.
                Tuning { $( $field: self.$field.or(defaults.$field), )* ..Tuning::default() }
            }

            /// Which tuning keys this transport sets itself.
            fn sets(&self, key: &str) -> bool {
                match key {
                    $( stringify!($field) => self.$field.is_some(), )*
                    _ => false,
                }
            }
        }
    };
}

tuning! {
    /// Deliveries per minute. Default 600.
    rate_limit: u32,
    /// Deliveries allowed at once above the steady rate. Default 20.
    burst_limit: u32,
    /// Deliveries in flight at most. Default 8.
    concurrency: u32,
    /// Messages claimed per claim. Default 10.
    batch_size: u32,
    /// Claimed messages kept ready beyond those in flight. Default 5.
    prefetch_count: u32,
    /// Lease of a claim, in ms, renewed while a delivery runs. Default 30000.
    lease_ms: u64,
    /// Retries after the first attempt. Default 3.
    max_retries: u32,
    /// First retry delay, in ms. Default 1000.
    retry_delay_ms: u64,
    /// Factor between successive retry delays. Default 2.0.
    retry_multiplier: f64,
    /// Longest retry delay, in ms. Default 60000.
    max_retry_delay_ms: u64,
    /// Consecutive failures that open the circuit breaker. Default 5.
    circuit_failure_threshold: u32,
    /// How long the breaker stays open before a probe, in ms. Default 30000.
    circuit_open_ms: u64,
    /// What one delivery costs, in your currency, for the analytics. Default unset.
    cost_per_message: f64,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    #[serde(default)]
    pub defaults: Tuning,
    #[serde(default)]
    pub transports: BTreeMap<String, RawTransport>,
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: RawPriority,
    #[serde(default)]
    pub analytics: RawAnalytics,
    #[serde(default)]
    pub retention: RawRetention,
    #[serde(default)]
    pub engine: RawEngine,
    #[serde(default)]
    pub suppression: RawSuppression,
    #[serde(default)]
    pub feedback: RawFeedback,
    pub alerts: Option<RawAlerts>,
}

/// Collects problems so validation can report all of them.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// The keys of one `[transports.<name>]` table that belong to its kind,
/// as the kind's [`KindSpec::configure`](crate::transports::KindSpec)
/// reads them. What it reports names the key in full and joins the
/// config's other problems.
pub struct KindTable<'a> {
    prefix: &'a str,
    keys: toml::Table,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: &'a mut Problems,
}

impl KindTable<'_> {
    /// The kind's keys as `T`, a serde struct of optional fields. A value
    /// of the wrong type is reported naming its key, and answers `None`.
    pub fn keys<T: DeserializeOwned>(&mut self) -> Option<T> {
        let keys = std::mem::take(&mut self.keys);
        match serde_path_to_error::deserialize(keys) {
            Ok(keys) => Some(keys),
            Err(err) => {
                // The path names the key; toml's own text would add it again.
                let path = err.path().to_string();
                let message = err.inner().message().trim();
                match path.as_str() {
                    "." => self.problems.add(self.prefix, message),
                    key => self.problem(key, message),
                }
                None
            }
        }
    }

    /// Reports a problem with the kind's key `key`.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.add(format!("{}.{key}", self.prefix), message);
    }

    /// The secret in environment variable `var`, which key `key` names;
    /// a variable unset or empty is a problem.
    pub fn secret(&mut self, key: &str, var: Option<&str>) -> Option<Secret> {
        let var = var?;
        let value = (self.env)(var).filter(|v| !v.is_empty());
        if value.is_none() {
            self.problem(key, format!("environment variable `{var}` is not set"));
        }
        value.map(Secret::new)
    }

    /// The `timeout_ms` key of a kind that calls a server: one delivery's
    /// time-out. Default 10000.
    pub fn timeout(&mut self, timeout_ms: Option<u64>) -> Option<Duration> {
        match timeout_ms {
            Some(0) => {
                self.problem("timeout_ms", "must be at least 1");
                None
            }
            other => Some(Duration::from_millis(other.unwrap_or(DEFAULT_TIMEOUT_MS))),
        }
    }
}

/// `host:port`, the host a name or an address, resolved to every address
/// it names (in the resolver's order, without repeats).
fn resolve_listen(text: &str) -> Result<Vec<SocketAddr>, String> {
    let resolved = text
        .to_socket_addrs()
        .map_err(|e| format!("`{text}` is not host:port with a host that resolves ({e})"))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in resolved {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(format!("`{text}` resolves to no address"));
    }
    Ok(addrs)
}

/// Why `listen` may not serve an API without keys: one of its addresses
/// is not loopback. Every address counts: a name that resolves to a
/// loopback and a public address would expose the open API on the public
/// one.
pub(super) fn non_loopback_listen(text: &str, addrs: &[SocketAddr]) -> Option<String> {
    let public = addrs.iter().find(|addr| !addr.ip().is_loopback())?;
    let shown = if public.to_string() == text {
        format!("`{text}`")
    } else {
        format!("`{text}` resolves to {public}, which")
    };
    Some(format!(
        "{shown} is not a loopback address; without [[api_keys]] Herald only listens on loopback"
    ))
}

/// Descriptors kept back from HTTP connections.
pub(super) fn reserved_fds(pool_size: usize, transports: usize) -> u64 {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    BASE_FDS
        .saturating_add(
            FDS_PER_STORAGE_CONNECTION.saturating_mul(count(pool_size).saturating_add(1)),
        )
        .saturating_add(FDS_PER_TRANSPORT.saturating_mul(count(transports)))
}

/// The soft open-file limit (RLIMIT_NOFILE) this process runs under;
/// `u64::MAX` where there is none.
pub fn open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        limit.current.unwrap_or(u64::MAX)
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}

impl RawConfig {
    pub(super) fn validate(
        self,
        source: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, Vec<Problem>> {
        let mut problems = Problems::default();

        let listen_text = self
            .server
            .listen
            .clone()
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = resolve_listen(&listen_text).unwrap_or_else(|message| {
            problems.add("server.listen", message);
            vec![SocketAddr::from(([127, 0, 0, 1], 8080))]
        });
        let max_body_bytes = self.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            problems.add("server.max_body_bytes", "must be at least 1");
        }

        let url = self
            .storage
            .url
            .clone()
            .unwrap_or_else(|| DEFAULT_STORAGE_URL.to_owned());
        if !storage::is_postgres_url(&url) && storage::sqlite_path(&url).is_none() {
            problems.add(
                "storage.url",
                format!("`{url}` is neither postgres://... nor sqlite://<path>"),
            );
        }
        let pool_size = self.storage.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
        if pool_size == 0 {
            problems.add("storage.pool_size", "must be at least 1");
        }
        let enqueue_writers = self
            .storage
            .enqueue_writers
            .unwrap_or(storage::DEFAULT_ENQUEUE_WRITERS.min(pool_size.max(1)));
        if enqueue_writers == 0 {
            problems.add("storage.enqueue_writers", "must be at least 1");
        } else if pool_size > 0 && enqueue_writers > pool_size {
            problems.add(
                "storage.enqueue_writers",
                format!("must not exceed storage.pool_size ({pool_size})"),
            );
        }

        let api_keys = self.validate_api_keys(env, &mut problems);
        if api_keys.is_empty()
            && let Some(message) = non_loopback_listen(&listen_text, &listen)
        {
            problems.add("server.listen", message);
        }

        let priority = self.validate_priority(&mut problems);
        let compact_after_hours = self
            .analytics
            .compact_after_hours
            .unwrap_or(DEFAULT_COMPACT_AFTER_HOURS);
        let retention_days = self
            .analytics
            .retention_days
            .unwrap_or(DEFAULT_RETENTION_DAYS);
        if compact_after_hours == 0 {
            problems.add("analytics.compact_after_hours", "must be at least 1");
        }
        if retention_days == 0 {
            problems.add("analytics.retention_days", "must be at least 1");
        } else if retention_days.saturating_mul(24) <= compact_after_hours {
            problems.add(
                "analytics.retention_days",
                "must be longer than compact_after_hours",
            );
        }
        let engine = self.validate_engine(&mut problems);
        let suppression = self.validate_suppression(&mut problems);
        let unmatched_keep = match self.feedback.unmatched_keep_s {
            Some(0) => {
                problems.add("feedback.unmatched_keep_s", "must be at least 1");
                crate::storage::DEFAULT_UNMATCHED_KEEP
            }
            Some(s) => Duration::from_secs(s),
            None => crate::storage::DEFAULT_UNMATCHED_KEEP,
        };
        let feedback_max_body = match self.feedback.max_body_bytes {
            Some(0) => {
                problems.add("feedback.max_body_bytes", "must be at least 1");
                DEFAULT_FEEDBACK_MAX_BODY
            }
            Some(n) => n,
            None => DEFAULT_FEEDBACK_MAX_BODY,
        };
        let retention = self.validate_retention(&mut problems);
        let transports = self.validate_transports(env, &mut problems);
        let [head_timeout, body_timeout, keep_alive] = self.validate_server_timeouts(&mut problems);
        let max_connections = self.validate_max_connections(
            reserved_fds(pool_size, transports.len()),
            open_file_limit(),
            &mut problems,
        );
        let routes = self.validate_routes(&transports, &mut problems);
        let alerts = self.validate_alerts(&transports, &mut problems);

        if !problems.0.is_empty() {
            // A bad `[defaults]` key is found once per transport; say it once.
            let mut seen = std::collections::HashSet::new();
            problems.0.retain(|p| seen.insert(p.to_string()));
            return Err(problems.0);
        }
        let settings = Settings {
            source: source.to_owned(),
            server: ServerSettings {
                listen,
                max_body_bytes,
                shutdown_grace: Duration::from_millis(
                    self.server
                        .shutdown_grace_ms
                        .unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
                ),
                head_timeout,
                body_timeout,
                keep_alive,
                max_connections,
            },
            storage: StorageOptions {
                url,
                pool_size,
                enqueue_writers,
                priority_aging: priority.aging,
                rollups: true,
                suppression,
                unmatched_keep,
                nonce_keep: crate::storage::DEFAULT_NONCE_KEEP,
                retention: retention.clone(),
            },
            api_keys,
            transports,
            routes,
            priority,
            analytics: AnalyticsSettings {
                compact_after: Duration::from_secs(compact_after_hours.saturating_mul(3600)),
                retention: Duration::from_secs(retention_days.saturating_mul(86_400)),
            },
            retention,
            engine,
            alerts,
            feedback: super::FeedbackRoute {
                max_body_bytes: feedback_max_body,
            },
        };
        // Notices are ordinary messages: one that enqueue validation would
        // refuse (a bad address, say) is a config problem, found now.
        if let Some(err) = crate::alerts::check_notices(&settings) {
            let key = match err.field.split(['.', '[']).nth(1) {
                Some(field @ ("from" | "to")) => format!("alerts.{field}"),
                _ => "alerts.channel".to_owned(),
            };
            return Err(vec![Problem {
                key,
                message: format!("an alert notice would be refused: {}", err.message),
            }]);
        }
        Ok(settings)
    }

    fn validate_alerts(
        &self,
        transports: &BTreeMap<String, TransportSettings>,
        problems: &mut Problems,
    ) -> Option<AlertSettings> {
        let raw = self.alerts.as_ref()?;
        let known = |name: &str| self.transports.contains_key(name);
        let transport = match &raw.transport {
            None => {
                problems.add(
                    "alerts.transport",
                    "name the transport alert notices go through",
                );
                None
            }
            Some(name) if !known(name) => {
                problems.add("alerts.transport", format!("no transport named `{name}`"));
                None
            }
            Some(name) => transports.get(name), // None: its own problem is reported
        };
        let channel = match (&raw.channel, transport) {
            (Some(text), _) => match text.parse::<Channel>() {
                Ok(channel) => Some(channel),
                Err(_) => {
                    problems.add(
                        "alerts.channel",
                        "not a channel; expected one of email, sms, chat, push, webhook",
                    );
                    None
                }
            },
            (None, Some(t)) if t.channels.contains(&Channel::Webhook) => Some(Channel::Webhook),
            (None, Some(_)) => Some(Channel::Email),
            (None, None) => None,
        };
        if let (Some(t), Some(channel)) = (transport, channel)
            && !t.channels.contains(&channel)
        {
            problems.add(
                "alerts.channel",
                format!(
                    "transport `{}` ({}) cannot deliver `{channel}` messages",
                    t.name,
                    t.kind.name()
                ),
            );
        }
        let to = raw.to.clone().unwrap_or_default();
        match channel {
            Some(Channel::Email) => {
                if raw.from.is_none() {
                    problems.add("alerts.from", "email notices need a sender");
                }
                if to.is_empty() {
                    problems.add("alerts.to", "email notices need at least one recipient");
                }
            }
            Some(Channel::Sms) if to.len() != 1 => {
                problems.add("alerts.to", "SMS notices go to exactly one number");
            }
            Some(Channel::Sms) => {}
            Some(channel) => {
                for (key, set) in [("from", raw.from.is_some()), ("to", raw.to.is_some())] {
                    if set {
                        problems.add(
                            format!("alerts.{key}"),
                            format!("`{channel}` notices carry no `{key}`"),
                        );
                    }
                }
            }
            None => {}
        }
        let evaluate_every_s = raw
            .evaluate_every_s
            .unwrap_or(DEFAULT_ALERT_EVALUATE_EVERY_S);
        if evaluate_every_s == 0 {
            problems.add("alerts.evaluate_every_s", "must be at least 1");
        }
        let default_cooldown = raw.cooldown_s.unwrap_or(DEFAULT_ALERT_COOLDOWN_S);

        let mut rules = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, rule) in raw.rules.iter().enumerate() {
            let prefix = format!("alerts.rules[{i}]");
            let before = problems.0.len();
            let name = rule.name.clone().unwrap_or_default();
            if name.is_empty()
                || name.len() > MAX_ALERT_RULE_NAME
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                problems.add(
                    format!("{prefix}.name"),
                    format!("1 to {MAX_ALERT_RULE_NAME} letters, digits, '-' and '_'"),
                );
            } else if !names.insert(name.clone()) {
                problems.add(
                    format!("{prefix}.name"),
                    format!("another rule is named `{name}`"),
                );
            }
            let kinds = AlertKind::ALL.map(AlertKind::as_str).join(", ");
            let kind = match rule.kind.as_deref() {
                None => {
                    problems.add(format!("{prefix}.kind"), format!("give one of {kinds}"));
                    None
                }
                Some(text) => AlertKind::parse(text).or_else(|| {
                    problems.add(
                        format!("{prefix}.kind"),
                        format!("unknown rule kind `{text}`; expected one of {kinds}"),
                    );
                    None
                }),
            };
            if let Some(name) = rule.transport.as_deref().filter(|n| !known(n)) {
                problems.add(
                    format!("{prefix}.transport"),
                    format!("no transport named `{name}`"),
                );
            }
            match (rule.threshold, kind) {
                (None, _) => {
                    problems.add(format!("{prefix}.threshold"), "a rule needs a threshold")
                }
                (Some(t), Some(kind)) if kind.is_rate() && !(0.0..1.0).contains(&t) => problems
                    .add(
                        format!("{prefix}.threshold"),
                        format!(
                            "a `{}` threshold is a fraction from 0 to below 1, got {t}",
                            kind.as_str()
                        ),
                    ),
                (Some(t), Some(AlertKind::DeadLetters)) if !(t.is_finite() && t >= 1.0) => problems
                    .add(
                        format!("{prefix}.threshold"),
                        format!("must be a number of at least 1, got {t}"),
                    ),
                (Some(t), _) if !(t.is_finite() && t >= 0.0) => problems.add(
                    format!("{prefix}.threshold"),
                    format!("must be a number of at least 0, got {t}"),
                ),
                _ => {}
            }
            match (kind, rule.window_s) {
                (Some(kind), None) if kind.has_window() => problems.add(
                    format!("{prefix}.window_s"),
                    format!("a `{}` rule needs a window", kind.as_str()),
                ),
                (Some(kind), Some(_)) if !kind.has_window() => problems.add(
                    format!("{prefix}.window_s"),
                    format!("not a key of a `{}` rule", kind.as_str()),
                ),
                (_, Some(w))
                    if !(MIN_ALERT_WINDOW_S..=crate::analytics::MAX_WINDOW.as_secs())
                        .contains(&w) =>
                {
                    problems.add(
                        format!("{prefix}.window_s"),
                        format!(
                            "must be {MIN_ALERT_WINDOW_S} to {} seconds",
                            crate::analytics::MAX_WINDOW.as_secs()
                        ),
                    )
                }
                _ => {}
            }
            let action = match rule.action.as_deref() {
                None => Some(AlertAction::Notify),
                Some(text) => AlertAction::parse(text).or_else(|| {
                    problems.add(
                        format!("{prefix}.action"),
                        format!("unknown action `{text}`; expected notify or pause"),
                    );
                    None
                }),
            };
            // Every rule watches transports (one named, or each in turn),
            // so any may pause; but pausing the notices' own transport
            // would silence the incident that paused it.
            if action == Some(AlertAction::Pause)
                && rule.transport.is_some()
                && rule.transport == raw.transport
            {
                problems.add(
                    format!("{prefix}.action"),
                    "a `pause` rule cannot watch the transport alert notices go through",
                );
            }
            if let (Some(kind), Some(threshold), Some(action), true) =
                (kind, rule.threshold, action, problems.0.len() == before)
            {
                rules.push(AlertRule {
                    name,
                    kind,
                    transport: rule.transport.clone(),
                    threshold,
                    window: rule.window_s.map(Duration::from_secs),
                    cooldown: Duration::from_secs(rule.cooldown_s.unwrap_or(default_cooldown)),
                    action,
                });
            }
        }
        Some(AlertSettings {
            transport: transport?.name.clone(),
            channel: channel?,
            from: raw.from.clone(),
            to,
            evaluate_every: Duration::from_secs(evaluate_every_s),
            rules,
        })
    }

    fn validate_api_keys(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> Vec<ApiKey> {
        let mut keys = Vec::new();
        for (i, raw) in self.api_keys.iter().enumerate() {
            let prefix = format!("api_keys[{i}]");
            let key = match (&raw.key, &raw.key_env) {
                (Some(key), None) => Some(key.clone()),
                (None, Some(var)) => match env(var).filter(|v| !v.is_empty()) {
                    Some(value) => Some(value),
                    None => {
                        problems.add(
                            format!("{prefix}.key_env"),
                            format!("environment variable `{var}` is not set"),
                        );
                        None
                    }
                },
                _ => {
                    problems.add(&prefix, "set exactly one of `key` and `key_env`");
                    None
                }
            };
            if raw.roles.is_empty() {
                problems.add(
                    format!("{prefix}.roles"),
                    "give at least one of enqueue, read, admin",
                );
            }
            if let Some(key) = key {
                if key.len() < MIN_API_KEY_LEN {
                    problems.add(
                        &prefix,
                        format!("the key is shorter than {MIN_API_KEY_LEN} characters"),
                    );
                } else {
                    keys.push(ApiKey {
                        key: Secret::new(key),
                        roles: raw.roles.clone(),
                    });
                }
            }
        }
        keys
    }

    /// `[server]`'s head, body and keep-alive timeouts, in that order. None
    /// may be 0: actix-web reads 0 as "no timeout", which is the hoarding
    /// these limits exist to stop.
    fn validate_server_timeouts(&self, problems: &mut Problems) -> [Duration; 3] {
        let s = &self.server;
        [
            (
                "head_timeout_ms",
                s.head_timeout_ms,
                DEFAULT_HEAD_TIMEOUT_MS,
            ),
            (
                "body_timeout_ms",
                s.body_timeout_ms,
                DEFAULT_BODY_TIMEOUT_MS,
            ),
            ("keep_alive_ms", s.keep_alive_ms, DEFAULT_KEEP_ALIVE_MS),
        ]
        .map(|(key, value, default)| {
            let ms = value.unwrap_or(default);
            if ms == 0 {
                problems.add(format!("server.{key}"), "must be at least 1");
            }
            Duration::from_millis(ms.max(1))
        })
    }

    /// `server.max_connections`: at most the open-file limit less
    /// `reserved` descriptors, so that a flood of connections cannot take
    /// the descriptors storage, transports and health checks need.
    fn validate_max_connections(
        &self,
        reserved: u64,
        open_file_limit: u64,
        problems: &mut Problems,
    ) -> NonZeroUsize {
        let room = open_file_limit.saturating_sub(reserved);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        let limit_text = || {
            format!(
                "the open-file limit (RLIMIT_NOFILE, `ulimit -n`) is {open_file_limit}, \
                 and {reserved} descriptors are kept for storage, transports and the process"
            )
        };
        let chosen = match self.server.max_connections {
            Some(0) => {
                problems.add("server.max_connections", "must be at least 1");
                1
            }
            Some(n) if n > room => {
                problems.add(
                    "server.max_connections",
                    format!("must be at most {room}: {}", limit_text()),
                );
                n
            }
            Some(n) => n,
            None if room == 0 => {
                problems.add(
                    "server.max_connections",
                    format!("no room for connections: {}; raise the limit", limit_text()),
                );
                1
            }
            None => room,
        };
        NonZeroUsize::new(chosen).unwrap_or(NonZeroUsize::MIN)
    }

    fn validate_suppression(&self, problems: &mut Problems) -> crate::storage::SuppressionPolicy {
        let raw = &self.suppression;
        let mut policy = crate::storage::SuppressionPolicy::default();
        match raw.scope.as_deref() {
            None | Some("global") => {}
            Some("transport") => policy.per_transport = true,
            Some(other) => problems.add(
                "suppression.scope",
                format!("`{other}` is neither `global` nor `transport`"),
            ),
        }
        policy.hard_bounce = raw.hard_bounce.unwrap_or(policy.hard_bounce);
        policy.complaint = raw.complaint.unwrap_or(policy.complaint);
        policy.unsubscribe = raw.unsubscribe.unwrap_or(policy.unsubscribe);
        policy.recipient_gone = raw.recipient_gone.unwrap_or(policy.recipient_gone);
        policy.soft_bounce_limit = raw.soft_bounce_limit.unwrap_or(policy.soft_bounce_limit);
        match raw.soft_bounce_window_s {
            Some(0) => problems.add("suppression.soft_bounce_window_s", "must be at least 1"),
            Some(s) => policy.soft_bounce_window = Duration::from_secs(s),
            None => {}
        }
        policy.expire_after = raw
            .expire_after_s
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        policy
    }

    fn validate_engine(&self, problems: &mut Problems) -> crate::engine::EngineOptions {
        let defaults = crate::engine::EngineOptions::default();
        let mut positive =
            |key: &str, value: Option<u64>, unit: fn(u64) -> Duration, default| match value {
                Some(0) => {
                    problems.add(format!("engine.{key}"), "must be at least 1");
                    default
                }
                Some(n) => unit(n),
                None => default,
            };
        let e = &self.engine;
        crate::engine::EngineOptions {
            poll_interval: positive(
                "poll_interval_ms",
                e.poll_interval_ms,
                Duration::from_millis,
                defaults.poll_interval,
            ),
            recovery_interval: positive(
                "recovery_interval_ms",
                e.recovery_interval_ms,
                Duration::from_millis,
                defaults.recovery_interval,
            ),
            purge_interval: positive(
                "purge_interval_s",
                e.purge_interval_s,
                Duration::from_secs,
                defaults.purge_interval,
            ),
            delivery_timeout: positive(
                "delivery_timeout_ms",
                e.delivery_timeout_ms,
                Duration::from_millis,
                defaults.delivery_timeout,
            ),
            heartbeat: match e.heartbeat_ms {
                Some(ms) if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&ms) => {
                    problems.add(
                        "engine.heartbeat_ms",
                        format!("must be between {MIN_HEARTBEAT_MS} and {MAX_HEARTBEAT_MS}"),
                    );
                    defaults.heartbeat
                }
                Some(ms) => Duration::from_millis(ms),
                None => defaults.heartbeat,
            },
            node_id: match &e.node_id {
                Some(id) if !valid_node_id(id) => {
                    problems.add(
                        "engine.node_id",
                        "must be 1 to 200 visible ASCII characters (no spaces)",
                    );
                    None
                }
                other => other.clone(),
            },
            address: None,
        }
    }

    fn validate_priority(&self, problems: &mut Problems) -> PrioritySettings {
        let default = Priority::new(self.priority.default.unwrap_or(DEFAULT_PRIORITY))
            .unwrap_or_else(|| {
                problems.add("priority.default", "must be 0 to 9");
                Priority::default()
            });
        let mut categories = BTreeMap::new();
        for (category, value) in &self.priority.categories {
            // A name enqueue would refuse could never match a message.
            if let Err(rule) = check_category(category) {
                problems.add(
                    format!("priority.categories.{category}"),
                    format!("not a category name: {rule}"),
                );
                continue;
            }
            match Priority::new(*value) {
                Some(p) => {
                    categories.insert(category.clone(), p);
                }
                None => problems.add(format!("priority.categories.{category}"), "must be 0 to 9"),
            }
        }
        let aging = match self.priority.aging_s {
            None => DEFAULT_PRIORITY_AGING,
            Some(0) => {
                problems.add("priority.aging_s", "must be at least 1");
                DEFAULT_PRIORITY_AGING
            }
            Some(s) => Duration::from_secs(s),
        };
        PrioritySettings {
            default,
            categories,
            aging,
        }
    }

    /// `[retention]` with its overrides, resolved key by key into one
    /// rule per level that sets anything, most specific first.
    fn validate_retention(&self, problems: &mut Problems) -> Retention {
        let refuse_nested = |level: &RawRetention, prefix: &str, problems: &mut Problems| {
            if level.categories.is_some() {
                problems.add(
                    format!("{prefix}.categories"),
                    "category overrides go under [retention.categories.<name>]",
                );
            }
        };
        let mut global = retention_keys(&self.retention, "retention", problems);
        fold_dead_alias(
            &mut global,
            &self.retention,
            self.defaults.dlq_max_age_s,
            "defaults.dlq_max_age_s",
            "retention.dead_days",
            problems,
        );

        let mut categories = Vec::new();
        for (name, level) in self.retention.categories.iter().flatten() {
            let prefix = format!("retention.categories.{name}");
            if let Err(rule) = check_category(name) {
                problems.add(&prefix, format!("not a category name: {rule}"));
            }
            refuse_nested(level, &prefix, problems);
            let keys = retention_keys(level, &prefix, problems);
            if keys != RetentionKeys::default() {
                categories.push((name, keys));
            }
        }

        let unset = RawRetention::default();
        let mut transports = Vec::new();
        for (name, raw) in &self.transports {
            let prefix = format!("transports.{name}.retention");
            let level = raw.retention.as_ref().unwrap_or(&unset);
            refuse_nested(level, &prefix, problems);
            let mut keys = retention_keys(level, &prefix, problems);
            fold_dead_alias(
                &mut keys,
                level,
                raw.dlq_max_age_s,
                &format!("transports.{name}.dlq_max_age_s"),
                &format!("{prefix}.dead_days"),
                problems,
            );
            if keys != RetentionKeys::default() {
                transports.push((name, keys));
            }
        }

        // A category's override alone would fall back to `[retention]`
        // for the keys it leaves unset, skipping the transport's: each
        // pair of a transport and a category that both override gets its
        // own rule, ahead of both.
        let rule = |transport: Option<&String>, category: Option<&String>, keys: RetentionKeys| {
            RetentionOverride {
                transport: transport.cloned(),
                category: category.cloned(),
                rule: keys.resolve(),
            }
        };
        let mut overrides = Vec::new();
        for (transport, transport_keys) in &transports {
            for (category, category_keys) in &categories {
                overrides.push(rule(
                    Some(transport),
                    Some(category),
                    category_keys.or(*transport_keys).or(global),
                ));
            }
        }
        for (category, keys) in &categories {
            overrides.push(rule(None, Some(category), keys.or(global)));
        }
        for (transport, keys) in &transports {
            overrides.push(rule(Some(transport), None, keys.or(global)));
        }
        Retention {
            default: global.resolve(),
            overrides,
        }
    }

    fn validate_transports(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> BTreeMap<String, TransportSettings> {
        if self.transports.is_empty() {
            problems.add("transports", "configure at least one transport");
        }
        let mut settings = BTreeMap::new();
        let mut groups = Vec::new();
        for (name, raw) in &self.transports {
            let prefix = format!("transports.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                problems.add(&prefix, "a transport name is letters, digits, '-' and '_'");
            }
            let Some(spec) = transports::kind(&raw.kind) else {
                let kinds = KINDS.iter().map(|k| k.name).collect::<Vec<_>>();
                problems.add(
                    format!("{prefix}.kind"),
                    format!(
                        "unknown transport kind `{}`; expected one of {}",
                        raw.kind,
                        kinds.join(", ")
                    ),
                );
                continue;
            };
            let mut keys = raw.keys.clone();
            keys.retain(|key, _| {
                let known = spec.keys.contains(&key);
                if !known {
                    problems.add(
                        format!("{prefix}.{key}"),
                        format!("not a key of a `{}` transport", spec.name),
                    );
                }
                known
            });
            let delivery = validate_tuning(&raw.tuning(&self.defaults), raw, &prefix, problems);
            let kind = (spec.configure)(&mut KindTable {
                prefix: &prefix,
                keys,
                env,
                problems,
            });
            if kind.as_ref().is_some_and(|k| !k.members().is_empty()) {
                groups.push(name.clone());
            }
            let feedback = kind
                .as_ref()
                .and_then(|kind| validate_feedback(raw, kind.as_ref(), &prefix, env, problems));
            let channels = spec.channels.to_vec();
            if let (Some(kind), Some(delivery), Some(feedback)) = (kind, delivery, feedback) {
                settings.insert(
                    name.clone(),
                    TransportSettings {
                        name: name.clone(),
                        kind,
                        delivery,
                        channels,
                        native: spec.native.to_vec(),
                        feedback,
                    },
                );
            }
        }
        // Groups deliver what every member delivers; members are plain
        // transports, so a group cannot contain itself or another group.
        for group in groups {
            let Some(members) = settings.get(&group).map(|t| t.kind.members().to_vec()) else {
                continue;
            };
            let mut channels: Option<Vec<Channel>> = None;
            let mut native: Option<Vec<Channel>> = None;
            for (i, member) in members.iter().enumerate() {
                let key = format!("transports.{group}.members[{i}]");
                match settings.get(member) {
                    None if self.transports.contains_key(member) => {} // already reported
                    None => problems.add(key, format!("no transport named `{member}`")),
                    Some(m) if !m.kind.members().is_empty() || member == &group => problems.add(
                        key,
                        format!("`{member}` is a group; members must be plain transports"),
                    ),
                    Some(m) => {
                        // A channel only some members take in the
                        // provider shape is one the group cannot carry:
                        // no payload would suit every member.
                        let agreed = |ch: &Channel, native: &[Channel]| {
                            native.contains(ch) == m.native.contains(ch)
                        };
                        channels = Some(match (channels, &native) {
                            (None, _) => m.channels.clone(),
                            (Some(c), Some(n)) => c
                                .into_iter()
                                .filter(|ch| m.channels.contains(ch) && agreed(ch, n))
                                .collect(),
                            (Some(c), None) => c,
                        });
                        native.get_or_insert_with(|| m.native.clone());
                    }
                }
            }
            if let Some(group) = settings.get_mut(&group) {
                group.channels = channels.unwrap_or_default();
                group.native = native
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|ch| group.channels.contains(ch))
                    .collect();
            }
        }
        settings
    }

    fn validate_routes(
        &self,
        transports: &BTreeMap<String, TransportSettings>,
        problems: &mut Problems,
    ) -> BTreeMap<Channel, String> {
        let mut routes = BTreeMap::new();
        for (channel, transport) in &self.routes {
            let key = format!("routes.{channel}");
            let Ok(channel) = channel.parse::<Channel>() else {
                problems.add(
                    key,
                    "not a channel; expected one of email, sms, chat, push, webhook",
                );
                continue;
            };
            match transports.get(transport) {
                Some(t) if t.channels.contains(&channel) => {
                    routes.insert(channel, transport.clone());
                }
                Some(t) => problems.add(
                    key,
                    format!(
                        "transport `{transport}` ({}) cannot deliver `{channel}` messages",
                        t.kind.name()
                    ),
                ),
                None if self.transports.contains_key(transport) => {} // its own problem is reported
                None => problems.add(key, format!("no transport named `{transport}`")),
            }
        }
        routes
    }
}

/// A transport's feedback keys: the Standard Webhooks secret, the
/// tolerance, and the kind's own scheme as its keys configured it.
fn validate_feedback(
    raw: &RawTransport,
    kind: &dyn TransportKind,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<FeedbackSettings> {
    let tolerance = match raw.feedback_tolerance_s {
        Some(0) => {
            problems.add(
                format!("{prefix}.feedback_tolerance_s"),
                "must be at least 1",
            );
            None
        }
        Some(secs) => Some(Duration::from_secs(secs)),
        None => Some(feedback::DEFAULT_TOLERANCE),
    };
    let standard = match raw.feedback_secret_env.as_deref() {
        None => Some(None),
        Some(var) => {
            let key = format!("{prefix}.feedback_secret_env");
            match env(var).filter(|v| !v.is_empty()) {
                None => {
                    problems.add(key, format!("environment variable `{var}` is not set"));
                    None
                }
                Some(secret) => match StandardWebhooks::from_secret(&secret) {
                    Ok(source) => Some(Some(Arc::new(source) as Arc<dyn FeedbackSource>)),
                    Err(message) => {
                        problems.add(key, format!("`{var}`: {message}"));
                        None
                    }
                },
            }
        }
    };
    Some(FeedbackSettings {
        standard: standard?,
        native: kind.feedback(),
        tolerance: tolerance?,
    })
}

/// The retention keys one level sets: per key, `None` where the level
/// leaves it to the level above, `Some(None)` to keep for ever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RetentionKeys {
    sent: Option<Option<Duration>>,
    dead: Option<Option<Duration>>,
    cancelled: Option<Option<Duration>>,
    payload_after_sent: Option<Option<Duration>>,
}

impl RetentionKeys {
    /// These keys, those unset taken from `above`.
    fn or(self, above: RetentionKeys) -> RetentionKeys {
        RetentionKeys {
            sent: self.sent.or(above.sent),
            dead: self.dead.or(above.dead),
            cancelled: self.cancelled.or(above.cancelled),
            payload_after_sent: self.payload_after_sent.or(above.payload_after_sent),
        }
    }

    /// Every key, those still unset at their defaults.
    fn resolve(self) -> RetentionRule {
        let days = |n: u64| Some(Duration::from_secs(n * 86_400));
        RetentionRule {
            sent: self.sent.unwrap_or(days(DEFAULT_SENT_RETENTION_DAYS)),
            dead: self.dead.unwrap_or(days(DEFAULT_DEAD_RETENTION_DAYS)),
            cancelled: self
                .cancelled
                .unwrap_or(days(DEFAULT_CANCELLED_RETENTION_DAYS)),
            payload_after_sent: self.payload_after_sent.flatten(),
        }
    }
}

/// Checks the keys of one retention table, `prefix` its key path.
fn retention_keys(level: &RawRetention, prefix: &str, problems: &mut Problems) -> RetentionKeys {
    let mut days = |key: &str, value: Option<u64>| match value? {
        0 => Some(None),
        n if n > MAX_RETENTION_DAYS => {
            problems.add(
                format!("{prefix}.{key}"),
                format!("must be at most {MAX_RETENTION_DAYS} days; 0 keeps for ever"),
            );
            None
        }
        n => Some(Some(Duration::from_secs(n * 86_400))),
    };
    let sent = days("sent_days", level.sent_days);
    let dead = days("dead_days", level.dead_days);
    let cancelled = days("cancelled_days", level.cancelled_days);
    // 0 is refused rather than read as "at once": beside the `*_days`
    // keys, where 0 keeps for ever, either reading would surprise someone,
    // and one of the surprises deletes every payload.
    let payload_after_sent = match level.payload_after_sent_s {
        None => None,
        Some(0) => {
            problems.add(
                format!("{prefix}.payload_after_sent_s"),
                "must be at least 1 second; leave it unset to keep payloads",
            );
            None
        }
        Some(s) if s > MAX_RETENTION_S => {
            problems.add(
                format!("{prefix}.payload_after_sent_s"),
                format!("must be at most {MAX_RETENTION_S} seconds ({MAX_RETENTION_DAYS} days)"),
            );
            None
        }
        Some(s) => Some(Some(Duration::from_secs(s))),
    };
    RetentionKeys {
        sent,
        dead,
        cancelled,
        payload_after_sent,
    }
}

/// Takes a level's deprecated `dlq_max_age_s` (seconds) as its dead
/// retention. It keeps its old rule that 0 is refused, so that an old
/// config never comes to mean "keep for ever".
fn fold_dead_alias(
    keys: &mut RetentionKeys,
    level: &RawRetention,
    dlq_max_age_s: Option<u64>,
    alias_key: &str,
    dead_key: &str,
    problems: &mut Problems,
) {
    let Some(seconds) = dlq_max_age_s else {
        return;
    };
    if level.dead_days.is_some() {
        problems.add(
            alias_key,
            format!("deprecated alias of `{dead_key}`, which is also set; keep only `{dead_key}`"),
        );
    } else if seconds == 0 {
        problems.add(alias_key, "must be at least 1");
    } else if seconds > MAX_RETENTION_S {
        problems.add(
            alias_key,
            format!("must be at most {MAX_RETENTION_S} seconds ({MAX_RETENTION_DAYS} days)"),
        );
    } else {
        keys.dead = Some(Some(Duration::from_secs(seconds)));
    }
}

/// Resolves tuning with defaults and checks each value; a problem names
/// the transport's key if it set it, else the `[defaults]` key.
fn validate_tuning(
    tuning: &Tuning,
    raw: &RawTransport,
    prefix: &str,
    problems: &mut Problems,
) -> Option<DeliverySettings> {
    let before = problems.0.len();
    let key = |name: &str| {
        if raw.sets(name) {
            format!("{prefix}.{name}")
        } else {
            format!("defaults.{name}")
        }
    };
    let mut positive_u32 = |name: &str, value: Option<u32>, default: u32| -> NonZeroU32 {
        NonZeroU32::new(value.unwrap_or(default)).unwrap_or_else(|| {
            problems.add(key(name), "must be at least 1");
            NonZeroU32::MIN
        })
    };
    let rate_limit = positive_u32("rate_limit", tuning.rate_limit, DEFAULT_RATE_LIMIT);
    let burst_limit = positive_u32("burst_limit", tuning.burst_limit, DEFAULT_BURST_LIMIT);
    let concurrency = positive_u32("concurrency", tuning.concurrency, DEFAULT_CONCURRENCY);
    let batch_size = positive_u32("batch_size", tuning.batch_size, DEFAULT_BATCH_SIZE);
    let circuit_failure_threshold = positive_u32(
        "circuit_failure_threshold",
        tuning.circuit_failure_threshold,
        DEFAULT_CIRCUIT_FAILURE_THRESHOLD,
    );
    let mut millis = |name: &str, value: Option<u64>, default: u64, min: u64| -> Duration {
        let value = value.unwrap_or(default);
        if value < min {
            problems.add(key(name), format!("must be at least {min}"));
        }
        Duration::from_millis(value)
    };
    let lease = millis("lease_ms", tuning.lease_ms, DEFAULT_LEASE_MS, MIN_LEASE_MS);
    let retry_delay = millis(
        "retry_delay_ms",
        tuning.retry_delay_ms,
        DEFAULT_RETRY_DELAY_MS,
        1,
    );
    let max_retry_delay = millis(
        "max_retry_delay_ms",
        tuning.max_retry_delay_ms,
        DEFAULT_MAX_RETRY_DELAY_MS,
        1,
    );
    let circuit_open = millis(
        "circuit_open_ms",
        tuning.circuit_open_ms,
        DEFAULT_CIRCUIT_OPEN_MS,
        1,
    );
    if max_retry_delay < retry_delay {
        problems.add(key("max_retry_delay_ms"), "must be at least retry_delay_ms");
    }
    if let Some(cost) = tuning
        .cost_per_message
        .filter(|c| !(c.is_finite() && *c >= 0.0))
    {
        problems.add(
            key("cost_per_message"),
            format!("must be a number of at least 0, got {cost}"),
        );
    }
    let retry_multiplier = tuning.retry_multiplier.unwrap_or(DEFAULT_RETRY_MULTIPLIER);
    if !(retry_multiplier.is_finite() && retry_multiplier >= 1.0) {
        problems.add(key("retry_multiplier"), "must be a number of at least 1.0");
    }
    let as_usize = |n: NonZeroU32| NonZeroUsize::new(n.get() as usize).unwrap_or(NonZeroUsize::MIN);
    if problems.0.len() > before {
        return None;
    }
    Some(DeliverySettings {
        rate_limit,
        burst_limit,
        concurrency: as_usize(concurrency),
        batch_size: as_usize(batch_size),
        prefetch_count: tuning.prefetch_count.unwrap_or(DEFAULT_PREFETCH_COUNT) as usize,
        lease,
        max_retries: tuning.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        retry_delay,
        retry_multiplier,
        max_retry_delay,
        circuit_failure_threshold,
        circuit_open,
        cost_per_message: tuning.cost_per_message,
    })
}
