//! Process-local metrics: what this process saw happen, counted where it
//! happened, kept in one Prometheus registry (the `metrics` facade with
//! `metrics-exporter-prometheus` as its recorder) and rendered by
//! `/metrics` next to the families it reads from storage and the engine at
//! scrape time ([`crate::http`]'s metrics module).
//!
//! Each operational event has one function here that records it:
//! [`enqueue_request`] and [`messages_enqueued`] (HTTP), [`outcomes_recorded`]
//! (the tracker, once a batch is durable), [`circuit_transition`] (the
//! breaker) and [`storage_operation`] (the [`TimedStorage`] decorator). The
//! families, their help and their buckets are listed once, in [`FAMILIES`].
//!
//! The recorder is global to the process. It is installed on first use, so
//! nothing recorded is lost to a recorder not yet installed, and a process
//! that starts many servers (the test binaries) shares one registry.

mod storage;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use storage::TimedStorage;

use crate::domain::{Channel, Stamp, Status};
use crate::engine::CircuitState;
use crate::storage::{Outcome, OutcomeKind, Recorded, StorageError};

pub const ENQUEUE_REQUESTS: &str = "herald_enqueue_requests_total";
pub const MESSAGES_ENQUEUED: &str = "herald_messages_enqueued_total";
pub const DELIVERIES: &str = "herald_deliveries_total";
pub const DELIVERY_FAILURES: &str = "herald_delivery_failures_total";
pub const STALE_OUTCOMES: &str = "herald_stale_outcomes_total";
pub const DELIVERY_DURATION: &str = "herald_delivery_duration_seconds";
pub const QUEUE_WAIT: &str = "herald_queue_wait_seconds";
pub const PROCESSING: &str = "herald_processing_seconds";
pub const RATE_LIMITER_WAIT: &str = "herald_rate_limiter_wait_seconds";
pub const MESSAGE_ATTEMPTS: &str = "herald_message_attempts";
pub const END_TO_END: &str = "herald_end_to_end_seconds";
pub const CIRCUIT_TRANSITIONS: &str = "herald_circuit_transitions_total";
pub const STORAGE_DURATION: &str = "herald_storage_operation_duration_seconds";
pub const STORAGE_ERRORS: &str = "herald_storage_errors_total";
pub const BUILD_INFO: &str = "herald_build_info";
pub const FEEDBACK_EVENTS: &str = "herald_feedback_events_total";
pub const FEEDBACK_UNMATCHED: &str = "herald_feedback_unmatched_total";
pub const FEEDBACK_REFUSED: &str = "herald_feedback_refused_total";
pub const SUPPRESSIONS_ADDED: &str = "herald_suppressions_added_total";
pub const ENQUEUES_SUPPRESSED: &str = "herald_recipients_suppressed_total";

/// Upper bounds of the delivery-duration buckets: those of the per-minute
/// rollups (`storage::LATENCY_BUCKETS_MS`), so both views agree.
const DELIVERY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Waiting in the queue and end to end: seconds to a day (scheduled sends,
/// backoff, paused transports).
const WAIT_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];
/// Time held on this node before the call: prefetch queue and limiter.
const HELD_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const STORAGE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0];

/// How often histogram samples are folded into their buckets when nobody
/// scrapes (rendering does it too): bounds the memory they hold.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The kind of a family, as Prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One family of the registry: name, kind, labels, help, and for a
/// histogram its bucket bounds.
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    pub buckets: &'static [f64],
}

