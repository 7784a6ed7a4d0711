//! Domain newtypes of the iPHR (DESIGN §5; codes and numbers from domain.md §1.3, §1.7, §2).
//!
//! Each newtype *parses*: construction goes through [`std::str::FromStr`] (or `parse`), which
//! normalises the input (full-width digits, zero padding where the spec allows it) and rejects what
//! cannot be the thing. Once built, a value is known to be well formed, and serde round-trips it
//! through the same parser.

use std::fmt;
use std::str::FromStr;

use arrayvec::ArrayString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::normalize::to_half_width;

/// Why a string could not be parsed into a domain newtype.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason} (got {input:?})")]
pub struct ParseError {
    /// The type being parsed, e.g. "保険者番号".
    pub what: &'static str,
    /// What is wrong with the input.
    pub reason: &'static str,
    /// The offending input (truncated to 64 chars).
    pub input: String,
}

impl ParseError {
    fn new(what: &'static str, reason: &'static str, input: &str) -> Self {
        Self {
            what,
            reason,
            input: input.chars().take(64).collect(),
        }
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

fn digits_only(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// 特定健診項目コード (OID 1.2.392.200119.6.1005): 17 characters, digits and upper-case letters
/// (the first five follow JLAC10's analyte part or the 9N/9A pseudo-codes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemCode(String);

impl ItemCode {
    /// The code as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ItemCode {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let t = to_half_width(s.trim()).to_ascii_uppercase();
        if t.len() != 17 {
            return Err(ParseError::new(
                "特定健診項目コード",
                "must be 17 characters",
                s,
            ));
        }
        if !t
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            return Err(ParseError::new(
                "特定健診項目コード",
                "only digits and letters",
                s,
            ));
        }
        Ok(Self(t))
    }
}

impl fmt::Display for ItemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
serde_via_str!(ItemCode);

/// JLAC10 code (domain.md §2): 17 characters = analyte (5) + identification (4) + material (3) +
/// method (3) + result identification (2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jlac10(String);

impl Jlac10 {
    /// The whole code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// 分析物コード (5 characters).
    pub fn analyte(&self) -> &str {
        &self.0[0..5]
    }
    /// 識別コード (4 characters).
    pub fn identification(&self) -> &str {
        &self.0[5..9]
    }
    /// 材料コード (3 digits), e.g. `023` serum, `001` urine.
    pub fn material(&self) -> &str {
        &self.0[9..12]
    }
    /// 測定法コード (3 digits).
    pub fn method(&self) -> &str {
        &self.0[12..15]
    }
    /// 結果識別コード (2 digits).
    pub fn result_id(&self) -> &str {
        &self.0[15..17]
    }
}

impl FromStr for Jlac10 {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let t = to_half_width(s.trim()).to_ascii_uppercase();
        if t.len() != 17 {
            return Err(ParseError::new("JLAC10", "must be 17 characters", s));
        }
        let b = t.as_bytes();
        if !b[..9]
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
            || !b[9..].iter().all(u8::is_ascii_digit)
        {
            return Err(ParseError::new(
                "JLAC10",
                "analyte/identification alphanumeric, material/method/result digits",
                s,
            ));
        }
        Ok(Self(t))
    }
}

impl fmt::Display for Jlac10 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
serde_via_str!(Jlac10);

/// 保険者番号 (OID 1.2.392.200119.6.101): 8 digits; 6-digit 政管/国保 numbers are zero-padded to 8
/// as the CDA spec requires (domain.md §1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InsurerNumber(String);

impl InsurerNumber {
    /// The 8-digit number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InsurerNumber {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let t = to_half_width(s.trim());
        if !digits_only(&t) {
            return Err(ParseError::new("保険者番号", "digits only", s));
        }
        match t.len() {
            8 => Ok(Self(t.into_owned())),
            6 => Ok(Self(format!("00{t}"))),
            _ => Err(ParseError::new("保険者番号", "must be 6 or 8 digits", s)),
        }
    }
}

impl fmt::Display for InsurerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
serde_via_str!(InsurerNumber);

/// 健診機関番号 / 機関番号 (OID 1.2.392.200119.6.102): 10 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstitutionNumber(String);

impl InstitutionNumber {
    /// The 10-digit number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InstitutionNumber {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let t = to_half_width(s.trim());
        if !digits_only(&t) || t.len() != 10 {
            return Err(ParseError::new("健診機関番号", "must be 10 digits", s));
        }
        Ok(Self(t.into_owned()))
    }
}

