//! UKE claims throughput (issue 5, Acceptance "benchmark"): `claims::read_uke` beside a raw CSV read
//! of the same bytes (Shift_JIS decoded by encoding_rs, then every record read by the `csv` crate),
//! in the same run. Plain harness, prints records/s and MiB/s of both; best of the rounds, timed by
//! the thread's CPU time (robust on a shared machine) and by wall clock.
//! Run: `cargo bench -p data-converter --bench claims [-- RECEIPTS ROUNDS]`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;

/// A synthetic 医科 UKE file (domain.md §4.2 layouts): one IR, then per receipt RE HO SN, 3 SY,
/// 2 SI, 5 IY, 1 CO; GO at the end. Names and codes are made up.
fn synth_uke(receipts: u32) -> Vec<u8> {
    let mut s = String::new();
    let days = |d: &[u32]| -> String {
        (1..=31)
            .map(|i| if d.contains(&i) { "1" } else { "" })
            .collect::<Vec<_>>()
            .join(",")
    };
    s.push_str("IR,1,13,1,1399001,,ベンチ医院,202406,00,0300000000\r\n");
    for r in 1..=receipts {
        let kana = "ベンチ　タロウ";
        s.push_str(&format!(
            "RE,{r},1112,202406,試験　太郎{r},{},19{:02}0401{}{kana},\r\n",
            1 + r % 2,
            40 + r % 50,
            ",".repeat(30)
        ));
        s.push_str(&format!("HO,06139999,ＡＢ,{r},3,1250,,,,,,\r\n"));
        s.push_str(&format!("SN,1,01,06139999,ＡＢ,{r},01,\r\n"));
        for (i, code) in ["8833421", "2500013", "4660019"].iter().enumerate() {
            s.push_str(&format!(
                "SY,{code},2024060{},1,{},,{},\r\n",
                1 + i,
                if i == 1 { "2057" } else { "" },
                if i == 0 { "01" } else { "" }
            ));
        }
        for i in 0..2 {
            s.push_str(&format!(
                "SI,12,1,11200741{i},,75,1,,,,,,,{}\r\n",
                days(&[3, 17])
            ));
        }
        for i in 0..5 {
            s.push_str(&format!(
                "IY,21,1,62000000{i},1.5,12,{},,,,,,,{}\r\n",
                2 + i,
                days(&[3 + i, 17 + i])
            ));
        }
        s.push_str("CO,21,1,820100001,ベンチ用コメント\r\n");
    }
    s.push_str(&format!("GO,{receipts},1000,99\r\n"));
    let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode(&s);
    bytes.into_owned()
}

fn raw_csv(bytes: &[u8]) -> u64 {
    let (text, _, _) = encoding_rs::SHIFT_JIS.decode(bytes);
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut n = 0;
    let mut rec = csv::StringRecord::new();
    while r.read_record(&mut rec).unwrap_or(false) {
        n += 1;
        black_box(&rec);
    }
    n
}

fn best<T>(rounds: u32, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut best_cpu = Duration::MAX;
    let mut best_wall = Duration::MAX;
    let mut last = None;
    for _ in 0..rounds {
        let (c, w) = (ThreadTime::now(), Instant::now());
        let v = f();
        best_cpu = best_cpu.min(c.elapsed());
        best_wall = best_wall.min(w.elapsed());
        last = Some(v);
    }
    match last {
        Some(v) => (best_cpu, best_wall, v),
        None => panic!("no rounds"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let receipts: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let rounds: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let bytes = synth_uke(receipts);
    let mib = bytes.len() as f64 / (1024.0 * 1024.0);
    let (rc, rw, records) = best(rounds, || raw_csv(&bytes));
    let (cc, cw, out) = best(rounds, || {
        match data_converter::claims::read_uke(&bytes, "bench.uke", None) {
            Ok(o) => o,
            Err(e) => panic!("synthetic UKE does not convert: {e}"),
        }
    });
    assert_eq!(out.lines, records, "both read every record");
    assert_eq!(out.records.len() as u32, receipts);
    println!(
        "UKE input: {receipts} receipts, {records} records, {:.2} MiB (Shift_JIS); best of {rounds} rounds",
        mib
    );
    for (name, cpu, wall) in [
        ("raw CSV read (decode + csv crate)", rc, rw),
        ("claims::read_uke (to iPHR records)", cc, cw),
    ] {
        println!(
            "{name:38} {:>12.0} records/s CPU ({:>7.1} MiB/s), {:>12.0} records/s wall",
            records as f64 / cpu.as_secs_f64(),
            mib / cpu.as_secs_f64(),
            records as f64 / wall.as_secs_f64()
        );
    }
    println!(
        "converter / raw CPU time: {:.2}×",
        cc.as_secs_f64() / rc.as_secs_f64()
    );
}
