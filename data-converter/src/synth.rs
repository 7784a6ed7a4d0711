//! Synthetic 特定健診 documents and archives (domain.md §1.2–§1.7) for benchmarks, fuzz seeds and
//! load tests. Deterministic: person `i` always gets the same document. No real person's data.

use std::io::{Seek, Write};

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Institution number used by synthetic documents.
pub const INSTITUTION: &str = "1399999991";
/// Insurer number used by synthetic documents.
pub const INSURER: &str = "06139999";

/// How a synthetic document is laid out (the same person, the same values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One entry per line, item codes with `codeSystem` and without names, no reference
    /// ranges: the leanest form the reader takes.
    Compact,
    /// As the 日医特定健診システム (ORCA) writes its documents (orcacvsmirror/tokutei:
    /// `ClinicalDocumentWriter.java`, `Section.java`, `Observation.java`): indented by two
    /// spaces; a comment naming the item before each observation; `displayName` on item codes,
    /// whose `codeSystem` is left out when it is the default 1.2.392.200119.6.1005; an empty
    /// section `text`; `interpretationCode` and a reference range for items given a range.
    Orca,
}

/// The reference ranges an institution gives the lab items of [`Layout::Orca`] documents
/// (illustrative; close to the JCCLS 共用基準範囲 for men).
fn reference_range(code: &str) -> Option<(&'static str, &'static str)> {
    Some(match code {
        "3F015000002327101" => ("40", "234"),
        "3F070000002327101" => ("38", "90"),
        "3F077000002327101" => ("65", "163"),
        "3B035000002327201" => ("13", "30"),
        "3B045000002327201" => ("10", "42"),
        "3B090000002327101" => ("13", "64"),
        "3D010000002227101" => ("73", "109"),
        "3D046000001906202" => ("4.9", "6.0"),
        "2A030000001930101" => ("13.7", "16.8"),
        "3C020000002327101" => ("3.7", "7.8"),
        _ => return None,
    })
}

/// Writes the entries of a document in one [`Layout`].
struct Entries<'s> {
    out: &'s mut String,
    layout: Layout,
}

impl Entries<'_> {
    fn open(&mut self, code: &str) {
        match self.layout {
            Layout::Compact => self.out.push_str(&format!(
                "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"{code}\" codeSystem=\"1.2.392.200119.6.1005\"/>"
            )),
            Layout::Orca => {
                let name = crate::catalogue::Catalogue::builtin()
                    .item(code)
                    .map_or("", |item| item.name.as_str());
                self.out.push_str(&format!(
                    "<entry><!--{name}--><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"{code}\" displayName=\"{name}\"/>"
                ));
            }
        }
    }

    fn close(&mut self) {
        self.out.push_str("</observation></entry>\n");
    }

    fn pq(&mut self, code: &str, value: &str, unit: &str) {
        self.open(code);
        self.out.push_str(&format!(
            "<value xsi:type=\"PQ\" value=\"{value}\" unit=\"{unit}\"/>"
        ));
        if let (Layout::Orca, Some((low, high))) = (self.layout, reference_range(code)) {
            // As ORCA decides it: below the low bound L, up to the high bound N, above it H.
            let v: f64 = value.parse().unwrap_or(f64::NAN);
            let hl = if v < low.parse().unwrap_or(f64::NAN) {
                "L"
            } else if v <= high.parse().unwrap_or(f64::NAN) {
                "N"
            } else {
                "H"
            };
            self.out.push_str(&format!(
                "<interpretationCode code=\"{hl}\"/><referenceRange><observationRange classCode=\"OBS\" moodCode=\"EVN.CRT\"><value xsi:type=\"IVL_PQ\"><low value=\"{low}\" unit=\"{unit}\"/><high value=\"{high}\" unit=\"{unit}\"/></value></observationRange></referenceRange>"
            ));
        }
        self.close();
    }

    fn cd(&mut self, code: &str, value: &str, table: &str) {
        self.open(code);
        self.out.push_str(&format!(
            "<value xsi:type=\"CD\" code=\"{value}\" codeSystem=\"{table}\"/>"
        ));
        self.close();
    }

    fn st(&mut self, code: &str, text: &str) {
        self.open(code);
        self.out
            .push_str(&format!("<value xsi:type=\"ST\">{text}</value>"));
        self.close();
    }
}

/// The document again, indented by two spaces as a Java `Transformer` with `INDENT` writes it
/// (text stays on its element's line). `None` if `doc` does not parse.
fn indented(doc: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(doc);
    let mut writer = quick_xml::Writer::new_with_indent(Vec::new(), b' ', 2);
    loop {
        match reader.read_event().ok()? {
            Event::Eof => break,
            Event::Text(t) if t.trim_ascii().is_empty() => {}
            e => writer.write_event(e).ok()?,
        }
    }
    let mut out = String::from_utf8(writer.into_inner()).ok()?;
    out.push('\n');
    Some(out)
}

