//! The chain cache never admits what an uncached validation refuses: a cached certificate path
//! still meets revocation against the CRLs loaded now, its validity (and the anchor's) at the time
//! of each validation, key usage, and the token signature; another trust configuration has its own
//! (empty) cache; the cache is bounded. Each test first shows that the cache was actually used
//! (a hit), so that the refusal that follows is not vacuous. Time is moved by passing `now_ms`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use card_agent::testca::{CertOptions, JpkiTestCa, Purpose};
use common::*;
use gateway::domain::certs::{AnchorSet, CardKey, CardType, CertError, CertPolicy, EkuPolicy};
use gateway::domain::chain_cache::{ChainCachePolicy, ChainCacheStats};
use gateway::domain::revocation::{CrlSource, RevocationError, RevocationStore};
use gateway::domain::signature::SignatureError;
use gateway::domain::verifier::TokenVerifier;
use gateway::domain::verifier::{VerifiedCard, VerifyError};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use time::{Duration, OffsetDateTime};

const ORIGIN: &str = "https://kiosk.example.jp";
const NONCE: &str = "q1F2YWx1ZS1vZi1hLTMyLWJ5dGUtbm9uY2UtaGVyZSE=";
const DAY_MS: i64 = 86_400_000;

/// A cache that would keep entries for 60 days: whatever is refused below is refused by the
/// checks that run on every validation, not by the entry's lifetime.
const LONG: ChainCachePolicy = ChainCachePolicy {
    capacity: 64,
    ttl_ms: 60 * DAY_MS,
};

fn now_ms() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp() * 1000
}

fn jpki_set(anchors: Vec<Vec<u8>>, policy: CertPolicy, store: Arc<RevocationStore>) -> AnchorSet {
    AnchorSet::new(CardType::Jpki, CardKey::Auth, anchors, policy, store).unwrap()
}

fn both_generations() -> Vec<Vec<u8>> {
    let p = pki();
    vec![p.gen1.auth.cert_der.clone(), p.gen2.auth.cert_der.clone()]
}

/// CRLs of both generations valid from an hour ago for `days`.
fn crls(revoked_gen1: &[Vec<u8>], days: i64) -> Vec<Vec<u8>> {
    let p = pki();
    let now = OffsetDateTime::now_utc();
    let crl = |ca: &JpkiTestCa, revoked: &[Vec<u8>]| {
        ca.issue_crl(
            Purpose::Auth,
            revoked,
            now - Duration::hours(1),
            now + Duration::days(days),
            1,
        )
        .unwrap()
    };
    vec![crl(&p.gen1, revoked_gen1), crl(&p.gen2, &[])]
}

fn static_store(crls: &[Vec<u8>]) -> Arc<RevocationStore> {
    Arc::new(RevocationStore::from_crls(crls, StdDuration::from_secs(900)).unwrap())
}

fn stats(v: &TokenVerifier) -> ChainCacheStats {
    v.anchor_set(CardType::Jpki, CardKey::Auth)
        .unwrap()
        .chain_cache_stats()
}

fn check(v: &TokenVerifier, token: &[u8], at_ms: i64) -> Result<VerifiedCard, VerifyError> {
    v.verify_json(token, ORIGIN, NONCE, at_ms)
}

fn cert_error(e: CertError) -> Result<VerifiedCard, VerifyError> {
    Err(VerifyError::Certificate(e))
}

#[test]
fn a_hit_gives_exactly_the_uncached_result_and_skips_only_the_path() {
    let p = pki();
    let store = static_store(&crls(&[], 1));
    let cached = TokenVerifier::new(vec![jpki_set(
        both_generations(),
        CertPolicy::default(),
        store.clone(),
    )]);
    let uncached = TokenVerifier::new(vec![
        jpki_set(both_generations(), CertPolicy::default(), store)
            .with_chain_cache(ChainCachePolicy::DISABLED),
    ]);
    for ca in [&p.gen1, &p.gen2] {
        let cert = p.auth_cert(ca, &p.key_a);
        let token = rs256_token(&cert, &p.key_a, ORIGIN, NONCE);
        let reference = check(&uncached, &token, now_ms()).unwrap();
        let first = check(&cached, &token, now_ms()).unwrap();
        let before = stats(&cached);
        let second = check(&cached, &token, now_ms()).unwrap();
        assert_eq!(
            stats(&cached).hits,
            before.hits + 1,
            "second validation is a hit"
        );
        assert_eq!(first, reference);
        assert_eq!(second, reference);
    }
    assert_eq!(stats(&cached).entries, 2);
    assert_eq!(stats(&uncached), ChainCacheStats::default());
}

