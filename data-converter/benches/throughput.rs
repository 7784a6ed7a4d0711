//! Conversion throughput of 特定健診 CDA beside raw quick-xml event parsing of the same bytes, in the
//! same run (issue 4, Acceptance "Benchmarks"). Plain bench harness (no criterion), printing MiB/s
//! and documents/s. Run: `cargo bench -p data-converter --bench throughput [-- DOCS ROUNDS [LAYOUT]]`
//! with LAYOUT `compact`, `orca` or `both` (the default): the synthetic documents in
//! [`Layout::Compact`] and as the 日医特定健診システム writes them ([`Layout::Orca`]).
//! Single-thread phases are timed by wall clock and by the thread's CPU time (the latter is robust
//! against other processes on a shared machine); the best of the rounds is reported. The SHA-256
//! of the source bytes (the record's `content_hash`, part of every conversion) is also timed alone.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use data_converter::synth::Layout;
use quick_xml::Reader;
use quick_xml::events::Event;
use rayon::prelude::*;

fn raw_events(doc: &[u8]) -> usize {
    let mut r = Reader::from_reader(doc);
    let mut n = 0;
    loop {
        match r.read_event() {
            Ok(Event::Eof) => break,
            Ok(_) => n += 1,
            Err(e) => panic!("synthetic document is not XML: {e}"),
        }
    }
    n
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let docs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(4000);
    let rounds: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let layouts: &[(Layout, &str)] = match args.get(2).map(String::as_str) {
        Some("compact") => &[(Layout::Compact, "compact")],
        Some("orca") => &[(Layout::Orca, "ORCA layout")],
        None | Some("both") => &[(Layout::Compact, "compact"), (Layout::Orca, "ORCA layout")],
        Some(other) => panic!("layout {other:?}: compact, orca or both"),
    };
    for &(layout, name) in layouts {
        measure(layout, name, docs, rounds);
    }
}

fn measure(layout: Layout, name: &str, docs: u64, rounds: u32) {
    let corpus: Vec<Vec<u8>> = (0..docs)
        .map(|i| data_converter::synth::cda_document_in(i, layout).into_bytes())
        .collect();
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    let mib = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "corpus: {docs} synthetic CDA documents, {name}, {mib:.1} MiB ({} B/doc)",
        bytes as u64 / docs
    );

    let (mut best_raw, mut best_conv, mut best_par) = (f64::MAX, f64::MAX, f64::MAX);
    let (mut cpu_raw, mut cpu_conv, mut cpu_sha) = (f64::MAX, f64::MAX, f64::MAX);
    let secs = |d: Duration| d.as_secs_f64();
    for _ in 0..rounds {
        let (t, c) = (Instant::now(), ThreadTime::now());
        let mut events = 0;
        for d in &corpus {
            events += raw_events(black_box(d));
        }
        black_box(events);
        best_raw = best_raw.min(secs(t.elapsed()));
        cpu_raw = cpu_raw.min(secs(c.elapsed()));

        // The source content hash alone (SHA-256 of the bytes, part of every conversion).
        let c = ThreadTime::now();
        for d in &corpus {
            black_box(data_converter::iphr::ContentHash::of(black_box(d)));
        }
        cpu_sha = cpu_sha.min(secs(c.elapsed()));

        let (t, c) = (Instant::now(), ThreadTime::now());
        let mut obs = 0;
        for (i, d) in corpus.iter().enumerate() {
            let rec = data_converter::cda::read_cda(black_box(d), "bench.xml")
                .unwrap_or_else(|e| panic!("doc {i}: {e}"));
            obs += rec.entries.len();
        }
        black_box(obs);
        best_conv = best_conv.min(secs(t.elapsed()));
        cpu_conv = cpu_conv.min(secs(c.elapsed()));

        let t = Instant::now();
        let n: usize = corpus
            .par_iter()
            .map(|d| data_converter::cda::read_cda(d, "bench.xml").map_or(0, |r| r.entries.len()))
            .sum();
        black_box(n);
        best_par = best_par.min(secs(t.elapsed()));
    }
    let line = |name: &str, s: f64| {
        println!(
            "{name:<52} {:>8.1} MiB/s {:>10.0} docs/s",
            mib / s,
            docs as f64 / s
        );
    };
    line("raw quick-xml read_event, 1 thread, wall", best_raw);
    line("raw quick-xml read_event, 1 thread, thread CPU", cpu_raw);
    line(
        "CDA → iPHR record incl. judgements, 1 thread, wall",
        best_conv,
    );
    line(
        "CDA → iPHR record incl. judgements, 1 thread, CPU",
        cpu_conv,
    );
    line("  of which SHA-256 of the source, thread CPU", cpu_sha);
    line(
        &format!(
            "CDA → iPHR record, rayon {} threads, wall",
            rayon::current_num_threads()
        ),
        best_par,
    );
    println!(
        "conversion / raw: {:.1} % (wall), {:.1} % (thread CPU); best of {rounds} rounds",
        100.0 * best_raw / best_conv,
        100.0 * cpu_raw / cpu_conv
    );
}
