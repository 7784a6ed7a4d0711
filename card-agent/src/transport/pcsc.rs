//! PC/SC readers (pcsc-lite, WinSCard, macOS CryptoTokenKit) through the `pcsc` crate.
//!
//! PC/SC Workgroup specification part 5 (ICC resource manager): list readers, wait for card
//! insertion and removal with `SCardGetStatusChange`, and exclusive access with
//! `SCardBeginTransaction` so that no other application interleaves APDUs with ours.

use super::{CardTransport, TransportError};
use std::ffi::CString;
use std::time::Duration;

/// Largest response we accept: an extended-length response plus SW.
const RECEIVE_BUFFER: usize = pcsc::MAX_BUFFER_SIZE_EXTENDED;

/// A reader and what is in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReaderInfo {
    /// The reader's PC/SC name.
    pub name: String,
    /// Whether a card is present.
    pub card_present: bool,
    /// The card's answer-to-reset, hex, when present.
    pub atr: Option<String>,
    /// Another application holds the card exclusively.
    pub in_use_exclusively: bool,
}

/// What [`PcscContext::wait_for_change`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardEvent {
    /// A card is now present.
    Inserted,
    /// The reader is now empty.
    Removed,
    /// Nothing changed within the timeout.
    Timeout,
}

/// A connection to the PC/SC service.
pub struct PcscContext {
    ctx: pcsc::Context,
}

impl PcscContext {
    /// Connects to the PC/SC service (pcscd on Linux).
    pub fn establish() -> Result<Self, TransportError> {
        let ctx = pcsc::Context::establish(pcsc::Scope::User).map_err(map_error)?;
        Ok(PcscContext { ctx })
    }

    /// Lists the readers with their card state. No reader at all is an empty list.
    pub fn readers(&self) -> Result<Vec<ReaderInfo>, TransportError> {
        let names = match self.ctx.list_readers_owned() {
            Ok(names) => names,
            Err(pcsc::Error::NoReadersAvailable) => return Ok(Vec::new()),
            Err(e) => return Err(map_error(e)),
        };
        let mut states: Vec<pcsc::ReaderState> = names
            .iter()
            .map(|n| pcsc::ReaderState::new(n.clone(), pcsc::State::UNAWARE))
            .collect();
        self.ctx
            .get_status_change(Duration::ZERO, &mut states)
            .map_err(map_error)?;
        Ok(states
            .iter()
            .map(|s| {
                let present = s.event_state().contains(pcsc::State::PRESENT);
                ReaderInfo {
                    name: s.name().to_string_lossy().into_owned(),
                    card_present: present,
                    atr: present.then(|| hex::encode_upper(s.atr())),
                    in_use_exclusively: s.event_state().contains(pcsc::State::EXCLUSIVE),
                }
            })
            .collect())
    }

    /// The first reader with a card in it, if any.
    pub fn first_reader_with_card(&self) -> Result<Option<String>, TransportError> {
        Ok(self
            .readers()?
            .into_iter()
            .find(|r| r.card_present)
            .map(|r| r.name))
    }

    /// Waits until the card in `reader` is inserted or removed, or `timeout` passes.
    pub fn wait_for_change(
        &self,
        reader: &str,
        timeout: Duration,
    ) -> Result<CardEvent, TransportError> {
        let name = reader_cstring(reader)?;
        let mut states = [pcsc::ReaderState::new(name, pcsc::State::UNAWARE)];
        self.ctx
            .get_status_change(Duration::ZERO, &mut states)
            .map_err(map_error)?;
        if states[0].event_state().contains(pcsc::State::UNKNOWN) {
            return Err(TransportError::ReaderNotFound(reader.to_owned()));
        }
        let was_present = states[0].event_state().contains(pcsc::State::PRESENT);
        states[0].sync_current_state();
        loop {
            match self.ctx.get_status_change(timeout, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout) => return Ok(CardEvent::Timeout),
                Err(e) => return Err(map_error(e)),
            }
            let now_present = states[0].event_state().contains(pcsc::State::PRESENT);
            if now_present != was_present {
                return Ok(if now_present {
                    CardEvent::Inserted
                } else {
                    CardEvent::Removed
                });
            }
            states[0].sync_current_state();
        }
    }

    /// Waits until `reader` holds a card, up to `timeout`.
    pub fn wait_for_card(&self, reader: &str, timeout: Duration) -> Result<(), TransportError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let readers = self.readers()?;
            let Some(info) = readers.iter().find(|r| r.name == reader) else {
                return Err(TransportError::ReaderNotFound(reader.to_owned()));
            };
            if info.card_present {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(TransportError::Timeout(timeout));
            }
            if self.wait_for_change(reader, left)? == CardEvent::Timeout {
                return Err(TransportError::Timeout(timeout));
            }
        }
    }

    /// Connects to the card in `reader`, shared with other applications.
    pub fn connect(&self, reader: &str) -> Result<PcscCard, TransportError> {
        let name = reader_cstring(reader)?;
        let card = self
            .ctx
            .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
            .map_err(map_error)?;
        Ok(PcscCard {
            card: Some(card),
            reader: reader.to_owned(),
            extended_length: false,
        })
    }
}

