//! 勤怠 (attendance) daily records → monthly 時間外・休日労働 (issue 5, Deliver 3; domain.md §7.3),
//! the list of workers for whom a physician interview (医師による面接指導) is required or must be
//! offered, and item 1 (出席率) of the 標準化リワークプログラム評価シート (domain.md §7.6, seed 004).
//!
//! Layout of the daily CSV (UTF-8, one header row, columns in any order, names exact; documented in
//! `docs/oh-records.md` §1):
//!
//! | column | required | content |
//! |---|---|---|
//! | `date` | yes | `YYYY-MM-DD` |
//! | `worker_id` | yes | employee number |
//! | `start`, `end` | yes (may be empty) | `HH:MM`; `end` may be written past midnight as `24:00`–`47:59` |
//! | `break_minutes` | yes (may be empty = 0) | non-negative integer |
//! | `holiday` | yes | `0`/`1`: the day is a 法定休日 (hours worked count as 休日労働) |
//! | `absent`, `late`, `early` | yes | `0`/`1`: 欠勤, 遅刻, 早退 |
//! | `category` | no | `general` (default), `research` (研究開発業務), `highly_professional` (高度プロフェッショナル) |
//! | `name` | no | worker name |
//!
//! **Rule applied** (brief of issue 5, domain.md §7.3): per worker and calendar month,
//! 時間外・休日労働 = total hours worked (holiday work included) − 40 h × (days in month ÷ 7),
//! floored at 0; holiday hours are also reported on their own. Computed exactly in minutes × 7
//! (no rounding in the comparisons); the hour values in the records are truncated to 2 decimals.
//! Flags: `over_45` (> 45 h, the 36協定 monthly limit), `over_80` (> 80 h, the 面接指導 threshold),
//! `reaches_100` (≥ 100 h: the special clause requires *less than* 100 h). Interviews: general
//! workers and 研究開発 > 80 h → `offer` (notify; mandatory when the worker asks, 安衛則52条の2–3);
//! 研究開発 > 100 h and 高度プロフェッショナル > 100 h → `required` (without request).

use std::collections::BTreeMap;

use crate::cda::converter_id;
use crate::error::{Error, ErrorKind, Location, Result};
use crate::iphr::{
    Code, ContentHash, Date, Decimal, Effective, Entry, EntryKind, Header, Identifier, Person,
    Provenance, Record, SCHEMA, Source, SourceFormat, Unit, Value,
};

/// Code system of the attendance entries.
pub const SYSTEM: &str = "urn:iphr:attendance";
/// Identifier system of worker ids.
pub const EMPLOYEE: &str = "urn:iphr:employee";

/// Worker category for the interview rules (domain.md §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Ordinary worker.
    General,
    /// 研究開発業務.
    Research,
    /// 高度プロフェッショナル制度 (hours are 健康管理時間).
    HighlyProfessional,
}

impl Category {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "general" => Some(Self::General),
            "research" => Some(Self::Research),
            "highly_professional" => Some(Self::HighlyProfessional),
            _ => None,
        }
    }
    fn code(self) -> &'static str {
        match self {
            Self::General => "general",
            Self::Research => "research",
            Self::HighlyProfessional => "highly_professional",
        }
    }
}

/// One day of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    /// The day.
    pub date: Date,
    /// Employee number.
    pub worker: String,
    /// Worker name, if given.
    pub name: Option<String>,
    /// Category.
    pub category: Category,
    /// Minutes worked (end − start − breaks), 0 when no times.
    pub minutes: u32,
    /// 法定休日.
    pub holiday: bool,
    /// 欠勤.
    pub absent: bool,
    /// 遅刻.
    pub late: bool,
    /// 早退.
    pub early: bool,
    /// 1-based line in the file.
    pub line: u64,
    raw: String,
}

/// Parsed daily records of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendance {
    /// File name as given.
    pub file: String,
    /// Days in file order.
    pub days: Vec<Day>,
}

/// What a worker-month requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interview {
    /// Nothing.
    None,
    /// Notify the worker and hold the interview on request (> 80 h).
    Offer,
    /// Interview without request (研究開発 / 高プロ > 100 h).
    Required,
}

