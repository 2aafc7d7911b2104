//! A transport's gate: its own rate limiter (governor) and circuit breaker.
//! There is one per configured transport per process, built with the
//! transports ([`crate::transports::build_all`]). The transport's actor and
//! every group that has the transport as a member pass through the same
//! gate, so the member's `rate_limit`, `burst_limit` and breaker hold for
//! the sum of its direct and group traffic.

use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::breaker::Breaker;
use crate::config::TransportSettings;
use crate::time::Clock;

/// A transport's rate limiter and breaker. Cheap to clone; clones share
/// both.
#[derive(Clone)]
pub struct Gate {
    limiter: Arc<DefaultDirectRateLimiter>,
    breaker: Breaker,
}

impl Gate {
    /// A gate letting `quota` through, guarded by `breaker`.
    pub fn new(quota: Quota, breaker: Breaker) -> Gate {
        Gate {
            limiter: Arc::new(RateLimiter::direct(quota)),
            breaker,
        }
    }

    /// The gate `settings` configure: `rate_limit` per minute with bursts
    /// of `burst_limit`, and a breaker opening after
    /// `circuit_failure_threshold` failures for `circuit_open_ms`.
    pub fn for_transport(settings: &TransportSettings, clock: Arc<dyn Clock>) -> Gate {
        let delivery = &settings.delivery;
        let quota = Quota::per_minute(delivery.rate_limit).allow_burst(delivery.burst_limit);
        let breaker = Breaker::new(
            &settings.name,
            delivery.circuit_failure_threshold.get(),
            delivery.circuit_open,
            clock,
        );
        Gate::new(quota, breaker)
    }

    pub fn limiter(&self) -> &Arc<DefaultDirectRateLimiter> {
        &self.limiter
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Waits until the rate limit lets one delivery through, and takes it.
    pub async fn until_ready(&self) {
        self.limiter.until_ready().await;
    }

    /// Takes one delivery's room now if the rate limit has it.
    pub fn try_acquire(&self) -> bool {
        self.limiter.check().is_ok()
    }
}
