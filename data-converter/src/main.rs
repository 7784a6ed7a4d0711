//! `data-converter` CLI (issue 4, Deliver 6; issue 5, Deliver 6): converts 特定健診 CDA files,
//! archives (ZIP), health-check CSVs, UKE claims (`.uke`) and stress checks (`--stress`, .csv/.json) — given as files or directories — to iPHR JSON Lines, FHIR Bundles or FHIR
//! NDJSON. One output file per input, written to a temporary name and renamed only when the input
//! converted completely (all-or-nothing), unless `--keep-going`. Parallel over files (rayon); a
//! progress bar when stderr is a terminal; a summary at the end; exit status 1 on any error.
//! Issue 5: attendance CSVs and `oh-records/1` JSON are recognised by content (`docs/oh-records.md`).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use data_converter::archive::read_archive_with;
use data_converter::cda::read_cda;
use data_converter::claims::{MasterKind, Masters, read_uke};
use data_converter::csv_import::{Mapping, read_csv};
use data_converter::fhir::{self, RefStyle};
use data_converter::iphr::{EntryKind, Record};
use data_converter::stress::{
    StressOutput, read_roster, read_stress_csv, read_stress_json, report,
};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// iPHR records, one JSON object per line (`.iphr.jsonl`).
    Iphr,
    /// One FHIR R4 `collection` Bundle per input (`.bundle.json`).
    Bundle,
    /// FHIR R4 resources, one per line (`.fhir.ndjson`).
    Ndjson,
}

/// Convert 特定健診 CDA / archives and health-check CSVs to iPHR or FHIR R4 (JP Core).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Input files or directories (.xml CDA, .zip 特定健診 archive, .csv with --mapping; an
    /// attendance .csv and an oh-records .json are recognised by content).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output format.
    #[arg(long = "to", value_enum, default_value_t = Format::Iphr)]
    to: Format,
    /// Directory for the outputs (one file per input).
    #[arg(short, long, default_value = "out")]
    out_dir: PathBuf,
    /// TOML mapping describing the CSV layout (required for .csv inputs).
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Convert what can be converted and report the rest (default: stop at the first error and
    /// write nothing for the failing input).
    #[arg(long)]
    keep_going: bool,
    /// Attendance CSV for item 1 (出席率) of rework sheets in OH-records JSON inputs that carry no
    /// attendance counts (issue 5).
    #[arg(long)]
    attendance: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
    // --- issue 5 (conv2): claims and stress check ---
    /// 傷病名マスター (支払基金 B master CSV, Shift_JIS) for diagnosis names in .uke claims.
    #[arg(long)]
    disease_master: Option<PathBuf>,
    /// 医薬品マスター (Y master CSV, Shift_JIS) for medicine names in .uke claims.
    #[arg(long)]
    drug_master: Option<PathBuf>,
    /// Treat .csv and .json inputs as 57-item stress checks; writes `stress-report.json` (incomplete
    /// sheets, workers who have not answered, department aggregates) to the output directory.
    #[arg(long)]
    stress: bool,
    /// Roster CSV (`worker_id`, optional `department`) for the stress-check report.
    #[arg(long, requires = "stress")]
    roster: Option<PathBuf>,
}

#[derive(Default)]
struct Stats {
    files: AtomicU64,
    documents: AtomicU64,
    observations: AtomicU64,
    warnings: AtomicU64,
    errors: AtomicU64,
    /// 64-bit hashes of the distinct person keys (8 bytes per person, not the keys).
    persons: Mutex<HashSet<u64>>,
}

struct Run<'a> {
    cli: &'a Cli,
    mapping: Option<Mapping>,
    // issue 5 (conv2)
    masters: Option<Masters>,
    stress: Mutex<Vec<StressOutput>>,
    stats: Stats,
    abort: AtomicBool,
    pb: ProgressBar,
}

