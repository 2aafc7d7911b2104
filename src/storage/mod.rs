//! Durable state: messages, their events and per-transport pause state.
//!
//! One [`Storage`] trait, two backends that pass one conformance suite
//! (`tests/storage`): PostgreSQL for production and several nodes, SQLite
//! as the zero-set-up embedded default. No backend type crosses the trait.
//! Every operation that depends on time takes `now`, so the caller's
//! [`Clock`](crate::time::Clock) is the only source of time.
//!
//! Ordering of claims: highest effective priority first, where a message's
//! effective priority rises by one level per `priority_aging` of waiting.
//! Stored as `effective_at = available_at - priority * priority_aging`, so
//! claiming is an index range scan and low priorities cannot starve.

mod group_commit;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use group_commit::GroupCommit;
pub use postgres::PostgresStorage;
pub use sqlite::SqliteStorage;

use crate::domain::{
    ClaimToken, Fingerprint, Message, MessageWithEvents, NewMessage, Priority, Stamp, Status,
};

/// Default time a waiting message needs to gain one priority level.
pub const DEFAULT_PRIORITY_AGING: Duration = Duration::from_secs(60);
/// Most messages one claim, listing or bulk operation touches.
pub const MAX_BATCH: usize = 1000;

/// How a backend is opened.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// `postgres://...` or `sqlite://path` (also `sqlite:path`).
    pub url: String,
    /// PostgreSQL: pooled connections. SQLite: reader connections (there is
    /// always exactly one writer).
    pub pool_size: usize,
    /// Waiting this long raises a message's effective priority by one.
    pub priority_aging: Duration,
}

impl StorageOptions {
    pub fn new(url: impl Into<String>) -> Self {
        StorageOptions {
            url: url.into(),
            pool_size: 4,
            priority_aging: DEFAULT_PRIORITY_AGING,
        }
    }
}

/// Opens the backend the URL names. Does not migrate: call
/// [`Storage::migrate`].
pub async fn open(options: &StorageOptions) -> Result<Arc<dyn Storage>, StorageError> {
    if is_postgres_url(&options.url) {
        Ok(Arc::new(PostgresStorage::connect(options).await?))
    } else if let Some(path) = sqlite_path(&options.url) {
        Ok(Arc::new(SqliteStorage::open(path, options).await?))
    } else {
        Err(StorageError::Config(format!(
            "storage url `{}` is neither postgres://... nor sqlite://...",
            options.url
        )))
    }
}

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The file path of a `sqlite://` URL.
pub fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .filter(|path| !path.is_empty())
}

/// The result of enqueueing one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Enqueued {
    pub id: Stamp,
    pub status: Status,
    pub fingerprint: Fingerprint,
    /// False when the idempotency key matched an existing message, which is
    /// what `id`, `status` and `fingerprint` then describe.
    #[serde(skip)]
    pub created: bool,
}

/// What became of one delivery attempt, reported under the claim token.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: Stamp,
    pub claim_token: ClaimToken,
    /// The transport that made the attempt: for a group, the member.
    pub transport: String,
    pub duration_ms: Option<u64>,
    /// How long the message waited to be claimed for this attempt
    /// (available_at -> claimed), for the wait-time analytics.
    pub wait_ms: Option<u64>,
    /// The attempt number this outcome ends (the claimed message's
    /// `attempts`), for the attempts distribution.
    pub attempt: u32,
    /// For a failure: its class (`timeout`, `connection`, `rejected`,
    /// `permanent`, `transient`), for the failure analytics.
    pub error_class: Option<String>,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    Sent,
    /// The attempt failed. With `retry_at` the message is queued again for
    /// then, unless it has used all its attempts; without, the failure is
    /// permanent and the message is dead-lettered at once.
    Failed {
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// Claimed but never attempted (shutdown, breaker opened, paused): the
    /// claim is handed back and costs the message no attempt.
    Released {
        reason: String,
    },
}

/// What `record_outcomes` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// Each applied outcome with the status it left the message in.
    pub applied: Vec<(Stamp, Status)>,
    /// Outcomes refused because the claim token was no longer current.
    pub stale: Vec<Stamp>,
}

/// Filters for listing messages; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageFilter {
    pub status: Option<Status>,
    pub transport: Option<String>,
    pub channel: Option<crate::domain::Channel>,
    pub fingerprint: Option<Fingerprint>,
}

/// One page of a listing, newest first. `after` is the last id of the
/// previous page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageRequest {
    pub after: Option<Stamp>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Message>,
    /// The cursor of the next page; `None` on the last page.
    pub next: Option<Stamp>,
}