/// The CDA document of synthetic person `i` (about 6 KiB, 25 observations), [`Layout::Compact`].
pub fn cda_document(i: u64) -> String {
    cda_document_in(i, Layout::Compact)
}

/// The CDA document of synthetic person `i` in `layout`.
pub fn cda_document_in(i: u64, layout: Layout) -> String {
    let mut r = Rng(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EED);
    let sex = if i.is_multiple_of(2) { "1" } else { "2" };
    let birth = format!(
        "{}{:02}{:02}",
        1950 + r.range(0, 50),
        r.range(1, 12),
        r.range(1, 28)
    );
    let height = 150.0 + r.range(0, 400) as f64 / 10.0;
    let weight = 45.0 + r.range(0, 500) as f64 / 10.0;
    let bmi = weight / (height / 100.0) / (height / 100.0);
    let mut s = String::with_capacity(12 * 1024);
    s.push_str(&format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="urn:hl7-org:v3 ../XSD/hc08_V08.xsd">
<typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
<id nullFlavor="NI"/>
<code code="10" codeSystem="1.2.392.200119.6.1001"/>
<effectiveTime value="20240610"/>
<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
{patient_comment}<recordTarget><patientRole>
<id root="1.2.392.200119.6.101" extension="{INSURER}"/>
<id root="1.2.392.200119.6.204" extension="S{sym}"/>
<id root="1.2.392.200119.6.205" extension="{i}"/>
<patient><name>シケン ヒト{i}</name><administrativeGenderCode code="{sex}" codeSystem="1.2.392.200119.6.1104"/><birthTime value="{birth}"/></patient>
</patientRole></recordTarget>
<author><time value="20240610"/><assignedAuthor><id nullFlavor="NI"/><representedOrganization><id root="1.2.392.200119.6.102" extension="{INSTITUTION}"/><name>試験健診センター</name></representedOrganization></assignedAuthor></author>
<custodian><assignedCustodian><representedCustodianOrganization><id nullFlavor="NI"/></representedCustodianOrganization></assignedCustodian></custodian>
<documentationOf><serviceEvent><code code="010" codeSystem="1.2.392.200119.6.1002"/><effectiveTime value="20240601"/></serviceEvent></documentationOf>
<component><structuredBody><component><section>
<code code="01010" codeSystem="1.2.392.200119.6.1010"/>
{section_text}
"#,
        sym = i % 1000,
        patient_comment = match layout {
            Layout::Compact => "",
            Layout::Orca => "<!--受診者情報-->",
        },
        section_text = match layout {
            Layout::Compact => "<title>特定健診検査・問診結果</title>",
            Layout::Orca => "<text/>",
        },
    ));
    let mut e = Entries {
        out: &mut s,
        layout,
    };
    e.pq("9N001000000000001", &format!("{height:.1}"), "cm");
    e.pq("9N006000000000001", &format!("{weight:.1}"), "kg");
    e.pq("9N011000000000001", &format!("{bmi:.1}"), "kg/m2");
    e.pq(
        "9N016160100000001",
        &format!("{}.0", r.range(65, 105)),
        "cm",
    );
    e.pq(
        "9A751000000000001",
        &r.range(100, 170).to_string(),
        "mm[Hg]",
    );
    e.pq("9A761000000000001", &r.range(60, 100).to_string(), "mm[Hg]");
    e.pq("3F015000002327101", &r.range(40, 300).to_string(), "mg/dl");
    e.pq("3F070000002327101", &r.range(30, 90).to_string(), "mg/dl");
    e.pq("3F077000002327101", &r.range(70, 190).to_string(), "mg/dl");
    e.pq("3B035000002327201", &r.range(12, 60).to_string(), "U/l");
    e.pq("3B045000002327201", &r.range(8, 70).to_string(), "U/l");
    e.pq("3B090000002327101", &r.range(10, 120).to_string(), "U/l");
    e.pq("3D010000002227101", &r.range(75, 140).to_string(), "mg/dl");
    e.pq(
        "3D046000001906202",
        &format!("{}.{}", r.range(4, 7), r.range(0, 9)),
        "%",
    );
    e.cd(
        "1A020000000191111",
        &r.range(1, 2).to_string(),
        "1.2.392.200119.6.2102",
    );
    e.cd(
        "1A010000000191111",
        &r.range(1, 3).to_string(),
        "1.2.392.200119.6.2102",
    );
    e.pq(
        "2A030000001930101",
        &format!("{}.{}", r.range(11, 16), r.range(0, 9)),
        "g/dl",
    );
    e.pq(
        "3C020000002327101",
        &format!("{}.{}", r.range(3, 8), r.range(0, 9)),
        "mg/dl",
    );
    e.cd("9N141000000000011", "2", "1.2.392.200119.6.2202");
    e.cd(
        "9N701000000000011",
        &r.range(1, 2).to_string(),
        "1.2.392.200119.6.2003",
    );
    e.cd("9N706000000000011", "2", "1.2.392.200119.6.2003");
    e.cd("9N711000000000011", "2", "1.2.392.200119.6.2003");
    e.cd(
        "9N736000000000011",
        &r.range(1, 3).to_string(),
        "1.2.392.200119.6.24060",
    );
    e.st("9N511000000000049", "特記すべき所見なし");
    s.push_str("</section></component></structuredBody></component>\n</ClinicalDocument>\n");
    match layout {
        Layout::Compact => s,
        // Our own document always parses; were it not to, the compact form is still a document.
        Layout::Orca => indented(&s).unwrap_or(s),
    }
}

