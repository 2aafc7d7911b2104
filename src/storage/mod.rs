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

mod alerts;
mod group_commit;
mod lifecycle;
mod postgres;
mod retention;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use alerts::{Alert, AlertNotice, AlertState, NewAlert};
pub use group_commit::GroupCommit;
pub use postgres::PostgresStorage;
pub use retention::{Expired, Retention, RetentionOverride, RetentionRule};
pub use sqlite::SqliteStorage;

use crate::domain::{
    Channel, ClaimToken, Fingerprint, Message, MessageWithEvents, NewMessage, Priority, Stamp,
    Status,
};

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
        }
    }
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

/// Upper bounds, in ms, of the queue-wait, processing and end-to-end
/// histograms (`wait_le_*`, `processing_le_*`, `total_le_*`): from a
/// busy-but-keeping-up queue (ms) to a stalled one (an hour).
pub const FLOW_BUCKETS_MS: [u64; 12] = [
    10, 50, 100, 250, 500, 1000, 5000, 15000, 60000, 300000, 900000, 3600000,
];

/// A cumulative histogram of one timing: how many, their sum and
/// maximum, and `le[i]` = how many took at most `bounds[i]` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timing<const N: usize> {
    pub count: u64,
    pub sum_ms: u64,
    pub max_ms: u64,
    #[serde(skip)]
    pub le: [u64; N],
}

impl<const N: usize> Default for Timing<N> {
    fn default() -> Self {
        Timing {
            count: 0,
            sum_ms: 0,
            max_ms: 0,
            le: [0; N],
        }
    }
}

impl<const N: usize> Timing<N> {
    fn observe(&mut self, ms: u64, bounds: &[u64; N]) {
        self.count += 1;
        self.sum_ms += ms;
        self.max_ms = self.max_ms.max(ms);
        for (bucket, bound) in self.le.iter_mut().zip(bounds) {
            if ms <= *bound {
                *bucket += 1;
            }
        }
    }

    /// Its values in column order: count, sum, max, buckets.
    fn slots(&mut self) -> impl Iterator<Item = &mut u64> {
        [&mut self.count, &mut self.sum_ms, &mut self.max_ms]
            .into_iter()
            .chain(self.le.iter_mut())
    }
}

/// Delivery counts of one transport, channel and category in one minute
/// (or one hour, once compacted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MinuteMetrics {
    pub minute: DateTime<Utc>,
    /// The transport that made the attempts (for a group, the member).
    pub transport: String,
    /// The messages' channel and category; both empty on a transport's
    /// own row (breaker-open time), and the category is empty for
    /// messages without one.
    pub channel: String,
    pub category: String,
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
    /// Queue waits of at most `FLOW_BUCKETS_MS[i]` ms.
    pub wait_le: [u64; 12],
    /// Claimed -> handed to the transport (prefetch queue, rate limiter).
    pub processing: Timing<12>,
    /// Time attempts were held by the transport's rate limiter.
    pub limited_sum_ms: u64,
    /// End to end, for attempts that finished their message.
    pub total: Timing<12>,
    /// Time the transport's circuit breaker was open.
    pub breaker_open_ms: u64,
    /// Messages cancelled (while queued or dead).
    pub cancelled: u64,
}

/// Which traffic a read or an analytics route covers; `None` is all.
/// Rollup rows of a transport's own (breaker-open time: no channel, no
/// category) fall outside any channel or category filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    pub transport: Option<String>,
    pub channel: Option<String>,
    pub category: Option<String>,
}

impl Scope {
    pub fn transport(name: &str) -> Scope {
        Scope {
            transport: Some(name.to_owned()),
            ..Scope::default()
        }
    }

    pub fn keeps_transport(&self, transport: &str) -> bool {
        self.transport.as_deref().is_none_or(|t| t == transport)
    }

    pub fn keeps(&self, transport: &str, channel: &str, category: &str) -> bool {
        self.keeps_transport(transport)
            && self.channel.as_deref().is_none_or(|c| c == channel)
            && self.category.as_deref().is_none_or(|c| c == category)
    }

    pub fn keeps_rollup(&self, m: &MinuteMetrics) -> bool {
        self.keeps(&m.transport, &m.channel, &m.category)
    }

    pub fn keeps_depth(&self, d: &DepthRow) -> bool {
        self.keeps(&d.transport, d.channel.as_str(), &d.category)
    }
}

