//! Wiring: settings -> storage (opened and migrated) -> transports ->
//! engine -> HTTP server, and the ordered shutdown.
//!
//! On SIGINT or SIGTERM actix-web stops accepting and lets requests in
//! flight finish; then the engine stops claiming, hands back claimed but
//! unstarted messages, gives deliveries in flight `server.shutdown_grace`
//! to finish and flushes the tracker; then the process exits 0. Anything
//! still running after the grace comes back through its lease.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};

use crate::config::Settings;
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::http::{self, AppState};
use crate::storage::{self, Storage, StorageError};
use crate::time::{Clock, SystemClock};
use crate::transports::{self, Transport, TransportError};

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

/// Opens the configured storage and applies pending migrations.
pub async fn open_storage(settings: &Settings) -> Result<Arc<dyn Storage>, AppError> {
    let storage = storage::open(&settings.storage).await?;
    storage.migrate().await?;
    tracing::info!(backend = storage.backend(), url = %redact_url(&settings.storage.url), "storage ready");
    Ok(storage)
}

/// Runs Herald until a stop signal.
pub async fn run(settings: Settings) -> Result<(), AppError> {
    transports::install_crypto_provider();
    let storage = open_storage(&settings).await?;
    let settings = Arc::new(settings);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Inside the actix runtime: pooled SMTP transports need one to exist.
    let transports: BTreeMap<String, Arc<dyn Transport>> =
        transports::build_all(&settings.transports)?;
    let engine = Engine::start(
        storage.clone(),
        clock.clone(),
        settings.clone(),
        transports,
        EngineOptions::default(),
    )
    .await?;

    let state =
        web::Data::new(AppState::new(storage, clock, settings.clone()).with_engine(engine.clone()));
    let listen = settings.server.listen;
    let max_body = settings.server.max_body_bytes;
    let grace = settings.server.shutdown_grace;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(max_body))
            .app_data(web::PayloadConfig::default().limit(max_body))
            .configure(http::configure)
    })
    .shutdown_timeout(grace.as_secs().max(1))
    .bind(listen)
    .map_err(|source| AppError::Bind {
        addr: listen,
        source,
    })?;
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
    }
    server.run().await?;

    tracing::info!(grace = ?grace, "stopping: finishing deliveries in flight");
    let unfinished = engine.shutdown(grace).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "deliveries still running at the end of the grace; their leases bring them back"
        );
    }
    tracing::info!("stopped");
    Ok(())
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
