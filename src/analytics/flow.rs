//! Where a message's time goes: the message-flow journey (queue wait,
//! processing, delivery, end to end, with the counts at each stage) and
//! the per-transport bottleneck report, whose findings name the setting
//! to change. Pure functions over rollups, indexed depth counts and the
//! engine's live state, like the rest of [`crate::analytics`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{DepthRow, window_bounds};
use super::{Scope, histogram_quantile, latency_quantile, mean, ratio, rfc3339, span_text};
use crate::engine::TransportStatus;
use crate::storage::{FLOW_BUCKETS_MS, MinuteMetrics};

/// Percentiles and mean of one timing, ms; null without data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimingSummary {
    pub count: u64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub average: Option<f64>,
    pub max: Option<u64>,
}

fn flow_summary(le: &[u64], count: u64, sum: u64, max: u64) -> TimingSummary {
    let q = |quantile| histogram_quantile(&FLOW_BUCKETS_MS, le, count, max, quantile);
    TimingSummary {
        count,
        p50: q(0.5),
        p95: q(0.95),
        p99: q(0.99),
        average: mean(sum, count),
        max: (count > 0).then_some(max),
    }
}

/// How many messages are at, or went through, each stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowStages {
    /// Waiting now (live count).
    pub queued_now: u64,
    /// Claimed now (live count).
    pub processing_now: u64,
    /// Claims in the window: each ends sent, failed or handed back.
    pub claimed: u64,
    pub sent: u64,
    /// Failed attempts scheduled again.
    pub retried: u64,
    /// Failed attempts that dead-lettered their message.
    pub dead: u64,
    /// Claims handed back unattempted (paused, breaker open, shutdown).
    pub deferred: u64,
    /// Messages cancelled in the window.
    pub cancelled: u64,
}

/// The journey's timings, ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowTimings {
    /// Due (enqueued, scheduled or retry time) -> claimed.
    pub queue_wait: TimingSummary,
    /// Claimed -> handed to the transport (prefetch queue, rate limiter).
    pub processing: TimingSummary,
    /// The transport's call.
    pub delivery: TimingSummary,
    /// Due -> finished (sent or dead), across all attempts.
    pub total: TimingSummary,
}

/// The flow of one transport or one channel.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowGroup {
    pub name: String,
    pub stages: FlowStages,
    pub timings: FlowTimings,
}

/// `GET /api/analytics/message-flow`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageFlow {
    pub window: String,
    pub from: String,
    pub to: String,
    pub stages: FlowStages,
    pub timings: FlowTimings,
    pub by_transport: Vec<FlowGroup>,
    pub by_channel: Vec<FlowGroup>,
}

fn stages(m: &MinuteMetrics) -> FlowStages {
    FlowStages {
        queued_now: 0,
        processing_now: 0,
        claimed: m.sent + m.failed + m.deferred,
        sent: m.sent,
        retried: m.retried,
        dead: m.dead,
        deferred: m.deferred,
        cancelled: m.cancelled,
    }
}

fn timings(m: &MinuteMetrics) -> FlowTimings {
    let latency = |quantile| latency_quantile(m, quantile);
    FlowTimings {
        queue_wait: flow_summary(&m.wait_le, m.wait_count, m.wait_sum_ms, m.wait_max_ms),
        processing: flow_summary(
            &m.processing.le,
            m.processing.count,
            m.processing.sum_ms,
            m.processing.max_ms,
        ),
        delivery: TimingSummary {
            count: m.latency_count,
            p50: latency(0.5),
            p95: latency(0.95),
            p99: latency(0.99),
            average: mean(m.latency_sum_ms, m.latency_count),
            max: (m.latency_count > 0).then_some(m.latency_max_ms),
        },
        total: flow_summary(&m.total.le, m.total.count, m.total.sum_ms, m.total.max_ms),
    }
}

