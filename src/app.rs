//! Wiring: settings -> storage (opened and migrated) -> transports ->
//! engine -> HTTP server, and the ordered shutdown.
//!
//! There is one stop, [`Running::shutdown`], whatever asks for it (SIGINT
//! or SIGTERM, or a [`StopHandle`]): first the engine stops claiming,
//! hands back claimed but unstarted messages, gives deliveries in flight
//! `server.shutdown_grace` to finish and flushes the tracker; then HTTP
//! stops accepting and lets requests in flight finish. The engine goes
//! first because pooled PostgreSQL connections live on the thread that
//! opened them, often an HTTP worker: stopping HTTP first would cut the
//! engine off from the database before it has written its last outcomes
//! and released its transport leases. Anything still running after the
//! grace comes back through its lease.

use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use tokio::sync::Notify;

use crate::config::Settings;
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::http::{self, AppState};
use crate::storage::{self, Storage, StorageError};
use crate::telemetry::TimedStorage;
use crate::time::{Clock, SystemClock};
use crate::transports::{self, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("transport set-up: {0}")]
    Transport(#[from] TransportError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Server(#[from] std::io::Error),
}

/// Opens the configured storage, timed for `/metrics`, and applies
/// pending migrations.
pub async fn open_storage(settings: &Settings) -> Result<Arc<dyn Storage>, AppError> {
    let storage: Arc<dyn Storage> =
        Arc::new(TimedStorage::new(storage::open(&settings.storage).await?));
    storage.migrate().await?;
    tracing::info!(backend = storage.backend(), url = %redact_url(&settings.storage.url), "storage ready");
    Ok(storage)
}

/// How [`start`] runs the server besides what the settings say.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// [`Running::wait`] also stops on SIGINT / SIGTERM. `herald serve`
    /// does; an embedded server (`herald bench`) leaves Ctrl-C to its
    /// host, which stops it through a [`StopHandle`].
    pub handle_signals: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            handle_signals: true,
        }
    }
}

/// Asks a [`Running`] server for its ordered stop, from any thread or
/// runtime; [`Running::wait`] then carries it out.
#[derive(Clone)]
pub struct StopHandle(Arc<Notify>);

impl StopHandle {
    pub fn stop(&self) {
        // `notify_one` keeps the request if `wait` is not waiting yet.
        self.0.notify_one();
    }
}

/// A started server: storage migrated, engine running, HTTP bound and
/// accepting.
pub struct Running {
    addrs: Vec<SocketAddr>,
    handle: ServerHandle,
    server: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
    engine: Engine,
    grace: Duration,
    stop: Arc<Notify>,
    handle_signals: bool,
}