/// What a throughput series shows of one minute or hour: the counts of
/// its rollup rows in scope, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeriesCounts {
    pub minute: DateTime<Utc>,
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead: u64,
}

/// The rows that [`rollup_spans_sql`] names (bounds bound first) with
/// the keys a [`Scope`] keeps (bound 7th to 9th, NULL for all), their
/// series counts summed per row start: one row per minute or hour
/// whatever the keys.
pub(crate) fn series_sql(p: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT minute, CAST(sum(sent) AS BIGINT), CAST(sum(failed) AS BIGINT),
                CAST(sum(retried) AS BIGINT), CAST(sum(dead) AS BIGINT)
         FROM ({}) AS r
         WHERE ({t} IS NULL OR transport = {t}) AND ({c} IS NULL OR channel = {c})
           AND ({k} IS NULL OR category = {k})
         GROUP BY minute ORDER BY minute",
        rollup_spans_sql(
            "metrics",
            "minute, transport, channel, category, sent, failed, retried, dead",
            &p
        ),
        t = p(7),
        c = p(8),
        k = p(9),
    )
}

/// Failed attempts of one transport in one minute with one error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    pub minute: DateTime<Utc>,
    pub transport: String,
    pub channel: String,
    /// Empty for messages without a category.
    pub category: String,
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
    pub channel: Channel,
    /// Empty for messages without a category.
    pub category: String,
    pub count: u64,
    pub oldest: Option<DateTime<Utc>>,
}

impl MinuteMetrics {
    /// Adds another row's counts to this one (sums, and maxima for the
    /// `_max_ms` figures): how minutes roll up into longer spans.
    pub fn merge(&mut self, other: &MinuteMetrics) {
        let add = other.values();
        for ((slot, add), column) in self.slots().into_iter().zip(add).zip(metric_columns()) {
            if is_max_column(column) {
                *slot = (*slot).max(add);
            } else {
                *slot += add;
            }
        }
    }

    /// Every figure, in [`metric_columns`] order: the one place that order
    /// is defined.
    fn slots(&mut self) -> Vec<&mut u64> {
        let mut slots: Vec<&mut u64> = vec![
            &mut self.sent,
            &mut self.failed,
            &mut self.retried,
            &mut self.dead,
            &mut self.deferred,
            &mut self.latency_count,
            &mut self.latency_sum_ms,
            &mut self.latency_max_ms,
        ];
        slots.extend(self.latency_le.iter_mut());
        slots.extend([
            &mut self.wait_count,
            &mut self.wait_sum_ms,
            &mut self.wait_max_ms,
            &mut self.sent_after_retry,
        ]);
        slots.extend(self.finished.iter_mut());
        slots.extend(self.wait_le.iter_mut());
        slots.extend(self.processing.slots());
        slots.push(&mut self.limited_sum_ms);
        slots.extend(self.total.slots());
        slots.push(&mut self.breaker_open_ms);
        slots.push(&mut self.cancelled);
        slots
    }

    fn values(&self) -> Vec<u64> {
        self.clone().slots().into_iter().map(|v| *v).collect()
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
            for (bucket, bound) in self.wait_le.iter_mut().zip(FLOW_BUCKETS_MS) {
                if ms <= bound {
                    *bucket += 1;
                }
            }
        }
        if let Some(ms) = outcome.processing_ms {
            self.processing.observe(ms, &FLOW_BUCKETS_MS);
        }
        self.limited_sum_ms += outcome.limited_ms.unwrap_or(0);
        if let Some(ms) = outcome
            .total_ms
            .filter(|_| matches!(status, Status::Sent | Status::Dead))
        {
            self.total.observe(ms, &FLOW_BUCKETS_MS);
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

/// The `metrics_minutely` columns after the key, in [`MinuteMetrics`]
/// order (see `MinuteMetrics::slots`).
pub(crate) fn metric_columns() -> &'static [String] {
    static COLUMNS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let bucketed = |prefix: &str, bounds: &[u64]| {
            bounds
                .iter()
                .map(|b| format!("{prefix}{b}"))
                .collect::<Vec<_>>()
        };
        let timing = |name: &str| {
            let mut columns = vec![
                format!("{name}_count"),
                format!("{name}_sum_ms"),
                format!("{name}_max_ms"),
            ];
            columns.extend(bucketed(&format!("{name}_le_"), &FLOW_BUCKETS_MS));
            columns
        };
        let mut columns: Vec<String> = [
            "sent",
            "failed",
            "retried",
            "dead",
            "deferred",
            "latency_count",
            "latency_sum_ms",
            "latency_max_ms",
        ]
        .map(String::from)
        .into();
        columns.extend(bucketed("le_", &LATENCY_BUCKETS_MS));
        columns.extend(
            [
                "wait_count",
                "wait_sum_ms",
                "wait_max_ms",
                "sent_after_retry",
                "finished_1",
                "finished_2",
                "finished_3",
                "finished_4_plus",
            ]
            .map(String::from),
        );
        columns.extend(bucketed("wait_le_", &FLOW_BUCKETS_MS));
        columns.extend(timing("processing"));
        columns.push("limited_sum_ms".into());
        columns.extend(timing("total"));
        columns.push("breaker_open_ms".into());
        columns.push("cancelled".into());
        columns
    });
    &COLUMNS
}

