//! The in-process server under test: `app::start` on a throw-away store
//! (a SQLite file in a temporary directory, or a fresh PostgreSQL schema
//! dropped afterwards), listening on 127.0.0.1 on a free port, with one
//! `null` transport tuned wide open so the measurement is of Herald, not
//! of a rate limit. It runs on an actix system of its own thread, as
//! `herald serve` runs; the client drives it over loopback HTTP.

use std::net::SocketAddr;
use std::path::Path;

use super::{BenchArgs, BenchError, LOCAL_TRANSPORT};
use crate::app::{self, StartOptions, StopHandle};
use crate::config::Settings;

/// Delivery tuning of the bench transport: no rate limit to speak of,
/// wide concurrency and large claims (as benches/engine.rs).
const TUNING: &str = "rate_limit = 60000000\nburst_limit = 100000\nconcurrency = 256\nbatch_size = 500\nprefetch_count = 500";

/// The default request body limit (`server.max_body_bytes`).
const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;

/// A store that exists for one run.
pub(crate) enum TempStore {
    Sqlite {
        dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        base: String,
        schema: String,
        url: String,
    },
}

/// Adds `options=-csearch_path=<schema>` to a PostgreSQL URL, so every
/// pooled connection works in the run's schema.
fn with_search_path(base: &str, schema: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-csearch_path%3D{schema}")
}

async fn postgres_client(url: &str) -> Result<tokio_postgres::Client, BenchError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| BenchError::Store(format!("{}: {e}", app::redact_url(url))))?;
    tokio::spawn(connection);
    Ok(client)
}

impl TempStore {
    /// `sqlite` or a `postgres://` URL (checked by the caller).
    pub(crate) async fn create(storage: &str) -> Result<TempStore, BenchError> {
        if storage == "sqlite" {
            let dir = tempfile::Builder::new()
                .prefix("herald-bench-")
                .tempdir()
                .map_err(|e| BenchError::Store(format!("a temporary directory: {e}")))?;
            let url = format!("sqlite://{}", dir.path().join("herald.db").display());
            return Ok(TempStore::Sqlite { dir, url });
        }
        let schema = format!(
            "herald_bench_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let client = postgres_client(storage).await?;
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .map_err(|e| BenchError::Store(format!("CREATE SCHEMA {schema}: {e}")))?;
        Ok(TempStore::Postgres {
            base: storage.to_owned(),
            url: with_search_path(storage, &schema),
            schema,
        })
    }

    fn url(&self) -> &str {
        match self {
            TempStore::Sqlite { url, .. } | TempStore::Postgres { url, .. } => url,
        }
    }

    /// For the report.
    pub(crate) fn description(&self) -> String {
        match self {
            TempStore::Sqlite { dir, .. } => {
                format!("a temporary SQLite file in {}", dir.path().display())
            }
            TempStore::Postgres { schema, .. } => {
                format!("PostgreSQL schema {schema} (dropped after the run)")
            }
        }
    }

    /// Gives PostgreSQL's planner statistics for the fresh tables, as
    /// autovacuum does within its first minute on a running server. The
    /// run is shorter than that: without them every query that filters
    /// on status or transport is planned for an empty table and, once the
    /// queue is deep, scans all of it. SQLite needs nothing.
    pub(crate) async fn analyze(&self) -> Result<(), BenchError> {
        if let TempStore::Postgres { url, .. } = self {
            postgres_client(url)
                .await?
                .batch_execute("ANALYZE messages; ANALYZE message_events")
                .await
                .map_err(|e| BenchError::Store(format!("ANALYZE: {e}")))?;
        }
        Ok(())
    }

    /// Deletes the store. Failing to is reported, not fatal: the figures
    /// are already taken.
    pub(crate) async fn remove(self) {
        match self {
            TempStore::Sqlite { dir, .. } => {
                if let Err(err) = dir.close() {
                    tracing::warn!(cause = %err, "could not remove the temporary SQLite directory");
                }
            }
            TempStore::Postgres { base, schema, .. } => {
                let dropped = match postgres_client(&base).await {
                    Ok(client) => client
                        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                        .await
                        .map_err(|e| e.to_string()),
                    Err(err) => Err(err.to_string()),
                };
                if let Err(cause) = dropped {
                    tracing::warn!(%schema, %cause, "could not drop the bench schema");
                }
            }
        }
    }
}

/// The in-process server's settings: the store, one wide-open `null`
/// transport that email routes to, a body limit that fits the batches.
fn settings(store: &TempStore, args: &BenchArgs) -> Result<Settings, BenchError> {
    let batch_bytes = (args.payload_bytes + 1024).saturating_mul(args.batch_size as usize);
    let max_body = DEFAULT_MAX_BODY.max(batch_bytes);
    let url = toml::Value::String(store.url().to_owned());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = {max_body}\n\n\
         [storage]\nurl = {url}\n\n\
         [transports.{LOCAL_TRANSPORT}]\nkind = \"null\"\n{TUNING}\n\n\
         [routes]\nemail = \"{LOCAL_TRANSPORT}\"\n"
    );
    // No environment: HERALD_DATABASE_URL must not redirect a bench that
    // creates and drops its own store.
    Settings::from_toml(&text, Path::new("<herald bench>"), |_| None)
        .map_err(|e| BenchError::Server(e.to_string()))
}

/// A running in-process server.
pub(crate) struct LocalServer {
    addr: SocketAddr,
    stop: StopHandle,
    thread: std::thread::JoinHandle<()>,
}

impl LocalServer {
    pub(crate) async fn start(
        store: &TempStore,
        args: &BenchArgs,
    ) -> Result<LocalServer, BenchError> {
        let settings = settings(store, args)?;
        let (started, result) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("herald-server".into())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                system.block_on(async move {
                    let options = StartOptions {
                        handle_signals: false,
                    };
                    let running = match app::start(settings, options).await {
                        Ok(running) => running,
                        Err(err) => {
                            let _ = started.send(Err(err.to_string()));
                            return;
                        }
                    };
                    let Some(addr) = running.addrs().first().copied() else {
                        let _ = started.send(Err("bound no address".into()));
                        return;
                    };
                    let _ = started.send(Ok((addr, running.stop_handle())));
                    if let Err(err) = running.wait().await {
                        tracing::warn!(cause = %err, "the in-process server stopped with an error");
                    }
                });
            })
            .map_err(|e| BenchError::Server(format!("cannot start its thread: {e}")))?;
        let (addr, stop) = result
            .await
            .map_err(|_| BenchError::Server("its thread ended during start-up".into()))?
            .map_err(BenchError::Server)?;
        Ok(LocalServer { addr, stop, thread })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's ordered stop, and waits for its thread.
    pub(crate) async fn stop(self) {
        self.stop.stop();
        let thread = self.thread;
        if tokio::task::spawn_blocking(move || thread.join())
            .await
            .is_err()
        {
            tracing::warn!("the in-process server's thread did not stop cleanly");
        }
    }
}
