//! Wiring: settings -> storage (opened and migrated) -> transports ->
//! engine -> HTTP server, and the ordered shutdown.
//!
//! On SIGINT or SIGTERM actix-web stops accepting and lets requests in
//! flight finish; then the engine stops claiming, hands back claimed but
//! unstarted messages, gives deliveries in flight `server.shutdown_grace`
//! to finish and flushes the tracker; then the process exits 0. Anything
//! still running after the grace comes back through its lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

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
    /// Stop on SIGINT / SIGTERM. `herald serve` does; an embedded server
    /// (`herald bench`) leaves Ctrl-C to its host, which stops it through
    /// [`Running::handle`].
    pub handle_signals: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            handle_signals: true,
        }
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
}

impl Running {
    /// The addresses actually bound (port 0 in the settings is resolved).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops the HTTP server from any thread or runtime; [`Running::wait`]
    /// then finishes the shutdown.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The ordered stop (see [`run`]): the engine within the grace, then
    /// HTTP, letting requests in flight finish.
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

    /// Waits until the HTTP server stops (a signal, or [`Running::handle`]),
    /// then stops the engine within the shutdown grace.
    pub async fn wait(self) -> Result<(), AppError> {
        match self.server.await {
            Ok(result) => result?,
            Err(join) => return Err(AppError::Server(std::io::Error::other(join))),
        }
        tracing::info!(grace = ?self.grace, "stopping: finishing deliveries in flight");
        let unfinished = self.engine.shutdown(self.grace).await;
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "deliveries still running at the end of the grace; their leases bring them back"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs Herald until SIGINT or SIGTERM, then stops in order: the engine
/// first, then HTTP. The order matters on PostgreSQL: pooled connections
/// live on the thread that opened them, often an HTTP worker, so stopping
/// HTTP first would cut the engine off from the database before it has
/// written its last outcomes and released its transport leases.
pub async fn run(settings: Settings) -> Result<(), AppError> {
    let options = StartOptions {
        handle_signals: false,
    };
    let running = start(settings, options).await?;
    stop_signal().await;
    running.shutdown().await
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

/// Opens storage, starts the engine and the HTTP server on the current
/// actix system, and returns once the listener is bound. Must run inside
/// an actix system (`actix_web::rt::System`).
pub async fn start(settings: Settings, options: StartOptions) -> Result<Running, AppError> {
    transports::install_crypto_provider();
    let storage = open_storage(&settings).await?;
    // Bound before the engine starts: a process that cannot serve must not
    // first take transport leases and claim messages, and it exits with
    // the bind error alone.
    let listen = settings.server.listen;
    let listener = std::net::TcpListener::bind(listen).map_err(|source| AppError::Bind {
        addr: listen,
        source,
    })?;
    let settings = Arc::new(settings);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Inside the actix runtime: pooled SMTP transports need one to exist.
    let transports = transports::build_all(&settings.transports, clock.clone())?;
    let engine = Engine::start(
        storage.clone(),
        clock.clone(),
        settings.clone(),
        transports,
        node_options(&settings, &listener),
    )
    .await?;

    let state =
        web::Data::new(AppState::new(storage, clock, settings.clone()).with_engine(engine.clone()));
    let max_body = settings.server.max_body_bytes;
    let grace = settings.server.shutdown_grace;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(max_body))
            .app_data(web::PayloadConfig::default().limit(max_body))
            .configure(http::configure)
    })
    .shutdown_timeout(grace.as_secs().max(1));
    if !options.handle_signals {
        server = server.disable_signals();
    }
    let server = server.listen(listener).map_err(|source| AppError::Bind {
        addr: listen,
        source,
    })?;
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
    })
}

/// The engine's options with this node's address, and its id unless
/// configured: the host name and the bound address, so a node restarted
/// with the same config on the same host is its own successor and takes
/// over its predecessor's claims at once.
fn node_options(settings: &Settings, listener: &std::net::TcpListener) -> EngineOptions {
    let mut options = settings.engine.clone();
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| settings.server.listen.to_string());
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