#[test]
fn the_token_signature_is_verified_on_every_hit() {
    let p = pki();
    let v = TokenVerifier::new(vec![
        jpki_set(
            both_generations(),
            CertPolicy::default(),
            static_store(&crls(&[], 1)),
        )
        .with_chain_cache(LONG),
    ]);
    let cert = p.auth_cert(&p.gen1, &p.key_a);
    check(&v, &rs256_token(&cert, &p.key_a, ORIGIN, NONCE), now_ms()).unwrap();
    let invalid = Err(VerifyError::Signature(SignatureError::Invalid));
    // Another key, another origin, another nonce: all hits on the path, all refused.
    assert_eq!(
        check(&v, &rs256_token(&cert, &p.key_b, ORIGIN, NONCE), now_ms()),
        invalid
    );
    assert_eq!(
        check(
            &v,
            &rs256_token(&cert, &p.key_a, "https://evil.example.jp", NONCE),
            now_ms()
        ),
        invalid
    );
    assert_eq!(
        v.verify_json(
            &rs256_token(&cert, &p.key_a, ORIGIN, NONCE),
            ORIGIN,
            "another-nonce-another-nonce-another-nonce-aa",
            now_ms()
        ),
        invalid
    );
    assert_eq!(stats(&v).hits, 3);
}

#[tokio::test]
async fn revoked_after_caching_is_refused_at_once_and_crl_changes_apply_to_hits() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gen1.crl");
    let cert = p.auth_cert(&p.gen1, &p.key_a);
    let serial = card_agent::testca::certificate_serial(&cert).unwrap();
    let [gen1_empty, gen2_crl] = <[Vec<u8>; 2]>::try_from(crls(&[], 1)).unwrap();
    std::fs::write(&file, &gen1_empty).unwrap();
    let store = Arc::new(RevocationStore::new(
        vec![CrlSource::File(file.clone())],
        StdDuration::from_secs(900),
        StdDuration::from_secs(5),
    ));
    assert!(store.refresh().await.all_ok());
    let v = TokenVerifier::new(vec![
        jpki_set(both_generations(), CertPolicy::default(), store.clone()).with_chain_cache(LONG),
    ]);
    let token = rs256_token(&cert, &p.key_a, ORIGIN, NONCE);
    check(&v, &token, now_ms()).unwrap();
    check(&v, &token, now_ms()).unwrap();
    assert_eq!(stats(&v).hits, 1);

    // The issuer revokes the card; the gateway reloads its CRL: the next validation refuses,
    // although the path is still cached.
    let [gen1_revoking, _] = <[Vec<u8>; 2]>::try_from(crls(&[serial], 1)).unwrap();
    std::fs::write(&file, &gen1_revoking).unwrap();
    assert!(store.refresh().await.all_ok());
    assert_eq!(
        check(&v, &token, now_ms()),
        cert_error(CertError::Revocation(RevocationError::Revoked))
    );
    assert_eq!(stats(&v).hits, 2, "refused on a cache hit");

    // The CRL goes stale (nextUpdate passed): refused, cache or not.
    std::fs::write(&file, &gen1_empty).unwrap();
    assert!(store.refresh().await.all_ok());
    check(&v, &token, now_ms()).unwrap();
    assert_eq!(
        check(&v, &token, now_ms() + 2 * DAY_MS),
        cert_error(CertError::Revocation(RevocationError::Stale))
    );
    assert_eq!(stats(&v).hits, 4);

    // The source now serves a CRL of the other generation (same issuer DN, other key): no valid
    // CRL for this certificate, refused on a cache hit.
    std::fs::write(&file, &gen2_crl).unwrap();
    assert!(store.refresh().await.all_ok());
    assert_eq!(
        check(&v, &token, now_ms()),
        cert_error(CertError::Revocation(RevocationError::CrlSignatureInvalid))
    );
    assert_eq!(stats(&v).hits, 5);
}

