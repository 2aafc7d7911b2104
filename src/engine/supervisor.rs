//! The supervisor: one per process. It starts one [`TransportActor`] per
//! configured transport (restarted by actix when it stops after a panic)
//! and the shared [`Tracker`], relays work signals and pause/resume (after
//! persisting them), collects status, and runs the housekeeping every node
//! needs: the node's heartbeat, recovering expired leases and the claims
//! of dead nodes, purging old dead letters, and running replay jobs.
//!
//! Pause state lives in storage, not here: a pause or resume made on any
//! node is announced through the store's state signal (and, should a
//! notification be lost, found at the next heartbeat), and every node's
//! supervisor then reads the persisted state and tells its actors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::alerter::Alerter;
use super::messages::{
    Flush, GetStatus, GetStatuses, Pause, Resume, SetPaused, Shutdown, StateChanged, Wake,
};
use super::tracker::Tracker;
use super::transport_actor::{TransportActor, TransportParts};
use super::{EngineError, EngineOptions};
use crate::config::Settings;
use crate::storage::{MAX_BATCH, NodeInfo, Storage};
use crate::time::Clock;
use crate::transports::Gated;

pub struct Supervisor {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    settings: Arc<Settings>,
    transports: BTreeMap<String, Gated>,
    paused: Vec<String>,
    options: EngineOptions,
    actors: BTreeMap<String, Addr<TransportActor>>,
    tracker: Option<Addr<Tracker>>,
    alerter: Option<Addr<Alerter>>,
    info: NodeInfo,
    node: Arc<str>,
    recovering: bool,
    /// A round of [`Supervisor::rematch`] is running.
    rematching: bool,
    /// A round of [`Supervisor::replay_jobs`] is running.
    replaying: bool,
    beating: bool,
    /// Since when this node's heartbeats have been written without a
    /// failure; `None` while they fail (see [`Supervisor::recover`]).
    beating_since: Option<chrono::DateTime<chrono::Utc>>,
    /// A heartbeat has failed since start.
    after_outage: bool,
    stopping: bool,
}

impl Supervisor {
    pub fn new(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        settings: Arc<Settings>,
        transports: BTreeMap<String, Gated>,
        paused: Vec<String>,
        options: EngineOptions,
        info: NodeInfo,
    ) -> Supervisor {
        let started_at = info.started_at;
        Supervisor {
            storage,
            clock,
            settings,
            transports,
            paused,
            options,
            actors: BTreeMap::new(),
            tracker: None,
            alerter: None,
            node: Arc::from(info.id.as_str()),
            info,
            recovering: false,
            rematching: false,
            replaying: false,
            beating: false,
            // Registration at start was this node's first heartbeat.
            beating_since: Some(started_at),
            after_outage: false,
            stopping: false,
        }
    }

    /// The start of the heartbeat silence after which a node is dead.
    fn dead_before(&self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        now - chrono::Duration::from_std(self.options.node_timeout())
            .unwrap_or(chrono::Duration::MAX)
    }

