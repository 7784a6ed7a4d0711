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

fn pq(out: &mut String, code: &str, value: &str, unit: &str) {
    out.push_str(&format!(
        "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"{code}\" codeSystem=\"1.2.392.200119.6.1005\"/><value xsi:type=\"PQ\" value=\"{value}\" unit=\"{unit}\"/></observation></entry>\n"
    ));
}

fn cd(out: &mut String, code: &str, value: &str, table: &str) {
    out.push_str(&format!(
        "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"{code}\" codeSystem=\"1.2.392.200119.6.1005\"/><value xsi:type=\"CD\" code=\"{value}\" codeSystem=\"{table}\"/></observation></entry>\n"
    ));
}

/// The CDA document of synthetic person `i` (about 9 KiB, 25 observations).
pub fn cda_document(i: u64) -> String {
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
<recordTarget><patientRole>
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
<title>特定健診検査・問診結果</title>
"#,
        sym = i % 1000,
    ));
    pq(&mut s, "9N001000000000001", &format!("{height:.1}"), "cm");
    pq(&mut s, "9N006000000000001", &format!("{weight:.1}"), "kg");
    pq(&mut s, "9N011000000000001", &format!("{bmi:.1}"), "kg/m2");
    pq(
        &mut s,
        "9N016160100000001",
        &format!("{}.0", r.range(65, 105)),
        "cm",
    );
    pq(
        &mut s,
        "9A751000000000001",
        &r.range(100, 170).to_string(),
        "mm[Hg]",
    );
    pq(
        &mut s,
        "9A761000000000001",
        &r.range(60, 100).to_string(),
        "mm[Hg]",
    );
    pq(
        &mut s,
        "3F015000002327101",
        &r.range(40, 300).to_string(),
        "mg/dl",
    );
    pq(
        &mut s,
        "3F070000002327101",
        &r.range(30, 90).to_string(),
        "mg/dl",
    );
    pq(
        &mut s,
        "3F077000002327101",
        &r.range(70, 190).to_string(),
        "mg/dl",
    );
    pq(
        &mut s,
        "3B035000002327201",
        &r.range(12, 60).to_string(),
        "U/l",
    );
    pq(
        &mut s,
        "3B045000002327201",
        &r.range(8, 70).to_string(),
        "U/l",
    );
    pq(
        &mut s,
        "3B090000002327101",
        &r.range(10, 120).to_string(),
        "U/l",
    );
    pq(
        &mut s,
        "3D010000002227101",
        &r.range(75, 140).to_string(),
        "mg/dl",
    );
    pq(
        &mut s,
        "3D046000001906202",
        &format!("{}.{}", r.range(4, 7), r.range(0, 9)),
        "%",
    );
    cd(
        &mut s,
        "1A020000000191111",
        &r.range(1, 2).to_string(),
        "1.2.392.200119.6.2102",
    );
    cd(
        &mut s,
        "1A010000000191111",
        &r.range(1, 3).to_string(),
        "1.2.392.200119.6.2102",
    );
    pq(
        &mut s,
        "2A030000001930101",
        &format!("{}.{}", r.range(11, 16), r.range(0, 9)),
        "g/dl",
    );
    pq(
        &mut s,
        "3C020000002327101",
        &format!("{}.{}", r.range(3, 8), r.range(0, 9)),
        "mg/dl",
    );
    cd(&mut s, "9N141000000000011", "2", "1.2.392.200119.6.2202");
    cd(
        &mut s,
        "9N701000000000011",
        &r.range(1, 2).to_string(),
        "1.2.392.200119.6.2003",
    );
    cd(&mut s, "9N706000000000011", "2", "1.2.392.200119.6.2003");
    cd(&mut s, "9N711000000000011", "2", "1.2.392.200119.6.2003");
    cd(
        &mut s,
        "9N736000000000011",
        &r.range(1, 3).to_string(),
        "1.2.392.200119.6.24060",
    );
    s.push_str(
        "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"9N511000000000049\" codeSystem=\"1.2.392.200119.6.1005\"/><value xsi:type=\"ST\">特記すべき所見なし</value></observation></entry>\n",
    );
    s.push_str("</section></component></structuredBody></component>\n</ClinicalDocument>\n");
    s
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
}
