//! `iphr-gateway`: runs the gateway (DESIGN §2) from a configuration file and environment.

use anyhow::Context;
use clap::Parser;
use gateway::clock::SystemClock;
use gateway::config::Config;
use gateway::server::{Gateway, run_maintenance, serve};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "iPHR gateway: card sign-in, sessions (and later consent, audit, partner API)")]
struct Args {
    /// Configuration file (TOML); IPHR_GATEWAY_* environment variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = Config::load(args.config.as_deref()).context("reading the configuration")?;
    let gateway = Gateway::from_config(&config, Arc::new(SystemClock))
        .await
        .context("starting the gateway")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(listen = %config.listen, origin = %config.public_origin, "gateway ready");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let maintenance = tokio::spawn(run_maintenance(
        gateway.app.clone(),
        Duration::from_secs(config.revocation.refresh_secs.max(1)),
        Duration::from_secs(60),
        wait_for(stop_rx.clone()),
    ));
    serve(listener, gateway, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await?;
    let _ = stop_tx.send(true);
    let _ = maintenance.await;
    Ok(())
}

async fn wait_for(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
