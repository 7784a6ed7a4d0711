//! Response APDUs and status words, ISO/IEC 7816-4:2020 §5.1.3 and §5.6 (Table 6).

use std::fmt;

/// A response APDU: data field and the trailing status word.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// Response data (may be empty).
    pub data: Vec<u8>,
    /// SW1-SW2.
    pub sw: StatusWord,
}

/// A response shorter than the two status bytes.
///
/// PC/SC reports success with a 0-byte response when a (virtual) card dies mid-command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("response of {len} byte(s) has no status word (card removed or reset mid-command?)")]
pub struct ResponseTooShort {
    /// Bytes received.
    pub len: usize,
}

impl Response {
    /// Splits raw R-APDU bytes into data and status word.
    pub fn parse(raw: &[u8]) -> Result<Self, ResponseTooShort> {
        match raw {
            [data @ .., sw1, sw2] => Ok(Response {
                data: data.to_vec(),
                sw: StatusWord::new(*sw1, *sw2),
            }),
            _ => Err(ResponseTooShort { len: raw.len() }),
        }
    }

    /// Whether the status word is `9000`.
    pub fn is_ok(&self) -> bool {
        self.sw == StatusWord::OK
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} data bytes)", self.sw, self.data.len())
    }
}

/// SW1-SW2.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord(pub u16);

impl StatusWord {
    /// `9000`: normal processing.
    pub const OK: StatusWord = StatusWord(0x9000);
    /// `6282`: end of file reached before Le bytes.
    pub const END_OF_FILE: StatusWord = StatusWord(0x6282);
    /// `6700`: wrong length.
    pub const WRONG_LENGTH: StatusWord = StatusWord(0x6700);
    /// `6881`: logical channel not supported.
    pub const CHANNEL_NOT_SUPPORTED: StatusWord = StatusWord(0x6881);
    /// `6882`: secure messaging not supported.
    pub const SM_NOT_SUPPORTED: StatusWord = StatusWord(0x6882);
    /// `6884`: command chaining not supported.
    pub const CHAINING_NOT_SUPPORTED: StatusWord = StatusWord(0x6884);
    /// `6981`: command incompatible with file structure.
    pub const INCOMPATIBLE_FILE: StatusWord = StatusWord(0x6981);
    /// `6982`: security status not satisfied.
    pub const SECURITY_NOT_SATISFIED: StatusWord = StatusWord(0x6982);
    /// `6983`: authentication method blocked.
    pub const AUTH_BLOCKED: StatusWord = StatusWord(0x6983);
    /// `6984`: reference data not usable (JPKI: PIN blocked after the exhausting attempt).
    pub const REFERENCE_DATA_UNUSABLE: StatusWord = StatusWord(0x6984);
    /// `6985`: conditions of use not satisfied.
    pub const CONDITIONS_NOT_SATISFIED: StatusWord = StatusWord(0x6985);
    /// `6986`: command not allowed (no current EF).
    pub const NO_CURRENT_EF: StatusWord = StatusWord(0x6986);
    /// `6A80`: incorrect data field.
    pub const WRONG_DATA: StatusWord = StatusWord(0x6A80);
    /// `6A81`: function not supported.
    pub const FUNCTION_NOT_SUPPORTED: StatusWord = StatusWord(0x6A81);
    /// `6A82`: file or application not found.
    pub const FILE_NOT_FOUND: StatusWord = StatusWord(0x6A82);
    /// `6A84`: not enough memory.
    pub const NOT_ENOUGH_MEMORY: StatusWord = StatusWord(0x6A84);
    /// `6A86`: incorrect P1-P2.
    pub const WRONG_P1P2: StatusWord = StatusWord(0x6A86);
    /// `6A88`: referenced data not found.
    pub const DATA_NOT_FOUND: StatusWord = StatusWord(0x6A88);
    /// `6B00`: wrong parameters (offset outside the EF).
    pub const WRONG_PARAMETERS: StatusWord = StatusWord(0x6B00);
    /// `6D00`: instruction not supported.
    pub const INS_NOT_SUPPORTED: StatusWord = StatusWord(0x6D00);
    /// `6E00`: class not supported.
    pub const CLA_NOT_SUPPORTED: StatusWord = StatusWord(0x6E00);
    /// `6F00`: no precise diagnosis.
    pub const UNKNOWN_ERROR: StatusWord = StatusWord(0x6F00);