/// A record serialised for the sink.
enum Rendered {
    /// One iPHR JSON line.
    Bytes(Vec<u8>),
    /// FHIR resources: (type, id, JSON or Bundle entry JSON).
    Resources(Vec<(&'static str, String, Vec<u8>)>),
}

/// Writes one output file incrementally.
struct Sink {
    w: BufWriter<File>,
    format: Format,
    count: u64,
    /// Patients and Organizations written, by their 128-bit UUID ids (16 bytes each).
    seen: HashSet<u128>,
}

impl Sink {
    fn new(path: &Path, format: Format) -> anyhow::Result<Self> {
        let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut s = Sink {
            w: BufWriter::new(f),
            format,
            count: 0,
            seen: HashSet::new(),
        };
        if format == Format::Bundle {
            s.w.write_all(b"{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[")?;
        }
        Ok(s)
    }

    fn record(&mut self, rec: &Record) -> anyhow::Result<()> {
        let r = Sink::render(self.format, rec);
        self.write_rendered(r)
    }

    /// Serialises a record for `format` without shared state (Patients and Organizations are
    /// deduplicated when written): iPHR JSON line, or the FHIR resources.
    fn render(format: Format, rec: &Record) -> Rendered {
        match format {
            Format::Iphr => {
                let mut v = serde_json::to_vec(rec).unwrap_or_default();
                v.push(b'\n');
                Rendered::Bytes(v)
            }
            Format::Ndjson | Format::Bundle => {
                let style = if format == Format::Bundle {
                    RefStyle::Uuid
                } else {
                    RefStyle::Relative
                };
                Rendered::Resources(
                    fhir::record_resources(rec, style)
                        .into_iter()
                        .map(|r| {
                            let bytes = if format == Format::Bundle {
                                serde_json::to_vec(&serde_json::json!({ "fullUrl": format!("urn:uuid:{}", r.id), "resource": r.json }))
                            } else {
                                serde_json::to_vec(&r.json)
                            };
                            (r.resource_type, r.id, bytes.unwrap_or_default())
                        })
                        .collect(),
                )
            }
        }
    }

    fn write_rendered(&mut self, r: Rendered) -> anyhow::Result<()> {
        match r {
            Rendered::Bytes(b) => self.w.write_all(&b)?,
            Rendered::Resources(list) => {
                for (ty, id, bytes) in list {
                    let shared = fhir::is_shared_type(ty);
                    if shared && !self.seen.insert(uuid_bits(&id)) {
                        continue;
                    }
                    if self.format == Format::Bundle {
                        if self.count > 0 {
                            self.w.write_all(b",")?;
                        }
                        self.count += 1;
                        self.w.write_all(&bytes)?;
                    } else {
                        self.w.write_all(&bytes)?;
                        self.w.write_all(b"\n")?;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        if self.format == Format::Bundle {
            self.w.write_all(b"]}\n")?;
        }
        self.w.flush()?;
        Ok(())
    }
}

/// The 128 bits of a UUID id (FHIR ids written here are name-based UUIDs); another id is hashed.
fn uuid_bits(id: &str) -> u128 {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    u128::from_str_radix(&hex, 16).unwrap_or_else(|_| u128::from(hash64(id)))
}

/// A 64-bit hash for the distinct-person count (a collision, ~n²/2⁶⁵, would undercount by one).
fn hash64<T: std::hash::Hash + ?Sized>(v: &T) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl Run<'_> {
    fn error(&self, e: &dyn std::fmt::Display) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        self.pb.suspend(|| eprintln!("error: {e}"));
    }

    fn warn(&self, file: &Path, w: &str) {
        self.stats.warnings.fetch_add(1, Ordering::Relaxed);
        self.pb
            .suspend(|| eprintln!("warning: {}: {w}", file.display()));
    }

    fn count(&self, rec: &Record) {
        self.stats.documents.fetch_add(1, Ordering::Relaxed);
        let n = rec
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Observation)
            .count();
        self.stats
            .observations
            .fetch_add(n as u64, Ordering::Relaxed);
        if let Some(k) = rec.person.key()
            && let Ok(mut p) = self.stats.persons.lock()
        {
            p.insert(hash64(&k));
        }
        self.pb.inc(1);
    }

    fn out_path(&self, input: &Path) -> PathBuf {
        let stem = input
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = match self.cli.to {
            Format::Iphr => "iphr.jsonl",
            Format::Bundle => "bundle.json",
            Format::Ndjson => "fhir.ndjson",
        };
        self.cli.out_dir.join(format!("{stem}.{ext}"))
    }

    /// Converts one input; returns whether it converted without error.
    fn convert(&self, input: &Path) -> anyhow::Result<bool> {
        let out = self.out_path(input);
        let tmp = out.with_extension("partial");
        let mut sink = Sink::new(&tmp, self.cli.to)?;
        let name = input.display().to_string();
        let ext = input
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let mut ok = true;
        match ext.as_str() {
            // --- issue 5 (conv2): claims and stress checks ---
            "uke" => {
                let bytes = std::fs::read(input).with_context(|| format!("read {name}"))?;
                match read_uke(&bytes, &name, self.masters.as_ref()) {
                    Ok(o) => {
                        for rec in &o.records {
                            self.count(rec);
                            sink.record(rec)?;
                        }
                    }
                    Err(e) => {
                        ok = false;
                        self.error(&e);
                    }
                }
            }
            "csv" | "json" if self.cli.stress => {
                let bytes = std::fs::read(input).with_context(|| format!("read {name}"))?;
                let res = if ext == "json" {
                    read_stress_json(&bytes, &name)
                } else {
                    read_stress_csv(&bytes, &name)
                };
                match res {
                    Ok(o) => {
                        for i in &o.incomplete {
                            self.warn(
                                input,
                                &format!(
                                    "worker {} not scored ({}): double {:?}, missing {:?}",
                                    i.worker_id, i.locator, i.double, i.missing
                                ),
                            );
                        }
                        for rec in o.records() {
                            self.count(rec);
                            sink.record(rec)?;
                        }
                        if let Ok(mut v) = self.stress.lock() {
                            v.push(o);
                        }
                    }
                    Err(e) => {
                        ok = false;
                        self.error(&e);
                    }
                }
            }
            // issue 5 part 2 (conv3): attendance CSVs and oh-records JSON, recognised by content.
            _ if conv3_kind(input, &ext).is_some() => {
                ok = self.convert_conv3(input, &name, &ext, &mut sink)?;
            }
            "zip" => {
                let f = File::open(input).with_context(|| format!("open {name}"))?;
                let mut write_err = None;
                let format = self.cli.to;
                // Serialise inside the parallel workers; the sink only writes bytes.
                let render = |rec: &Record| Sink::render(format, rec);
                let res = read_archive_with(std::io::BufReader::new(f), &name, render, |r| {
                    if self.abort.load(Ordering::Relaxed) {
                        ok = false;
                        return ControlFlow::Break(());
                    }
                    match r {
                        Ok((rec, bytes)) => {
                            self.count(&rec);
                            if let Err(e) = sink.write_rendered(bytes) {
                                write_err = Some(e);
                                return ControlFlow::Break(());
                            }
                        }
                        Err(e) => {
                            ok = false;
                            self.error(&e);
                            if !self.cli.keep_going {
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    ControlFlow::Continue(())
                });
                if let Some(e) = write_err {
                    return Err(e);
                }
                match res {
                    Ok(info) => {
                        for w in &info.warnings {
                            self.warn(input, w);
                        }
                    }
                    Err(e) => {
                        ok = false;
                        self.error(&e);
                    }
                }
            }
            "csv" | "tsv" | "txt" => {
                let Some(m) = &self.mapping else {
                    bail!("{name}: a CSV needs --mapping")
                };
                let bytes = std::fs::read(input).with_context(|| format!("read {name}"))?;
                match read_csv(&bytes, &name, m) {
                    Ok(o) => {
                        for e in &o.errors {
                            self.error(e);
                        }
                        ok = o.errors.is_empty();
                        if ok || self.cli.keep_going {
                            for rec in &o.records {
                                self.count(rec);
                                sink.record(rec)?;
                            }
                        }
                    }
                    Err(e) => {
                        ok = false;
                        self.error(&e);
                    }
                }
            }
            _ => {
                let bytes = std::fs::read(input).with_context(|| format!("read {name}"))?;
                match read_cda(&bytes, &name) {
                    Ok(rec) => {
                        self.count(&rec);
                        sink.record(&rec)?;
                    }
                    Err(e) => {
                        ok = false;
                        self.error(&e);
                    }
                }
            }
        }
        sink.finish()?;
        if ok || self.cli.keep_going {
            std::fs::rename(&tmp, &out).with_context(|| format!("rename to {}", out.display()))?;
        } else {
            std::fs::remove_file(&tmp).ok();
        }
        self.stats.files.fetch_add(1, Ordering::Relaxed);
        Ok(ok)
    }
}

// --- issue 5 part 2 (conv3): attendance (勤怠) CSV and occupational-health records JSON ---

/// What a conv3 input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conv3Kind {
    /// 勤怠 daily CSV (header names the attendance columns).
    Attendance,
    /// `oh-records/1` JSON.
    OhRecords,
}

/// Recognises an attendance CSV or an oh-records JSON by its first bytes.
fn conv3_kind(input: &Path, ext: &str) -> Option<Conv3Kind> {
    use std::io::Read;
    if !matches!(ext, "csv" | "json") {
        return None;
    }
    let mut head = Vec::with_capacity(4096);
    File::open(input)
        .ok()?
        .take(4096)
        .read_to_end(&mut head)
        .ok()?;
    if ext == "csv" && data_converter::attendance::looks_like_attendance(&head) {
        Some(Conv3Kind::Attendance)
    } else if ext == "json" && data_converter::oh::looks_like_oh(&head) {
        Some(Conv3Kind::OhRecords)
    } else {
        None
    }
}

impl Run<'_> {
    /// Converts an attendance CSV (also writing `<input>.interviews.csv`, the workers for whom a
    /// physician interview is required or must be offered) or an oh-records JSON.
    fn convert_conv3(
        &self,
        input: &Path,
        name: &str,
        ext: &str,
        sink: &mut Sink,
    ) -> anyhow::Result<bool> {
        use data_converter::attendance;
        let bytes = std::fs::read(input).with_context(|| format!("read {name}"))?;
        let records = match conv3_kind(input, ext) {
            Some(Conv3Kind::Attendance) => match attendance::read_attendance(&bytes, name) {
                Ok(att) => {
                    let list = self.cli.out_dir.join(format!(
                        "{}.interviews.csv",
                        input
                            .file_name()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    ));
                    std::fs::write(&list, attendance::interview_csv(&attendance::monthly(&att)))
                        .with_context(|| format!("write {}", list.display()))?;
                    Ok(attendance::records(&att))
                }
                Err(e) => Err(e),
            },
            Some(Conv3Kind::OhRecords) => {
                let att = match &self.cli.attendance {
                    Some(p) => {
                        let b =
                            std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
                        match attendance::read_attendance(&b, &p.display().to_string()) {
                            Ok(a) => Some(a),
                            Err(e) => {
                                self.error(&e);
                                return Ok(false);
                            }
                        }
                    }
                    None => None,
                };
                data_converter::oh::read_oh(&bytes, name, att.as_ref())
            }
            None => bail!("{name}: neither an attendance CSV nor an oh-records JSON"),
        };
        match records {
            Ok(recs) => {
                for rec in &recs {
                    self.count(rec);
                    sink.record(rec)?;
                }
                Ok(true)
            }
            Err(e) => {
                self.error(&e);
                Ok(false)
            }
        }
    }
}

fn collect_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            while let Some(d) = stack.pop() {
                let mut entries: Vec<_> = std::fs::read_dir(&d)
                    .with_context(|| format!("read directory {}", d.display()))?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .collect();
                entries.sort();
                for e in entries {
                    if e.is_dir() {
                        stack.push(e);
                    } else if let Some(x) = e
                        .extension()
                        .map(|x| x.to_string_lossy().to_ascii_lowercase())
                        && matches!(x.as_str(), "xml" | "zip" | "csv" | "uke" | "json")
                    {
                        out.push(e);
                    }
                }
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<bool> {
    if let Some(j) = cli.jobs {
        rayon::ThreadPoolBuilder::new()
            .num_threads(j)
            .build_global()
            .ok();
    }
    let inputs = collect_inputs(&cli.inputs)?;
    let mapping = match &cli.mapping {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
            Some(Mapping::from_toml(&text, &p.display().to_string())?)
        }
        None => None,
    };
    std::fs::create_dir_all(&cli.out_dir)
        .with_context(|| format!("create {}", cli.out_dir.display()))?;
    // issue 5 (conv2): masters for claims, roster for the stress report
    let masters = if cli.disease_master.is_some() || cli.drug_master.is_some() {
        let mut m = Masters::default();
        for (kind, p) in [
            (MasterKind::Disease, &cli.disease_master),
            (MasterKind::Drug, &cli.drug_master),
        ] {
            if let Some(p) = p {
                let bytes = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
                m.load(kind, &bytes, &p.display().to_string())?;
            }
        }
        Some(m)
    } else {
        None
    };
    let roster = match &cli.roster {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
            Some(read_roster(&bytes, &p.display().to_string())?)
        }
        None => None,
    };
    let pb = if !cli.quiet && std::io::stderr().is_terminal() {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} {pos} documents ({per_sec}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        pb
    } else {
        ProgressBar::hidden()
    };
    let run = Run {
        cli,
        mapping,
        masters,
        stress: Mutex::new(Vec::new()),
        stats: Stats::default(),
        abort: AtomicBool::new(false),
        pb,
    };
    let total = inputs.len();
    let started = std::time::Instant::now();
    let results: Vec<anyhow::Result<bool>> = inputs
        .par_iter()
        .map(|p| {
            if run.abort.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let r = run.convert(p);
            if !matches!(r, Ok(true)) && !cli.keep_going {
                run.abort.store(true, Ordering::Relaxed);
            }
            run.pb.set_message(format!(
                "{}/{total} files",
                run.stats.files.load(Ordering::Relaxed)
            ));
            r
        })
        .collect();
    run.pb.finish_and_clear();
    let mut ok = true;
    for r in results {
        match r {
            Ok(true) => {}
            Ok(false) => ok = false,
            Err(e) => {
                ok = false;
                run.error(&format!("{e:#}"));
            }
        }
    }
    // issue 5 (conv2): the stress-check report over all stress inputs
    if cli.stress {
        let outputs = run.stress.lock().map(|v| v.clone()).unwrap_or_default();
        let refs: Vec<&StressOutput> = outputs.iter().collect();
        let r = report(&refs, roster.as_deref());
        let path = cli.out_dir.join("stress-report.json");
        let mut text = serde_json::to_string_pretty(&r)?;
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        eprintln!(
            "stress check: {} scored, {} high stress, {} not scored (double/missing), {} not answered, {} departments aggregated, {} suppressed (< 10) → {}",
            r.scored,
            r.high_stress,
            r.incomplete.len(),
            r.not_answered.len(),
            r.departments.len(),
            r.suppressed_departments.len(),
            path.display()
        );
    }
    let s = &run.stats;
    let persons = s.persons.lock().map(|p| p.len()).unwrap_or(0);
    eprintln!(
        "summary: {} of {} files, {} documents, {} persons, {} observations, {} warnings, {} errors in {:.2} s{}",
        s.files.load(Ordering::Relaxed),
        total,
        s.documents.load(Ordering::Relaxed),
        persons,
        s.observations.load(Ordering::Relaxed),
        s.warnings.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        if ok {
            ""
        } else if cli.keep_going {
            " (kept going)"
        } else {
            " (stopped; failing inputs wrote nothing)"
        },
    );
    Ok(ok)
}