/// Monthly figures of one worker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Month {
    /// Employee number.
    pub worker: String,
    /// Name, if given.
    pub name: Option<String>,
    /// Category.
    pub category: Category,
    /// Year.
    pub year: u16,
    /// Month 1–12.
    pub month: u8,
    /// Days in the month.
    pub days_in_month: u8,
    /// Minutes worked in the month (holiday work included).
    pub worked_minutes: u64,
    /// Minutes worked on 法定休日.
    pub holiday_minutes: u64,
    /// 時間外・休日労働 in minutes × 7 (exact; 0 when under the statutory hours).
    pub overtime_minutes_x7: u64,
    /// Days with hours worked.
    pub days_worked: u32,
    /// 欠勤 days.
    pub absences: u32,
    /// 遅刻 count.
    pub late: u32,
    /// 早退 count.
    pub early: u32,
    /// > 45 h.
    pub over_45: bool,
    /// > 80 h.
    pub over_80: bool,
    /// ≥ 100 h.
    pub reaches_100: bool,
    /// Interview status.
    pub interview: Interview,
    /// Lines of the month's rows.
    pub lines: Vec<u64>,
    /// SHA-256 of the month's rows (fields joined by U+001F, rows by `\n`): the import key.
    pub content_hash: ContentHash,
}

impl Month {
    /// 時間外・休日労働 in hours, truncated to 2 decimals.
    pub fn overtime_hours(&self) -> Decimal {
        hours_x7(self.overtime_minutes_x7)
    }
    /// First day of the month.
    pub fn first_day(&self) -> Option<Date> {
        Date::new(self.year, self.month, 1)
    }
}

fn hours_x7(minutes_x7: u64) -> Decimal {
    // hundredths of an hour, truncated: minutes_x7 / 7 / 60 * 100
    let h100 = minutes_x7 * 100 / (7 * 60);
    let s = format!("{}.{:02}", h100 / 100, h100 % 100);
    dec(&s)
}

/// A decimal from text this module formatted itself (digits, optionally `.` and digits).
pub(crate) fn dec(s: &str) -> Decimal {
    // Invariant: callers pass only `\d+(\.\d+)?`, which Decimal always accepts.
    s.parse()
        .unwrap_or_else(|_| unreachable!("formatted decimal {s:?}"))
}

fn days_in_month(year: u16, month: u8) -> u8 {
    (28..=31)
        .rev()
        .find(|d| Date::new(year, month, *d).is_some())
        .unwrap_or(28)
}

const COLUMNS: [&str; 9] = [
    "date",
    "worker_id",
    "start",
    "end",
    "break_minutes",
    "holiday",
    "absent",
    "late",
    "early",
];

/// Whether `head` (the first bytes of a file) starts with an attendance header.
pub fn looks_like_attendance(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let line = line.strip_prefix('\u{feff}').unwrap_or(&line);
    let cols: Vec<&str> = line
        .trim_end_matches('\r')
        .split(',')
        .map(str::trim)
        .collect();
    COLUMNS.iter().all(|c| cols.contains(c))
}

fn parse_time(s: &str, max_hour: u32) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    if !h.bytes().all(|b| b.is_ascii_digit()) || !m.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    (h <= max_hour && m < 60 && !(h == max_hour && m > 0)).then_some(h * 60 + m)
}