    /// From SW1 and SW2.
    pub const fn new(sw1: u8, sw2: u8) -> Self {
        StatusWord(((sw1 as u16) << 8) | sw2 as u16)
    }

    /// SW1.
    pub const fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// SW2.
    pub const fn sw2(self) -> u8 {
        (self.0 & 0xFF) as u8
    }

    /// What the status word means, with its parameter decoded.
    pub fn meaning(self) -> Status {
        match (self.sw1(), self.sw2()) {
            (0x90, 0x00) => Status::Ok,
            (0x61, n) => Status::MoreData(if n == 0 { 256 } else { n as usize }),
            (0x6C, n) => Status::WrongLe(if n == 0 { 256 } else { n as usize }),
            (0x63, c) if c & 0xF0 == 0xC0 => Status::RetriesLeft(c & 0x0F),
            (0x63, 0x00) => Status::VerificationFailed,
            (0x62 | 0x63, _) => Status::Warning,
            (0x69, 0x82) => Status::SecurityNotSatisfied,
            (0x69, 0x83) | (0x69, 0x84) => Status::Blocked,
            (0x6A, 0x82) => Status::NotFound,
            (0x6D, 0x00) => Status::InsNotSupported,
            (0x6E, 0x00) => Status::ClaNotSupported,
            (0x67, 0x00) => Status::WrongLength,
            (0x6A, 0x86) | (0x6B, 0x00) => Status::WrongParameters,
            (0x64..=0x6F, _) => Status::Error,
            _ => Status::Invalid,
        }
    }
}

/// The decoded meaning of a status word: one variant per outcome callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `9000`.
    Ok,
    /// `61xx`: this many more bytes wait for GET RESPONSE (`6100` = 256).
    MoreData(usize),
    /// `6Cxx`: wrong Le; re-send with exactly this Le (`6C00` = 256).
    WrongLe(usize),
    /// `63Cx`: verification failed or queried; x tries left.
    RetriesLeft(u8),
    /// `6300`: verification failed, no counter given.
    VerificationFailed,
    /// Any other `62xx` / `63xx` warning.
    Warning,
    /// `6982`: a PIN must be verified first.
    SecurityNotSatisfied,
    /// `6983` / `6984`: the PIN (or key) is blocked.
    Blocked,
    /// `6A82`: file or application not found.
    NotFound,
    /// `6D00`: instruction not supported.
    InsNotSupported,
    /// `6E00`: class not supported.
    ClaNotSupported,
    /// `6700`: wrong length.
    WrongLength,
    /// `6A86` / `6B00`: wrong P1-P2 or offset.
    WrongParameters,
    /// Any other `64xx`–`6Fxx` error.
    Error,
    /// Not an ISO 7816-4 status word at all (garbage).
    Invalid,
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SW {:04X}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_responses_are_errors() {
        assert_eq!(Response::parse(&[]), Err(ResponseTooShort { len: 0 }));
        assert_eq!(Response::parse(&[0x90]), Err(ResponseTooShort { len: 1 }));
    }

    #[test]
    fn splits_data_and_status() {
        let r = Response::parse(&[1, 2, 3, 0x90, 0x00]).unwrap();
        assert_eq!(r.data, [1, 2, 3]);
        assert!(r.is_ok());
        let r = Response::parse(&[0x63, 0xC2]).unwrap();
        assert!(r.data.is_empty());
        assert_eq!(r.sw.meaning(), Status::RetriesLeft(2));
    }

    #[test]
    fn meanings() {
        let cases = [
            (0x9000, Status::Ok),
            (0x6110, Status::MoreData(16)),
            (0x6100, Status::MoreData(256)),
            (0x6C05, Status::WrongLe(5)),
            (0x63C0, Status::RetriesLeft(0)),
            (0x63C3, Status::RetriesLeft(3)),
            (0x6300, Status::VerificationFailed),
            (0x6282, Status::Warning),
            (0x6982, Status::SecurityNotSatisfied),
            (0x6983, Status::Blocked),
            (0x6984, Status::Blocked),
            (0x6A82, Status::NotFound),
            (0x6D00, Status::InsNotSupported),
            (0x6E00, Status::ClaNotSupported),
            (0x6700, Status::WrongLength),
            (0x6B00, Status::WrongParameters),
            (0x6A80, Status::Error),
            (0x1234, Status::Invalid),
            (0xFFFF, Status::Invalid),
        ];
        for (sw, want) in cases {
            assert_eq!(StatusWord(sw).meaning(), want, "{sw:04X}");
        }
    }
}