    /// Proves this node alive, then reads the persisted pause state (the
    /// fallback for a lost state notification).
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.beating || self.stopping {
            return;
        }
        self.beating = true;
        let storage = self.storage.clone();
        let info = self.info.clone();
        let now = self.clock.now();
        let beat = async move { storage.heartbeat(&info, now).await };
        ctx.spawn(beat.into_actor(self).map(move |result, act, ctx| {
            act.beating = false;
            match result {
                Ok(()) => {
                    act.beating_since.get_or_insert(now);
                }
                Err(err) => {
                    act.beating_since = None;
                    act.after_outage = true;
                    tracing::warn!(node = %act.node, cause = %err, "heartbeat not written; other nodes may take over this node's work");
                }
            }
            act.sync_paused(ctx);
        }));
    }

    /// Tells every actor the pause state persisted for its transport.
    fn sync_paused(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let storage = self.storage.clone();
        let states = async move { storage.transport_states().await };
        ctx.spawn(states.into_actor(self).map(|result, act, _| match result {
            Ok(states) => {
                for (name, actor) in &act.actors {
                    let paused = states.iter().any(|s| &s.name == name && s.paused);
                    if paused {
                        actor.do_send(Pause);
                    } else {
                        actor.do_send(Resume);
                    }
                }
            }
            Err(err) => tracing::warn!(cause = %err, "cannot read the transports' pause state"),
        }));
    }

    fn recover(&mut self, ctx: &mut Context<Self>) {
        if self.recovering || self.stopping {
            return;
        }
        let now = self.clock.now();
        // After a storage outage every node's heartbeat is stale and every
        // lease may have run out, though the nodes are alive and their
        // trackers hold the outcomes: recovering at once would hand live
        // work out twice. So nothing is recovered while this node's own
        // heartbeats fail, and after an outage not before they have
        // succeeded for a node timeout (the others had as long to beat
        // again, and our tracker to write what it held). Other nodes are
        // presumed dead only once this node has itself been beating that
        // long; right after start, expired leases (a dead predecessor's
        // claims among them) are recovered at once.
        let Some(beating_since) = self.beating_since else {
            return;
        };
        let timeout = chrono::Duration::from_std(self.options.node_timeout())
            .unwrap_or(chrono::Duration::MAX);
        let steady = now - beating_since >= timeout;
        if self.after_outage && !steady {
            return;
        }
        let dead_before = if steady {
            self.dead_before(now)
        } else {
            chrono::DateTime::UNIX_EPOCH
        };
        self.recovering = true;
        let storage = self.storage.clone();
        let recover = async move { storage.recover_expired(now, dead_before, MAX_BATCH).await };
        ctx.spawn(recover.into_actor(self).map(|result, act, _| {
            act.recovering = false;
            match result {
                Ok(ids) if !ids.is_empty() => {
                    tracing::warn!(
                        recovered = ids.len(),
                        "expired leases recovered; those messages are queued again"
                    );
                    for actor in act.actors.values() {
                        actor.do_send(Wake);
                    }
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(cause = %err, "lease recovery failed"),
            }
        }));
    }

    /// Matches kept provider reports again (see [`REMATCH_EVERY`]), one
    /// round at a time.
    fn rematch(&mut self, ctx: &mut Context<Self>) {
        if self.rematching {
            return;
        }
        self.rematching = true;
        let storage = self.storage.clone();
        let now = self.clock.now();
        let rematch = async move { storage.rematch_feedback(now, MAX_BATCH).await };
        ctx.spawn(rematch.into_actor(self).map(|result, act, _| {
            act.rematching = false;
            match result {
                Ok(recorded) if recorded.applied > 0 => {
                    tracing::debug!(applied = recorded.applied, "kept provider reports matched");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(cause = %err, "matching kept provider reports failed"),
            }
        }));
    }

    /// Runs the replay jobs this node may take (see [`REPLAY_JOBS_EVERY`]),
    /// one round at a time; a job another node stopped advancing for a
    /// node timeout is taken over.
    fn replay_jobs(&mut self, ctx: &mut Context<Self>) {
        if self.replaying || self.stopping {
            return;
        }
        self.replaying = true;
        let storage = self.storage.clone();
        let clock = self.clock.clone();
        let node = self.node.clone();
        let stale_before = self.dead_before(self.clock.now());
        let run = async move {
            super::run_replay_jobs(storage.as_ref(), clock.as_ref(), &node, stale_before).await
        };
        ctx.spawn(run.into_actor(self).map(|result, act, _| {
            act.replaying = false;
            if let Err(err) = result {
                tracing::warn!(cause = %err, "replay job interrupted; it resumes on a later round");
            }
        }));
    }

    /// Storage upkeep: moves finished messages stored before live and
    /// finished were kept apart, runs retention, compacts rollups. Each
    /// step works in bounded batches and at most [`UPKEEP_ROUNDS`] of
    /// them per tick, so no tick holds the store for long.
    fn purge(&mut self, ctx: &mut Context<Self>) {
        let storage = self.storage.clone();
        let now = self.clock.now();
        let age = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let seal_before = now - crate::storage::SEAL_LAG;
        let compact_before = now - age(self.settings.analytics.compact_after);
        let rollups_before = now - age(self.settings.analytics.retention);
        let purge = async move {
            let mut moved = 0;
            for _ in 0..UPKEEP_ROUNDS {
                let n = storage.move_finished(MAX_BATCH).await?;
                moved += n;
                if n == 0 {
                    break;
                }
            }
            if moved > 0 {
                tracing::info!(moved, "finished messages moved out of the live table");
            }
            let mut expired = crate::storage::Expired::default();
            for _ in 0..UPKEEP_ROUNDS {
                let round = storage.expire_finished(now, MAX_BATCH).await?;
                expired.deleted += round.deleted;
                expired.payloads_dropped += round.payloads_dropped;
                expired.days_dropped += round.days_dropped;
                if round.total() == 0 {
                    break;
                }
            }
            let (compacted, rollups_expired) = storage
                .compact_rollups(seal_before, compact_before, rollups_before)
                .await?;
            if compacted + rollups_expired > 0 {
                tracing::info!(
                    compacted,
                    expired = rollups_expired,
                    "analytics rollups compacted to hours and expired"
                );
            }
            Ok::<crate::storage::Expired, crate::storage::StorageError>(expired)
        };
        ctx.spawn(purge.into_actor(self).map(|result, _, _| match result {
            Ok(expired) if expired.total() == 0 => {}
            Ok(expired) => tracing::info!(
                deleted = expired.deleted,
                payloads_dropped = expired.payloads_dropped,
                days_dropped = expired.days_dropped,
                "retention expired finished messages"
            ),
            Err(err) => tracing::warn!(cause = %err, "storage upkeep failed"),
        }));
    }
}

/// Batches of [`MAX_BATCH`] each upkeep step runs per tick at most.
const UPKEEP_ROUNDS: usize = 20;

/// How often provider reports that arrived before their message finished
/// (or whose message is unknown) are matched again: a report that
/// overtakes its own send's outcome lands within this.
const REMATCH_EVERY: Duration = Duration::from_secs(2);

/// How often new (or orphaned) replay jobs are looked for: a job starts
/// within this of its creation.
const REPLAY_JOBS_EVERY: Duration = Duration::from_secs(1);

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(node = %self.node, transports = self.transports.len(), "engine starting");
        let tracker = Tracker::new(self.storage.clone(), self.clock.clone());
        let backlog = tracker.backlog();
        let tracker = tracker.start();
        for (name, gated) in &self.transports {
            let Some(settings) = self.settings.transports.get(name) else {
                continue;
            };
            let parts = TransportParts {
                settings: settings.clone(),
                transport: gated.transport.clone(),
                gate: gated.gate.clone(),
                storage: self.storage.clone(),
                clock: self.clock.clone(),
                tracker: tracker.clone(),
                backlog: backlog.clone(),
                options: self.options.clone(),
                paused: self.paused.contains(name),
                node: self.node.clone(),
            };
            let addr = actix::Supervisor::start(move |_| TransportActor::new(parts));
            self.actors.insert(name.clone(), addr);
        }
        self.tracker = Some(tracker);

        // One subscription relays work signals to the transport they name.
        let mut signals = self.storage.work_signal().subscribe();
        let actors = self.actors.clone();
        ctx.spawn(
            async move {
                loop {
                    match signals.recv().await {
                        Ok(transport) => {
                            if let Some(actor) = actors.get(&*transport) {
                                actor.do_send(Wake);
                            }
                        }
                        // Missed some: wake everyone rather than guess.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            for actor in actors.values() {
                                actor.do_send(Wake);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
            .into_actor(self),
        );
        if let Some(alerts) = self
            .settings
            .alerts
            .as_ref()
            .filter(|a| !a.rules.is_empty())
        {
            let evaluator = crate::alerts::Evaluator::new(
                self.storage.clone(),
                self.clock.clone(),
                self.settings.clone(),
            );
            let statuses = ctx.address().recipient();
            self.alerter = Some(Alerter::new(evaluator, statuses, alerts.evaluate_every).start());
        }
        // Pause or resume on any node: obey it now.
        let mut states = self.storage.state_signal().subscribe();
        let me = ctx.address();
        ctx.spawn(
            async move {
                // Lagged is still a change: read the state either way.
                while !matches!(
                    states.recv().await,
                    Err(tokio::sync::broadcast::error::RecvError::Closed)
                ) {
                    me.do_send(StateChanged);
                }
            }
            .into_actor(self),
        );
        self.recover(ctx);
        ctx.run_interval(self.options.heartbeat, |act, ctx| act.heartbeat(ctx));
        ctx.run_interval(self.options.recovery_interval, |act, ctx| act.recover(ctx));
        ctx.run_interval(self.options.purge_interval, |act, ctx| act.purge(ctx));
        ctx.run_interval(REMATCH_EVERY, |act, ctx| act.rematch(ctx));
        ctx.run_interval(REPLAY_JOBS_EVERY, |act, ctx| act.replay_jobs(ctx));
    }
}

impl Handler<StateChanged> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: StateChanged, ctx: &mut Context<Self>) {
        self.sync_paused(ctx);
    }
}