/// Every family this module records.
pub const FAMILIES: &[Family] = &[
    Family {
        name: ENQUEUE_REQUESTS,
        kind: Kind::Counter,
        labels: &["endpoint", "result"],
        help: "Enqueue requests by endpoint (single, batch) and result (accepted, duplicate, invalid, too_large, unauthorized, unavailable, error).",
        buckets: &[],
    },
    Family {
        name: MESSAGES_ENQUEUED,
        kind: Kind::Counter,
        labels: &["transport", "channel"],
        help: "Messages stored by enqueue requests (idempotent repeats not counted).",
        buckets: &[],
    },
    Family {
        name: DELIVERIES,
        kind: Kind::Counter,
        labels: &["transport", "channel", "outcome"],
        help: "Recorded delivery outcomes: sent, retried (failed, queued again), dead (failed, dead-lettered), deferred (claimed, handed back unattempted).",
        buckets: &[],
    },
    Family {
        name: DELIVERY_FAILURES,
        kind: Kind::Counter,
        labels: &["transport", "class"],
        help: "Failed delivery attempts by error class (timeout, connection, rejected, permanent, transient).",
        buckets: &[],
    },
    Family {
        name: STALE_OUTCOMES,
        kind: Kind::Counter,
        labels: &["transport"],
        help: "Outcomes refused because their claim had expired and been taken over.",
        buckets: &[],
    },
    Family {
        name: DELIVERY_DURATION,
        kind: Kind::Histogram,
        labels: &["transport"],
        help: "Duration of the transport call of each delivery attempt.",
        buckets: DELIVERY_BUCKETS,
    },
    Family {
        name: QUEUE_WAIT,
        kind: Kind::Histogram,
        labels: &["transport"],
        help: "Time from due (enqueue, send_at or retry time) to claimed, per attempt.",
        buckets: WAIT_BUCKETS,
    },
    Family {
        name: PROCESSING,
        kind: Kind::Histogram,
        labels: &["transport"],
        help: "Time from claimed to handed to the transport (prefetch queue and rate limiter), per attempt.",
        buckets: HELD_BUCKETS,
    },
    Family {
        name: RATE_LIMITER_WAIT,
        kind: Kind::Histogram,
        labels: &["transport"],
        help: "Time an attempt waited on the transport's rate limiter.",
        buckets: HELD_BUCKETS,
    },
    Family {
        name: MESSAGE_ATTEMPTS,
        kind: Kind::Histogram,
        labels: &["transport", "outcome"],
        help: "Attempts a message took, counted when it finished (sent or dead).",
        buckets: ATTEMPT_BUCKETS,
    },
    Family {
        name: END_TO_END,
        kind: Kind::Histogram,
        labels: &["transport", "outcome"],
        help: "Time from due to finished (sent or dead), across all attempts.",
        buckets: WAIT_BUCKETS,
    },
    Family {
        name: CIRCUIT_TRANSITIONS,
        kind: Kind::Counter,
        labels: &["transport", "to"],
        help: "Circuit breaker state changes by the state entered (open, half_open, closed).",
        buckets: &[],
    },
    Family {
        name: STORAGE_DURATION,
        kind: Kind::Histogram,
        labels: &["op"],
        help: "Duration of storage operations, successful or not.",
        buckets: STORAGE_BUCKETS,
    },
    Family {
        name: STORAGE_ERRORS,
        kind: Kind::Counter,
        labels: &["op", "class"],
        help: "Storage operations that returned an error, by class (unavailable, backend, corrupt, conflict, not_found, invalid, migration, config).",
        buckets: &[],
    },
    Family {
        name: FEEDBACK_EVENTS,
        kind: Kind::Counter,
        labels: &["transport", "kind"],
        help: "Provider reports applied to their messages, by kind (delivered, bounced_hard, bounced_soft, complained, opened, clicked, unsubscribed, rejected, deferred_downstream).",
        buckets: &[],
    },
    Family {
        name: FEEDBACK_UNMATCHED,
        kind: Kind::Counter,
        labels: &["transport"],
        help: "Provider reports whose message was not found when they arrived (kept and matched again for [feedback] unmatched_keep_s).",
        buckets: &[],
    },
    Family {
        name: FEEDBACK_REFUSED,
        kind: Kind::Counter,
        labels: &["transport", "reason"],
        help: "Feedback requests refused, by reason (unauthorized, replay, malformed, too_large, unavailable).",
        buckets: &[],
    },
    Family {
        name: SUPPRESSIONS_ADDED,
        kind: Kind::Counter,
        labels: &["transport"],
        help: "Recipients put on the suppression list by provider reports.",
        buckets: &[],
    },
    Family {
        name: ENQUEUES_SUPPRESSED,
        kind: Kind::Counter,
        labels: &["transport"],
        help: "Recipients left out of enqueued messages because they are suppressed.",
        buckets: &[],
    },
    Family {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        labels: &["version"],
        help: "Always 1; the version of this Herald.",
        buckets: &[],
    },
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The registry's handle, installing the process-wide recorder on first
/// use.
fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(install)
}