/// The journey over the window, overall, per attempting transport and
/// per channel. Live counts come from `depth` (by the transport messages
/// are queued for, which for a group is the group).
pub fn message_flow(
    window: Duration,
    now: DateTime<Utc>,
    minutes: &[MinuteMetrics],
    depth: &[DepthRow],
    scope: &Scope,
) -> MessageFlow {
    let (from, to) = window_bounds(now, window);
    let mut all = MinuteMetrics::default();
    let mut by_transport: BTreeMap<&str, MinuteMetrics> = BTreeMap::new();
    let mut by_channel: BTreeMap<&str, MinuteMetrics> = BTreeMap::new();
    for m in minutes
        .iter()
        .filter(|m| m.minute >= from && m.minute < to && scope.keeps_rollup(m))
        .filter(|m| !m.channel.is_empty())
    // a transport's own row: no messages
    {
        all.merge(m);
        by_transport.entry(&m.transport).or_default().merge(m);
        by_channel.entry(&m.channel).or_default().merge(m);
    }
    let mut live: BTreeMap<(bool, &str), (u64, u64)> = BTreeMap::new();
    for d in depth.iter().filter(|d| scope.keeps_depth(d)) {
        for key in [(true, d.transport.as_str()), (false, d.channel.as_str())] {
            let counts = live.entry(key).or_default();
            counts.0 += d.queued;
            counts.1 += d.processing;
        }
    }
    let group = |by_transport: bool, name: &str, m: Option<&MinuteMetrics>| {
        let m = m.cloned().unwrap_or_default();
        let (queued_now, processing_now) =
            live.get(&(by_transport, name)).copied().unwrap_or_default();
        FlowGroup {
            name: name.to_owned(),
            stages: FlowStages {
                queued_now,
                processing_now,
                ..stages(&m)
            },
            timings: timings(&m),
        }
    };
    let names = |by_transport: bool, rolled: Vec<&str>| {
        let mut names: Vec<String> = rolled.into_iter().map(str::to_owned).collect();
        names.extend(
            live.keys()
                .filter(|(kind, _)| *kind == by_transport)
                .map(|(_, name)| (*name).to_owned()),
        );
        names.sort();
        names.dedup();
        names
    };
    let transports = names(true, by_transport.keys().copied().collect())
        .iter()
        .map(|name| group(true, name, by_transport.get(name.as_str())))
        .collect();
    let channels = names(false, by_channel.keys().copied().collect())
        .iter()
        .map(|name| group(false, name, by_channel.get(name.as_str())))
        .collect();
    let (queued_now, processing_now) = live
        .iter()
        .filter(|((kind, _), _)| *kind)
        .fold((0, 0), |(q, p), (_, (dq, dp))| (q + dq, p + dp));
    MessageFlow {
        window: span_text(window),
        from: rfc3339(from),
        to: rfc3339(to),
        stages: FlowStages {
            queued_now,
            processing_now,
            ..stages(&all)
        },
        timings: timings(&all),
        by_transport: transports,
        by_channel: channels,
    }
}

/// What the bottleneck report needs to know of a configured transport.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportLimits {
    pub name: String,
    pub kind: String,
    /// Deliveries per minute.
    pub rate_limit: u32,
    pub concurrency: usize,
    /// A group's members, which make its attempts.
    pub members: Vec<String>,
}

/// One plain-language observation, with the setting to change.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub transport: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// `rate_limit`, `concurrency`, `breaker`, `slow_delivery`, `paused`
    /// or `stalled`.
    pub kind: String,
    pub message: String,
    /// The config key to change, when a setting is the remedy.
    pub setting: Option<String>,
}

/// Shares of the time messages spent, 0..1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeShare {
    pub queue_wait: f64,
    pub processing: f64,
    pub delivery: f64,
}

/// Where one transport's time goes over the window.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportBottleneck {
    pub transport: String,
    pub kind: String,
    /// Attempts made by this transport (for a group: by its members).
    pub attempts: u64,
    pub sent: u64,
    pub average_queue_wait_ms: Option<f64>,
    pub average_processing_ms: Option<f64>,
    pub average_delivery_ms: Option<f64>,
    pub p95_delivery_ms: Option<f64>,
    /// How the time of attempts splits between the stages.
    pub time_share: TimeShare,
    /// Time attempts were held by the rate limiter, summed.
    pub rate_limited_ms: u64,
    /// rate_limited_ms / (queue wait + processing).
    pub rate_limited_share_of_wait: f64,
    pub rate_limit_per_minute: u32,
    /// Attempts in the busiest of the last 15 minutes / rate_limit; the
    /// current minute by its pace so far (attempts over the seconds it
    /// has run, reading at most the limit unless it counted more).
    pub peak_rate_limit_use: Option<f64>,
    pub breaker_open_ms: u64,
    /// breaker_open_ms / window.
    pub breaker_open_share: f64,
    pub concurrency: usize,
    /// Delivery time / (window * concurrency): how busy the slots were.
    pub concurrency_saturation: f64,
    /// Live, when this node runs the engine.
    pub in_flight: Option<usize>,
    pub paused: Option<bool>,
    pub circuit: Option<String>,
    pub queued: u64,
    pub oldest_queued_age_ms: Option<u64>,
    pub findings: Vec<Finding>,
}

