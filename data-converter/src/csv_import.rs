//! Health-check CSVs (issue 4, Deliver 3): an institution's layout is described by a TOML
//! [`Mapping`] naming, per column, the 特定健診 item code and unit, the person keys and the date
//! format. UTF-8 (with or without BOM) and Shift_JIS (Windows-31J) input; full-width digits, signs
//! and units are normalised (`normalize`). One row → one [`Record`] (unit A). Items use the same
//! catalogue and judgement tables as the CDA reader (domain.md §1.7–§1.9).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::catalogue::{Catalogue, Item, ValueType};
use crate::cda::{check_range, coded_value, converter_id};
use crate::error::{Error, ErrorKind, Location, Result};
use crate::iphr::{
    Absent, Code, ContentHash, Date, Decimal, Effective, Entry, Header, Identifier,
    InstitutionNumber, InsuredId, InsurerNumber, Organization, Person, Provenance, Record, SCHEMA,
    Sex, Source, SourceFormat, Unit, Value, systems,
};
use crate::normalize::to_half_width;

/// Text encoding of a CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// BOM → UTF-8; valid UTF-8 → UTF-8; else Shift_JIS.
    #[default]
    Auto,
    /// UTF-8, BOM optional.
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// Shift_JIS as Windows-31J (CP932).
    #[serde(alias = "sjis", alias = "cp932", alias = "windows-31j")]
    ShiftJis,
}

/// Columns identifying the person and the exam.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonColumns {
    /// 保険者番号.
    pub insurer: Option<String>,
    /// 被保険者証記号.
    pub symbol: Option<String>,
    /// 被保険者証番号.
    pub number: Option<String>,
    /// 枝番.
    pub branch: Option<String>,
    /// Employee number (identifier `urn:iphr:employee:<mapping name>`).
    pub employee_id: Option<String>,
    /// Name (kanji).
    pub name: Option<String>,
    /// Name (kana).
    pub name_kana: Option<String>,
    /// Sex (1/2, 男/女, M/F).
    pub sex: Option<String>,
    /// Birth date.
    pub birth_date: Option<String>,
    /// Exam date (required).
    pub exam_date: String,
}

/// One result column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Header text of the column.
    pub name: String,
    /// 特定健診項目コード.
    pub item: toml::Spanned<String>,
    /// Unit of the values (PQ items); must be the item's unit.
    #[serde(default)]
    pub unit: Option<toml::Spanned<String>>,
    /// Cell text → result code (CD items); codes themselves are always accepted.
    #[serde(default)]
    pub codes: BTreeMap<String, String>,
}

/// An institution's CSV layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Layout name (recorded in provenance).
    pub name: String,
    /// Encoding.
    #[serde(default)]
    pub encoding: Encoding,
    /// Field delimiter (one ASCII character).
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// 1-based line of the header row; data rows follow it.
    #[serde(default = "one")]
    pub header_row: u64,
    /// `iso` (YYYYMMDD, YYYY-MM-DD, YYYY/MM/DD) or `wareki` (R6.6.1, 令和6年6月1日); `iso` also
    /// accepts wareki.
    #[serde(default)]
    pub date_format: Option<String>,
    /// 健診機関番号 of the institution.
    #[serde(default)]
    pub institution: Option<String>,
    /// Institution name.
    #[serde(default)]
    pub institution_name: Option<String>,
    /// プログラム種別 (default `030` 事業者健診).
    #[serde(default)]
    pub program: Option<String>,
    /// Person columns.
    pub person: PersonColumns,
    /// Result columns.
    pub column: Vec<Column>,
}

fn default_delimiter() -> String {
    ",".into()
}
fn one() -> u64 {
    1
}

