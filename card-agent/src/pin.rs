//! PINs: format rules checked before any VERIFY, zeroized on drop, never printable.
//!
//! A [`Pin<F>`] can only be built through its format `F` (e.g. [`JpkiAuthPinFormat`]: 4 ASCII
//! digits, JPKI 利用者証明用 PIN), so a malformed PIN never reaches a card and cannot cost a try.
//! There is no `Display`, `Debug` shows nothing of the value, and the bytes are wiped on drop.

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
