//! x509-limbo (the 208-case offline subset in `shared/testdata/x509-limbo-subset.json`) against
//! the gateway's certificate validator (security-scenarios C3, C6–C8). Each case runs through
//! [`AnchorSet::validate`] with the case's anchors, intermediates, CRLs and validation time. Every
//! divergence from the expected result must be listed in `tests/data/limbo-exceptions.json` with
//! its reason; a listed case that no longer diverges fails too (the list stays exact). Accepting a
//! certificate that limbo expects to be refused is allowed only for cases marked
//! `not_applicable` (server-name checks, which a client-certificate verifier does not make) or
//! `lenient` (structural rules, mostly on trust anchors, with the reason in the file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway::domain::certs::{AnchorSet, CardKey, CardType, CertPolicy, EkuPolicy, RevocationMode};
use gateway::domain::revocation::RevocationStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Limbo {
    testcases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    features: Vec<String>,
    validation_kind: String,
    trusted_certs: Vec<String>,
    untrusted_intermediates: Vec<String>,
    peer_certificate: String,
    validation_time: Option<String>,
    key_usage: Vec<String>,
    extended_key_usage: Vec<String>,
    expected_result: String,
    crls: Vec<String>,
    max_chain_depth: Option<usize>,
}

#[derive(Deserialize)]
struct Exception {
    /// `we_refuse` (stricter than limbo), `not_applicable` (a server-name rule a client verifier
    /// does not apply) or `lenient` (a structural rule we do not enforce, with the reason it does
    /// not weaken card sign-in).
    kind: String,
    reason: String,
}

fn limbo_path() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The project's shared/ sits beside the repository (and beside a worktree's checkout).
    for base in [
        manifest.join("../../shared"),
        manifest.join("../shared"),
        PathBuf::from("/work/shared"),
    ] {
        let p = base.join("testdata/x509-limbo-subset.json");
        if p.exists() {
            return p;
        }
    }
    panic!("x509-limbo-subset.json not found in ../shared/testdata (the project's shared folder)");
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

fn time_ms(t: &Option<String>) -> i64 {
    match t {
        None => i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
        Some(s) => {
            let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .unwrap();
            i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).unwrap()
        }
    }
}

/// Runs one case; true when the validator accepts the peer certificate.
fn run(case: &Case) -> Result<(), String> {
    let crls: Vec<Vec<u8>> = case
        .crls
        .iter()
        .map(|p| {
            CertificateRevocationListDer::from_pem_slice(p.as_bytes())
                .map(|c| c.as_ref().to_vec())
                .map_err(|e| format!("CRL PEM: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let store =
        RevocationStore::from_crls(&crls, Duration::from_secs(900)).map_err(|e| e.to_string())?;
    let policy = CertPolicy {
        // The EKU the case validates for: serverAuth for SERVER cases (as webpki's limbo harness
        // does), clientAuth for CLIENT cases, in both "required if present" form.
        eku: if case.validation_kind == "SERVER"
            || case.extended_key_usage.iter().any(|e| e == "serverAuth")
        {
            EkuPolicy::ServerAuthIfPresent
        } else {
            EkuPolicy::ClientAuthIfPresent
        },
        require_digital_signature: case.key_usage.iter().any(|k| k == "digitalSignature"),
        revocation: if crls.is_empty() {
            RevocationMode::Disabled
        } else {
            RevocationMode::Required
        },
        max_intermediates: case.max_chain_depth,
    };
    let anchors = case.trusted_certs.iter().map(|p| der(p)).collect();
    let set = AnchorSet::new(
        CardType::Jpki,
        CardKey::Auth,
        anchors,
        policy,
        Arc::new(store),
    )
    .map_err(|e| e.to_string())?;
    let intermediates: Vec<CertificateDer<'static>> = case
        .untrusted_intermediates
        .iter()
        .map(|p| CertificateDer::from(der(p)))
        .collect();
    set.validate(
        &der(&case.peer_certificate),
        &intermediates,
        time_ms(&case.validation_time),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[test]
fn c7_x509_limbo_subset_matches_except_listed_divergences() {
    let limbo: Limbo = serde_json::from_slice(&std::fs::read(limbo_path()).unwrap()).unwrap();
    let exceptions: BTreeMap<String, Exception> = serde_json::from_slice(
        &std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/limbo-exceptions.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(limbo.testcases.len(), 208);
    let mut unexpected = Vec::new();
    let mut unlisted_acceptances = Vec::new();
    let mut stale = Vec::new();
    let mut slow = Vec::new();
    let (mut agree, mut listed) = (0, 0);
    for case in &limbo.testcases {
        let started = Instant::now();
        let outcome = run(case);
        let took = started.elapsed();
        if case.id.starts_with("pathological::") && took >= Duration::from_secs(1) {
            slow.push(format!("{}: {took:?}", case.id));
        }
        let accepted = outcome.is_ok();
        let expected = case.expected_result == "SUCCESS";
        match (accepted == expected, exceptions.get(&case.id)) {
            (true, None) => agree += 1,
            (true, Some(_)) => stale.push(case.id.clone()),
            (false, Some(e)) => {
                listed += 1;
                if accepted && !matches!(e.kind.as_str(), "not_applicable" | "lenient") {
                    unlisted_acceptances.push(case.id.clone());
                }
                assert!(!e.reason.is_empty());
            }
            (false, None) => unexpected.push(format!(
                "{} (features {:?}): expected {}, got {:?}",
                case.id, case.features, case.expected_result, outcome
            )),
        }
    }
    eprintln!(
        "x509-limbo: {agree} agree, {listed} listed divergences, {} unexpected",
        unexpected.len()
    );
    assert!(
        unexpected.is_empty(),
        "unlisted divergences:\n{}",
        unexpected.join("\n")
    );
    assert!(
        unlisted_acceptances.is_empty(),
        "acceptances of cases limbo refuses: {unlisted_acceptances:?}"
    );
    assert!(
        stale.is_empty(),
        "exceptions that no longer diverge: {stale:?}"
    );
    assert!(slow.is_empty(), "pathological cases over 1 s: {slow:?}");
}
