//! Token validations per second beside raw RSA-2048 PKCS#1 v1.5 SHA-256 verifications per second,
//! measured in the same run on one thread (issue 3 acceptance: goal ≥ 40 % of the raw rate).
//!
//! A token validation is the whole of [`TokenVerifier::verify_json`]: JSON parsing, base64,
//! certificate parsing, chain to the JPKI-like anchor (two anchors with the same DN configured),
//! validity, key usage, CRL lookup (the CRL's signature is verified once and remembered), and the
//! token signature (one RSA verification). Two verifiers are measured: the default one, whose
//! chain cache remembers the path of a card seen before (a card signing in again: the chain's RSA
//! verification is skipped, everything else runs), and one with the cache off (a card seen for the
//! first time: two RSA verifications). Run with
//! `IPHR_BENCH_SECS=4 cargo bench -p gateway --bench token_validation`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use card_agent::testca::{self, JpkiTestCa, Purpose};
use gateway::domain::certs::{AnchorSet, CardKey, CardType, CertPolicy};
use gateway::domain::chain_cache::ChainCachePolicy;
use gateway::domain::revocation::RevocationStore;
use gateway::domain::token::{AuthToken, SignatureAlgorithm, digest_to_sign, signed_data};
use gateway::domain::verifier::TokenVerifier;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const ORIGIN: &str = "https://kiosk.example.jp";
const NONCE: &str = "q1F2YWx1ZS1vZi1hLTMyLWJ5dGUtbm9uY2UtaGVyZSE=";

/// Runs the closures in turn in slices of `slice` until `budget` has passed for each, so that all
/// see the same machine load (the machine is shared); returns their rates per second.
fn interleaved(budget: Duration, slice: Duration, fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    for _ in 0..200 {
        for f in fs.iter_mut() {
            f();
        }
    }
    let mut counts = vec![0u64; fs.len()];
    let mut times = vec![Duration::ZERO; fs.len()];
    while times.iter().any(|t| *t < budget) {
        for (i, f) in fs.iter_mut().enumerate() {
            let start = Instant::now();
            while start.elapsed() < slice {
                for _ in 0..50 {
                    f();
                }
                counts[i] += 50;
            }
            times[i] += start.elapsed();
        }
    }
    counts
        .iter()
        .zip(&times)
        .map(|(n, t)| *n as f64 / t.as_secs_f64())
        .collect()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let gen1 = JpkiTestCa::load_or_create(&dir.path().join("gen1")).unwrap();
    let gen2 = JpkiTestCa::load_or_create(&dir.path().join("gen2")).unwrap();
    let key = testca::generate_rsa_key().unwrap();
    let now = OffsetDateTime::now_utc();
    let cert = gen2
        .issue(
            Purpose::Auth,
            &key,
            &testca::opaque_subject_id(),
            now + time::Duration::days(365),
        )
        .unwrap();
    let crl = |ca: &JpkiTestCa| {
        let revoked: Vec<Vec<u8>> = (0u32..1000).map(|i| i.to_be_bytes().to_vec()).collect();
        ca.issue_crl(
            Purpose::Auth,
            &revoked,
            now - time::Duration::hours(1),
            now + time::Duration::days(1),
            1,
        )
        .unwrap()
    };
    let revocation = Arc::new(
        RevocationStore::from_crls(&[crl(&gen1), crl(&gen2)], Duration::from_secs(900)).unwrap(),
    );
    let set = || {
        AnchorSet::new(
            CardType::Jpki,
            CardKey::Auth,
            vec![gen1.auth.cert_der.clone(), gen2.auth.cert_der.clone()],
            CertPolicy::default(),
            revocation.clone(),
        )
        .unwrap()
    };
    let verifier = TokenVerifier::new(vec![set()]);
    let uncached = TokenVerifier::new(vec![set().with_chain_cache(ChainCachePolicy::DISABLED)]);
    let signature = key
        .sign(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &digest_to_sign(ORIGIN, NONCE),
        )
        .unwrap();
    let token = AuthToken {
        certificate_der: cert.clone(),
        algorithm: SignatureAlgorithm::Rs256,
        signature: signature.clone(),
        app_version: "bench".into(),
    }
    .to_json()
    .into_bytes();
    let now_ms = now.unix_timestamp() * 1000;
    assert_eq!(
        verifier.verify_json(&token, ORIGIN, NONCE, now_ms).unwrap(),
        uncached.verify_json(&token, ORIGIN, NONCE, now_ms).unwrap()
    );

    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let rsa_public = parsed.public_key().subject_public_key.data.to_vec();
    let message = signed_data(ORIGIN, NONCE);
    let budget = Duration::from_secs(
        std::env::var("IPHR_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    );

    println!(
        "one thread, {} s per figure, interleaved in 100 ms slices",
        budget.as_secs()
    );
    let mut raw_verify = || {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &rsa_public,
        )
        .verify(black_box(&message), black_box(&signature))
        .unwrap();
    };
    let mut cached_validation = || {
        black_box(
            verifier
                .verify_json(black_box(&token), ORIGIN, NONCE, now_ms)
                .unwrap(),
        );
    };
    let mut uncached_validation = || {
        black_box(
            uncached
                .verify_json(black_box(&token), ORIGIN, NONCE, now_ms)
                .unwrap(),
        );
    };
    let rates = interleaved(
        budget,
        Duration::from_millis(100),
        &mut [
            &mut raw_verify,
            &mut cached_validation,
            &mut uncached_validation,
        ],
    );
    let (raw, full, cold) = (rates[0], rates[1], rates[2]);
    println!("raw RSA-2048 PKCS#1 v1.5 SHA-256 verify (ring)           {raw:>10.0} /s");
    println!("token validation, chain cached (verify_json, JPKI RS256)  {full:>10.0} /s");
    println!("token validation, chain cache off (every path built)      {cold:>10.0} /s");
    println!(
        "token validations / raw verifications = {:.1} % with the chain cache (one RSA verification \
         per token: ≤ 100 %), {:.1} % without (two: ≤ 50 %)",
        100.0 * full / raw,
        100.0 * cold / raw
    );
    let stats = verifier
        .anchor_set(CardType::Jpki, CardKey::Auth)
        .unwrap()
        .chain_cache_stats();
    println!(
        "chain cache: {} hits, {} misses, {} entries",
        stats.hits, stats.misses, stats.entries
    );
}