fn toml_line(text: &str, span: std::ops::Range<usize>) -> u64 {
    1 + text.as_bytes()[..span.start.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
}

impl Mapping {
    /// Parses and checks a mapping: item codes exist, units match, codes are in the result table.
    /// `file` names the mapping in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Self> {
        let m: Mapping = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| toml_line(text, s));
            let mut loc = Location::file(file);
            loc.line = line;
            Error::new(loc, ErrorKind::Mapping(e.message().to_owned()))
        })?;
        let cat = Catalogue::builtin();
        if m.delimiter.len() != 1 || !m.delimiter.is_ascii() {
            return Err(Error::new(
                Location::file(file),
                ErrorKind::Mapping("delimiter must be one ASCII character".into()),
            ));
        }
        if m.header_row == 0 {
            return Err(Error::new(
                Location::file(file),
                ErrorKind::Mapping("header_row is 1-based".into()),
            ));
        }
        if let Some(f) = &m.date_format
            && f != "iso"
            && f != "wareki"
        {
            return Err(Error::new(
                Location::file(file),
                ErrorKind::Mapping(format!("date_format {f:?}: use iso or wareki")),
            ));
        }
        if let Some(i) = &m.institution {
            i.parse::<InstitutionNumber>().map_err(|e| {
                Error::new(
                    Location::file(file),
                    ErrorKind::InvalidField {
                        field: "institution",
                        reason: e.to_string(),
                    },
                )
            })?;
        }
        for c in &m.column {
            let at = |span: std::ops::Range<usize>| {
                Location::file(file)
                    .at_line(toml_line(text, span))
                    .at_path(format!("column {:?}", c.name))
                    .with_item(c.item.get_ref().clone())
            };
            let Some(item) = cat.item(c.item.get_ref()) else {
                return Err(Error::new(
                    at(c.item.span()),
                    ErrorKind::UnknownItemCode(c.item.get_ref().clone()),
                ));
            };
            match (&c.unit, item.value_type) {
                (Some(u), ValueType::Pq) if !item.unit_matches(u.get_ref()) => {
                    return Err(Error::new(
                        at(u.span()),
                        ErrorKind::UnitMismatch {
                            expected: item.unit.clone().unwrap_or_default(),
                            found: u.get_ref().clone(),
                        },
                    ));
                }
                (None, ValueType::Pq) => {
                    return Err(Error::new(
                        at(c.item.span()),
                        ErrorKind::Mapping("quantity column without unit".into()),
                    ));
                }
                _ => {}
            }
            for code in c.codes.values() {
                coded_value(cat, item, Some(code), None)
                    .map_err(|k| Error::new(at(c.item.span()), k))?;
            }
        }
        Ok(m)
    }
}

/// Decodes CSV bytes per the mapping's encoding.
pub fn decode(bytes: &[u8], enc: Encoding, file: &str) -> Result<String> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        if enc == Encoding::ShiftJis {
            return Err(Error::new(
                Location::file(file).at_line(1),
                ErrorKind::Encoding("Shift_JIS (file has a UTF-8 BOM)"),
            ));
        }
        return utf8(rest, file);
    }
    match enc {
        Encoding::Utf8 => utf8(bytes, file),
        Encoding::ShiftJis => sjis(bytes, file),
        Encoding::Auto => match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => sjis(bytes, file),
        },
    }
}

fn utf8(bytes: &[u8], file: &str) -> Result<String> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        Error::new(
            Location::file(file).at_line(line),
            ErrorKind::Encoding("UTF-8"),
        )
    })
}

fn sjis(bytes: &[u8], file: &str) -> Result<String> {
    let (text, had_errors) = encoding_rs::SHIFT_JIS.decode_without_bom_handling(bytes);
    if had_errors {
        let line = text
            .find('\u{FFFD}')
            .map_or(1, |p| 1 + text[..p].matches('\n').count() as u64);
        return Err(Error::new(
            Location::file(file).at_line(line),
            ErrorKind::Encoding("Shift_JIS"),
        ));
    }
    Ok(text.into_owned())
}

/// Parses a date cell: ISO-like forms or 和暦 (`R6.6.1`, `H30/4/1`, `令和6年6月1日`, `令和元年…`).
pub fn parse_date(cell: &str) -> std::result::Result<Date, String> {
    let s = to_half_width(cell.trim()).into_owned();
    if let Ok(d) = s.parse::<Date>() {
        return Ok(d);
    }
    let eras: [(&str, &str, u16); 5] = [
        ("令和", "R", 2018),
        ("平成", "H", 1988),
        ("昭和", "S", 1925),
        ("大正", "T", 1911),
        ("明治", "M", 1867),
    ];
    for (kanji, letter, base) in eras {
        let rest = s
            .strip_prefix(kanji)
            .or_else(|| s.strip_prefix(letter))
            .or_else(|| s.strip_prefix(&letter.to_lowercase()));
        let Some(rest) = rest else { continue };
        let rest = rest.replacen('元', "1", 1);
        let parts: Vec<&str> = rest
            .split(['.', '/', '-', '年', '月', '日'])
            .filter(|p| !p.is_empty())
            .collect();
        if parts.len() == 3
            && let (Ok(y), Ok(m), Ok(d)) = (
                parts[0].parse::<u16>(),
                parts[1].parse::<u8>(),
                parts[2].parse::<u8>(),
            )
            && (1..100).contains(&y)
            && let Some(date) = Date::new(base + y, m, d)
        {
            return Ok(date);
        }
        return Err(format!("{cell:?} is not a date"));
    }
    Err(format!("{cell:?} is not a date"))
}

