//! `card-agent virtual-card …`: software cards served to vsmartcard's vpcd reader driver.

use anyhow::{Context, Result};
use card_agent::virtual_card::jpki::{JpkiCardMaterial, VirtualJpkiCard};
use card_agent::virtual_card::vpcd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum VirtualCardCommand {
    /// A virtual My Number card (JPKI). Keys and certificates are made in DIR on first use
    /// (test CA `O=JPKI-TEST`, auth PIN 1234, sign password ABC123) and loaded afterwards.
    Jpki {
        /// Card directory (test CA in DIR/ca, card in DIR/card).
        #[arg(long, default_value = ".iphr/virtual-my-number-card")]
        dir: PathBuf,
        /// vpcd address (port 35963 = reader `Virtual PCD 00 00`, 35964 = `… 00 01`).
        #[arg(long, default_value = "127.0.0.1:35963")]
        vpcd: String,
        /// Give both PINs all their tries back before inserting.
        #[arg(long)]
        reset_counters: bool,
        /// Only make (or load) the card and print where its files are; do not insert it.
        #[arg(long)]
        create_only: bool,
        /// Serve one vpcd connection, then exit (default: reconnect when pcscd restarts).
        #[arg(long)]
        once: bool,
    },
}

pub fn run(cmd: VirtualCardCommand) -> Result<()> {
    match cmd {
        VirtualCardCommand::Jpki {
            dir,
            vpcd: addr,
            reset_counters,
            create_only,
            once,
        } => {
            let mut material = JpkiCardMaterial::load_or_create(&dir)
                .with_context(|| format!("card directory {}", dir.display()))?;
            if reset_counters {
                material.reset_counters()?;
            }
            if create_only {
                println!("{}", dir.display());
                return Ok(());
            }
            let card = Mutex::new(VirtualJpkiCard::new(material));
            loop {
                let stream =
                    vpcd::connect(addr.as_str(), Duration::from_secs(30)).with_context(|| {
                        format!("vpcd at {addr} (is pcscd with vsmartcard-vpcd running?)")
                    })?;
                eprintln!("virtual My Number card inserted via vpcd {addr}");
                vpcd::serve(&card, stream)?;
                eprintln!("vpcd closed the connection");
                if once {
                    return Ok(());
                }
            }
        }
    }
}
