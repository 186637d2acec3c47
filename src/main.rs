//! The command line: parse, load configuration, hand over to the library.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::config::{self, Config, LogFormat, Sources};

/// Exit code for an invalid configuration (EX_CONFIG from sysexits.h).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An authenticating reverse proxy: OpenID Connect login (Authelia) in front of any web app"
)]
struct Cli {
    /// Configuration file (TOML). Environment variables override it.
    #[arg(long, short, env = "PORTCULLIS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and print the effective settings, secrets redacted.
    Check,
    /// Print a fresh random session secret for SESSION_ENCRYPTION_SECRET.
    GenerateSecret,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = Sources {
        file: cli.config.clone(),
        env: std::env::vars().collect::<HashMap<_, _>>(),
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::GenerateSecret => {
            println!("{}", config::generate_secret());
            ExitCode::SUCCESS
        }
        Command::Check => match config::load(&sources) {
            Ok(config) => check(config),
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run => match config::load(&sources) {
            Ok(config) => run(config),
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

/// `portcullis check`: the configuration is valid, and everything start-up builds from
/// it (clients, TLS roots, the listener's certificate) builds.
fn check(config: Config) -> ExitCode {
    let settings = config.describe();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async { portcullis::preflight(config) }) {
        Ok(()) => {
            println!("{settings}");
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn run(config: Config) -> ExitCode {
    init_tracing(&config);
    if config.session.secret_is_ephemeral {
        tracing::warn!("SESSION_ENCRYPTION_SECRET is not set: using a random secret for this process; sessions and pending logins will not survive a restart");
    }
    for warning in config
        .server
        .warnings()
        .into_iter()
        .chain(config.oidc.warnings())
        .chain(config.policy.warnings(&config.oidc.scopes))
    {
        tracing::warn!("{warning}");
    }
    // The main thread accepts connections and runs the background work; the connections
    // are served by worker threads of their own (`server.workers`).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen_addr).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("cannot listen on {}: {error}", config.listen_addr);
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(listen = %config.listen_addr, base_url = %config.base_url, issuer = %config.oidc.issuer_exact, "portcullis listening");
        match portcullis::run(config, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        }
    })
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Colours for a person at a terminal only (and not with `NO_COLOR`, tracing's
    // default): a journal or a log file would keep the escape codes, and writing them was
    // half the cost of an access-log line, paid on every request.
    let builder = if std::io::stderr().is_terminal() {
        builder
    } else {
        builder.with_ansi(false)
    };
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops portcullis");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown signal received");
}
