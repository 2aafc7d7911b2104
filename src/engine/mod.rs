//! The delivery engine: a [`supervisor::Supervisor`] actor that runs one
//! [`transport_actor::TransportActor`] per configured transport and the
//! shared [`tracker::Tracker`] that persists outcomes in batches, and,
//! with alert rules configured, the `alerter::Alerter` that evaluates them;
//! the supervisor also runs the replay jobs ([`run_replay_jobs`]).
//! Each transport passes through its [`Gate`] (rate limiter and breaker),
//! shared with the groups it is a member of. [`Engine`] is the handle the
//! rest of Herald (HTTP, `app`) uses.

mod alerter;
mod breaker;
mod gate;
mod messages;
mod replay_jobs;
mod supervisor;
mod tracker;
mod transport_actor;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use breaker::{Breaker, CircuitState};
pub use gate::Gate;
pub use replay_jobs::run_replay_jobs;
pub use tracker::MAX_HELD;

use crate::config::Settings;
use crate::storage::{NodeInfo, Storage, StorageError};
use crate::time::Clock;
use crate::transports::Gated;

/// `[engine] heartbeat_ms` when not set.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);

/// Engine timing that is not per-transport configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Fallback poll when no work signal arrives (retries coming due,
    /// other nodes' enqueues on SQLite).
    pub poll_interval: Duration,
    /// How often expired leases are looked for.
    pub recovery_interval: Duration,
    /// How often old dead letters are purged.
    pub purge_interval: Duration,
    /// Longest one delivery may run, whatever the transport does.
    pub delivery_timeout: Duration,
    /// How often this node proves it is alive in storage. A node silent
    /// for [`EngineOptions::node_timeout`] is presumed dead and its
    /// transport leases and claims are taken over.
    pub heartbeat: Duration,
    /// This node's identity, stable across restarts (`[engine] node_id`);
    /// `None`: `herald serve` uses the host name and listen address, an
    /// engine started without a server a name of its own.
    pub node_id: Option<String>,
    /// Where this node's API listens, for the nodes table.
    pub address: Option<String>,
}

impl EngineOptions {
    /// Three missed heartbeats: a node silent this long is presumed dead.
    pub fn node_timeout(&self) -> Duration {
        self.heartbeat * 3
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            poll_interval: Duration::from_millis(500),
            recovery_interval: Duration::from_secs(1),
            purge_interval: Duration::from_secs(60),
            delivery_timeout: Duration::from_secs(120),
            heartbeat: DEFAULT_HEARTBEAT,
            node_id: None,
            address: None,
        }
    }
}

/// A transport's live state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransportStatus {
    pub name: String,
    pub kind: &'static str,
    pub running: bool,
    pub paused: bool,
    pub circuit: CircuitState,
    /// Since when the breaker has not been closed; `None` while closed.
    pub circuit_open_since: Option<DateTime<Utc>>,
    /// This node holds the transport's lease and so is the one delivering
    /// for it (with several nodes, exactly one does).
    pub holds_lease: bool,
    pub in_flight: usize,
    /// Claimed, waiting for a delivery slot.
    pub prefetched: usize,
    pub concurrency: usize,
    pub rate_limit: u32,
    pub burst_limit: u32,
    pub breaker_opened: u64,
    pub last_error: Option<String>,
    pub last_activity: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no transport named `{0}`")]
    UnknownTransport(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("engine is not running: {0}")]
    Stopped(#[from] MailboxError),
}

/// The running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    supervisor: Addr<supervisor::Supervisor>,
}

impl Engine {
    /// Starts the engine on the current actix system. Persisted pause state
    /// is read first, so a paused transport never claims after a restart.
    ///
    /// The node registers first, taking over what a dead predecessor of
    /// the same id left (see [`Storage::register_node`]); start-up fails
    /// while a live process uses the same node id or SQLite file.
    pub async fn start(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        settings: Arc<Settings>,
        transports: BTreeMap<String, Gated>,
        options: EngineOptions,
    ) -> Result<Engine, EngineError> {
        let node = NodeInfo {
            id: options
                .node_id
                .clone()
                .unwrap_or_else(|| format!("{}#{}", host_name(), ulid::Ulid::generate())),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            address: options.address.clone(),
            started_at: clock.now(),
        };
        storage.register_node(&node, clock.now()).await?;
        let paused = storage
            .transport_states()
            .await?
            .into_iter()
            .filter(|t| t.paused)
            .map(|t| t.name)
            .collect();
        let supervisor = supervisor::Supervisor::new(
            storage, clock, settings, transports, paused, options, node,
        )
        .start();
        Ok(Engine { supervisor })
    }

    /// Every transport's live state, in name order.
    pub async fn status(&self) -> Result<Vec<TransportStatus>, EngineError> {
        Ok(self.supervisor.send(messages::GetStatuses).await?)
    }

    /// Pauses a transport (persisted).
    pub async fn pause(&self, transport: &str) -> Result<TransportStatus, EngineError> {
        self.set_paused(transport, true).await
    }

    /// Resumes a transport (persisted).
    pub async fn resume(&self, transport: &str) -> Result<TransportStatus, EngineError> {
        self.set_paused(transport, false).await
    }

    async fn set_paused(
        &self,
        transport: &str,
        paused: bool,
    ) -> Result<TransportStatus, EngineError> {
        self.supervisor
            .send(messages::SetPaused {
                transport: transport.to_owned(),
                paused,
            })
            .await?
    }

    /// Stops claiming, hands back unstarted claims, waits up to `grace` for
    /// deliveries in flight, and flushes outcomes. Returns how many
    /// deliveries were still running (their leases bring them back).
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.supervisor
            .send(messages::Shutdown { grace })
            .await
            .unwrap_or(0)
    }
}

/// This machine's host name, for node ids; `herald` when it has none
/// that reads as text.
pub fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "herald".to_owned())
}