/// Upper bounds, in ms, of the cumulative latency buckets of
/// [`MinuteMetrics::latency_le`] (`le_10` ... `le_10000` in the table).
pub const LATENCY_BUCKETS_MS: [u64; 9] = [10, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Delivery counts of one transport in one minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MinuteMetrics {
    pub minute: DateTime<Utc>,
    /// The transport that made the attempts (for a group, the member).
    pub transport: String,
    pub sent: u64,
    /// Failed attempts, whatever came next.
    pub failed: u64,
    /// Failed attempts that were scheduled again.
    pub retried: u64,
    /// Failed attempts that dead-lettered the message.
    pub dead: u64,
    /// Claims handed back unattempted (paused, breaker open, shutdown).
    pub deferred: u64,
    pub latency_count: u64,
    pub latency_sum_ms: u64,
    pub latency_max_ms: u64,
    /// Attempts of at most `LATENCY_BUCKETS_MS[i]` ms.
    pub latency_le: [u64; 9],
    /// Attempts whose queue wait (available -> claimed) is known.
    pub wait_count: u64,
    pub wait_sum_ms: u64,
    pub wait_max_ms: u64,
    /// Messages sent on a later attempt, after at least one failure.
    pub sent_after_retry: u64,
    /// Finished messages (sent or dead) by attempts taken: 1, 2, 3, 4+.
    pub finished: [u64; 4],
}

/// Failed attempts of one transport in one minute with one error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    pub minute: DateTime<Utc>,
    pub transport: String,
    pub class: String,
    /// The error with ids, numbers and addresses blanked, so that one
    /// cause is one row.
    pub error: String,
    pub failures: u64,
}

/// The dead letters of one transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterSummary {
    pub transport: String,
    pub count: u64,
    pub oldest: Option<DateTime<Utc>>,
}

impl MinuteMetrics {
    /// Adds another row's counts to this one (sums, and maxima for the
    /// `_max_ms` figures): how minutes roll up into longer spans.
    pub fn merge(&mut self, other: &MinuteMetrics) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.retried += other.retried;
        self.dead += other.dead;
        self.deferred += other.deferred;
        self.latency_count += other.latency_count;
        self.latency_sum_ms += other.latency_sum_ms;
        self.latency_max_ms = self.latency_max_ms.max(other.latency_max_ms);
        for (sum, add) in self.latency_le.iter_mut().zip(other.latency_le) {
            *sum += add;
        }
        self.wait_count += other.wait_count;
        self.wait_sum_ms += other.wait_sum_ms;
        self.wait_max_ms = self.wait_max_ms.max(other.wait_max_ms);
        self.sent_after_retry += other.sent_after_retry;
        for (sum, add) in self.finished.iter_mut().zip(other.finished) {
            *sum += add;
        }
    }

    fn count(&mut self, outcome: &Outcome, status: Status) {
        if matches!(status, Status::Sent | Status::Dead)
            && !matches!(outcome.kind, OutcomeKind::Released { .. })
        {
            let bucket = (outcome.attempt.max(1) as usize - 1).min(3);
            self.finished[bucket] += 1;
        }
        match &outcome.kind {
            OutcomeKind::Sent => {
                self.sent += 1;
                if outcome.attempt > 1 {
                    self.sent_after_retry += 1;
                }
            }
            OutcomeKind::Failed { .. } => {
                self.failed += 1;
                match status {
                    Status::Queued => self.retried += 1,
                    Status::Dead => self.dead += 1,
                    _ => {}
                }
            }
            OutcomeKind::Released { .. } => {
                self.deferred += 1;
                return;
            }
        }
        if let Some(ms) = outcome.wait_ms {
            self.wait_count += 1;
            self.wait_sum_ms += ms;
            self.wait_max_ms = self.wait_max_ms.max(ms);
        }
        if let Some(ms) = outcome.duration_ms {
            self.latency_count += 1;
            self.latency_sum_ms += ms;
            self.latency_max_ms = self.latency_max_ms.max(ms);
            for (bucket, bound) in self.latency_le.iter_mut().zip(LATENCY_BUCKETS_MS) {
                if ms <= bound {
                    *bucket += 1;
                }
            }
        }
    }
}