impl fmt::Display for InstitutionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
serde_via_str!(InstitutionNumber);

/// Administrative sex (OID 1.2.392.200119.6.1104: 1 男, 2 女). Serialised as `male` / `female`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    /// 男 (code 1).
    Male,
    /// 女 (code 2).
    Female,
}

impl Sex {
    /// The code in OID 1.2.392.200119.6.1104.
    pub fn code(self) -> &'static str {
        match self {
            Sex::Male => "1",
            Sex::Female => "2",
        }
    }
}

impl FromStr for Sex {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match to_half_width(s.trim()).to_ascii_lowercase().as_str() {
            "1" | "男" | "男性" | "m" | "male" => Ok(Sex::Male),
            "2" | "女" | "女性" | "f" | "female" => Ok(Sex::Female),
            _ => Err(ParseError::new("性別", "expected 1/2, 男/女, M/F", s)),
        }
    }
}

/// A calendar date (the 特定健診 formats carry dates, not instants). JSON form `YYYY-MM-DD`;
/// parses `YYYYMMDD`, `YYYY-MM-DD`, `YYYY/MM/DD` and a CDA `TS` with a time part (the time is
/// dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    year: u16,
    month: u8,
    day: u8,
}

impl Date {
    /// Builds a date, checking month and day (leap years included).
    pub fn new(year: u16, month: u8, day: u8) -> Option<Self> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        if !(1800..=2999).contains(&year) {
            return None;
        }
        Some(Self { year, month, day })
    }
    /// Year.
    pub fn year(self) -> u16 {
        self.year
    }
    /// Month 1–12.
    pub fn month(self) -> u8 {
        self.month
    }
    /// Day of month.
    pub fn day(self) -> u8 {
        self.day
    }
    /// Full years from `birth` to `self` (age on this date).
    pub fn years_since(self, birth: Date) -> u32 {
        let mut y = u32::from(self.year).saturating_sub(u32::from(birth.year));
        if (self.month, self.day) < (birth.month, birth.day) {
            y = y.saturating_sub(1);
        }
        y
    }
    /// The date as `YYYYMMDD`.
    pub fn compact(self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        _ => 28,
    }
}

impl FromStr for Date {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let t = to_half_width(s.trim());
        let digits: String;
        let compact = if t.len() >= 8 && t.as_bytes()[..8].iter().all(u8::is_ascii_digit) {
            // CDA TS: YYYYMMDD[hhmm[ss]][+zzzz]
            &t[..8]
        } else {
            let parts: Vec<&str> = t.split(['-', '/', '.']).collect();
            if parts.len() != 3 || !parts.iter().all(|p| digits_only(p)) || parts[0].len() != 4 {
                return Err(ParseError::new(
                    "日付",
                    "expected YYYYMMDD or YYYY-MM-DD",
                    s,
                ));
            }
            if parts[1].len() > 2 || parts[2].len() > 2 {
                return Err(ParseError::new(
                    "日付",
                    "expected YYYYMMDD or YYYY-MM-DD",
                    s,
                ));
            }
            digits = format!("{}{:0>2}{:0>2}", parts[0], parts[1], parts[2]);
            &digits
        };
        let num = |r: std::ops::Range<usize>| compact[r].parse::<u16>().ok();
        let (Some(y), Some(m), Some(d)) = (num(0..4), num(4..6), num(6..8)) else {
            return Err(ParseError::new(
                "日付",
                "expected YYYYMMDD or YYYY-MM-DD",
                s,
            ));
        };
        let (Ok(m), Ok(d)) = (u8::try_from(m), u8::try_from(d)) else {
            return Err(ParseError::new("日付", "no such date", s));
        };
        Date::new(y, m, d).ok_or_else(|| ParseError::new("日付", "no such date", s))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}
serde_via_str!(Date);

/// A decimal number kept as written (precision is significant in lab results: `5.0` ≠ `5`).
/// Normalised: no leading `+`, no redundant leading zeros, full-width digits converted. Stored
/// inline (at most [`Decimal::MAX_LEN`] bytes; no heap allocation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal(ArrayString<{ Decimal::MAX_LEN }>);

