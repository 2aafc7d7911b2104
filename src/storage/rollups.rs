//! The per-minute rollups of delivery outcomes, as arithmetic: their
//! figures and the one order both backends store them in, how outcomes
//! count into them and rows merge, and which rows (minute or hourly)
//! answer for a range and what a compaction changes. Pure: the backends
//! store and read what this computes, with the text in [`super::sql`].

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DepthRow, Outcome, OutcomeKind};
use crate::domain::{Message, Stamp, Status};

/// Upper bounds, in ms, of the queue-wait, processing and end-to-end
/// histograms (`wait_le_*`, `processing_le_*`, `total_le_*`): 1-2-5 steps
/// from 1 ms, so that a fast transport's figures spread over several
/// buckets instead of sharing the first, up to a stalled queue's hour.
/// Between two bounds the quantiles interpolate, so a step of at most 2.5x
/// bounds their error.
pub const FLOW_BUCKETS_MS: [u64; 21] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 200_000,
    500_000, 1_000_000, 2_000_000, 3_600_000,
];

/// Upper bounds, in ms, of the cumulative latency buckets of
/// [`MinuteMetrics::latency_le`] (`le_1` ... `le_10000` in the table):
/// the flow buckets' steps, up to the delivery timeouts in use.
pub const LATENCY_BUCKETS_MS: [u64; 13] =
    [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000];

/// How many buckets a flow histogram has.
pub const FLOW_BUCKETS: usize = FLOW_BUCKETS_MS.len();

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
        observe(
            ms,
            [&mut self.count, &mut self.sum_ms, &mut self.max_ms],
            &mut self.le,
            bounds,
        );
    }

    /// Its values in column order: count, sum, max, buckets.
    fn slots(&mut self) -> impl Iterator<Item = &mut u64> {
        [&mut self.count, &mut self.sum_ms, &mut self.max_ms]
            .into_iter()
            .chain(self.le.iter_mut())
    }
}

/// Counts one timing of `ms` into a histogram's count, sum and maximum
/// and its cumulative buckets `le` (`le[i]`: at most `bounds[i]` ms).
fn observe(ms: u64, [count, sum_ms, max_ms]: [&mut u64; 3], le: &mut [u64], bounds: &[u64]) {
    *count += 1;
    *sum_ms += ms;
    *max_ms = (*max_ms).max(ms);
    for (bucket, bound) in le.iter_mut().zip(bounds) {
        if ms <= *bound {
            *bucket += 1;
        }
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
    pub latency_le: [u64; LATENCY_BUCKETS_MS.len()],
    /// Attempts whose queue wait (available -> claimed) is known.
    pub wait_count: u64,
    pub wait_sum_ms: u64,
    pub wait_max_ms: u64,
    /// Messages sent on a later attempt, after at least one failure.
    pub sent_after_retry: u64,
    /// Finished messages (sent or dead) by attempts taken: 1, 2, 3, 4+.
    pub finished: [u64; 4],
    /// Queue waits of at most `FLOW_BUCKETS_MS[i]` ms.
    pub wait_le: [u64; FLOW_BUCKETS],
    /// Claimed -> handed to the transport (prefetch queue, rate limiter).
    pub processing: Timing<FLOW_BUCKETS>,
    /// Time attempts were held by the transport's rate limiter.
    pub limited_sum_ms: u64,
    /// End to end, for attempts that finished their message.
    pub total: Timing<FLOW_BUCKETS>,
    /// Time the transport's circuit breaker was open.
    pub breaker_open_ms: u64,
    /// Messages cancelled (while queued or dead).
    pub cancelled: u64,
    /// Provider reports applied in this minute, by kind (see
    /// [`FEEDBACK_COUNTS`]): the minute of receipt, or for a report that
    /// overtook its message, the minute it was matched. A report counts
    /// under its message's channel and category and the transport whose
    /// webhook received it.
    pub delivered: u64,
    pub bounced_hard: u64,
    pub bounced_soft: u64,
    pub complained: u64,
    pub opened: u64,
    pub clicked: u64,
    pub unsubscribed: u64,
}

/// The report kinds the rollups count, by the names
/// [`FeedbackRecorded::counts`](super::FeedbackRecorded::counts) uses,
/// which are also their columns.
pub const FEEDBACK_COUNTS: [&str; 7] = [
    "delivered",
    "bounced_hard",
    "bounced_soft",
    "complained",
    "opened",
    "clicked",
    "unsubscribed",
];

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
    /// Provider reports received, as in [`MinuteMetrics`].
    pub delivered: u64,
    pub bounced_hard: u64,
    pub bounced_soft: u64,
    pub complained: u64,
    pub opened: u64,
    pub clicked: u64,
    pub unsubscribed: u64,
    /// Attempts' queue waits, for the series' mean wait per bucket.
    pub wait_count: u64,
    pub wait_sum_ms: u64,
}

