//! `iphr-gateway`: runs the gateway (DESIGN §2) from a configuration file and environment, and the
//! audit log's tools (DESIGN §7, security-scenarios G4): `audit-keygen`, `checkpoint`,
//! `verify-audit`. Without a subcommand it serves (`iphr-gateway --config X`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::clock::{Clock, SystemClock};
use gateway::config::Config;
use gateway::domain::audit::{CheckpointSigner, CheckpointVerifier, hex};
use gateway::server::{AuditCheckpoints, Gateway, audit_signer, run_maintenance_with_audit, serve};
use gateway::store::Db;
use gateway::store::audit::{AuditLog, stored_checkpoints, verify_log};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    about = "iPHR gateway: card sign-in, sessions, audit log (and later consent, partner API)"
)]
struct Args {
    /// Configuration file (TOML); IPHR_GATEWAY_* environment variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Writes a new Ed25519 audit checkpoint key: DIR/audit-signing.pk8 (PKCS#8, mode 0600) and
    /// DIR/audit-signing.vkey (the public verifier key to keep off the box).
    AuditKeygen {
        /// Directory for the two files (created when missing; existing files are not replaced).
        #[arg(long)]
        out: PathBuf,
        /// Key name = checkpoint origin; must equal `[audit] origin`.
        #[arg(long, default_value = "iphr-gateway/audit")]
        name: String,
    },
    /// Signs a checkpoint of the audit log now, stores it and prints the signed note (copy it off
    /// the box).
    Checkpoint,
    /// Verifies the audit chain and checkpoints; exit 0 when intact, 1 with the first bad seq.
    VerifyAudit {
        /// Signed checkpoint notes kept off the box (each checked, then the log against them).
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// Verifier key file (`audit-signing.vkey`); default: derived from `[audit] signing_key`.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = match args.command.unwrap_or(Command::Serve) {
        Command::Serve => serve_command(args.config.as_deref()).await,
        Command::AuditKeygen { out, name } => keygen(&out, &name),
        Command::Checkpoint => checkpoint(args.config.as_deref()).await,
        Command::VerifyAudit {
            checkpoints,
            public_key,
        } => verify(args.config.as_deref(), &checkpoints, public_key.as_deref()).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn serve_command(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config).context("reading the configuration")?;
    let gateway = Gateway::from_config(&config, Arc::new(SystemClock))
        .await
        .context("starting the gateway")?;
    let signer = audit_signer(&config)?;
    let audit = AuditLog::start(gateway.app.auth.db().clone())
        .await
        .context("starting the audit writer")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(listen = %config.listen, origin = %config.public_origin, "gateway ready");
    if signer.is_none() {
        tracing::warn!("no [audit] signing_key: audit checkpoints are not signed");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let maintenance = tokio::spawn(run_maintenance_with_audit(
        gateway.app.clone(),
        Duration::from_secs(config.revocation.refresh_secs.max(1)),
        Duration::from_secs(60),
        signer.map(|signer| AuditCheckpoints {
            log: audit.clone(),
            signer: Arc::new(signer),
            every: Duration::from_secs(config.audit.checkpoint_interval_secs.max(1)),
        }),
        wait_for(stop_rx.clone()),
    ));
    serve(listener, gateway, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await?;
    let _ = stop_tx.send(true);
    let _ = maintenance.await;
    audit.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn keygen(out: &Path, name: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pkcs8 = CheckpointSigner::generate_pkcs8()?;
    let signer = CheckpointSigner::from_pkcs8(name, &pkcs8)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let key_path = out.join("audit-signing.pk8");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("creating {}", key_path.display()))?;
    file.write_all(&pkcs8)?;
    file.sync_all()?;
    let vkey = signer.verifier().to_vkey();
    let vkey_path = out.join("audit-signing.vkey");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&vkey_path)
        .with_context(|| format!("creating {}", vkey_path.display()))?;
    writeln!(file, "{vkey}")?;
    println!("signing key: {}", key_path.display());
    println!("verifier key: {}", vkey_path.display());
    println!("{vkey}");
    Ok(ExitCode::SUCCESS)
}

async fn checkpoint(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config).context("reading the configuration")?;
    let signer = audit_signer(&config)?.context("no [audit] signing_key configured")?;
    let db = Db::connect(&config.database.url, 2).await?;
    let log = AuditLog::start(db.clone()).await?;
    let signed = log.checkpoint(&signer, SystemClock.now_ms()).await;
    log.shutdown().await;
    db.close().await;
    print!("{}", signed?.note);
    Ok(ExitCode::SUCCESS)
}

async fn verify(
    config: Option<&Path>,
    files: &[PathBuf],
    public_key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config).context("reading the configuration")?;
    let verifier = match public_key {
        Some(path) => Some(
            CheckpointVerifier::parse(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("verifier key {}", path.display()))?,
        ),
        None => audit_signer(&config)?.map(|s| s.verifier()),
    };
    if verifier.is_none() && !files.is_empty() {
        anyhow::bail!("checkpoint files need --public-key or [audit] signing_key");
    }
    let mut checkpoints = Vec::new();
    for path in files {
        let note =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        if let Some(v) = &verifier {
            match v.open(&note) {
                Ok(c) => checkpoints.push(c),
                Err(e) => {
                    println!("FAIL: checkpoint {}: {e}", path.display());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    let db = Db::connect(&config.database.url, 2).await?;
    let stored = stored_checkpoints(&db).await?;
    match &verifier {
        Some(v) => {
            for (i, note) in stored.iter().enumerate() {
                match v.open(note) {
                    Ok(c) => checkpoints.push(c),
                    Err(e) => {
                        println!("FAIL: stored checkpoint #{}: {e}", i + 1);
                        db.close().await;
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
        }
        None => eprintln!(
            "warning: no verifier key: {} stored checkpoints not checked",
            stored.len()
        ),
    }
    let n = checkpoints.len();
    let result = verify_log(&db, checkpoints).await;
    db.close().await;
    match result? {
        Ok(summary) => {
            println!(
                "OK: {} entries, head {}, consistent with {n} signed checkpoints (largest size {})",
                summary.size,
                hex(&summary.head_hash),
                summary.largest_checkpoint
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            println!("FAIL: {failure}");
            Ok(ExitCode::FAILURE)
        }
    }
}
