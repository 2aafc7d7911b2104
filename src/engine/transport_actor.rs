//! One transport's actor: it owns that transport's queue.
//!
//! The loop, driven by [`TransportActor::pump`]: claim due messages in
//! priority order (up to `batch_size`, keeping at most `concurrency +
//! prefetch_count` claimed), start up to `concurrency` deliveries, each
//! waiting on the transport's own rate limiter and asking its own circuit
//! breaker (its [`Gate`], shared with the groups it is a member of), and
//! send every outcome to the tracker. While paused, or while
//! the breaker is open, nothing is claimed and claimed-but-unstarted
//! messages are handed back, so waiting costs a message no attempt. It
//! wakes on a work signal (enqueue) and otherwise polls every
//! `poll_interval`; an idle queue costs one indexed probe per poll.
//!
//! The store, not this actor, is the source of truth: a restarted actor
//! (after a transport panicked) starts empty and claims again; what it held
//! comes back through lease expiry.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use governor::DefaultDirectRateLimiter;
use tokio::sync::oneshot;

use super::Gate;
use super::breaker::{Breaker, CircuitState};
use super::messages::{BreakerOpen, GetStatus, Pause, Record, Resume, Shutdown, Wake};
use super::tracker::{Backlog, Tracker};
use super::{EngineOptions, TransportStatus};
use crate::config::TransportSettings;
use crate::delivery::retry::RetryPolicy;
use crate::domain::{ClaimToken, Message, Stamp};
use crate::storage::{MemberFailed, Outcome, OutcomeKind, Storage};
use crate::time::Clock;
use crate::transports::{Attempted, MemberFailure, Transport};

/// Everything an actor needs; kept so a restart rebuilds from the same parts.
#[derive(Clone)]
pub struct TransportParts {
    pub settings: TransportSettings,
    pub transport: Arc<dyn Transport>,
    /// The transport's rate limiter and breaker, shared with its groups.
    pub gate: Gate,
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    pub tracker: Addr<Tracker>,
    /// The tracker's unwritten outcomes: no claims while it is full.
    pub backlog: Backlog,
    pub options: EngineOptions,
    pub paused: bool,
    /// This process's identity for transport leases.
    pub node: Arc<str>,
}

/// What one delivery task came back with.
enum Attempt {
    Delivered(Attempted, Duration),
    /// The breaker opened while this message waited: not attempted.
    NotPermitted,
    /// The transport panicked; the actor restarts after recording it.
    Panicked(String, Duration),
}

/// How often the breaker's state is sampled for the breaker-open time.
const BREAKER_SAMPLE: Duration = Duration::from_secs(1);

/// Where a claimed message spent its time on this node before the attempt.
struct Held {
    /// Waiting on the rate limiter.
    limited: Duration,
    /// When the attempt started (the claim stamped `updated_at`).
    started_at: DateTime<Utc>,
}

/// Fills in an attempt's timings. A first attempt's total is its wait,
/// hold and delivery; a later one's runs from the message's creation,
/// since `available_at` has moved with each retry.
fn with_timings(
    outcome: Outcome,
    message: &Message,
    held: &Held,
    took: Duration,
    now: DateTime<Utc>,
) -> Outcome {
    let millis = |d: chrono::TimeDelta| d.num_milliseconds().max(0) as u64;
    let wait = millis(message.updated_at - message.available_at);
    let processing = millis(held.started_at - message.updated_at);
    let delivery = took.as_millis() as u64;
    let total = if message.attempts <= 1 {
        wait + processing + delivery
    } else {
        millis(now - message.created_at)
    };
    Outcome {
        duration_ms: Some(delivery),
        wait_ms: Some(wait),
        processing_ms: Some(processing),
        limited_ms: Some(held.limited.as_millis() as u64),
        total_ms: Some(total),
        ..outcome
    }
}

/// A member of the group `group` that failed within an attempt, as stored.
fn member_failed(group: &str, failure: MemberFailure) -> MemberFailed {
    MemberFailed {
        group: group.to_owned(),
        member: failure.member,
        error: failure.error.to_string(),
        duration_ms: Some(failure.took.as_millis() as u64),
    }
}