impl Decimal {
    /// Longest canonical text: a sign, a `0` put before a bare fraction, and the 40 bytes of digits
    /// and point that parsing accepts.
    pub const MAX_LEN: usize = 42;

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The value as `f64` (for comparisons with thresholds).
    pub fn to_f64(&self) -> f64 {
        if let Some(x) = self.small_to_f64() {
            return x;
        }
        // Invariant: the text was checked to be `-?\d+(\.\d+)?`, which f64 always parses.
        self.0.parse().unwrap_or(f64::NAN)
    }

    /// [`Self::to_f64`] for at most 15 digits: the digits as an integer divided by a power of ten,
    /// both exact in `f64`, so the one rounding of the division gives what `str::parse` gives.
    fn small_to_f64(&self) -> Option<f64> {
        const POW10: [f64; 16] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
        ];
        let (neg, body) = match self.0.strip_prefix('-') {
            Some(b) => (true, b.as_bytes()),
            None => (false, self.0.as_bytes()),
        };
        let (mut m, mut digits, mut frac) = (0u64, 0usize, None::<usize>);
        for &b in body {
            match b {
                b'0'..=b'9' => {
                    m = m * 10 + u64::from(b - b'0');
                    digits += 1;
                    if let Some(f) = &mut frac {
                        *f += 1;
                    }
                }
                b'.' if frac.is_none() => frac = Some(0),
                _ => return None,
            }
            if digits > 15 {
                return None;
            }
        }
        // m < 10^15 < 2^53: the conversion is exact.
        let x = m as f64 / POW10[frac.unwrap_or(0)];
        Some(if neg { -x } else { x })
    }
}

/// `s` is already in [`Decimal`]'s canonical form without a sign (`0`, `12`, `0.50`, `7.25`):
/// digits, no redundant leading zero, at most one `.` between digits, at most 40 bytes.
fn canonical_unsigned(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    s.len() <= 40
        && digits_only(int)
        && (int == "0" || !int.starts_with('0'))
        && frac.is_none_or(digits_only)
}

impl FromStr for Decimal {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let too_long = || ParseError::new("数値", "expected a decimal number", s);
        if canonical_unsigned(s) {
            return ArrayString::from(s).map(Self).map_err(|_| too_long());
        }
        let t = to_half_width(s.trim());
        let (neg, body) = match t.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, t.strip_prefix('+').unwrap_or(&t)),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        let int = if int.is_empty() && frac.is_some() {
            "0"
        } else {
            int
        };
        if !digits_only(int) || frac.is_some_and(|f| !digits_only(f)) || body.len() > 40 {
            return Err(ParseError::new("数値", "expected a decimal number", s));
        }
        let int = int.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let zero = int == "0" && frac.is_none_or(|f| f.bytes().all(|b| b == b'0'));
        // At most 1 + 1 + 40 bytes (see `MAX_LEN`): the pushes cannot fail.
        let mut out = ArrayString::new();
        if neg && !zero {
            out.try_push('-').map_err(|_| too_long())?;
        }
        out.try_push_str(int).map_err(|_| too_long())?;
        if let Some(f) = frac {
            out.try_push('.').map_err(|_| too_long())?;
            out.try_push_str(f).map_err(|_| too_long())?;
        }
        Ok(Self(out))
    }
}

// --- issue 5 (conv2): scores are whole numbers ---
impl From<u32> for Decimal {
    fn from(v: u32) -> Self {
        use fmt::Write;
        let mut s = ArrayString::new();
        // Invariant: at most 10 digits, within `MAX_LEN`.
        let _ = write!(s, "{v}");
        Self(s)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
serde_via_str!(Decimal);

/// SHA-256 content hash, serialised as `sha256:` + 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// The all-zero value, used as a placeholder while a record's own hash is computed.
    pub fn placeholder() -> Self {
        Self([0; 32])
    }
    /// Wraps a finished SHA-256 digest.
    pub fn from_digest(d: [u8; 32]) -> Self {
        Self(d)
    }
    /// Hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(bytes).into())
    }
    /// The raw digest.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Lower-case hex of the digest (no prefix).
    pub fn hex(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl FromStr for ContentHash {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let h = s.strip_prefix("sha256:").unwrap_or(s);
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseError::new(
                "content hash",
                "expected sha256:<64 hex>",
                s,
            ));
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&h[2 * i..2 * i + 2], 16)
                .map_err(|_| ParseError::new("content hash", "bad hex", s))?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}
