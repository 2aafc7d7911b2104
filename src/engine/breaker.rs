//! One transport's circuit breaker: failsafe's state machine (consecutive
//! failures open it; it stays open for an exponentially growing time; then
//! one probe decides) with its state mirrored into an atomic, so the
//! transport actor and status reports can read it without asking failsafe
//! (whose `is_call_permitted` has the side effect of moving to half-open).
//! Every change of state is counted for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::{Config, Instrument, StateMachine};
use serde::Serialize;

use crate::time::{Clock, from_millis, to_millis};
use crate::transports::TransportError;

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

/// `Observed::open_since` when the breaker is closed.
const NOT_OPEN: i64 = i64::MIN;

/// Shared, lock-free view of the breaker.
#[derive(Debug)]
struct Observed {
    state: AtomicU8,
    opened: AtomicU64,
    rejected: AtomicU64,
    /// Epoch ms of the opening that followed the last closed state, or
    /// [`NOT_OPEN`]. A failed probe re-opens without resetting it: to an
    /// operator the provider has been down since the first opening.
    open_since: AtomicI64,
}

#[derive(Clone)]
struct Mirror {
    observed: Arc<Observed>,
    transport: Arc<str>,
    clock: Arc<dyn Clock>,
}

impl Mirror {
    /// Mirrors `state`, answering the previous one's code. failsafe also
    /// reports `closed` when the breaker is built, which is no transition:
    /// only a change of the mirrored state counts.
    fn enter(&self, state: CircuitState) -> u8 {
        let code = match state {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        };
        let was = self.observed.state.swap(code, Ordering::AcqRel);
        if was != code {
            crate::telemetry::circuit_transition(&self.transport, state);
        }
        was
    }
}

impl Instrument for Mirror {
    fn on_call_rejected(&self) {
        self.observed.rejected.fetch_add(1, Ordering::Relaxed);
    }

    fn on_open(&self) {
        let was = self.enter(CircuitState::Open);
        self.observed.opened.fetch_add(1, Ordering::Relaxed);
        if was == 0 {
            self.observed
                .open_since
                .store(to_millis(self.clock.now()), Ordering::Release);
        }
    }

    fn on_half_open(&self) {
        self.enter(CircuitState::HalfOpen);
    }

    fn on_closed(&self) {
        self.enter(CircuitState::Closed);
        self.observed.open_since.store(NOT_OPEN, Ordering::Release);
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
    threshold: u32,
}

impl Breaker {
    /// `transport`'s breaker: opens after `threshold` consecutive transient
    /// failures, for `open_for`, doubling while probes keep failing (up to
    /// 16x). `clock` dates the openings.
    pub fn new(
        transport: &str,
        threshold: u32,
        open_for: Duration,
        clock: Arc<dyn Clock>,
    ) -> Breaker {
        let observed = Arc::new(Observed {
            state: AtomicU8::new(0),
            opened: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            open_since: AtomicI64::new(NOT_OPEN),
        });
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
                clock,
            })
            .build();
        Breaker {
            machine,
            observed,
            threshold,
        }
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

    /// Counts what an attempt says of the provider's health: a transient
    /// failure against it; refused credentials open it at once (every
    /// message would meet them); a success, or a refusal of the message
    /// itself, for it.
    pub fn record_attempt(&self, result: Result<(), &TransportError>) {
        match result {
            Err(err) if err.is_unauthorized() => self.trip(),
            Err(err) if err.is_transient() => self.record_failure(),
            _ => self.record_success(),
        }
    }

    /// Opens the breaker now. failsafe opens on consecutive failures
    /// only, so it is given as many as its threshold asks for.
    fn trip(&self) {
        for _ in 0..self.threshold.max(1) {
            if self.state() == CircuitState::Open {
                break;
            }
            self.machine.on_error();
        }
    }

    /// Since when the breaker has not been closed (open, or half-open
    /// between failed probes); `None` while closed.
    pub fn open_since(&self) -> Option<DateTime<Utc>> {
        match self.observed.open_since.load(Ordering::Acquire) {
            NOT_OPEN => None,
            ms => Some(from_millis(ms)),
        }
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
    use crate::time::ManualClock;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(DateTime::UNIX_EPOCH))
    }

    #[test]
    fn refused_credentials_open_it_at_once_and_a_refused_message_does_not() {
        let breaker = Breaker::new("breaker-unit-auth", 5, Duration::from_secs(60), clock());
        let rejected = TransportError::Rejected {
            code: Some(400),
            message: "bad".into(),
        };
        for _ in 0..10 {
            breaker.record_attempt(Err(&rejected));
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.record_attempt(Err(&TransportError::Unauthorized {
            code: Some(401),
            message: "invalid_auth".into(),
        }));
        assert_eq!(breaker.state(), CircuitState::Open);
        assert_eq!(breaker.times_opened(), 1);
    }

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_open_time() {
        let clock = clock();
        let breaker = Breaker::new(
            "breaker-unit-probe",
            3,
            // failsafe times the open state on the real clock; a short open
            // time lets a descheduled test thread see it already over.
            Duration::from_secs(1),
            clock.clone(),
        );
        for _ in 0..2 {
            assert!(breaker.permits());
            breaker.record_failure();
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(breaker.open_since(), None);
        clock.advance(chrono::Duration::seconds(5));
        breaker.record_failure();
        assert_eq!(breaker.state(), CircuitState::Open);
        let opened_at = DateTime::UNIX_EPOCH + chrono::Duration::seconds(5);
        assert_eq!(breaker.open_since(), Some(opened_at));
        assert!(!breaker.permits());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(breaker.permits(), "after the open time one probe may go");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        clock.advance(chrono::Duration::seconds(5));
        breaker.record_failure();
        assert_eq!(
            breaker.open_since(),
            Some(opened_at),
            "a failed probe keeps the first opening"
        );
        assert!(!breaker.permits(), "a failed probe re-opens the breaker");
        std::thread::sleep(Duration::from_millis(2100));
        assert!(breaker.permits(), "the second open time is twice the first");
        breaker.record_success();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(breaker.open_since(), None);
        assert_eq!(breaker.times_opened(), 2);
        assert!(breaker.rejected_calls() >= 1);
        let metrics = crate::telemetry::render();
        for (to, count) in [("open", 2), ("half_open", 2), ("closed", 1)] {
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
        let breaker = Breaker::new("breaker-unit-reset", 2, Duration::from_secs(60), clock());
        breaker.record_failure();
        breaker.record_success();
        breaker.record_failure();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