/// Result of one CSV file: its records, or the errors of its bad rows.
pub struct CsvOutcome {
    /// Records of the good rows, in file order.
    pub records: Vec<Record>,
    /// Errors, in file order.
    pub errors: Vec<Error>,
}

/// Reads a CSV file with a mapping. Every row is checked; the caller decides all-or-nothing
/// (`errors` empty) or keep-going.
pub fn read_csv(bytes: &[u8], file: &str, mapping: &Mapping) -> Result<CsvOutcome> {
    let text = decode(bytes, mapping.encoding, file)?;
    let cat = Catalogue::builtin();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(mapping.delimiter.as_bytes()[0])
        .from_reader(text.as_bytes());
    let newlines: Vec<usize> = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let mut header: Option<Vec<String>> = None;
    let mut out = CsvOutcome {
        records: Vec::new(),
        errors: Vec::new(),
    };
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut cols: Option<Resolved<'_>> = None;
    for row in rdr.records() {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let line = e
                    .position()
                    .map_or(0, |p| line_at(&text, &newlines, p.byte()));
                out.errors.push(Error::new(
                    Location::file(file).at_line(line),
                    ErrorKind::BadRow(e.to_string()),
                ));
                continue;
            }
        };
        let line = row
            .position()
            .map_or(0, |p| line_at(&text, &newlines, p.byte()));
        if line < mapping.header_row {
            continue;
        }
        let Some(h) = &header else {
            let names: Vec<String> = row
                .iter()
                .map(|c| to_half_width(c.trim()).into_owned())
                .collect();
            cols = Some(resolve(mapping, &names, file, line, cat)?);
            header = Some(names);
            continue;
        };
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        if row.len() != h.len() {
            out.errors.push(Error::new(
                Location::file(file).at_line(line),
                ErrorKind::BadRow(format!("{} fields, header has {}", row.len(), h.len())),
            ));
            continue;
        }
        let Some(c) = &cols else { continue };
        match read_row(&row, line, file, mapping, c, cat) {
            Ok(rec) => {
                let key = format!(
                    "{}|{}",
                    rec.person.key().unwrap_or_default(),
                    rec.effective.start()
                );
                if let Some(first) = seen.get(&key) {
                    out.errors.push(Error::new(
                        Location::file(file).at_line(line),
                        ErrorKind::DuplicatePerson {
                            key,
                            first: format!("{file}:{first}"),
                        },
                    ));
                } else {
                    seen.insert(key, line);
                    out.records.push(rec);
                }
            }
            Err(e) => out.errors.push(e),
        }
    }
    if header.is_none() {
        return Err(Error::new(
            Location::file(file).at_line(mapping.header_row),
            ErrorKind::Missing("header row"),
        ));
    }
    Ok(out)
}

/// Column indexes of the mapping in one file's header.
struct Resolved<'m> {
    person: HashMap<&'static str, usize>,
    items: Vec<(usize, &'m Column, &'static Item)>,
    names: Vec<String>,
}

fn resolve<'m>(
    m: &'m Mapping,
    header: &[String],
    file: &str,
    line: u64,
    cat: &'static Catalogue,
) -> Result<Resolved<'m>> {
    let find = |name: &str, item: Option<&str>| -> Result<usize> {
        let want = to_half_width(name.trim());
        header.iter().position(|h| *h == want).ok_or_else(|| {
            let mut loc = Location::file(file)
                .at_line(line)
                .at_path(format!("header {name:?}"));
            if let Some(i) = item {
                loc = loc.with_item(i);
            }
            Error::new(loc, ErrorKind::MissingColumn(name.to_owned()))
        })
    };
    let p = &m.person;
    let mut person = HashMap::new();
    let fields: [(&'static str, &Option<String>); 9] = [
        ("insurer", &p.insurer),
        ("symbol", &p.symbol),
        ("number", &p.number),
        ("branch", &p.branch),
        ("employee_id", &p.employee_id),
        ("name", &p.name),
        ("name_kana", &p.name_kana),
        ("sex", &p.sex),
        ("birth_date", &p.birth_date),
    ];
    for (k, v) in fields {
        if let Some(col) = v {
            person.insert(k, find(col, None)?);
        }
    }
    person.insert("exam_date", find(&p.exam_date, None)?);
    let mut items = Vec::new();
    for c in &m.column {
        let idx = find(&c.name, Some(c.item.get_ref()))?;
        // Invariant: Mapping::from_toml checked every item code against the catalogue.
        let Some(item) = cat.item(c.item.get_ref()) else {
            return Err(Error::new(
                Location::file(file),
                ErrorKind::UnknownItemCode(c.item.get_ref().clone()),
            ));
        };
        items.push((idx, c, item));
    }
    Ok(Resolved {
        person,
        items,
        names: header.to_vec(),
    })
}

