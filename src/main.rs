//! The `herald` binary: parse the command line, load the config, start
//! logging, run.

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald::config::Settings;
use tracing_subscriber::EnvFilter;

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
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_json);

    let config = cli.config.clone();
    let settings = Settings::load_with(|name| match name {
        "HERALD_CONFIG" => config.clone(),
        other => std::env::var(other).ok(),
    })?;

    match cli.command.unwrap_or(Command::Serve) {
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
    }
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