serde_via_str!(ContentHash);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insurer_number_pads_six_digits_and_takes_full_width() {
        assert_eq!(
            "139463".parse::<InsurerNumber>().unwrap().as_str(),
            "00139463"
        );
        assert_eq!(
            "０６１３９４６３"
                .parse::<InsurerNumber>()
                .unwrap()
                .as_str(),
            "06139463"
        );
        assert!("1234567".parse::<InsurerNumber>().is_err());
        assert!("0613946X".parse::<InsurerNumber>().is_err());
    }

    #[test]
    fn institution_number_is_ten_digits() {
        assert!("1310438796".parse::<InstitutionNumber>().is_ok());
        assert!("131043879".parse::<InstitutionNumber>().is_err());
    }

    #[test]
    fn jlac10_parts() {
        let j: Jlac10 = "3D046000001906202".parse().unwrap();
        assert_eq!(
            (
                j.analyte(),
                j.identification(),
                j.material(),
                j.method(),
                j.result_id()
            ),
            ("3D046", "0000", "019", "062", "02")
        );
        assert!("3D04600000190620X".parse::<Jlac10>().is_err());
        assert!("9N001000000000001".parse::<ItemCode>().is_ok());
        assert!("9N00100000000000".parse::<ItemCode>().is_err());
    }

    #[test]
    fn dates_parse_in_all_forms_and_reject_impossible_ones() {
        let d: Date = "20240229".parse().unwrap();
        assert_eq!(d.to_string(), "2024-02-29");
        assert_eq!(
            "2024/6/1".parse::<Date>().unwrap().to_string(),
            "2024-06-01"
        );
        assert_eq!(
            "20240601093000+0900".parse::<Date>().unwrap().compact(),
            "20240601"
        );
        assert!("20230229".parse::<Date>().is_err());
        assert!("2024-13-01".parse::<Date>().is_err());
        let birth: Date = "1960-06-02".parse().unwrap();
        assert_eq!("2025-06-01".parse::<Date>().unwrap().years_since(birth), 64);
        assert_eq!("2025-06-02".parse::<Date>().unwrap().years_since(birth), 65);
    }

    #[test]
    fn decimals_keep_precision_and_normalise() {
        let p = |s: &str| s.parse::<Decimal>().map(|d| d.to_string());
        assert_eq!(p("5.0").unwrap(), "5.0");
        assert_eq!(p("+007.50").unwrap(), "7.50");
        assert_eq!(p("１２０").unwrap(), "120");
        assert_eq!(p("-0").unwrap(), "0");
        assert_eq!(p(".5").unwrap(), "0.5");
        assert!(p("1e3").is_err());
        assert!(p("").is_err());
        assert!(p("1.").is_err());
        // Already canonical (taken as is) and not quite (normalised).
        for (text, canonical) in [("0", "0"), ("0.50", "0.50"), ("00.5", "0.5"), ("010", "10")] {
            assert_eq!(p(text).unwrap(), canonical);
        }
        assert!(p("1.2.3").is_err());
        assert!(p(&"1".repeat(41)).is_err());
        assert_eq!(p(&"1".repeat(40)).unwrap(), "1".repeat(40));
    }

    /// The short-decimal path of `to_f64` gives exactly what `str::parse::<f64>` gives.
    #[test]
    fn decimal_to_f64_matches_parse() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut cases: Vec<String> = [
            "0",
            "0.1",
            "0.3",
            "-0.7",
            "123456789012345",
            "1234567890123456",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 18) as usize + 1;
            let m = (x >> 8) % 10u64.pow(digits.min(18) as u32);
            let frac = (x >> 3) as usize % (digits + 1);
            let mut s = format!("{m:0digits$}");
            if frac > 0 {
                s.insert(s.len() - frac, '.');
            }
            if x & 1 == 1 {
                s.insert(0, '-');
            }
            cases.push(s);
        }
        for s in cases {
            let d: Decimal = s.parse().unwrap();
            let want: f64 = d.as_str().parse().unwrap();
            assert_eq!(d.to_f64().to_bits(), want.to_bits(), "{s}");
        }
    }

    #[test]
    fn content_hash_round_trips() {
        let h = ContentHash::of(b"abc");
        assert_eq!(
            h.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.to_string().parse::<ContentHash>().unwrap(), h);
    }
}
