//! One transport's circuit breaker: failsafe's state machine (consecutive
//! failures open it; it stays open for an exponentially growing time; then
//! one probe decides) with its state mirrored into an atomic, so the
//! transport actor and status reports can read it without asking failsafe
//! (whose `is_call_permitted` has the side effect of moving to half-open).
//! Every change of state is counted for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::{Config, Instrument, StateMachine};
use serde::Serialize;

/// Longest the breaker stays open, however often probes fail.
const MAX_OPEN_FACTOR: u32 = 16;

/// Breaker state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// Shared, lock-free view of the breaker.
#[derive(Debug, Default)]
struct Observed {
    state: AtomicU8,
    opened: AtomicU64,
    rejected: AtomicU64,
}

#[derive(Clone)]
struct Mirror {
    observed: Arc<Observed>,
    transport: Arc<str>,
}

impl Mirror {
    /// failsafe also reports `closed` when the breaker is built, which is
    /// no transition: only a change of the mirrored state counts.
    fn enter(&self, state: CircuitState) {
        let code = match state {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        };
        if self.observed.state.swap(code, Ordering::AcqRel) != code {
            crate::telemetry::circuit_transition(&self.transport, state);
        }
    }
}

impl Instrument for Mirror {
    fn on_call_rejected(&self) {
        self.observed.rejected.fetch_add(1, Ordering::Relaxed);
    }

    fn on_open(&self) {
        self.enter(CircuitState::Open);
        self.observed.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn on_half_open(&self) {
        self.enter(CircuitState::HalfOpen);
    }

    fn on_closed(&self) {
        self.enter(CircuitState::Closed);
    }
}

/// Open durations: `open_for`, doubling after each failed probe, capped.
/// failsafe's own exponential backoff counts whole seconds and refuses
/// anything under one; `circuit_open_ms` is in milliseconds.
#[derive(Debug, Clone)]
struct OpenTimes {
    next: Duration,
    max: Duration,
}

impl Iterator for OpenTimes {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(self.max);
        Some(current)
    }
}

/// A transport's breaker. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Breaker {
    machine: StateMachine<ConsecutiveFailures<OpenTimes>, Mirror>,
    observed: Arc<Observed>,
}

impl Breaker {
    /// `transport`'s breaker: opens after `threshold` consecutive transient
    /// failures, for `open_for`, doubling while probes keep failing (up to
    /// 16x).
    pub fn new(transport: &str, threshold: u32, open_for: Duration) -> Breaker {
        let observed = Arc::new(Observed::default());
        let open_times = OpenTimes {
            next: open_for,
            max: open_for * MAX_OPEN_FACTOR,
        };
        let policy = failure_policy::consecutive_failures(threshold, open_times);
        let machine = Config::new()
            .failure_policy(policy)
            .instrument(Mirror {
                observed: observed.clone(),
                transport: Arc::from(transport),
            })
            .build();
        Breaker { machine, observed }
    }

    pub fn state(&self) -> CircuitState {
        match self.observed.state.load(Ordering::Acquire) {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    /// Asks to make a call. While open this is refused until the open time
    /// has passed; then the breaker turns half-open and allows probes.
    pub fn permits(&self) -> bool {
        self.machine.is_call_permitted()
    }

    pub fn record_success(&self) {
        self.machine.on_success();
    }

    pub fn record_failure(&self) {
        self.machine.on_error();
    }

    /// How many times the breaker has opened.
    pub fn times_opened(&self) -> u64 {
        self.observed.opened.load(Ordering::Relaxed)
    }

    /// Calls refused while open.
    pub fn rejected_calls(&self) -> u64 {
        self.observed.rejected.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_open_time() {
        let breaker = Breaker::new("breaker-unit-probe", 3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(breaker.permits());
            breaker.record_failure();
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.record_failure();
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(!breaker.permits());
        std::thread::sleep(Duration::from_millis(80));
        assert!(breaker.permits(), "after the open time one probe may go");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        breaker.record_success();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(breaker.times_opened(), 1);
        assert!(breaker.rejected_calls() >= 1);
        let metrics = crate::telemetry::render();
        for (to, count) in [("open", 1), ("half_open", 1), ("closed", 1)] {
            let line = format!(
                "herald_circuit_transitions_total{{transport=\"breaker-unit-probe\",to=\"{to}\"}} {count}"
            );
            assert!(
                metrics.lines().any(|l| l == line),
                "no `{line}` in:\n{metrics}"
            );
        }
    }

    #[test]
    fn open_times_double_up_to_the_cap() {
        let times: Vec<Duration> = OpenTimes {
            next: Duration::from_millis(300),
            max: Duration::from_millis(1000),
        }
        .take(4)
        .collect();
        assert_eq!(times, [300, 600, 1000, 1000].map(Duration::from_millis));
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new("breaker-unit-reset", 2, Duration::from_secs(60));
        breaker.record_failure();
        breaker.record_success();
        breaker.record_failure();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
