//! 特定健診 送付用ファイルアーカイブ (domain.md §1.2): a ZIP with `ix08_V08.xml` (交換用基本情報),
//! optional `su08_V08.xml` (集計情報), `DATA/[hg]<26 digits>.xml` (one CDA per person), `CLAIMS/`
//! (決済情報) and `XSD/`, usually under one root folder named like the ZIP.
//!
//! ix08 is required and its `totalRecordCount` checked; su08 is read and checked against the
//! `CLAIMS/` members and ix08 (`SummaryMismatch`); `CLAIMS/` are counted, not converted (billing, not
//! health data); `DATA/g…` (hg08) are counted and skipped.
//!
//! Streaming: the ZIP (APPNOTE 6.3: end of central directory, ZIP64, central directory, local
//! headers; stored and deflated members) is read by the small reader below, which walks the central
//! directory without keeping it; members are read in batches of [`BATCH`] and converted in parallel
//! (rayon), then handed to the caller in name order; memory stays flat in the archive size (16 bytes
//! per document, ~20 per person). The caller decides all-or-nothing (see the CLI): this module
//! reports every document's result.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::ops::ControlFlow;

use quick_xml::Reader;
use quick_xml::events::Event;
use rayon::prelude::*;

use crate::cda::read_cda_in;
use crate::error::{Error, ErrorKind, Location, Result};
use crate::iphr::{Date, Record};

/// Documents converted in parallel per batch.
pub const BATCH: usize = 256;
/// Largest member accepted (a 特定健診 CDA is a few tens of KiB).
pub const MAX_MEMBER: u64 = 64 * 1024 * 1024;

/// Namespace of ix08/su08 in the 4th period.
pub const IX_NS: &str = "https://www.mhlw.go.jp/stf/seisakunitsuite/bunya/0000161103.html";
/// Namespace of ix08/su08 written by 2008–2010 tools.
pub const IX_NS_2007: &str = "http://tokuteikenshin.jp/checkup/2007";

/// What the archive's 交換用基本情報 (ix08) says, plus what was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Root folder inside the ZIP (empty when flat).
    pub root: String,
    /// ix08 `interactionType/@code` (1 or 6 seen in practice).
    pub interaction_type: Option<String>,
    /// ix08 `creationTime/@value`.
    pub creation: Option<Date>,
    /// ix08 `sender/id/@extension` (機関番号).
    pub sender: Option<String>,
    /// ix08 `receiver/id/@extension` (保険者番号).
    pub receiver: Option<String>,
    /// ix08 `serviceEventType/@code` (実施区分).
    pub service_event_type: Option<String>,
    /// ix08 `totalRecordCount/@value`.
    pub total_record_count: Option<u64>,
    /// 特定健診 documents (`DATA/h….xml`).
    pub checkup_documents: u64,
    /// 特定保健指導 documents (`DATA/g….xml`), skipped: hg08 is not read by this converter.
    pub guidance_documents: u64,
    /// Members under `CLAIMS/` (決済情報 cc08/gc08): counted and checked against su08, not
    /// converted — billing between institution and insurer is not health data of the iPHR.
    pub claims: u64,
    /// 集計情報 (`su08_V08.xml`), when the archive has one.
    pub summary: Option<Summary>,
    /// Things worth telling the user that do not make the archive invalid.
    pub warnings: Vec<String>,
}

/// 集計情報 (`su08_V08.xml`, domain.md §1.2): totals over the archive's 決済情報 (CLAIMS/).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// `serviceEventType/@code` (実施区分); must equal ix08's.
    pub service_event_type: Option<String>,
    /// `totalSubjectCount/@value`: persons billed; must equal the number of CLAIMS/ members.
    pub total_subject_count: u64,
    /// `totalCostAmount/@value` (円).
    pub total_cost_amount: Option<u64>,
    /// `totalPaymentAmount/@value` (円).
    pub total_payment_amount: Option<u64>,
    /// `totalPaymentByOtherProgram/@value` (円).
    pub total_payment_by_other_program: Option<u64>,
    /// `totalClaimAmount/@value` (円).
    pub total_claim_amount: Option<u64>,
}

