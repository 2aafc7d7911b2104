//! The queries and rollups behind the analytics routes. Every figure comes
//! from the per-minute rollups (`metrics_minutely`), the indexed queue
//! depth counts and the engine's live state, never from scanning messages
//! or events, so a route's cost does not grow with the messages ever sent.
//!
//! [`queue_analytics`] is pure: it takes what was read and `now`, so its
//! arithmetic is tested exactly; [`load_queue_analytics`] does the reads.

mod deliverability;
mod flow;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::{Engine, TransportStatus};
pub use crate::storage::Scope;
use crate::storage::{
    DeadLetterSummary, DepthRow, FailureCount, LATENCY_BUCKETS_MS, MinuteMetrics, SeriesCounts,
    Storage, StorageError,
};

pub use deliverability::{
    BounceDomain, BounceReason, DeliverabilityPoint, DeliverabilityRates, DeliverabilityReport,
    DeliverabilityTotals, TransportDeliverability, deliverability,
};
pub use flow::{
    BottleneckReport, Finding, FlowGroup, FlowStages, FlowTimings, MessageFlow, TimeShare,
    TimingSummary, TransportBottleneck, TransportLimits, bottlenecks, message_flow,
};

/// Longest window the analytics answer for.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// Parses `15m`, `1h`, `24h`, `7d` (a positive number and a unit: s, m, h, d).
pub fn parse_span(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok().filter(|n| *n > 0)?;
    let seconds = match unit {
        "s" => number,
        "m" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        "d" => number.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// What a client asked for.
#[derive(Debug, Clone)]
pub struct AnalyticsQuery {
    pub window: Duration,
    pub bucket: Duration,
    pub scope: Scope,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DepthCounts {
    pub queued: u64,
    pub processing: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueDepth {
    pub total: u64,
    pub queued: u64,
    pub processing: u64,
    pub by_transport: BTreeMap<String, DepthCounts>,
    /// Keyed by priority, `"0"` to `"9"`: JSON keys are strings.
    #[schema(value_type = BTreeMap<String, DepthCounts>)]
    pub by_priority: BTreeMap<u8, DepthCounts>,
}

/// Messages sent per second over the last 60, 300 and 900 seconds (to
/// now, not to the start of the current minute; the minute in which the
/// span starts counts in proportion, as if its sends were even).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingRate {
    pub last1m: f64,
    pub last5m: f64,
    pub last15m: f64,
}

/// One bucket of the throughput series.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    /// Start of the bucket, RFC 3339.
    pub at: String,
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead: u64,
    /// Mean queue wait (due to claimed) of the bucket's attempts, ms;
    /// null without attempts.
    pub average_wait_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Throughput {
    /// Sent per second over the window.
    pub per_second: f64,
    pub per_minute: f64,
    pub per_hour: f64,
    pub series: Vec<SeriesPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    pub transport: String,
    /// running | paused | stopped
    pub state: String,
    /// closed | open | half_open
    pub circuit: String,
    pub in_flight: usize,
    pub concurrency: usize,
    /// This node holds the transport's lease and delivers for it.
    pub active_here: bool,
    pub last_activity: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportFigures {
    pub transport: String,
    pub sent: u64,
    /// Failed attempts.
    pub failed: u64,
    pub retried: u64,
    pub dead: u64,
    pub deferred: u64,
    /// failed / (sent + failed), 0 without attempts.
    pub failure_rate: f64,
    pub average_latency_ms: Option<f64>,
    pub average_wait_ms: Option<f64>,
    pub depth: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriorityCount {
    pub priority: u8,
    pub queued: u64,
    pub processing: u64,
}

/// `GET /api/queue/analytics`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueAnalytics {
    pub window: String,
    pub bucket: String,
    pub from: String,
    pub to: String,
    pub queue_depth: QueueDepth,
    pub processing_rate: ProcessingRate,
    /// Mean time from available to claimed over the window, ms; null
    /// without attempts.
    pub average_wait_time: Option<f64>,
    /// failed / (sent + failed) over the window.
    pub failure_rate: f64,
    pub throughput_metrics: Throughput,
    pub worker_status: Vec<WorkerStatus>,
    pub transport_breakdown: Vec<TransportFigures>,
    pub priority_distribution: Vec<PriorityCount>,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn span_text(span: Duration) -> String {
    let s = span.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `part / sent`; `None` when nothing was sent.
fn over_sent(part: u64, sent: u64) -> Option<f64> {
    (sent > 0).then(|| ratio(part, sent))
}

fn mean(sum: u64, count: u64) -> Option<f64> {
    (count > 0).then(|| sum as f64 / count as f64)
}

/// The start of the minute holding `now`, and the window's first minute.
pub fn window_bounds(now: DateTime<Utc>, window: Duration) -> (DateTime<Utc>, DateTime<Utc>) {
    let current = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    let window = TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
    // The window ends with the current (partial) minute.
    (
        current + TimeDelta::minutes(1) - window,
        current + TimeDelta::minutes(1),
    )
}

/// Messages sent per second over the `span` that ends `now`, from minute
/// rows. A minute row holds what happened from its start until the end of
/// its minute or until `now`, whichever comes first, and counts for the
/// share of that time inside the span: the current minute's row counts
/// whole and the row the span starts in counts in part, as if its sends
/// were spread evenly over its minute. So a steady rate reads the same at
/// any moment of a minute, instead of the partial minute so far over a
/// whole one.
fn sent_per_second(rows: &[&MinuteMetrics], now: DateTime<Utc>, span: TimeDelta) -> f64 {
    let since = now - span;
    let sent: f64 = rows
        .iter()
        .filter(|m| m.minute <= now)
        .map(|m| {
            let end = (m.minute + TimeDelta::minutes(1)).min(now);
            let held = (end - m.minute).num_milliseconds();
            let inside = (end - m.minute.max(since)).num_milliseconds().max(0);
            // A row of the minute that starts now holds what happened now.
            let share = if held > 0 {
                inside as f64 / held as f64
            } else {
                1.0
            };
            m.sent as f64 * share
        })
        .sum();
    sent / span.as_seconds_f64()
}

/// Computes the analytics from rows already read: `totals` (rollups over
/// the window, summed or not), `series` (the window's counts in the
/// query's scope, in rows no longer than the bucket) and `recent` (the
/// minute rows of the last 15 minutes: the current one and the 15 before
/// it).
pub fn queue_analytics(
    query: &AnalyticsQuery,
    now: DateTime<Utc>,
    depth: &[DepthRow],
    totals: &[MinuteMetrics],
    series: &[SeriesCounts],
    recent: &[MinuteMetrics],
    statuses: &[TransportStatus],
) -> QueueAnalytics {
    let scope = &query.scope;
    let depth: Vec<&DepthRow> = depth.iter().filter(|d| scope.keeps_depth(d)).collect();
    let recent: Vec<&MinuteMetrics> = recent.iter().filter(|m| scope.keeps_rollup(m)).collect();
    let (from, to) = window_bounds(now, query.window);

    let mut queue_depth = QueueDepth {
        total: 0,
        queued: 0,
        processing: 0,
        by_transport: BTreeMap::new(),
        by_priority: BTreeMap::new(),
    };
    for row in &depth {
        queue_depth.queued += row.queued;
        queue_depth.processing += row.processing;
        for counts in [
            queue_depth
                .by_transport
                .entry(row.transport.clone())
                .or_default(),
            queue_depth
                .by_priority
                .entry(row.priority.get())
                .or_default(),
        ] {
            counts.queued += row.queued;
            counts.processing += row.processing;
        }
    }
    queue_depth.total = queue_depth.queued + queue_depth.processing;

    let processing_rate = ProcessingRate {
        last1m: sent_per_second(&recent, now, TimeDelta::minutes(1)),
        last5m: sent_per_second(&recent, now, TimeDelta::minutes(5)),
        last15m: sent_per_second(&recent, now, TimeDelta::minutes(15)),
    };

    let in_window = |minute: DateTime<Utc>| minute >= from && minute < to;
    let mut per_transport: BTreeMap<String, MinuteMetrics> = BTreeMap::new();
    for m in totals
        .iter()
        .filter(|m| scope.keeps_rollup(m) && in_window(m.minute))
    {
        per_transport
            .entry(m.transport.clone())
            .or_default()
            .merge(m);
    }
    let mut points: BTreeMap<DateTime<Utc>, SeriesPoint> = BTreeMap::new();
    let bucket = TimeDelta::from_std(query.bucket).unwrap_or(TimeDelta::minutes(1));
    // A bucket's mean wait is over all its attempts, not a mean of means.
    let mut waits: BTreeMap<DateTime<Utc>, (u64, u64)> = BTreeMap::new();
    for m in series.iter().filter(|m| in_window(m.minute)) {
        let start = m.minute.duration_trunc(bucket).unwrap_or(m.minute);
        let point = points.entry(start).or_insert_with(|| SeriesPoint {
            at: rfc3339(start),
            sent: 0,
            failed: 0,
            retried: 0,
            dead: 0,
            average_wait_ms: None,
        });
        point.sent += m.sent;
        point.failed += m.failed;
        point.retried += m.retried;
        point.dead += m.dead;
        let wait = waits.entry(start).or_default();
        wait.0 += m.wait_sum_ms;
        wait.1 += m.wait_count;
    }
    for (start, (sum, count)) in waits {
        if let Some(point) = points.get_mut(&start) {
            point.average_wait_ms = mean(sum, count);
        }
    }
    let sent: u64 = per_transport.values().map(|t| t.sent).sum();
    let failed: u64 = per_transport.values().map(|t| t.failed).sum();
    let wait_sum: u64 = per_transport.values().map(|t| t.wait_sum_ms).sum();
    let wait_count: u64 = per_transport.values().map(|t| t.wait_count).sum();
    let window_seconds = query.window.as_secs_f64().max(1.0);
    let per_second = sent as f64 / window_seconds;

    let mut names: Vec<String> = per_transport.keys().cloned().collect();
    names.extend(queue_depth.by_transport.keys().cloned());
    names.sort();
    names.dedup();
    let transport_breakdown = names
        .into_iter()
        .map(|name| {
            let t = per_transport.get(&name).cloned().unwrap_or_default();
            TransportFigures {
                failure_rate: ratio(t.failed, t.sent + t.failed),
                average_latency_ms: mean(t.latency_sum_ms, t.latency_count),
                average_wait_ms: mean(t.wait_sum_ms, t.wait_count),
                depth: queue_depth.by_transport.get(&name).map_or(0, |d| d.queued),
                sent: t.sent,
                failed: t.failed,
                retried: t.retried,
                dead: t.dead,
                deferred: t.deferred,
                transport: name,
            }
        })
        .collect();

    let worker_status = statuses
        .iter()
        .filter(|s| scope.keeps_transport(&s.name))
        .map(|s| WorkerStatus {
            transport: s.name.clone(),
            state: if !s.running {
                "stopped"
            } else if s.paused {
                "paused"
            } else {
                "running"
            }
            .to_owned(),
            circuit: s.circuit.as_str().to_owned(),
            in_flight: s.in_flight,
            concurrency: s.concurrency,
            active_here: s.holds_lease,
            last_activity: s.last_activity.map(rfc3339),
            last_error: s.last_error.clone(),
        })
        .collect();

    let priority_distribution = queue_depth
        .by_priority
        .iter()
        .rev()
        .map(|(priority, counts)| PriorityCount {
            priority: *priority,
            queued: counts.queued,
            processing: counts.processing,
        })
        .collect();

    QueueAnalytics {
        window: span_text(query.window),
        bucket: span_text(query.bucket),
        from: rfc3339(from),
        to: rfc3339(to),
        queue_depth,
        processing_rate,
        average_wait_time: mean(wait_sum, wait_count),
        failure_rate: ratio(failed, sent + failed),
        throughput_metrics: Throughput {
            per_second,
            per_minute: per_second * 60.0,
            per_hour: per_second * 3600.0,
            series: points.into_values().collect(),
        },
        worker_status,
        transport_breakdown,
        priority_distribution,
    }
}

/// Estimates the `quantile` (0..1) of attempt latency from cumulative
/// histogram buckets, interpolating linearly inside the bucket that holds
/// it; past the last bucket, the observed maximum. `None` without data.
/// The bucket that holds the maximum ends at the maximum rather than at
/// its bound: nothing took longer, and interpolating up to the bound
/// would read every high quantile as the maximum.
pub fn latency_quantile(totals: &MinuteMetrics, quantile: f64) -> Option<f64> {
    histogram_quantile(
        &LATENCY_BUCKETS_MS,
        &totals.latency_le,
        totals.latency_count,
        totals.latency_max_ms,
        quantile,
    )
}

/// The same estimate over any cumulative histogram: `le[i]` counts the
/// observations of at most `bounds[i]` ms, of `count` in all.
pub fn histogram_quantile(
    bounds: &[u64],
    le: &[u64],
    count: u64,
    max_ms: u64,
    quantile: f64,
) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let target = quantile.clamp(0.0, 1.0) * count as f64;
    let mut below_count = 0u64;
    let mut below_bound = 0.0;
    for (bound, cumulative) in bounds.iter().zip(le) {
        let (bound, cumulative) = (*bound as f64, *cumulative);
        if cumulative as f64 >= target && cumulative > below_count {
            let share = (target - below_count as f64) / (cumulative - below_count) as f64;
            let top = bound.min(max_ms as f64).max(below_bound);
            let estimate = below_bound + share.clamp(0.0, 1.0) * (top - below_bound);
            return Some(estimate.min(max_ms as f64));
        }
        below_count = cumulative;
        below_bound = bound;
    }
    Some(max_ms as f64)
}

/// Latency of attempts, ms.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub average: Option<f64>,
    pub max: Option<f64>,
}

/// One transport's performance over the window.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportPerformance {
    pub transport: String,
    pub kind: String,
    /// Attempts made (sent + failed).
    pub attempts: u64,
    pub sent: u64,
    pub failed: u64,
    pub dead: u64,
    /// sent / attempts; null without attempts.
    pub success_rate: Option<f64>,
    pub latency_ms: LatencySummary,
    /// attempts / (sent + dead): how many tries a finished message took.
    pub attempts_per_message: Option<f64>,
    /// 0-100, see README ("Reliability score").
    pub reliability_score: Option<f64>,
    /// From the transport's `cost_per_message`; null when not configured.
    pub cost_per_message: Option<f64>,
    /// cost_per_message * attempts.
    pub total_cost: Option<f64>,
    /// Provider reports over messages sent in the window (README,
    /// "Deliverability"): delivered / sent, bounced (hard and soft) /
    /// sent, complained / sent; null when none was sent.
    pub delivery_rate: Option<f64>,
    pub bounce_rate: Option<f64>,
    pub complaint_rate: Option<f64>,
}

/// `GET /api/analytics/transport-performance`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceReport {
    pub window: String,
    pub from: String,
    pub to: String,
    pub transports: Vec<TransportPerformance>,
}

/// p95 at or under this counts as fully fast in the reliability score.
const FAST_P95_MS: f64 = 1000.0;

/// `100 * (0.7 * success_rate + 0.3 * speed)`, where speed is 1 while p95
/// is at most one second and `1 s / p95` beyond.
pub fn reliability_score(success_rate: f64, p95_ms: Option<f64>) -> f64 {
    let speed = match p95_ms {
        Some(p95) if p95 > FAST_P95_MS => FAST_P95_MS / p95,
        _ => 1.0,
    };
    (100.0 * (0.7 * success_rate + 0.3 * speed) * 10.0).round() / 10.0
}

/// Computes per-transport performance from rollups in the window.
/// `transports` is every configured transport: (name, kind, cost).
pub fn transport_performance(
    window: Duration,
    now: DateTime<Utc>,
    minutes: &[MinuteMetrics],
    transports: &[(String, String, Option<f64>)],
    scope: &Scope,
) -> PerformanceReport {
    let (from, to) = window_bounds(now, window);
    let mut totals: BTreeMap<&str, MinuteMetrics> = BTreeMap::new();
    for m in minutes
        .iter()
        .filter(|m| m.minute >= from && m.minute < to && scope.keeps_rollup(m))
    {
        totals.entry(m.transport.as_str()).or_default().merge(m);
    }
    let rows = transports
        .iter()
        .filter(|(name, _, _)| scope.keeps_transport(name))
        .map(|(name, kind, cost)| {
            let t = totals.get(name.as_str()).cloned().unwrap_or_default();
            let attempts = t.sent + t.failed;
            let success_rate = (attempts > 0).then(|| ratio(t.sent, attempts));
            let p95 = latency_quantile(&t, 0.95);
            TransportPerformance {
                transport: name.clone(),
                kind: kind.clone(),
                attempts,
                sent: t.sent,
                failed: t.failed,
                dead: t.dead,
                success_rate,
                latency_ms: LatencySummary {
                    p50: latency_quantile(&t, 0.50),
                    p95,
                    p99: latency_quantile(&t, 0.99),
                    average: mean(t.latency_sum_ms, t.latency_count),
                    max: (t.latency_count > 0).then_some(t.latency_max_ms as f64),
                },
                attempts_per_message: (t.sent + t.dead > 0)
                    .then(|| ratio(attempts, t.sent + t.dead)),
                reliability_score: success_rate.map(|rate| reliability_score(rate, p95)),
                cost_per_message: *cost,
                total_cost: cost.map(|c| c * attempts as f64),
                delivery_rate: over_sent(t.delivered, t.sent),
                bounce_rate: over_sent(t.bounced(), t.sent),
                complaint_rate: over_sent(t.complained, t.sent),
            }
        })
        .collect();
    PerformanceReport {
        window: span_text(window),
        from: rfc3339(from),
        to: rfc3339(to),
        transports: rows,
    }
}

/// Failures of one transport over the window.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportFailures {
    pub transport: String,
    /// Failed attempts.
    pub failed: u64,
    pub retried: u64,
    pub dead: u64,
    /// Failed attempts by class.
    pub by_class: BTreeMap<String, u64>,
}

/// One normalised error and how often it happened.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrequentError {
    pub transport: String,
    pub class: String,
    pub error: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterTransport {
    pub transport: String,
    pub count: u64,
    pub oldest: Option<String>,
}

/// The dead-letter queue now (not limited to the window).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterOverview {
    pub count: u64,
    pub oldest: Option<String>,
    pub by_transport: Vec<DeadLetterTransport>,
}

