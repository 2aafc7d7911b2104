//! The `herald` binary: parse the command line, load the config, start
//! logging, run.

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald::config::Settings;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

// Request handling allocates and frees many small strings and maps per
// message (parsed JSON, addresses, SQL parameters); glibc's allocator spent
// a quarter of the server's CPU on them in a batch enqueue, mimalloc far less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Notification delivery and tracking engine"
)]
struct Cli {
    /// Config file [default: config.toml].
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    config: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "HERALD_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Measure throughput and latency through the HTTP API, and verify
    /// that every message was delivered exactly once.
    Bench(herald::bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // The bench needs no config file: it starts its own server or
        // targets one by URL. Its embedded server's start-up lines would
        // only clutter the report, hence `warn`; that server listens on
        // loopback only, so the warning that it has no API keys is noise.
        Some(Command::Bench(args)) => {
            init_tracing(cli.log_json, "warn,herald::http::auth=error", true);
            let passed = herald::bench::run(args)?;
            if !passed {
                std::process::exit(1);
            }
            Ok(())
        }
        command => {
            init_tracing(cli.log_json, "info", false);
            let system = actix_web::rt::System::new();
            let outcome = system.block_on(serve(cli.config, command));
            // `serve` returns after the ordered stop: outcomes written,
            // leases released, HTTP drained. Dropping the runtime would
            // only tear down what is left on it, and it waits for every
            // blocking task still running there (a DNS lookup or file write
            // of a delivery abandoned at the end of the grace) for as long
            // as that takes. The process has nothing left to wait for.
            std::mem::forget(system);
            outcome
        }
    }
}

/// The commands that run on the configured server: serve, migrate,
/// check-config.
async fn serve(config: Option<String>, command: Option<Command>) -> anyhow::Result<()> {
    let settings = Settings::load_with(|name| match name {
        "HERALD_CONFIG" => config.clone(),
        other => std::env::var(other).ok(),
    })?;

    match command.unwrap_or(Command::Serve) {
        Command::Serve => herald::app::run(settings).await?,
        Command::Migrate => {
            herald::app::open_storage(&settings)
                .await
                .context("migration failed")?;
            tracing::info!("migrations applied");
        }
        Command::CheckConfig => {
            println!(
                "{}: valid ({} transports, storage {})",
                settings.source.display(),
                settings.transports.len(),
                herald::app::redact_url(&settings.storage.url)
            );
        }
        Command::Bench(_) => anyhow::bail!("`bench` runs without a config; `main` dispatches it"),
    }
    Ok(())
}

/// Logs to stdout, or to stderr where stdout carries the command's own
/// output (the bench's report).
fn init_tracing(json: bool, default_level: &str, to_stderr: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let writer = if to_stderr {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::stdout)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