/// Whether `name` (a path inside the archive, after the root) is a DATA document, and which kind.
fn data_kind(rel: &str) -> Option<char> {
    let f = rel.strip_prefix("DATA/")?;
    let stem = f.strip_suffix(".xml").or_else(|| f.strip_suffix(".XML"))?;
    let mut chars = stem.chars();
    let k = chars.next()?;
    let rest = chars.as_str();
    if matches!(k, 'h' | 'g') && rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_digit()) {
        Some(k)
    } else {
        None
    }
}

fn zip_err(file: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Location::file(file), ErrorKind::Zip(e.to_string()))
}

fn read_member<R: Read + Seek>(
    zip: &mut Zip<R>,
    rel: u64,
    file: &str,
    name: &str,
) -> Result<Vec<u8>> {
    let m = zip.member_at(file, rel)?;
    zip.read(&m, &format!("{file}!/{name}"))
}

/// One member as listed in the ZIP central directory (APPNOTE 4.3.12), kept only while needed.
#[derive(Debug, Clone, Default)]
struct Member {
    name: String,
    flags: u16,
    method: u16,
    crc32: u32,
    compressed: u64,
    size: u64,
    /// Offset of the local file header.
    offset: u64,
}

impl Member {
    fn is_dir(&self) -> bool {
        self.name.ends_with('/')
    }
}

/// Reads one central-directory entry into `m`; returns its length in bytes.
fn read_entry(r: &mut impl Read, var: &mut Vec<u8>, m: &mut Member, file: &str) -> Result<u64> {
    let bad = |msg: &str| zip_err(file, format!("invalid Zip archive: {msg}"));
    let mut fixed = [0u8; 46];
    r.read_exact(&mut fixed)
        .map_err(|_| bad("central directory truncated"))?;
    if le32(&fixed, 0) != 0x0201_4b50 {
        return Err(bad("bad central directory entry signature"));
    }
    let (nl, el, cl) = (
        usize::from(le16(&fixed, 28)),
        usize::from(le16(&fixed, 30)),
        usize::from(le16(&fixed, 32)),
    );
    var.resize(nl + el + cl, 0);
    r.read_exact(var)
        .map_err(|_| bad("central directory truncated"))?;
    m.flags = le16(&fixed, 8);
    m.method = le16(&fixed, 10);
    m.crc32 = le32(&fixed, 16);
    m.compressed = u64::from(le32(&fixed, 20));
    m.size = u64::from(le32(&fixed, 24));
    m.offset = u64::from(le32(&fixed, 42));
    // ZIP64 extended information (0x0001): only the fields that overflowed, in this order.
    let extra = &var[nl..nl + el];
    let mut p = 0;
    while p + 4 <= extra.len() {
        let (id, sz) = (le16(extra, p), usize::from(le16(extra, p + 2)));
        if id == 0x0001 {
            let mut q = p + 4;
            for v in [&mut m.size, &mut m.compressed, &mut m.offset] {
                if *v == 0xFFFF_FFFF && q + 8 <= p + 4 + sz {
                    *v = le64(extra, q);
                    q += 8;
                }
            }
        }
        p += 4 + sz;
    }
    let raw = &var[..nl];
    m.name.clear();
    match std::str::from_utf8(raw) {
        Ok(s) => m.name.push_str(s),
        // Not UTF-8: IBM437 per APPNOTE; bytes ≥ 0x80 are rare in 特定健診 archives.
        Err(_) => m.name.extend(raw.iter().map(|&b| char::from(b))),
    }
    Ok((46 + nl + el + cl) as u64)
}

/// Where the central directory is (from the end-of-central-directory records, ZIP64 included).
#[derive(Debug, Clone, Copy)]
struct CentralDir {
    entries: u64,
    offset: u64,
    size: u64,
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
    })
}

/// A minimal, streaming ZIP reader: the central directory is walked, never stored, so memory
/// does not grow with the number of members (the `zip` crate keeps an index entry of a few
/// hundred bytes per member). Reads stored and deflated members, checks sizes and CRC-32.
struct Zip<R> {
    r: R,
    len: u64,
    cd: CentralDir,
}