fn reader_cstring(reader: &str) -> Result<CString, TransportError> {
    CString::new(reader).map_err(|_| TransportError::ReaderNotFound(reader.to_owned()))
}

/// A connected card.
pub struct PcscCard {
    /// `None` only after [`PcscCard::disconnect`].
    card: Option<pcsc::Card>,
    reader: String,
    extended_length: bool,
}

impl PcscCard {
    /// The reader this card sits in.
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// Declares that the card takes extended-length APDUs.
    pub fn set_extended_length(&mut self, extended: bool) {
        self.extended_length = extended;
    }

    fn card(&mut self) -> Result<&mut pcsc::Card, TransportError> {
        self.card.as_mut().ok_or(TransportError::CardRemoved)
    }

    /// The card's answer-to-reset.
    pub fn atr(&mut self) -> Result<Vec<u8>, TransportError> {
        let card = self.card()?;
        // SCardStatus, not SCardGetAttrib: some reader drivers (vpcd) lack the ATR attribute.
        Ok(card.status2_owned().map_err(map_error)?.atr().to_vec())
    }

    /// Runs `f` inside an exclusive PC/SC transaction: no other application's APDU comes between
    /// ours. The transaction ends when `f` returns.
    pub fn transaction<R, E: From<TransportError>>(
        &mut self,
        f: impl FnOnce(&mut PcscTransaction<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let extended_length = self.extended_length;
        let card = self.card()?;
        let tx = card.transaction().map_err(map_error)?;
        let mut tx = PcscTransaction {
            tx,
            extended_length,
        };
        let result = f(&mut tx);
        // Ending with LeaveCard keeps the security state for the next transaction of this
        // connection; errors here mean the card is gone, which `result` already reflects.
        let _ = tx.tx.end(pcsc::Disposition::LeaveCard);
        result
    }

    /// Disconnects and resets the card, so that a PIN verified in this session is forgotten.
    pub fn disconnect(mut self) -> Result<(), TransportError> {
        match self.card.take() {
            Some(card) => card
                .disconnect(pcsc::Disposition::ResetCard)
                .map_err(|(_, e)| map_error(e)),
            None => Ok(()),
        }
    }
}

impl Drop for PcscCard {
    fn drop(&mut self) {
        if let Some(card) = self.card.take() {
            // Reset on the way out: a verified PIN must not outlive the agent's session.
            let _ = card.disconnect(pcsc::Disposition::ResetCard);
        }
    }
}

impl CardTransport for PcscCard {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        transmit(self.card()?, apdu)
    }

    fn supports_extended_length(&self) -> bool {
        self.extended_length
    }
}

/// A card inside an exclusive transaction.
pub struct PcscTransaction<'card> {
    tx: pcsc::Transaction<'card>,
    extended_length: bool,
}

impl CardTransport for PcscTransaction<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        transmit(&self.tx, apdu)
    }

    fn supports_extended_length(&self) -> bool {
        self.extended_length
    }
}

fn transmit(card: &pcsc::Card, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    let response = card.transmit(apdu, &mut buffer).map_err(map_error)?;
    // A response shorter than SW1 SW2 is an error; the APDU layer reports it (ResponseTooShort).
    let out = response.to_vec();
    zeroize::Zeroize::zeroize(&mut buffer);
    Ok(out)
}

fn map_error(e: pcsc::Error) -> TransportError {
    match e {
        pcsc::Error::NoSmartcard => TransportError::NoCard,
        pcsc::Error::RemovedCard => TransportError::CardRemoved,
        pcsc::Error::ResetCard => TransportError::CardReset,
        pcsc::Error::NoService | pcsc::Error::ServiceStopped => TransportError::NoService,
        pcsc::Error::SharingViolation => TransportError::Busy,
        pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable => {
            TransportError::ReaderNotFound(String::new())
        }
        pcsc::Error::Timeout => TransportError::Timeout(Duration::ZERO),
        other => TransportError::Pcsc(other.to_string()),
    }
}
