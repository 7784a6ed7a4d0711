//! A virtual card inserted into a vpcd reader and seen by pcscd, for tests and the demo.
//!
//! pcscd is one per machine and its readers are shared: whoever inserts a card holds
//! [`ReaderLock`], a file lock that serialises test threads, test binaries and checkouts.

use super::VirtualCard;
use super::vpcd::{self, Running};
use crate::transport::TransportError;
use crate::transport::pcsc::PcscContext;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first vpcd reader (TCP port 35963).
pub const VPCD_READER_0: &str = "Virtual PCD 00 00";
/// The second vpcd reader (TCP port 35964).
pub const VPCD_READER_1: &str = "Virtual PCD 00 01";

/// Connections tried before a card is declared unseen.
const INSERT_ATTEMPTS: u32 = 5;
/// How long pcscd gets to see a card on one connection.
const SEEN_WITHIN: Duration = Duration::from_secs(3);
/// How long vpcd may take to accept the connection.
const CONNECT: Duration = Duration::from_secs(10);

/// Exclusive use of the machine's PC/SC readers until dropped.
pub struct ReaderLock {
    _file: File,
}

impl ReaderLock {
    /// Takes the machine-wide reader lock, waiting for other holders.
    pub fn acquire() -> io::Result<Self> {
        let path = std::env::temp_dir().join("iphr-pcsc.lock");
        let file = File::create(&path)?;
        file.lock()?;
        Ok(ReaderLock { _file: file })
    }
}

/// Why a virtual card could not be inserted.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// vpcd did not accept the connection (pcscd without vsmartcard-vpcd?).
    #[error("cannot reach vpcd on port {port}: {source}")]
    Vpcd {
        /// The vpcd port.
        port: u16,
        /// The failure.
        source: io::Error,
    },
    /// The reader already holds a card (someone else's virtual card, or a real one).
    #[error("{reader} already holds a card (ATR {atr})")]
    Occupied {
        /// The reader.
        reader: &'static str,
        /// The ATR of the card in it, hex.
        atr: String,
    },
    /// pcscd did not report the card in time.
    #[error("{reader}: card not seen by pcscd: {source}")]
    NotSeen {
        /// The reader.
        reader: &'static str,
        /// The failure.
        source: TransportError,
    },
}

/// A virtual card in a vpcd reader; removed (and seen removed by pcscd) on drop.
pub struct InsertedCard<C: VirtualCard + 'static> {
    running: Option<Running<C>>,
    reader: &'static str,
}

impl<C: VirtualCard + 'static> InsertedCard<C> {
    /// Inserts `card` into vpcd reader 0 or 1 and waits until pcscd reports it present.
    pub fn insert(card: C, reader_index: u8) -> Result<Self, InsertError> {
        let (port, reader) = match reader_index {
            0 => (vpcd::DEFAULT_PORT, VPCD_READER_0),
            _ => (vpcd::DEFAULT_PORT + 1, VPCD_READER_1),
        };
        let not_seen = |source| InsertError::NotSeen { reader, source };
        let ctx = PcscContext::establish().map_err(not_seen)?;
        let atr_in_reader = || -> Result<Option<String>, TransportError> {
            let readers = ctx.readers()?;
            let info = readers.into_iter().find(|r| r.name == reader);
            Ok(info
                .ok_or_else(|| TransportError::ReaderNotFound(reader.into()))?
                .atr)
        };
        if let Some(atr) = atr_in_reader().map_err(not_seen)? {
            return Err(InsertError::Occupied { reader, atr });
        }
        let our_atr = hex::encode_upper(card.atr());
        let card = Arc::new(Mutex::new(card));
        // After a card died mid-command, vpcd may leave the next connection unanswered while a
        // fresh one is taken at once: so a few short waits, reconnecting between them.
        let mut attempt = 1;
        let inserted = loop {
            let running = Running::insert_shared(Arc::clone(&card), ("127.0.0.1", port), CONNECT)
                .map_err(|source| InsertError::Vpcd { port, source })?;
            let inserted = InsertedCard {
                running: Some(running),
                reader,
            };
            match ctx.wait_for_card(reader, SEEN_WITHIN) {
                Ok(()) => break inserted,
                Err(TransportError::Timeout(_)) if attempt < INSERT_ATTEMPTS => attempt += 1,
                Err(e) => return Err(not_seen(e)),
            }
        };
        match atr_in_reader().map_err(not_seen)? {
            Some(atr) if atr == our_atr => Ok(inserted),
            Some(atr) => Err(InsertError::Occupied { reader, atr }),
            None => Err(not_seen(TransportError::NoCard)),
        }
    }

    /// The reader's PC/SC name.
    pub fn reader(&self) -> &'static str {
        self.reader
    }

    /// The card, for inspection.
    pub fn card(&self) -> std::sync::MutexGuard<'_, C> {
        match &self.running {
            Some(running) => running.card(),
            None => unreachable!("`running` is only taken in drop"),
        }
    }
}

impl<C: VirtualCard + 'static> Drop for InsertedCard<C> {
    fn drop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let _ = running.remove();
        // Wait until pcscd has noticed, so the next user starts from an empty reader.
        let Ok(ctx) = PcscContext::establish() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let present = ctx
                .readers()
                .map(|rs| rs.iter().any(|r| r.name == self.reader && r.card_present))
                .unwrap_or(false);
            if !present {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