/// `metrics_minutely`'s columns as aggregates for merging many rows into
/// one (sums, and maxima for the `_max_ms` columns), in column order.
pub(crate) fn metric_aggregates() -> String {
    metric_columns()
        .iter()
        .map(|c| {
            if is_max_column(c) {
                format!("max({c})")
            } else {
                // PostgreSQL sums bigints as numeric.
                format!("CAST(sum({c}) AS BIGINT)")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `DO UPDATE SET` list that adds a conflicting row into the stored
/// one; `max` is the dialect's two-argument maximum (`max` / `greatest`).
pub(crate) fn metric_merge_updates(stored: &str, max: &str) -> String {
    metric_columns()
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

/// A rollup's values in [`metric_columns`] order, as stored.
pub(crate) fn metric_values(m: &MinuteMetrics) -> Vec<i64> {
    m.values()
        .into_iter()
        .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
        .collect()
}

impl MinuteMetrics {
    /// The inverse of [`metric_values`], for rows read back.
    pub(crate) fn from_values(
        minute: DateTime<Utc>,
        transport: String,
        channel: String,
        category: String,
        values: &[i64],
    ) -> Self {
        let mut metrics = MinuteMetrics {
            minute,
            transport,
            channel,
            category,
            ..MinuteMetrics::default()
        };
        for (slot, value) in metrics.slots().into_iter().zip(values) {
            *slot = (*value).max(0) as u64;
        }
        metrics
    }
}

/// The rollups of the outcomes that were applied, by attempting
/// transport, channel and category, in the minute of `now`, and their
/// failures by class and normalised error. Both backends write these in
/// the same transaction as the outcomes.
pub(crate) fn rollup(
    outcomes: &[Outcome],
    applied: &[(Stamp, Status)],
    now: DateTime<Utc>,
) -> (Vec<MinuteMetrics>, Vec<FailureCount>) {
    use std::collections::{BTreeMap, HashMap};
    let minute = truncate_minute(now);
    let status_of: HashMap<Stamp, Status> = applied.iter().copied().collect();
    let mut rows: BTreeMap<(&str, &str, &str), MinuteMetrics> = BTreeMap::new();
    let mut failures: BTreeMap<(&str, &str, &str, String, String), u64> = BTreeMap::new();
    for outcome in outcomes {
        let Some(status) = status_of.get(&outcome.id) else {
            continue; // refused as stale: it happened, but not as this claim
        };
        let channel = outcome.channel.as_str();
        let category = outcome.category.as_deref().unwrap_or("");
        rows.entry((outcome.transport.as_str(), channel, category))
            .or_insert_with(|| MinuteMetrics {
                minute,
                transport: outcome.transport.clone(),
                channel: channel.to_owned(),
                category: category.to_owned(),
                ..MinuteMetrics::default()
            })
            .count(outcome, *status);
        if let OutcomeKind::Failed { error, .. } = &outcome.kind {
            let class = outcome
                .error_class
                .clone()
                .unwrap_or_else(|| "transient".to_owned());
            let error = crate::delivery::errors::normalise(error);
            *failures
                .entry((outcome.transport.as_str(), channel, category, class, error))
                .or_default() += 1;
        }
    }
    let failures = failures
        .into_iter()
        .map(
            |((transport, channel, category, class, error), failures)| FailureCount {
                minute,
                transport: transport.to_owned(),
                channel: channel.to_owned(),
                category: category.to_owned(),
                class,
                error,
                failures,
            },
        )
        .collect();
    (rows.into_values().collect(), failures)
}

/// The rollup of one cancellation, written with it.
pub(crate) fn cancelled_rollup(message: &Message, now: DateTime<Utc>) -> MinuteMetrics {
    MinuteMetrics {
        minute: truncate_minute(now),
        transport: message.transport.clone(),
        channel: message.channel.as_str().to_owned(),
        category: message.category.clone().unwrap_or_default(),
        cancelled: 1,
        ..MinuteMetrics::default()
    }
}

/// The start of `at`'s minute: the key of its rollup rows.
pub(crate) fn truncate_minute(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    at.duration_trunc(chrono::TimeDelta::minutes(1))
        .unwrap_or(at)
}

/// How far the hourly rollups reach, kept with them (`rollup_seal`).
/// Compaction copies each finished hour of minute rows into one hourly
/// row per key ("seals" it), and later deletes minute rows of sealed hours
/// once they are older than `analytics.compact_after_hours`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupSeal {
    /// Every hour before this has its hourly rows.
    pub sealed_until: DateTime<Utc>,
    /// Minute rows are complete from here on; before it only hourly rows
    /// remain.
    pub minutes_from: DateTime<Utc>,
}

impl Default for RollupSeal {
    fn default() -> Self {
        RollupSeal {
            sealed_until: DateTime::UNIX_EPOCH,
            minutes_from: DateTime::UNIX_EPOCH,
        }
    }
}

/// Which rows answer for `[from, to)`: minute rows in the two `minutes`
/// spans, hourly rows in `hours`. Each span is `[start, end)`, possibly
/// empty; together they cover the range once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RollupSpans {
    pub minutes: [(DateTime<Utc>, DateTime<Utc>); 2],
    pub hours: (DateTime<Utc>, DateTime<Utc>),
}

/// An hour is sealed once it ended this long ago: by then every
/// transaction that wrote its minute rows has committed, on any node whose
/// clock is within this of ours.
pub const SEAL_LAG: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Hours sealed this long ago are sealed again on each compaction, so a
/// minute row written late (a node's clock behind, a slow transaction)
/// still reaches its hour.
pub(crate) const RESEAL: chrono::TimeDelta = chrono::TimeDelta::hours(3);

pub(crate) fn floor_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    at.duration_trunc(chrono::TimeDelta::hours(1)).unwrap_or(at)
}

pub(crate) fn ceil_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_hour(at);
    if floor == at {
        at
    } else {
        floor + chrono::TimeDelta::hours(1)
    }
}

impl RollupSpans {
    /// Minute resolution wherever minute rows are kept; hourly rows (each
    /// at its hour's start) only before that, as far as they fall in the
    /// range.
    pub(crate) fn fine(from: DateTime<Utc>, to: DateTime<Utc>, seal: RollupSeal) -> RollupSpans {
        let kept = seal.minutes_from.clamp(from, to.max(from));
        RollupSpans {
            minutes: [(kept, to.max(kept)), (to, to)],
            hours: (ceil_hour(from).min(kept), kept),
        }
    }

    /// Hourly rows for every sealed whole hour inside the range, minute
    /// rows for the partial hours at its ends and what is not sealed yet:
    /// the fewest rows that cover the range exactly. A total or an hourly
    /// series reads these.
    pub(crate) fn coarse(from: DateTime<Utc>, to: DateTime<Utc>, seal: RollupSeal) -> RollupSpans {
        let to = to.max(from);
        let mid_start = ceil_hour(from).clamp(from, to);
        let mid_end = floor_hour(to).min(seal.sealed_until).clamp(mid_start, to);
        // Before `minutes_from` only hourly rows exist: a partial hour
        // there is left out, as it always was once compacted.
        let kept = |at: DateTime<Utc>| at.max(seal.minutes_from);
        RollupSpans {
            minutes: [
                (kept(from).min(mid_start), mid_start),
                (kept(mid_end), to.max(kept(mid_end))),
            ],
            hours: (mid_start, mid_end),
        }
    }
}

impl RollupSpans {
    pub(crate) fn new(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        seal: RollupSeal,
        hourly: bool,
    ) -> RollupSpans {
        if hourly {
            RollupSpans::coarse(from, to, seal)
        } else {
            RollupSpans::fine(from, to, seal)
        }
    }

    /// The spans' bounds in the order [`rollup_spans_sql`] binds them.
    pub(crate) fn bounds(&self) -> [DateTime<Utc>; 6] {
        let [(a, b), (c, d)] = self.minutes;
        [a, b, c, d, self.hours.0, self.hours.1]
    }
}

/// The rows of `{family}_minutely` and `{family}_hourly` (`metrics` or
/// `failures`) that [`RollupSpans`] name, as `columns`; `p(i)` writes the
/// backend's i-th parameter, bound as [`RollupSpans::bounds`].
pub(crate) fn rollup_spans_sql(family: &str, columns: &str, p: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT {columns} FROM {family}_minutely
         WHERE (minute >= {} AND minute < {}) OR (minute >= {} AND minute < {})
         UNION ALL
         SELECT {columns} FROM {family}_hourly WHERE minute >= {} AND minute < {}",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6)
    )
}

