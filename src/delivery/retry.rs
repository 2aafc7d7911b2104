//! The retry schedule: exponential backoff with jitter, capped, decided
//! from the transport error's own classification.
//!
//! delay = min(retry_delay * retry_multiplier^(attempt-1), max_retry_delay),
//! then jittered down by up to [`JITTER`] so a burst of failures does not
//! come back as a burst of retries; a provider's Retry-After is a floor.
//!
//! How many attempts a message gets is the message's own `max_attempts`
//! (fixed at enqueue from the transport's `max_retries`); storage enforces
//! it when the outcome is recorded, so this policy only answers "when".

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::DeliverySettings;
use crate::transports::TransportError;

/// Share of the delay that jitter may remove.
pub const JITTER: f64 = 0.2;
/// Longest Retry-After honoured: a provider asking for days is treated as
/// asking for an hour, so a bad header cannot park a message for good.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The backoff parameters of one transport.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub retry_delay: Duration,
    pub multiplier: f64,
    pub max_delay: Duration,
}

impl From<&DeliverySettings> for RetryPolicy {
    fn from(settings: &DeliverySettings) -> Self {
        RetryPolicy {
            retry_delay: settings.retry_delay,
            multiplier: settings.retry_multiplier,
            max_delay: settings.max_retry_delay,
        }
    }
}

impl RetryPolicy {
    /// The un-jittered delay after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let factor = self.multiplier.powi(exponent);
        let millis =
            (self.retry_delay.as_millis() as f64 * factor).min(self.max_delay.as_millis() as f64);
        Duration::from_millis(millis.max(0.0) as u64)
    }

    /// When to try again after attempt number `attempt` failed with
    /// `error`; `None` when the error is permanent (dead-letter now).
    /// `jitter` in [0, 1] comes from the caller so tests stay exact.
    pub fn retry_at(
        &self,
        attempt: u32,
        error: &TransportError,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Option<DateTime<Utc>> {
        if error.is_permanent() {
            return None;
        }
        let jittered = self
            .backoff(attempt)
            .mul_f64(1.0 - JITTER * jitter.clamp(0.0, 1.0));
        let delay = match error.retry_after() {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        };
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        Some(crate::time::truncate_ms(now + delay))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retry_delay: Duration::from_millis(1000),
            multiplier: 2.0,
            max_delay: Duration::from_millis(3000),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap()
    }

    fn secs(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    fn transient() -> TransportError {
        TransportError::Temporary {
            code: Some(451),
            message: "later".into(),
            retry_after: None,
        }
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let p = policy();
        assert_eq!(p.backoff(1), Duration::from_millis(1000));
        assert_eq!(p.backoff(2), Duration::from_millis(2000));
        assert_eq!(p.backoff(3), Duration::from_millis(3000));
        assert_eq!(p.backoff(30), Duration::from_millis(3000));
    }

    #[test]
    fn transient_failures_retry_after_the_backoff() {
        let p = policy();
        assert_eq!(
            p.retry_at(1, &transient(), now(), 0.0),
            Some(now() + secs(1))
        );
        assert_eq!(
            p.retry_at(3, &transient(), now(), 0.0),
            Some(now() + secs(3))
        );
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let rejected = TransportError::Rejected {
            code: Some(550),
            message: "no such user".into(),
        };
        assert_eq!(policy().retry_at(1, &rejected, now(), 0.0), None);
    }

    #[test]
    fn jitter_only_shortens_within_bounds() {
        let at = policy().retry_at(2, &transient(), now(), 1.0);
        assert_eq!(at, Some(now() + chrono::Duration::milliseconds(1600)));
    }

    #[test]
    fn retry_after_is_capped() {
        let asked = TransportError::Temporary {
            code: Some(429),
            message: "slow".into(),
            retry_after: Some(Duration::from_secs(7 * 86_400)),
        };
        assert_eq!(
            policy().retry_at(1, &asked, now(), 0.0),
            Some(now() + secs(3600))
        );
    }

    #[test]
    fn retry_after_is_a_floor() {
        let asked = TransportError::Temporary {
            code: Some(429),
            message: "slow".into(),
            retry_after: Some(Duration::from_secs(10)),
        };
        assert_eq!(
            policy().retry_at(1, &asked, now(), 0.5),
            Some(now() + secs(10))
        );
    }
}
