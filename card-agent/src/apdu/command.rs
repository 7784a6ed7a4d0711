//! Command APDU encoding, ISO/IEC 7816-4:2020 §5.1 (cases 1–4, short and extended length).

use std::fmt;

/// Largest data field of a short command APDU (Lc is one byte).
pub const SHORT_MAX_LC: usize = 255;
/// Largest Le of a short APDU (`00` encodes 256).
pub const SHORT_MAX_LE: usize = 256;
/// Largest data field of an extended command APDU.
pub const EXTENDED_MAX_LC: usize = 65_535;
/// Largest Le of an extended APDU (`00 00` encodes 65 536).
pub const EXTENDED_MAX_LE: usize = 65_536;

/// CLA bit that marks a command as "not the last of a chain" (ISO 7816-4 §5.4.1).
pub const CLA_CHAINING: u8 = 0x10;

/// Instruction bytes this crate sends.
pub mod ins {
    /// SELECT.
    pub const SELECT: u8 = 0xA4;
    /// READ BINARY.
    pub const READ_BINARY: u8 = 0xB0;
    /// VERIFY (PIN presentation or, without data, retry counter query).
    pub const VERIFY: u8 = 0x20;
    /// CHANGE REFERENCE DATA.
    pub const CHANGE_REFERENCE_DATA: u8 = 0x24;
    /// GET RESPONSE.
    pub const GET_RESPONSE: u8 = 0xC0;
    /// PERFORM SECURITY OPERATION / JPKI COMPUTE DIGITAL SIGNATURE (with CLA 80).
    pub const PSO: u8 = 0x2A;
    /// GET DATA (PIV).
    pub const GET_DATA: u8 = 0xCB;
    /// PUT DATA (PIV).
    pub const PUT_DATA: u8 = 0xDB;
    /// GENERAL AUTHENTICATE (PIV).
    pub const GENERAL_AUTHENTICATE: u8 = 0x87;
    /// GENERATE ASYMMETRIC KEY PAIR (PIV).
    pub const GENERATE_ASYMMETRIC_KEY_PAIR: u8 = 0x47;
}

/// How the length fields are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthMode {
    /// One-byte Lc and Le.
    Short,
    /// Three-byte Lc (`00 hi lo`) and two- or three-byte Le.
    Extended,
}

/// Why a command cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The data field is longer than the length mode allows (chain or use extended length).
    #[error("data field of {len} bytes exceeds the {max}-byte limit of {mode:?} APDUs")]
    DataTooLong {
        /// Data length.
        len: usize,
        /// Limit for the mode.
        max: usize,
        /// Length mode asked for.
        mode: LengthMode,
    },
    /// Le is 0 or larger than the length mode allows.
    #[error("Le {le} is outside 1..={max} for {mode:?} APDUs")]
    BadLe {
        /// Le asked for.
        le: usize,
        /// Limit for the mode.
        max: usize,
        /// Length mode asked for.
        mode: LengthMode,
    },
}

/// A command APDU: header, optional data field, optional expected response length.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    data: Vec<u8>,
    le: Option<usize>,
    sensitive: bool,
}

impl Command {
    /// A case-1 command (header only).
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Command {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
            sensitive: false,
        }
    }

    /// Sets the data field.
    #[must_use]
    pub fn with_data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }

    /// Sets the expected response length (Le), 1..=65 536.
    #[must_use]
    pub fn with_le(mut self, le: usize) -> Self {
        self.le = Some(le);
        self
    }

    /// Marks the data field as secret (a PIN): it is never logged and is zeroized on drop.
    #[must_use]
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// The data field.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The expected response length, if any.
    pub fn le(&self) -> Option<usize> {
        self.le
    }

    /// Whether the data field is secret.
    pub fn is_sensitive(&self) -> bool {
        self.sensitive
    }

    /// The same command with another Le (for a `6Cxx` re-send).
    pub(crate) fn resend_with_le(&self, le: usize) -> Self {
        let mut again = self.clone();
        again.le = Some(le);
        again
    }

    /// Whether this command fits a short APDU.
    pub fn fits_short(&self) -> bool {
        self.data.len() <= SHORT_MAX_LC && self.le.is_none_or(|le| le <= SHORT_MAX_LE)
    }

    /// Encodes the command in the given length mode.
    pub fn to_bytes(&self, mode: LengthMode) -> Result<Vec<u8>, EncodeError> {
        let (max_lc, max_le) = match mode {
            LengthMode::Short => (SHORT_MAX_LC, SHORT_MAX_LE),
            LengthMode::Extended => (EXTENDED_MAX_LC, EXTENDED_MAX_LE),
        };
        if self.data.len() > max_lc {
            return Err(EncodeError::DataTooLong {
                len: self.data.len(),
                max: max_lc,
                mode,
            });
        }
        if let Some(le) = self.le
            && (le == 0 || le > max_le)
        {
            return Err(EncodeError::BadLe {
                le,
                max: max_le,
                mode,
            });
        }
        let mut out = Vec::with_capacity(4 + 3 + self.data.len() + 3);
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        let lc = self.data.len();
        match mode {
            LengthMode::Short => {
                if lc > 0 {
                    // Invariant: lc <= 255 was checked above.
                    out.push(lc as u8);
                    out.extend_from_slice(&self.data);
                }
                if let Some(le) = self.le {
                    // 256 encodes as 00; the check above bounds le to 1..=256.
                    out.push((le % 256) as u8);
                }
            }
            LengthMode::Extended => {
                if lc > 0 {
                    out.push(0x00);
                    out.extend_from_slice(&(lc as u16).to_be_bytes());
                    out.extend_from_slice(&self.data);
                }
                if let Some(le) = self.le {
                    // 65 536 encodes as 00 00; the check above bounds le to 1..=65 536.
                    let le_bytes = ((le % 65_536) as u16).to_be_bytes();
                    if lc == 0 {
                        out.push(0x00);
                    }
                    out.extend_from_slice(&le_bytes);
                }
            }
        }
        Ok(out)
    }
}

