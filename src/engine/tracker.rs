//! The tracker: the single writer of delivery outcomes. Transport actors
//! send it every outcome; it buffers them and writes each buffer in one
//! storage transaction (status changes and events together), flushed when
//! [`FLUSH_AT`] outcomes are waiting or [`FLUSH_AFTER`] after the first
//! one, never one transaction per message.
//!
//! A store that cannot write (full, read-only, out of reach: any error
//! that [`crate::storage::StorageError::is_transient`]) is an outage, not
//! a failure of the outcomes: the tracker keeps them, in order, and writes
//! them again with backoff until they are written, so a message delivered
//! during the outage is not delivered again after it. What it holds is bounded by
//! [`MAX_HELD`]: at that many the transport actors stop claiming
//! ([`Backlog`]) until writes succeed again, back-pressure rather than
//! dropping. A shutdown does not wait for the outage to end: what could
//! not be written comes back through the messages' leases.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::messages::{BreakerOpen, Flush, Record};
use crate::storage::{MAX_BATCH, MinuteMetrics, Outcome, Storage, truncate_minute};
use crate::time::Clock;

/// Outcomes that trigger a write at once.
pub const FLUSH_AT: usize = 256;
/// Longest an outcome waits for its batch.
pub const FLUSH_AFTER: Duration = Duration::from_millis(5);
/// How often breaker-open time is written to the rollups.
const BREAKER_FLUSH: Duration = Duration::from_secs(5);
/// Longest pause between attempts while storage is failing.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// Most outcomes the tracker holds unwritten before transport actors stop
/// claiming: enough for every actor's claims in flight many times over,
/// a few megabytes at most.
pub const MAX_HELD: usize = 10 * MAX_BATCH;

/// How many outcomes the tracker holds unwritten, shared with the
/// transport actors, which claim nothing while it is full: while the store
/// cannot write, work waits in the store rather than in memory. An atomic
/// and not a message, so asking costs a claim nothing.
#[derive(Debug, Clone, Default)]
pub struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    /// True when the tracker holds [`MAX_HELD`] outcomes or more.
    pub fn is_full(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= MAX_HELD
    }

    fn set(&self, held: usize) {
        self.0.store(held, Ordering::Relaxed);
    }
}

pub struct Tracker {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    buffer: Vec<Outcome>,
    /// Outcomes of the write under way, if any; they count as held.
    writing: Option<usize>,
    backlog: Backlog,
    timer: Option<SpawnHandle>,
    failures: u32,
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// Breaker-open ms by transport, not yet written.
    breaker_open: std::collections::BTreeMap<String, u64>,
    breaker_timer: Option<SpawnHandle>,
}

