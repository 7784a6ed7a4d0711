//! 特定健診 送付用ファイルアーカイブ (domain.md §1.2): a ZIP with `ix08_V08.xml` (交換用基本情報),
//! optional `su08_V08.xml` (集計情報), `DATA/[hg]<26 digits>.xml` (one CDA per person), `CLAIMS/`
//! (決済情報) and `XSD/`, usually under one root folder named like the ZIP.
//!
//! Streaming: members are read in batches of [`BATCH`] and converted in parallel (rayon), then
//! handed to the caller in name order; memory stays flat in the archive size. The caller decides
//! all-or-nothing (see the CLI): this module reports every document's result.

use std::collections::HashMap;
use std::io::{Read, Seek};
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
    /// Members under `CLAIMS/`.
    pub claims: u64,
    /// Things worth telling the user that do not make the archive invalid.
    pub warnings: Vec<String>,
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
    zip: &mut zip::ZipArchive<R>,
    index: usize,
    file: &str,
    name: &str,
) -> Result<Vec<u8>> {
    let member = format!("{file}!/{name}");
    let mut f = zip.by_index(index).map_err(|e| zip_err(&member, e))?;
    if f.size() > MAX_MEMBER {
        return Err(Error::new(
            Location::file(&member),
            ErrorKind::ArchiveLayout(format!("member larger than {MAX_MEMBER} bytes")),
        ));
    }
    let mut buf = Vec::with_capacity(usize::try_from(f.size()).unwrap_or(0).min(1 << 20));
    (&mut f)
        .take(MAX_MEMBER + 1)
        .read_to_end(&mut buf)
        .map_err(|e| zip_err(&member, e))?;
    if buf.len() as u64 > MAX_MEMBER {
        return Err(Error::new(
            Location::file(&member),
            ErrorKind::ArchiveLayout(format!("member larger than {MAX_MEMBER} bytes")),
        ));
    }
    Ok(buf)
}

/// Reads an archive, calling `each` with every 特定健診 document's result in member-name order.
/// `each` may stop the reading with `ControlFlow::Break`. Returns the archive facts, or the
/// archive-level error (broken ZIP, missing ix08, record count mismatch).
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
pub fn read_archive_with<R: Read + Seek, T: Send>(
    reader: R,
    file: &str,
    map: impl Fn(&Record) -> T + Sync,
    mut each: impl FnMut(Result<(Record, T)>) -> ControlFlow<()>,
) -> Result<ArchiveInfo> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| zip_err(file, e))?;
    let mut names: Vec<(String, usize)> = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let f = zip.by_index_raw(i).map_err(|e| zip_err(file, e))?;
        let name = f.name().map_err(|e| zip_err(file, e))?.into_owned();
        if !f.is_dir() {
            names.push((name, i));
        }
    }
    // Root folder: the common first path component when every member has one.
    let root = names
        .first()
        .and_then(|(n, _)| n.split_once('/').map(|(r, _)| r.to_owned()))
        .filter(|r| names.iter().all(|(n, _)| n.starts_with(&format!("{r}/"))))
        .unwrap_or_default();
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

    let ix = names
        .iter()
        .find(|(n, _)| rel(n) == "ix08_V08.xml")
        .cloned();
    let Some((ix_name, ix_index)) = ix else {
        return Err(Error::new(
            Location::file(file),
            ErrorKind::ArchiveLayout("missing ix08_V08.xml (交換用基本情報)".into()),
        ));
    };
    let ix_bytes = read_member(&mut zip, ix_index, file, &ix_name)?;
    read_ix08(&ix_bytes, &format!("{file}!/{ix_name}"), &mut info)?;

    let mut docs: Vec<(String, usize)> = Vec::new();
    for (n, i) in &names {
        let r = rel(n);
        match data_kind(&r) {
            Some('h') => docs.push((n.clone(), *i)),
            Some(_) => info.guidance_documents += 1,
            None if r.starts_with("DATA/") => {
                return Err(Error::new(
                    Location::file(&format!("{file}!/{n}")),
                    ErrorKind::ArchiveLayout("DATA member not named [hg]<26 digits>.xml".into()),
                ));
            }
            None if r.starts_with("CLAIMS/") => info.claims += 1,
            None if r.starts_with("XSD/") || r == "ix08_V08.xml" || r == "su08_V08.xml" => {}
            None => info.warnings.push(format!("unexpected member {n}")),
        }
    }
    docs.sort();
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

    // Person key → index of the first document (in `docs`), to report duplicates.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut doc_index = 0usize;
    for chunk in docs.chunks(BATCH) {
        let mut batch: Vec<(String, Result<Vec<u8>>)> = Vec::with_capacity(chunk.len());
        for (n, i) in chunk {
            batch.push((n.clone(), read_member(&mut zip, *i, file, n)));
        }
        let results: Vec<Result<(Record, T)>> = batch
            .into_par_iter()
            .map(|(n, bytes)| {
                let member = format!("{file}!/{n}");
                bytes
                    .and_then(|b| read_cda_in(&b, &member, Some(file)))
                    .map(|rec| {
                        let t = map(&rec);
                        (rec, t)
                    })
            })
            .collect();
        for r in results {
            let this = doc_index;
            doc_index += 1;
            let r = r.and_then(|(rec, t)| {
                if let Some(key) = rec.person.key() {
                    if let Some(&first) = seen.get(&key) {
                        let first = docs
                            .get(first)
                            .map_or_else(String::new, |(n, _)| format!("{file}!/{n}"));
                        return Err(Error::new(
                            Location::file(&rec.source.file)
                                .at_path("/ClinicalDocument/recordTarget/patientRole/id"),
                            ErrorKind::DuplicatePerson { key, first },
                        ));
                    }
                    seen.insert(key, this);
                }
                Ok((rec, t))
            });
            if each(r).is_break() {
                return Ok(info);
            }
        }
    }
    Ok(info)
}

/// Reads 交換用基本情報 (ix08_V08.xml) into `info`.
fn read_ix08(bytes: &[u8], file: &str, info: &mut ArchiveInfo) -> Result<()> {
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
            if local != "index" {
                return Err(Error::new(
                    Location::file(file)
                        .at_line(line(pos))
                        .at_path(format!("/{qname}")),
                    ErrorKind::WrongRoot {
                        found: local,
                        expected: "index",
                    },
                ));
            }
        }
        path.push(local.clone());
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
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
                        Location::file(file)
                            .at_line(line(pos))
                            .at_path("/index/totalRecordCount/@value"),
                        ErrorKind::InvalidField {
                            field: "totalRecordCount",
                            reason: format!("{v:?} is not a count"),
                        },
                    )
                })?);
            }
            _ => {}
        }
        if empty {
            path.pop();
        }
    }
    if let Some(t) = &info.interaction_type
        && t != "1"
        && t != "6"
    {
        info.warnings
            .push(format!("ix08 interactionType {t} (expected 1 or 6)"));
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
