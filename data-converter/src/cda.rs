//! 特定健診 CDA reader (hc08_V08; domain.md §1.3–§1.6): one `ClinicalDocument` → one [`Record`].
//!
//! Streaming over quick-xml events: no DOM is built, memory is the document bytes plus the record.
//! Header: 報告区分, creation date, insurer ids (.6.101/.6.204/.6.205/.6.211), name (カナ), sex,
//! birth date, postal code, institution (.6.102), 受診券 participant, プログラム種別 and 健診実施日.
//! Body: sections (.6.1010) and every observation form: PQ, CD/CO, ST, reference range
//! (IVL_PQ), interpretation, out of input range (CD H/L in 2.16.840.1.113883.5.83 beside the PQ),
//! not performed (`negationInd`), cannot measure (`nullFlavor`), groups (`entryRelationship`
//! COMP/RSON under a parent whose code is `nullFlavor="NA"`), per-item author (9N516/9N526).
//! Errors carry file, line and XPath, and the item code once it is known.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::catalogue::{Catalogue, Item, ValueType};
use crate::error::{Error, ErrorKind, Location, Result};
use crate::iphr::{
    Absent, Bound, Code, CompactString, ContentHash, Date, Decimal, Effective, Entry, EntryKind,
    Header, Identifier, InstitutionNumber, InsuredId, InsurerNumber, Interpretation, Locator,
    Organization, Person, Provenance, Record, ReferenceRange, Relation, SCHEMA, Sex, Source,
    SourceFormat, Unit, Value, systems,
};

/// Namespace of hc08 documents.
pub const HL7_NS: &str = "urn:hl7-org:v3";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
const ITEM_OID: &str = "1.2.392.200119.6.1005";
const OUT_OF_RANGE_OID: &str = "2.16.840.1.113883.5.83";

/// Converter name and version written in provenance.
pub fn converter_id() -> Cow<'static, str> {
    Cow::Borrowed(concat!("data-converter ", env!("CARGO_PKG_VERSION")))
}

/// Reads one standalone 特定健診 CDA document.
pub fn read_cda(bytes: &[u8], file: &str) -> Result<Record> {
    read_cda_in(bytes, file, None)
}

/// Reads one CDA document that is a member of `archive` (used for the source's `archive` field).
pub fn read_cda_in(bytes: &[u8], file: &str, archive: Option<&str>) -> Result<Record> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // quick-xml checks UTF-8 event by event; `Parser::new` also checks the whole document once,
    // so that attribute values can be borrowed from it.
    let mut p = Parser::new(Catalogue::builtin(), file, bytes);
    let r = p.run();
    let mut entries = std::mem::take(&mut p.entries);
    let r = r.and_then(|()| {
        p.share_locators(&mut entries);
        // Room for the two derived entries that the judgements add.
        entries.reserve(2);
        // Sized like this document's (bounded: one large document must not make every later
        // record's buffer large).
        let next = Vec::with_capacity(entries.capacity().min(258));
        p.finish(bytes, archive, std::mem::replace(&mut entries, next))
    });
    entries.clear();
    ENTRY_POOL.set(entries);
    SCRATCH.set(p.s.cleared());
    r
}

/// The reader's working buffers that hold no borrowed data, kept per thread from one document
/// to the next (cleared, capacity kept).
#[derive(Default)]
struct Scratch {
    path: Vec<N>,
    frames: Vec<Frame>,
    /// XPath of the open element, kept up to date element by element.
    xp: String,
    /// (key of a child name, count) of the open elements, a stack region per element.
    counts: Vec<(u64, u32)>,
    capture_buf: String,
    /// The XPaths of the header values, one after the other (see [`HeaderValue`]).
    header_xpaths: String,
    /// The entries' locators (XPaths), one after the other in entry order.
    locs: String,
    /// Where each entry's locator ends in `locs`.
    loc_ends: Vec<usize>,
}

impl Scratch {
    /// Emptied, capacity kept (bounded, so that one large document does not keep a lot).
    fn cleared(mut self) -> Self {
        if self.locs.capacity() > 1 << 16 || self.loc_ends.capacity() > 1 << 12 {
            return Self::default();
        }
        self.path.clear();
        self.frames.clear();
        self.xp.clear();
        self.counts.clear();
        self.capture_buf.clear();
        self.header_xpaths.clear();
        self.locs.clear();
        self.loc_ends.clear();
        self
    }
}