fn flag(s: &str) -> Option<bool> {
    match s {
        "" | "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Reads a daily attendance CSV (all-or-nothing: the first bad row is the error).
pub fn read_attendance(bytes: &[u8], file: &str) -> Result<Attendance> {
    let loc = || Location::file(file);
    let text =
        std::str::from_utf8(bytes).map_err(|_| Error::new(loc(), ErrorKind::Encoding("UTF-8")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| Error::new(loc().at_line(1), ErrorKind::BadRow(e.to_string())))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let mut idx = [0usize; 9];
    for (i, c) in COLUMNS.iter().enumerate() {
        idx[i] = col(c).ok_or_else(|| {
            Error::new(loc().at_line(1), ErrorKind::MissingColumn((*c).to_owned()))
        })?;
    }
    let cat_idx = col("category");
    let name_idx = col("name");
    let known: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .chain(["category", "name"])
        .collect();
    if let Some(h) = headers.iter().find(|h| !known.contains(&h.trim())) {
        return Err(Error::new(
            loc().at_line(1).at_path(h.trim()),
            ErrorKind::InvalidField {
                field: "header",
                reason: format!("unknown column {:?}", h.trim()),
            },
        ));
    }
    let mut days: Vec<Day> = Vec::new();
    let mut seen: BTreeMap<(String, Date), u64> = BTreeMap::new();
    let mut categories: BTreeMap<String, (Category, u64)> = BTreeMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            Error::new(loc().at_line(line), ErrorKind::BadRow(e.to_string()))
        })?;
        let line = rec.position().map_or(0, csv::Position::line);
        let get = |i: usize| rec.get(i).unwrap_or("").trim();
        let bad = |field: &'static str, reason: String| {
            Error::new(
                loc().at_line(line).at_path(field),
                ErrorKind::InvalidField { field, reason },
            )
        };
        let date: Date = get(idx[0])
            .parse()
            .map_err(|_| bad("date", format!("{:?} is not YYYY-MM-DD", get(idx[0]))))?;
        let worker = get(idx[1]).to_owned();
        if worker.is_empty() {
            return Err(bad("worker_id", "empty".into()));
        }
        let (s, e) = (get(idx[2]), get(idx[3]));
        let fl = |i: usize, field: &'static str| {
            flag(get(idx[i])).ok_or_else(|| bad(field, format!("{:?} is not 0 or 1", get(idx[i]))))
        };
        let holiday = fl(5, "holiday")?;
        let absent = fl(6, "absent")?;
        let late = fl(7, "late")?;
        let early = fl(8, "early")?;
        let brk = get(idx[4]);
        let brk: u32 = if brk.is_empty() {
            0
        } else if brk.starts_with('-') {
            return Err(bad("break_minutes", format!("negative break {brk}")));
        } else {
            brk.parse().map_err(|_| {
                bad(
                    "break_minutes",
                    format!("{brk:?} is not a number of minutes"),
                )
            })?
        };
        let minutes = match (s.is_empty(), e.is_empty()) {
            (true, true) => {
                if brk > 0 {
                    return Err(bad("break_minutes", "a break without start and end".into()));
                }
                0
            }
            (false, true) => return Err(bad("end", "start without end".into())),
            (true, false) => return Err(bad("start", "end without start".into())),
            (false, false) => {
                let st = parse_time(s, 23)
                    .ok_or_else(|| bad("start", format!("{s:?} is not HH:MM (00:00–23:59)")))?;
                let en = parse_time(e, 48)
                    .ok_or_else(|| bad("end", format!("{e:?} is not HH:MM (00:00–48:00)")))?;
                if en <= st {
                    return Err(bad(
                        "end",
                        format!("end {e} is not after start {s} (write 24:00–48:00 past midnight)"),
                    ));
                }
                if brk >= en - st {
                    return Err(bad(
                        "break_minutes",
                        format!("break {brk} min leaves no (or negative) hours in {s}–{e}"),
                    ));
                }
                en - st - brk
            }
        };
        if absent && minutes > 0 {
            return Err(bad("absent", "absent on a day with hours worked".into()));
        }
        if absent && (late || early) {
            return Err(bad(
                "absent",
                "absent and late/early on the same day".into(),
            ));
        }
        if (late || early) && minutes == 0 {
            return Err(bad(
                "late",
                "late/early on a day without hours worked".into(),
            ));
        }
        let category = match cat_idx {
            Some(i) => Category::parse(get(i)).ok_or_else(|| {
                bad(
                    "category",
                    format!(
                        "{:?}: expected general, research or highly_professional",
                        get(i)
                    ),
                )
            })?,
            None => Category::General,
        };
        match categories.get(&worker) {
            Some((c, first)) if *c != category => {
                return Err(bad(
                    "category",
                    format!("worker {worker} is {} at line {first}", c.code()),
                ));
            }
            Some(_) => {}
            None => {
                categories.insert(worker.clone(), (category, line));
            }
        }
        if let Some(first) = seen.insert((worker.clone(), date), line) {
            return Err(Error::new(
                loc().at_line(line).at_path("date"),
                ErrorKind::DuplicatePerson {
                    key: format!("{worker} {date}"),
                    first: format!("line {first}"),
                },
            ));
        }
        let name = name_idx
            .map(get)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let raw = rec.iter().collect::<Vec<_>>().join("\u{1f}");
        days.push(Day {
            date,
            worker,
            name,
            category,
            minutes,
            holiday,
            absent,
            late,
            early,
            line,
            raw,
        });
    }
    Ok(Attendance {
        file: file.to_owned(),
        days,
    })
}