impl<R: Read + Seek> Zip<R> {
    fn open(mut r: R, file: &str) -> Result<Self> {
        let bad = |m: &str| zip_err(file, format!("invalid Zip archive: {m}"));
        let io = |e: std::io::Error| zip_err(file, e);
        let len = r.seek(SeekFrom::End(0)).map_err(io)?;
        // EOCD: 22 bytes + a comment of at most 65535 bytes.
        let tail = len.min(22 + 65_535);
        r.seek(SeekFrom::Start(len - tail)).map_err(io)?;
        let mut buf = vec![0u8; usize::try_from(tail).unwrap_or(0)];
        r.read_exact(&mut buf).map_err(io)?;
        let Some(at) = (0..buf.len().saturating_sub(21))
            .rev()
            .find(|&i| le32(&buf, i) == 0x0605_4b50)
        else {
            return Err(bad(
                "could not find the end of the central directory (truncated?)",
            ));
        };
        let eocd_pos = len - tail + at as u64;
        let mut cd = CentralDir {
            entries: u64::from(le16(&buf, at + 10)),
            size: u64::from(le32(&buf, at + 12)),
            offset: u64::from(le32(&buf, at + 16)),
        };
        if cd.entries == 0xFFFF || cd.size == 0xFFFF_FFFF || cd.offset == 0xFFFF_FFFF {
            // ZIP64: the locator sits just before the EOCD and points at the ZIP64 EOCD.
            let loc = at
                .checked_sub(20)
                .filter(|&l| le32(&buf, l) == 0x0706_4b50)
                .ok_or_else(|| bad("ZIP64 end of central directory locator missing"))?;
            let z64 = le64(&buf, loc + 8);
            let mut rec = [0u8; 56];
            if z64.checked_add(56).is_none_or(|e| e > eocd_pos) {
                return Err(bad("ZIP64 end of central directory out of range"));
            }
            r.seek(SeekFrom::Start(z64)).map_err(io)?;
            r.read_exact(&mut rec).map_err(io)?;
            if le32(&rec, 0) != 0x0606_4b50 {
                return Err(bad("ZIP64 end of central directory not found"));
            }
            cd = CentralDir {
                entries: le64(&rec, 32),
                size: le64(&rec, 40),
                offset: le64(&rec, 48),
            };
        }
        if cd.offset.checked_add(cd.size).is_none_or(|e| e > eocd_pos) {
            return Err(bad("central directory out of range (truncated?)"));
        }
        Ok(Self { r, len, cd })
    }

    /// Calls `f` with every member of the central directory, in directory order, and the
    /// member's entry offset within the directory (for [`Self::member_at`]).
    fn each(&mut self, file: &str, mut f: impl FnMut(u64, &Member) -> Result<()>) -> Result<()> {
        self.r
            .seek(SeekFrom::Start(self.cd.offset))
            .map_err(|e| zip_err(file, e))?;
        let mut dir =
            std::io::BufReader::with_capacity(64 * 1024, (&mut self.r).take(self.cd.size));
        let mut var = Vec::new();
        let mut m = Member::default();
        let mut rel = 0u64;
        for _ in 0..self.cd.entries {
            let n = read_entry(&mut dir, &mut var, &mut m, file)?;
            f(rel, &m)?;
            rel += n;
        }
        Ok(())
    }

    /// The member whose central-directory entry is at offset `rel` of the directory.
    fn member_at(&mut self, file: &str, rel: u64) -> Result<Member> {
        if rel >= self.cd.size {
            return Err(zip_err(file, "invalid Zip archive: entry out of range"));
        }
        self.r
            .seek(SeekFrom::Start(self.cd.offset + rel))
            .map_err(|e| zip_err(file, e))?;
        let mut m = Member::default();
        let mut var = Vec::new();
        read_entry(
            &mut (&mut self.r).take(self.cd.size - rel),
            &mut var,
            &mut m,
            file,
        )?;
        Ok(m)
    }