thread_local! {
    /// The (empty) entry buffer for the next document on this thread. The record takes the
    /// buffer it was read into, and the next one is allocated after that: a large allocation at
    /// the start of every document made glibc's allocator merge its free lists each time, which
    /// slowed down every small allocation after it.
    static ENTRY_POOL: std::cell::Cell<Vec<Entry>> = const { std::cell::Cell::new(Vec::new()) };
    /// The reader's buffers for the next document on this thread.
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

/// The line of the event (markup or text) read from `pos` on: outside captured text the reader
/// skips whitespace without an event ([`Parser::run`]), so `pos` may be the start of that
/// whitespace, which is skipped here.
fn event_line(bytes: &[u8], pos: u64) -> u64 {
    let pos = usize::try_from(pos).unwrap_or(usize::MAX).min(bytes.len());
    let ws = bytes[pos..]
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    line_of(bytes, pos + ws)
}

fn line_of(bytes: &[u8], pos: usize) -> u64 {
    let pos = pos.min(bytes.len());
    1 + memchr_count(&bytes[..pos])
}

fn memchr_count(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// Element names the reader cares about; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum N {
    ClinicalDocument,
    Id,
    Code,
    EffectiveTime,
    RecordTarget,
    PatientRole,
    Patient,
    Name,
    AdministrativeGenderCode,
    BirthTime,
    Addr,
    PostalCode,
    Author,
    AssignedAuthor,
    AssignedPerson,
    RepresentedOrganization,
    Participant,
    AssociatedEntity,
    ScopingOrganization,
    DocumentationOf,
    ServiceEvent,
    Low,
    High,
    Component,
    StructuredBody,
    Section,
    Entry,
    Observation,
    Value,
    InterpretationCode,
    MethodCode,
    ReferenceRange,
    ObservationRange,
    EntryRelationship,
    Text,
    Other,
}

/// `b` starts with `lit` (a fixed-size comparison, inlined: no call to `memcmp`).
#[inline(always)]
fn starts<const L: usize>(b: &[u8], lit: &[u8; L]) -> bool {
    b.first_chunk::<L>() == Some(lit)
}

/// The [`N`] of a local name (by length and first byte, then one fixed-size comparison).
#[inline]
fn intern(local: &str) -> N {
    let b = local.as_bytes();
    match (b.len(), b.first().copied().unwrap_or(0)) {
        (2, b'i') if starts(b, b"id") => N::Id,
        (3, b'l') if starts(b, b"low") => N::Low,
        (4, b'a') if starts(b, b"addr") => N::Addr,
        (4, b'c') if starts(b, b"code") => N::Code,
        (4, b'h') if starts(b, b"high") => N::High,
        (4, b'n') if starts(b, b"name") => N::Name,
        (4, b't') if starts(b, b"text") => N::Text,
        (5, b'e') if starts(b, b"entry") => N::Entry,
        (5, b'v') if starts(b, b"value") => N::Value,
        (6, b'a') if starts(b, b"author") => N::Author,
        (7, b'p') if starts(b, b"patient") => N::Patient,
        (7, b's') if starts(b, b"section") => N::Section,
        (9, b'b') if starts(b, b"birthTime") => N::BirthTime,
        (9, b'c') if starts(b, b"component") => N::Component,
        (10, b'm') if starts(b, b"methodCode") => N::MethodCode,
        (10, b'p') if starts(b, b"postalCode") => N::PostalCode,
        (11, b'o') if starts(b, b"observation") => N::Observation,
        (11, b'p') if starts(b, b"patientRole") => N::PatientRole,
        (11, b'p') if starts(b, b"participant") => N::Participant,
        (12, b'r') if starts(b, b"recordTarget") => N::RecordTarget,
        (12, b's') if starts(b, b"serviceEvent") => N::ServiceEvent,
        (13, b'e') if starts(b, b"effectiveTime") => N::EffectiveTime,
        (14, b'a') if starts(b, b"assignedPerson") => N::AssignedPerson,
        (14, b'a') if starts(b, b"assignedAuthor") => N::AssignedAuthor,
        (14, b'r') if starts(b, b"referenceRange") => N::ReferenceRange,
        (14, b's') if starts(b, b"structuredBody") => N::StructuredBody,
        (15, b'd') if starts(b, b"documentationOf") => N::DocumentationOf,
        (16, b'C') if starts(b, b"ClinicalDocument") => N::ClinicalDocument,
        (16, b'a') if starts(b, b"associatedEntity") => N::AssociatedEntity,
        (16, b'o') if starts(b, b"observationRange") => N::ObservationRange,
        (17, b'e') if starts(b, b"entryRelationship") => N::EntryRelationship,
        (18, b'i') if starts(b, b"interpretationCode") => N::InterpretationCode,
        (19, b's') if starts(b, b"scopingOrganization") => N::ScopingOrganization,
        (23, b'r') if starts(b, b"representedOrganization") => N::RepresentedOrganization,
        (24, b'a') if starts(b, b"administrativeGenderCode") => N::AdministrativeGenderCode,
        _ => N::Other,
    }
}

/// FNV-1a of an element name (for XPath sibling indexes).
fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One open element: where its `/name[index]` step starts in the XPath buffer, and where the
/// counts of its children's names start in [`Parser::counts`].
#[derive(Default, Clone, Copy)]
struct Frame {
    xp_len: usize,
    counts_start: usize,
}

/// Sibling-count key of an element name (`known` is `intern(local)`, whatever the prefix).
fn name_key(known: N, local: &str) -> u64 {
    if known == N::Other {
        name_hash(local) | 1 << 63
    } else {
        known as u64
    }
}

/// A borrowed attribute value (owned only when normalisation changed it).
type Val<'a> = Option<Cow<'a, str>>;

/// Attributes of one element that the reader looks at, borrowed from the document bytes.
#[derive(Default, Debug, Clone, PartialEq)]
struct Attrs<'a> {
    root: Val<'a>,
    extension: Val<'a>,
    code: Val<'a>,
    code_system: Val<'a>,
    display: Val<'a>,
    value: Val<'a>,
    unit: Val<'a>,
    null_flavor: Val<'a>,
    xsi_type: Val<'a>,
    type_code: Val<'a>,
    negation: Val<'a>,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in the bytes of `w` equal to `c` (exact up to the first such byte).
fn swar_eq(w: u64, c: u8) -> u64 {
    let x = w ^ (LO * u64::from(c));
    x.wrapping_sub(LO) & !x & HI
}

/// High bit set in the bytes of `w` below `c` (`c` ≤ 128; exact up to the first such byte).
fn swar_lt(w: u64, c: u8) -> u64 {
    w.wrapping_sub(LO * u64::from(c)) & !w & HI
}

/// Index of the first byte in `b[from..]` that `word` (8 bytes at a time) or `byte` (the last
/// few bytes of `b`) flags. Callers pass the whole document, so that the word loop rarely ends in
/// the byte loop, and check that the index lies within the tag.
#[inline(always)]
fn find(
    b: &[u8],
    from: usize,
    word: impl Fn(u64) -> u64,
    byte: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut i = from;
    while let Some(w) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let m = word(u64::from_le_bytes(*w));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?.iter().position(|&c| byte(c)).map(|p| i + p)
}

impl<'a> Attrs<'a> {
    /// The usual keys, recognised at the start of `rest` together with their `=` (no search for
    /// the `=`): the key's length and the slot of its value (`None`: read past, e.g. `classCode`).
    /// `xsi` is whether the document's XMLSchema-instance prefix is `xsi`.
    #[inline]
    fn known_key(&mut self, rest: &[u8], xsi: bool) -> Option<(usize, Option<&mut Val<'a>>)> {
        let r = rest;
        Some(match rest.first()? {
            b'c' if starts(r, b"code=") => (4, Some(&mut self.code)),
            b'c' if starts(r, b"codeSystem=") => (10, Some(&mut self.code_system)),
            b'c' if starts(r, b"classCode=") => (9, None),
            b'm' if starts(r, b"moodCode=") => (8, None),
            b'r' if starts(r, b"root=") => (4, Some(&mut self.root)),
            b'u' if starts(r, b"unit=") => (4, Some(&mut self.unit)),
            b'v' if starts(r, b"value=") => (5, Some(&mut self.value)),
            b't' if starts(r, b"typeCode=") => (8, Some(&mut self.type_code)),
            b'e' if starts(r, b"extension=") => (9, Some(&mut self.extension)),
            b'n' if starts(r, b"nullFlavor=") => (10, Some(&mut self.null_flavor)),
            b'n' if starts(r, b"negationInd=") => (11, Some(&mut self.negation)),
            b'd' if starts(r, b"displayName=") => (11, Some(&mut self.display)),
            b'x' if xsi && starts(r, b"xsi:type=") => (8, Some(&mut self.xsi_type)),
            _ => return None,
        })
    }

    /// The slot of attribute `key`, if the reader reads it (by length and first byte, then one
    /// comparison).
    fn slot(&mut self, key: &[u8], xsi_prefix: &[u8]) -> Option<&mut Val<'a>> {
        Some(match (key.len(), key.first()) {
            (4, Some(b'r')) if starts(key, b"root") => &mut self.root,
            (4, Some(b'c')) if starts(key, b"code") => &mut self.code,
            (4, Some(b'u')) if starts(key, b"unit") => &mut self.unit,
            (5, Some(b'v')) if starts(key, b"value") => &mut self.value,
            (8, Some(b't')) if starts(key, b"typeCode") => &mut self.type_code,
            (9, Some(b'e')) if starts(key, b"extension") => &mut self.extension,
            (10, Some(b'c')) if starts(key, b"codeSystem") => &mut self.code_system,
            (10, Some(b'n')) if starts(key, b"nullFlavor") => &mut self.null_flavor,
            (11, Some(b'd')) if starts(key, b"displayName") => &mut self.display,
            (11, Some(b'n')) if starts(key, b"negationInd") => &mut self.negation,
            _ if key.strip_suffix(b":type") == Some(xsi_prefix) => &mut self.xsi_type,
            _ => return None,
        })
    }
}

/// xsi:type is a QName (`PQ` or `hl7:PQ`): keeps the local part.
fn xsi_local(a: &mut Attrs<'_>) {
    if let Some(t) = &mut a.xsi_type
        && let Some(i) = t.bytes().position(|b| b == b':')
    {
        *t = match std::mem::take(t) {
            Cow::Borrowed(b) => Cow::Borrowed(&b[i + 1..]),
            Cow::Owned(o) => Cow::Owned(o[i + 1..].to_owned()),
        };
    }
}

fn empty_range() -> Box<ReferenceRange> {
    Box::new(ReferenceRange {
        low: None,
        high: None,
        unit: None,
        text: None,
    })
}

/// The decimal digits of `n`, most significant first, to `push` (no formatting machinery).
#[inline]
fn each_digit(mut n: u32, mut push: impl FnMut(char)) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        push(char::from(b));
    }
}

/// Appends the decimal digits of `n`.
fn push_u32(s: &mut String, n: u32) {
    each_digit(n, |c| s.push(c));
}

/// Entry id `e<n>` (stored inline, no allocation); the first ones copied from a table.
fn entry_id(n: u32) -> CompactString {
    static IDS: std::sync::OnceLock<Vec<CompactString>> = std::sync::OnceLock::new();
    let ids = IDS.get_or_init(|| (0..512).map(entry_id_slow).collect());
    match ids.get(n as usize) {
        Some(id) => id.clone(),
        None => entry_id_slow(n),
    }
}

fn entry_id_slow(n: u32) -> CompactString {
    let mut id = CompactString::const_new("e");
    each_digit(n, |c| id.push(c));
    id
}

/// What a text capture is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    PatientName,
    PostalCode,
    OrgName,
    ObsValueText(usize),
    ObsRangeText,
    ObsAuthorName,
}

/// An open text capture; the text goes to [`Parser::capture_buf`] (one buffer per document).
struct Capture {
    target: Target,
    depth: usize,
}

#[derive(Debug, Clone)]
struct RawValue<'a> {
    attrs: Attrs<'a>,
    text: String,
    pos: u64,
}

struct ObsBuilder<'a> {
    /// Index in `path` of the observation element.
    depth: usize,
    /// Index of the observation's entry in `entries`, pushed (with id, locator, parent and
    /// relation) when the observation opens, so that a group's entry precedes its members'.
    slot: usize,
    pos: u64,
    /// `code/@code`, `@codeSystem`, `@displayName` (not the whole [`Attrs`]: the builder is moved).
    code: Option<[Val<'a>; 3]>,
    negated: bool,
    /// Start of this observation's values in [`Parser::vals`].
    vals_start: usize,
    interpretation: Val<'a>,
    method: Option<Box<Attrs<'a>>>,
    effective: Val<'a>,
    /// Boxed: rare, and the builder is moved twice per observation.
    range: Option<Box<ReferenceRange>>,
    range_unit: Val<'a>,
    author: Option<String>,
    pending_relation: Option<Relation>,
    children: u32,
}