/// Monthly figures per worker and month, ordered by worker then month.
pub fn monthly(att: &Attendance) -> Vec<Month> {
    let mut groups: BTreeMap<(&str, u16, u8), Vec<&Day>> = BTreeMap::new();
    for d in &att.days {
        groups
            .entry((d.worker.as_str(), d.date.year(), d.date.month()))
            .or_default()
            .push(d);
    }
    groups
        .into_iter()
        .map(|((worker, year, month), days)| {
            let dim = days_in_month(year, month);
            let worked: u64 = days.iter().map(|d| u64::from(d.minutes)).sum();
            let holiday: u64 = days
                .iter()
                .filter(|d| d.holiday)
                .map(|d| u64::from(d.minutes))
                .sum();
            let statutory_x7 = 40 * 60 * u64::from(dim);
            let ot7 = (worked * 7).saturating_sub(statutory_x7);
            let over = |h: u64| ot7 > h * 60 * 7;
            let category = days.first().map_or(Category::General, |d| d.category);
            let interview = match category {
                Category::Research | Category::HighlyProfessional if over(100) => {
                    Interview::Required
                }
                Category::General | Category::Research if over(80) => Interview::Offer,
                _ => Interview::None,
            };
            let count = |f: fn(&Day) -> bool| days.iter().filter(|d| f(d)).count() as u32;
            Month {
                worker: worker.to_owned(),
                name: days.iter().find_map(|d| d.name.clone()),
                category,
                year,
                month,
                days_in_month: dim,
                worked_minutes: worked,
                holiday_minutes: holiday,
                overtime_minutes_x7: ot7,
                days_worked: count(|d| d.minutes > 0),
                absences: count(|d| d.absent),
                late: count(|d| d.late),
                early: count(|d| d.early),
                over_45: over(45),
                over_80: over(80),
                reaches_100: ot7 >= 100 * 60 * 7,
                interview,
                lines: days.iter().map(|d| d.line).collect(),
                content_hash: ContentHash::of(
                    days.iter()
                        .map(|d| d.raw.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                        .as_bytes(),
                ),
            }
        })
        .collect()
}

/// Worker-months for which an interview is required or must be offered (required first).
pub fn interview_list(months: &[Month]) -> Vec<&Month> {
    let mut v: Vec<&Month> = months
        .iter()
        .filter(|m| m.interview != Interview::None)
        .collect();
    v.sort_by(|a, b| {
        b.interview
            .cmp(&a.interview)
            .then(b.overtime_minutes_x7.cmp(&a.overtime_minutes_x7))
            .then(a.worker.cmp(&b.worker))
    });
    v
}

/// The interview list as CSV (`worker_id,name,category,month,overtime_holiday_hours,interview`).
pub fn interview_csv(months: &[Month]) -> String {
    let mut s = String::from("worker_id,name,category,month,overtime_holiday_hours,interview\n");
    for m in interview_list(months) {
        let status = if m.interview == Interview::Required {
            "required"
        } else {
            "offer"
        };
        s.push_str(&format!(
            "{},{},{},{:04}-{:02},{},{status}\n",
            m.worker,
            m.name.as_deref().unwrap_or("").replace(',', " "),
            m.category.code(),
            m.year,
            m.month,
            m.overtime_hours()
        ));
    }
    s
}

/// Attendance counts for item 1 (出席率) of the rework sheet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttendanceCounts {
    /// Days the person should have attended.
    pub scheduled_days: u32,
    /// 欠席 (1 day each).
    pub absent_days: u32,
    /// 遅刻 (0.5 day each).
    pub late: u32,
    /// 早退 (0.5 day each).
    pub early: u32,
}