/// The `metrics_minutely` columns after the key, in [`MinuteMetrics`] order.
pub(crate) const METRIC_COLUMNS: [&str; 25] = [
    "sent",
    "failed",
    "retried",
    "dead",
    "deferred",
    "latency_count",
    "latency_sum_ms",
    "latency_max_ms",
    "le_10",
    "le_50",
    "le_100",
    "le_250",
    "le_500",
    "le_1000",
    "le_2500",
    "le_5000",
    "le_10000",
    "wait_count",
    "wait_sum_ms",
    "wait_max_ms",
    "sent_after_retry",
    "finished_1",
    "finished_2",
    "finished_3",
    "finished_4_plus",
];

/// `metrics_minutely`'s columns as aggregates for merging many rows into
/// one (sums, and maxima for the `_max_ms` columns), in column order.
pub(crate) fn metric_aggregates() -> String {
    METRIC_COLUMNS
        .iter()
        .map(|c| {
            if is_max_column(c) {
                format!("max({c})")
            } else {
                format!("sum({c})")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `DO UPDATE SET` list that adds a conflicting row into the stored
/// one; `max` is the dialect's two-argument maximum (`max` / `greatest`).
pub(crate) fn metric_merge_updates(stored: &str, max: &str) -> String {
    METRIC_COLUMNS
        .iter()
        .map(|c| {
            if is_max_column(c) {
                format!("{c} = {max}({stored}{c}, excluded.{c})")
            } else {
                format!("{c} = {stored}{c} + excluded.{c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Columns that keep a maximum rather than a sum when rows are merged.
pub(crate) fn is_max_column(column: &str) -> bool {
    column.ends_with("_max_ms")
}

/// A rollup's values in [`METRIC_COLUMNS`] order.
pub(crate) fn metric_values(m: &MinuteMetrics) -> [i64; 25] {
    let counters = [
        m.sent,
        m.failed,
        m.retried,
        m.dead,
        m.deferred,
        m.latency_count,
        m.latency_sum_ms,
        m.latency_max_ms,
    ];
    let wait = [
        m.wait_count,
        m.wait_sum_ms,
        m.wait_max_ms,
        m.sent_after_retry,
    ];
    let mut values = [0i64; 25];
    let all = counters
        .iter()
        .chain(&m.latency_le)
        .chain(&wait)
        .chain(&m.finished);
    for (slot, value) in values.iter_mut().zip(all) {
        *slot = i64::try_from(*value).unwrap_or(i64::MAX);
    }
    values
}

impl MinuteMetrics {
    /// The inverse of [`metric_values`], for rows read back.
    pub(crate) fn from_values(minute: DateTime<Utc>, transport: String, values: [i64; 25]) -> Self {
        let v = values.map(|x| x.max(0) as u64);
        let mut latency_le = [0u64; 9];
        latency_le.copy_from_slice(&v[8..17]);
        MinuteMetrics {
            minute,
            transport,
            sent: v[0],
            failed: v[1],
            retried: v[2],
            dead: v[3],
            deferred: v[4],
            latency_count: v[5],
            latency_sum_ms: v[6],
            latency_max_ms: v[7],
            latency_le,
            wait_count: v[17],
            wait_sum_ms: v[18],
            wait_max_ms: v[19],
            sent_after_retry: v[20],
            finished: [v[21], v[22], v[23], v[24]],
        }
    }
}

/// The rollups of the outcomes that were applied, by attempting transport,
/// in the minute of `now`, and their failures by class and normalised
/// error. Both backends write these in the same transaction as the
/// outcomes.
pub(crate) fn rollup(
    outcomes: &[Outcome],
    applied: &[(Stamp, Status)],
    now: DateTime<Utc>,
) -> (Vec<MinuteMetrics>, Vec<FailureCount>) {
    use chrono::DurationRound;
    let minute = now
        .duration_trunc(chrono::TimeDelta::minutes(1))
        .unwrap_or(now);
    let status_of: std::collections::HashMap<Stamp, Status> = applied.iter().copied().collect();
    let mut by_transport: std::collections::BTreeMap<&str, MinuteMetrics> = Default::default();
    let mut failures: std::collections::BTreeMap<(&str, String, String), u64> = Default::default();
    for outcome in outcomes {
        let Some(status) = status_of.get(&outcome.id) else {
            continue; // refused as stale: it happened, but not as this claim
        };
        by_transport
            .entry(outcome.transport.as_str())
            .or_insert_with(|| MinuteMetrics {
                minute,
                transport: outcome.transport.clone(),
                ..MinuteMetrics::default()
            })
            .count(outcome, *status);
        if let OutcomeKind::Failed { error, .. } = &outcome.kind {
            let class = outcome
                .error_class
                .clone()
                .unwrap_or_else(|| "transient".to_owned());
            *failures
                .entry((
                    outcome.transport.as_str(),
                    class,
                    crate::delivery::errors::normalise(error),
                ))
                .or_default() += 1;
        }
    }
    let failures = failures
        .into_iter()
        .map(|((transport, class, error), failures)| FailureCount {
            minute,
            transport: transport.to_owned(),
            class,
            error,
            failures,
        })
        .collect();
    (by_transport.into_values().collect(), failures)
}

/// Live messages of one transport at one priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DepthRow {
    pub transport: String,
    pub priority: Priority,
    pub queued: u64,
    pub processing: u64,
}

/// Persisted admin state of one transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransportState {
    pub name: String,
    pub paused: bool,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("message {0} not found")]
    NotFound(Stamp),
    /// The operation does not apply in the message's current status.
    #[error("message {id} is {status}: {reason}")]
    Conflict {
        id: Stamp,
        status: Status,
        reason: &'static str,
    },
    /// The database cannot be reached; callers may try again later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Backend(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// A stored value this version cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl StorageError {
    /// True when retrying later may succeed (connection lost, pool
    /// exhausted, database restarting).
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}

/// Tells in-process listeners (the transport actors) that a transport has
/// new claimable work, so they wake at once instead of waiting for their
/// next poll. Best effort: a missed signal only delays work until the poll.
#[derive(Debug, Clone)]
pub struct WorkSignal {
    sender: tokio::sync::broadcast::Sender<Arc<str>>,
}

impl Default for WorkSignal {
    fn default() -> Self {
        // Slow listeners lose old signals (they poll anyway), never block us.
        let (sender, _) = tokio::sync::broadcast::channel(1024);
        WorkSignal { sender }
    }
}

impl WorkSignal {
    /// A handle that does not keep the signal alive, for background relays
    /// that should stop when the storage owning the signal is dropped.
    pub fn downgrade(&self) -> WeakWorkSignal {
        WeakWorkSignal(self.sender.downgrade())
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.sender.subscribe()
    }

    /// Announces work on each named transport, once per name.
    pub fn notify<'a>(&self, transports: impl IntoIterator<Item = &'a str>) {
        let mut seen: Vec<&str> = Vec::new();
        for transport in transports {
            if !seen.contains(&transport) {
                seen.push(transport);
                // No receiver is not an error: nobody is delivering yet.
                let _ = self.sender.send(Arc::from(transport));
            }
        }
    }
}

/// See [`WorkSignal::downgrade`].
#[derive(Debug, Clone)]
pub struct WeakWorkSignal(tokio::sync::broadcast::WeakSender<Arc<str>>);

impl WeakWorkSignal {
    pub fn upgrade(&self) -> Option<WorkSignal> {
        self.0.upgrade().map(|sender| WorkSignal { sender })
    }
}

/// The durable queue. Implementations are cheap to clone behind an `Arc`
/// and safe to share between HTTP handlers and actors.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// Signals new claimable work (enqueue, replay, recovered leases),
    /// within this process and, on PostgreSQL, from other nodes.
    fn work_signal(&self) -> &WorkSignal;

    /// Whether concurrent single enqueues are better written together, in
    /// one transaction ([`GroupCommit`]): where commits are serialised, as
    /// through SQLite's one writer. Where concurrent commits already share
    /// a WAL flush, as on PostgreSQL, grouping would only make them wait.
    fn groups_enqueues(&self) -> bool {
        false
    }

    /// Applies the numbered migrations in `sql/<backend>/` not yet applied.
    async fn migrate(&self) -> Result<(), StorageError>;

    /// Succeeds when the database answers a query.
    async fn ping(&self) -> Result<(), StorageError>;

    /// Stores one message (event `queued`), or returns the existing one for
    /// a known idempotency key.
    async fn enqueue(
        &self,
        message: NewMessage,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, StorageError> {
        let mut results = self.enqueue_many(vec![message], now).await?;
        results
            .pop()
            .ok_or_else(|| StorageError::Backend("enqueue returned no result".into()))
    }

    /// Stores many messages in one transaction, results in input order. A
    /// key repeated within the batch maps to the first message with it.
    async fn enqueue_many(
        &self,
        messages: Vec<NewMessage>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Enqueued>, StorageError>;

    /// Claims up to `limit` due messages of `transport` (highest effective
    /// priority, then oldest), moving them to `processing` under a new claim
    /// token and a lease until `now + lease`; counts the attempt and writes
    /// `claimed` events. Safe against concurrent claimers.
    async fn claim_due(
        &self,
        transport: &str,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Message>, StorageError>;

    /// Extends the leases of claims still held (heartbeat). Returns how
    /// many were extended; a claim missing from the count was lost.
    async fn renew_leases(
        &self,
        claims: &[(Stamp, ClaimToken)],
        lease_until: DateTime<Utc>,
    ) -> Result<usize, StorageError>;

    /// Applies delivery outcomes, their events and their per-minute
    /// rollups in one transaction. Outcomes under a stale claim token are
    /// refused, not applied (nor counted).
    async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        now: DateTime<Utc>,
    ) -> Result<Recorded, StorageError>;

    /// Returns messages whose lease ran out to the queue (event
    /// `lease_expired`); one that has used all its attempts is
    /// dead-lettered instead, so a message that crashes its worker cannot
    /// loop forever. Returns the recovered ids.
    async fn recover_expired(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Stamp>, StorageError>;

    /// Cancels a queued or dead message (event `cancelled`).
    async fn cancel(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError>;

    /// Queues a dead message again under the same id with fresh attempts
    /// (event `replayed`).
    async fn replay(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError>;

    /// Replays up to `limit` dead messages, oldest first, optionally of one
    /// transport. Returns the replayed ids.
    async fn replay_dead(
        &self,
        transport: Option<&str>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Stamp>, StorageError>;

    /// Persists a transport's pause state.
    async fn set_paused(
        &self,
        transport: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<TransportState, StorageError>;

    /// Takes or renews this node's right to drive `transport` until
    /// `until`. Returns false while another node holds an unexpired lease.
    async fn hold_transport(
        &self,
        transport: &str,
        node: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError>;

    /// Gives up this node's lease on `transport` (on shutdown), so another
    /// node takes over at once.
    async fn release_transport(&self, transport: &str, node: &str) -> Result<(), StorageError>;

    /// Every transport with persisted state.
    async fn transport_states(&self) -> Result<Vec<TransportState>, StorageError>;

    /// A message with its events, oldest first.
    async fn get_message(&self, id: Stamp) -> Result<Option<MessageWithEvents>, StorageError>;

    /// Newest first, cursor-paged; stable across pages.
    async fn list_messages(
        &self,
        filter: &MessageFilter,
        page: PageRequest,
    ) -> Result<Page, StorageError>;

    /// Messages with this content, newest first.
    async fn find_by_fingerprint(
        &self,
        fingerprint: &Fingerprint,
        limit: usize,
    ) -> Result<Vec<Message>, StorageError> {
        let filter = MessageFilter {
            fingerprint: Some(fingerprint.clone()),
            ..MessageFilter::default()
        };
        let page = self
            .list_messages(&filter, PageRequest { after: None, limit })
            .await?;
        Ok(page.items)
    }

    /// Deletes dead letters (and their events) dead since before
    /// `dead_before`, of one transport or all. Returns how many.
    async fn purge_dead(
        &self,
        transport: Option<&str>,
        dead_before: DateTime<Utc>,
    ) -> Result<u64, StorageError>;

    /// Queued and processing counts by transport and priority.
    async fn queue_depth(&self) -> Result<Vec<DepthRow>, StorageError>;

    /// Failed attempts by minute, transport, class and normalised error,
    /// with `from <= minute < to`.
    async fn failure_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<FailureCount>, StorageError>;

    /// Merges minute rollups older than `compact_before` into one row per
    /// hour (at the hour's start), and deletes rollups older than
    /// `purge_before`. Returns (rows merged away, rows purged).
    async fn compact_rollups(
        &self,
        compact_before: DateTime<Utc>,
        purge_before: DateTime<Utc>,
    ) -> Result<(u64, u64), StorageError>;

    /// Dead letters by transport: how many and since when.
    async fn dead_letter_summary(&self) -> Result<Vec<DeadLetterSummary>, StorageError>;

    /// Per-minute rollups with `from <= minute < to`, oldest first.
    async fn minute_metrics(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteMetrics>, StorageError>;
}

/// `available_at - priority * aging`, the claim order key.
pub(crate) fn effective_at(
    available_at: DateTime<Utc>,
    priority: Priority,
    aging: Duration,
) -> DateTime<Utc> {
    let aging = chrono::Duration::from_std(aging).unwrap_or(chrono::Duration::zero());
    available_at - aging * i32::from(priority.get())
}

/// Clamps a requested page size into `1..=MAX_BATCH`.
pub(crate) fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_BATCH)
}