    /// Reads and decompresses one member, checking its size and CRC-32.
    fn read(&mut self, m: &Member, member: &str) -> Result<Vec<u8>> {
        let err = |e: &dyn std::fmt::Display| zip_err(member, e);
        if m.size > MAX_MEMBER {
            return Err(Error::new(
                Location::file(member),
                ErrorKind::ArchiveLayout(format!("member larger than {MAX_MEMBER} bytes")),
            ));
        }
        if m.flags & 1 != 0 {
            return Err(err(&"encrypted members are not supported"));
        }
        if m.offset.checked_add(30).is_none_or(|e| e > self.len) {
            return Err(err(&"local header out of range (truncated?)"));
        }
        self.r
            .seek(SeekFrom::Start(m.offset))
            .map_err(|e| err(&e))?;
        let mut h = [0u8; 30];
        self.r.read_exact(&mut h).map_err(|e| err(&e))?;
        if le32(&h, 0) != 0x0403_4b50 {
            return Err(err(&"bad local header signature"));
        }
        let skip = i64::from(le16(&h, 26)) + i64::from(le16(&h, 28));
        self.r.seek(SeekFrom::Current(skip)).map_err(|e| err(&e))?;
        let data = (&mut self.r).take(m.compressed);
        let mut buf = Vec::with_capacity(usize::try_from(m.size).unwrap_or(0).min(1 << 20));
        let limit = MAX_MEMBER + 1;
        match m.method {
            0 => data.take(limit).read_to_end(&mut buf),
            8 => flate2::read::DeflateDecoder::new(data)
                .take(limit)
                .read_to_end(&mut buf),
            other => return Err(err(&format!("unsupported compression method {other}"))),
        }
        .map_err(|e| err(&e))?;
        if buf.len() as u64 > MAX_MEMBER {
            return Err(Error::new(
                Location::file(member),
                ErrorKind::ArchiveLayout(format!("member larger than {MAX_MEMBER} bytes")),
            ));
        }
        if buf.len() as u64 != m.size {
            return Err(err(&format!(
                "member is {} bytes, the directory says {} (truncated?)",
                buf.len(),
                m.size
            )));
        }
        if crc32fast::hash(&buf) != m.crc32 {
            return Err(err(&"invalid checksum"));
        }
        Ok(buf)
    }
}

/// Sort key of a `DATA/h<26 digits>.xml` member, packed into one `u128` (16 bytes per document,
/// the only per-document state kept before conversion): the 26 digits (< 2^87) in the high bits,
/// then whether the extension is lower case (`.XML` sorts before `.xml`), then the offset of the
/// member's entry in the central directory (32 bits). Ordering the keys orders the members by name (all share the `…/DATA/h` prefix).
fn doc_key(rel: &str, index: u64) -> Option<u128> {
    let f = rel.strip_prefix("DATA/h")?;
    let (digits, upper) = match (f.strip_suffix(".xml"), f.strip_suffix(".XML")) {
        (Some(d), _) => (d, 1u128),
        (None, Some(d)) => (d, 0u128),
        (None, None) => return None,
    };
    if digits.len() != 26 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = digits
        .bytes()
        .fold(0u128, |n, b| n * 10 + u128::from(b - b'0'));
    let index = u32::try_from(index).ok()?;
    Some((n << 33) | (upper << 32) | u128::from(index))
}

/// The central-directory entry offset of a packed document key.
fn key_index(key: u128) -> u64 {
    (key & 0xFFFF_FFFF) as u64
}