impl AttendanceCounts {
    /// Counts over the scheduled days of `worker` from `start` to `end` (inclusive): rows that are
    /// not 法定休日 and either have hours worked or are marked absent (a row with neither is a day
    /// off).
    pub fn from_days(att: &Attendance, worker: &str, start: Date, end: Date) -> Self {
        let mut c = Self {
            scheduled_days: 0,
            absent_days: 0,
            late: 0,
            early: 0,
        };
        for d in att
            .days
            .iter()
            .filter(|d| d.worker == worker && d.date >= start && d.date <= end && !d.holiday)
            .filter(|d| d.absent || d.minutes > 0)
        {
            c.scheduled_days += 1;
            c.absent_days += u32::from(d.absent);
            c.late += u32::from(d.late);
            c.early += u32::from(d.early);
        }
        c
    }

    /// Attended half-days and scheduled half-days (absence = 2, late/early = 1 each), or `None`
    /// when the counts are inconsistent (no scheduled day, more missed than scheduled).
    pub fn half_days(&self) -> Option<(u64, u64)> {
        let s2 = 2 * u64::from(self.scheduled_days);
        let missed = 2 * u64::from(self.absent_days) + u64::from(self.late) + u64::from(self.early);
        (s2 > 0 && missed <= s2).then(|| (s2 - missed, s2))
    }

    /// Score of item 1: 4 ≥ 95 %, 3 ≥ 90 %, 2 ≥ 80 %, else 1 (seed 004); `None` as in
    /// [`Self::half_days`].
    pub fn score(&self) -> Option<u8> {
        let (a, s) = self.half_days()?;
        Some(if 100 * a >= 95 * s {
            4
        } else if 100 * a >= 90 * s {
            3
        } else if 100 * a >= 80 * s {
            2
        } else {
            1
        })
    }
}

fn quantity(id: &mut u32, code: &str, display: &str, value: Decimal, unit: &'static str) -> Entry {
    *id += 1;
    let mut e = Entry::observation(
        format!("e{id}"),
        Code::with_display(SYSTEM, code.to_owned(), display.to_owned()),
        format!("monthly {code}"),
    );
    e.value = Some(Value::Quantity {
        value,
        unit: unit.into(),
    });
    e
}

fn count_dec(n: u64) -> Decimal {
    dec(&n.to_string())
}

/// The monthly figures as iPHR records (unit B), one per worker-month.
pub fn records(att: &Attendance) -> Vec<Record> {
    monthly(att)
        .iter()
        .filter_map(|m| month_record(att, m))
        .collect()
}