impl SeriesCounts {
    /// The columns [`series_sql`](super::sql::series_sql) sums, after
    /// `minute`, in the order [`SeriesCounts::from_counts`] reads them.
    pub(crate) fn columns() -> impl Iterator<Item = &'static str> {
        ["sent", "failed", "retried", "dead"]
            .into_iter()
            .chain(FEEDBACK_COUNTS)
            .chain(["wait_count", "wait_sum_ms"])
    }

    /// A row read back: `counts` in [`SeriesCounts::columns`] order.
    pub(crate) fn from_counts(minute: DateTime<Utc>, counts: &[u64]) -> SeriesCounts {
        let at = |i: usize| counts.get(i).copied().unwrap_or(0);
        SeriesCounts {
            minute,
            sent: at(0),
            failed: at(1),
            retried: at(2),
            dead: at(3),
            delivered: at(4),
            bounced_hard: at(5),
            bounced_soft: at(6),
            complained: at(7),
            opened: at(8),
            clicked: at(9),
            unsubscribed: at(10),
            wait_count: at(11),
            wait_sum_ms: at(12),
        }
    }
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

/// Bounce reports received in one minute by one transport's webhook, for
/// messages of one channel and category, with one bounce type, reason and
/// recipient domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BounceCount {
    pub minute: DateTime<Utc>,
    pub transport: String,
    pub channel: String,
    /// Empty for messages without a category.
    pub category: String,
    /// `hard` or `soft`.
    pub bounce_type: String,
    /// The provider's reason normalised as failure errors are (ids,
    /// numbers and addresses blanked, length bounded); empty without one.
    pub reason: String,
    /// The recipient's domain (lower case); empty when the report names no
    /// email recipient.
    pub domain: String,
    pub bounces: u64,
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
        slots.extend([
            &mut self.delivered,
            &mut self.bounced_hard,
            &mut self.bounced_soft,
            &mut self.complained,
            &mut self.opened,
            &mut self.clicked,
            &mut self.unsubscribed,
        ]);
        slots
    }

    /// Counts `n` reports of `kind` (a [`FEEDBACK_COUNTS`] name; others,
    /// such as `rejected`, are not rolled up).
    pub(crate) fn count_feedback(&mut self, kind: &str, n: u64) {
        let slot = match kind {
            "delivered" => &mut self.delivered,
            "bounced_hard" => &mut self.bounced_hard,
            "bounced_soft" => &mut self.bounced_soft,
            "complained" => &mut self.complained,
            "opened" => &mut self.opened,
            "clicked" => &mut self.clicked,
            "unsubscribed" => &mut self.unsubscribed,
            _ => return,
        };
        *slot += n;
    }

    /// Bounces of either type.
    pub fn bounced(&self) -> u64 {
        self.bounced_hard + self.bounced_soft
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
            observe(
                ms,
                [
                    &mut self.wait_count,
                    &mut self.wait_sum_ms,
                    &mut self.wait_max_ms,
                ],
                &mut self.wait_le,
                &FLOW_BUCKETS_MS,
            );
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
            observe(
                ms,
                [
                    &mut self.latency_count,
                    &mut self.latency_sum_ms,
                    &mut self.latency_max_ms,
                ],
                &mut self.latency_le,
                &LATENCY_BUCKETS_MS,
            );
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
        columns.extend(FEEDBACK_COUNTS.map(String::from));
        columns
    });
    &COLUMNS
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

/// The rollups of one batch of applied provider reports: per message
/// channel and category in the minute of `now` (receipt, or the re-match
/// of a report kept unmatched: a minute already sealed is not reopened), under the
/// transport whose webhook received them. Both backends write these in
/// the same transaction as the reports' events.
pub(crate) fn feedback_rollup(
    plan: &super::feedback::Plan,
    transport: &str,
    now: DateTime<Utc>,
) -> (Vec<MinuteMetrics>, Vec<BounceCount>) {
    let minute = truncate_minute(now);
    let rows = plan
        .counts
        .iter()
        .map(|((channel, category), counts)| {
            let mut row = MinuteMetrics {
                minute,
                transport: transport.to_owned(),
                channel: channel.as_str().to_owned(),
                category: category.clone(),
                ..MinuteMetrics::default()
            };
            for (kind, n) in counts {
                row.count_feedback(kind, *n);
            }
            row
        })
        .filter(|row| row.values().iter().any(|v| *v > 0))
        .collect();
    let bounces = plan
        .bounces
        .iter()
        .map(
            |((channel, category, bounce_type, reason, domain), n)| BounceCount {
                minute,
                transport: transport.to_owned(),
                channel: channel.as_str().to_owned(),
                category: category.clone(),
                bounce_type: (*bounce_type).to_owned(),
                reason: reason.clone(),
                domain: domain.clone(),
                bounces: *n,
            },
        )
        .collect();
    (rows, bounces)
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

    /// The spans' bounds in the order [`rollup_spans_sql`](super::sql::rollup_spans_sql) binds them.
    pub(crate) fn bounds(&self) -> [DateTime<Utc>; 6] {
        let [(a, b), (c, d)] = self.minutes;
        [a, b, c, d, self.hours.0, self.hours.1]
    }
}

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
    fn every_feedback_count_has_its_column_and_its_slot() {
        let mut m = MinuteMetrics::default();
        for (i, kind) in FEEDBACK_COUNTS.iter().enumerate() {
            m.count_feedback(kind, i as u64 + 1);
            assert!(metric_columns().iter().any(|c| c == kind), "{kind}");
        }
        m.count_feedback("rejected", 5);
        let values = m.values();
        assert_eq!(values.len(), metric_columns().len());
        assert_eq!(values[values.len() - 7..], [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(m.bounced(), 5);
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
