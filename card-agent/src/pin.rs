//! PINs: format rules checked before any VERIFY, zeroized on drop, never printable.
//!
//! A [`Pin<F>`] can only be built through its format `F` (e.g. [`JpkiAuthPinFormat`]: 4 ASCII
//! digits, JPKI 利用者証明用 PIN), so a malformed PIN never reaches a card and cannot cost a try.
//! There is no `Display`, `Debug` shows nothing of the value, and the bytes are wiped on drop.

use crate::apdu::{Command, ExchangeError, Status, StatusWord, exchange};
use crate::transport::CardTransport;
use std::fmt;
use std::io::BufRead;
use std::marker::PhantomData;
use zeroize::{Zeroize, Zeroizing};

/// The rules a PIN of one kind must meet.
pub trait PinFormat {
    /// Human name of the PIN, for errors and prompts.
    const NAME: &'static str;
    /// Checks the PIN's bytes; the error never contains them.
    fn check(pin: &[u8]) -> Result<(), PinFormatError>;
}

/// Why a PIN was refused before reaching the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinFormatError {
    /// Too short or too long.
    #[error("the {name} must be {min}–{max} characters long, got {got}")]
    Length {
        /// Which PIN.
        name: &'static str,
        /// Shortest allowed.
        min: usize,
        /// Longest allowed.
        max: usize,
        /// Length given.
        got: usize,
    },
    /// A character outside the allowed set (the character is not reported).
    #[error("the {name} may contain only {allowed}")]
    Charset {
        /// Which PIN.
        name: &'static str,
        /// The allowed characters, described.
        allowed: &'static str,
    },
    /// No PIN was entered (end of input).
    #[error("no PIN was entered")]
    Empty,
}

/// JPKI 利用者証明用 (user authentication) PIN: exactly 4 ASCII digits, 3 tries.
#[derive(Debug, Clone, Copy)]
pub enum JpkiAuthPinFormat {}

impl PinFormat for JpkiAuthPinFormat {
    const NAME: &'static str = "利用者証明用 PIN (4 digits)";
    fn check(pin: &[u8]) -> Result<(), PinFormatError> {
        if pin.len() != 4 {
            return Err(PinFormatError::Length {
                name: Self::NAME,
                min: 4,
                max: 4,
                got: pin.len(),
            });
        }
        if !pin.iter().all(u8::is_ascii_digit) {
            return Err(PinFormatError::Charset {
                name: Self::NAME,
                allowed: "the digits 0–9",
            });
        }
        Ok(())
    }
}

/// A PIN that met its format's rules.
pub struct Pin<F: PinFormat> {
    bytes: Zeroizing<Vec<u8>>,
    format: PhantomData<F>,
}

/// The JPKI user-authentication PIN.
pub type JpkiAuthPin = Pin<JpkiAuthPinFormat>;

impl<F: PinFormat> Pin<F> {
    /// Checks and takes a PIN. The caller's copy should itself be zeroized (see [`read_pin_line`]).
    pub fn parse(pin: &str) -> Result<Self, PinFormatError> {
        F::check(pin.as_bytes())?;
        Ok(Pin {
            bytes: Zeroizing::new(pin.as_bytes().to_vec()),
            format: PhantomData,
        })
    }

    /// The PIN bytes, for the VERIFY data field only.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.bytes
    }
}

impl<F: PinFormat> fmt::Debug for Pin<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin(<{}, redacted>)", F::NAME)
    }
}

/// What to do when only one try is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastTry {
    /// Refuse to send the PIN: a wrong entry would block the card.
    Refuse,
    /// The person confirmed, knowing a wrong PIN blocks the card.
    Confirmed,
}

/// A PIN retry counter as the card reports it to a VERIFY without data (ISO 7816-4 §11.5.6):
/// read without spending a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "tries_left")]
pub enum PinState {
    /// `63Cx` with x > 0.
    TriesLeft(u8),
    /// `63C0`, `6983` or `6984`: blocked (JPKI: only the municipal office; PIV: the PUK unblocks).
    Blocked,
    /// `9000`: already verified in this card session.
    Verified,
}

impl PinState {
    /// The state a counter query's status word reports; `None` when it is not a counter answer.
    pub fn from_status(sw: StatusWord) -> Option<Self> {
        match sw.meaning() {
            Status::RetriesLeft(0) | Status::Blocked => Some(PinState::Blocked),
            Status::RetriesLeft(n) => Some(PinState::TriesLeft(n)),
            Status::Ok => Some(PinState::Verified),
            _ => None,
        }
    }
}

