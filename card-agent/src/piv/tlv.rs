//! BER-TLV as PIV uses it: NIST SP 800-73-4 Part 1 §3 / Part 2 §3.3 (data objects) and
//! ISO/IEC 7816-4 §5.2 (tags of one to three bytes, lengths in the short form or `81`, `82`, `83`).
//!
//! Parsing never panics and never allocates more than the input: every length is checked against
//! what is left. The same parser reads PIV objects from the card and our PHR profile's consent
//! records, so it is fuzzed (`card-agent/fuzz/fuzz_targets/phr_tlv.rs`).

/// Why bytes are not a TLV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    /// The input ended inside a tag, a length or a value.
    #[error("TLV cut short at byte {at}: {what}")]
    Truncated {
        /// Offset where more bytes were needed.
        at: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A length form this profile does not use (indefinite `80`, or more than 3 length bytes).
    #[error("TLV at byte {at}: unsupported length form {first:#04x}")]
    BadLength {
        /// Offset of the length.
        at: usize,
        /// Its first byte.
        first: u8,
    },
    /// A tag longer than 3 bytes.
    #[error("TLV at byte {at}: tag longer than 3 bytes")]
    TagTooLong {
        /// Offset of the tag.
        at: usize,
    },
    /// A required tag is missing.
    #[error("tag {tag:#x} missing")]
    Missing {
        /// The tag.
        tag: u32,
    },
    /// Bytes left over after the last TLV where none may be.
    #[error("{left} stray byte(s) after the TLV")]
    Trailing {
        /// How many.
        left: usize,
    },
}

/// One TLV: tag (up to 3 bytes, as a number: `5FC105`), and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag bytes as a big-endian number.
    pub tag: u32,
    /// The value.
    pub value: &'a [u8],
}

/// Reads TLVs one after the other from a byte string.
#[derive(Debug, Clone)]
pub struct TlvReader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> TlvReader<'a> {
    /// Starts at the first byte of `input`.
    pub fn new(input: &'a [u8]) -> Self {
        TlvReader { input, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, TlvError> {
        let b = *self
            .input
            .get(self.pos)
            .ok_or(TlvError::Truncated { at: self.pos, what })?;
        self.pos += 1;
        Ok(b)
    }

    /// The next TLV, or `None` at the end of the input.
    pub fn next_tlv(&mut self) -> Result<Option<Tlv<'a>>, TlvError> {
        if self.is_empty() {
            return Ok(None);
        }
        let tag_at = self.pos;
        let first = self.byte("tag")?;
        let mut tag = u32::from(first);
        if first & 0x1F == 0x1F {
            // Subsequent tag bytes: b8 set means another follows (ISO 7816-4 §5.2.2.1).
            loop {
                if self.pos - tag_at >= 3 {
                    return Err(TlvError::TagTooLong { at: tag_at });
                }
                let b = self.byte("tag")?;
                tag = (tag << 8) | u32::from(b);
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let len_at = self.pos;
        let l0 = self.byte("length")?;
        let len = match l0 {
            0x00..=0x7F => usize::from(l0),
            0x81..=0x83 => {
                let mut n = 0usize;
                for _ in 0..(l0 - 0x80) {
                    n = (n << 8) | usize::from(self.byte("length")?);
                }
                n
            }
            _ => {
                return Err(TlvError::BadLength {
                    at: len_at,
                    first: l0,
                });
            }
        };
        let start = self.pos;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= self.input.len())
            .ok_or(TlvError::Truncated {
                at: start,
                what: "value",
            })?;
        self.pos = end;
        Ok(Some(Tlv {
            tag,
            value: &self.input[start..end],
        }))
    }

    /// The next TLV, which must be there and carry `tag`.
    pub fn expect(&mut self, tag: u32) -> Result<&'a [u8], TlvError> {
        let at = self.pos;
        match self.next_tlv()? {
            Some(t) if t.tag == tag => Ok(t.value),
            Some(_) => {
                self.pos = at;
                Err(TlvError::Missing { tag })
            }
            None => Err(TlvError::Missing { tag }),
        }
    }

    /// The next TLV if it carries `tag`; otherwise nothing is consumed.
    pub fn optional(&mut self, tag: u32) -> Result<Option<&'a [u8]>, TlvError> {
        let at = self.pos;
        match self.next_tlv()? {
            Some(t) if t.tag == tag => Ok(Some(t.value)),
            _ => {
                self.pos = at;
                Ok(None)
            }
        }
    }

    /// Fails if anything is left.
    pub fn finish(&self) -> Result<(), TlvError> {
        match self.input.len().saturating_sub(self.pos) {
            0 => Ok(()),
            left => Err(TlvError::Trailing { left }),
        }
    }
}