impl Running {
    /// The addresses actually bound (port 0 in the settings is resolved).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// What [`Running::wait`] waits for.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Runs until a [`StopHandle`] asks for the stop (or, with
    /// `handle_signals`, until SIGINT or SIGTERM), then stops in order.
    pub async fn wait(self) -> Result<(), AppError> {
        let signals = self.handle_signals;
        let signal = async {
            if signals {
                stop_signal().await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = self.stop.notified() => {}
            _ = signal => {}
        }
        self.shutdown().await
    }

    /// The ordered stop (see the module doc): the engine within the grace,
    /// then HTTP, letting requests in flight finish.
    pub async fn shutdown(self) -> Result<(), AppError> {
        tracing::info!(grace = ?self.grace, "stopping: finishing deliveries in flight");
        let unfinished = self.engine.shutdown(self.grace).await;
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "deliveries still running at the end of the grace; their leases bring them back"
            );
        }
        self.handle.stop(true).await;
        match self.server.await {
            Ok(result) => result?,
            Err(join) => return Err(AppError::Server(std::io::Error::other(join))),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs Herald until SIGINT or SIGTERM, then stops in order.
pub async fn run(settings: Settings) -> Result<(), AppError> {
    start(settings, StartOptions::default()).await?.wait().await
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(cause = %err, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds every address `server.listen` names. A host name may resolve to
/// an address this host cannot use (`localhost` to ::1 where IPv6 is off):
/// that one is skipped while another binds. Any other failure stops
/// start-up.
fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, AppError> {
    let mut listeners = Vec::new();
    let mut unusable = None;
    for &addr in addrs {
        match TcpListener::bind(addr) {
            Ok(listener) => listeners.push(listener),
            Err(source)
                if addrs.len() > 1 && source.kind() == std::io::ErrorKind::AddrNotAvailable =>
            {
                tracing::warn!(%addr, cause = %source, "not listening on this address of server.listen: the host cannot bind it");
                unusable = Some(AppError::Bind { addr, source });
            }
            Err(source) => return Err(AppError::Bind { addr, source }),
        }
    }
    match unusable {
        Some(err) if listeners.is_empty() => Err(err),
        _ => Ok(listeners),
    }
}

/// HTTP workers, and the connections each may hold: actix-web's
/// `max_connections` is per worker, and the total must stay within
/// `server.max_connections`.
fn connections_per_worker(max_connections: NonZeroUsize) -> (usize, usize) {
    let workers = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(max_connections.get());
    (workers, max_connections.get() / workers)
}

/// How long a client gets to take its part in closing a connection; past
/// it the socket is dropped, so a peer that never reads cannot hold it.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens storage, starts the engine and the HTTP server on the current
/// actix system, and returns once the listener is bound. Must run inside
/// an actix system (`actix_web::rt::System`).
pub async fn start(settings: Settings, options: StartOptions) -> Result<Running, AppError> {
    transports::install_crypto_provider();
    let storage = open_storage(&settings).await?;
    // Bound before the engine starts: a process that cannot serve must not
    // first take transport leases and claim messages, and it exits with
    // the bind error alone.
    let listeners = bind_all(&settings.server.listen)?;
    let settings = Arc::new(settings);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Inside the actix runtime: pooled SMTP transports need one to exist.
    let transports = transports::build_all(&settings.transports, clock.clone())?;
    let engine = Engine::start(
        storage.clone(),
        clock.clone(),
        settings.clone(),
        transports,
        node_options(&settings, &listeners),
    )
    .await?;

    let state =
        web::Data::new(AppState::new(storage, clock, settings.clone()).with_engine(engine.clone()));
    let server_settings = &settings.server;
    let max_body = server_settings.max_body_bytes;
    let grace = server_settings.shutdown_grace;
    let (workers, per_worker) = connections_per_worker(server_settings.max_connections);
    tracing::info!(
        max_connections = workers * per_worker,
        workers,
        open_file_limit = crate::config::open_file_limit(),
        "connection limit"
    );
    // Signals never reach actix-web: on its own it would stop HTTP before
    // the engine, the wrong order (see the module doc).
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(max_body))
            .app_data(web::PayloadConfig::default().limit(max_body))
            .configure(http::configure)
    })
    .disable_signals()
    .shutdown_timeout(grace.as_secs().max(1))
    .workers(workers)
    .max_connections(per_worker)
    .client_request_timeout(server_settings.head_timeout)
    .keep_alive(server_settings.keep_alive)
    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT);
    for listener in listeners {
        let addr = listener.local_addr()?;
        server = server
            .listen(listener)
            .map_err(|source| AppError::Bind { addr, source })?;
    }
    let addrs = server.addrs();
    for addr in &addrs {
        tracing::info!(%addr, "listening");
    }
    let server = server.run();
    let handle = server.handle();
    // The server does nothing until polled: run it as a task of its own so
    // that the caller gets the bound address back now.
    let server = actix_web::rt::spawn(server);
    Ok(Running {
        addrs,
        handle,
        server,
        engine,
        grace,
        stop: Arc::new(Notify::new()),
        handle_signals: options.handle_signals,
    })
}

/// The engine's options with this node's address, and its id unless
/// configured: the host name and the bound address, so a node restarted
/// with the same config on the same host is its own successor and takes
/// over its predecessor's claims at once.
fn node_options(settings: &Settings, listeners: &[TcpListener]) -> EngineOptions {
    let mut options = settings.engine.clone();
    // The first bound address stands for the node (a host name may bind
    // several).
    let address = listeners
        .iter()
        .find_map(|l| l.local_addr().ok())
        .or_else(|| settings.server.listen.first().copied())
        .map(|a| a.to_string())
        .unwrap_or_default();
    options
        .node_id
        .get_or_insert_with(|| format!("{}@{address}", crate::engine::host_name()));
    options.address = Some(address);
    options
}

/// A database URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
