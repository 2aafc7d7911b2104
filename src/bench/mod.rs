//! `herald bench`: drives a Herald server through its public HTTP API the
//! way a client does, reports throughput and enqueue-to-sent latency from
//! the messages' own timestamps, and verifies that every message it
//! enqueued ended `sent`, exactly once, with its events.
//!
//! - [`local`] starts the server under test in this process on a
//!   throw-away store (a temporary SQLite file or PostgreSQL schema),
//!   unless `--url` names a running one;
//! - [`api`] is the HTTP client side: requests, auth, listing pages;
//! - [`load`] enqueues, closed loop (as fast as `--clients` go) or open
//!   loop (`--rate`);
//! - [`verify`] waits for delivery, reads the run's messages back and
//!   checks them against what the API accepted;
//! - [`report`] computes the figures and renders the table and the JSON.
//!
//! Every message carries `metadata.herald_bench = <run id>` and its
//! sequence number, so a run against a shared server counts only its own
//! messages.

mod api;
mod load;
mod local;
mod report;
mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use report::{Report, Verification};

use crate::time::{Clock, SystemClock};

/// `herald bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Messages to enqueue.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Messages per request: 1 sends each with `POST /api/messages`, more
    /// group them in `POST /api/messages/batch` (at most 1000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch_size: u64,
    /// Concurrent HTTP clients (closed loop: each sends its next request
    /// when the previous one is answered).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub clients: u64,
    /// Open-loop enqueue rate in messages/s: requests start on schedule
    /// whether or not earlier ones were answered. Without it, closed loop.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Store of the in-process server: `sqlite` (a temporary file) or a
    /// `postgres://` URL (a fresh schema, dropped afterwards).
    #[arg(long, default_value = "sqlite", conflicts_with = "url")]
    pub storage: String,
    /// Benchmark a running server at this base URL instead of starting one.
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer key for `--url` (roles enqueue and read).
    #[arg(
        long,
        env = "HERALD_BENCH_API_KEY",
        requires = "url",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Transport the messages name. Default: the in-process server's
    /// `null` transport; required with `--url`.
    #[arg(long)]
    pub transport: Option<String>,
    /// Size of each email's text body, in bytes.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Messages sent, the same way, before the measured run and left out of
    /// its figures and checks: they open the connections and warm the
    /// caches a long-running server has warm. Default: one second's worth
    /// at `--rate`, else one request per client.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Hold delivery (pause the transport) until every message is
    /// enqueued: the enqueue rate is then the API's alone, and the
    /// end-to-end figures become those of delivering a full queue. Needs
    /// the `admin` role with `--url`.
    #[arg(long)]
    pub deliver_after: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Longest wait, in seconds, for the run's messages to be delivered
    /// after the last enqueue.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// The transport the in-process server delivers through.
const LOCAL_TRANSPORT: &str = "null";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot start the benchmark runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("in-process server: {0}")]
    Server(String),
    #[error("temporary store: {0}")]
    Store(String),
    #[error("{context}: {message}")]
    Api { context: String, message: String },
}

impl BenchArgs {
    fn check(&self) -> Result<(), BenchError> {
        if self.url.is_some() && self.transport.is_none() {
            return Err(BenchError::Usage(
                "--url needs --transport: the run's messages are listed by transport".into(),
            ));
        }
        if self.url.is_none() && self.transport.is_some() {
            return Err(BenchError::Usage(
                "--transport names a transport of the server given with --url; the in-process server has only `null`".into(),
            ));
        }
        if self.storage != "sqlite" && !crate::storage::is_postgres_url(&self.storage) {
            return Err(BenchError::Usage(format!(
                "--storage is `sqlite` or a postgres:// URL, not `{}`",
                self.storage
            )));
        }
        Ok(())
    }
}

/// Runs the benchmark and prints its report. Returns whether the run
/// verified: every accepted message sent exactly once.
pub fn run(args: BenchArgs) -> Result<bool, BenchError> {
    args.check()?;
    crate::transports::install_crypto_provider();
    // The client gets a runtime of its own; the in-process server runs on
    // its own actix system thread, as it would in `herald serve`.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herald-bench")
        .build()?;
    let report = runtime.block_on(async {
        let interrupts = Interrupts::listen();
        match &args.url {
            Some(url) => {
                let api = api::Api::new(url, args.api_key.clone(), &args)?;
                let transport = args.transport.clone().unwrap_or_default();
                bench(&args, &api, &transport, None, &interrupts).await
            }
            None => {
                let store = local::TempStore::create(&args.storage).await?;
                let result = run_local(&args, &store, &interrupts).await;
                store.remove().await;
                result
            }
        }
    })?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| BenchError::Api {
            context: "report".into(),
            message: e.to_string(),
        })?;
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(report.verification.passed)
}