#[test]
fn expired_or_not_yet_valid_after_caching_is_refused() {
    let p = pki();
    let now = OffsetDateTime::now_utc();
    // Valid from 2 days ago to 10 days from now (whole seconds); CRLs cover 20 days.
    let not_after = (now + Duration::days(10)).replace_nanosecond(0).unwrap();
    let not_before = (now - Duration::days(2)).replace_nanosecond(0).unwrap();
    let mut o = CertOptions::like_card(Purpose::Auth, "CACHED-EDGE", not_after);
    o.not_before = not_before;
    let cert = p.auth_cert_with(&p.key_a, &o);
    let token = rs256_token(&cert, &p.key_a, ORIGIN, NONCE);
    let na_ms = not_after.unix_timestamp() * 1000;
    let nb_ms = not_before.unix_timestamp() * 1000;
    let v = TokenVerifier::new(vec![
        jpki_set(
            both_generations(),
            CertPolicy::default(),
            static_store(&crls(&[], 20)),
        )
        .with_chain_cache(LONG),
    ]);
    let t0 = now_ms();
    check(&v, &token, t0).unwrap();
    // The test clock moves on: still a hit up to notAfter inclusive.
    check(&v, &token, na_ms - 1000).unwrap();
    check(&v, &token, na_ms).unwrap();
    assert_eq!(stats(&v).hits, 2);
    // One second later: expired, although the entry's lifetime has not ended.
    assert_eq!(
        check(&v, &token, na_ms + 1000),
        cert_error(CertError::Expired)
    );
    assert_eq!(
        check(&v, &token, na_ms + 5 * DAY_MS),
        cert_error(CertError::Expired)
    );
    // The clock goes back before notBefore (the entry is newer than that time: not used).
    assert_eq!(
        check(&v, &token, nb_ms - 1000),
        cert_error(CertError::NotYetValid)
    );
    assert_eq!(stats(&v).hits, 2, "no hit outside the validity window");
    // Back inside: valid again (path rebuilt or remembered, the answer is the uncached one).
    check(&v, &token, t0).unwrap();
}

#[test]
fn another_trust_configuration_does_not_see_the_cache() {
    let p = pki();
    let store = static_store(&crls(&[], 1));
    let cert = p.auth_cert(&p.gen1, &p.key_a);
    let token = rs256_token(&cert, &p.key_a, ORIGIN, NONCE);
    let a = TokenVerifier::new(vec![jpki_set(
        both_generations(),
        CertPolicy::default(),
        store.clone(),
    )]);
    check(&a, &token, now_ms()).unwrap();
    check(&a, &token, now_ms()).unwrap();
    assert_eq!(stats(&a).hits, 1);

    // Generation 1 is no longer trusted (a reloaded configuration is a new set).
    let b = TokenVerifier::new(vec![jpki_set(
        vec![p.gen2.auth.cert_der.clone()],
        CertPolicy::default(),
        store.clone(),
    )]);
    assert_eq!(
        check(&b, &token, now_ms()),
        cert_error(CertError::UntrustedIssuer)
    );
    assert_eq!(stats(&b).hits, 0);
    assert_eq!(stats(&b).entries, 0);

    // Same anchors, stricter policy: clientAuth EKU required (JPKI certificates have no EKU).
    let c = TokenVerifier::new(vec![jpki_set(
        both_generations(),
        CertPolicy {
            eku: EkuPolicy::ClientAuthRequired,
            ..CertPolicy::default()
        },
        store.clone(),
    )]);
    assert_eq!(
        check(&c, &token, now_ms()),
        cert_error(CertError::WrongExtendedKeyUsage)
    );
    assert_eq!(stats(&c).hits, 0);

    // Resetting the cache policy on a set starts empty too.
    let d = TokenVerifier::new(vec![
        jpki_set(both_generations(), CertPolicy::default(), store).with_chain_cache(LONG),
    ]);
    check(&d, &token, now_ms()).unwrap();
    assert_eq!((stats(&d).hits, stats(&d).misses), (0, 1));
}

#[test]
fn the_cache_is_bounded_and_entries_expire() {
    let p = pki();
    let v = TokenVerifier::new(vec![
        jpki_set(
            both_generations(),
            CertPolicy::default(),
            static_store(&crls(&[], 1)),
        )
        .with_chain_cache(ChainCachePolicy {
            capacity: 2,
            ttl_ms: 60_000,
        }),
    ]);
    let t0 = now_ms();
    let tokens: Vec<Vec<u8>> = (0..3)
        .map(|_| rs256_token(&p.auth_cert(&p.gen1, &p.key_a), &p.key_a, ORIGIN, NONCE))
        .collect();
    for (i, token) in tokens.iter().enumerate() {
        check(&v, token, t0 + i64::try_from(i).unwrap()).unwrap();
        assert!(stats(&v).entries <= 2);
    }
    assert_eq!(stats(&v).entries, 2);
    // The oldest was evicted: a miss, still accepted; the newest is a hit.
    let before = stats(&v);
    check(&v, &tokens[0], t0 + 10).unwrap();
    check(&v, &tokens[2], t0 + 10).unwrap();
    let after = stats(&v);
    assert_eq!(after.misses, before.misses + 1);
    assert_eq!(after.hits, before.hits + 1);
    assert_eq!(after.entries, 2);
    // After the lifetime: a miss again (and still accepted).
    let before = stats(&v);
    check(&v, &tokens[2], t0 + 70_000).unwrap();
    assert_eq!(stats(&v).misses, before.misses + 1);
}