/// `GET /api/queue/bottlenecks`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BottleneckReport {
    pub window: String,
    pub from: String,
    pub to: String,
    pub transports: Vec<TransportBottleneck>,
    /// Every transport's findings, most severe first.
    pub findings: Vec<Finding>,
}

/// Average wait (queue + processing) below which nothing is worth a
/// finding: the queue keeps up.
const NOTABLE_WAIT_MS: f64 = 1000.0;
/// Oldest due message age past which a queue that sends nothing stalls.
const STALLED_AGE_MS: u64 = 5 * 60 * 1000;

fn percent(share: f64) -> String {
    format!("{:.0} %", share * 100.0)
}

fn human_ms(ms: f64) -> String {
    if ms >= 60_000.0 {
        format!("{:.1} min", ms / 60_000.0)
    } else if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// How much of `rate_limit` (per minute) the `attempts` of the minute row
/// starting at `minute` used. The current minute is judged by its pace so
/// far, attempts over the part of it that has passed: a transport its
/// limit holds shows it within seconds, not only once a whole minute at
/// the limit has passed. The pace may read as the limit but not beyond
/// what the minute really counted over it, since a few attempts early in a
/// minute (a burst) would otherwise read as many times the limit.
fn rate_limit_use(
    minute: DateTime<Utc>,
    attempts: u64,
    rate_limit: u32,
    now: DateTime<Utc>,
) -> f64 {
    let counted = attempts as f64 / f64::from(rate_limit.max(1));
    let passed = (now - minute).num_milliseconds() as f64 / 60_000.0;
    if passed <= 0.0 || passed >= 1.0 {
        return counted;
    }
    (counted / passed).min(counted.max(1.0))
}

/// Per transport: where the time goes and what to change. `totals` are
/// the window's rollups (any granularity), `recent` its last 15 minutes
/// per minute, for the busiest minute.
#[allow(clippy::too_many_arguments)]
pub fn bottlenecks(
    window: Duration,
    now: DateTime<Utc>,
    totals: &[MinuteMetrics],
    recent: &[MinuteMetrics],
    depth: &[DepthRow],
    transports: &[TransportLimits],
    statuses: &[TransportStatus],
    scope: &Scope,
) -> BottleneckReport {
    let (from, to) = window_bounds(now, window);
    let window_ms = window.as_millis() as f64;
    let in_window: Vec<&MinuteMetrics> = totals
        .iter()
        .filter(|m| m.minute >= from && m.minute < to)
        .collect();
    let unscoped = Scope {
        transport: None,
        ..scope.clone()
    };
    let mut rows = Vec::new();
    let mut all_findings = Vec::new();
    for limits in transports.iter().filter(|t| scope.keeps_transport(&t.name)) {
        // A group's attempts are its members'; its breaker time is its own.
        let attempting: Vec<&str> = if limits.members.is_empty() {
            vec![limits.name.as_str()]
        } else {
            limits.members.iter().map(String::as_str).collect()
        };
        let mut t = MinuteMetrics::default();
        let mut per_minute: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
        let mut breaker_open_ms = 0;
        let attempted_here = |m: &MinuteMetrics| {
            attempting.contains(&m.transport.as_str()) && unscoped.keeps_rollup(m)
        };
        for m in &in_window {
            if m.transport == limits.name {
                breaker_open_ms += m.breaker_open_ms;
            }
            if attempted_here(m) {
                t.merge(m);
            }
        }
        for m in recent
            .iter()
            .filter(|m| m.minute >= from && attempted_here(m))
        {
            *per_minute.entry(m.minute).or_default() += m.sent + m.failed;
        }
        let attempts = t.sent + t.failed;
        let wait_ms = t.wait_sum_ms as f64;
        let processing_ms = t.processing.sum_ms as f64;
        let delivery_ms = t.latency_sum_ms as f64;
        let spent = wait_ms + processing_ms + delivery_ms;
        let share = |part: f64| if spent > 0.0 { part / spent } else { 0.0 };
        let waited = wait_ms + processing_ms;
        let rate_limited_share_of_wait = if waited > 0.0 {
            (t.limited_sum_ms as f64 / waited).min(1.0)
        } else {
            0.0
        };
        let peak_rate_limit_use = per_minute
            .iter()
            .map(|(minute, attempts)| rate_limit_use(*minute, *attempts, limits.rate_limit, now))
            .reduce(f64::max)
            .filter(|_| limits.members.is_empty());
        let concurrency_saturation = if limits.members.is_empty() {
            (delivery_ms / (window_ms * limits.concurrency.max(1) as f64)).min(1.0)
        } else {
            0.0
        };
        let status = statuses.iter().find(|s| s.name == limits.name);
        let live: Vec<&DepthRow> = depth
            .iter()
            .filter(|d| d.transport == limits.name && scope.keeps_depth(d))
            .collect();
        let queued: u64 = live.iter().map(|d| d.queued).sum();
        let oldest_queued_age_ms = live
            .iter()
            .filter_map(|d| d.oldest_available)
            .min()
            .filter(|oldest| *oldest <= now)
            .map(|oldest| (now - oldest).num_milliseconds().max(0) as u64);
        let average_wait = mean(t.wait_sum_ms + t.processing.sum_ms, t.wait_count);
        let p95_delivery_ms = latency_quantile(&t, 0.95);

        let mut row = TransportBottleneck {
            transport: limits.name.clone(),
            kind: limits.kind.clone(),
            attempts,
            sent: t.sent,
            average_queue_wait_ms: mean(t.wait_sum_ms, t.wait_count),
            average_processing_ms: mean(t.processing.sum_ms, t.processing.count),
            average_delivery_ms: mean(t.latency_sum_ms, t.latency_count),
            p95_delivery_ms,
            time_share: TimeShare {
                queue_wait: share(wait_ms),
                processing: share(processing_ms),
                delivery: share(delivery_ms),
            },
            rate_limited_ms: t.limited_sum_ms,
            rate_limited_share_of_wait,
            rate_limit_per_minute: limits.rate_limit,
            peak_rate_limit_use,
            breaker_open_ms,
            breaker_open_share: ratio(breaker_open_ms, window.as_millis() as u64),
            concurrency: limits.concurrency,
            concurrency_saturation,
            in_flight: status.map(|s| s.in_flight),
            paused: status.map(|s| s.paused),
            circuit: status.map(|s| s.circuit.as_str().to_owned()),
            queued,
            oldest_queued_age_ms,
            findings: Vec::new(),
        };
        row.findings = findings(&row, average_wait);
        all_findings.extend(row.findings.iter().cloned());
        rows.push(row);
    }
    let rank = |f: &Finding| match f.severity.as_str() {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    };
    all_findings.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| a.transport.cmp(&b.transport))
    });
    BottleneckReport {
        window: span_text(window),
        from: rfc3339(from),
        to: rfc3339(to),
        transports: rows,
        findings: all_findings,
    }
}