pub struct TransportActor {
    parts: TransportParts,
    retry: RetryPolicy,
    limiter: Arc<DefaultDirectRateLimiter>,
    breaker: Breaker,
    paused: bool,
    stopping: bool,
    /// This node holds the transport's lease: only the holder claims, so
    /// the rate limit and the breaker are exact across nodes.
    holds_lease: bool,
    claiming: bool,
    /// The last claim came back short: wait for a wake or the poll.
    idle: bool,
    /// Counts wakes, so a wake that arrives during a claim is not lost.
    wakes: u64,
    ready: VecDeque<Message>,
    in_flight: HashMap<Stamp, ClaimToken>,
    last_error: Option<String>,
    last_activity: Option<DateTime<Utc>>,
    drained: Vec<oneshot::Sender<()>>,
}

impl TransportActor {
    pub fn new(parts: TransportParts) -> TransportActor {
        TransportActor {
            retry: RetryPolicy::from(&parts.settings.delivery),
            limiter: parts.gate.limiter().clone(),
            breaker: parts.gate.breaker().clone(),
            paused: parts.paused,
            stopping: false,
            holds_lease: false,
            claiming: false,
            idle: false,
            wakes: 0,
            ready: VecDeque::new(),
            in_flight: HashMap::new(),
            last_error: None,
            last_activity: None,
            drained: Vec::new(),
            parts,
        }
    }

    fn name(&self) -> &str {
        &self.parts.settings.name
    }

    /// Claimed messages this actor may hold at once.
    fn capacity(&self) -> usize {
        let delivery = &self.parts.settings.delivery;
        delivery.concurrency.get() + delivery.prefetch_count
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let concurrency = self.parts.settings.delivery.concurrency.get();
        while !self.paused && self.in_flight.len() < concurrency {
            // Half-open: one probe at a time decides whether to close.
            if self.breaker.state() == CircuitState::HalfOpen && !self.in_flight.is_empty() {
                break;
            }
            let Some(message) = self.ready.pop_front() else {
                break;
            };
            self.start_delivery(message, ctx);
        }
        self.claim(ctx);
    }

    fn claim(&mut self, ctx: &mut Context<Self>) {
        if self.paused || self.claiming || self.idle || self.stopping || !self.holds_lease {
            return;
        }
        // A group whose every member's breaker is open has nothing to try;
        // the poll asks again.
        if !self.parts.transport.is_available() {
            return;
        }
        if self.parts.backlog.is_full() {
            return; // the tracker cannot write what it holds: leave work in the store
        }
        let held = self.ready.len() + self.in_flight.len();
        let want = match self.breaker.state() {
            CircuitState::Closed => self
                .parts
                .settings
                .delivery
                .batch_size
                .get()
                .min(self.capacity().saturating_sub(held)),
            // Nothing is claimed while open. Once the open time has passed,
            // `permits` turns the breaker half-open: claim one message as
            // the probe.
            CircuitState::Open | CircuitState::HalfOpen => {
                if held > 0 || !self.breaker.permits() {
                    return;
                }
                1
            }
        };
        if want == 0 {
            return;
        }
        self.claiming = true;
        let wakes = self.wakes;
        let storage = self.parts.storage.clone();
        let name = self.name().to_owned();
        let lease = self.parts.settings.delivery.lease;
        let now = self.parts.clock.now();
        let node = self.parts.node.clone();
        let claim = async move { storage.claim_due(&name, &node, want, lease, now).await };
        ctx.spawn(claim.into_actor(self).map(move |result, act, ctx| {
            act.claiming = false;
            match result {
                Ok(messages) => {
                    if messages.len() < want && act.wakes == wakes {
                        act.idle = true;
                    }
                    if !messages.is_empty() {
                        tracing::debug!(
                            transport = act.name(),
                            claimed = messages.len(),
                            "claimed"
                        );
                    }
                    act.ready.extend(messages);
                    if act.paused || act.stopping {
                        act.release_ready(if act.paused { "paused" } else { "shutdown" });
                    }
                }
                Err(err) => {
                    act.idle = true; // the next poll tries again
                    tracing::warn!(transport = act.name(), cause = %err, "claim failed");
                    act.last_error = Some(format!("claim failed: {err}"));
                }
            }
            act.pump(ctx);
        }));
    }