/// 64-bit hash of a person key (for the duplicate index; collisions are resolved exactly).
fn person_hash(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Reads an archive, calling `each` with every 特定健診 document's result in member-name order.
/// `each` may stop the reading with `ControlFlow::Break`. Returns the archive facts, or the
/// archive-level error (broken ZIP, missing ix08, record count mismatch, su08 inconsistent).
///
/// A person appearing in two documents makes the second one an error
/// ([`ErrorKind::DuplicatePerson`]).
pub fn read_archive<R: Read + Seek>(
    reader: R,
    file: &str,
    mut each: impl FnMut(Result<Record>) -> ControlFlow<()>,
) -> Result<ArchiveInfo> {
    read_archive_with(reader, file, |_| (), |r| each(r.map(|(rec, ())| rec)))
}

/// Like [`read_archive`], but also runs `map` on every record inside the parallel workers (e.g. to
/// serialise it), handing `each` the record's result together with `map`'s output.
///
/// Memory: the central directory is walked, not stored (see `Zip`); the reader keeps 16 bytes per
/// 特定健診 document (a packed sort key, see `doc_key`) and about 20 bytes per distinct person (a
/// 64-bit hash of the person key and the document's position); member names are looked up again
/// when needed, and documents are read, converted and handed on in batches of [`BATCH`].
pub fn read_archive_with<R: Read + Seek, T: Send>(
    reader: R,
    file: &str,
    map: impl Fn(&Record) -> T + Sync,
    mut each: impl FnMut(Result<(Record, T)>) -> ControlFlow<()>,
) -> Result<ArchiveInfo> {
    let mut zip = Zip::open(reader, file)?;
    if zip.cd.size > u64::from(u32::MAX) {
        return Err(zip_err(
            file,
            "central directory larger than 4 GiB is not supported",
        ));
    }
    // Pass 1 over the central directory: the root folder, i.e. the common first path component
    // when every (non-directory) member has one.
    let mut root: Option<String> = None;
    let mut flat = false;
    let mut any = false;
    zip.each(file, |_, m| {
        if m.is_dir() {
            return Ok(());
        }
        let name = &m.name;
        if !any {
            any = true;
            root = name.split_once('/').map(|(r, _)| r.to_owned());
            flat = root.is_none();
        } else if let Some(r) = &root
            && !(name.len() > r.len()
                && name.starts_with(r.as_str())
                && name.as_bytes()[r.len()] == b'/')
        {
            flat = true;
        }
        Ok(())
    })?;
    let root = if flat {
        String::new()
    } else {
        root.unwrap_or_default()
    };
    let rel = |n: &str| -> String {
        if root.is_empty() {
            n.to_owned()
        } else {
            n[root.len() + 1..].to_owned()
        }
    };
    let mut info = ArchiveInfo {
        root: root.clone(),
        ..ArchiveInfo::default()
    };
    let stem = std::path::Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !root.is_empty() && root != stem {
        info.warnings.push(format!(
            "root folder {root:?} differs from the archive name {stem:?}"
        ));
    }

    // Pass 2: ix08 / su08, DATA members (packed keys), CLAIMS, anything else.
    let mut ix: Option<(String, u64)> = None;
    let mut su: Option<(String, u64)> = None;
    let mut docs: Vec<u128> = Vec::new();
    let mut bad_data: Option<String> = None;
    zip.each(file, |i, m| {
        if m.is_dir() {
            return Ok(());
        }
        let n = &m.name;
        let r = rel(n);
        if let Some(k) = doc_key(&r, i) {
            docs.push(k);
            return Ok(());
        }
        match data_kind(&r) {
            Some(_) => info.guidance_documents += 1,
            None if r.starts_with("DATA/") => {
                bad_data.get_or_insert_with(|| n.clone());
            }
            None if r.starts_with("CLAIMS/") => info.claims += 1,
            None if r == "ix08_V08.xml" => {
                ix.get_or_insert_with(|| (n.clone(), i));
            }
            None if r == "su08_V08.xml" => {
                su.get_or_insert_with(|| (n.clone(), i));
            }
            None if r.starts_with("XSD/") => {}
            None => info.warnings.push(format!("unexpected member {n}")),
        }
        Ok(())
    })?;
    let Some((ix_name, ix_index)) = ix else {
        return Err(Error::new(
            Location::file(file),
            ErrorKind::ArchiveLayout("missing ix08_V08.xml (交換用基本情報)".into()),
        ));
    };
    let ix_bytes = read_member(&mut zip, ix_index, file, &ix_name)?;
    read_ix08(&ix_bytes, &format!("{file}!/{ix_name}"), &mut info)?;
    if let Some(n) = bad_data {
        return Err(Error::new(
            Location::file(&format!("{file}!/{n}")),
            ErrorKind::ArchiveLayout("DATA member not named [hg]<26 digits>.xml".into()),
        ));
    }
    docs.sort_unstable();
    info.checkup_documents = docs.len() as u64;
    if info.guidance_documents > 0 {
        info.warnings.push(format!(
            "{} 特定保健指導 documents (DATA/g…) skipped: hg08 is not read by this converter",
            info.guidance_documents
        ));
    }
    if let Some(total) = info.total_record_count {
        let found = info.checkup_documents + info.guidance_documents;
        if total != found {
            return Err(Error::new(
                Location::file(&format!("{file}!/{ix_name}"))
                    .at_path("/index/totalRecordCount/@value"),
                ErrorKind::CountMismatch {
                    declared: total,
                    found,
                },
            ));
        }
    }
    match su {
        Some((su_name, su_index)) => {
            let bytes = read_member(&mut zip, su_index, file, &su_name)?;
            let su_file = format!("{file}!/{su_name}");
            let summary = read_su08(&bytes, &su_file)?;
            check_summary(&summary, &info, &su_file)?;
            info.summary = Some(summary);
        }
        None if info.claims > 0 => info.warnings.push(format!(
            "{} CLAIMS/ members (決済情報) but no su08_V08.xml (集計情報)",
            info.claims
        )),
        None => {}
    }
    // CLAIMS/ (決済情報 cc08/gc08) are counted and checked against su08 but not converted, on
    // purpose: they are billing between institution and insurer (unit prices, co-payments,
    // amounts claimed), not health data of the person, and the iPHR has no place for them.

    // Person-key hash → position in `docs` of the first document with that key; keys whose hash
    // collides with another person's are kept in full in `collided` (exact, and rare).
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut collided: HashMap<String, u32> = HashMap::new();
    let mut doc_index = 0usize;
    for chunk in docs.chunks(BATCH) {
        let mut batch: Vec<(String, Result<Vec<u8>>)> = Vec::with_capacity(chunk.len());
        for &k in chunk {
            let m = zip.member_at(file, key_index(k))?;
            let member = format!("{file}!/{}", m.name);
            let bytes = zip.read(&m, &member);
            batch.push((member, bytes));
        }
        let results: Vec<Result<(Record, T)>> = batch
            .into_par_iter()
            .map(|(member, bytes)| {
                bytes
                    .and_then(|b| read_cda_in(&b, &member, Some(file)))
                    .map(|rec| {
                        let t = map(&rec);
                        (rec, t)
                    })
            })
            .collect();
        for r in results {
            let this = u32::try_from(doc_index).unwrap_or(u32::MAX);
            doc_index += 1;
            let r = match r {
                Ok((rec, t)) => match rec.person.key() {
                    Some(key) => {
                        match first_with_key(
                            &mut zip,
                            file,
                            &docs,
                            &mut seen,
                            &mut collided,
                            &key,
                            this,
                        )? {
                            Some(first) => Err(Error::new(
                                Location::file(&rec.source.file)
                                    .at_path("/ClinicalDocument/recordTarget/patientRole/id"),
                                ErrorKind::DuplicatePerson { key, first },
                            )),
                            None => Ok((rec, t)),
                        }
                    }
                    None => Ok((rec, t)),
                },
                Err(e) => Err(e),
            };
            if each(r).is_break() {
                return Ok(info);
            }
        }
    }
    Ok(info)
}

/// Looks `key` up in the duplicate index and records it for document `this`; returns the member
/// name of an earlier document of the same person. On a hash hit, the earlier document is read
/// again and its person key compared, so a hash collision never reports a false duplicate.
fn first_with_key<R: Read + Seek>(
    zip: &mut Zip<R>,
    file: &str,
    docs: &[u128],
    seen: &mut HashMap<u64, u32>,
    collided: &mut HashMap<String, u32>,
    key: &str,
    this: u32,
) -> Result<Option<String>> {
    let name_of = |zip: &mut Zip<R>, pos: u32| -> Result<String> {
        match docs.get(pos as usize) {
            Some(&k) => Ok(zip.member_at(file, key_index(k))?.name),
            None => Ok(String::new()),
        }
    };
    if let Some(&pos) = collided.get(key) {
        return Ok(Some(format!("{file}!/{}", name_of(zip, pos)?)));
    }
    let h = person_hash(key);
    let Some(&pos) = seen.get(&h) else {
        seen.insert(h, this);
        return Ok(None);
    };
    let name = name_of(zip, pos)?;
    let member = format!("{file}!/{name}");
    let Some(&first) = docs.get(pos as usize) else {
        return Ok(None);
    };
    let same = read_member(zip, key_index(first), file, &name)
        .and_then(|b| read_cda_in(&b, &member, Some(file)))
        .ok()
        .and_then(|r| r.person.key())
        .is_some_and(|k| k == key);
    if same {
        Ok(Some(member))
    } else {
        collided.insert(key.to_owned(), this);
        Ok(None)
    }
}

/// Checks 集計情報 against what the archive holds.
fn check_summary(s: &Summary, info: &ArchiveInfo, file: &str) -> Result<()> {
    if s.total_subject_count != info.claims {
        return Err(Error::new(
            Location::file(file).at_path("/summary/totalSubjectCount/@value"),
            ErrorKind::SummaryMismatch {
                field: "totalSubjectCount",
                declared: s.total_subject_count.to_string(),
                found: format!("{} CLAIMS/ members", info.claims),
            },
        ));
    }
    if let (Some(a), Some(b)) = (&s.service_event_type, &info.service_event_type)
        && a != b
    {
        return Err(Error::new(
            Location::file(file).at_path("/summary/serviceEventType/@code"),
            ErrorKind::SummaryMismatch {
                field: "serviceEventType",
                declared: a.clone(),
                found: format!("{b} in ix08_V08.xml"),
            },
        ));
    }
    Ok(())
}

/// Reads 集計情報 (su08_V08.xml, root `summary`, same namespaces as ix08).
fn read_su08(bytes: &[u8], file: &str) -> Result<Summary> {
    let mut s = Summary::default();
    let mut count = None;
    read_simple_xml(bytes, file, "summary", |path, attrs, at| {
        let num = |name: &'static str, v: Option<&String>| -> Result<Option<u64>> {
            match v {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::new(
                        at(format!("/summary/{name}/@value")),
                        ErrorKind::InvalidField {
                            field: name,
                            reason: format!("{v:?} is not a non-negative integer"),
                        },
                    )
                }),
            }
        };
        match path {
            ["summary", "serviceEventType"] => s.service_event_type = attrs.get("code").cloned(),
            ["summary", "totalSubjectCount"] => {
                count = num("totalSubjectCount", attrs.get("value"))?;
            }
            ["summary", "totalCostAmount"] => {
                s.total_cost_amount = num("totalCostAmount", attrs.get("value"))?;
            }
            ["summary", "totalPaymentAmount"] => {
                s.total_payment_amount = num("totalPaymentAmount", attrs.get("value"))?;
            }
            ["summary", "totalPaymentByOtherProgram"] => {
                s.total_payment_by_other_program =
                    num("totalPaymentByOtherProgram", attrs.get("value"))?;
            }
            ["summary", "totalClaimAmount"] => {
                s.total_claim_amount = num("totalClaimAmount", attrs.get("value"))?;
            }
            _ => {}
        }
        Ok(())
    })?;
    let Some(c) = count else {
        return Err(Error::new(
            Location::file(file).at_path("/summary/totalSubjectCount"),
            ErrorKind::Missing("totalSubjectCount (su08 集計情報)"),
        ));
    };
    s.total_subject_count = c;
    Ok(s)
}

