//! Durable state: messages, their events, per-transport pause state,
//! alert incidents and replay jobs.
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

mod alerts;
mod feedback;
mod group_commit;
mod lifecycle;
mod postgres;
mod replay_jobs;
mod retention;
mod rollups;
mod sql;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use alerts::{Alert, AlertNotice, AlertState, NewAlert};
pub use feedback::{
    FeedbackBatch, FeedbackRecorded, StoredEvent, Suppression, SuppressionCursor,
    SuppressionFilter, SuppressionPolicy,
};
pub use group_commit::GroupCommit;
pub use postgres::PostgresStorage;
pub use replay_jobs::{ReplayJob, ReplayJobState};
pub use retention::{Expired, Retention, RetentionOverride, RetentionRule};
pub(crate) use rollups::truncate_minute;
pub use rollups::{
    BounceCount, FEEDBACK_COUNTS, FLOW_BUCKETS_MS, FailureCount, LATENCY_BUCKETS_MS, MinuteMetrics,
    RollupSeal, SEAL_LAG, Scope, SeriesCounts, Timing,
};
pub use sqlite::SqliteStorage;

use crate::domain::{
    Channel, ClaimToken, Fingerprint, Message, MessageWithEvents, NewMessage, Priority, Stamp,
    Status,
};
use crate::transports::RecipientGone;

/// Default time a waiting message needs to gain one priority level.
pub const DEFAULT_PRIORITY_AGING: Duration = Duration::from_secs(60);
/// Most messages one claim, listing or bulk operation touches.
pub const MAX_BATCH: usize = 1000;

/// The transport name [`Storage::probe_write`] writes under: not a
/// configurable name (those are letters, digits, `-` and `_`), so it never
/// meets a real transport's row.
pub(crate) const WRITE_PROBE: &str = "herald:write-probe";

/// `storage.enqueue_writers` when not set: with two, grouped writes keep
/// two PostgreSQL backends busy while the next group gathers (measured
/// best on two cores, BENCHMARKS.md), and leave the rest of the pool to
/// the engine.
pub const DEFAULT_ENQUEUE_WRITERS: usize = 2;

/// `[feedback] unmatched_keep_s` when not set: a day.
pub const DEFAULT_UNMATCHED_KEEP: Duration = Duration::from_secs(86_400);
/// How long nonces are kept when not set: an hour, well past any
/// signature tolerance.
pub const DEFAULT_NONCE_KEEP: Duration = Duration::from_secs(3_600);

/// How a backend is opened.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// `postgres://...` or `sqlite://path` (also `sqlite:path`).
    pub url: String,
    /// PostgreSQL: pooled connections. SQLite: reader connections (there is
    /// always exactly one writer).
    pub pool_size: usize,
    /// PostgreSQL: how many writes of single enqueues may run at once;
    /// requests that arrive while all are busy are written together in the
    /// next one ([`GroupCommit`]). SQLite always has one writer.
    pub enqueue_writers: usize,
    /// Waiting this long raises a message's effective priority by one.
    pub priority_aging: Duration,
    /// Writes the per-minute rollups with each batch of outcomes (default
    /// true). Analytics, alerts and the rollup-fed metrics read them; off
    /// only to measure what they cost the delivery path
    /// (`benches/engine.rs`). Not a configuration key.
    pub rollups: bool,
    /// Which provider reports put recipients on the suppression list.
    pub suppression: SuppressionPolicy,
    /// How long a report whose message is not found is kept, and matched
    /// again (`[feedback] unmatched_keep_s`).
    pub unmatched_keep: Duration,
    /// How long a feedback nonce is remembered: at least the signatures'
    /// tolerance, past which a replay is refused by its timestamp anyway.
    pub nonce_keep: Duration,
    /// How long finished messages are kept. PostgreSQL files a message
    /// that follows the default rule under the day it finished, one that
    /// does not apart, as it finishes; both backends expire by it.
    pub retention: Retention,
}

