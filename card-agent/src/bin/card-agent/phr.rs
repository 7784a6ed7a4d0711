//! `card-agent phr …`: the PHR card (PIV with the iPHR profile, `docs/phr-card-profile.md`).
//!
//! Every card operation runs inside one exclusive PC/SC transaction. PINs come from the terminal
//! (no echo) or, with `--pin-stdin`, from standard input — never from arguments or environment.

use anyhow::{Context, bail};
use card_agent::phr::ca::PhrIssuerCa;
use card_agent::phr::card::{self, ConsentRequest};
use card_agent::phr::consent::Category;
use card_agent::pin::{LastTry, PinFormat, prompt_pin, read_pin_line};
use card_agent::piv::{PivPin, PivPuk, mgmt};
use card_agent::transport::pcsc::{PcscContext, PcscTransaction};
use std::path::PathBuf;

/// Options shared by the card commands.
#[derive(Debug, Clone, clap::Args)]
pub struct CardOpts {
    /// PC/SC reader name (default: the first reader with a card).
    #[arg(long)]
    reader: Option<String>,
    /// Read the PIN from standard input (one line) instead of the terminal.
    #[arg(long)]
    pin_stdin: bool,
    /// Go ahead when only one PIN try is left (a wrong PIN then blocks the card).
    #[arg(long)]
    confirm_last_try: bool,
}

/// PHR card commands.
#[derive(Debug, clap::Subcommand)]
pub enum PhrCommand {
    /// Show the card: holder, linked services, consents, PIN tries left (no PIN, no try spent).
    Show {
        /// PC/SC reader name (default: the first reader with a card).
        #[arg(long)]
        reader: Option<String>,
    },
    /// List the consent records on the card, each checked against the holder key.
    Consents {
        /// PC/SC reader name (default: the first reader with a card).
        #[arg(long)]
        reader: Option<String>,
    },
    /// Issue a factory-fresh PIV card as a PHR card (issuer tooling). Asks for the new PIN and
    /// PUK (with --pin-stdin: two lines, PIN then PUK).
    Issue {
        /// Directory of the PHR issuer CA (created on first use).
        #[arg(long)]
        ca: PathBuf,
        /// The holder's pseudonymous id (holder certificate CN).
        #[arg(long)]
        holder_id: String,
        /// Holder certificate validity in years.
        #[arg(long, default_value_t = 5)]
        years: i64,
        /// New management key algorithm.
        #[arg(long, value_parser = ["aes256", "3des"], default_value = "aes256")]
        mgmt_alg: String,
        #[command(flatten)]
        card: CardOpts,
    },
    /// Link a service: generate its key in the next free retired slot (82–95) and store the
    /// service-binding certificate.
    Link {
        /// Service id (a-z 0-9 . - _, up to 32).
        #[arg(long)]
        service: String,
        /// The person's pseudonymous id at that service (from its enrollment).
        #[arg(long)]
        pseudonym: String,
        #[command(flatten)]
        card: CardOpts,
    },
    /// Grant consent to a linked service.
    Grant {
        /// Service id.
        #[arg(long)]
        service: String,
        /// Data category UNIT:KIND (A health-check data, B work status, C occupational health;
        /// KIND or *). Repeat for several.
        #[arg(long = "category", required = true)]
        categories: Vec<String>,
        /// Purpose of use.
        #[arg(long)]
        purpose: String,
        /// Validity in days from now.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Refuse unless the card's consent generation is this one (as shown by `show`).
        #[arg(long)]
        expect_generation: Option<u32>,
        #[command(flatten)]
        card: CardOpts,
    },
    /// Revoke the consent granted to a service.
    Revoke {
        /// Service id.
        #[arg(long)]
        service: String,
        /// Refuse unless the card's consent generation is this one.
        #[arg(long)]
        expect_generation: Option<u32>,
        #[command(flatten)]
        card: CardOpts,
    },
    /// Sign a service-specific grant with that service's key on the card.
    SignGrant {
        /// Service id.
        #[arg(long)]
        service: String,
        /// Who the grant is for (origin or URL of the gateway / source).
        #[arg(long)]
        audience: String,
        /// The verifier's challenge, hex (1–64 bytes).
        #[arg(long)]
        nonce: String,
        /// Categories covered (UNIT:KIND), repeatable.
        #[arg(long = "scope")]
        scope: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 300)]
        ttl: u32,
        #[command(flatten)]
        card: CardOpts,
    },
    /// Serve the virtual PHR card (state in DIR) to vsmartcard's vpcd until it is removed.
    ServeVirtual {
        /// Card state directory (a factory-fresh card is made on first use).
        #[arg(long)]
        dir: PathBuf,
        /// vpcd port (35963 = "Virtual PCD 00 00").
        #[arg(long, default_value_t = 35963)]
        port: u16,
    },
}

