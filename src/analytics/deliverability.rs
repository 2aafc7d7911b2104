//! What providers reported after hand-over, over a window: delivered,
//! bounced, complained, opened, clicked and unsubscribed, as counts and
//! as rates over the messages sent, with a series and the most frequent
//! bounce reasons and recipient domains. Pure, like the rest of
//! [`crate::analytics`]: reports count in the minute they were received,
//! sends in the minute they were sent, so a rate is over the window's
//! traffic, not per message.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AnalyticsQuery, over_sent, rfc3339, span_text, window_bounds};
use crate::storage::{BounceCount, MinuteMetrics, SeriesCounts};

/// How many bounce reasons and domains the report lists.
const TOP: usize = 10;

/// Messages sent and provider reports received.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliverabilityTotals {
    pub sent: u64,
    pub delivered: u64,
    pub bounced_hard: u64,
    pub bounced_soft: u64,
    pub complained: u64,
    pub opened: u64,
    pub clicked: u64,
    pub unsubscribed: u64,
}

/// The reports of [`DeliverabilityTotals`] over `sent`; null when none
/// was sent. `bounced` counts hard and soft bounces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliverabilityRates {
    pub delivered: Option<f64>,
    pub bounced: Option<f64>,
    pub bounced_hard: Option<f64>,
    pub bounced_soft: Option<f64>,
    pub complained: Option<f64>,
    pub opened: Option<f64>,
    pub clicked: Option<f64>,
    pub unsubscribed: Option<f64>,
}

/// One transport's figures: reports count under the transport whose
/// webhook received them.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportDeliverability {
    pub transport: String,
    pub totals: DeliverabilityTotals,
    pub rates: DeliverabilityRates,
}

/// One bucket of the series.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliverabilityPoint {
    /// Start of the bucket, RFC 3339.
    pub at: String,
    #[serde(flatten)]
    pub counts: DeliverabilityTotals,
}

/// A bounce reason, normalised as failure errors are (ids, numbers and
/// addresses blanked).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BounceReason {
    /// hard | soft
    pub bounce_type: String,
    pub reason: String,
    pub count: u64,
}

/// A recipient domain and its bounces.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BounceDomain {
    pub domain: String,
    pub bounced_hard: u64,
    pub bounced_soft: u64,
}

/// `GET /api/analytics/deliverability`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliverabilityReport {
    pub window: String,
    pub bucket: String,
    pub from: String,
    pub to: String,
    pub totals: DeliverabilityTotals,
    pub rates: DeliverabilityRates,
    pub by_transport: Vec<TransportDeliverability>,
    pub series: Vec<DeliverabilityPoint>,
    /// The most frequent bounce reasons, most frequent first (reports
    /// without a reason left out).
    pub top_bounce_reasons: Vec<BounceReason>,
    /// The recipient domains with the most bounces, most first (reports
    /// naming no email recipient left out).
    pub top_bounce_domains: Vec<BounceDomain>,
}

impl DeliverabilityTotals {
    fn add(&mut self, m: &MinuteMetrics) {
        self.sent += m.sent;
        self.delivered += m.delivered;
        self.bounced_hard += m.bounced_hard;
        self.bounced_soft += m.bounced_soft;
        self.complained += m.complained;
        self.opened += m.opened;
        self.clicked += m.clicked;
        self.unsubscribed += m.unsubscribed;
    }

    fn rates(&self) -> DeliverabilityRates {
        let rate = |n: u64| over_sent(n, self.sent);
        DeliverabilityRates {
            delivered: rate(self.delivered),
            bounced: rate(self.bounced_hard + self.bounced_soft),
            bounced_hard: rate(self.bounced_hard),
            bounced_soft: rate(self.bounced_soft),
            complained: rate(self.complained),
            opened: rate(self.opened),
            clicked: rate(self.clicked),
            unsubscribed: rate(self.unsubscribed),
        }
    }
}