impl Tracker {
    pub fn new(storage: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Tracker {
        Tracker {
            storage,
            clock,
            buffer: Vec::new(),
            writing: None,
            backlog: Backlog::default(),
            timer: None,
            failures: 0,
            flush_waiters: Vec::new(),
            breaker_open: Default::default(),
            breaker_timer: None,
        }
    }

    /// The tracker's backlog, for the transport actors to read.
    pub fn backlog(&self) -> Backlog {
        self.backlog.clone()
    }

    fn update_backlog(&self) {
        self.backlog
            .set(self.buffer.len() + self.writing.unwrap_or_default());
    }

    /// Writes the breaker-open time gathered so far as transport rows (no
    /// channel or category) of the current minute; kept for the next
    /// try if storage refuses.
    fn write_breaker_time(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.breaker_timer.take() {
            ctx.cancel_future(timer);
        }
        let rows = self.take_breaker_rows();
        if rows.is_empty() {
            return;
        }
        let storage = self.storage.clone();
        let kept = rows.clone();
        let write = async move { storage.add_rollups(rows).await };
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
            if let Err(err) = result {
                tracing::warn!(cause = %err, "cannot record breaker-open time yet");
                for row in kept {
                    *act.breaker_open.entry(row.transport).or_default() += row.breaker_open_ms;
                }
                act.schedule_breaker_write(ctx);
            }
        }));
    }

    fn take_breaker_rows(&mut self) -> Vec<MinuteMetrics> {
        let minute = truncate_minute(self.clock.now());
        std::mem::take(&mut self.breaker_open)
            .into_iter()
            .map(|(transport, ms)| MinuteMetrics {
                minute,
                transport,
                breaker_open_ms: ms,
                ..MinuteMetrics::default()
            })
            .collect()
    }

    fn schedule_breaker_write(&mut self, ctx: &mut Context<Self>) {
        if self.breaker_timer.is_none() {
            self.breaker_timer = Some(ctx.run_later(BREAKER_FLUSH, |act, ctx| {
                act.breaker_timer = None;
                act.write_breaker_time(ctx);
            }));
        }
    }

    fn write(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if self.writing.is_some() {
            return; // the running write continues with what is left
        }
        if self.buffer.is_empty() {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
            return;
        }
        let take = self.buffer.len().min(MAX_BATCH);
        let batch: Vec<Outcome> = self.buffer.drain(..take).collect();
        self.writing = Some(batch.len());
        let storage = self.storage.clone();
        let now = self.clock.now();
        let attempt = batch.clone();
        let write = async move { storage.record_outcomes(attempt, now).await };
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
            act.writing = None;
            match result {
                Ok(recorded) => {
                    if act.failures > 0 {
                        tracing::info!(failures = act.failures, "outcomes recorded again");
                    }
                    act.failures = 0;
                    if !recorded.stale.is_empty() {
                        tracing::warn!(
                            stale = recorded.stale.len(),
                            "outcomes refused: their claim was taken over after a lease expired"
                        );
                    }
                    tracing::debug!(applied = recorded.applied.len(), "outcomes recorded");
                    crate::telemetry::outcomes_recorded(&batch, &recorded);
                    act.update_backlog();
                    act.write(ctx);
                }
                Err(err) if err.is_transient() => {
                    act.failures += 1;
                    let pause = retry_pause(act.failures);
                    tracing::warn!(cause = %err, outcomes = batch.len(), held = act.buffer.len() + batch.len(), retry_in = ?pause, "cannot record outcomes yet");
                    // Back in front, in order, for the next try: outcomes
                    // of one message must be applied in the order made.
                    act.buffer.splice(0..0, batch);
                    act.update_backlog();
                    act.timer = Some(ctx.run_later(pause, |act, ctx| {
                        act.timer = None;
                        act.write(ctx);
                    }));
                }
                Err(err) => {
                    // A fault of the data, not of the store: trying again
                    // would fail again and hold up every outcome behind
                    // these. They stay `processing` until their leases
                    // expire and they are delivered again.
                    tracing::error!(cause = %err, outcomes = batch.len(), "outcomes could not be recorded");
                    act.update_backlog();
                    act.write(ctx);
                }
            }
        }));
    }
}

/// The pause before write attempt `failures + 1`: doubling from 100 ms up
/// to [`MAX_RETRY_PAUSE`], so a short outage costs little delay and a
/// long one few attempts.
fn retry_pause(failures: u32) -> Duration {
    Duration::from_millis(50u64 << failures.clamp(1, 7)).min(MAX_RETRY_PAUSE)
}

impl Actor for Tracker {
    type Context = Context<Self>;
}

impl Handler<Record> for Tracker {
    type Result = ();

    fn handle(&mut self, Record(outcome): Record, ctx: &mut Context<Self>) {
        self.buffer.push(outcome);
        self.update_backlog();
        if self.failures > 0 {
            return; // backing off: the retry timer writes, not every arrival
        }
        if self.buffer.len() >= FLUSH_AT {
            self.write(ctx);
        } else if self.timer.is_none() && self.writing.is_none() {
            self.timer = Some(ctx.run_later(FLUSH_AFTER, |act, ctx| {
                act.timer = None;
                act.write(ctx);
            }));
        }
    }
}

impl Handler<BreakerOpen> for Tracker {
    type Result = ();

    fn handle(&mut self, BreakerOpen { transport, ms }: BreakerOpen, ctx: &mut Context<Self>) {
        *self.breaker_open.entry(transport).or_default() += ms;
        self.schedule_breaker_write(ctx);
    }
}

impl Handler<Flush> for Tracker {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(timer) = self.breaker_timer.take() {
            ctx.cancel_future(timer);
        }
        let breaker = self.take_breaker_rows();
        let storage = self.storage.clone();
        let (done, wait) = oneshot::channel();
        self.flush_waiters.push(done);
        self.write(ctx);
        Box::pin(async move {
            let _ = wait.await;
            if !breaker.is_empty()
                && let Err(err) = storage.add_rollups(breaker).await
            {
                tracing::warn!(cause = %err, "breaker-open time not recorded");
            }
        })
    }
}
