//! `kiosk-demo`: the kiosk side of the demo (`scripts/run.sh`) with a virtual PHR card through
//! pcscd + vpcd: issue the card, sign in at the gateway, link the card at each source with its
//! enrollment code, consent, grant, and watch each pull's progress; then, optionally, put a new
//! file at a source and wait for the gateway's scheduled pull to bring it.

use anyhow::{Context as _, bail};
use card_agent::phr::ca::PhrIssuerCa;
use card_agent::virtual_card::piv::VirtualPivCard;
use clap::{Parser, Subcommand};
use iphr_tests::kiosk::{KioskClient, PhrCardAtReader, issue_card};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "The kiosk side of the iPHR demo, with a virtual PHR card")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates (or loads) the PHR card issuer CA in DIR (`phr-issuer-ca.der`).
    Ca {
        /// Directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Runs the kiosk flow.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The gateway's origin, e.g. https://localhost:8443.
    #[arg(long)]
    origin: String,
    /// The gateway's TLS certificate (PEM) to trust.
    #[arg(long)]
    gateway_cert: PathBuf,
    /// The issuer CA directory (see `ca`).
    #[arg(long)]
    issuer: PathBuf,
    /// The virtual card's directory (created and issued on first use).
    #[arg(long)]
    card_dir: PathBuf,
    /// vpcd reader index (0 or 1).
    #[arg(long, default_value_t = 1)]
    reader_index: u8,
    /// The card's PIN (set at issuance).
    #[arg(long, default_value = "246810")]
    pin: String,
    /// A source: SERVICE:PSEUDONYM:ENROLLMENT_CODE:CATEGORY[,CATEGORY…] (repeat).
    #[arg(long = "source", required = true)]
    sources: Vec<String>,
    /// After the first pulls, copy FROM to TO (a source's directory) and wait for the
    /// scheduled pull to store it: FROM=TO.
    #[arg(long)]
    later: Option<String>,
    /// How long to wait for the scheduled pull, seconds.
    #[arg(long, default_value_t = 60)]
    wait_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ca { dir } => {
            let ca = PhrIssuerCa::load_or_create(&dir)?;
            println!("{}", dir.join("phr-issuer-ca.der").display());
            drop(ca);
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

struct SourceArg {
    service: String,
    pseudonym: String,
    code: String,
    categories: Vec<String>,
}

fn parse_source(text: &str) -> anyhow::Result<SourceArg> {
    let parts: Vec<&str> = text.splitn(4, ':').collect();
    let [service, pseudonym, code, categories] = parts[..] else {
        bail!("--source {text:?}: SERVICE:PSEUDONYM:CODE:CATEGORIES");
    };
    Ok(SourceArg {
        service: service.into(),
        pseudonym: pseudonym.into(),
        code: code.into(),
        categories: categories.split(',').map(str::to_owned).collect(),
    })
}

fn show_progress(service: &str, p: &Value) {
    let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let state = p.get("state").and_then(Value::as_str).unwrap_or("?");
    let label = match state {
        "running" => "取得中",
        "done" => "完了",
        "partial" => "一部取得",
        "failed" => "失敗",
        "refused" => "拒否",
        _ => state,
    };
    println!(
        "  {service}: {label}  一覧 {} 件 / 取得 {} 件 / 新規保存 {} 件 / 既存 {} 件 / 拒否 {} 件{}",
        n("listed"),
        n("fetched"),
        n("stored"),
        n("duplicates"),
        n("refused"),
        p.get("message")
            .and_then(Value::as_str)
            .map(|m| format!("  ({m})"))
            .unwrap_or_default()
    );
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let sources = args
        .sources
        .iter()
        .map(|s| parse_source(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ca = PhrIssuerCa::load_or_create(&args.issuer)?;
    let virtual_card = VirtualPivCard::open(&args.card_dir)?;
    let inserted = iphr_tests::insert(virtual_card, args.reader_index);
    let reader = inserted.reader();
    let card = PhrCardAtReader::new(reader, &args.pin);
    if card.holder_certificate().is_err() {
        println!("PHR カードを発行します（{reader}）");
        issue_card(reader, &ca, "DEMO-HOLDER-0001", &args.pin)?;
    }
    let gateway_cert = std::fs::read(&args.gateway_cert)
        .with_context(|| args.gateway_cert.display().to_string())?;
    let mut kiosk = KioskClient::new(&args.origin, &gateway_cert)?;
    let person = kiosk.sign_in(&card).await?;
    println!("カードで本人確認しました（person {person}）");
    for s in &sources {
        let overview = kiosk.sources().await?;
        let linked = overview["sources"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["id"] == s.service.as_str()))
            .is_some_and(|v| v["linked"] == true);
        let categories: Vec<&str> = s.categories.iter().map(String::as_str).collect();
        kiosk
            .consent_as(&card, &s.service, Some(&s.pseudonym), &categories)
            .await?;
        println!(
            "{}: 同意しました（{}）: カードに同意記録を書き込みました",
            s.service,
            s.categories.join("、")
        );
        if !linked {
            kiosk
                .link_source(&card, &s.service, &s.pseudonym, &s.code)
                .await?;
            println!("{}: カードを連携しました（{}）", s.service, s.pseudonym);
        }
        let pull = kiosk.grant(&card, &s.service).await?;
        let last = kiosk
            .wait_pull(&pull, Duration::from_secs(120), |p| {
                show_progress(&s.service, p);
            })
            .await?;
        if last["state"] != "done" {
            bail!("{}: the pull ended {last}", s.service);
        }
    }
    if let Some(later) = &args.later {
        let (from, to) = later.split_once('=').context("--later FROM=TO")?;
        let before = stored_total(&mut kiosk).await?;
        std::fs::copy(from, to).with_context(|| format!("copy {from} to {to}"))?;
        println!("提供元に新しいファイルを置きました: {to}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_secs);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = stored_total(&mut kiosk).await?;
            if now > before {
                println!("定期取得で取り込まれました（提供元から保存したファイル: 計 {now} 件）");
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the scheduled pull did not bring the new file within {} s",
                    args.wait_secs
                );
            }
        }
    }
    drop(inserted);
    Ok(())
}

/// Files stored so far over all sources (from `GET /api/sources`).
async fn stored_total(kiosk: &mut KioskClient) -> anyhow::Result<u64> {
    let overview = kiosk.sources().await?;
    Ok(overview["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["files_stored"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0))
}
