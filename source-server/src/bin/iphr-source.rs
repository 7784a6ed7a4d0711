//! `iphr-source`: the reference source server (`docs/source-protocol.md`).
//!
//! `iphr-source --config source.toml` serves `<data_dir>/<pseudonym>/` to the registered gateways
//! until SIGINT/SIGTERM. `iphr-source status --config source.toml` prints the linked pseudonyms
//! and the file journal.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use iphr_source::server::{FileConfig, Source, State, serve};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "iPHR reference source server")]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Print linked pseudonyms and the file journal.
    Status,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => run(&cli.config).await,
        Command::Status => status(&cli.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iphr-source: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &std::path::Path) -> anyhow::Result<()> {
    let file = FileConfig::load(config)?;
    let source = Source::open(file.source_config()?)?;
    let (chain, key) = file.tls_material()?;
    let tls = source.tls_config(chain, key)?;
    let listener = tokio::net::TcpListener::bind(file.listen)
        .await
        .with_context(|| format!("listen on {}", file.listen))?;
    tracing::info!(service = source.service_id(), addr = %listener.local_addr()?, "serving");
    serve(listener, tls, source, shutdown_signal()).await?;
    Ok(())
}

fn status(config: &std::path::Path) -> anyhow::Result<()> {
    let file = FileConfig::load(config)?;
    let source_config = file.source_config()?;
    let state = State::load(&source_config.state_dir)?;
    println!("service {}", source_config.service_id);
    for (pseudonym, link) in &state.links {
        println!("linked {pseudonym} at {}", link.linked_at);
    }
    for e in &state.journal {
        println!(
            "file {} {}/{} {} bytes [{}]",
            e.seq,
            e.pseudonym,
            e.name,
            e.size,
            e.categories.join(",")
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