fn install() -> PrometheusHandle {
    let builder = FAMILIES
        .iter()
        .filter(|f| f.kind == Kind::Histogram)
        .try_fold(PrometheusBuilder::new(), |builder, family| {
            builder.set_buckets_for_metric(Matcher::Full(family.name.to_owned()), family.buckets)
        })
        .unwrap_or_else(|err| {
            // Only an empty bucket list fails, and none is (a unit test
            // checks): histograms would then render as summaries.
            tracing::error!(cause = %err, "histogram buckets refused");
            PrometheusBuilder::new()
        });
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if let Err(err) = metrics::set_global_recorder(recorder) {
        // Someone else's recorder was first (an embedding program): ours
        // then renders nothing, but scrape-time families still work.
        tracing::warn!(cause = %err, "another metrics recorder is installed; process metrics are not exported");
    }
    for family in FAMILIES {
        match family.kind {
            Kind::Counter => metrics::describe_counter!(family.name, family.help),
            Kind::Gauge => metrics::describe_gauge!(family.name, family.help),
            Kind::Histogram => metrics::describe_histogram!(family.name, family.help),
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(cause = %err, "no metrics upkeep thread; histograms are folded at scrape time only");
    }
    handle
}

/// The registry in the Prometheus text format.
pub fn render() -> String {
    handle().render()
}

/// Which enqueue route a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Single,
    Batch,
}

/// Counts one enqueue request and how it was answered.
pub fn enqueue_request(endpoint: Endpoint, result: &'static str) {
    handle();
    let endpoint = match endpoint {
        Endpoint::Single => "single",
        Endpoint::Batch => "batch",
    };
    metrics::counter!(ENQUEUE_REQUESTS, "endpoint" => endpoint, "result" => result).increment(1);
}

/// Counts messages an enqueue request stored, by transport and channel.
pub fn messages_enqueued<'a>(stored: impl IntoIterator<Item = (&'a str, Channel)>) {
    handle();
    let mut counts: HashMap<(&str, Channel), u64> = HashMap::new();
    for key in stored {
        *counts.entry(key).or_default() += 1;
    }
    for ((transport, channel), count) in counts {
        metrics::counter!(MESSAGES_ENQUEUED, "transport" => transport.to_owned(), "channel" => channel.as_str())
            .increment(count);
    }
}

/// Counts a batch of outcomes the tracker has durably recorded: each
/// applied one by what it left the message as, its timings, and for a
/// finished message its attempts and end-to-end time; refused ones as
/// stale. Called once per stored batch, so the figures count what is
/// durable, once.
pub fn outcomes_recorded(outcomes: &[Outcome], recorded: &Recorded) {
    handle();
    let status_of: HashMap<Stamp, Status> = recorded.applied.iter().copied().collect();
    for outcome in outcomes {
        let transport = outcome.transport.clone();
        let Some(status) = status_of.get(&outcome.id).copied() else {
            if recorded.stale.contains(&outcome.id) {
                metrics::counter!(STALE_OUTCOMES, "transport" => transport).increment(1);
            }
            continue;
        };
        let result = match &outcome.kind {
            OutcomeKind::Sent => "sent",
            OutcomeKind::Failed { .. } if status == Status::Dead => "dead",
            OutcomeKind::Failed { .. } => "retried",
            OutcomeKind::Released { .. } => "deferred",
        };
        metrics::counter!(
            DELIVERIES,
            "transport" => transport.clone(),
            "channel" => outcome.channel.as_str(),
            "outcome" => result
        )
        .increment(1);
        if let OutcomeKind::Failed { .. } = outcome.kind {
            let class = outcome
                .error_class
                .clone()
                .unwrap_or_else(|| "transient".to_owned());
            metrics::counter!(DELIVERY_FAILURES, "transport" => transport.clone(), "class" => class)
                .increment(1);
        }
        if let OutcomeKind::Released { .. } = outcome.kind {
            continue; // not attempted: no timings
        }
        for (name, ms) in [
            (DELIVERY_DURATION, outcome.duration_ms),
            (QUEUE_WAIT, outcome.wait_ms),
            (PROCESSING, outcome.processing_ms),
            (RATE_LIMITER_WAIT, outcome.limited_ms),
        ] {
            if let Some(ms) = ms {
                metrics::histogram!(name, "transport" => transport.clone()).record(seconds(ms));
            }
        }
        if matches!(status, Status::Sent | Status::Dead) {
            metrics::histogram!(MESSAGE_ATTEMPTS, "transport" => transport.clone(), "outcome" => result)
                .record(f64::from(outcome.attempt.max(1)));
            if let Some(ms) = outcome.total_ms {
                metrics::histogram!(END_TO_END, "transport" => transport, "outcome" => result)
                    .record(seconds(ms));
            }
        }
    }
}