fn read_row(
    row: &csv::StringRecord,
    line: u64,
    file: &str,
    m: &Mapping,
    c: &Resolved<'_>,
    cat: &'static Catalogue,
) -> Result<Record> {
    let cell = |k: &str| -> Option<String> {
        let i = *c.person.get(k)?;
        let v = to_half_width(row.get(i)?.trim()).trim().to_owned();
        if v.is_empty() { None } else { Some(v) }
    };
    let col_loc = |k: &str| {
        let name = c
            .person
            .get(k)
            .and_then(|i| c.names.get(*i))
            .cloned()
            .unwrap_or_default();
        Location::file(file)
            .at_line(line)
            .at_path(format!("column {name:?}"))
    };
    let field_err = |k: &str, field: &'static str, reason: String| {
        Error::new(col_loc(k), ErrorKind::InvalidField { field, reason })
    };

    let exam = cell("exam_date")
        .ok_or_else(|| Error::new(col_loc("exam_date"), ErrorKind::Missing("exam date")))?;
    let exam = parse_date(&exam).map_err(|r| field_err("exam_date", "受診日", r))?;
    let insured = match (cell("insurer"), cell("number")) {
        (Some(i), Some(n)) => Some(InsuredId {
            insurer: i
                .parse::<InsurerNumber>()
                .map_err(|e| field_err("insurer", "保険者番号", e.to_string()))?,
            symbol: cell("symbol"),
            number: n,
            branch: cell("branch"),
        }),
        _ => None,
    };
    let mut identifiers = Vec::new();
    if let Some(e) = cell("employee_id") {
        identifiers.push(Identifier {
            system: format!("urn:iphr:employee:{}", m.name),
            value: e,
        });
    }
    if insured.is_none() && identifiers.is_empty() {
        return Err(Error::new(
            Location::file(file).at_line(line),
            ErrorKind::Missing("person key (保険者番号+番号 or employee id)"),
        ));
    }
    let sex = match cell("sex") {
        Some(s) => Some(
            s.parse::<Sex>()
                .map_err(|e| field_err("sex", "性別", e.to_string()))?,
        ),
        None => None,
    };
    let birth_date = match cell("birth_date") {
        Some(s) => Some(parse_date(&s).map_err(|r| field_err("birth_date", "生年月日", r))?),
        None => None,
    };
    let person = Person {
        insured,
        identifiers,
        name_kana: cell("name_kana"),
        name: c
            .person
            .get("name")
            .and_then(|i| row.get(*i))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
        sex,
        birth_date,
        postal_code: None,
    };

    let mut entries = Vec::new();
    for (idx, col, item) in &c.items {
        let raw = row.get(*idx).unwrap_or("");
        let v = to_half_width(raw.trim()).trim().to_owned();
        if v.is_empty() {
            continue;
        }
        let loc = || {
            Location::file(file)
                .at_line(line)
                .at_path(format!("column {:?}", col.name))
                .with_item(item.code.clone())
        };
        let code = Code::with_display(systems::TOKUTEI_ITEM, &item.code, &item.name);
        let mut e = Entry::observation(
            format!("e{}", entries.len() + 1),
            code,
            format!("line {line}, column {:?}", col.name),
        );
        if item.jlac10 {
            e.codings.push(Code::new(systems::JLAC10, &item.code));
        }
        e.analyte = Some(std::borrow::Cow::Borrowed(item.analyte.as_str()));
        match v.as_str() {
            "未実施" | "未" | "-未-" => e.absent = Some(Absent::NotPerformed),
            "測定不能" | "測定不可" | "不能" => e.absent = Some(Absent::CannotMeasure),
            _ => {
                e.value = Some(match item.value_type {
                    ValueType::Pq => {
                        let (num, suffix) = split_unit(&v);
                        let d: Decimal = num.parse().map_err(|_| {
                            Error::new(
                                loc(),
                                ErrorKind::InvalidValue {
                                    value: raw.to_owned(),
                                    reason: "not a number".into(),
                                },
                            )
                        })?;
                        if !suffix.is_empty() && !item.unit_matches(suffix) {
                            return Err(Error::new(
                                loc(),
                                ErrorKind::UnitMismatch {
                                    expected: col
                                        .unit
                                        .as_ref()
                                        .map(|u| u.get_ref().clone())
                                        .unwrap_or_default(),
                                    found: suffix.to_owned(),
                                },
                            ));
                        }
                        check_range(item, &d, None).map_err(|k| Error::new(loc(), k))?;
                        Value::Quantity {
                            value: d,
                            unit: std::borrow::Cow::Borrowed(
                                item.ucum.as_deref().unwrap_or_default(),
                            ),
                        }
                    }
                    ValueType::Cd => {
                        let code = col.codes.get(&v).cloned().unwrap_or_else(|| v.clone());
                        coded_value(cat, item, Some(&code), None)
                            .map_err(|k| Error::new(loc(), k))?
                    }
                    ValueType::St => Value::Text {
                        text: raw.trim().to_owned(),
                    },
                });
            }
        }
        entries.push(e);
    }
    let performer = m.institution.as_ref().map(|i| Organization {
        id: Identifier {
            system: systems::INSTITUTION.into(),
            value: i.clone(),
        },
        name: m.institution_name.clone(),
    });
    let insurer = person.insured.as_ref().map(|i| Organization {
        id: Identifier {
            system: systems::INSURER.into(),
            value: i.insurer.to_string(),
        },
        name: None,
    });
    let mut row_bytes = m.name.clone().into_bytes();
    for f in row {
        row_bytes.push(0x1F);
        row_bytes.extend_from_slice(f.as_bytes());
    }
    let program = m.program.clone().unwrap_or_else(|| "030".into());
    let mut rec = Record {
        schema: SCHEMA.into(),
        unit: Unit::A,
        person,
        effective: Effective::Date(exam),
        header: Header {
            report_kind: None,
            program: Some(Code::new(systems::PROGRAM, program)),
            created: None,
            performer,
            insurer,
            sections: Vec::new(),
        },
        entries,
        source: Source {
            format: SourceFormat::HealthCheckCsv,
            file: file.to_owned(),
            locator: format!("line {line}").into(),
            content_hash: ContentHash::of(&row_bytes),
            document_id: None,
            archive: None,
        },
        provenance: Provenance {
            converter: converter_id(),
            mapping: Some(m.name.clone()),
            tables: Vec::new(),
        },
    };
    crate::judgement::apply(&mut rec);
    Ok(rec)
}

