//! Conversion throughput of 特定健診 CDA beside raw quick-xml event parsing of the same bytes, in the
//! same run (issue 4, Acceptance "Benchmarks"). Plain bench harness (no criterion), printing MiB/s
//! and documents/s. Run: `cargo bench -p data-converter --bench throughput [-- DOCS ROUNDS]`.

use std::hint::black_box;
use std::time::Instant;

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
    let corpus: Vec<Vec<u8>> = (0..docs)
        .map(|i| data_converter::synth::cda_document(i).into_bytes())
        .collect();
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    let mib = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "corpus: {docs} synthetic CDA documents, {mib:.1} MiB ({} B/doc)",
        bytes as u64 / docs
    );

    let mut best_raw = f64::MAX;
    let mut best_conv = f64::MAX;
    let mut best_par = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut events = 0;
        for d in &corpus {
            events += raw_events(black_box(d));
        }
        black_box(events);
        best_raw = best_raw.min(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut obs = 0;
        for (i, d) in corpus.iter().enumerate() {
            let rec = data_converter::cda::read_cda(black_box(d), "bench.xml")
                .unwrap_or_else(|e| panic!("doc {i}: {e}"));
            obs += rec.entries.len();
        }
        black_box(obs);
        best_conv = best_conv.min(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let n: usize = corpus
            .par_iter()
            .map(|d| data_converter::cda::read_cda(d, "bench.xml").map_or(0, |r| r.entries.len()))
            .sum();
        black_box(n);
        best_par = best_par.min(t.elapsed().as_secs_f64());
    }
    let line = |name: &str, s: f64| {
        println!(
            "{name:<44} {:>8.1} MiB/s {:>10.0} docs/s",
            mib / s,
            docs as f64 / s
        );
    };
    line("raw quick-xml read_event (1 thread)", best_raw);
    line("CDA → iPHR record incl. judgements (1 thread)", best_conv);
    line(
        &format!(
            "CDA → iPHR record, rayon ({} threads)",
            rayon::current_num_threads()
        ),
        best_par,
    );
    println!(
        "conversion / raw (1 thread): {:.1} %  (best of {rounds} rounds)",
        100.0 * best_raw / best_conv
    );
}
