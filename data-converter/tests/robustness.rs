//! Random-input harness for the readers (issue 4, Acceptance: no panic on any input). Runs the same
//! entry points as the cargo-fuzz targets (`fuzz/`) on deterministic mutations of the fixtures
//! (bit flips, byte insertions/deletions, truncations, splices) without libFuzzer, so it runs in every
//! `cargo test`. `IPHR_FUZZ_ITERS` sets the iterations per seed (default 300; e.g. 1_000_000 for a
//! long run: `IPHR_FUZZ_ITERS=100000 cargo test --release -p data-converter --test robustness`).
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use data_converter::fuzzing;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[&[u8]] = &[
    b"<",
    b">",
    b"/>",
    b"&amp;",
    b"&#x0;",
    b"&bogus;",
    b"\"",
    b"xsi:type=\"PQ\"",
    b"nullFlavor=\"NI\"",
    b"negationInd=\"true\"",
    b"<entryRelationship typeCode=\"COMP\">",
    b"</observation>",
    b"\xff\xfe",
    b"\x81",
    b",",
    b"\n",
    b"\r\n",
    b"\"\"",
    "１２３".as_bytes(),
    "未実施".as_bytes(),
    b"PK\x03\x04",
];

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                let n = 1 + rng.below(16).min(d.len() - i);
                d.drain(i..(i + n).min(d.len()));
            }
            2 => {
                let i = rng.below(d.len() + 1);
                let s = INTERESTING[rng.below(INTERESTING.len())];
                d.splice(i..i, s.iter().copied());
            }
            3 => {
                let n = rng.below(d.len() + 1);
                d.truncate(n);
            }
            4 if d.len() > 2 => {
                // duplicate a slice somewhere else (splice)
                let a = rng.below(d.len());
                let b = (a + 1 + rng.below(64)).min(d.len());
                let chunk = d[a..b].to_vec();
                let at = rng.below(d.len() + 1);
                d.splice(at..at, chunk);
            }
            _ => {
                let i = rng.below(d.len() + 1);
                d.insert(i, rng.next() as u8);
            }
        }
    }
    d
}

fn iters() -> usize {
    std::env::var("IPHR_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn run(seeds: &[Vec<u8>], target: fn(&[u8]), salt: u64) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ salt);
    for seed in seeds {
        target(seed);
        for _ in 0..iters() {
            target(&mutate(seed, &mut rng));
        }
    }
    // plain random bytes too
    for _ in 0..iters() {
        let n = rng.below(512);
        let v: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        target(&v);
    }
}

#[test]
fn cda_reader_never_panics() {
    let seeds: Vec<Vec<u8>> = [
        "cda/full.xml",
        "cda/minimal.xml",
        "cda/prefixed-namespace.xml",
        "bad/unknown-item.xml",
    ]
    .iter()
    .map(|f| common::read(f))
    .collect();
    run(&seeds, fuzzing::cda, 1);
}

#[test]
fn csv_reader_never_panics() {
    let mut a = vec![0u8];
    a.extend(common::read("csv/clinic-a.csv"));
    let mut b = vec![1u8];
    b.extend(common::read("csv/clinic-b.csv"));
    run(&[a, b], fuzzing::csv, 2);
}

#[test]
fn archive_reader_never_panics() {
    let seeds = vec![common::read("archive/1399999991_06139999_202406100_1.zip")];
    run(&seeds, fuzzing::archive, 3);
}