/// Counts a breaker entering `to`.
/// Counts one applied batch of provider reports.
pub fn feedback_recorded(transport: &str, recorded: &crate::storage::FeedbackRecorded) {
    for (kind, n) in &recorded.counts {
        metrics::counter!(FEEDBACK_EVENTS, "transport" => transport.to_owned(), "kind" => kind.clone())
            .increment(*n);
    }
    if recorded.unmatched > 0 {
        metrics::counter!(FEEDBACK_UNMATCHED, "transport" => transport.to_owned())
            .increment(recorded.unmatched as u64);
    }
    if recorded.suppressed > 0 {
        metrics::counter!(SUPPRESSIONS_ADDED, "transport" => transport.to_owned())
            .increment(recorded.suppressed as u64);
    }
}

/// Counts a refused feedback request.
pub fn feedback_refused(transport: &str, reason: &'static str) {
    metrics::counter!(FEEDBACK_REFUSED, "transport" => transport.to_owned(), "reason" => reason)
        .increment(1);
}

/// Counts recipients left out at enqueue.
pub fn recipients_suppressed(transport: &str, n: usize) {
    if n > 0 {
        metrics::counter!(ENQUEUES_SUPPRESSED, "transport" => transport.to_owned())
            .increment(n as u64);
    }
}

pub fn circuit_transition(transport: &str, to: CircuitState) {
    handle();
    metrics::counter!(CIRCUIT_TRANSITIONS, "transport" => transport.to_owned(), "to" => to.as_str())
        .increment(1);
}

/// Times one storage operation and counts it if it failed.
pub fn storage_operation(op: &'static str, took: Duration, error: Option<&StorageError>) {
    handle();
    metrics::histogram!(STORAGE_DURATION, "op" => op).record(took.as_secs_f64());
    if let Some(error) = error {
        metrics::counter!(STORAGE_ERRORS, "op" => op, "class" => error_class(error)).increment(1);
    }
}

