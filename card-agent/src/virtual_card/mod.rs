//! Software cards for tests and the demo, reachable two ways: in-process through
//! [`CardTransport`] ([`InProcess`]), or through the real PC/SC stack as a vsmartcard vpcd card
//! ([`vpcd`]).

#[cfg(feature = "pcsc")]
pub mod inserted;
pub mod jpki;
pub mod piv;
pub mod vpcd;

use crate::transport::{CardTransport, TransportError};
use std::sync::{Arc, Mutex, MutexGuard};

/// A card that answers APDUs.
pub trait VirtualCard: Send {
    /// Answer-to-reset.
    fn atr(&self) -> Vec<u8>;
    /// Processes one command APDU; the answer ends with a status word. An empty answer means the
    /// chip died: served over vpcd, the card then leaves the reader.
    fn process(&mut self, apdu: &[u8]) -> Vec<u8>;
    /// Power off or reset: the security state (verified PINs, selections) is forgotten.
    fn reset(&mut self);
}

/// A virtual card used in-process, shared so that tests can look at its state.
pub struct InProcess<C> {
    card: Arc<Mutex<C>>,
    extended_length: bool,
}

impl<C> Clone for InProcess<C> {
    fn clone(&self) -> Self {
        InProcess {
            card: Arc::clone(&self.card),
            extended_length: self.extended_length,
        }
    }
}

impl<C: VirtualCard> InProcess<C> {
    /// Wraps a card.
    pub fn new(card: C) -> Self {
        InProcess {
            card: Arc::new(Mutex::new(card)),
            extended_length: false,
        }
    }

    /// Lets the APDU layer use extended-length APDUs with this card.
    #[must_use]
    pub fn with_extended_length(mut self) -> Self {
        self.extended_length = true;
        self
    }

    /// The card, for inspection.
    pub fn card(&self) -> MutexGuard<'_, C> {
        lock(&self.card)
    }
}

/// Locks a card, recovering it if a test thread panicked while holding it.
pub(crate) fn lock<C>(card: &Mutex<C>) -> MutexGuard<'_, C> {
    card.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<C: VirtualCard> CardTransport for InProcess<C> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(self.card().process(apdu))
    }

    fn supports_extended_length(&self) -> bool {
        self.extended_length
    }
}
