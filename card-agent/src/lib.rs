//! card-agent: reads My Number (JPKI) and PHR cards over PC/SC and signs challenges for the
//! person holding the card. PINs never leave this machine.
//!
//! Layers, bottom up:
//! - [`apdu`]: ISO 7816-4 framing, no I/O; [`apdu::exchange`] is the one place for GET RESPONSE,
//!   `6Cxx` re-sends and command chaining.
//! - [`transport`]: the [`transport::CardTransport`] trait; PC/SC behind the `pcsc` feature.
//! - [`jpki`]: the JPKI application of the My Number card, typestated on PIN verification.
//! - [`pin`]: PIN formats, zeroization, the last-try rule.
//! - [`agent`]: identify a card, show it, sign a challenge (what the CLI and the localhost API call).
//! - [`local_api`]: the agent's loopback HTTP API for the kiosk page (Host/Origin checks).
//! - [`virtual_card`] and [`testca`]: software cards and test CAs, so everything runs without
//!   hardware, in-process or through pcscd + vpcd.

pub mod agent;
pub mod apdu;
pub mod certinfo;
#[doc(hidden)]
pub mod fuzzing;
pub mod jpki;
pub mod local_api;
pub mod phr;
pub mod pin;
pub mod piv;
pub mod testca;
pub mod transport;
pub mod virtual_card;
