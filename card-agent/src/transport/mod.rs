//! The one seam between card applications and readers: a [`CardTransport`] moves raw APDU bytes.
//!
//! PC/SC readers ([`pcsc`](crate::transport::pcsc)) and in-process virtual cards
//! ([`crate::virtual_card::InProcess`]) implement it, so the JPKI and PHR card code runs unchanged
//! on both.

#[cfg(feature = "pcsc")]
pub mod pcsc;

use std::time::Duration;

/// A channel to one card that sends a C-APDU and returns the raw R-APDU (data ‖ SW1 SW2).
pub trait CardTransport {
    /// Sends one command APDU and waits for its response.
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError>;

    /// Whether the card takes extended-length APDUs. Short APDUs (with chaining) are used otherwise.
    fn supports_extended_length(&self) -> bool {
        false
    }
}

impl<T: CardTransport + ?Sized> CardTransport for &mut T {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(apdu)
    }

    fn supports_extended_length(&self) -> bool {
        (**self).supports_extended_length()
    }
}

impl<T: CardTransport + ?Sized> CardTransport for Box<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(apdu)
    }

    fn supports_extended_length(&self) -> bool {
        (**self).supports_extended_length()
    }
}

/// Why an APDU did not reach the card or no answer came back.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The reader is empty.
    #[error("no card in the reader")]
    NoCard,
    /// The card was pulled out (or its virtual card process ended) during the session.
    #[error("the card was removed")]
    CardRemoved,
    /// Another application reset the card; its security state (verified PIN) is gone.
    #[error("the card was reset by another application")]
    CardReset,
    /// No reader of that name is attached.
    #[error("reader not found: {0}")]
    ReaderNotFound(String),
    /// No PC/SC service (pcscd / WinSCard) is running.
    #[error("no PC/SC service is running (start pcscd)")]
    NoService,
    /// Another application holds the card exclusively.
    #[error("the card is in use by another application")]
    Busy,
    /// The card did not answer in time.
    #[error("the card did not answer within {0:?}")]
    Timeout(Duration),
    /// Any other PC/SC failure, with its message.
    #[error("PC/SC: {0}")]
    Pcsc(String),
    /// Socket or file I/O failure (virtual cards).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