fn error_class(error: &StorageError) -> &'static str {
    match error {
        StorageError::NotFound(_) => "not_found",
        StorageError::Conflict { .. } => "conflict",
        StorageError::Full(_) => "full",
        StorageError::Unavailable(_) => "unavailable",
        StorageError::Backend(_) => "backend",
        StorageError::Migration(_) => "migration",
        StorageError::Corrupt(_) => "corrupt",
        StorageError::Config(_) => "config",
        StorageError::Invalid(_) => "invalid",
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_by_convention_and_histograms_have_buckets() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "a family listed twice");
        for family in FAMILIES {
            assert!(family.name.starts_with("herald_"), "{}", family.name);
            assert_eq!(
                family.kind == Kind::Counter,
                family.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                family.name
            );
            assert_eq!(
                family.kind == Kind::Histogram,
                !family.buckets.is_empty(),
                "{}",
                family.name
            );
            assert!(
                family.buckets.windows(2).all(|w| w[0] < w[1]),
                "{}: buckets ascend",
                family.name
            );
        }
    }

    /// The value of one series in the registry's text.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    fn outcome(transport: &str, attempt: u32, kind: OutcomeKind) -> Outcome {
        Outcome {
            id: Stamp::generate(),
            claim_token: crate::domain::ClaimToken::generate(),
            transport: transport.to_owned(),
            channel: Channel::Sms,
            category: None,
            duration_ms: Some(120),
            wait_ms: Some(2000),
            processing_ms: Some(30),
            limited_ms: Some(20),
            total_ms: Some(5000),
            attempt,
            error_class: None,
            kind,
            passed_over: Vec::new(),
            provider_message_id: None,
            recipient_gone: None,
        }
    }

    #[test]
    fn outcomes_count_by_the_status_they_left_and_stale_ones_apart() {
        // A transport name no other test uses: the registry is the process's.
        const T: &str = "telemetry-unit";
        let failed = |retry| OutcomeKind::Failed {
            error: "HTTP 503".into(),
            retry_at: retry,
        };
        let sent = outcome(T, 2, OutcomeKind::Sent);
        let retried = Outcome {
            error_class: Some("timeout".into()),
            ..outcome(T, 1, failed(Some(chrono::DateTime::UNIX_EPOCH)))
        };
        let dead = outcome(T, 3, failed(None));
        let deferred = Outcome {
            duration_ms: None,
            wait_ms: None,
            processing_ms: None,
            limited_ms: None,
            total_ms: None,
            ..outcome(
                T,
                1,
                OutcomeKind::Released {
                    reason: "paused".into(),
                },
            )
        };
        let stale = outcome(T, 1, OutcomeKind::Sent);
        let recorded = Recorded {
            applied: vec![
                (sent.id, Status::Sent),
                (retried.id, Status::Queued),
                (dead.id, Status::Dead),
                (deferred.id, Status::Queued),
            ],
            stale: vec![stale.id],
        };
        outcomes_recorded(&[sent, retried, dead, deferred, stale], &recorded);

        let text = render();
        let expected = [
            (
                "herald_deliveries_total{transport=\"telemetry-unit\",channel=\"sms\",outcome=\"sent\"}",
                1.0,
            ),
            (
                "herald_deliveries_total{transport=\"telemetry-unit\",channel=\"sms\",outcome=\"retried\"}",
                1.0,
            ),
            (
                "herald_deliveries_total{transport=\"telemetry-unit\",channel=\"sms\",outcome=\"dead\"}",
                1.0,
            ),
            (
                "herald_deliveries_total{transport=\"telemetry-unit\",channel=\"sms\",outcome=\"deferred\"}",
                1.0,
            ),
            (
                "herald_delivery_failures_total{transport=\"telemetry-unit\",class=\"timeout\"}",
                1.0,
            ),
            (
                "herald_delivery_failures_total{transport=\"telemetry-unit\",class=\"transient\"}",
                1.0,
            ),
            (
                "herald_stale_outcomes_total{transport=\"telemetry-unit\"}",
                1.0,
            ),
            // Three attempts were made; the deferred claim was not one.
            (
                "herald_delivery_duration_seconds_count{transport=\"telemetry-unit\"}",
                3.0,
            ),
            (
                "herald_delivery_duration_seconds_sum{transport=\"telemetry-unit\"}",
                0.36,
            ),
            (
                "herald_delivery_duration_seconds_bucket{transport=\"telemetry-unit\",le=\"0.1\"}",
                0.0,
            ),
            (
                "herald_delivery_duration_seconds_bucket{transport=\"telemetry-unit\",le=\"0.2\"}",
                3.0,
            ),
            (
                "herald_queue_wait_seconds_count{transport=\"telemetry-unit\"}",
                3.0,
            ),
            (
                "herald_rate_limiter_wait_seconds_sum{transport=\"telemetry-unit\"}",
                0.06,
            ),
            // Only the finished ones: sent on attempt 2, dead after 3.
            (
                "herald_message_attempts_sum{transport=\"telemetry-unit\",outcome=\"sent\"}",
                2.0,
            ),
            (
                "herald_message_attempts_sum{transport=\"telemetry-unit\",outcome=\"dead\"}",
                3.0,
            ),
            (
                "herald_end_to_end_seconds_count{transport=\"telemetry-unit\",outcome=\"sent\"}",
                1.0,
            ),
            (
                "herald_end_to_end_seconds_sum{transport=\"telemetry-unit\",outcome=\"dead\"}",
                5.0,
            ),
        ];
        for (series, value) in expected {
            let got = sample(&text, series);
            assert!(
                got.is_some_and(|g| (g - value).abs() < 1e-9),
                "{series}: want {value}, got {got:?} in:\n{text}"
            );
        }
        assert_eq!(
            sample(
                &text,
                "herald_message_attempts_count{transport=\"telemetry-unit\",outcome=\"retried\"}"
            ),
            None,
            "a retried message has not finished"
        );
    }

    #[test]
    fn delivery_buckets_match_the_rollup_buckets() {
        let rollup: Vec<f64> = crate::storage::LATENCY_BUCKETS_MS
            .iter()
            .map(|ms| *ms as f64 / 1000.0)
            .collect();
        assert_eq!(DELIVERY_BUCKETS, rollup.as_slice());
    }
}