/// Why bytes received by a card are not a well-formed command APDU (ISO 7816-3 §12.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than the four header bytes.
    #[error("command APDU of {0} bytes has no complete header")]
    NoHeader(usize),
    /// The length fields do not match the number of bytes.
    #[error("command APDU length fields do not match its {0} bytes")]
    LengthMismatch(usize),
}

impl Command {
    /// Decodes a command APDU as a card receives it (cases 1–4, short and extended).
    pub fn parse(raw: &[u8]) -> Result<Self, ParseError> {
        let [cla, ins, p1, p2, body @ ..] = raw else {
            return Err(ParseError::NoHeader(raw.len()));
        };
        let mut command = Command::new(*cla, *ins, *p1, *p2);
        let mismatch = ParseError::LengthMismatch(raw.len());
        match body {
            [] => {}
            [le] => command.le = Some(if *le == 0 { SHORT_MAX_LE } else { *le as usize }),
            [0x00, hi, lo] => {
                let le = u16::from_be_bytes([*hi, *lo]) as usize;
                command.le = Some(if le == 0 { EXTENDED_MAX_LE } else { le });
            }
            [0x00, hi, lo, rest @ ..] => {
                let lc = u16::from_be_bytes([*hi, *lo]) as usize;
                if lc == 0 || rest.len() < lc {
                    return Err(mismatch);
                }
                command.data = rest[..lc].to_vec();
                match &rest[lc..] {
                    [] => {}
                    [hi, lo] => {
                        let le = u16::from_be_bytes([*hi, *lo]) as usize;
                        command.le = Some(if le == 0 { EXTENDED_MAX_LE } else { le });
                    }
                    _ => return Err(mismatch),
                }
            }
            [lc, rest @ ..] => {
                let lc = *lc as usize;
                if lc == 0 || rest.len() < lc {
                    return Err(mismatch);
                }
                command.data = rest[..lc].to_vec();
                match &rest[lc..] {
                    [] => {}
                    [le] => command.le = Some(if *le == 0 { SHORT_MAX_LE } else { *le as usize }),
                    _ => return Err(mismatch),
                }
            }
        }
        Ok(command)
    }
}