impl StorageOptions {
    pub fn new(url: impl Into<String>) -> Self {
        StorageOptions {
            url: url.into(),
            pool_size: 4,
            enqueue_writers: DEFAULT_ENQUEUE_WRITERS,
            priority_aging: DEFAULT_PRIORITY_AGING,
            rollups: true,
            suppression: SuppressionPolicy::default(),
            unmatched_keep: DEFAULT_UNMATCHED_KEEP,
            nonce_keep: DEFAULT_NONCE_KEEP,
            retention: Retention::default(),
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
    /// Recipients left out because they are on the suppression list; all
    /// of them when `status` is `suppressed`.
    #[serde(skip)]
    pub suppressed: Vec<String>,
}

/// What became of one delivery attempt, reported under the claim token.
/// The `_ms` figures say where the attempt's time went; the engine fills
/// them for attempts made and leaves them `None` for claims handed back.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: Stamp,
    pub claim_token: ClaimToken,
    /// The transport that made the attempt: for a group, the member.
    pub transport: String,
    /// The message's channel and category: rollup dimensions.
    pub channel: Channel,
    pub category: Option<String>,
    /// The transport's call.
    pub duration_ms: Option<u64>,
    /// Queue wait: available_at -> claimed.
    pub wait_ms: Option<u64>,
    /// Claimed -> handed to the transport: time in this node's prefetch
    /// queue and the rate limiter.
    pub processing_ms: Option<u64>,
    /// The part of `processing_ms` the rate limiter held the message.
    pub limited_ms: Option<u64>,
    /// End to end: from when the message became due (enqueue or
    /// `send_at`) to now, across all attempts; rolled up only for the
    /// attempt that finishes the message (sent or dead).
    pub total_ms: Option<u64>,
    /// The attempt number this outcome ends (the claimed message's
    /// `attempts`), for the attempts distribution.
    pub attempt: u32,
    /// For a failure: its class (`timeout`, `connection`, `rejected`,
    /// `permanent`, `transient`), for the failure analytics.
    pub error_class: Option<String>,
    pub kind: OutcomeKind,
    /// Group members that failed within this attempt before `transport`
    /// ended it, in the order tried.
    pub passed_over: Vec<MemberFailed>,
    /// For a sent message, the provider's own id of it: the `sent`
    /// event's `detail.provider_message_id`.
    pub provider_message_id: Option<String>,
    /// For a message dead-lettered because its recipient is gone, why: the
    /// `dead_lettered` event's `detail.reason` in place of `permanent`.
    pub recipient_gone: Option<RecipientGone>,
}

/// A group member that failed within an attempt that then went on to the
/// next member. It is stored as an `attempt_failed` event of its own
/// (transport: the member, detail `{group, member}`) before the attempt's
/// own events, and left out of the rollups: they count attempts, and an
/// attempt counts once, under the member that ended it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberFailed {
    pub group: String,
    pub member: String,
    pub error: String,
    pub duration_ms: Option<u64>,
}

impl MemberFailed {
    /// The event's `detail`.
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({ "group": self.group, "member": self.member })
    }
}

impl Outcome {
    /// An outcome of `message`'s claim `claim_token`, attempted by the
    /// message's own transport, with no timings yet.
    pub fn new(message: &Message, claim_token: ClaimToken, kind: OutcomeKind) -> Outcome {
        Outcome {
            id: message.id,
            claim_token,
            transport: message.transport.clone(),
            channel: message.channel,
            category: message.category.clone(),
            duration_ms: None,
            wait_ms: None,
            processing_ms: None,
            limited_ms: None,
            total_ms: None,
            attempt: message.attempts,
            error_class: None,
            kind,
            passed_over: Vec::new(),
            provider_message_id: None,
            recipient_gone: None,
        }
    }

    /// The `detail` of the event that ends the attempt (`sent`,
    /// `attempt_failed`, `deferred`), the follow-on `retry_scheduled`'s,
    /// and the `reason` a `dead_lettered` event gives instead of the
    /// lifecycle's own, if any: written once for both backends.
    pub fn event_details(&self) -> EventDetails {
        let ending = match (&self.kind, &self.provider_message_id) {
            (OutcomeKind::Sent, Some(id)) => Some(serde_json::json!({ "provider_message_id": id })),
            (OutcomeKind::Released { reason }, _) => Some(serde_json::json!({ "reason": reason })),
            _ => None,
        };
        let retry = match &self.kind {
            OutcomeKind::Failed {
                retry_at: Some(at), ..
            } => Some(serde_json::json!({ "retry_at": at })),
            _ => None,
        };
        EventDetails {
            ending,
            retry,
            dead_reason: self.recipient_gone.map(RecipientGone::as_str),
        }
    }
}