    fn start_delivery(&mut self, message: Message, ctx: &mut Context<Self>) {
        let Some(token) = message.claim_token else {
            tracing::error!(transport = self.name(), id = %message.id, "claimed message without a claim token");
            return;
        };
        self.in_flight.insert(message.id, token);
        let limiter = self.limiter.clone();
        let breaker = self.breaker.clone();
        let transport = self.parts.transport.clone();
        let clock = self.parts.clock.clone();
        let hard_timeout = self.parts.options.delivery_timeout;
        let task = async move {
            let limited = Instant::now();
            limiter.until_ready().await;
            let mut held = Held {
                limited: limited.elapsed(),
                started_at: clock.now(),
            };
            if !breaker.permits() {
                return (message, Attempt::NotPermitted, held);
            }
            let started = Instant::now();
            let delivery = transport.attempt(&message, hard_timeout);
            let attempt = match AssertUnwindSafe(delivery).catch_unwind().await {
                // Every member of a group has its breaker open: nothing
                // was tried, so nothing is failed.
                Ok(attempted) if attempted.result.as_ref().is_err_and(|e| e.is_unavailable()) => {
                    Attempt::NotPermitted
                }
                Ok(attempted) => {
                    // A group's wait for its members' rate limiters is
                    // limiter time, not the provider's latency.
                    held.limited += attempted.limited;
                    held.started_at +=
                        chrono::Duration::from_std(attempted.limited).unwrap_or_default();
                    let took = started.elapsed().saturating_sub(attempted.limited);
                    Attempt::Delivered(attempted, took)
                }
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    Attempt::Panicked(what, started.elapsed())
                }
            };
            (message, attempt, held)
        };
        ctx.spawn(
            task.into_actor(self)
                .map(|(message, attempt, held), act, ctx| {
                    act.finish(message, attempt, held, ctx);
                }),
        );
    }

    fn finish(&mut self, message: Message, attempt: Attempt, held: Held, ctx: &mut Context<Self>) {
        let Some(token) = self.in_flight.remove(&message.id) else {
            return; // handed back already (restart)
        };
        let now = self.parts.clock.now();
        self.last_activity = Some(now);
        let name = self.name().to_owned();
        let mut panicked = false;
        let mut error_class = None;
        let mut passed_over = Vec::new();
        let mut provider_message_id = None;
        let mut recipient_gone = None;
        let (kind, member, duration) = match attempt {
            Attempt::NotPermitted => (
                OutcomeKind::Released {
                    reason: "circuit_open".into(),
                },
                name.clone(),
                None,
            ),
            Attempt::Delivered(
                Attempted {
                    result: Ok(delivery),
                    passed_over: tried,
                    ..
                },
                took,
            ) => {
                self.breaker.record_success();
                passed_over = tried;
                tracing::debug!(transport = %name, id = %message.id, member = %delivery.transport, "sent");
                provider_message_id = delivery.provider_message_id;
                (OutcomeKind::Sent, delivery.transport, Some(took))
            }
            Attempt::Delivered(
                Attempted {
                    result: Err(err),
                    member: used,
                    passed_over: tried,
                    ..
                },
                took,
            ) => {
                self.breaker.record_attempt(Err(&err));
                tracing::info!(transport = %name, id = %message.id, attempt = message.attempts, class = ?err.class(), cause = %err, "delivery failed");
                self.last_error = Some(err.to_string());
                passed_over = tried;
                if err.is_unauthorized() {
                    // The transport's outage, not the message's: it goes
                    // back, its attempt given back, behind the open breaker.
                    (
                        OutcomeKind::Released {
                            reason: "unauthorized".into(),
                        },
                        used,
                        None,
                    )
                } else {
                    error_class = Some(err.class().as_str().to_owned());
                    let retry_at =
                        self.retry
                            .retry_at(message.attempts, &err, now, rand::random::<f64>());
                    recipient_gone = err.recipient_gone();
                    (
                        OutcomeKind::Failed {
                            error: err.to_string(),
                            retry_at,
                        },
                        used,
                        Some(took),
                    )
                }
            }
            Attempt::Panicked(what, took) => {
                self.breaker.record_failure();
                panicked = true;
                let error = format!("transport panicked: {what}");
                tracing::error!(transport = %name, id = %message.id, cause = %what, "transport panicked; restarting its actor");
                self.last_error = Some(error.clone());
                error_class = Some("transient".to_owned());
                let retry_at = Some(
                    now + chrono::Duration::from_std(self.retry.backoff(message.attempts))
                        .unwrap_or_default(),
                );
                (
                    OutcomeKind::Failed { error, retry_at },
                    name.clone(),
                    Some(took),
                )
            }
        };
        let outcome = Outcome {
            transport: member,
            attempt: message.attempts,
            error_class,
            passed_over: passed_over
                .into_iter()
                .map(|failure| member_failed(&name, failure))
                .collect(),
            provider_message_id,
            recipient_gone,
            ..Outcome::new(&message, token, kind)
        };
        let outcome = match duration {
            Some(took) => with_timings(outcome, &message, &held, took, now),
            None => outcome,
        };
        self.parts.tracker.do_send(Record(outcome));
        if panicked {
            ctx.stop(); // the supervisor restarts us with fresh state
            return;
        }
        if self.breaker.state() == CircuitState::Open && !self.ready.is_empty() {
            tracing::warn!(transport = %name, "circuit open: handing back claimed messages");
            self.release_ready("circuit_open");
        }
        self.notify_if_drained();
        self.pump(ctx);
    }

    /// Hands every claimed-but-unstarted message back to the queue.
    fn release_ready(&mut self, reason: &str) {
        for message in self.ready.drain(..) {
            if let Some(token) = message.claim_token {
                let kind = OutcomeKind::Released {
                    reason: reason.to_owned(),
                };
                self.parts.tracker.do_send(Record(Outcome {
                    transport: self.parts.settings.name.clone(),
                    ..Outcome::new(&message, token, kind)
                }));
            }
        }
    }

    fn notify_if_drained(&mut self) {
        if self.stopping && self.in_flight.is_empty() {
            for waiter in self.drained.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Takes or renews this node's lease on the transport.
    fn hold(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let storage = self.parts.storage.clone();
        let name = self.name().to_owned();
        let node = self.parts.node.clone();
        let now = self.parts.clock.now();
        let until = now
            + chrono::Duration::from_std(self.parts.settings.delivery.lease).unwrap_or_default();
        let dead_before = now
            - chrono::Duration::from_std(self.parts.options.node_timeout())
                .unwrap_or(chrono::Duration::MAX);
        let hold = async move {
            storage
                .hold_transport(&name, &node, until, now, dead_before)
                .await
        };
        ctx.spawn(hold.into_actor(self).map(|result, act, ctx| {
            let held = match result {
                Ok(held) => held,
                Err(err) => {
                    // Unable to renew: behave as if lost, since another node
                    // may take over once the lease runs out.
                    tracing::warn!(transport = act.name(), cause = %err, "cannot renew the transport lease");
                    false
                }
            };
            if held != act.holds_lease {
                if held {
                    tracing::info!(transport = act.name(), node = %act.parts.node, "this node now drives the transport");
                } else {
                    tracing::warn!(transport = act.name(), "another node drives the transport; not claiming");
                }
            }
            act.holds_lease = held;
            if held {
                act.pump(ctx);
            }
        }));
    }

    /// Extends the leases of everything held, so a slow delivery or a long
    /// rate-limit wait is not mistaken for a crash.
    fn renew(&mut self, ctx: &mut Context<Self>) {
        let held: Vec<(Stamp, ClaimToken)> = self
            .in_flight
            .iter()
            .map(|(id, token)| (*id, *token))
            .chain(
                self.ready
                    .iter()
                    .filter_map(|m| m.claim_token.map(|t| (m.id, t))),
            )
            .collect();
        if held.is_empty() {
            return;
        }
        let storage = self.parts.storage.clone();
        let lease =
            chrono::Duration::from_std(self.parts.settings.delivery.lease).unwrap_or_default();
        let until = self.parts.clock.now() + lease;
        let renew = async move {
            storage
                .renew_leases(&held, until)
                .await
                .map(|n| (n, held.len()))
        };
        ctx.spawn(renew.into_actor(self).map(|result, act, _| match result {
            Ok((renewed, held)) if renewed < held => {
                tracing::warn!(
                    transport = act.name(),
                    lost = held - renewed,
                    "some claims were lost before their lease was renewed"
                );
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(transport = act.name(), cause = %err, "lease renewal failed")
            }
        }));
    }
}

impl Actor for TransportActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
        let poll = self.parts.options.poll_interval;
        ctx.run_interval(poll, |act, ctx| {
            act.idle = false;
            act.pump(ctx);
        });
        let lease = self.parts.settings.delivery.lease;
        ctx.run_interval(lease / 3, |act, ctx| act.renew(ctx));
        // At the node's heartbeat, not the lease's pace: a dead holder's
        // transport is taken over within a few heartbeats.
        ctx.run_interval(self.parts.options.heartbeat, |act, ctx| act.hold(ctx));
        // Sampled rather than timed at transitions: the breaker turns
        // half-open lazily, when asked, so a sample is as exact as it gets.
        ctx.run_interval(BREAKER_SAMPLE, |act, _| {
            if act.breaker.state() == CircuitState::Open {
                act.parts.tracker.do_send(BreakerOpen {
                    transport: act.name().to_owned(),
                    ms: BREAKER_SAMPLE.as_millis() as u64,
                });
            }
        });
        tracing::info!(
            transport = self.name(),
            kind = self.parts.transport.kind(),
            paused = self.paused,
            "transport running"
        );
        // Claims start once this node holds the transport's lease.
        self.hold(ctx);
    }
}