/// File name of person `i`'s document: `h<機関番号10><YYYYMMDD><N><種別><連番6>.xml`.
pub fn document_name(i: u64) -> String {
    format!(
        "h{INSTITUTION}20240610{}{}{:06}.xml",
        (i / 1_000_000) % 10,
        1,
        i % 1_000_000
    )
}

/// The ix08_V08.xml of an archive of `n` documents.
pub fn ix08(n: u64) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<index xmlns="https://www.mhlw.go.jp/stf/seisakunitsuite/bunya/0000161103.html">
<interactionType code="1"/>
<creationTime value="20240610"/>
<sender><id root="1.2.392.200119.6.102" extension="{INSTITUTION}"/></sender>
<receiver><id root="1.2.392.200119.6.101" extension="{INSURER}"/></receiver>
<serviceEventType code="1"/>
<totalRecordCount value="{n}"/>
</index>
"#
    )
}

/// Archive name for a submission of synthetic documents.
pub fn archive_name() -> String {
    format!("{INSTITUTION}_{INSURER}_202406100_1")
}

/// Writes a synthetic archive of persons `0..n` (deflated) to `w`, streaming.
pub fn write_archive<W: Write + Seek>(w: W, n: u64) -> zip::result::ZipResult<W> {
    let root = archive_name();
    let mut z = zip::ZipWriter::new(w);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    z.start_file(format!("{root}/ix08_V08.xml"), opts)?;
    z.write_all(ix08(n).as_bytes())?;
    for i in 0..n {
        z.start_file(format!("{root}/DATA/{}", document_name(i)), opts)?;
        z.write_all(cda_document(i).as_bytes())?;
    }
    z.finish()
}

#[cfg(test)]
// Test code: an unwrap failure is a test failure with its message.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_documents_convert() {
        for i in [0, 1, 2, 99_999] {
            let doc = cda_document(i);
            let rec = crate::cda::read_cda(doc.as_bytes(), &document_name(i)).unwrap();
            assert_eq!(rec.person.insured.as_ref().unwrap().number, i.to_string());
            assert!(rec.entries.len() >= 24);
        }
        assert_eq!(document_name(12).len(), 1 + 26 + 4);
    }

    #[test]
    fn an_orca_layout_document_holds_the_same_results_as_the_compact_one() {
        for i in [0, 7, 42] {
            let orca = cda_document_in(i, Layout::Orca);
            assert!(orca.contains("\n  <typeId "), "indented by two spaces");
            assert!(orca.contains("<!--身長-->"));
            assert!(orca.contains("<code code=\"9N001000000000001\" displayName=\"身長\"/>"));
            assert!(orca.contains("<value xsi:type=\"ST\">特記すべき所見なし</value>"));
            let compact = crate::cda::read_cda(cda_document(i).as_bytes(), "c.xml").unwrap();
            let orca = crate::cda::read_cda(orca.as_bytes(), "o.xml").unwrap();
            assert_eq!(orca.entries.len(), compact.entries.len());
            let mut ranged = 0;
            for (o, c) in orca.entries.iter().zip(&compact.entries) {
                assert_eq!(o.code.code, c.code.code);
                assert_eq!(o.value, c.value);
                assert!(c.reference_range.is_none());
                if let Some(range) = &o.reference_range {
                    ranged += 1;
                    assert!(range.low.is_some() && range.high.is_some(), "{range:?}");
                    assert!(o.interpretation.is_some(), "{}", o.code.code);
                }
            }
            assert_eq!(ranged, 10);
        }
    }
}