/// `GET /api/queue/failures`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    pub window: String,
    pub from: String,
    pub to: String,
    pub total_failures: u64,
    /// Failed attempts by class: timeout, connection, rejected, permanent, transient.
    pub by_class: BTreeMap<String, u64>,
    pub by_transport: Vec<TransportFailures>,
    /// The most frequent normalised errors, most frequent first.
    pub top_errors: Vec<FrequentError>,
    /// Of the messages that failed at least once and then finished, the
    /// share that was sent in the end; null when none finished.
    pub retry_success_rate: Option<f64>,
    /// Finished messages by attempts taken: "1", "2", "3", "4+".
    pub attempts_distribution: BTreeMap<String, u64>,
    pub dead_letters: DeadLetterOverview,
}

/// How many frequent errors the failure report lists.
const TOP_ERRORS: usize = 10;

/// Computes the failure report from rollups in the window and the current
/// dead letters.
pub fn failure_report(
    window: Duration,
    now: DateTime<Utc>,
    minutes: &[MinuteMetrics],
    failures: &[FailureCount],
    dead: &[DeadLetterSummary],
    scope: &Scope,
) -> FailureReport {
    let (from, to) = window_bounds(now, window);
    let in_window = |minute: DateTime<Utc>| minute >= from && minute < to;

    let mut totals: BTreeMap<&str, MinuteMetrics> = BTreeMap::new();
    for m in minutes
        .iter()
        .filter(|m| scope.keeps_rollup(m) && in_window(m.minute))
    {
        totals.entry(m.transport.as_str()).or_default().merge(m);
    }
    let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
    let mut class_by_transport: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    let mut errors: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for f in failures
        .iter()
        .filter(|f| scope.keeps(&f.transport, &f.channel, &f.category) && in_window(f.minute))
    {
        *by_class.entry(f.class.clone()).or_default() += f.failures;
        *class_by_transport
            .entry(f.transport.as_str())
            .or_default()
            .entry(f.class.clone())
            .or_default() += f.failures;
        *errors
            .entry((f.transport.as_str(), f.class.as_str(), f.error.as_str()))
            .or_default() += f.failures;
    }
    let mut top_errors: Vec<FrequentError> = errors
        .into_iter()
        .map(|((transport, class, error), count)| FrequentError {
            transport: transport.to_owned(),
            class: class.to_owned(),
            error: error.to_owned(),
            count,
        })
        .collect();
    top_errors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.error.cmp(&b.error)));
    top_errors.truncate(TOP_ERRORS);

    let mut all = MinuteMetrics::default();
    for t in totals.values() {
        all.merge(t);
    }
    let by_transport = totals
        .iter()
        .filter(|(_, t)| t.failed > 0 || t.dead > 0)
        .map(|(name, t)| TransportFailures {
            transport: (*name).to_owned(),
            failed: t.failed,
            retried: t.retried,
            dead: t.dead,
            by_class: class_by_transport.get(name).cloned().unwrap_or_default(),
        })
        .collect();
    let recovered_or_lost = all.sent_after_retry + all.dead;
    let attempts_distribution = ["1", "2", "3", "4+"]
        .iter()
        .zip(all.finished)
        .map(|(label, count)| ((*label).to_owned(), count))
        .collect();

    let mut dead_by_transport: BTreeMap<&str, DeadLetterTransport> = BTreeMap::new();
    for d in dead
        .iter()
        .filter(|d| scope.keeps(&d.transport, d.channel.as_str(), &d.category))
    {
        let entry = dead_by_transport
            .entry(d.transport.as_str())
            .or_insert_with(|| DeadLetterTransport {
                transport: d.transport.clone(),
                count: 0,
                oldest: None,
            });
        entry.count += d.count;
        let oldest = d.oldest.map(rfc3339);
        if entry.oldest.is_none() || (oldest.is_some() && oldest < entry.oldest) {
            entry.oldest = oldest;
        }
    }
    let dead_letters = DeadLetterOverview {
        count: dead_by_transport.values().map(|d| d.count).sum(),
        oldest: dead_by_transport
            .values()
            .filter_map(|d| d.oldest.clone())
            .min(),
        by_transport: dead_by_transport.into_values().collect(),
    };

    FailureReport {
        window: span_text(window),
        from: rfc3339(from),
        to: rfc3339(to),
        total_failures: all.failed,
        by_class,
        by_transport,
        top_errors,
        retry_success_rate: (recovered_or_lost > 0)
            .then(|| ratio(all.sent_after_retry, recovered_or_lost)),
        attempts_distribution,
        dead_letters,
    }
}