/// Reads 交換用基本情報 (ix08_V08.xml) into `info`.
fn read_ix08(bytes: &[u8], file: &str, info: &mut ArchiveInfo) -> Result<()> {
    read_simple_xml(bytes, file, "index", |path, attrs, at| {
        match path {
            ["index", "interactionType"] => info.interaction_type = attrs.get("code").cloned(),
            ["index", "creationTime"] => {
                info.creation = attrs.get("value").and_then(|v| v.parse().ok());
            }
            ["index", "sender", "id"] => info.sender = attrs.get("extension").cloned(),
            ["index", "receiver", "id"] => info.receiver = attrs.get("extension").cloned(),
            ["index", "serviceEventType"] => info.service_event_type = attrs.get("code").cloned(),
            ["index", "totalRecordCount"] => {
                let v = attrs.get("value").cloned().unwrap_or_default();
                info.total_record_count = Some(v.trim().parse().map_err(|_| {
                    Error::new(
                        at("/index/totalRecordCount/@value".into()),
                        ErrorKind::InvalidField {
                            field: "totalRecordCount",
                            reason: format!("{v:?} is not a count"),
                        },
                    )
                })?);
            }
            _ => {}
        }
        Ok(())
    })?;
    if let Some(t) = &info.interaction_type
        && t != "1"
        && t != "6"
    {
        info.warnings
            .push(format!("ix08 interactionType {t} (expected 1 or 6)"));
    }
    Ok(())
}

