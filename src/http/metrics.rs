//! `/metrics`: Prometheus text exposition. Two sources, no family in both:
//! state read at scrape time (queue depth and age and dead letters from storage,
//! shared by every node on the database; breaker, pause, lease and
//! capacity from this process's engine), then this process's registry of
//! counters and histograms ([`crate::telemetry`]).

use std::collections::BTreeMap;
use std::fmt::Write;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};

use super::auth::{Authorized, ReadRole};
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::engine::{CircuitState, TransportStatus};
use crate::telemetry;

/// Prometheus text format, version 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const QUEUE_DEPTH: &str = "herald_queue_depth";
const QUEUE_AGE: &str = "herald_queue_oldest_age_seconds";
const DEAD_LETTERS: &str = "herald_dead_letters";
const DEAD_LETTER_AGE: &str = "herald_dead_letter_oldest_age_seconds";
const CIRCUIT_STATE: &str = "herald_circuit_state";

/// A per-transport gauge from the engine's status: name, help, value.
type TransportGauge = (&'static str, &'static str, fn(&TransportStatus) -> u64);

const TRANSPORT_GAUGES: [TransportGauge; 8] = [
    (
        "herald_transport_running",
        "1 while the transport's actor runs.",
        |s| u64::from(s.running),
    ),
    (
        "herald_transport_paused",
        "1 while the transport is paused.",
        |s| u64::from(s.paused),
    ),
    (
        "herald_transport_active",
        "1 when this node holds the transport's lease and delivers for it.",
        |s| u64::from(s.holds_lease),
    ),
    (
        "herald_transport_in_flight",
        "Deliveries running on this node.",
        |s| s.in_flight as u64,
    ),
    (
        "herald_transport_prefetched",
        "Messages claimed by this node, waiting for a delivery slot.",
        |s| s.prefetched as u64,
    ),
    (
        "herald_transport_concurrency",
        "Configured deliveries at once.",
        |s| s.concurrency as u64,
    ),
    (
        "herald_transport_rate_limit_per_minute",
        "Configured deliveries per minute.",
        |s| u64::from(s.rate_limit),
    ),
    (
        "herald_transport_burst_limit",
        "Configured burst above the rate.",
        |s| u64::from(s.burst_limit),
    ),
];

/// Queue, delivery, transport and storage metrics in the Prometheus text
/// format.
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
        QUEUE_DEPTH,
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
                "{QUEUE_DEPTH}{{transport=\"{}\",priority=\"{priority}\",state=\"{kind}\"}} {value}",
                escape(transport),
            );
        }
    }

    let now = state.clock.now();
    let mut oldest: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for row in &depth {
        if let Some(at) = row.oldest_available {
            let entry = oldest.entry(row.transport.as_str()).or_insert(at);
            *entry = (*entry).min(at);
        }
    }
    family(
        &mut out,
        QUEUE_AGE,
        "gauge",
        "How long the longest-waiting due message has waited, by transport (0 when every queued one is scheduled later).",
    );
    for (transport, at) in oldest {
        let _ = writeln!(
            out,
            "{QUEUE_AGE}{{transport=\"{}\"}} {}",
            escape(transport),
            seconds_since(at, now)
        );
    }

    // Dead letters are summarised by channel and category too.
    let mut dead: BTreeMap<&str, (u64, Option<DateTime<Utc>>)> = BTreeMap::new();
    let summaries = state.storage.dead_letter_summary().await?;
    for summary in &summaries {
        let entry = dead.entry(summary.transport.as_str()).or_default();
        entry.0 += summary.count;
        entry.1 = match (entry.1, summary.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    family(
        &mut out,
        DEAD_LETTERS,
        "gauge",
        "Dead letters kept, by transport.",
    );
    for (transport, (count, _)) in &dead {
        let _ = writeln!(
            out,
            "{DEAD_LETTERS}{{transport=\"{}\"}} {count}",
            escape(transport),
        );
    }
    family(
        &mut out,
        DEAD_LETTER_AGE,
        "gauge",
        "Age of the oldest dead letter, by transport.",
    );
    for (transport, (_, oldest)) in &dead {
        if let Some(oldest) = oldest {
            let _ = writeln!(
                out,
                "{DEAD_LETTER_AGE}{{transport=\"{}\"}} {}",
                escape(transport),
                seconds_since(*oldest, now)
            );
        }
    }

    if let Some(engine) = &state.engine {
        let statuses = engine.status().await?;
        family(
            &mut out,
            CIRCUIT_STATE,
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
                    "{CIRCUIT_STATE}{{transport=\"{}\",state=\"{}\"}} {value}",
                    escape(&s.name),
                    circuit.as_str()
                );
            }
        }
        for (name, help, value) in TRANSPORT_GAUGES {
            family(&mut out, name, "gauge", help);
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
    out.push('\n');
    out.push_str(&telemetry::render());
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(out))
}

/// Seconds from `then` to `now`, never negative.
fn seconds_since(then: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - then).num_milliseconds().max(0) as f64 / 1000.0
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_time_families_are_not_in_the_registry() {
        let scraped = [
            QUEUE_DEPTH,
            QUEUE_AGE,
            DEAD_LETTERS,
            DEAD_LETTER_AGE,
            CIRCUIT_STATE,
        ]
        .into_iter()
        .chain(TRANSPORT_GAUGES.iter().map(|(name, _, _)| *name));
        for name in scraped {
            assert!(
                telemetry::FAMILIES.iter().all(|f| f.name != name),
                "{name} would be emitted twice"
            );
        }
    }
}
