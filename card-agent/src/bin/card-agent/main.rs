//! `card-agent`: the command line of the card agent.
//!
//! PINs come from the terminal (no echo) or, for automation, one line of standard input
//! (`--pin-stdin`); never from an argument or an environment variable.

mod phr;
mod virtual_cmd;

use anyhow::{Context, Result, bail};
use card_agent::agent::{self, CardInfo};
use card_agent::jpki::PinState;
use card_agent::pin::{self, JpkiAuthPin, JpkiAuthPinFormat, LastTry};
use card_agent::transport::pcsc::{CardEvent, PcscContext};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "card-agent",
    version,
    about = "Reads My Number cards over PC/SC and signs challenges; PINs never leave this machine."
)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List PC/SC readers and whether a card is in each.
    Readers,
    /// Show the card: type, certificate subject, serial, validity, PIN tries left (spends no try).
    Status {
        /// Reader name (default: the first reader holding a card).
        #[arg(long)]
        reader: Option<String>,
    },
    /// Sign SHA-256(challenge) with the My Number card's authentication key, after PIN entry.
    Sign {
        /// The challenge, hex.
        #[arg(long, value_name = "HEX")]
        challenge: String,
        /// Reader name (default: the first reader holding a card).
        #[arg(long)]
        reader: Option<String>,
        /// Read the PIN as one line of standard input (automation) instead of the terminal.
        #[arg(long)]
        pin_stdin: bool,
        /// Allow the VERIFY when only one try is left (a wrong PIN then blocks the card).
        #[arg(long)]
        confirm_last_try: bool,
    },
    /// Wait until a card is inserted into or removed from a reader.
    Wait {
        /// Reader name (default: the first reader).
        #[arg(long)]
        reader: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Serve the localhost API that the kiosk page calls; the PIN is asked here, never in the page.
    Serve {
        /// Port on 127.0.0.1 (0: any free port). The bound address is printed as JSON when ready.
        #[arg(long, default_value_t = 24700)]
        port: u16,
        /// Web origin allowed to ask for signatures, exactly `https://host[:port]` (repeatable).
        #[arg(long = "allow-origin", value_name = "ORIGIN", required = true)]
        origins: Vec<String>,
        /// Reader name (default: the first reader holding a card).
        #[arg(long)]
        reader: Option<String>,
        /// Read each PIN as one line of standard input (automation) instead of the terminal.
        #[arg(long)]
        pin_stdin: bool,
        /// With --pin-stdin: allow the VERIFY when only one try is left.
        #[arg(long)]
        confirm_last_try: bool,
    },
    /// Run a virtual card (for tests and the demo without hardware).
    #[command(subcommand)]
    VirtualCard(virtual_cmd::VirtualCardCommand),
    /// PHR card (PIV with the iPHR profile): show, issue, link, grant, revoke, consents, sign-grant.
    Phr {
        #[command(subcommand)]
        cmd: phr::PhrCommand,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CARD_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Readers => readers(json),
        Command::Status { reader } => status(reader, json),
        Command::Sign {
            challenge,
            reader,
            pin_stdin,
            confirm_last_try,
        } => sign(&challenge, reader, pin_stdin, confirm_last_try, json),
        Command::Wait { reader, timeout } => wait(reader, timeout, json),
        Command::Serve {
            port,
            origins,
            reader,
            pin_stdin,
            confirm_last_try,
        } => serve(port, origins, reader, pin_stdin, confirm_last_try),
        Command::VirtualCard(cmd) => virtual_cmd::run(cmd),
        Command::Phr { cmd } => phr::run(cmd, json),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn readers(json: bool) -> Result<()> {
    let ctx = PcscContext::establish().context("PC/SC")?;
    let readers = ctx.readers()?;
    if json {
        return print_json(&readers);
    }
    if readers.is_empty() {
        println!("no reader attached");
    }
    for r in readers {
        let what = match (&r.atr, r.in_use_exclusively) {
            (Some(_), true) => "card (in use by another application)".to_owned(),
            (Some(atr), false) => format!("card, ATR {atr}"),
            (None, _) => "empty".to_owned(),
        };
        println!("{}: {what}", r.name);
    }
    Ok(())
}

fn pick_reader(ctx: &PcscContext, reader: Option<String>) -> Result<String> {
    match reader {
        Some(name) => Ok(name),
        None => ctx
            .first_reader_with_card()?
            .context("no card in any reader"),
    }
}

fn status(reader: Option<String>, json: bool) -> Result<()> {
    let ctx = PcscContext::establish().context("PC/SC")?;
    let reader = pick_reader(&ctx, reader)?;
    let mut card = ctx
        .connect(&reader)
        .with_context(|| format!("reader {reader}"))?;
    let atr = hex::encode_upper(card.atr()?);
    let info = card.transaction(|tx| agent::read_card_info(tx))?;
    if json {
        #[derive(serde::Serialize)]
        struct Status<'a> {
            reader: &'a str,
            atr: &'a str,
            card: &'a CardInfo,
        }
        return print_json(&Status {
            reader: &reader,
            atr: &atr,
            card: &info,
        });
    }
    println!("reader:  {reader}");
    println!("ATR:     {atr}");
    match info {
        CardInfo::MyNumber {
            token,
            auth_certificate: c,
            auth_pin,
        } => {
            println!("card:    My Number card ({token})");
            print_certificate(&c);
            println!(
                "PIN:     {}",
                describe_pin(auth_pin, "only the municipal office can unlock it")
            );
        }
        CardInfo::Phr {
            holder_id,
            holder_certificate: c,
            pin,
            linked_services,
        } => {
            println!("card:    PHR card (holder {holder_id})");
            print_certificate(&c);
            println!("PIN:     {}", describe_pin(pin, "unblock it with the PUK"));
            println!("linked:  {}", linked_services.join(", "));
        }
        CardInfo::Unknown => {
            println!("card:    neither a My Number card nor an issued PHR card");
        }
    }
    Ok(())
}

fn print_certificate(c: &card_agent::certinfo::CertificateSummary) {
    println!("subject: {}", c.subject);
    println!("issuer:  {}", c.issuer);
    println!("serial:  {}", c.serial);
    println!(
        "valid:   {} – {}{}",
        c.not_before,
        c.not_after,
        if c.valid_now { "" } else { " (NOT valid now)" }
    );
    println!("key:     {}", c.public_key);
}

/// The counter in words; `unblock` says who can unblock the card's PIN.
fn describe_pin(state: PinState, unblock: &str) -> String {
    match state {
        PinState::TriesLeft(n) => format!("{n} tries left"),
        PinState::Blocked => format!("blocked ({unblock})"),
        PinState::Verified => "verified in this card session".into(),
    }
}

fn sign(
    challenge_hex: &str,
    reader: Option<String>,
    pin_stdin: bool,
    confirm_last_try: bool,
    json: bool,
) -> Result<()> {
    let challenge = hex::decode(challenge_hex.trim()).context("--challenge must be hex")?;
    if challenge.is_empty() || challenge.len() > 1024 {
        bail!("--challenge must be 1–1024 bytes");
    }
    let ctx = PcscContext::establish().context("PC/SC")?;
    let reader = pick_reader(&ctx, reader)?;
    let mut card = ctx
        .connect(&reader)
        .with_context(|| format!("reader {reader}"))?;
    let pin: JpkiAuthPin = if pin_stdin {
        pin::read_pin_line::<JpkiAuthPinFormat>(&mut std::io::stdin().lock())?
    } else {
        pin::prompt_pin::<JpkiAuthPinFormat>("利用者証明用 PIN (4 digits): ")?
    };
    let last_try = if confirm_last_try {
        LastTry::Confirmed
    } else {
        LastTry::Refuse
    };
    let signed =
        card.transaction(|tx| agent::sign_challenge(tx, &pin, last_try, &challenge, None))?;
    drop(pin);
    // Resetting the card on disconnect forgets the verified PIN.
    card.disconnect()?;
    if json {
        return print_json(&signed);
    }
    println!("algorithm:   {}", signed.algorithm);
    println!("signature:   {}", hex::encode(&signed.signature));
    println!("certificate: {}", hex::encode(&signed.certificate));
    Ok(())
}

fn wait(reader: Option<String>, timeout: u64, json: bool) -> Result<()> {
    let ctx = PcscContext::establish().context("PC/SC")?;
    let reader = match reader {
        Some(r) => r,
        None => ctx
            .readers()?
            .into_iter()
            .next()
            .map(|r| r.name)
            .context("no reader attached")?,
    };
    let event = ctx.wait_for_change(&reader, Duration::from_secs(timeout))?;
    let word = match event {
        CardEvent::Inserted => "inserted",
        CardEvent::Removed => "removed",
        CardEvent::Timeout => "timeout",
    };
    if json {
        print_json(&serde_json::json!({ "reader": reader, "event": word }))?;
    } else {
        println!("{reader}: {word}");
    }
    if event == CardEvent::Timeout {
        std::process::exit(2);
    }
    Ok(())
}

fn serve(
    port: u16,
    origins: Vec<String>,
    reader: Option<String>,
    pin_stdin: bool,
    confirm_last_try: bool,
) -> Result<()> {
    use card_agent::agent::{CardAgent, PcscReader, PinPrompt, StdinPrompt, TerminalPrompt};
    use std::sync::Arc;
    for origin in &origins {
        card_agent::local_api::validate_origin(origin)?;
    }
    let prompt: Arc<dyn PinPrompt> = if pin_stdin {
        Arc::new(StdinPrompt { confirm_last_try })
    } else {
        Arc::new(TerminalPrompt)
    };
    let card = Arc::new(CardAgent::new(PcscReader { reader }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        print_json(&serde_json::json!({ "listening": addr.to_string() }))?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        card_agent::local_api::serve(listener, origins, card, prompt, shutdown).await?;
        Ok(())
    })
}