/// See [`Outcome::event_details`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventDetails {
    pub ending: Option<serde_json::Value>,
    pub retry: Option<serde_json::Value>,
    pub dead_reason: Option<&'static str>,
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
    /// A recipient, normalised ([`crate::domain::normalise_recipient`]).
    pub recipient: Option<String>,
    pub delivery: Option<crate::domain::DeliveryState>,
    /// The client's idempotency key, exactly.
    pub idempotency_key: Option<String>,
    pub category: Option<String>,
    /// Created at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Created before this instant.
    pub until: Option<DateTime<Utc>>,
    /// The class of the message's last error, as
    /// [`crate::delivery::errors::class_of_error`] reads it.
    pub error_class: Option<String>,
    /// Last changed at or before this instant: for a dead letter, when it
    /// was dead-lettered. A replay job bounds itself by this so that what
    /// it replays and sees die again is not taken a second time.
    pub changed_by: Option<DateTime<Utc>>,
}

impl MessageFilter {
    /// This filter narrowed to dead letters.
    pub fn dead_letters(&self) -> MessageFilter {
        MessageFilter {
            status: Some(Status::Dead),
            ..self.clone()
        }
    }
}

/// How many messages a filter matches: exact up to
/// [`EXACT_COUNT_LIMIT`], an estimate beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MessageCount {
    pub count: u64,
    /// The count is the backend's estimate: more than
    /// [`EXACT_COUNT_LIMIT`] match, and counting them all would read
    /// every one.
    pub estimated: bool,
}

/// The most matches [`Storage::count_messages`] counts one by one.
pub const EXACT_COUNT_LIMIT: u64 = 10_000;

/// The dead letters of one transport whose last errors are of one class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterGroup {
    pub transport: String,
    pub error_class: String,
    pub count: u64,
    /// When the group's first and last dead letters died.
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
    /// One of the group's last errors (the greatest, as text sorts).
    pub sample_error: Option<String>,
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

/// The dead letters of one transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterSummary {
    pub transport: String,
    pub channel: Channel,
    /// Empty for messages without a category.
    pub category: String,
    pub count: u64,
    pub oldest: Option<DateTime<Utc>>,
}

/// Live messages of one transport at one priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DepthRow {
    pub transport: String,
    pub priority: Priority,
    pub channel: Channel,
    /// Empty for messages without a category.
    pub category: String,
    pub queued: u64,
    pub processing: u64,
    /// The earliest `available_at` of the queued ones: in the past, how
    /// long the oldest due message has waited; in the future, nothing is
    /// due yet.
    pub oldest_available: Option<DateTime<Utc>>,
}

/// A running Herald process, as the other nodes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `[engine] node_id`: stable across restarts of the same node, so a
    /// restarted process knows its predecessor's claims for its own.
    pub id: String,
    pub version: String,
    /// Where its API listens, for operators.
    pub address: Option<String>,
    pub started_at: DateTime<Utc>,
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
    /// Out of space: the disk (SQLite) or a tablespace or other server
    /// resource (PostgreSQL, SQLSTATE class 53) is exhausted. Writes fail
    /// until space is freed, reads may still work; an outage, not a fault
    /// of the request, so callers try again later.
    #[error("storage full: {0}")]
    Full(String),
    /// The store cannot be reached or cannot write: connection lost, server
    /// shutting down or starting up, read-only (a hot standby,
    /// `default_transaction_read_only`, a read-only file), an I/O error, a
    /// lock held past the busy timeout, a serialization failure. Callers
    /// try again later.
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
    /// True when retrying later may succeed: the store is out of space or
    /// out of reach, which says nothing about the data written. The retry
    /// code (tracker, API) asks this and nothing else.
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Full(_) | StorageError::Unavailable(_))
    }
}