impl actix::Supervised for TransportActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // Deliveries in flight died with the old context; their leases
        // expire and they are delivered again. Unstarted claims go back now.
        self.release_ready("restart");
        self.in_flight.clear();
        self.claiming = false;
        self.idle = false;
        tracing::warn!(transport = self.name(), "transport actor restarted");
    }
}

impl Handler<Wake> for TransportActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.wakes += 1;
        self.idle = false;
        self.pump(ctx);
    }
}

impl Handler<Pause> for TransportActor {
    type Result = ();

    fn handle(&mut self, _: Pause, _: &mut Context<Self>) {
        // Pause arrives once from the API and again from the state signal.
        if self.paused {
            return;
        }
        self.paused = true;
        self.release_ready("paused");
        tracing::info!(transport = self.name(), "paused");
    }
}

impl Handler<Resume> for TransportActor {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        if !self.paused {
            return;
        }
        self.paused = false;
        self.idle = false;
        tracing::info!(transport = self.name(), "resumed");
        self.pump(ctx);
    }
}

impl Handler<GetStatus> for TransportActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let delivery = &self.parts.settings.delivery;
        MessageResult(TransportStatus {
            name: self.name().to_owned(),
            kind: self.parts.settings.kind.name(),
            running: !self.stopping,
            paused: self.paused,
            circuit: self.breaker.state(),
            circuit_open_since: self.breaker.open_since(),
            holds_lease: self.holds_lease,
            in_flight: self.in_flight.len(),
            prefetched: self.ready.len(),
            concurrency: delivery.concurrency.get(),
            rate_limit: delivery.rate_limit.get(),
            burst_limit: delivery.burst_limit.get(),
            breaker_opened: self.breaker.times_opened(),
            last_error: self.last_error.clone(),
            last_activity: self.last_activity,
        })
    }
}

impl Handler<Shutdown> for TransportActor {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, Shutdown { grace }: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        self.release_ready("shutdown");
        let (done, drained) = oneshot::channel();
        self.drained.push(done);
        self.notify_if_drained();
        let storage = self.parts.storage.clone();
        let name = self.name().to_owned();
        let node = self.parts.node.clone();
        let holds_lease = self.holds_lease;
        let wait = async move {
            let _ = tokio::time::timeout(grace, drained).await;
            if holds_lease {
                // Another node may take over at once rather than after expiry.
                if let Err(err) = storage.release_transport(&name, &node).await {
                    tracing::warn!(transport = %name, cause = %err, "could not release the transport lease");
                }
            }
        };
        Box::pin(wait.into_actor(self).map(|_, act, _| {
            act.holds_lease = false;
            act.in_flight.len()
        }))
    }
}