impl Handler<GetStatuses> for Supervisor {
    type Result = ResponseFuture<Vec<super::TransportStatus>>;

    fn handle(&mut self, _: GetStatuses, _: &mut Context<Self>) -> Self::Result {
        let actors: Vec<Addr<TransportActor>> = self.actors.values().cloned().collect();
        Box::pin(async move {
            let mut statuses = Vec::with_capacity(actors.len());
            for actor in actors {
                if let Ok(status) = actor.send(GetStatus).await {
                    statuses.push(status);
                }
            }
            statuses
        })
    }
}

impl Handler<SetPaused> for Supervisor {
    type Result = ResponseFuture<Result<super::TransportStatus, EngineError>>;

    fn handle(&mut self, request: SetPaused, _: &mut Context<Self>) -> Self::Result {
        let actor = self.actors.get(&request.transport).cloned();
        let storage = self.storage.clone();
        let now = self.clock.now();
        Box::pin(async move {
            let actor =
                actor.ok_or_else(|| EngineError::UnknownTransport(request.transport.clone()))?;
            // Persist first: a restart must find the transport as the operator left it.
            storage
                .set_paused(&request.transport, request.paused, now)
                .await?;
            if request.paused {
                actor.send(Pause).await?;
            } else {
                actor.send(Resume).await?;
            }
            Ok(actor.send(GetStatus).await?)
        })
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, shutdown: Shutdown, _: &mut Context<Self>) -> Self::Result {
        // No more heartbeats: they would bring the node's row back after it
        // deregistered, and other nodes would wait for it to go silent.
        self.stopping = true;
        let actors: Vec<Addr<TransportActor>> = self.actors.values().cloned().collect();
        let tracker = self.tracker.clone();
        let alerter = self.alerter.take();
        let storage = self.storage.clone();
        let node = self.node.clone();
        let clock = self.clock.clone();
        Box::pin(async move {
            // Evaluating a stopping engine would find every breaker idle.
            if let Some(alerter) = alerter {
                let _ = alerter.send(shutdown).await;
            }
            let mut unfinished = 0;
            let stops: Vec<_> = actors.iter().map(|a| a.send(shutdown)).collect();
            for stop in stops {
                unfinished += stop.await.unwrap_or(0);
            }
            if let Some(tracker) = tracker {
                // Bounded: with the database gone the outcomes cannot be
                // written, and the leases bring those messages back anyway.
                let flushed = tokio::time::timeout(FLUSH_GRACE, tracker.send(Flush)).await;
                if flushed.is_err() {
                    tracing::warn!(
                        "outcomes not all recorded at shutdown; their leases will expire and they will be delivered again"
                    );
                }
            }
            if let Err(err) = storage.deregister_node(&node, clock.now()).await {
                tracing::warn!(node = %node, cause = %err, "could not deregister the node; other nodes take over once its heartbeat is missed");
            }
            unfinished
        })
    }
}

/// Longest the shutdown waits for the last outcomes to be written.
const FLUSH_GRACE: Duration = Duration::from_secs(5);