async fn run_local(
    args: &BenchArgs,
    store: &local::TempStore,
    interrupts: &Interrupts,
) -> Result<Report, BenchError> {
    let server = local::LocalServer::start(store, args).await?;
    let base = format!("http://{}", server.addr());
    let result = match api::Api::new(&base, None, args) {
        Ok(api) => bench(args, &api, LOCAL_TRANSPORT, Some(store), interrupts).await,
        Err(err) => Err(err),
    };
    server.stop().await;
    result
}

async fn bench(
    args: &BenchArgs,
    api: &api::Api,
    transport: &str,
    local_store: Option<&local::TempStore>,
    interrupts: &Interrupts,
) -> Result<Report, BenchError> {
    let server = api.server_info().await?;
    let run_id = ulid::Ulid::generate().to_string().to_lowercase();
    let warmup = args.warmup.unwrap_or(match args.rate {
        Some(rate) => rate,
        None => args.clients * args.batch_size,
    });
    if warmup > 0 {
        warm_up(args, api, transport, &run_id, warmup, interrupts).await?;
    }
    if let Some(store) = local_store {
        store.analyze().await?;
    }
    let started_wall = SystemClock.now();
    let plan = Arc::new(load::Plan::new(args, transport, &run_id, args.messages));
    if args.deliver_after {
        api.set_paused(transport, true).await?;
    }
    let loaded = load::run(api, &plan, "enqueue", interrupts).await;
    if args.deliver_after {
        api.set_paused(transport, false).await?;
    }
    let wait_started = Instant::now();
    let stored = verify::wait_and_collect(
        api,
        &plan,
        &loaded,
        started_wall,
        Duration::from_secs(args.timeout),
        interrupts,
    )
    .await?;
    let delivery_wait = wait_started.elapsed();
    let reading_started = Instant::now();
    let checked = verify::check_events(api, &stored, args.clients as usize).await?;
    let events_read = reading_started.elapsed();
    let verification = verify::compare(args.messages, &loaded, &stored, &checked);
    Ok(Report::new(report::Inputs {
        args,
        run_id,
        warmup,
        transport,
        server,
        local_store: local_store.map(local::TempStore::description),
        loaded: &loaded,
        stored: &stored,
        verification,
        delivery_wait,
        events_read,
        interrupted: interrupts.count() > 0,
    }))
}

/// Sends `messages` under the run id `<run>-warmup` and waits for their
/// delivery, so the measured run starts on warm connections and an empty
/// queue. Their outcome is not checked: the measured run's is.
async fn warm_up(
    args: &BenchArgs,
    api: &api::Api,
    transport: &str,
    run_id: &str,
    messages: u64,
    interrupts: &Interrupts,
) -> Result<(), BenchError> {
    let started = SystemClock.now();
    let plan = Arc::new(load::Plan::new(
        args,
        transport,
        &format!("{run_id}-warmup"),
        messages,
    ));
    let loaded = load::run(api, &plan, "warm-up", interrupts).await;
    verify::wait_and_collect(
        api,
        &plan,
        &loaded,
        started,
        Duration::from_secs(args.timeout),
        interrupts,
    )
    .await?;
    Ok(())
}

/// Ctrl-C presses seen so far. The first stops enqueuing (the run is
/// reported on what was accepted); the second stops waiting for delivery.
#[derive(Clone)]
pub(crate) struct Interrupts(watch::Receiver<u32>);

impl Interrupts {
    fn listen() -> Interrupts {
        let (sender, receiver) = watch::channel(0);
        tokio::spawn(async move {
            let mut presses = 0;
            while tokio::signal::ctrl_c().await.is_ok() {
                presses += 1;
                if sender.send(presses).is_err() {
                    break;
                }
            }
        });
        Interrupts(receiver)
    }

    pub(crate) fn count(&self) -> u32 {
        *self.0.borrow()
    }

    /// Resolves once Ctrl-C has been pressed `presses` times.
    pub(crate) async fn reached(&self, presses: u32) {
        let mut receiver = self.0.clone();
        if receiver.wait_for(|seen| *seen >= presses).await.is_err() {
            // No signal handler (it failed to install): never interrupted.
            std::future::pending::<()>().await;
        }
    }
}