/// A header value, where it was (byte position) and its XPath's range in
/// [`Parser::header_xpaths`] (kept for errors found when the document has been read).
type HeaderValue<'a> = (Cow<'a, str>, u64, std::ops::Range<usize>);

struct Parser<'a> {
    cat: &'static Catalogue,
    file: &'a str,
    text: &'a [u8],
    /// The document as text, when it is valid UTF-8 (the fast attribute path borrows from it).
    doc: Option<&'a str>,
    /// Buffers without borrowed data (reused from the previous document of the thread).
    s: Scratch,
    root_seen: bool,
    hl7_prefix: Option<String>,
    xsi_prefix: Cow<'static, str>,
    capture: Option<Capture>,
    // header
    doc_id: Option<String>,
    report_kind: Option<Attrs<'a>>,
    created: Val<'a>,
    insurer: Val<'a>,
    symbol: Val<'a>,
    number: Val<'a>,
    branch: Val<'a>,
    other_ids: Vec<Identifier>,
    name: Option<String>,
    postal: Option<String>,
    sex: Option<HeaderValue<'a>>,
    birth: Option<HeaderValue<'a>>,
    institution: Option<HeaderValue<'a>>,
    org_name: Option<String>,
    participant_hld: bool,
    hld_insurer: Val<'a>,
    program: Option<Attrs<'a>>,
    exam_date: Option<HeaderValue<'a>>,
    sections: Vec<Code>,
    obs: Vec<ObsBuilder<'a>>,
    /// The last observation tag whose attributes were read, and its `negationInd`.
    last_obs_tag: Option<(&'a str, bool)>,
    /// Values of the open observations (a stack: members' values above their group's).
    vals: Vec<RawValue<'a>>,
    entries: Vec<Entry>,
    next_id: u32,
}

impl<'a> Parser<'a> {
    fn new(cat: &'static Catalogue, file: &'a str, text: &'a [u8]) -> Self {
        Self {
            cat,
            file,
            text,
            doc: simdutf8::basic::from_utf8(text).ok(),
            s: SCRATCH.take(),
            root_seen: false,
            hl7_prefix: None,
            xsi_prefix: Cow::Borrowed("xsi"),
            capture: None,
            doc_id: None,
            report_kind: None,
            created: None,
            insurer: None,
            symbol: None,
            number: None,
            branch: None,
            other_ids: Vec::new(),
            name: None,
            postal: None,
            sex: None,
            birth: None,
            institution: None,
            org_name: None,
            participant_hld: false,
            hld_insurer: None,
            program: None,
            exam_date: None,
            sections: Vec::new(),
            obs: Vec::new(),
            last_obs_tag: None,
            vals: Vec::with_capacity(2),
            entries: {
                let mut v = ENTRY_POOL.take();
                // About one entry per 200 bytes of a typical document (the synthetic ones: 240).
                v.reserve((text.len() / 200).clamp(16, 256));
                v
            },
            next_id: 0,
        }
    }

    /// The line of the event read from `pos` on (see [`event_line`]).
    fn line(&self, pos: u64) -> u64 {
        event_line(self.text, pos)
    }

    fn xpath(&self) -> String {
        self.s.xp.clone()
    }

    /// The locator of entry `slot` (in [`Scratch::locs`]).
    fn locator(&self, slot: usize) -> &str {
        let start = slot.checked_sub(1).map_or(0, |i| self.s.loc_ends[i]);
        self.s
            .locs
            .get(start..self.s.loc_ends[slot])
            .unwrap_or_default()
    }

    /// Gives the entries their locators, all sharing one buffer (one allocation per document).
    fn share_locators(&self, entries: &mut [Entry]) {
        let text: std::sync::Arc<str> = std::sync::Arc::from(self.s.locs.as_str());
        let mut start = 0;
        for (e, &end) in entries.iter_mut().zip(&self.s.loc_ends) {
            e.locator = Locator::shared(&text, start..end).unwrap_or_default();
            start = end;
        }
    }

    /// Appends the current XPath to [`Self::header_xpaths`] and returns its range there.
    fn keep_xpath(&mut self) -> std::ops::Range<usize> {
        let start = self.s.header_xpaths.len();
        self.s.header_xpaths.push_str(&self.s.xp);
        start..self.s.header_xpaths.len()
    }

    /// File, `line` and XPath `path` (none outside the root element, where `path` is empty).
    fn located(&self, line: u64, path: String) -> Location {
        let loc = Location::file(self.file).at_line(line);
        if path.is_empty() {
            loc
        } else {
            loc.at_path(path)
        }
    }

    /// An error about the event read from `pos` on.
    fn err_at(&self, pos: u64, path: String, kind: ErrorKind) -> Error {
        Error::new(self.located(self.line(pos), path), kind)
    }

    fn run(&mut self) -> Result<()> {
        let mut reader = Reader::from_reader(self.text);
        reader.config_mut().check_end_names = true;
        // Whitespace-only text is of use only in captured text: elsewhere quick-xml skips it
        // without an event (indented documents have as much of it as tags). A capture begins and
        // ends only with a tag, where this is set again.
        reader.config_mut().trim_text_start = true;
        loop {
            let pos = reader.buffer_position();
            let ev = match reader.read_event() {
                Ok(ev) => ev,
                Err(quick_xml::Error::Encoding(_)) => {
                    let at = std::str::from_utf8(self.text)
                        .err()
                        .map_or(0, |u| u.valid_up_to());
                    return Err(Error::new(
                        Location::file(self.file).at_line(line_of(self.text, at)),
                        ErrorKind::Encoding("UTF-8"),
                    ));
                }
                Err(e) => {
                    // The reader's error position is exact (no whitespace to skip).
                    let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
                    let loc = self.located(line_of(self.text, at), self.xpath());
                    return Err(Error::new(loc, ErrorKind::Xml(e.to_string())));
                }
            };
            match ev {
                Event::Start(e) => {
                    self.start(&e, pos)?;
                    reader.config_mut().trim_text_start = self.capture.is_none();
                }
                Event::Empty(e) => {
                    self.start(&e, pos)?;
                    self.end()?;
                }
                Event::End(_) => {
                    self.end()?;
                    reader.config_mut().trim_text_start = self.capture.is_none();
                }
                Event::Text(t) => {
                    if self.capture.is_some() {
                        self.s.capture_buf.push_str(&t.xml10_content());
                    } else if self.s.path.is_empty() && !t.xml10_content().trim().is_empty() {
                        // `line` skips the text's leading whitespace: the line of the text.
                        return Err(self.err_at(
                            pos,
                            String::new(),
                            ErrorKind::Xml("text outside the root element".into()),
                        ));
                    }
                }
                Event::CData(t) => {
                    if self.capture.is_some() {
                        self.s.capture_buf.push_str(&t.xml10_content());
                    }
                }
                Event::GeneralRef(r) => {
                    let ch = match r.resolve_char_ref() {
                        Ok(Some(ch)) => Some(ch.to_string()),
                        Ok(None) => {
                            quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                                .map(str::to_owned)
                        }
                        Err(e) => {
                            return Err(self.err_at(
                                pos,
                                self.xpath(),
                                ErrorKind::Xml(e.to_string()),
                            ));
                        }
                    };
                    let Some(ch) = ch else {
                        return Err(self.err_at(
                            pos,
                            self.xpath(),
                            ErrorKind::Xml(format!("undefined entity &{};", r.xml10_content())),
                        ));
                    };
                    if self.capture.is_some() {
                        self.s.capture_buf.push_str(&ch);
                    }
                }
                Event::DocType(_) => {
                    return Err(self.err_at(
                        pos,
                        String::new(),
                        ErrorKind::Xml("DOCTYPE is not allowed".into()),
                    ));
                }
                Event::Eof => break,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            }
        }
        if !self.s.path.is_empty() || !self.root_seen {
            let end = self.text.len() as u64;
            return Err(self.err_at(
                end,
                self.xpath(),
                ErrorKind::Xml("unexpected end of document".into()),
            ));
        }
        Ok(())
    }