/// How one PIN presentation through [`verify_once`] ended.
#[derive(Debug)]
pub enum VerifyOutcome {
    /// `9000`.
    Verified,
    /// `63Cx`, x > 0: wrong PIN.
    WrongPin {
        /// Tries left.
        tries_left: u8,
    },
    /// Blocked before (no VERIFY sent) or by this try (`63C0`, `6983`, `6984`).
    Blocked,
    /// One try left and not confirmed: no VERIFY sent.
    LastTryNeedsConfirmation,
    /// The transport failed during the VERIFY; it was not re-sent, the counter was re-read.
    Interrupted {
        /// The counter after the failure (`None`: it could not be read either).
        tries_left: Option<PinState>,
        /// The failure.
        source: ExchangeError,
    },
    /// Any other status word.
    Status(StatusWord),
}

/// The PIN safety rules, in one place for every card application: given the counter read just
/// before (`before`), sends `verify` at most once — never to a blocked PIN, never at one try left
/// unless `last_try` is [`LastTry::Confirmed`], never again after a failure. After a transport
/// failure it calls `reread` (which must send no PIN) to report the counter.
pub fn verify_once<T: CardTransport + ?Sized>(
    transport: &mut T,
    before: PinState,
    last_try: LastTry,
    verify: &Command,
    reread: impl FnOnce(&mut T) -> Option<PinState>,
) -> VerifyOutcome {
    match before {
        PinState::Blocked | PinState::TriesLeft(0) => return VerifyOutcome::Blocked,
        PinState::TriesLeft(1) if last_try == LastTry::Refuse => {
            return VerifyOutcome::LastTryNeedsConfirmation;
        }
        PinState::TriesLeft(_) | PinState::Verified => {}
    }
    let response = match exchange(transport, verify) {
        Ok(response) => response,
        Err(source) => {
            return VerifyOutcome::Interrupted {
                tries_left: reread(transport),
                source,
            };
        }
    };
    match response.sw.meaning() {
        Status::Ok => VerifyOutcome::Verified,
        Status::RetriesLeft(0) | Status::Blocked => VerifyOutcome::Blocked,
        Status::RetriesLeft(tries_left) => VerifyOutcome::WrongPin { tries_left },
        _ => VerifyOutcome::Status(response.sw),
    }
}

/// Reads one line from `input` as a PIN (for automation: a PIN on standard input).
///
/// The line buffer is zeroized; the trailing newline (LF or CRLF) is removed.
pub fn read_pin_line<F: PinFormat>(input: &mut impl BufRead) -> Result<Pin<F>, PinReadError> {
    let mut line = Zeroizing::new(String::new());
    let n = input.read_line(&mut line).map_err(PinReadError::Io)?;
    if n == 0 {
        return Err(PinReadError::Format(PinFormatError::Empty));
    }
    let trimmed = line.trim_end_matches(['\r', '\n']);
    Pin::parse(trimmed).map_err(PinReadError::Format)
}

/// Asks for a PIN on the controlling terminal without echo.
pub fn prompt_pin<F: PinFormat>(prompt: &str) -> Result<Pin<F>, PinReadError> {
    let mut entered = rpassword::prompt_password(prompt).map_err(PinReadError::Io)?;
    let result = Pin::parse(&entered).map_err(PinReadError::Format);
    entered.zeroize();
    result
}

/// Why no PIN could be read.
#[derive(Debug, thiserror::Error)]
pub enum PinReadError {
    /// The terminal or standard input failed.
    #[error("cannot read the PIN: {0}")]
    Io(std::io::Error),
    /// The PIN entered breaks its format.
    #[error(transparent)]
    Format(PinFormatError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpki_auth_pin_is_four_ascii_digits() {
        assert!(JpkiAuthPin::parse("1234").is_ok());
        assert!(JpkiAuthPin::parse("0000").is_ok());
        for bad in ["123", "12345", "", "12a4", "１２３４", "12 4", "-123"] {
            assert!(JpkiAuthPin::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(matches!(
            JpkiAuthPin::parse("123"),
            Err(PinFormatError::Length { got: 3, .. })
        ));
        assert!(matches!(
            JpkiAuthPin::parse("12a4"),
            Err(PinFormatError::Charset { .. })
        ));
    }

    #[test]
    fn debug_and_errors_never_show_the_pin() {
        let pin = JpkiAuthPin::parse("9876").unwrap();
        assert!(!format!("{pin:?}").contains("9876"));
        let err = JpkiAuthPin::parse("98x6").unwrap_err();
        assert!(!err.to_string().contains("98x6"));
    }

    #[test]
    fn reads_a_pin_line_with_crlf() {
        let mut input = std::io::Cursor::new(b"4321\r\nrest".to_vec());
        let pin: JpkiAuthPin = read_pin_line(&mut input).unwrap();
        assert_eq!(pin.expose(), b"4321");
        let mut empty = std::io::Cursor::new(Vec::new());
        assert!(matches!(
            read_pin_line::<JpkiAuthPinFormat>(&mut empty),
            Err(PinReadError::Format(PinFormatError::Empty))
        ));
    }
}