/// Reads what [`queue_analytics`] needs and computes it.
pub async fn load_queue_analytics(
    storage: &dyn Storage,
    engine: Option<&Engine>,
    query: &AnalyticsQuery,
    now: DateTime<Utc>,
) -> Result<QueueAnalytics, StorageError> {
    let depth = storage.queue_depth().await?;
    let (from, to) = window_bounds(now, query.window);
    let totals = storage.rollup_totals(from, to).await?;
    // A series in whole hours reads hourly rows where they are sealed:
    // a week is 168 rows per key, not 10,080.
    let hourly = query.bucket.as_secs().is_multiple_of(3600);
    let series = storage
        .series_counts(from, to, hourly, &query.scope)
        .await?;
    // The last 15 minutes reach into the minute that began 15 minutes
    // before the current one.
    let (recent_from, _) = window_bounds(now, Duration::from_secs(16 * 60));
    let recent = storage.minute_metrics(recent_from, to).await?;
    let statuses = match engine {
        Some(engine) => engine.status().await.unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(queue_analytics(
        query, now, &depth, &totals, &series, &recent, &statuses,
    ))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::Priority;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 30, 20)
            .single()
            .unwrap()
    }

    fn minute(minutes_ago: i64, transport: &str, sent: u64, failed: u64) -> MinuteMetrics {
        let start =
            now().duration_trunc(TimeDelta::minutes(1)).unwrap() - TimeDelta::minutes(minutes_ago);
        MinuteMetrics {
            minute: start,
            transport: transport.into(),
            sent,
            failed,
            retried: failed,
            latency_count: sent + failed,
            latency_sum_ms: 10 * (sent + failed),
            wait_count: sent + failed,
            wait_sum_ms: 100 * (sent + failed),
            ..MinuteMetrics::default()
        }
    }

    fn series(minutes: &[MinuteMetrics]) -> Vec<SeriesCounts> {
        scoped(minutes, &Scope::default())
    }

    /// What `series_counts` reads for `scope`: its rows, summed per minute.
    fn scoped(minutes: &[MinuteMetrics], scope: &Scope) -> Vec<SeriesCounts> {
        let mut sums: BTreeMap<DateTime<Utc>, SeriesCounts> = BTreeMap::new();
        for m in minutes.iter().filter(|m| scope.keeps_rollup(m)) {
            let sum = sums.entry(m.minute).or_insert_with(|| SeriesCounts {
                minute: m.minute,
                ..SeriesCounts::default()
            });
            sum.sent += m.sent;
            sum.failed += m.failed;
            sum.retried += m.retried;
            sum.dead += m.dead;
            sum.wait_count += m.wait_count;
            sum.wait_sum_ms += m.wait_sum_ms;
        }
        sums.into_values().collect()
    }

    fn depth(transport: &str, priority: i64, queued: u64, processing: u64) -> DepthRow {
        DepthRow {
            transport: transport.into(),
            priority: Priority::new(priority).unwrap(),
            channel: crate::domain::Channel::Email,
            category: String::new(),
            queued,
            processing,
            oldest_available: None,
        }
    }

    fn query(window: &str, bucket: &str) -> AnalyticsQuery {
        AnalyticsQuery {
            window: parse_span(window).unwrap(),
            bucket: parse_span(bucket).unwrap(),
            scope: Scope::default(),
        }
    }

    #[test]
    fn spans_parse_with_units() {
        assert_eq!(parse_span("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_span("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_span("0m"), None);
        assert_eq!(parse_span("5"), None);
        assert_eq!(parse_span("5w"), None);
        assert_eq!(span_text(Duration::from_secs(86_400)), "1d");
    }

    #[test]
    fn figures_are_exact_from_known_rollups() {
        let minutes = vec![
            minute(0, "mail", 30, 0),    // current minute
            minute(3, "mail", 60, 20),   // within 5 minutes
            minute(10, "hooks", 90, 10), // within 15 minutes
            minute(40, "mail", 600, 0),  // outside a 15m window, inside 1h
        ];
        let depth = vec![
            depth("mail", 9, 5, 2),
            depth("mail", 4, 10, 0),
            depth("hooks", 4, 1, 1),
        ];
        let a = queue_analytics(
            &query("15m", "1m"),
            now(),
            &depth,
            &minutes,
            &series(&minutes),
            &minutes,
            &[],
        );
        assert_eq!(
            (
                a.queue_depth.total,
                a.queue_depth.queued,
                a.queue_depth.processing
            ),
            (19, 16, 3)
        );
        assert_eq!(
            a.queue_depth.by_priority[&4],
            DepthCounts {
                queued: 11,
                processing: 1
            }
        );
        assert_eq!(a.processing_rate.last1m, 0.5); // 30 in the current minute, none in the 40 s before
        assert_eq!(a.processing_rate.last5m, 90.0 / 300.0);
        assert_eq!(a.processing_rate.last15m, 180.0 / 900.0);
        assert_eq!(a.failure_rate, 30.0 / 210.0);
        assert_eq!(a.average_wait_time, Some(100.0));
        assert_eq!(a.throughput_metrics.per_second, 180.0 / 900.0);
        assert_eq!(a.throughput_metrics.series.len(), 3);
        let mail = a
            .transport_breakdown
            .iter()
            .find(|t| t.transport == "mail")
            .unwrap();
        assert_eq!((mail.sent, mail.failed, mail.depth), (90, 20, 15));
        assert_eq!(mail.failure_rate, 20.0 / 110.0);
        assert_eq!(mail.average_latency_ms, Some(10.0));
        assert_eq!(a.priority_distribution.first().map(|p| p.priority), Some(9));

        let hour = queue_analytics(
            &query("1h", "1h"),
            now(),
            &depth,
            &minutes,
            &series(&minutes),
            &minutes,
            &[],
        );
        assert_eq!(
            hour.throughput_metrics
                .series
                .iter()
                .map(|p| p.sent)
                .sum::<u64>(),
            780
        );
        assert!(hour.throughput_metrics.series.len() <= 2, "hourly buckets");
    }

    #[test]
    fn the_series_carries_each_bucket_s_mean_wait_over_its_attempts() {
        let mut slow = minute(2, "mail", 10, 0);
        slow.wait_sum_ms = 10 * 400;
        let fast = minute(1, "hooks", 30, 0); // 100 ms each
        let quiet = minute(0, "mail", 0, 0);
        let minutes = [slow, fast, quiet];
        let points = |bucket| {
            queue_analytics(
                &query("15m", bucket),
                now(),
                &[],
                &minutes,
                &series(&minutes),
                &minutes,
                &[],
            )
            .throughput_metrics
            .series
        };
        let by_minute: Vec<Option<f64>> = points("1m").iter().map(|p| p.average_wait_ms).collect();
        assert_eq!(by_minute, [Some(400.0), Some(100.0), None]);
        // Over a bucket, the mean of its 40 attempts, not of the minutes' means.
        let five = points("5m");
        assert_eq!(five.len(), 2, "12:25 and 12:30");
        assert_eq!(five[0].average_wait_ms, Some((4000.0 + 3000.0) / 40.0));
        assert_eq!(five[1].average_wait_ms, None);
    }

    #[test]
    fn quantiles_interpolate_inside_buckets_up_to_the_maximum() {
        // 10 attempts: 4 in (5, 10] ms, 6 in (20, 50] ms, the longest 40 ms.
        let t = MinuteMetrics {
            latency_count: 10,
            latency_max_ms: 40,
            latency_le: [0, 0, 0, 4, 4, 10, 10, 10, 10, 10, 10, 10, 10],
            ..MinuteMetrics::default()
        };
        assert_eq!(latency_quantile(&t, 0.4), Some(10.0));
        // Halfway through 20..40: nothing in the bucket took over 40 ms.
        assert_eq!(latency_quantile(&t, 0.7), Some(30.0));
        assert_eq!(latency_quantile(&t, 1.0), Some(40.0));
        assert_eq!(latency_quantile(&MinuteMetrics::default(), 0.5), None);
        let slow = MinuteMetrics {
            latency_count: 2,
            latency_max_ms: 30_000,
            ..MinuteMetrics::default()
        };
        assert_eq!(
            latency_quantile(&slow, 0.5),
            Some(30_000.0),
            "beyond the last bucket"
        );
    }

    #[test]
    fn quantiles_of_a_fast_transport_stay_apart() {
        // 80 attempts, ten each of 1 to 8 ms.
        let mut t = MinuteMetrics::default();
        for ms in 1..=8 {
            for _ in 0..10 {
                let mut one = MinuteMetrics {
                    latency_count: 1,
                    latency_sum_ms: ms,
                    latency_max_ms: ms,
                    ..MinuteMetrics::default()
                };
                for (le, bound) in one.latency_le.iter_mut().zip(LATENCY_BUCKETS_MS) {
                    *le = u64::from(ms <= bound);
                }
                t.merge(&one);
            }
        }
        let [p50, p95, p99] = [0.5, 0.95, 0.99].map(|q| latency_quantile(&t, q).unwrap());
        assert!(
            1.0 < p50 && p50 < p95 && p95 < p99 && p99 < 8.0,
            "{p50} {p95} {p99}"
        );
    }

    #[test]
    fn a_steady_rate_reads_the_same_at_any_moment_of_the_minute() {
        let start = Utc
            .with_ymd_and_hms(2026, 1, 1, 12, 30, 0)
            .single()
            .unwrap();
        let sent = |minute, sent| MinuteMetrics {
            minute,
            transport: "mail".into(),
            sent,
            ..MinuteMetrics::default()
        };
        for offset in [0, 1, 15, 30, 45, 59] {
            let now = start + TimeDelta::seconds(offset);
            // One a second: 60 in every earlier minute, one for each
            // second of the current minute that has passed.
            let mut minutes: Vec<MinuteMetrics> = (1..=16)
                .map(|back| sent(start - TimeDelta::minutes(back), 60))
                .collect();
            minutes.push(sent(start, offset as u64));
            let a = queue_analytics(
                &query("15m", "1m"),
                now,
                &[],
                &minutes,
                &series(&minutes),
                &minutes,
                &[],
            );
            let rate = &a.processing_rate;
            for (span, per_second) in [
                ("1m", rate.last1m),
                ("5m", rate.last5m),
                ("15m", rate.last15m),
            ] {
                assert!(
                    (per_second - 1.0).abs() < 1e-9,
                    "{offset} s into the minute, last {span}: {per_second}/s"
                );
            }
        }
    }

    #[test]
    fn the_rate_counts_the_minute_it_starts_in_by_its_share() {
        // 12:30:20: the last 60 s are 40 s of 12:29 (120 sent) and the 20 s
        // of 12:30 so far (10 sent).
        let now = Utc
            .with_ymd_and_hms(2026, 1, 1, 12, 30, 20)
            .single()
            .unwrap();
        let minutes = [
            MinuteMetrics {
                minute: now - TimeDelta::seconds(80),
                transport: "mail".into(),
                sent: 120,
                ..MinuteMetrics::default()
            },
            MinuteMetrics {
                minute: now - TimeDelta::seconds(20),
                transport: "mail".into(),
                sent: 10,
                ..MinuteMetrics::default()
            },
        ];
        let rows: Vec<&MinuteMetrics> = minutes.iter().collect();
        let rate = sent_per_second(&rows, now, TimeDelta::minutes(1));
        assert!((rate - 90.0 / 60.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn reliability_weighs_success_and_speed() {
        assert_eq!(reliability_score(1.0, Some(200.0)), 100.0);
        assert_eq!(reliability_score(0.5, None), 65.0);
        assert_eq!(reliability_score(1.0, Some(2000.0)), 85.0);
    }

    #[test]
    fn a_transport_filter_narrows_everything() {
        let minutes = vec![minute(1, "mail", 10, 0), minute(1, "hooks", 5, 5)];
        let depth = vec![depth("mail", 4, 3, 0), depth("hooks", 4, 7, 0)];
        let mut q = query("1h", "1m");
        q.scope.transport = Some("hooks".into());
        let a = queue_analytics(
            &q,
            now(),
            &depth,
            &minutes,
            &scoped(&minutes, &q.scope),
            &minutes,
            &[],
        );
        assert_eq!(a.queue_depth.total, 7);
        assert_eq!(a.failure_rate, 0.5);
        assert_eq!(a.transport_breakdown.len(), 1);
    }
}