/// Tells in-process listeners (the transport actors) that something
/// happened to a transport: new claimable work ([`Storage::work_signal`]),
/// so they wake at once instead of waiting for their next poll, or a
/// changed admin state ([`Storage::state_signal`]). Best effort: a missed
/// signal only delays the reaction until the next poll.
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

    /// Signals that a transport's persisted admin state (pause) changed,
    /// on this node and, on PostgreSQL, on any other: every node's engine
    /// reads the state again and obeys it within a second.
    fn state_signal(&self) -> &WorkSignal;

    /// How many grouped writes of single enqueues may run at once
    /// ([`GroupCommit`]): one on SQLite, whose single writer serialises
    /// commits anyway; `storage.enqueue_writers` on PostgreSQL. No default:
    /// a wrapper (the timing decorator) must pass it on.
    fn enqueue_writers(&self) -> usize;

    /// Applies the numbered migrations in `sql/<backend>/` not yet applied.
    async fn migrate(&self) -> Result<(), StorageError>;

    /// Succeeds when the database answers a query.
    async fn ping(&self) -> Result<(), StorageError>;

    /// Succeeds when the store can commit a write: a row written and
    /// deleted again in one committed transaction, never visible to a
    /// reader. A read (`ping`) succeeds on a full disk or a read-only
    /// server, so readiness asks this too.
    async fn probe_write(&self) -> Result<(), StorageError>;

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
    /// token, held by `node` with a lease until `now + lease`; counts the
    /// attempt. Safe against concurrent claimers. It writes no event: it
    /// sets `updated_at` to `now`, which nothing else changes while the
    /// message is processing, and the event that ends the claim (outcome
    /// or lease expiry) carries it as the attempt's `started_at`.
    async fn claim_due(
        &self,
        transport: &str,
        node: &str,
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
    /// loop forever. First, nodes whose last heartbeat is before
    /// `dead_before` are presumed dead: their rows are deleted and their
    /// claims' leases end now, so those are recovered in the same call
    /// rather than after `lease_ms`. Returns the recovered ids.
    async fn recover_expired(
        &self,
        now: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Stamp>, StorageError>;

    /// Registers this node at start-up and takes over what a dead
    /// predecessor with the same id left: its claims' leases end now (the
    /// next [`Storage::recover_expired`] queues them again) and its
    /// transport leases are this node's already. A process that cannot be
    /// a predecessor's successor is refused with [`StorageError::Config`]:
    /// on PostgreSQL while a live process holds the same node id (a
    /// session advisory lock on the id, released when that process's
    /// connection dies), on SQLite while another process holds the file
    /// (a lock on `<file>.lock`). Since only one process may use a SQLite
    /// file, everything claimed in it is a dead process's and is taken
    /// over at once.
    async fn register_node(&self, node: &NodeInfo, now: DateTime<Utc>) -> Result<(), StorageError>;

    /// Proves this node alive; writes its row again if another node
    /// presumed it dead and deleted it.
    async fn heartbeat(&self, node: &NodeInfo, now: DateTime<Utc>) -> Result<(), StorageError>;

    /// Deregisters this node at shutdown: its row goes, the leases of
    /// claims it still holds end now (nothing runs them once it exits),
    /// and its node lock is released, so a successor starts at once.
    async fn deregister_node(&self, node: &str, now: DateTime<Utc>) -> Result<(), StorageError>;

    /// Cancels a queued or dead message (event `cancelled`).
    async fn cancel(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError>;

    /// Queues a dead message again under the same id with fresh attempts
    /// (event `replayed`).
    async fn replay(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError>;

    /// Replays up to `limit` dead messages that `filter` matches (its
    /// `status` aside), oldest dead first; each at most once. Returns the
    /// replayed ids.
    async fn replay_dead(
        &self,
        filter: &MessageFilter,
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
    /// `until`. Returns false while another live node holds an unexpired
    /// lease; a holder without a heartbeat since `dead_before` (or without
    /// a node row at all) is dead, and its lease is taken over.
    async fn hold_transport(
        &self,
        transport: &str,
        node: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        dead_before: DateTime<Utc>,
    ) -> Result<bool, StorageError>;

    /// Gives up this node's lease on `transport` (on shutdown), so another
    /// node takes over at once.
    async fn release_transport(&self, transport: &str, node: &str) -> Result<(), StorageError>;

    /// Every transport with persisted state.
    async fn transport_states(&self) -> Result<Vec<TransportState>, StorageError>;

    /// A message with its events, oldest first.
    async fn get_message(&self, id: Stamp) -> Result<Option<MessageWithEvents>, StorageError>;

    /// The message whose `sent` event through `transport` recorded the
    /// provider's id `provider_message_id`: how a delivery receipt, which
    /// names only the provider's id, finds its message. The latest such
    /// send when a provider reused an id.
    async fn find_by_provider_id(
        &self,
        transport: &str,
        provider_message_id: &str,
    ) -> Result<Option<Stamp>, StorageError>;

    /// Applies one batch of provider reports in one transaction: each
    /// finds its message by stamp, else by the provider's id of it (see
    /// [`Storage::find_by_provider_id`]); a report already stored is
    /// skipped; the rest are stored as events, move the message's
    /// delivery state forward ([`crate::domain::DeliveryStatus::apply`]) and
    /// put recipients on the suppression list as the store's
    /// [`SuppressionPolicy`] says. A report whose message is not found, or
    /// not finished yet, is kept for [`Storage::rematch_feedback`]. With a
    /// nonce seen before, nothing is recorded and `replay` is set.
    async fn record_feedback(
        &self,
        batch: FeedbackBatch,
        now: DateTime<Utc>,
    ) -> Result<FeedbackRecorded, StorageError>;

    /// Matches up to `limit` kept reports again, oldest first; those that
    /// still find no message stay until the store's `unmatched_keep` has
    /// passed. Also forgets nonces older than `nonce_keep`. Returns how
    /// many were matched now.
    async fn rematch_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<FeedbackRecorded, StorageError>;

    /// The suppression list, ordered by (channel, address, scope), paged.
    /// Expired entries are not shown.
    async fn list_suppressions(
        &self,
        filter: &SuppressionFilter,
        after: Option<SuppressionCursor>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Suppression>, StorageError>;

    /// Adds an entry, or replaces the one of the same channel, address
    /// and scope.
    async fn add_suppression(&self, entry: Suppression) -> Result<(), StorageError>;

    /// Removes every entry of `address` on `channel`, whatever its scope;
    /// how many there were.
    async fn remove_suppression(
        &self,
        channel: Channel,
        address: &str,
    ) -> Result<u64, StorageError>;

    /// Newest first, cursor-paged; stable across pages.
    async fn list_messages(
        &self,
        filter: &MessageFilter,
        page: PageRequest,
    ) -> Result<Page, StorageError>;

    /// How many messages `filter` matches, counting at most
    /// [`EXACT_COUNT_LIMIT`] + 1 of them: past that, an estimate.
    async fn count_messages(&self, filter: &MessageFilter) -> Result<MessageCount, StorageError>;

    /// The dead letters `filter` matches (its `status` aside), by
    /// transport and error class, largest group first.
    async fn dead_letter_groups(
        &self,
        filter: &MessageFilter,
    ) -> Result<Vec<DeadLetterGroup>, StorageError>;

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

    /// One bounded round of retention (the store's [`Retention`]): deletes
    /// up to `limit` finished messages of each status that are past their
    /// keep, with their events and idempotency keys, and drops up to
    /// `limit` payloads of sent messages past `payload_after_sent`. Never
    /// touches a live message. Call again while it reports work done.
    async fn expire_finished(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Expired, StorageError>;

    /// Moves up to `limit` finished messages stored before live and
    /// finished were kept apart (schema V14) out of the live table; 0
    /// once none is left. Bounded, so the move never holds up enqueue and
    /// delivery for more than a moment.
    async fn move_finished(&self, limit: usize) -> Result<u64, StorageError>;

    /// Queued and processing counts by transport, priority, channel and
    /// category, with the oldest queued message's `available_at`. Reads
    /// only live messages (indexed by status).
    async fn queue_depth(&self) -> Result<Vec<DepthRow>, StorageError>;

    /// Failed attempts in `[from, to)` summed per transport, channel,
    /// category, class and normalised error (each row's `minute` is
    /// `from`), read from hourly rows where sealed and minute rows for the
    /// rest, so its cost follows the keys, not the range's length.
    async fn failure_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<FailureCount>, StorageError>;

    /// Bounce reports received in `[from, to)` summed per transport,
    /// channel, category, bounce type, normalised reason and recipient
    /// domain (each row's `minute` is `from`), read as
    /// [`Storage::failure_counts`] reads failures.
    async fn bounce_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<BounceCount>, StorageError>;

    /// Seals every whole hour before `seal_before` into hourly rollups
    /// (re-sealing the last [`RESEAL`](rollups::RESEAL) of them, for late writes), deletes
    /// minute rows of sealed hours before `compact_before`, and deletes
    /// rollups of either resolution before `purge_before`. Safe to run on
    /// several nodes at once. Returns (minute rows merged away, rows
    /// purged).
    async fn compact_rollups(
        &self,
        seal_before: DateTime<Utc>,
        compact_before: DateTime<Utc>,
        purge_before: DateTime<Utc>,
    ) -> Result<(u64, u64), StorageError>;

    /// Dead letters by transport, channel and category: how many and
    /// since when.
    async fn dead_letter_summary(&self) -> Result<Vec<DeadLetterSummary>, StorageError>;

    /// Rollups with `from <= minute < to`, oldest first, at minute
    /// resolution where minute rows are kept and as hourly rows (at each
    /// hour's start) before that.
    async fn minute_metrics(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteMetrics>, StorageError>;

    /// The [`SeriesCounts`] of `scope` per row start covering
    /// `[from, to)`, oldest first: with `hourly`, an hourly row for each
    /// sealed whole hour and minute rows for the partial hours at the ends
    /// and the hours not sealed yet (for buckets of whole hours); otherwise the rows
    /// [`Storage::minute_metrics`] reads. Only the series' columns, so a
    /// day at minute resolution stays cheap.
    async fn series_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        hourly: bool,
        scope: &Scope,
    ) -> Result<Vec<SeriesCounts>, StorageError>;

    /// The rollups of `[from, to)` (hourly rows for its sealed whole
    /// hours, minute rows for the rest) summed per transport, channel and category (each row's
    /// `minute` is `from`): what a route that needs no series reads,
    /// whatever the window's length.
    async fn rollup_totals(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteMetrics>, StorageError>;

    /// Adds rows to the rollups (merged into existing rows of the same
    /// minute and key): figures that are not outcomes, such as the time a
    /// transport's breaker was open.
    async fn add_rollups(&self, rows: Vec<MinuteMetrics>) -> Result<(), StorageError>;

    /// Opens an incident unless one of the same rule and transport is
    /// active (then `None`: another evaluation, perhaps on another node,
    /// got there first). It is `notified` unless a notified incident of the
    /// same rule and transport fired at or after `quiet_since` (the
    /// cooldown).
    async fn open_alert(
        &self,
        alert: NewAlert,
        quiet_since: DateTime<Utc>,
    ) -> Result<Option<Alert>, StorageError>;

    /// Records the latest measurement of an active incident.
    async fn check_alert(
        &self,
        id: ulid::Ulid,
        value: f64,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError>;

    /// Records that an incident paused its transport, at `now`; once.
    async fn set_alert_paused(
        &self,
        id: ulid::Ulid,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError>;

    /// Resolves an active incident; `None` when it is not active (already
    /// resolved by another evaluation).
    async fn resolve_alert(
        &self,
        id: ulid::Ulid,
        value: f64,
        now: DateTime<Utc>,
    ) -> Result<Option<Alert>, StorageError>;

    /// Records the message that carried one of an incident's notices.
    async fn set_alert_notice(
        &self,
        id: ulid::Ulid,
        notice: AlertNotice,
        message: Stamp,
    ) -> Result<(), StorageError>;

    /// Incidents with a notice still to send ([`Alert::missing_notices`]),
    /// oldest first.
    async fn alerts_awaiting_notice(&self) -> Result<Vec<Alert>, StorageError>;

    /// Incidents newest first, of one state or both.
    async fn list_alerts(
        &self,
        state: Option<AlertState>,
        limit: usize,
    ) -> Result<Vec<Alert>, StorageError>;

    /// Stores a new replay job as it is given (normally `running`, no
    /// owner yet).
    async fn create_replay_job(&self, job: &ReplayJob) -> Result<(), StorageError>;

    /// One replay job, `None` when unknown.
    async fn replay_job(&self, id: Stamp) -> Result<Option<ReplayJob>, StorageError>;

    /// Replay jobs, newest first.
    async fn list_replay_jobs(&self, limit: usize) -> Result<Vec<ReplayJob>, StorageError>;

    /// Takes the oldest running job that has no owner, is `node`'s own
    /// (a restart of it), or whose owner has not advanced it since
    /// `stale_before` (presumed dead): one atomic update, so two nodes
    /// never both take a job. Touches its `updated_at`.
    async fn take_replay_job(
        &self,
        node: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Option<ReplayJob>, StorageError>;

    /// Adds one batch's `replayed` to a running job `node` owns and moves
    /// it to `state` (with `error` when failed). False when the job is no
    /// longer `node`'s running job (another node took it over): the
    /// caller stops.
    async fn advance_replay_job(
        &self,
        id: Stamp,
        node: &str,
        replayed: u64,
        state: ReplayJobState,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError>;
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
/// A message's events as the API shows them: a message's `queued` event
/// is its `created_at`, not a stored row (stores written before kept one,
/// which then stands).
pub(crate) fn with_queued_event(
    message: &Message,
    mut events: Vec<crate::domain::Event>,
) -> Vec<crate::domain::Event> {
    if !events
        .iter()
        .any(|e| e.kind == crate::domain::EventKind::Queued)
    {
        events.insert(
            0,
            crate::domain::Event {
                kind: crate::domain::EventKind::Queued,
                at: message.created_at,
                attempt: 0,
                transport: Some(message.transport.clone()),
                started_at: None,
                duration_ms: None,
                error: None,
                detail: None,
            },
        );
    }
    events
}

pub(crate) fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_BATCH)
}