/// The rules behind the findings; thresholds are documented in the
/// README ("Bottlenecks").
fn findings(t: &TransportBottleneck, average_wait: Option<f64>) -> Vec<Finding> {
    let name = &t.transport;
    let finding = |severity: &str, kind: &str, message: String, setting: Option<&str>| Finding {
        transport: name.clone(),
        severity: severity.to_owned(),
        kind: kind.to_owned(),
        message,
        setting: setting.map(|key| format!("transports.{name}.{key}")),
    };
    let mut found = Vec::new();
    let waiting = average_wait.filter(|w| *w >= NOTABLE_WAIT_MS);
    if let Some(wait) = waiting {
        let peak = t.peak_rate_limit_use.unwrap_or(0.0);
        if t.rate_limited_share_of_wait >= 0.5 || peak >= 0.9 {
            found.push(finding(
                "warning",
                "rate_limit",
                format!(
                    "{name}: {} of wait is rate limiting at {}/min (busiest minute at {} of the limit; messages wait {} on average); raise rate_limit or add a failover member",
                    percent(t.rate_limited_share_of_wait),
                    t.rate_limit_per_minute,
                    percent(peak),
                    human_ms(wait),
                ),
                Some("rate_limit"),
            ));
        }
        if t.concurrency_saturation >= 0.8 {
            found.push(finding(
                "warning",
                "concurrency",
                format!(
                    "{name}: deliveries kept {} of its {} slots busy while messages waited {} on average; raise concurrency",
                    percent(t.concurrency_saturation),
                    t.concurrency,
                    human_ms(wait),
                ),
                Some("concurrency"),
            ));
        }
    }
    if t.breaker_open_share >= 0.05 {
        found.push(finding(
            if t.breaker_open_share >= 0.25 {
                "critical"
            } else {
                "warning"
            },
            "breaker",
            format!(
                "{name}: circuit breaker open {} of the window ({}): the provider is failing (see /api/queue/failures); add a failover member or tune circuit_failure_threshold and circuit_open_ms",
                percent(t.breaker_open_share),
                human_ms(t.breaker_open_ms as f64),
            ),
            Some("circuit_failure_threshold"),
        ));
    }
    if let Some(p95) = t.p95_delivery_ms
        && t.time_share.delivery >= 0.5
        && p95 >= 1000.0
    {
        found.push(finding(
            "warning",
            "slow_delivery",
            format!(
                "{name}: the provider's own time dominates (p95 delivery {}); check the provider, or lower timeout_ms to fail over sooner",
                human_ms(p95),
            ),
            Some("timeout_ms"),
        ));
    }
    let oldest = t.oldest_queued_age_ms.unwrap_or(0);
    if t.paused == Some(true) && t.queued > 0 {
        found.push(finding(
            "warning",
            "paused",
            format!(
                "{name}: paused with {} queued, the oldest due for {}; resume it with POST /api/transports/{name}/resume",
                t.queued,
                human_ms(oldest as f64),
            ),
            None,
        ));
    } else if t.queued > 0 && oldest >= STALLED_AGE_MS && t.sent == 0 {
        found.push(finding(
            "critical",
            "stalled",
            format!(
                "{name}: {} queued, the oldest due for {}, and nothing sent in the window; check /health/ready and the transport's last error in /api/transports",
                t.queued,
                human_ms(oldest as f64),
            ),
            None,
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use crate::storage::Timing;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 30, 0)
            .single()
            .unwrap()
    }

    /// `mail`, limited to 60 a minute.
    fn limits() -> TransportLimits {
        TransportLimits {
            name: "mail".into(),
            kind: "smtp".into(),
            rate_limit: 60,
            concurrency: 4,
            members: Vec::new(),
        }
    }

    /// `attempts` sent in the minute from `minute`, each after 5 s in the
    /// queue and 0.5 s on the rate limiter: a backlog the limit drains.
    fn limited(minute: DateTime<Utc>, attempts: u64) -> MinuteMetrics {
        MinuteMetrics {
            minute,
            transport: "mail".into(),
            channel: "email".into(),
            sent: attempts,
            latency_count: attempts,
            latency_sum_ms: 5 * attempts,
            wait_count: attempts,
            wait_sum_ms: 5000 * attempts,
            processing: Timing {
                count: attempts,
                sum_ms: 500 * attempts,
                ..Timing::default()
            },
            limited_sum_ms: 500 * attempts,
            ..MinuteMetrics::default()
        }
    }

    fn report(now: DateTime<Utc>, rows: &[MinuteMetrics]) -> TransportBottleneck {
        let report = bottlenecks(
            Duration::from_secs(900),
            now,
            rows,
            rows,
            &[],
            &[limits()],
            &[],
            &Scope::default(),
        );
        report.transports.into_iter().next().unwrap()
    }

    #[test]
    fn a_transport_held_by_its_rate_limit_is_named_in_its_first_minute() {
        for seconds in [5, 20, 40, 59] {
            let now = start() + TimeDelta::seconds(seconds);
            // One attempt a second since the minute began: the limit.
            let mail = report(now, &[limited(start(), seconds as u64)]);
            let peak = mail.peak_rate_limit_use.unwrap();
            assert!((peak - 1.0).abs() < 1e-9, "{seconds} s in: {peak}");
            assert!(
                mail.rate_limited_share_of_wait < 0.5,
                "the queue, not the limiter, holds most of the wait"
            );
            assert!(
                mail.findings.iter().any(|f| f.kind == "rate_limit"),
                "{seconds} s in: {:?}",
                mail.findings
            );
        }
    }

    #[test]
    fn the_current_minute_is_judged_by_its_pace() {
        let now = start() + TimeDelta::seconds(30);
        // Half the limit's pace: 15 in 30 s.
        let half = report(now, &[limited(start(), 15)]);
        assert!((half.peak_rate_limit_use.unwrap() - 0.5).abs() < 1e-9);
        assert!(half.findings.iter().all(|f| f.kind != "rate_limit"));
        // A burst of 10 in the first second reads as the limit, no more.
        let burst = report(start() + TimeDelta::seconds(1), &[limited(start(), 10)]);
        assert_eq!(burst.peak_rate_limit_use, Some(1.0));
        // A whole minute reads as counted, even past the limit.
        let earlier = start() - TimeDelta::minutes(1);
        let full = report(now, &[limited(earlier, 66), limited(start(), 1)]);
        assert!((full.peak_rate_limit_use.unwrap() - 1.1).abs() < 1e-9);
    }
}
