//! Text normalisation for Japanese source files (issue 4, Deliver 3): full-width ASCII (U+FF01–FF5E),
//! the ideographic space, the various minus signs and the unit ligatures (㎝ ㎏ ㎎ ㎗ …) become their
//! plain ASCII forms, so that `１７０．２ｃｍ` reads as `170.2cm`.

use std::borrow::Cow;

/// Converts full-width ASCII, U+3000, minus-like signs and unit ligatures to ASCII.
/// Returns the input unchanged (borrowed) when there is nothing to convert.
pub fn to_half_width(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{FF01}'..='\u{FF5E}' => {
                // Invariant: the range maps one to one onto U+0021..U+007E.
                out.push(char::from_u32(c as u32 - 0xFEE0).unwrap_or(c));
            }
            '\u{3000}' => out.push(' '),
            '\u{2212}' | '\u{2010}' | '\u{2011}' | '\u{2013}' | '\u{FE63}' => out.push('-'),
            '\u{339D}' => out.push_str("cm"),
            '\u{338F}' => out.push_str("kg"),
            '\u{338E}' => out.push_str("mg"),
            '\u{3397}' => out.push_str("dL"),
            '\u{3396}' => out.push_str("mL"),
            '\u{33A0}' => out.push_str("cm2"),
            '\u{2113}' => out.push('L'),
            '\u{00B5}' | '\u{03BC}' => out.push('u'),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Canonical comparison key of a unit as written in 付属2, a CSV header or a cell: half-width,
/// case-folded, `[`/`]`/spaces dropped, `μ` as `u`. `mm[Hg]`, `mmHg`, `ｍｍＨｇ` all give `mmhg`.
pub fn unit_key(unit: &str) -> String {
    to_half_width(unit)
        .chars()
        .filter(|c| !matches!(c, '[' | ']' | ' ' | '{' | '}' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_digits_units_and_minus() {
        assert_eq!(to_half_width("１７０．２ｃｍ"), "170.2cm");
        assert_eq!(to_half_width("−１．５"), "-1.5");
        assert_eq!(to_half_width("６５㎏"), "65kg");
        assert_eq!(to_half_width("ｍｇ／ｄＬ"), "mg/dL");
        assert_eq!(to_half_width("山田\u{3000}花子"), "山田 花子");
        assert!(matches!(to_half_width("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn unit_keys_identify_spellings() {
        assert_eq!(unit_key("mm[Hg]"), unit_key("ｍｍＨｇ"));
        assert_eq!(unit_key("mg/dL"), unit_key("mg/dl"));
        assert_ne!(unit_key("mg/dL"), unit_key("mmol/L"));
    }
}