/// The rollup families compaction seals: (family, key columns after
/// `minute`, value columns, their aggregates over many rows).
pub(crate) fn rollup_families() -> [(&'static str, String, String, String); 2] {
    [
        (
            "metrics",
            "transport, channel, category".to_owned(),
            metric_columns().join(", "),
            metric_aggregates(),
        ),
        (
            "failures",
            FAILURE_KEYS.to_owned(),
            "failures".to_owned(),
            "CAST(sum(failures) AS BIGINT)".to_owned(),
        ),
    ]
}

/// The rollup rows (`minute`, key, metric columns) that
/// [`RollupSpans`] name, oldest first.
pub(crate) fn rollup_rows_sql(p: impl Fn(usize) -> String) -> String {
    format!(
        "{} ORDER BY 1, 2, 3, 4",
        rollup_spans_sql("metrics", &rollup_row_columns(), p)
    )
}

/// Those rows summed per key (`minute` is the earliest row's).
pub(crate) fn rollup_totals_sql(p: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT min(minute), transport, channel, category, {} FROM ({}) AS r
         GROUP BY transport, channel, category ORDER BY 2, 3, 4",
        metric_aggregates(),
        rollup_spans_sql("metrics", &rollup_row_columns(), p)
    )
}

/// The failure rows that [`RollupSpans`] name, summed per key.
pub(crate) fn failure_totals_sql(p: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT {FAILURE_KEYS}, CAST(sum(failures) AS BIGINT) FROM ({}) AS f
         GROUP BY {FAILURE_KEYS} ORDER BY {FAILURE_KEYS}",
        rollup_spans_sql("failures", &format!("{FAILURE_KEYS}, failures"), p)
    )
}

