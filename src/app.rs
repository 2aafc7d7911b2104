//! Wiring: settings -> storage (opened and migrated) -> HTTP server, and
//! the ordered shutdown. actix-web stops on SIGINT and SIGTERM by itself:
//! it stops accepting, lets in-flight requests finish (up to
//! [`SHUTDOWN_GRACE`]) and then `run` returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::storage::{self, Storage, StorageError};
use crate::time::{Clock, SystemClock};

/// Time in-flight requests get to finish after a stop signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
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
    let storage = open_storage(&settings).await?;
    let settings = Arc::new(settings);
    let state = web::Data::new(AppState::new(
        storage,
        Arc::new(SystemClock) as Arc<dyn Clock>,
        settings.clone(),
    ));
    let listen = settings.server.listen;
    let max_body = settings.server.max_body_bytes;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(max_body))
            .app_data(web::PayloadConfig::default().limit(max_body))
            .configure(http::configure)
    })
    .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
    .bind(listen)
    .map_err(|source| AppError::Bind {
        addr: listen,
        source,
    })?;
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
    }
    server.run().await?;
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