impl Drop for Command {
    fn drop(&mut self) {
        if self.sensitive {
            zeroize::Zeroize::zeroize(&mut self.data);
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02X} {:02X} {:02X} {:02X}",
            self.cla, self.ins, self.p1, self.p2
        )?;
        if !self.data.is_empty() {
            if self.sensitive {
                write!(f, " Lc={} <redacted>", self.data.len())?;
            } else {
                write!(
                    f,
                    " Lc={} {}",
                    self.data.len(),
                    hex::encode_upper(&self.data)
                )?;
            }
        }
        if let Some(le) = self.le {
            write!(f, " Le={le}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case1_is_header_only() {
        let c = Command::new(0x00, 0x20, 0x00, 0x80);
        assert_eq!(
            c.to_bytes(LengthMode::Short).unwrap(),
            [0x00, 0x20, 0x00, 0x80]
        );
        assert_eq!(
            c.to_bytes(LengthMode::Extended).unwrap(),
            [0x00, 0x20, 0x00, 0x80]
        );
    }

    #[test]
    fn case2_short_encodes_256_as_zero() {
        let c = Command::new(0x00, 0xB0, 0x00, 0x00).with_le(256);
        assert_eq!(
            c.to_bytes(LengthMode::Short).unwrap(),
            [0, 0xB0, 0, 0, 0x00]
        );
        let c = Command::new(0x00, 0xB0, 0x00, 0x00).with_le(4);
        assert_eq!(
            c.to_bytes(LengthMode::Short).unwrap(),
            [0, 0xB0, 0, 0, 0x04]
        );
    }

    #[test]
    fn case3_and_case4_short() {
        let c = Command::new(0x00, 0xA4, 0x02, 0x0C).with_data([0x00, 0x0A]);
        assert_eq!(
            c.to_bytes(LengthMode::Short).unwrap(),
            [0, 0xA4, 2, 0x0C, 2, 0, 0x0A]
        );
        let c = Command::new(0x80, 0x2A, 0x00, 0x80)
            .with_data([1, 2, 3])
            .with_le(256);
        assert_eq!(
            c.to_bytes(LengthMode::Short).unwrap(),
            [0x80, 0x2A, 0, 0x80, 3, 1, 2, 3, 0]
        );
    }

    #[test]
    fn extended_lengths() {
        let c = Command::new(0x00, 0xB0, 0x00, 0x00).with_le(65_536);
        assert_eq!(
            c.to_bytes(LengthMode::Extended).unwrap(),
            [0, 0xB0, 0, 0, 0, 0, 0]
        );
        let c = Command::new(0x00, 0xB0, 0x00, 0x00).with_le(0x1234);
        assert_eq!(
            c.to_bytes(LengthMode::Extended).unwrap(),
            [0, 0xB0, 0, 0, 0, 0x12, 0x34]
        );
        let data = vec![0xAB; 300];
        let c = Command::new(0x00, 0xDB, 0x3F, 0xFF)
            .with_data(data.clone())
            .with_le(256);
        let bytes = c.to_bytes(LengthMode::Extended).unwrap();
        assert_eq!(&bytes[..7], &[0, 0xDB, 0x3F, 0xFF, 0x00, 0x01, 0x2C]);
        assert_eq!(&bytes[7..307], data.as_slice());
        assert_eq!(&bytes[307..], &[0x01, 0x00]);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let c = Command::new(0, 0xDB, 0, 0).with_data(vec![0; 256]);
        assert!(matches!(
            c.to_bytes(LengthMode::Short),
            Err(EncodeError::DataTooLong { .. })
        ));
        assert!(!c.fits_short());
        let c = Command::new(0, 0xB0, 0, 0).with_le(257);
        assert!(matches!(
            c.to_bytes(LengthMode::Short),
            Err(EncodeError::BadLe { .. })
        ));
        let c = Command::new(0, 0xB0, 0, 0).with_le(0);
        assert!(matches!(
            c.to_bytes(LengthMode::Extended),
            Err(EncodeError::BadLe { .. })
        ));
    }

    #[test]
    fn parse_inverts_encoding() {
        let cases = [
            Command::new(0x00, 0x20, 0x00, 0x80),
            Command::new(0x00, 0xB0, 0x01, 0x02).with_le(256),
            Command::new(0x00, 0xA4, 0x04, 0x0C).with_data([1, 2, 3]),
            Command::new(0x80, 0x2A, 0x00, 0x80)
                .with_data([7; 51])
                .with_le(256),
        ];
        for c in cases {
            let short = c.to_bytes(LengthMode::Short).unwrap();
            assert_eq!(Command::parse(&short).unwrap(), c);
            let extended = c.to_bytes(LengthMode::Extended).unwrap();
            assert_eq!(Command::parse(&extended).unwrap(), c);
        }
        let big = Command::new(0, 0xDB, 0x3F, 0xFF)
            .with_data(vec![5; 1000])
            .with_le(65_536);
        assert_eq!(
            Command::parse(&big.to_bytes(LengthMode::Extended).unwrap()).unwrap(),
            big
        );
    }

    #[test]
    fn parse_refuses_inconsistent_lengths() {
        assert_eq!(Command::parse(&[0, 0xA4, 4]), Err(ParseError::NoHeader(3)));
        assert!(Command::parse(&[0, 0xA4, 4, 0x0C, 5, 1, 2]).is_err());
        assert!(Command::parse(&[0, 0xA4, 4, 0x0C, 1, 1, 2, 3]).is_err());
        assert!(Command::parse(&[0, 0xA4, 4, 0x0C, 0, 0, 0, 1]).is_err());
        assert!(Command::parse(&[0, 0xA4, 4, 0x0C, 0, 0]).is_err());
    }

    #[test]
    fn sensitive_data_is_not_in_debug_output() {
        let c = Command::new(0, 0x20, 0, 0x80)
            .with_data(*b"1234")
            .sensitive();
        let shown = format!("{c:?}");
        assert!(!shown.contains("31323334"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