/// Streams a small ix08/su08 document whose root must be `root` in [`IX_NS`] or [`IX_NS_2007`],
/// calling `element` with the path of local names, the attributes and a locator builder
/// (`at(xpath)` gives file + line of the element) for every element.
fn read_simple_xml(
    bytes: &[u8],
    file: &str,
    root: &'static str,
    mut element: impl FnMut(
        &[&str],
        &HashMap<String, String>,
        &dyn Fn(String) -> Location,
    ) -> Result<()>,
) -> Result<()> {
    let text = std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
        .map_err(|_| Error::new(Location::file(file), ErrorKind::Encoding("UTF-8")))?;
    let mut r = Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let line = |pos: u64| {
        1 + text.as_bytes()[..usize::try_from(pos).unwrap_or(0).min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64
    };
    loop {
        let pos = r.buffer_position();
        let ev = r.read_event().map_err(|e| {
            Error::new(
                Location::file(file).at_line(line(r.error_position())),
                ErrorKind::Xml(e.to_string()),
            )
        })?;
        let (e, empty) = match ev {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                path.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let qname = e.name().0.to_owned();
        let local = qname.rsplit(':').next().unwrap_or(&qname).to_owned();
        let mut attrs: HashMap<String, String> = HashMap::new();
        for a in e.attributes() {
            let a = a.map_err(|err| {
                Error::new(
                    Location::file(file).at_line(line(pos)),
                    ErrorKind::Xml(err.to_string()),
                )
            })?;
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| {
                    Error::new(
                        Location::file(file).at_line(line(pos)),
                        ErrorKind::Xml(err.to_string()),
                    )
                })?;
            attrs.insert(a.key.0.to_owned(), v.into_owned());
        }
        if path.is_empty() {
            let prefix = qname.split_once(':').map(|(p, _)| p);
            let key = prefix.map_or("xmlns".to_owned(), |p| format!("xmlns:{p}"));
            let ns = attrs.get(&key).cloned().unwrap_or_default();
            if ns != IX_NS && ns != IX_NS_2007 {
                return Err(Error::new(
                    Location::file(file)
                        .at_line(line(pos))
                        .at_path(format!("/{qname}")),
                    ErrorKind::WrongNamespace {
                        found: ns,
                        expected: IX_NS,
                    },
                ));
            }
            if local != root {
                return Err(Error::new(
                    Location::file(file)
                        .at_line(line(pos))
                        .at_path(format!("/{qname}")),
                    ErrorKind::WrongRoot {
                        found: local,
                        expected: root,
                    },
                ));
            }
        }
        path.push(local);
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        let at = |xp: String| Location::file(file).at_line(line(pos)).at_path(xp);
        element(&p, &attrs, &at)?;
        if empty {
            path.pop();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_member_names() {
        assert_eq!(data_kind("DATA/h13999999912024060101000001.xml"), Some('h'));
        assert_eq!(data_kind("DATA/g13999999912024060101000001.xml"), Some('g'));
        assert_eq!(data_kind("DATA/h1399999991202406010100001.xml"), None);
        assert_eq!(data_kind("DATA/x13999999912024060101000001.xml"), None);
    }
}