/// 1-based line of the record starting at byte `pos` (the csv crate may report the position just
/// before the previous record's line terminator, so terminators are skipped first).
fn line_at(text: &str, newlines: &[usize], pos: u64) -> u64 {
    let b = text.as_bytes();
    let mut p = usize::try_from(pos).unwrap_or(usize::MAX).min(b.len());
    while p < b.len() && (b[p] == b'\r' || b[p] == b'\n') {
        p += 1;
    }
    1 + newlines.partition_point(|&n| n < p) as u64
}

/// Splits `170.2cm` into (`170.2`, `cm`); the unit suffix may be empty.
fn split_unit(v: &str) -> (&str, &str) {
    let end = v
        .char_indices()
        .find(|(_, ch)| !(ch.is_ascii_digit() || matches!(ch, '.' | '-' | '+')))
        .map_or(v.len(), |(i, _)| i);
    (v[..end].trim(), v[end..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wareki_and_iso_dates() {
        assert_eq!(parse_date("R6.6.1").unwrap().to_string(), "2024-06-01");
        assert_eq!(
            parse_date("令和元年5月1日").unwrap().to_string(),
            "2019-05-01"
        );
        assert_eq!(
            parse_date("Ｈ３０／０４／０１").unwrap().to_string(),
            "2018-04-01"
        );
        assert_eq!(parse_date("S45.4.15").unwrap().to_string(), "1970-04-15");
        assert_eq!(parse_date("2024/06/01").unwrap().to_string(), "2024-06-01");
        assert!(parse_date("R6.2.30").is_err());
        assert!(parse_date("tomorrow").is_err());
    }

    #[test]
    fn unit_suffixes_split() {
        assert_eq!(split_unit("170.2cm"), ("170.2", "cm"));
        assert_eq!(split_unit("120"), ("120", ""));
        assert_eq!(split_unit("5.8 %"), ("5.8", "%"));
    }

    #[test]
    fn shift_jis_decodes_and_rejects_garbage() {
        let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode("身長,体重\n");
        assert_eq!(
            decode(&bytes, Encoding::Auto, "x.csv").unwrap(),
            "身長,体重\n"
        );
        assert!(decode(b"a,b\n\x81\x20\n", Encoding::ShiftJis, "x.csv").is_err());
        let e = decode(b"a\n\xff\xfe\n", Encoding::Utf8, "x.csv").unwrap_err();
        assert_eq!(e.location.line, Some(2));
    }
}