    /// The element's tag text (`name attr="…" …`) as a slice of the document, so that attribute
    /// values can be borrowed for the document's lifetime. `None` if the event does not point
    /// into the document (never for the slice reader used here).
    fn tag_text(&self, e: &BytesStart<'_>) -> Option<&'a str> {
        let raw: &str = e;
        let off = (raw.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        let bytes = self.text.get(off..off.checked_add(raw.len())?)?;
        // Re-validates only the tags whose attributes are read (quick-xml checked them already).
        std::str::from_utf8(bytes).ok()
    }

    /// Fast path of [`Self::read_attrs`]: one pass over the tag, borrowing the values the reader
    /// needs from the (UTF-8 checked) document. Gives up (`None`, and the caller uses quick-xml's
    /// attribute iterator, with its exact errors) on anything unusual: whitespace or a control
    /// character in a key, an entity, `<` or a control character in a value, missing quotes.
    #[inline]
    fn fast_attrs(&self, e: &BytesStart<'_>, a: &mut Attrs<'a>) -> Option<()> {
        let doc = self.doc?;
        let raw: &str = e;
        let d = doc.as_bytes();
        let start = (raw.as_ptr() as usize).checked_sub(d.as_ptr() as usize)?;
        let end = start.checked_add(raw.len())?;
        if end > d.len() {
            return None;
        }
        let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
        let xsi = self.xsi_prefix == "xsi";
        let mut i = start + e.name().0.len();
        loop {
            while i < end && ws(d[i]) {
                i += 1;
            }
            if i >= end {
                break;
            }
            let ks = i;
            let (eq, slot) = match a.known_key(d.get(ks..)?, xsi) {
                Some((len, slot)) => (ks + len, slot),
                None => {
                    // The key runs to `=`; a byte below `!` (whitespace) in it gives up.
                    let eq = find(
                        d,
                        ks,
                        |w| swar_lt(w, b'!') | swar_eq(w, b'='),
                        |c| c < b'!' || c == b'=',
                    )?;
                    if eq >= end || eq == ks {
                        return None;
                    }
                    (eq, a.slot(&d[ks..eq], self.xsi_prefix.as_bytes()))
                }
            };
            if eq >= end {
                return None;
            }
            let [b'=', q @ (b'"' | b'\''), ..] = *d.get(eq..)? else {
                return None;
            };
            let vs = eq + 2;
            // The closing quote, or a byte that normalisation could change (then give up).
            let ve = find(
                d,
                vs,
                |w| swar_eq(w, q) | swar_lt(w, b' ') | swar_eq(w, b'&') | swar_eq(w, b'<'),
                |c| c == q || c < b' ' || c == b'&' || c == b'<',
            )?;
            if ve >= end || d[ve] != q {
                return None;
            }
            i = ve + 1;
            if i < end && !ws(d[i]) {
                return None;
            }
            if let Some(slot) = slot {
                *slot = Some(Cow::Borrowed(doc.get(vs..ve)?));
            }
        }
        if a.xsi_type.is_some() {
            xsi_local(a);
        }
        Some(())
    }

    fn read_attrs(&self, e: &BytesStart<'_>, pos: u64) -> Result<Attrs<'a>> {
        let mut a = Attrs::default();
        self.read_attrs_into(e, pos, &mut a)?;
        Ok(a)
    }

    /// [`Self::read_attrs`] into `a` (a default [`Attrs`]; no copy of the struct).
    fn read_attrs_into(&self, e: &BytesStart<'_>, pos: u64, a: &mut Attrs<'a>) -> Result<()> {
        if self.fast_attrs(e, a).is_some() {
            return Ok(());
        }
        let name_len = e.name().0.len();
        *a = match self.tag_text(e) {
            Some(tag) => self.read_attrs_from(
                quick_xml::events::attributes::Attributes::new(tag, name_len),
                pos,
                |v| v,
            ),
            None => self.read_attrs_from(e.attributes(), pos, |v| Cow::Owned(v.into_owned())),
        }?;
        Ok(())
    }

    /// `observation/@negationInd` is `true`. The answer for the last observation tag read is
    /// kept: a document's observation tags are mostly the same bytes (`observation
    /// classCode="OBS" moodCode="EVN"`), and the same bytes read the same.
    fn negated(&mut self, e: &BytesStart<'_>, pos: u64) -> Result<bool> {
        let raw: &str = e;
        if let Some((tag, negated)) = self.last_obs_tag
            && tag == raw
        {
            return Ok(negated);
        }
        let mut a = Attrs::default();
        self.read_attrs_into(e, pos, &mut a)?;
        let negated = a.negation.as_deref() == Some("true");
        self.last_obs_tag = self.tag_in_doc(e).map(|t| (t, negated));
        Ok(negated)
    }

    /// The element's tag text as a slice of the (UTF-8 checked) document, if it is one.
    fn tag_in_doc(&self, e: &BytesStart<'_>) -> Option<&'a str> {
        let doc = self.doc?;
        let raw: &str = e;
        let start = (raw.as_ptr() as usize).checked_sub(doc.as_ptr() as usize)?;
        doc.get(start..start.checked_add(raw.len())?)
    }

    fn read_attrs_from<'b>(
        &self,
        mut attrs: quick_xml::events::attributes::Attributes<'b>,
        pos: u64,
        keep: impl Fn(Cow<'b, str>) -> Cow<'a, str>,
    ) -> Result<Attrs<'a>> {
        let mut a = Attrs::default();
        for attr in attrs.with_checks(false) {
            let attr = attr
                .map_err(|err| self.err_at(pos, self.xpath(), ErrorKind::Xml(err.to_string())))?;
            let key = attr.key.0;
            let slot = match key {
                "root" => &mut a.root,
                "extension" => &mut a.extension,
                "code" => &mut a.code,
                "codeSystem" => &mut a.code_system,
                "displayName" => &mut a.display,
                "value" => &mut a.value,
                "unit" => &mut a.unit,
                "nullFlavor" => &mut a.null_flavor,
                "typeCode" => &mut a.type_code,
                "negationInd" => &mut a.negation,
                _ => match key.split_once(':') {
                    Some((p, "type")) if p == self.xsi_prefix.as_ref() => &mut a.xsi_type,
                    _ => continue,
                },
            };
            let v = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| self.err_at(pos, self.xpath(), ErrorKind::Xml(err.to_string())))?;
            *slot = Some(keep(v));
        }
        xsi_local(&mut a);
        Ok(a)
    }

    fn check_root(&mut self, e: &BytesStart<'_>, pos: u64) -> Result<()> {
        let qname = e.name().0;
        let (prefix, local) = match qname.split_once(':') {
            Some((p, l)) => (Some(p), l),
            None => (None, qname),
        };
        let mut ns: Option<Cow<'_, str>> = None;
        for attr in e.attributes().with_checks(false) {
            let attr = attr
                .map_err(|err| self.err_at(pos, String::new(), ErrorKind::Xml(err.to_string())))?;
            let key = attr.key.0;
            let v = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| self.err_at(pos, String::new(), ErrorKind::Xml(err.to_string())))?;
            if let Some(p) = key.strip_prefix("xmlns:") {
                if v == XSI_NS && p != self.xsi_prefix {
                    self.xsi_prefix = Cow::Owned(p.to_owned());
                }
                if Some(p) == prefix {
                    ns = Some(v);
                }
            } else if key == "xmlns" && prefix.is_none() {
                ns = Some(v);
            }
        }
        let path = || format!("/{qname}");
        let found = ns.unwrap_or_default();
        if found != HL7_NS {
            return Err(self.err_at(
                pos,
                path(),
                ErrorKind::WrongNamespace {
                    found: found.into_owned(),
                    expected: HL7_NS,
                },
            ));
        }
        if local != "ClinicalDocument" {
            return Err(self.err_at(
                pos,
                path(),
                ErrorKind::WrongRoot {
                    found: local.to_owned(),
                    expected: "ClinicalDocument",
                },
            ));
        }
        self.hl7_prefix = prefix.map(str::to_owned);
        Ok(())
    }

    fn push_frame(&mut self, local: &str, key: u64, n: N) {
        let depth = self.s.path.len();
        let index = if depth == 0 {
            1
        } else {
            // The parent's region is the top of the stack: its closed children's were dropped.
            let start = self.s.frames[depth - 1].counts_start;
            match self.s.counts[start..].iter_mut().find(|(k, _)| *k == key) {
                Some((_, c)) => {
                    *c += 1;
                    *c
                }
                None => {
                    self.s.counts.push((key, 1));
                    1
                }
            }
        };
        let f = Frame {
            xp_len: self.s.xp.len(),
            counts_start: self.s.counts.len(),
        };
        match self.s.frames.get_mut(depth) {
            Some(slot) => *slot = f,
            None => self.s.frames.push(f),
        }
        self.s.xp.push('/');
        self.s.xp.push_str(local);
        if index > 1 {
            self.s.xp.push('[');
            push_u32(&mut self.s.xp, index);
            self.s.xp.push(']');
        }
        self.s.path.push(n);
    }

    fn start(&mut self, e: &BytesStart<'_>, pos: u64) -> Result<()> {
        if self.s.path.is_empty() {
            if self.root_seen {
                return Err(self.err_at(
                    pos,
                    String::new(),
                    ErrorKind::Xml("more than one root element".into()),
                ));
            }
            self.check_root(e, pos)?;
            self.root_seen = true;
        }
        let qname = e.name().0;
        // A known name has no prefix: the search for `:` only when the whole name is unknown.
        let (prefix, local, known) = match intern(qname) {
            N::Other => match qname.bytes().position(|b| b == b':') {
                Some(i) => (Some(&qname[..i]), &qname[i + 1..], intern(&qname[i + 1..])),
                None => (None, qname, N::Other),
            },
            known => (None, qname, known),
        };
        let n = if prefix == self.hl7_prefix.as_deref() {
            known
        } else {
            N::Other
        };
        self.push_frame(local, name_key(known, local), n);
        if n == N::Other {
            return Ok(());
        }
        self.dispatch_start(e, pos, n)
    }

    fn begin_capture(&mut self, target: Target) {
        self.s.capture_buf.clear();
        self.capture = Some(Capture {
            target,
            depth: self.s.path.len(),
        });
    }

    fn dispatch_start(&mut self, e: &BytesStart<'_>, pos: u64, n: N) -> Result<()> {
        use N::*;
        // Inside an observation?
        if let Some(top) = self.obs.last() {
            let rel_start = top.depth + 1;
            if self.s.path.len() > rel_start {
                return self.obs_start(e, pos, n, rel_start);
            }
        }
        let path_len = self.s.path.len();
        match self.s.path.as_slice() {
            [ClinicalDocument, Id] => {
                let a = self.read_attrs(e, pos)?;
                self.doc_id = match (a.root, a.extension) {
                    (Some(r), Some(x)) => Some(format!("{r}^{x}")),
                    (Some(r), None) => Some(r.into_owned()),
                    _ => None,
                };
            }
            [ClinicalDocument, Code] => self.report_kind = Some(self.read_attrs(e, pos)?),
            [ClinicalDocument, EffectiveTime] => self.created = self.read_attrs(e, pos)?.value,
            [ClinicalDocument, RecordTarget, PatientRole, Id] => {
                let a = self.read_attrs(e, pos)?;
                let (Some(root), Some(ext)) = (a.root, a.extension) else {
                    return Ok(());
                };
                match root.as_ref() {
                    "1.2.392.200119.6.101" => self.insurer = Some(ext),
                    "1.2.392.200119.6.204" => self.symbol = Some(ext),
                    "1.2.392.200119.6.205" => self.number = Some(ext),
                    "1.2.392.200119.6.211" => self.branch = Some(ext),
                    _ => self.other_ids.push(Identifier {
                        system: format!("urn:oid:{root}"),
                        value: ext.into_owned(),
                    }),
                }
            }
            [
                ClinicalDocument,
                RecordTarget,
                PatientRole,
                Addr,
                PostalCode,
            ] => {
                self.begin_capture(Target::PostalCode);
            }
            [ClinicalDocument, RecordTarget, PatientRole, Patient, Name] => {
                self.begin_capture(Target::PatientName);
            }
            [
                ClinicalDocument,
                RecordTarget,
                PatientRole,
                Patient,
                AdministrativeGenderCode,
            ] => {
                let a = self.read_attrs(e, pos)?;
                self.sex = a.code.map(|c| (c, pos, self.keep_xpath()));
            }
            [
                ClinicalDocument,
                RecordTarget,
                PatientRole,
                Patient,
                BirthTime,
            ] => {
                let a = self.read_attrs(e, pos)?;
                self.birth = a.value.map(|c| (c, pos, self.keep_xpath()));
            }
            [
                ClinicalDocument,
                Author,
                AssignedAuthor,
                RepresentedOrganization,
                Id,
            ] => {
                let a = self.read_attrs(e, pos)?;
                if a.root.as_deref() == Some("1.2.392.200119.6.102") {
                    self.institution = a.extension.map(|c| (c, pos, self.keep_xpath()));
                }
            }
            [
                ClinicalDocument,
                Author,
                AssignedAuthor,
                RepresentedOrganization,
                Name,
            ] => {
                self.begin_capture(Target::OrgName);
            }
            [ClinicalDocument, Participant] => {
                let a = self.read_attrs(e, pos)?;
                self.participant_hld = a.type_code.as_deref() == Some("HLD");
            }
            [ClinicalDocument, Participant, AssociatedEntity, Id] if self.participant_hld => {
                let a = self.read_attrs(e, pos)?;
                if let (Some(r), Some(x)) = (a.root, a.extension) {
                    self.other_ids.push(Identifier {
                        system: format!("urn:oid:{r}"),
                        value: x.into_owned(),
                    });
                }
            }
            [
                ClinicalDocument,
                Participant,
                AssociatedEntity,
                ScopingOrganization,
                Id,
            ] if self.participant_hld => {
                let a = self.read_attrs(e, pos)?;
                if a.root.as_deref() == Some("1.2.392.200119.6.101") {
                    self.hld_insurer = a.extension;
                }
            }
            [ClinicalDocument, DocumentationOf, ServiceEvent, Code] => {
                self.program = Some(self.read_attrs(e, pos)?);
            }
            [
                ClinicalDocument,
                DocumentationOf,
                ServiceEvent,
                EffectiveTime,
            ]
            | [
                ClinicalDocument,
                DocumentationOf,
                ServiceEvent,
                EffectiveTime,
                Low,
            ] => {
                let a = self.read_attrs(e, pos)?;
                if let Some(v) = a.value {
                    let xp = self.keep_xpath();
                    self.exam_date = Some((v, pos, xp));
                }
            }
            [
                ClinicalDocument,
                Component,
                StructuredBody,
                Component,
                Section,
                Code,
            ] => {
                let a = self.read_attrs(e, pos)?;
                if let Some(c) = a.code {
                    let mut code = crate::iphr::Code::new(systems::SECTION, c.into_owned());
                    code.display = a.display.map(|d| d.into_owned().into());
                    self.sections.push(code);
                }
            }
            [
                ClinicalDocument,
                Component,
                StructuredBody,
                Component,
                Section,
                Entry,
                Observation,
            ] => {
                let negated = self.negated(e, pos)?;
                self.open_obs(negated, pos, path_len - 1, None, None);
            }
            _ => {}
        }
        Ok(())
    }

    fn open_obs(
        &mut self,
        negated: bool,
        pos: u64,
        depth: usize,
        parent: Option<CompactString>,
        relation: Option<Relation>,
    ) {
        self.next_id += 1;
        let id = entry_id(self.next_id);
        let slot = self.entries.len();
        self.s.locs.push_str(&self.s.xp);
        self.s.loc_ends.push(self.s.locs.len());
        let mut e = Entry::observation(id, Code::new("", ""), Locator::default());
        e.parent = parent;
        e.relation = relation;
        self.entries.push(e);
        self.obs.push(ObsBuilder {
            depth,
            slot,
            pos,
            code: None,
            negated,
            vals_start: self.vals.len(),
            interpretation: None,
            method: None,
            effective: None,
            range: None,
            range_unit: None,
            author: None,
            pending_relation: None,
            children: 0,
        });
    }

    fn obs_start(&mut self, e: &BytesStart<'_>, pos: u64, n: N, rel_start: usize) -> Result<()> {
        use N::*;
        // Copy the (short) relative path so that `self` can be borrowed mutably below.
        let mut buf = [N::Other; 5];
        let tail = &self.s.path[rel_start..];
        let len = tail.len().min(buf.len());
        buf[..len].copy_from_slice(&tail[..len]);
        let rel: &[N] = if tail.len() > buf.len() {
            &[]
        } else {
            &buf[..len]
        };
        match rel {
            [Code] => {
                let mut a = Attrs::default();
                self.read_attrs_into(e, pos, &mut a)?;
                if let Some(top) = self.obs.last_mut() {
                    top.code = Some([a.code, a.code_system, a.display]);
                }
            }
            [Value] => {
                // Read into the value's place in `vals` (no copy of the attributes).
                let mut vals = std::mem::take(&mut self.vals);
                let idx = vals.len();
                vals.push(RawValue {
                    attrs: Attrs::default(),
                    text: String::new(),
                    pos,
                });
                let read = match vals.last_mut() {
                    Some(v) => self.read_attrs_into(e, pos, &mut v.attrs),
                    None => Ok(()),
                };
                let is_text = vals
                    .last()
                    .is_some_and(|v| v.attrs.xsi_type.as_deref() == Some("ST"));
                self.vals = vals;
                read?;
                if is_text {
                    self.begin_capture(Target::ObsValueText(idx));
                }
            }
            [InterpretationCode] => {
                let a = self.read_attrs(e, pos)?;
                if let Some(top) = self.obs.last_mut() {
                    top.interpretation = a.code;
                }
            }
            [MethodCode] => {
                let a = self.read_attrs(e, pos)?;
                if let Some(top) = self.obs.last_mut() {
                    top.method = Some(Box::new(a));
                }
            }
            [EffectiveTime] | [EffectiveTime, Low] => {
                let a = self.read_attrs(e, pos)?;
                if let Some(top) = self.obs.last_mut()
                    && a.value.is_some()
                {
                    top.effective = a.value;
                }
            }
            [ReferenceRange, ObservationRange] => {
                if let Some(top) = self.obs.last_mut() {
                    top.range.get_or_insert_with(empty_range);
                }
            }
            [ReferenceRange, ObservationRange, Value, Low | High] => {
                let a = self.read_attrs(e, pos)?;
                let parsed = match &a.value {
                    Some(v) => Some(v.parse::<Decimal>().map_err(|err| {
                        self.err_at(
                            pos,
                            self.xpath(),
                            ErrorKind::InvalidValue {
                                value: v.to_string(),
                                reason: err.reason.to_owned(),
                            },
                        )
                    })?),
                    None => None,
                };
                if let Some(top) = self.obs.last_mut() {
                    let r = top.range.get_or_insert_with(empty_range);
                    if n == Low {
                        r.low = parsed;
                    } else {
                        r.high = parsed;
                    }
                    if a.unit.is_some() {
                        top.range_unit = a.unit;
                    }
                }
            }
            [ReferenceRange, ObservationRange, Text] => self.begin_capture(Target::ObsRangeText),
            [Author, AssignedAuthor, AssignedPerson, Name] => {
                self.begin_capture(Target::ObsAuthorName);
            }
            [EntryRelationship] => {
                let a = self.read_attrs(e, pos)?;
                let rel = match a.type_code.as_deref() {
                    Some("COMP") => Relation::Component,
                    Some("RSON") => Relation::Reason,
                    other => {
                        return Err(self.err_at(
                            pos,
                            self.xpath(),
                            ErrorKind::InvalidField {
                                field: "entryRelationship/@typeCode",
                                reason: format!("{other:?} is neither COMP nor RSON"),
                            },
                        ));
                    }
                };
                if let Some(top) = self.obs.last_mut() {
                    top.pending_relation = Some(rel);
                }
            }
            [EntryRelationship, Observation] => {
                let negated = self.negated(e, pos)?;
                let (parent, relation) = match self.obs.last_mut() {
                    Some(top) => {
                        top.children += 1;
                        let id = self.entries.get(top.slot).map(|g| g.id.clone());
                        (id, top.pending_relation)
                    }
                    None => (None, None),
                };
                let depth = self.s.path.len() - 1;
                self.open_obs(negated, pos, depth, parent, relation);
            }
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        let depth = self.s.path.len();
        if let Some(c) = &self.capture
            && c.depth == depth
            && let Some(c) = self.capture.take()
        {
            let buf = std::mem::take(&mut self.s.capture_buf);
            self.deliver(c.target, &buf);
            self.s.capture_buf = buf;
        }
        if let Some(top) = self.obs.last()
            && top.depth + 1 == depth
        {
            self.close_obs()?;
        }
        if let Some(f) = depth.checked_sub(1).and_then(|d| self.s.frames.get(d)) {
            self.s.xp.truncate(f.xp_len);
            self.s.counts.truncate(f.counts_start);
        }
        self.s.path.pop();
        Ok(())
    }

    fn deliver(&mut self, target: Target, buf: &str) {
        let t = || {
            let mut t = String::with_capacity(buf.len());
            for w in buf.split_whitespace() {
                if !t.is_empty() {
                    t.push(' ');
                }
                t.push_str(w);
            }
            (!t.is_empty()).then_some(t)
        };
        match target {
            Target::PatientName => self.name = t(),
            Target::PostalCode => self.postal = t(),
            Target::OrgName => self.org_name = t(),
            Target::ObsValueText(i) => {
                if let Some(v) = self.vals.get_mut(i) {
                    v.text = buf.trim().to_owned();
                }
            }
            Target::ObsRangeText => {
                if let Some(r) = self.obs.last_mut().and_then(|o| o.range.as_mut()) {
                    r.text = t();
                }
            }
            Target::ObsAuthorName => {
                if let Some(o) = self.obs.last_mut() {
                    o.author = t();
                }
            }
        }
    }

    /// Closes the innermost open observation: builds its entry in place (in the slot pushed when
    /// it opened) from its builder, which is read where it lies on the stack (no copy).
    fn close_obs(&mut self) -> Result<()> {
        // `entries` and `obs` are moved out so that they can be used while `self` is borrowed.
        let mut entries = std::mem::take(&mut self.entries);
        let mut obs = std::mem::take(&mut self.obs);
        let r = match obs.last_mut() {
            Some(b) => {
                let vals_start = b.vals_start;
                let r = match entries.get_mut(b.slot..).and_then(<[_]>::split_first_mut) {
                    Some((e, members)) => self.fill_entry(b, self.locator(b.slot), e, members),
                    None => Ok(()),
                };
                self.vals.truncate(vals_start);
                r
            }
            None => Ok(()),
        };
        obs.truncate(obs.len().saturating_sub(1));
        self.entries = entries;
        self.obs = obs;
        r
    }

    /// Fills `e` (a fresh observation entry) from `b` found at `xpath`, `members` being the
    /// entries after it (the caller sets the locator).
    fn fill_entry(
        &self,
        b: &mut ObsBuilder<'a>,
        xpath: &str,
        e: &mut Entry,
        members: &[Entry],
    ) -> Result<()> {
        let loc = || {
            Location::file(self.file)
                .at_line(self.line(b.pos))
                .at_path(xpath.to_owned())
        };
        let code_attrs = b.code.as_ref();
        let item_code = code_attrs.and_then(|[c, _, _]| c.as_deref());
        let Some(item_code) = item_code else {
            // 一連検査グループ parent: code nullFlavor="NA" and members below.
            if b.children == 0 {
                return Err(Error::new(
                    loc().at_path(format!("{}/code", xpath)),
                    ErrorKind::Missing("observation/code/@code"),
                ));
            }
            let group = members
                .iter()
                .filter(|m| m.parent.as_deref() == Some(e.id.as_str()))
                .find_map(|m| self.cat.group_of(&m.code.code));
            let code = match group {
                Some(g) => Code::with_display(systems::IPHR_GROUP, &g.id, &g.name),
                None => Code::new(systems::IPHR_GROUP, "unidentified"),
            };
            e.code = code;
            e.kind = EntryKind::Group;
            return Ok(());
        };
        let loc_item = || loc().with_item(item_code.to_owned());
        if let Some(sys) = code_attrs.and_then(|[_, s, _]| s.as_deref())
            && sys != ITEM_OID
        {
            return Err(Error::new(
                loc_item(),
                ErrorKind::UnknownItemCode(format!("{item_code} in code system {sys}")),
            ));
        }
        let Some(item) = self.cat.item(item_code) else {
            return Err(Error::new(
                loc_item(),
                ErrorKind::UnknownItemCode(item_code.to_owned()),
            ));
        };
        // The catalogue's name is borrowed (no allocation) when the source's display equals it.
        let display: Cow<'static, str> = match code_attrs.and_then(|[_, _, d]| d.as_deref()) {
            Some(d) if d != item.name => Cow::Owned(d.to_owned()),
            _ => Cow::Borrowed(item.name.as_str()),
        };
        let code = Code::with_display(systems::TOKUTEI_ITEM, item.code.as_str(), display);
        e.code = code;
        if item.jlac10 {
            e.codings.push(Code::new(systems::JLAC10, &item.code));
        }
        e.analyte = Some(Cow::Borrowed(item.analyte.as_str()));
        e.performer = b.author.take();
        if let Some(m) = &b.method
            && let Some(c) = &m.code
        {
            let sys = m.code_system.as_deref().unwrap_or("1.2.392.200119.6.1007");
            e.method = Some(Box::new(Code::new(format!("urn:oid:{sys}"), c.to_string())));
        }
        if let Some(t) = &b.effective {
            let d = t.parse::<Date>().map_err(|err| {
                Error::new(
                    loc_item().at_path(format!("{}/effectiveTime", xpath)),
                    ErrorKind::InvalidField {
                        field: "observation/effectiveTime",
                        reason: err.to_string(),
                    },
                )
            })?;
            e.effective = Some(Effective::Date(d));
        }
        e.interpretation = match b.interpretation.as_deref() {
            Some("H" | "HH") => Some(Interpretation::H),
            Some("L" | "LL") => Some(Interpretation::L),
            Some("N") => Some(Interpretation::N),
            Some("A" | "AA") => Some(Interpretation::A),
            _ => None,
        };
        if let Some(mut r) = b.range.take() {
            if let Some(u) = &b.range_unit {
                if item.value_type == ValueType::Pq && !item.unit_matches(u) {
                    return Err(Error::new(
                        loc_item().at_path(format!("{}/referenceRange", xpath)),
                        ErrorKind::UnitMismatch {
                            expected: item.unit.clone().unwrap_or_default(),
                            found: u.to_string(),
                        },
                    ));
                }
                r.unit = item.ucum.clone().or_else(|| Some(u.to_string()));
            }
            e.reference_range = Some(r);
        }
        if b.negated {
            e.absent = Some(Absent::NotPerformed);
            return Ok(());
        }
        // Partition values: out-of-range marker, nullFlavor, the value proper.
        let values = self.vals.get(b.vals_start..).unwrap_or_default();
        let mut main: Option<(usize, &RawValue<'_>)> = None;
        for (i, v) in values.iter().enumerate() {
            let vpath = || {
                if values.len() > 1 {
                    format!("{}/value[{}]", xpath, i + 1)
                } else {
                    format!("{}/value", xpath)
                }
            };
            if v.attrs.null_flavor.is_some() {
                e.absent = Some(Absent::CannotMeasure);
                continue;
            }
            let is_cd = matches!(v.attrs.xsi_type.as_deref(), Some("CD" | "CO" | "CE"));
            if is_cd && v.attrs.code_system.as_deref() == Some(OUT_OF_RANGE_OID) {
                e.out_of_range = match v.attrs.code.as_deref() {
                    Some("H") => Some(Bound::Above),
                    Some("L") => Some(Bound::Below),
                    other => {
                        return Err(Error::new(
                            Location::file(self.file)
                                .at_line(self.line(v.pos))
                                .at_path(vpath())
                                .with_item(item_code),
                            ErrorKind::InvalidValue {
                                value: other.unwrap_or("").to_owned(),
                                reason: "out-of-range marker must be H or L".into(),
                            },
                        ));
                    }
                };
                continue;
            }
            if main.is_some() {
                return Err(Error::new(
                    Location::file(self.file)
                        .at_line(self.line(v.pos))
                        .at_path(vpath())
                        .with_item(item_code),
                    ErrorKind::InvalidValue {
                        value: String::new(),
                        reason: "more than one value".into(),
                    },
                ));
            }
            main = Some((i, v));
        }
        let Some((i, v)) = main else {
            if e.absent.is_none() && e.out_of_range.is_none() {
                return Err(Error::new(
                    loc_item().at_path(format!("{}/value", xpath)),
                    ErrorKind::Missing("observation/value"),
                ));
            }
            return Ok(());
        };
        if e.absent.is_some() {
            e.absent = None; // a value next to a nullFlavor sibling: the value wins
        }
        let vloc = || {
            let p = if values.len() > 1 {
                format!("{}/value[{}]", xpath, i + 1)
            } else {
                format!("{}/value", xpath)
            };
            Location::file(self.file)
                .at_line(self.line(v.pos))
                .at_path(p)
                .with_item(item_code)
        };
        e.value = Some(self.read_value(item, v, e.out_of_range, &vloc)?);
        Ok(())
    }

    fn read_value(
        &self,
        item: &'static Item,
        v: &RawValue<'_>,
        out_of_range: Option<Bound>,
        vloc: &dyn Fn() -> Location,
    ) -> Result<Value> {
        let ty = v.attrs.xsi_type.as_deref().unwrap_or("");
        let type_err = || {
            Error::new(
                vloc(),
                ErrorKind::ValueType {
                    expected: item.value_type.name(),
                    found: if ty.is_empty() {
                        "(none)".into()
                    } else {
                        ty.to_owned()
                    },
                },
            )
        };
        match item.value_type {
            ValueType::Pq => {
                if ty != "PQ" {
                    return Err(type_err());
                }
                let raw = v.attrs.value.as_deref().unwrap_or("");
                let d: Decimal = raw.parse().map_err(|err: crate::iphr::ParseError| {
                    Error::new(
                        vloc(),
                        ErrorKind::InvalidValue {
                            value: raw.to_owned(),
                            reason: err.reason.to_owned(),
                        },
                    )
                })?;
                let unit = v.attrs.unit.as_deref().unwrap_or("");
                if !item.unit_matches(unit) {
                    return Err(Error::new(
                        vloc(),
                        ErrorKind::UnitMismatch {
                            expected: item.unit.clone().unwrap_or_default(),
                            found: unit.to_owned(),
                        },
                    ));
                }
                check_range(item, &d, out_of_range).map_err(|k| Error::new(vloc(), k))?;
                Ok(Value::Quantity {
                    value: d,
                    unit: Cow::Borrowed(item.ucum.as_deref().unwrap_or_default()),
                })
            }
            ValueType::Cd => {
                if !matches!(ty, "CD" | "CO" | "CE") {
                    return Err(type_err());
                }
                coded_value(
                    self.cat,
                    item,
                    v.attrs.code.as_deref(),
                    v.attrs.code_system.as_deref(),
                )
                .map_err(|k| Error::new(vloc(), k))
            }
            ValueType::St => {
                if ty != "ST" {
                    return Err(type_err());
                }
                Ok(Value::Text {
                    text: v.text.clone(),
                })
            }
        }
    }

    /// Builds the record from the header read and `entries` (the observations' entries).
    fn finish(
        &mut self,
        bytes: &[u8],
        archive: Option<&str>,
        entries: Vec<Entry>,
    ) -> Result<Record> {
        let file = self.file;
        let hdr = |p: &str| Location::file(file).at_path(p.to_owned());
        let text = self.text;
        let xpaths = &self.s.header_xpaths;
        let at = |(_, pos, xp): &HeaderValue<'_>| {
            Location::file(file)
                .at_line(event_line(text, *pos))
                .at_path(xpaths.get(xp.clone()).unwrap_or_default().to_owned())
        };
        let Some(exam) = &self.exam_date else {
            return Err(Error::new(
                hdr("/ClinicalDocument/documentationOf/serviceEvent/effectiveTime"),
                ErrorKind::Missing("健診実施日 (documentationOf/serviceEvent/effectiveTime)"),
            ));
        };
        let exam_date: Date = exam.0.parse().map_err(|e: crate::iphr::ParseError| {
            Error::new(
                at(exam),
                ErrorKind::InvalidField {
                    field: "健診実施日",
                    reason: e.to_string(),
                },
            )
        })?;
        let insured = match (&self.insurer, &self.number) {
            (Some(ins), Some(num)) => {
                let insurer: InsurerNumber =
                    ins.parse().map_err(|e: crate::iphr::ParseError| {
                        Error::new(
                            hdr("/ClinicalDocument/recordTarget/patientRole/id"),
                            ErrorKind::InvalidField {
                                field: "保険者番号",
                                reason: e.to_string(),
                            },
                        )
                    })?;
                Some(InsuredId {
                    insurer,
                    symbol: self.symbol.clone().map(Cow::into_owned),
                    number: num.to_string(),
                    branch: self.branch.clone().map(Cow::into_owned),
                })
            }
            _ => None,
        };
        if insured.is_none() && self.other_ids.is_empty() {
            return Err(Error::new(
                hdr("/ClinicalDocument/recordTarget/patientRole/id"),
                ErrorKind::Missing("person identifier (保険者番号 and 被保険者証番号)"),
            ));
        }
        let sex = match &self.sex {
            Some(s) => Some(s.0.parse::<Sex>().map_err(|e| {
                Error::new(
                    at(s),
                    ErrorKind::InvalidField {
                        field: "性別",
                        reason: e.to_string(),
                    },
                )
            })?),
            None => None,
        };
        let birth_date = match &self.birth {
            Some(b) => Some(b.0.parse::<Date>().map_err(|e| {
                Error::new(
                    at(b),
                    ErrorKind::InvalidField {
                        field: "生年月日",
                        reason: e.to_string(),
                    },
                )
            })?),
            None => None,
        };
        let performer = match &self.institution {
            Some(i) => {
                let n: InstitutionNumber = i.0.parse().map_err(|e: crate::iphr::ParseError| {
                    Error::new(
                        at(i),
                        ErrorKind::InvalidField {
                            field: "健診機関番号",
                            reason: e.to_string(),
                        },
                    )
                })?;
                Some(Organization {
                    id: Identifier {
                        system: systems::INSTITUTION.into(),
                        value: n.to_string(),
                    },
                    name: self.org_name.clone(),
                })
            }
            None => None,
        };
        let insurer_org = insured
            .as_ref()
            .map(|i| i.insurer.to_string())
            .or_else(|| self.hld_insurer.clone().map(Cow::into_owned))
            .map(|v| Organization {
                id: Identifier {
                    system: systems::INSURER.into(),
                    value: v,
                },
                name: None,
            });
        let person = Person {
            insured,
            identifiers: std::mem::take(&mut self.other_ids),
            name_kana: self.name.take(),
            name: None,
            sex,
            birth_date,
            postal_code: self.postal.take(),
        };
        let header = Header {
            report_kind: self.report_kind.as_ref().and_then(|a| {
                a.code.as_ref().map(|c| {
                    let mut code = Code::new(systems::REPORT_KIND, c.clone().into_owned());
                    code.display = a.display.clone().map(|d| d.into_owned().into());
                    code
                })
            }),
            program: self.program.as_ref().and_then(|a| {
                a.code.as_ref().map(|c| {
                    let mut code = Code::new(systems::PROGRAM, c.clone().into_owned());
                    code.display = a.display.clone().map(|d| d.into_owned().into());
                    code
                })
            }),
            created: self.created.as_deref().and_then(|c| c.parse().ok()),
            performer,
            insurer: insurer_org,
            sections: std::mem::take(&mut self.sections),
        };
        let mut record = Record {
            schema: SCHEMA.into(),
            unit: Unit::A,
            person,
            effective: Effective::Date(exam_date),
            header,
            entries,
            source: Source {
                format: SourceFormat::TokuteiCda,
                file: file.to_owned(),
                locator: "/ClinicalDocument".into(),
                content_hash: ContentHash::of(bytes),
                document_id: self.doc_id.take(),
                archive: archive.map(str::to_owned),
            },
            provenance: Provenance {
                converter: converter_id(),
                mapping: None,
                tables: Vec::new(),
            },
        };
        crate::judgement::apply(&mut record);
        Ok(record)
    }
}

/// Checks a quantity against the item's input range; `out_of_range` is the source's 入力範囲外 marker.
pub(crate) fn check_range(
    item: &Item,
    d: &Decimal,
    out_of_range: Option<Bound>,
) -> std::result::Result<(), ErrorKind> {
    let Some([lo, hi]) = item.range else {
        return Ok(());
    };
    let x = d.to_f64();
    let outside = x < lo || x > hi;
    if outside && out_of_range.is_none() {
        return Err(ErrorKind::ValueOutOfRange {
            value: d.to_string(),
            low: lo.to_string(),
            high: hi.to_string(),
        });
    }
    Ok(())
}

/// Builds a coded value for a CD item, checking the result table.
pub(crate) fn coded_value(
    cat: &'static Catalogue,
    item: &'static Item,
    code: Option<&str>,
    system: Option<&str>,
) -> std::result::Result<Value, ErrorKind> {
    let Some(code) = code else {
        return Err(ErrorKind::InvalidValue {
            value: String::new(),
            reason: "coded value without @code".into(),
        });
    };
    let table = item.values.as_deref().unwrap_or("");
    if let Some(sys) = system
        && sys != table
    {
        return Err(ErrorKind::InvalidValue {
            value: code.to_owned(),
            reason: format!("code system {sys} is not the item's result table {table}"),
        });
    }
    let Some((code, display)) = cat.value_entry(table, code) else {
        return Err(ErrorKind::InvalidValue {
            value: code.to_owned(),
            reason: format!("not a code of result table {table}"),
        });
    };
    // System, code and display are borrowed from the catalogue (no allocation).
    let system: Cow<'static, str> = match item.values_system() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(format!("urn:oid:{table}")),
    };
    Ok(Value::Coded {
        code: Code::with_display(system, code, display),
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    /// How many tags of `doc` the one-pass attribute scan reads (with the XMLSchema-instance
    /// prefix `xsi`), checking that it gives what quick-xml's attribute iterator gives.
    fn fast_scan_agrees(doc: &str, xsi: &'static str) -> usize {
        let mut p = Parser::new(Catalogue::builtin(), "t.xml", doc.as_bytes());
        p.xsi_prefix = xsi.into();
        let mut r = Reader::from_reader(doc.as_bytes());
        let mut fast_taken = 0;
        loop {
            let e = match r.read_event().unwrap() {
                Event::Start(e) | Event::Empty(e) => e,
                Event::Eof => break,
                _ => continue,
            };
            let tag = p.tag_text(&e).unwrap();
            let attrs = quick_xml::events::attributes::Attributes::new(tag, e.name().0.len());
            let slow = p.read_attrs_from(attrs, 0, |v| v).unwrap();
            let mut fast = Attrs::default();
            if p.fast_attrs(&e, &mut fast).is_some() {
                assert_eq!(fast, slow, "{tag}");
                fast_taken += 1;
            }
        }
        fast_taken
    }

    /// The `negationInd` kept for the last observation tag applies only to the same bytes: a
    /// negated observation between identical plain ones, and the other way round, read right;
    /// each entry gets its own XPath from the document's shared locator buffer.
    #[test]
    fn kept_negation_and_shared_locators_follow_each_observation() {
        let plain = r#"<observation classCode="OBS" moodCode="EVN">"#;
        let negated = r#"<observation classCode="OBS" moodCode="EVN" negationInd="true">"#;
        let doc = include_str!("../tests/fixtures/cda/minimal.xml");
        // Observations 2 and 4 negated, 1, 3 and 5 plain.
        let mut n = 0;
        let doc = doc
            .split(plain)
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    return part.to_owned();
                }
                n += 1;
                let tag = if n % 2 == 0 { negated } else { plain };
                format!("{tag}{part}")
            })
            .collect::<String>();
        assert_eq!(n, 5);
        let rec = read_cda(doc.as_bytes(), "t.xml").unwrap();
        let obs: Vec<&Entry> = rec
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Observation)
            .collect();
        let absent: Vec<bool> = obs.iter().map(|e| e.absent.is_some()).collect();
        assert_eq!(absent, [false, true, false, true, false]);
        for (i, e) in obs.iter().enumerate() {
            let want = match i {
                0 => "/section/entry/observation".to_owned(),
                _ => format!("/section/entry[{}]/observation", i + 1),
            };
            assert!(e.locator.ends_with(&want), "{} {want}", e.locator);
            assert_eq!(e.id, format!("e{}", i + 1));
        }
    }

    /// The one-pass attribute scan gives what quick-xml's attribute iterator gives, or gives up.
    #[test]
    fn fast_attribute_scan_agrees_with_quick_xml() {
        let doc = "<ClinicalDocument xmlns=\"urn:hl7-org:v3\" \
            xmlns:x=\"http://www.w3.org/2001/XMLSchema-instance\">\n\
            <a code=\"1\" codeSystem='2.3' displayName=\"血圧 値\" x:type=\"hl7:PQ\"/>\n\
            <a root=\"r\" extension=\"e\" typeCode=\"COMP\" negationInd=\"true\" \
            nullFlavor=\"NI\" unit=\"mg/dL\" value=\"1.5\"/>\n\
            <a classCode=\"OBS\"\tmoodCode=\"EVN\"\ncode=\"c\"   value=\"a long value, 32 bytes or more..\">\
            </a>\n\
            <a code=\"x &amp; y\" value=\"t\tab\"/>\n\
            <a code = \"spaced\" value=\"y\"/>\n\
            <a t12:type=\"x\" typeCode=\"y\" x:type=\"CD\"/>\n\
            <a codeX=\"1\" cod=\"2\" Code=\"3\" value=\"\"/>\n\
            </ClinicalDocument>";
        // All but the entity, tab and spaced tags.
        assert_eq!(fast_scan_agrees(doc, "x"), 6);
        // The usual keys recognised directly (prefix `xsi`), and near misses of them.
        let doc = "<ClinicalDocument xmlns=\"urn:hl7-org:v3\" \
            xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n\
            <a xsi:type=\"PQ\" value=\"1.5\" unit=\"cm\" classCode=\"OBS\" moodCode='EVN'/>\n\
            <a xsi:typeX=\"1\" xsi:type=\"hl7:CD\" codeSystem=\"1.2\" code=\"3\" displayName=\"d\"/>\n\
            <a codeSystemX=\"1\" code_=\"2\" valueX=\"3\" root=\"r\" extension=\"x\"/>\n\
            <a nullFlavor=\"NI\" negationInd=\"true\" typeCode=\"COMP\" rootX=\"1\"/>\n\
            <a code =\"spaced\"/>\n\
            <a value=\"x\"code=\"no space\"/>\n\
            </ClinicalDocument>";
        // All but the last two (the scan gives up; quick-xml decides).
        assert_eq!(fast_scan_agrees(doc, "xsi"), 5);
    }
}