fn rollup_row_columns() -> String {
    format!(
        "minute, transport, channel, category, {}",
        metric_columns().join(", ")
    )
}

/// The key columns of the failure rollups after `minute`.
pub(crate) const FAILURE_KEYS: &str = "transport, channel, category, class, error";

/// What one compaction does, given the seal before it and the cut-offs;
/// `None` fields change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompactionPlan {
    /// Hours to (re)build from minute rows: `[start, end)`.
    pub seal: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Minute rows before this are deleted (their hours are sealed).
    pub delete_minutes_before: DateTime<Utc>,
    /// Rows of either resolution before this are deleted.
    pub purge_before: DateTime<Utc>,
    pub after: RollupSeal,
}

impl CompactionPlan {
    pub(crate) fn new(
        seal: RollupSeal,
        seal_before: DateTime<Utc>,
        compact_before: DateTime<Utc>,
        purge_before: DateTime<Utc>,
    ) -> CompactionPlan {
        let seal_to = floor_hour(seal_before);
        // Hours whose minute rows are all still there can be rebuilt.
        let seal_from = (seal.sealed_until - RESEAL).max(seal.minutes_from);
        let sealed_until = seal.sealed_until.max(seal_to);
        let minutes_from = seal
            .minutes_from
            .max(floor_hour(compact_before).min(sealed_until));
        CompactionPlan {
            seal: (seal_to > seal_from).then_some((seal_from, seal_to)),
            delete_minutes_before: minutes_from,
            purge_before,
            after: RollupSeal {
                sealed_until,
                minutes_from,
            },
        }
    }
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

    /// Seals every whole hour before `seal_before` into hourly rollups
    /// (re-sealing the last [`RESEAL`] of them, for late writes), deletes
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

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;

    fn at(h: i64, m: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
            + TimeDelta::hours(h)
            + TimeDelta::minutes(m)
    }

    fn seal(sealed_until: DateTime<Utc>, minutes_from: DateTime<Utc>) -> RollupSeal {
        RollupSeal {
            sealed_until,
            minutes_from,
        }
    }

