//! The tracker: the single writer of delivery outcomes. Transport actors
//! send it every outcome; it buffers them and writes each buffer in one
//! storage transaction (status changes and events together), flushed when
//! [`FLUSH_AT`] outcomes are waiting or [`FLUSH_AFTER`] after the first
//! one, never one transaction per message. If the database is unreachable
//! it keeps the outcomes and retries with backoff; until then the
//! messages stay `processing` under their leases, so nothing is lost.

use std::sync::Arc;
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

pub struct Tracker {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    buffer: Vec<Outcome>,
    writing: bool,
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
            writing: false,
            timer: None,
            failures: 0,
            flush_waiters: Vec::new(),
            breaker_open: Default::default(),
            breaker_timer: None,
        }
    }

    /// Writes the breaker-open time gathered so far as transport rows (no
    /// channel or category) of the current minute; kept for the next
    /// try if storage refuses.
    fn write_breaker_time(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.breaker_timer.take() {
            ctx.cancel_future(timer);
        }
        if self.breaker_open.is_empty() {
            return;
        }
        let minute = truncate_minute(self.clock.now());
        let rows: Vec<MinuteMetrics> = std::mem::take(&mut self.breaker_open)
            .into_iter()
            .map(|(transport, ms)| MinuteMetrics {
                minute,
                transport,
                breaker_open_ms: ms,
                ..MinuteMetrics::default()
            })
            .collect();
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
        if self.writing {
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
        self.writing = true;
        let storage = self.storage.clone();
        let now = self.clock.now();
        let attempt = batch.clone();
        let write = async move { storage.record_outcomes(attempt, now).await };
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
            act.writing = false;
            match result {
                Ok(recorded) => {
                    act.failures = 0;
                    if !recorded.stale.is_empty() {
                        tracing::warn!(
                            stale = recorded.stale.len(),
                            "outcomes refused: their claim was taken over after a lease expired"
                        );
                    }
                    tracing::debug!(applied = recorded.applied.len(), "outcomes recorded");
                    act.write(ctx);
                }
                Err(err) if err.is_transient() => {
                    act.failures += 1;
                    let pause = Duration::from_millis(50u64 << act.failures.min(7)).min(MAX_RETRY_PAUSE);
                    tracing::warn!(cause = %err, outcomes = batch.len(), retry_in = ?pause, "cannot record outcomes yet");
                    // Back in front, in order, for the next try.
                    act.buffer.splice(0..0, batch);
                    act.timer = Some(ctx.run_later(pause, |act, ctx| {
                        act.timer = None;
                        act.write(ctx);
                    }));
                }
                Err(err) => {
                    // Not retryable: these messages stay `processing` until
                    // their leases expire and they are delivered again.
                    tracing::error!(cause = %err, outcomes = batch.len(), "outcomes could not be recorded");
                    act.write(ctx);
                }
            }
        }));
    }
}

impl Actor for Tracker {
    type Context = Context<Self>;
}

impl Handler<Record> for Tracker {
    type Result = ();

    fn handle(&mut self, Record(outcome): Record, ctx: &mut Context<Self>) {
        self.buffer.push(outcome);
        if self.buffer.len() >= FLUSH_AT {
            self.write(ctx);
        } else if self.timer.is_none() && !self.writing {
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
        self.write_breaker_time(ctx);
        let (done, wait) = oneshot::channel();
        self.flush_waiters.push(done);
        self.write(ctx);
        Box::pin(async move {
            let _ = wait.await;
        })
    }
}