fn now() -> u32 {
    let secs = time::OffsetDateTime::now_utc().unix_timestamp();
    u32::try_from(secs).unwrap_or(u32::MAX)
}

fn read_secret<F: PinFormat>(stdin: bool, prompt: &str) -> anyhow::Result<card_agent::pin::Pin<F>> {
    if stdin {
        let mut lock = std::io::stdin().lock();
        Ok(read_pin_line::<F>(&mut lock)?)
    } else {
        Ok(prompt_pin::<F>(prompt)?)
    }
}

fn last_try(opts: &CardOpts) -> LastTry {
    if opts.confirm_last_try {
        LastTry::Confirmed
    } else {
        LastTry::Refuse
    }
}

/// Runs `f` on the card in `reader` (or the first with a card) inside one PC/SC transaction.
fn with_card<R>(
    reader: Option<&str>,
    f: impl FnOnce(&mut PcscTransaction<'_>) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let ctx = PcscContext::establish()?;
    let name = match reader {
        Some(r) => r.to_owned(),
        None => ctx
            .first_reader_with_card()?
            .context("no card in any reader")?,
    };
    let mut card = ctx
        .connect(&name)
        .with_context(|| format!("reader {name}"))?;
    card.transaction(f)
}

fn categories(list: &[String]) -> anyhow::Result<Vec<Category>> {
    list.iter()
        .map(|c| Category::parse(c).map_err(anyhow::Error::from))
        .collect()
}

fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

/// Runs one `phr` command.
pub fn run(cmd: PhrCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        PhrCommand::Show { reader } => {
            let view = with_card(reader.as_deref(), |tx| Ok(card::read_card(tx)?))?;
            print(json, &view, || {
                let mut out = format!(
                    "holder: {}\nPIN: {:?}\nconsent generation: {}\nlinked services ({} free slots):",
                    view.holder_id.as_deref().unwrap_or("(not issued)"),
                    view.pin,
                    view.consents.generation,
                    view.free_slots
                );
                for s in &view.services {
                    out.push_str(&format!(
                        "\n  {:02X} {} as {}{}",
                        s.slot,
                        s.service,
                        s.pseudonym,
                        if s.verified { "" } else { " (NOT VERIFIED)" }
                    ));
                }
                for (slot, reason) in &view.corrupt_slots {
                    out.push_str(&format!("\n  {slot:02X} CORRUPT: {reason}"));
                }
                out.push_str("\nconsents:");
                for r in &view.consents.records {
                    out.push_str(&format!(
                        "\n  v{} {} {:?} [{}] for {}",
                        r.terms.version,
                        r.terms.service,
                        r.terms.status,
                        r.terms
                            .categories
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        r.terms.purpose
                    ));
                }
                out
            })
        }
        PhrCommand::Consents { reader } => {
            let view = with_card(reader.as_deref(), |tx| Ok(card::read_card(tx)?))?;
            if !view.unverified_consents.is_empty() {
                bail!(
                    "consent records that do not verify with the holder key: {}",
                    view.unverified_consents.join(", ")
                );
            }
            print(json, &view.consents, || {
                view.consents
                    .records
                    .iter()
                    .map(|r| {
                        format!(
                            "v{} {} {:?} {} until {}",
                            r.terms.version,
                            r.terms.service,
                            r.terms.status,
                            r.terms.purpose,
                            r.terms.not_after
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        PhrCommand::Issue {
            ca,
            holder_id,
            years,
            mgmt_alg,
            card: opts,
        } => {
            let ca = PhrIssuerCa::load_or_create(&ca)?;
            let new_pin: PivPin = read_secret(opts.pin_stdin, "New PHR card PIN (6–8 digits): ")?;
            if !opts.pin_stdin {
                let again: PivPin = read_secret(false, "Repeat the PIN: ")?;
                if !card_agent::piv::same_secret(&again, &new_pin) {
                    bail!("the two PINs differ");
                }
            }
            let new_puk: PivPuk = read_secret(opts.pin_stdin, "New PUK (6–8 digits): ")?;
            let not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365 * years);
            let mgmt_alg = if mgmt_alg == "3des" {
                mgmt::ALG_3DES
            } else {
                mgmt::ALG_AES256
            };
            let issued = with_card(opts.reader.as_deref(), |tx| {
                Ok(card::issue_factory_fresh(
                    tx, &ca, &holder_id, &new_pin, &new_puk, not_after, mgmt_alg,
                )?)
            })?;
            print(json, &issued, || {
                format!("issued PHR card for {}", issued.holder_id)
            })
        }
        PhrCommand::Link {
            service,
            pseudonym,
            card: opts,
        } => {
            let pin: PivPin = read_secret(opts.pin_stdin, "PHR card PIN: ")?;
            let linked = with_card(opts.reader.as_deref(), |tx| {
                Ok(card::link(tx, &pin, last_try(&opts), &service, &pseudonym)?)
            })?;
            print(json, &linked, || {
                format!("linked {} in slot {:02X}", linked.service, linked.slot)
            })
        }
        PhrCommand::Grant {
            service,
            categories: cats,
            purpose,
            days,
            expect_generation,
            card: opts,
        } => {
            let now = now();
            let request = ConsentRequest {
                service,
                categories: categories(&cats)?,
                purpose,
                not_before: now,
                not_after: now.saturating_add(days.saturating_mul(86_400)),
            };
            let pin: PivPin = read_secret(opts.pin_stdin, "PHR card PIN: ")?;
            let written = with_card(opts.reader.as_deref(), |tx| {
                Ok(card::grant(
                    tx,
                    &pin,
                    last_try(&opts),
                    &request,
                    expect_generation,
                    now,
                )?)
            })?;
            print(json, &written, || {
                format!(
                    "granted: {} v{} (consent generation {})",
                    written.record.terms.service, written.record.terms.version, written.generation
                )
            })
        }
        PhrCommand::Revoke {
            service,
            expect_generation,
            card: opts,
        } => {
            let pin: PivPin = read_secret(opts.pin_stdin, "PHR card PIN: ")?;
            let written = with_card(opts.reader.as_deref(), |tx| {
                Ok(card::revoke(
                    tx,
                    &pin,
                    last_try(&opts),
                    &service,
                    expect_generation,
                    now(),
                )?)
            })?;
            print(json, &written, || {
                format!(
                    "revoked: {} v{} (consent generation {})",
                    written.record.terms.service, written.record.terms.version, written.generation
                )
            })
        }
        PhrCommand::SignGrant {
            service,
            audience,
            nonce,
            scope,
            ttl,
            card: opts,
        } => {
            let nonce = hex::decode(&nonce).context("--nonce must be hex")?;
            let scope = categories(&scope)?;
            let pin: PivPin = read_secret(opts.pin_stdin, "PHR card PIN: ")?;
            let signed = with_card(opts.reader.as_deref(), |tx| {
                Ok(card::sign_grant(
                    tx,
                    &pin,
                    last_try(&opts),
                    &service,
                    &audience,
                    &nonce,
                    scope,
                    now(),
                    ttl,
                )?)
            })?;
            print(json, &signed, || {
                format!(
                    "grant: {}\nsignature: {}",
                    hex::encode(&signed.grant_bytes),
                    hex::encode(&signed.signature)
                )
            })
        }
        PhrCommand::ServeVirtual { dir, port } => {
            let card = card_agent::virtual_card::piv::VirtualPivCard::open(&dir)?;
            let stream = card_agent::virtual_card::vpcd::connect(
                ("127.0.0.1", port),
                std::time::Duration::from_secs(10),
            )
            .with_context(|| format!("vpcd on port {port}"))?;
            eprintln!("virtual PHR card inserted (vpcd port {port}); Ctrl-C removes it");
            card_agent::virtual_card::vpcd::serve(&std::sync::Mutex::new(card), stream)?;
            Ok(())
        }
    }
}