    /// Every minute of `[from, to)` is read from exactly one span.
    fn covered_once(spans: &RollupSpans, from: DateTime<Utc>, to: DateTime<Utc>) {
        let mut t = from;
        while t < to {
            let hour = floor_hour(t);
            let in_minutes = spans
                .minutes
                .iter()
                .filter(|(a, b)| *a <= t && t < *b)
                .count();
            let in_hours = usize::from(spans.hours.0 <= hour && hour < spans.hours.1);
            assert_eq!(in_minutes + in_hours, 1, "{t} in {spans:?}");
            t += TimeDelta::minutes(1);
        }
    }

    #[test]
    fn coarse_spans_read_sealed_hours_and_minutes_at_the_edges() {
        let s = seal(at(10, 0), DateTime::UNIX_EPOCH);
        let spans = RollupSpans::coarse(at(2, 30), at(12, 15), s);
        assert_eq!(
            spans.minutes,
            [(at(2, 30), at(3, 0)), (at(10, 0), at(12, 15))]
        );
        assert_eq!(spans.hours, (at(3, 0), at(10, 0)));
        covered_once(&spans, at(2, 30), at(12, 15));
    }

    #[test]
    fn coarse_spans_inside_one_hour_or_before_any_seal_are_all_minutes() {
        for (from, to, s) in [
            (at(5, 10), at(5, 40), seal(at(10, 0), DateTime::UNIX_EPOCH)),
            (at(2, 30), at(12, 15), RollupSeal::default()),
            (at(3, 0), at(4, 0), seal(at(3, 0), DateTime::UNIX_EPOCH)),
        ] {
            let spans = RollupSpans::coarse(from, to, s);
            assert_eq!(spans.hours.0, spans.hours.1, "{spans:?}");
            covered_once(&spans, from, to);
        }
    }

    #[test]
    fn a_compacted_partial_hour_is_left_out_as_before() {
        // Minute rows only from 06:00; hourly rows before.
        let s = seal(at(10, 0), at(6, 0));
        let coarse = RollupSpans::coarse(at(2, 30), at(12, 15), s);
        assert_eq!(
            coarse.minutes[0].0, coarse.minutes[0].1,
            "02:30-03:00 is gone"
        );
        assert_eq!(coarse.hours, (at(3, 0), at(10, 0)));
        let fine = RollupSpans::fine(at(2, 30), at(12, 15), s);
        assert_eq!(fine.hours, (at(3, 0), at(6, 0)));
        assert_eq!(fine.minutes[0], (at(6, 0), at(12, 15)));
    }

    #[test]
    fn fine_spans_are_minutes_while_they_are_kept() {
        let spans = RollupSpans::fine(at(2, 30), at(12, 15), seal(at(10, 0), at(1, 0)));
        assert_eq!(spans.minutes[0], (at(2, 30), at(12, 15)));
        assert_eq!(spans.hours.0, spans.hours.1);
        covered_once(&spans, at(2, 30), at(12, 15));
    }

    #[test]
    fn the_first_compaction_seals_all_history_then_only_recent_hours() {
        let first = CompactionPlan::new(RollupSeal::default(), at(50, 7), at(2, 7), at(-2000, 0));
        assert_eq!(first.seal, Some((DateTime::UNIX_EPOCH, at(50, 0))));
        assert_eq!(first.delete_minutes_before, at(2, 0));
        assert_eq!(first.after, seal(at(50, 0), at(2, 0)));

        let next = CompactionPlan::new(first.after, at(51, 7), at(3, 7), at(-2000, 0));
        assert_eq!(
            next.seal,
            Some((at(47, 0), at(51, 0))),
            "the last hours again"
        );
        assert_eq!(next.after, seal(at(51, 0), at(3, 0)));
    }

    #[test]
    fn compaction_never_rebuilds_an_hour_whose_minutes_are_gone() {
        // compact_after shorter than RESEAL: minute rows from 09:00 only.
        let s = seal(at(10, 0), at(9, 0));
        let plan = CompactionPlan::new(s, at(10, 30), at(9, 45), at(0, 0));
        assert_eq!(plan.seal, Some((at(9, 0), at(10, 0))));
        // Minute rows are only deleted in sealed hours.
        let plan = CompactionPlan::new(s, at(8, 0), at(20, 0), at(0, 0));
        assert_eq!(plan.delete_minutes_before, at(10, 0));
    }
}
