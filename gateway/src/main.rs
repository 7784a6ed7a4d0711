//! `iphr-gateway`: runs the gateway (DESIGN §2) from a configuration file and environment, and the
//! audit log's tools (DESIGN §7, security-scenarios G4): `audit-keygen`, `checkpoint`,
//! `verify-audit`; `purge-due` lists erasures whose backups must be purged (K1). Without a
//! subcommand it serves (`iphr-gateway --config X`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::clock::{Clock, SystemClock};
use gateway::config::Config;
use gateway::domain::audit::{CheckpointSigner, CheckpointVerifier, hex};
use gateway::domain::consent::Category;
use gateway::domain::trail::AuditTrail;
use gateway::importer::{Importer, watch_drop_dir};
use gateway::partners;
use gateway::server::{
    AuditCheckpoints, Gateway, audit_signer, run_maintenance_with_audit, serve, serve_partner,
};
use gateway::store::Db;
use gateway::store::audit::{AuditLog, stored_checkpoints, verify_log};
use gateway::store::records::{self, ImportOutcome};
use gateway::store::services::{self, Service, ServiceKind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    about = "iPHR gateway: card sign-in, consent at the kiosk, the partner FHIR API, imports, audit log"
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
    /// Imports files (特定健診 .zip/.xml, .uke, .stress.csv/.stress.json) all-or-nothing each; a
    /// file imported before is a no-op.
    Import {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Pulls now from sources (`[sources]`) with the stored card-signed grants, showing progress:
    /// every linked person with an unexpired grant, or one person's links; one task per source.
    Pull {
        /// Only this person (all their links, also those whose grant expired: shown as refused).
        #[arg(long)]
        person: Option<String>,
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// Registers (or updates) a partner PHR service (or, with --source, a source service).
    RegisterPartner {
        /// Service id = OAuth client_id.
        #[arg(long)]
        id: String,
        /// Name shown to the worker.
        #[arg(long)]
        name: String,
        /// Purpose shown to the worker.
        #[arg(long)]
        purpose: String,
        /// Requested data categories, comma separated (A.checkup, A.claims, …).
        #[arg(long)]
        categories: String,
        /// Requested consent period in days.
        #[arg(long, default_value_t = 365)]
        period_days: i64,
        /// The partner's mTLS client certificate (PEM or DER).
        #[arg(long)]
        certificate: Option<PathBuf>,
        /// JWK Set of its private_key_jwt keys.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Scopes, space separated.
        #[arg(long, default_value = "system/*.rs")]
        scopes: String,
        /// Requests per second.
        #[arg(long, default_value_t = 50)]
        rate: i64,
        /// Register a source (a health-check institution, insurer or OP cloud delivering files
        /// with `POST /import`) instead of a partner.
        #[arg(long)]
        source: bool,
    },
    /// Links an imported person key (e.g. 保険者番号:記号:番号:枝番) to a person.
    LinkPerson {
        /// The key.
        #[arg(long)]
        key: String,
        /// The person id.
        #[arg(long)]
        person: String,
    },
    /// Lists erasures whose backup purge is due and not yet recorded (security-scenarios K1,
    /// docs/privacy.md); exit 1 when any is overdue.
    PurgeDue {
        /// List every registered erasure, purged or not, due or not.
        #[arg(long)]
        all: bool,
        /// Record that the backups holding erasure ID's data have been purged.
        #[arg(long, value_name = "ID")]
        mark_purged: Option<i64>,
    },
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
        Command::Import { files } => import_command(args.config.as_deref(), &files).await,
        Command::Pull { person, source } => {
            pull_command(args.config.as_deref(), person.as_deref(), source.as_deref()).await
        }
        Command::RegisterPartner {
            id,
            name,
            purpose,
            categories,
            period_days,
            certificate,
            jwks,
            scopes,
            rate,
            source,
        } => {
            register_partner(
                args.config.as_deref(),
                &id,
                &name,
                &purpose,
                &categories,
                period_days,
                certificate.as_deref(),
                jwks.as_deref(),
                &scopes,
                rate,
                if source {
                    ServiceKind::Source
                } else {
                    ServiceKind::Partner
                },
            )
            .await
        }
        Command::LinkPerson { key, person } => {
            link_person(args.config.as_deref(), &key, &person).await
        }
        Command::PurgeDue { all, mark_purged } => {
            purge_due(args.config.as_deref(), all, mark_purged).await
        }
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
    let clock: gateway::clock::SharedClock = Arc::new(SystemClock);
    let mut gateway = Gateway::from_config(&config, clock.clone())
        .await
        .context("starting the gateway")?;
    let signer = audit_signer(&config)?;
    let audit = gateway
        .audit
        .take()
        .context("the gateway started without its audit writer")?;
    let db = gateway.app.auth.db().clone();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(listen = %config.listen, origin = %config.public_origin, "gateway ready");
    if signer.is_none() {
        tracing::warn!("no [audit] signing_key: audit checkpoints are not signed");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let trail: Arc<dyn AuditTrail> = Arc::new(audit.clone());
    let mut background = Vec::new();
    if let Some(partner) = &config.partner {
        let built = partners::build(&config, partner, db.clone(), clock.clone(), trail.clone())
            .await
            .context("starting the partner listener")?;
        let partner_listener = tokio::net::TcpListener::bind(partner.listen)
            .await
            .with_context(|| format!("listening on {}", partner.listen))?;
        tracing::info!(listen = %partner.listen, url = %partner.public_url, "partner API ready");
        background.push(tokio::spawn(partners::reload_loop(
            db.clone(),
            built.directory.clone(),
            built.state.rates.clone(),
            Duration::from_secs(partner.reload_secs.max(1)),
            wait_for(stop_rx.clone()),
        )));
        let stop = stop_rx.clone();
        background.push(tokio::spawn(async move {
            if let Err(e) =
                serve_partner(partner_listener, built.tls, built.state, wait_for(stop)).await
            {
                tracing::error!(error = %e, "partner listener failed");
            }
        }));
    }
    if let Some(dir) = &config.import.drop_dir {
        tracing::info!(dir = %dir.display(), "watching the drop directory");
        background.push(tokio::spawn(watch_drop_dir(
            Importer::new(db.clone(), trail.clone(), clock.clone()),
            dir.clone(),
            Duration::from_millis(config.import.scan_interval_ms.max(10)),
            wait_for(stop_rx.clone()),
        )));
    }
    if let Some(hub) = &gateway.app.sources {
        let every = config
            .sources
            .as_ref()
            .map_or(3600, |s| s.pull_interval_secs);
        tracing::info!(
            sources = hub.source_ids().len(),
            every_secs = every,
            "scheduled pulls from sources"
        );
        background.push(tokio::spawn(gateway::sources::run_scheduled(
            hub.clone(),
            Duration::from_secs(every.max(1)),
            wait_for(stop_rx.clone()),
        )));
    }
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
    for task in background {
        let _ = task.await;
    }
    audit.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn import_command(config: Option<&Path>, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let config = Config::load(config).context("reading the configuration")?;
    let db = Db::connect(&config.database.url, 2).await?;
    let audit = AuditLog::start(db.clone()).await?;
    let importer = Importer::new(db.clone(), Arc::new(audit.clone()), Arc::new(SystemClock));
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut imported, mut duplicates, mut failed) = (0, 0, 0);
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file")
            .to_owned();
        bar.set_message(name.clone());
        let result = match std::fs::read(path) {
            Ok(bytes) => importer
                .import_bytes(bytes, &name, "cli", None)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        match result {
            Ok(ImportOutcome::Imported { resources, .. }) => {
                imported += 1;
                bar.println(format!("imported {name}: {resources} resources"));
            }
            Ok(ImportOutcome::AlreadyImported { .. }) => {
                duplicates += 1;
                bar.println(format!("already imported {name}"));
            }
            Err(e) => {
                failed += 1;
                bar.println(format!("refused {name}: {e:#}"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{imported} imported, {duplicates} already imported, {failed} refused");
    audit.shutdown().await;
    db.close().await;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn pull_command(
    config: Option<&Path>,
    person: Option<&str>,
    source: Option<&str>,
) -> anyhow::Result<ExitCode> {
    use gateway::sources::{PullState, SourceHub, snapshot};
    use gateway::store::sources as links;
    let config = Config::load(config).context("reading the configuration")?;
    let sources = config
        .sources
        .as_ref()
        .context("no [sources] section in the configuration")?;
    let db = Db::connect(&config.database.url, 4).await?;
    let audit = AuditLog::start(db.clone()).await?;
    let clock: gateway::clock::SharedClock = Arc::new(SystemClock);
    let hub = SourceHub::from_config(
        sources,
        db.clone(),
        Arc::new(audit.clone()),
        clock.clone(),
        gateway::server::phr_anchors(&config)?,
    )?;
    let ids: Vec<String> = hub
        .source_ids()
        .into_iter()
        .filter(|s| source.is_none_or(|w| w == s))
        .collect();
    if let Some(s) = source
        && ids.is_empty()
    {
        anyhow::bail!("{s} is not a configured source");
    }
    // (person, source) pairs, grouped per source.
    let mut pairs: Vec<(String, Vec<String>)> = Vec::new();
    for id in &ids {
        let mut persons = Vec::new();
        match person {
            Some(p) => {
                if links::get(&db, p, id).await?.is_some() {
                    persons.push(p.to_owned());
                }
            }
            None => {
                let mut after = String::new();
                loop {
                    let page = links::with_live_grant(&db, id, clock.now_ms(), &after, 500).await?;
                    let Some(last) = page.last() else { break };
                    after = last.person_id.clone();
                    persons.extend(page.into_iter().map(|l| l.person_id));
                }
            }
        }
        pairs.push((id.clone(), persons));
    }
    let multi = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template("{prefix:24} {bar:30} {pos}/{len} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let mut tasks = Vec::new();
    for (source_id, persons) in pairs {
        let handles: Vec<_> = persons
            .iter()
            .map(|p| hub.prepare_pull(p, &source_id))
            .collect();
        let bars: Vec<_> = persons
            .iter()
            .map(|p| {
                let bar = multi.add(indicatif::ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(format!("{source_id} {p}"));
                bar
            })
            .collect();
        let hub = hub.clone();
        let watched = handles.clone();
        let pull_task = tokio::spawn(async move {
            let mut results = Vec::new();
            for h in &handles {
                results.push(hub.pull_with(h).await);
            }
            results
        });
        let watch_task = tokio::spawn(async move {
            loop {
                let mut all_done = true;
                for (h, bar) in watched.iter().zip(&bars) {
                    let p = snapshot(h);
                    bar.set_length(p.listed);
                    bar.set_position(p.stored + p.duplicates + p.refused + p.failed);
                    bar.set_message(format!(
                        "{} stored, {} already, {} refused",
                        p.stored, p.duplicates, p.refused
                    ));
                    if p.state == PullState::Running {
                        all_done = false;
                    } else {
                        bar.finish();
                    }
                }
                if all_done {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        tasks.push((pull_task, watch_task));
    }
    let mut failures = 0;
    let mut total = 0;
    for (pull_task, watch_task) in tasks {
        let results = pull_task.await.context("pull task")?;
        let _ = watch_task.await;
        for p in results {
            total += 1;
            if p.state != PullState::Done {
                failures += 1;
            }
            println!(
                "{} {}: {:?}, {} listed, {} stored ({} resources), {} already stored, {} refused, {} failed{}",
                p.source_id,
                p.person_id,
                p.state,
                p.listed,
                p.stored,
                p.resources,
                p.duplicates,
                p.refused,
                p.failed,
                p.error.map(|e| format!(" [{e}]")).unwrap_or_default()
            );
        }
    }
    for id in &ids {
        if let Some(c) = hub.client(id) {
            let b = c.breaker().view();
            println!("{id}: breaker {:?}, {} requests", b.state, c.attempts());
        }
    }
    println!("{total} pulls, {failures} not complete");
    audit.shutdown().await;
    db.close().await;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[allow(clippy::too_many_arguments)]
async fn register_partner(
    config: Option<&Path>,
    id: &str,
    name: &str,
    purpose: &str,
    categories: &str,
    period_days: i64,
    certificate: Option<&Path>,
    jwks: Option<&Path>,
    scopes: &str,
    rate: i64,
    kind: ServiceKind,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config).context("reading the configuration")?;
    let db = Db::connect(&config.database.url, 2).await?;
    let categories = categories
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| c.trim().parse::<Category>())
        .collect::<Result<Vec<_>, _>>()?;
    let certificate_sha256 = match certificate {
        Some(path) => {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject;
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let der = if bytes.starts_with(b"-----BEGIN") {
                CertificateDer::from_pem_slice(&bytes)
                    .with_context(|| format!("{}: not a PEM certificate", path.display()))?
                    .as_ref()
                    .to_vec()
            } else {
                bytes
            };
            Some(gateway::domain::sha256(&der))
        }
        None => None,
    };
    let jwks = match jwks {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(&text)
                .with_context(|| format!("{}: not a JWK Set", path.display()))?;
            Some(text)
        }
        None => None,
    };
    services::upsert(
        &db,
        &Service {
            id: id.to_owned(),
            kind,
            name: name.to_owned(),
            purpose: purpose.to_owned(),
            categories,
            period_days,
            certificate_sha256,
            jwks,
            scopes: scopes.to_owned(),
            rate_per_sec: rate,
        },
        SystemClock.now_ms(),
    )
    .await?;
    db.close().await;
    println!("{} {id} registered", kind.as_str());
    Ok(ExitCode::SUCCESS)
}

async fn link_person(config: Option<&Path>, key: &str, person: &str) -> anyhow::Result<ExitCode> {
    let config = Config::load(config).context("reading the configuration")?;
    let db = Db::connect(&config.database.url, 2).await?;
    let linked = records::link_person_key(&db, key, person, SystemClock.now_ms()).await?;
    db.close().await;
    if linked {
        println!("{key} → {person}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{key}: no such imported person key, or linked to someone else");
        Ok(ExitCode::FAILURE)
    }
}

async fn purge_due(
    config: Option<&Path>,
    all: bool,
    mark_purged: Option<i64>,
) -> anyhow::Result<ExitCode> {
    use gateway::domain::audit::rfc3339_ms as rfc3339;
    use gateway::store::erasure::{self, RegisterFilter};
    let config = Config::load(config).context("reading the configuration")?;
    let db = Db::connect(&config.database.url, 2).await?;
    let now = SystemClock.now_ms();
    if let Some(id) = mark_purged {
        let marked = erasure::mark_purged(&db, id, now).await?;
        db.close().await;
        return Ok(if marked {
            println!("erasure {id}: backup purge recorded at {}", rfc3339(now));
            ExitCode::SUCCESS
        } else {
            eprintln!("erasure {id}: no such erasure, or its purge was recorded before");
            ExitCode::FAILURE
        });
    }
    let filter = if all {
        RegisterFilter::All
    } else {
        RegisterFilter::DueBy(now)
    };
    let list = erasure::register(&db, filter).await?;
    db.close().await;
    let mut overdue = 0;
    for e in &list {
        let state = match e.backup_purged_at_ms {
            Some(at) => format!("purged {}", rfc3339(at)),
            None if e.backup_purge_due_ms <= now => {
                overdue += 1;
                "DUE".to_owned()
            }
            None => "pending".to_owned(),
        };
        println!(
            "erasure {} person {} erased {} backup purge due {} {state} ({} resources, {} person keys, {} consents revoked, {} source links)",
            e.id,
            e.person_id,
            rfc3339(e.erased_at_ms),
            rfc3339(e.backup_purge_due_ms),
            e.counts.resources,
            e.counts.person_keys,
            e.counts.consents_revoked,
            e.counts.source_links,
        );
    }
    println!(
        "{} listed, {overdue} with a backup purge due (backups are purged {} days after an erasure)",
        list.len(),
        config.privacy.backup_purge_days
    );
    Ok(if overdue == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