/// Parses all TLVs of `input` (which must hold nothing else).
pub fn parse_all(input: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut reader = TlvReader::new(input);
    let mut out = Vec::new();
    while let Some(t) = reader.next_tlv()? {
        out.push(t);
    }
    Ok(out)
}

/// Parses exactly one TLV that must span all of `input`, and returns its value.
pub fn parse_single(input: &[u8], tag: u32) -> Result<&[u8], TlvError> {
    let mut reader = TlvReader::new(input);
    let value = reader.expect(tag)?;
    reader.finish()?;
    Ok(value)
}

/// Finds the first TLV with `tag` among the TLVs of `input`.
pub fn find(input: &[u8], tag: u32) -> Result<Option<&[u8]>, TlvError> {
    let mut reader = TlvReader::new(input);
    while let Some(t) = reader.next_tlv()? {
        if t.tag == tag {
            return Ok(Some(t.value));
        }
    }
    Ok(None)
}

/// Appends the encoding of `tag` (1–3 bytes, leading zero bytes dropped).
pub fn push_tag(out: &mut Vec<u8>, tag: u32) {
    let bytes = tag.to_be_bytes();
    let skip = bytes.iter().take(3).take_while(|b| **b == 0).count();
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends a DER/BER definite length.
pub fn push_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xFFFF => {
            out.push(0x82);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            // Invariant: nothing on a card approaches 16 MiB; clamp keeps the encoding defined.
            let len = len.min(0xFF_FFFF) as u32;
            out.push(0x83);
            out.extend_from_slice(&len.to_be_bytes()[1..]);
        }
    }
}

/// Appends one TLV.
pub fn push(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    push_tag(out, tag);
    push_len(out, value.len());
    out.extend_from_slice(value);
}

/// One TLV as a new vector.
pub fn encode(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    push(&mut out, tag, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_tags_and_lengths() {
        for (tag, len) in [
            (0x53, 0),
            (0x53, 127),
            (0x53, 128),
            (0x5FC105, 300),
            (0x7F49, 65),
            (0x5C, 70_000),
        ] {
            let value = vec![0xAB; len];
            let enc = encode(tag, &value);
            assert_eq!(parse_single(&enc, tag).unwrap(), value.as_slice());
        }
    }

    #[test]
    fn rejects_lies_about_length() {
        assert!(matches!(
            parse_all(&[0x53, 0x05, 1, 2]),
            Err(TlvError::Truncated { .. })
        ));
        assert!(matches!(
            parse_all(&[0x53, 0x84, 0, 0, 0, 1, 0]),
            Err(TlvError::BadLength { .. })
        ));
        assert!(matches!(
            parse_all(&[0x5F, 0xC1, 0x85, 0x01, 0x00]),
            Err(TlvError::TagTooLong { .. })
        ));
        assert!(matches!(
            parse_single(&[0x53, 0x00, 0x00], 0x53),
            Err(TlvError::Trailing { left: 1 })
        ));
        assert!(matches!(
            parse_all(&[0x53, 0x83, 0xFF, 0xFF, 0xFF]),
            Err(TlvError::Truncated { .. })
        ));
    }

    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5_000 {
            let len = rng.gen_range(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let _ = parse_all(&bytes);
            let _ = find(&bytes, 0x53);
        }
    }
}