fn month_record(att: &Attendance, m: &Month) -> Option<Record> {
    let start = m.first_day()?;
    let end = Date::new(m.year, m.month, m.days_in_month)?;
    let mut id = 0;
    let mut entries = vec![
        quantity(
            &mut id,
            "worked-hours",
            "総労働時間",
            hours_x7(m.worked_minutes * 7),
            "h",
        ),
        quantity(
            &mut id,
            "statutory-hours",
            "法定労働時間 (40 h × 暦日数 ÷ 7)",
            hours_x7(40 * 60 * u64::from(m.days_in_month)),
            "h",
        ),
        quantity(
            &mut id,
            "overtime-holiday-hours",
            "時間外・休日労働時間",
            m.overtime_hours(),
            "h",
        ),
        quantity(
            &mut id,
            "holiday-hours",
            "休日労働時間",
            hours_x7(m.holiday_minutes * 7),
            "h",
        ),
        quantity(
            &mut id,
            "days-worked",
            "出勤日数",
            count_dec(u64::from(m.days_worked)),
            "d",
        ),
        quantity(
            &mut id,
            "absences",
            "欠勤日数",
            count_dec(u64::from(m.absences)),
            "d",
        ),
        quantity(
            &mut id,
            "late",
            "遅刻回数",
            count_dec(u64::from(m.late)),
            "{times}",
        ),
        quantity(
            &mut id,
            "early-leave",
            "早退回数",
            count_dec(u64::from(m.early)),
            "{times}",
        ),
    ];
    let band = if m.reaches_100 {
        (
            "100-or-more",
            "100時間以上 (特別条項の上限100時間未満を超過)",
        )
    } else if m.over_80 {
        ("over-80", "80時間超 (面接指導の対象)")
    } else if m.over_45 {
        ("over-45", "45時間超 (36協定の原則上限超過)")
    } else {
        ("within-45", "45時間以内")
    };
    let interview = match m.interview {
        Interview::Required => ("required", "面接指導 実施義務 (申出不要)"),
        Interview::Offer => ("offer", "面接指導 申出により実施 (本人へ通知)"),
        Interview::None => ("none", "対象外"),
    };
    for (code, display, (vcode, vdisplay)) in [
        ("overtime-band", "時間外・休日労働の区分", band),
        ("interview", "医師による面接指導", interview),
    ] {
        id += 1;
        let mut e = Entry::observation(
            format!("e{id}"),
            Code::with_display(SYSTEM, code, display),
            "derived (domain.md §7.3)".to_owned(),
        );
        e.kind = EntryKind::Derived;
        e.value = Some(Value::Coded {
            code: Code::with_display(SYSTEM, vcode, vdisplay),
        });
        entries.push(e);
    }
    Some(Record {
        schema: SCHEMA.into(),
        unit: Unit::B,
        person: Person {
            identifiers: vec![Identifier {
                system: EMPLOYEE.to_owned(),
                value: m.worker.clone(),
            }],
            name: m.name.clone(),
            ..Person::default()
        },
        effective: Effective::Period {
            start,
            end: Some(end),
        },
        header: Header {
            report_kind: None,
            program: Some(Code::with_display(
                SYSTEM,
                m.category.code(),
                match m.category {
                    Category::General => "一般の労働者",
                    Category::Research => "研究開発業務",
                    Category::HighlyProfessional => "高度プロフェッショナル",
                },
            )),
            created: None,
            performer: None,
            insurer: None,
            sections: Vec::new(),
        },
        entries,
        source: Source {
            format: SourceFormat::Attendance,
            file: att.file.clone(),
            locator: format!(
                "worker {}, {:04}-{:02}, lines {}",
                m.worker,
                m.year,
                m.month,
                m.lines
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .into(),
            content_hash: m.content_hash.clone(),
            document_id: None,
            archive: None,
        },
        provenance: Provenance {
            converter: converter_id(),
            mapping: Some("attendance-daily/1".to_owned()),
            tables: vec!["安衛則52条の2 (80h), 36協定 (45h/100h)".to_owned()],
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_with_bounds() {
        assert_eq!(parse_time("08:30", 23), Some(510));
        assert_eq!(parse_time("24:00", 23), None);
        assert_eq!(parse_time("26:15", 48), Some(26 * 60 + 15));
        assert_eq!(parse_time("48:01", 48), None);
        assert_eq!(parse_time("8:5", 23), None);
        assert_eq!(parse_time("-1:00", 23), None);
    }

    #[test]
    fn header_sniffing() {
        let h = "date,worker_id,start,end,break_minutes,holiday,absent,late,early\r\n";
        assert!(looks_like_attendance(h.as_bytes()));
        assert!(looks_like_attendance(format!("\u{feff}{h}").as_bytes()));
        assert!(!looks_like_attendance(b"date,worker_id,start,end\n"));
    }

    #[test]
    fn truncated_hours() {
        assert_eq!(hours_x7((80 * 60 - 1) * 7).as_str(), "79.98");
        assert_eq!(hours_x7(80 * 60 * 7).as_str(), "80.00");
        assert_eq!(hours_x7(1).as_str(), "0.00");
    }

    #[test]
    fn item1_thresholds() {
        let c = |s, a, l, e| AttendanceCounts {
            scheduled_days: s,
            absent_days: a,
            late: l,
            early: e,
        };
        assert_eq!(c(20, 1, 0, 0).score(), Some(4)); // 95 %
        assert_eq!(c(20, 1, 1, 0).score(), Some(3)); // 92.5 %
        assert_eq!(c(20, 2, 0, 0).score(), Some(3)); // 90 %
        assert_eq!(c(20, 2, 0, 1).score(), Some(2)); // 87.5 %
        assert_eq!(c(20, 4, 0, 0).score(), Some(2)); // 80 %
        assert_eq!(c(20, 4, 1, 0).score(), Some(1)); // 77.5 %
        assert_eq!(c(0, 0, 0, 0).score(), None);
        assert_eq!(c(2, 3, 0, 0).score(), None);
    }
}
