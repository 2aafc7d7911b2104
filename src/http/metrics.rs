//! `/metrics`: Prometheus text exposition, rendered at scrape time from
//! what Herald already keeps: queue depth from storage, delivery counts and
//! the latency histogram from the per-minute rollups (totals over the
//! retained history, shared by every node on the database), and breaker
//! and in-flight state from this process's engine.

use std::collections::BTreeMap;
use std::fmt::Write;

use actix_web::{HttpResponse, web};
use chrono::DateTime;

use super::auth::{Authorized, ReadRole};
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::engine::{CircuitState, TransportStatus};
use crate::storage::{LATENCY_BUCKETS_MS, MinuteMetrics};

/// Prometheus text format, version 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Queue, delivery and transport metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn render(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut out = String::new();
    let depth = state.storage.queue_depth().await?;
    family(
        &mut out,
        "herald_queue_depth",
        "gauge",
        "Messages waiting (queued) or being delivered (processing), by transport and priority.",
    );
    // Depth rows also split by channel and category: one series per
    // transport and priority.
    let mut by_priority: BTreeMap<(&str, u8), (u64, u64)> = BTreeMap::new();
    for row in &depth {
        let counts = by_priority
            .entry((row.transport.as_str(), row.priority.get()))
            .or_default();
        counts.0 += row.queued;
        counts.1 += row.processing;
    }
    for ((transport, priority), (queued, processing)) in &by_priority {
        for (kind, value) in [("queued", queued), ("processing", processing)] {
            let _ = writeln!(
                out,
                "herald_queue_depth{{transport=\"{}\",priority=\"{priority}\",state=\"{kind}\"}} {value}",
                escape(transport),
            );
        }
    }

    let now = state.clock.now();
    let history = state
        .storage
        .rollup_totals(DateTime::UNIX_EPOCH, now + chrono::Duration::minutes(1))
        .await?;
    let mut totals: BTreeMap<String, MinuteMetrics> = BTreeMap::new();
    for minute in history {
        totals
            .entry(minute.transport.clone())
            .or_default()
            .merge(&minute);
    }
    family(
        &mut out,
        "herald_deliveries_total",
        "counter",
        "Delivery attempts and hand-backs by transport and outcome.",
    );
    for (transport, t) in &totals {
        for (outcome, value) in [
            ("sent", t.sent),
            ("failed", t.failed),
            ("retried", t.retried),
            ("dead", t.dead),
            ("deferred", t.deferred),
        ] {
            let _ = writeln!(
                out,
                "herald_deliveries_total{{transport=\"{}\",outcome=\"{outcome}\"}} {value}",
                escape(transport)
            );
        }
    }
    family(
        &mut out,
        "herald_delivery_duration_seconds",
        "histogram",
        "Duration of delivery attempts by transport.",
    );
    for (transport, t) in &totals {
        let transport = escape(transport);
        for (bound, count) in LATENCY_BUCKETS_MS.iter().zip(t.latency_le) {
            let _ = writeln!(
                out,
                "herald_delivery_duration_seconds_bucket{{transport=\"{transport}\",le=\"{}\"}} {count}",
                *bound as f64 / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "herald_delivery_duration_seconds_bucket{{transport=\"{transport}\",le=\"+Inf\"}} {}",
            t.latency_count
        );
        let _ = writeln!(
            out,
            "herald_delivery_duration_seconds_sum{{transport=\"{transport}\"}} {}",
            t.latency_sum_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "herald_delivery_duration_seconds_count{{transport=\"{transport}\"}} {}",
            t.latency_count
        );
    }

    if let Some(engine) = &state.engine {
        let statuses = engine.status().await?;
        family(
            &mut out,
            "herald_circuit_state",
            "gauge",
            "1 for the breaker's current state, by transport.",
        );
        for s in &statuses {
            for circuit in [
                CircuitState::Closed,
                CircuitState::Open,
                CircuitState::HalfOpen,
            ] {
                let value = u8::from(s.circuit == circuit);
                let _ = writeln!(
                    out,
                    "herald_circuit_state{{transport=\"{}\",state=\"{}\"}} {value}",
                    escape(&s.name),
                    circuit.as_str()
                );
            }
        }
        let gauges: [TransportGauge; 5] = [
            (
                "herald_circuit_opened_total",
                "counter",
                "Times the breaker opened since this process started.",
                |s| s.breaker_opened,
            ),
            (
                "herald_transport_in_flight",
                "gauge",
                "Deliveries running on this node.",
                |s| s.in_flight as u64,
            ),
            (
                "herald_transport_paused",
                "gauge",
                "1 while the transport is paused.",
                |s| u64::from(s.paused),
            ),
            (
                "herald_transport_active",
                "gauge",
                "1 when this node holds the transport's lease and delivers for it.",
                |s| u64::from(s.holds_lease),
            ),
            (
                "herald_transport_rate_limit_per_minute",
                "gauge",
                "Configured deliveries per minute.",
                |s| u64::from(s.rate_limit),
            ),
        ];
        for (name, kind, help, value) in gauges {
            family(&mut out, name, kind, help);
            for s in &statuses {
                let _ = writeln!(
                    out,
                    "{name}{{transport=\"{}\"}} {}",
                    escape(&s.name),
                    value(s)
                );
            }
        }
    }
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(out))
}

/// A per-transport metric: name, type, help, and how to read it.
type TransportGauge = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TransportStatus) -> u64,
);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escape backslash, quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