/// Computes the report from rows already read: `totals` (rollups over the
/// window, summed per key), `series` (the window's counts in the query's
/// scope, in rows no longer than the bucket) and `bounces` (bounce
/// rollups over the window).
pub fn deliverability(
    query: &AnalyticsQuery,
    now: DateTime<Utc>,
    totals: &[MinuteMetrics],
    series: &[SeriesCounts],
    bounces: &[BounceCount],
) -> DeliverabilityReport {
    let scope = &query.scope;
    let (from, to) = window_bounds(now, query.window);
    let in_window = |minute: DateTime<Utc>| minute >= from && minute < to;

    let mut all = DeliverabilityTotals::default();
    let mut per_transport: BTreeMap<&str, DeliverabilityTotals> = BTreeMap::new();
    for m in totals
        .iter()
        .filter(|m| scope.keeps_rollup(m) && in_window(m.minute))
    {
        all.add(m);
        per_transport
            .entry(m.transport.as_str())
            .or_default()
            .add(m);
    }
    let by_transport = per_transport
        .into_iter()
        .map(|(transport, totals)| TransportDeliverability {
            transport: transport.to_owned(),
            rates: totals.rates(),
            totals,
        })
        .collect();

    let bucket = TimeDelta::from_std(query.bucket).unwrap_or(TimeDelta::minutes(1));
    let mut points: BTreeMap<DateTime<Utc>, DeliverabilityPoint> = BTreeMap::new();
    for m in series.iter().filter(|m| in_window(m.minute)) {
        let start = m.minute.duration_trunc(bucket).unwrap_or(m.minute);
        let point = points.entry(start).or_insert_with(|| DeliverabilityPoint {
            at: rfc3339(start),
            counts: DeliverabilityTotals::default(),
        });
        let counts = &mut point.counts;
        counts.sent += m.sent;
        counts.delivered += m.delivered;
        counts.bounced_hard += m.bounced_hard;
        counts.bounced_soft += m.bounced_soft;
        counts.complained += m.complained;
        counts.opened += m.opened;
        counts.clicked += m.clicked;
        counts.unsubscribed += m.unsubscribed;
    }

    let mut reasons: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut domains: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for b in bounces
        .iter()
        .filter(|b| scope.keeps(&b.transport, &b.channel, &b.category) && in_window(b.minute))
    {
        if !b.reason.is_empty() {
            *reasons
                .entry((b.bounce_type.as_str(), b.reason.as_str()))
                .or_default() += b.bounces;
        }
        if !b.domain.is_empty() {
            let entry = domains.entry(b.domain.as_str()).or_default();
            if b.bounce_type == "soft" {
                entry.1 += b.bounces;
            } else {
                entry.0 += b.bounces;
            }
        }
    }
    let mut top_bounce_reasons: Vec<BounceReason> = reasons
        .into_iter()
        .map(|((bounce_type, reason), count)| BounceReason {
            bounce_type: bounce_type.to_owned(),
            reason: reason.to_owned(),
            count,
        })
        .collect();
    top_bounce_reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    top_bounce_reasons.truncate(TOP);
    let mut top_bounce_domains: Vec<BounceDomain> = domains
        .into_iter()
        .map(|(domain, (hard, soft))| BounceDomain {
            domain: domain.to_owned(),
            bounced_hard: hard,
            bounced_soft: soft,
        })
        .collect();
    top_bounce_domains.sort_by(|a, b| {
        (b.bounced_hard + b.bounced_soft)
            .cmp(&(a.bounced_hard + a.bounced_soft))
            .then_with(|| a.domain.cmp(&b.domain))
    });
    top_bounce_domains.truncate(TOP);

    DeliverabilityReport {
        window: span_text(query.window),
        bucket: span_text(query.bucket),
        from: rfc3339(from),
        to: rfc3339(to),
        rates: all.rates(),
        totals: all,
        by_transport,
        series: points.into_values().collect(),
        top_bounce_reasons,
        top_bounce_domains,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::analytics::Scope;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 30, 20)
            .single()
            .expect("a valid date")
    }

    fn minute(minutes_ago: i64) -> DateTime<Utc> {
        now().duration_trunc(TimeDelta::minutes(1)).expect("whole")
            - TimeDelta::minutes(minutes_ago)
    }

    fn bounce(transport: &str, kind: &str, reason: &str, domain: &str, n: u64) -> BounceCount {
        BounceCount {
            minute: minute(1),
            transport: transport.into(),
            channel: "email".into(),
            category: String::new(),
            bounce_type: kind.into(),
            reason: reason.into(),
            domain: domain.into(),
            bounces: n,
        }
    }

    #[test]
    fn rates_are_over_sent_and_null_without_sends() {
        let rows = [
            MinuteMetrics {
                minute: minute(5),
                transport: "mail".into(),
                sent: 200,
                ..MinuteMetrics::default()
            },
            MinuteMetrics {
                minute: minute(2),
                transport: "mail".into(),
                delivered: 150,
                bounced_hard: 6,
                bounced_soft: 4,
                complained: 1,
                opened: 50,
                clicked: 10,
                unsubscribed: 2,
                ..MinuteMetrics::default()
            },
            MinuteMetrics {
                minute: minute(2),
                transport: "other".into(),
                delivered: 3,
                ..MinuteMetrics::default()
            },
            // Outside the window.
            MinuteMetrics {
                minute: minute(90),
                transport: "mail".into(),
                sent: 1000,
                ..MinuteMetrics::default()
            },
        ];
        let bounces = [
            bounce("mail", "hard", "# #.#.# <address> unknown", "x.org", 5),
            bounce("mail", "soft", "# mailbox full", "y.org", 4),
            bounce("mail", "hard", "", "y.org", 1),
        ];
        let query = AnalyticsQuery {
            window: Duration::from_secs(3600),
            bucket: Duration::from_secs(60),
            scope: Scope::transport("mail"),
        };
        let report = deliverability(&query, now(), &rows, &[], &bounces);
        assert_eq!(report.totals.sent, 200);
        assert_eq!(report.rates.delivered, Some(0.75));
        assert_eq!(report.rates.bounced, Some(0.05));
        assert_eq!(report.rates.bounced_hard, Some(0.03));
        assert_eq!(report.rates.complained, Some(0.005));
        assert_eq!(report.by_transport.len(), 1, "the scope's transport only");
        assert_eq!(report.top_bounce_reasons[0].count, 5);
        assert_eq!(report.top_bounce_reasons.len(), 2, "no empty reason");
        let domains: Vec<_> = report
            .top_bounce_domains
            .iter()
            .map(|d| (d.domain.as_str(), d.bounced_hard, d.bounced_soft))
            .collect();
        assert_eq!(domains, [("x.org", 5, 0), ("y.org", 1, 4)]);

        let other = AnalyticsQuery {
            scope: Scope::transport("other"),
            ..query
        };
        let report = deliverability(&other, now(), &rows, &[], &bounces);
        assert_eq!(report.totals.delivered, 3);
        assert_eq!(report.rates, DeliverabilityRates::default(), "none sent");
    }
}
