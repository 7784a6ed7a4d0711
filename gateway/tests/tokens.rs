//! Token and certificate validation without HTTP or database (DESIGN §4 step 3;
//! security-scenarios B1, B5, B8–B12, C1–C6). Each refusal is checked for its specific reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use card_agent::testca::{self, CertOptions, Purpose};
use common::*;
use gateway::domain::certs::{CardType, CertError};
use gateway::domain::revocation::RevocationError;
use gateway::domain::signature::SignatureError;
use gateway::domain::token::{SignatureAlgorithm, TokenError, signed_data};
use gateway::domain::verifier::VerifyError;
use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use time::{Duration, OffsetDateTime};

const ORIGIN: &str = "https://kiosk.example.jp";
const NONCE: &str = "q1F2YWx1ZS1vZi1hLTMyLWJ5dGUtbm9uY2UtaGVyZSE=";

fn now_ms() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp() * 1000
}

fn verify(token: &[u8]) -> Result<gateway::domain::verifier::VerifiedCard, VerifyError> {
    default_verifier().verify_json(token, ORIGIN, NONCE, now_ms())
}

fn cert_err(token: &[u8]) -> CertError {
    match verify(token) {
        Err(VerifyError::Certificate(e)) => e,
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

// ------------------------------------------------------------------ B1 positive controls

#[test]
fn b1_virtual_my_number_card_token_is_accepted() {
    let card = Card::new();
    let token = card.token(ORIGIN, NONCE);
    let verified = verify(&token).unwrap();
    assert_eq!(verified.card_type, CardType::Jpki);
    assert_eq!(verified.certificate.anchor_index, 0);
    assert!(verified.certificate.subject.starts_with("C=JP, CN="));
    assert_eq!(verified.app_version, APP_VERSION);
}

#[test]
fn b1_phr_card_es256_token_is_accepted() {
    let p = pki();
    let (key, cert) = p.phr.issue_card(vec![KeyUsagePurpose::DigitalSignature]);
    let verified = verify(&es256_token(&cert, &key, ORIGIN, NONCE)).unwrap();
    assert_eq!(verified.card_type, CardType::Phr);
}

#[test]
fn c_jpki_generations_share_a_dn_and_the_issuer_is_picked_by_signature() {
    let p = pki();
    let cert = p.auth_cert(&p.gen2, &p.key_a);
    let verified = verify(&rs256_token(&cert, &p.key_a, ORIGIN, NONCE)).unwrap();
    assert_eq!(verified.certificate.anchor_index, 1, "generation 2 anchor");
    // Same subject and issuer DN as generation 1.
    let gen1 = p.auth_cert(&p.gen1, &p.key_a);
    let v1 = verify(&rs256_token(&gen1, &p.key_a, ORIGIN, NONCE)).unwrap();
    assert_eq!(v1.certificate.issuer, verified.certificate.issuer);
    assert_eq!(v1.certificate.anchor_index, 0);
}

// ------------------------------------------------------------------ B5, B11, B12 signature

#[test]
fn b5_token_for_another_origin_is_refused() {
    let card = Card::new();
    let token = card.token("https://evil.example.jp", NONCE);
    assert_eq!(
        verify(&token),
        Err(VerifyError::Signature(SignatureError::Invalid))
    );
    // Also a port or scheme difference.
    let token = card.token("https://kiosk.example.jp:8443", NONCE);
    assert_eq!(
        verify(&token),
        Err(VerifyError::Signature(SignatureError::Invalid))
    );
}

#[test]
fn b5_token_over_another_nonce_is_refused() {
    let card = Card::new();
    let token = card.token(ORIGIN, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_eq!(
        verify(&token),
        Err(VerifyError::Signature(SignatureError::Invalid))
    );
}

#[test]
fn b11_signature_by_another_key_is_refused() {
    let p = pki();
    let cert_of_a = p.auth_cert(&p.gen1, &p.key_a);
    let token = rs256_token(&cert_of_a, &p.key_b, ORIGIN, NONCE);
    assert_eq!(
        verify(&token),
        Err(VerifyError::Signature(SignatureError::Invalid))
    );
    let (k1, c1) = p.phr.issue_card(vec![KeyUsagePurpose::DigitalSignature]);
    let (k2, _) = p.phr.issue_card(vec![KeyUsagePurpose::DigitalSignature]);
    drop(k1);
    let token = es256_token(&c1, &k2, ORIGIN, NONCE);
    assert_eq!(
        verify(&token),
        Err(VerifyError::Signature(SignatureError::Invalid))
    );
}

#[test]
fn b12_field_separation_gives_different_signed_bytes_and_no_cross_verification() {
    let a = signed_data("example.com", ".eu1234");
    let b = signed_data("example.com.eu", "1234");
    assert_ne!(a, b);
    let p = pki();
    let cert = p.auth_cert(&p.gen1, &p.key_a);
    let token = rs256_token(&cert, &p.key_a, "example.com", ".eu1234");
    let v = default_verifier();
    assert!(
        v.verify_json(&token, "example.com", ".eu1234", now_ms())
            .is_ok()
    );
    assert_eq!(
        v.verify_json(&token, "example.com.eu", "1234", now_ms()),
        Err(VerifyError::Signature(SignatureError::Invalid))
    );
}

#[test]
fn signature_bit_flip_and_truncation_are_refused() {
    let p = pki();
    let cert = p.auth_cert(&p.gen1, &p.key_a);
    let good: serde_json::Value =
        serde_json::from_slice(&rs256_token(&cert, &p.key_a, ORIGIN, NONCE)).unwrap();
    let mut sig = STANDARD
        .decode(good["signature"].as_str().unwrap())
        .unwrap();
    sig[100] ^= 1;
    let flipped = token_json(&cert, SignatureAlgorithm::Rs256, sig.clone());
    assert_eq!(
        verify(&flipped),
        Err(VerifyError::Signature(SignatureError::Invalid))
    );
    sig.truncate(255);
    let short = token_json(&cert, SignatureAlgorithm::Rs256, sig);
    assert_eq!(
        verify(&short),
        Err(VerifyError::Signature(SignatureError::Invalid))
    );
}

// ------------------------------------------------------------------ B8 structure

fn field_token(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Vec<u8> {
    let p = pki();
    let cert = p.auth_cert(&p.gen1, &p.key_a);
    let mut v: serde_json::Value =
        serde_json::from_slice(&rs256_token(&cert, &p.key_a, ORIGIN, NONCE)).unwrap();
    edit(v.as_object_mut().unwrap());
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn b8_token_length_limits() {
    let short = vec![b' '; 99];
    assert_eq!(
        verify(&short),
        Err(VerifyError::Token(TokenError::TooShort(99)))
    );
    let long = vec![b' '; 10_001];
    assert_eq!(
        verify(&long),
        Err(VerifyError::Token(TokenError::TooLong(10_001)))
    );
    // 100 and 10,000 bytes pass the length check and fail later as JSON.
    assert!(matches!(
        verify(&[b' '; 100]),
        Err(VerifyError::Token(TokenError::Malformed(_)))
    ));
    assert!(matches!(
        verify(&[b' '; 10_000]),
        Err(VerifyError::Token(TokenError::Malformed(_)))
    ));
}

#[test]
fn b8_invalid_json_unknown_format_unknown_and_missing_fields() {
    let mut not_json = b"{\"format\": \"iphr-auth:1\", ".to_vec();
    not_json.resize(200, b'x');
    assert!(matches!(
        verify(&not_json),
        Err(VerifyError::Token(TokenError::Malformed(_)))
    ));
    let t = field_token(|m| {
        m.insert("format".into(), "web-eid:1.0".into());
    });
    assert_eq!(
        verify(&t),
        Err(VerifyError::Token(TokenError::UnsupportedFormat(
            "web-eid:1.0".into()
        )))
    );
    let t = field_token(|m| {
        m.insert("unexpected".into(), 1.into());
    });
    assert!(matches!(
        verify(&t),
        Err(VerifyError::Token(TokenError::Malformed(_)))
    ));
    for field in [
        "format",
        "certificate",
        "algorithm",
        "signature",
        "app_version",
    ] {
        let t = field_token(|m| {
            m.remove(field);
        });
        assert!(
            matches!(
                verify(&t),
                Err(VerifyError::Token(TokenError::Malformed(_)))
            ),
            "missing {field}"
        );
    }
    let array = field_token(|m| {
        let token = serde_json::Value::Object(m.clone());
        m.clear();
        m.insert("list".into(), serde_json::Value::Array(vec![token]));
    });
    assert!(matches!(
        verify(&array),
        Err(VerifyError::Token(TokenError::Malformed(_)))
    ));
}

#[test]
fn b9_algorithm_none_empty_hs256_and_key_mismatches_are_refused() {
    for alg in [
        "none", "", "HS256", "rs256", "RS384", "PS256", "ES384", "EdDSA",
    ] {
        let t = field_token(|m| {
            m.insert("algorithm".into(), alg.into());
        });
        assert_eq!(
            verify(&t),
            Err(VerifyError::Token(TokenError::UnsupportedAlgorithm(
                alg.into()
            ))),
            "{alg:?}"
        );
    }
    for value in [
        serde_json::Value::Null,
        256.into(),
        serde_json::json!(["RS256"]),
    ] {
        let t = field_token(|m| {
            m.insert("algorithm".into(), value.clone());
        });
        assert!(matches!(
            verify(&t),
            Err(VerifyError::Token(TokenError::Malformed(_)))
        ));
    }
    let p = pki();
    // RS256 claimed with an EC (PHR) certificate: it is no JPKI certificate.
    let (ec_key, ec_cert) = p.phr.issue_card(vec![KeyUsagePurpose::DigitalSignature]);
    let rs_with_ec = token_json(&ec_cert, SignatureAlgorithm::Rs256, vec![0u8; 256]);
    assert_eq!(
        verify(&rs_with_ec),
        Err(VerifyError::Certificate(CertError::UntrustedIssuer))
    );
    // ES256 claimed with an RSA (JPKI) certificate.
    let rsa_cert = p.auth_cert(&p.gen1, &p.key_a);
    let es_with_rsa = es256_token(&rsa_cert, &ec_key, ORIGIN, NONCE);
    assert_eq!(
        verify(&es_with_rsa),
        Err(VerifyError::Certificate(CertError::UntrustedIssuer))
    );
}

#[test]
fn b9_signature_check_itself_refuses_a_key_of_the_wrong_type() {
    use gateway::domain::signature::{PublicKey, verify as verify_sig};
    let rsa_key = PublicKey::Rsa(vec![0x30, 0x00]);
    let ec_key = PublicKey::EcP256(vec![0x04; 65]);
    assert!(matches!(
        verify_sig(SignatureAlgorithm::Es256, &rsa_key, b"m", &[0; 64]),
        Err(SignatureError::KeyAlgorithmMismatch { .. })
    ));
    assert!(matches!(
        verify_sig(SignatureAlgorithm::Rs256, &ec_key, b"m", &[0; 256]),
        Err(SignatureError::KeyAlgorithmMismatch { .. })
    ));
}

#[test]
fn b10_certificate_field_missing_empty_wrong_type_not_base64_not_der() {
    let t = field_token(|m| {
        m.insert("certificate".into(), "".into());
    });
    assert_eq!(
        verify(&t),
        Err(VerifyError::Token(TokenError::CertificateEmpty))
    );
    for value in [
        serde_json::json!([]),
        serde_json::json!(["MIIB"]),
        12345.into(),
        serde_json::json!({}),
    ] {
        let t = field_token(|m| {
            m.insert("certificate".into(), value.clone());
        });
        assert!(
            matches!(
                verify(&t),
                Err(VerifyError::Token(TokenError::Malformed(_)))
            ),
            "{value}"
        );
    }
    let t = field_token(|m| {
        m.insert("certificate".into(), "not base64 at all!".into());
    });
    assert_eq!(
        verify(&t),
        Err(VerifyError::Token(TokenError::CertificateNotBase64))
    );
    let t = field_token(|m| {
        m.insert(
            "certificate".into(),
            STANDARD.encode(b"this is not DER").into(),
        );
    });
    assert!(matches!(
        verify(&t),
        Err(VerifyError::Certificate(CertError::Malformed(_)))
    ));
    // A DER certificate with trailing bytes.
    let p = pki();
    let mut cert = p.auth_cert(&p.gen1, &p.key_a);
    cert.push(0);
    let t = rs256_token(&cert, &p.key_a, ORIGIN, NONCE);
    assert!(matches!(
        verify(&t),
        Err(VerifyError::Certificate(CertError::Malformed(_)))
    ));
}

#[test]
fn b10_signature_and_app_version_fields() {
    let t = field_token(|m| {
        m.insert("signature".into(), "".into());
    });
    assert_eq!(
        verify(&t),
        Err(VerifyError::Token(TokenError::SignatureEmpty))
    );
    let t = field_token(|m| {
        m.insert("signature".into(), "@@@".into());
    });
    assert_eq!(
        verify(&t),
        Err(VerifyError::Token(TokenError::SignatureNotBase64))
    );
    let t = field_token(|m| {
        m.insert("signature".into(), 1.into());
    });
    assert!(matches!(
        verify(&t),
        Err(VerifyError::Token(TokenError::Malformed(_)))
    ));
    for bad in ["", "x\ny"] {
        let t = field_token(|m| {
            m.insert("app_version".into(), bad.into());
        });
        assert_eq!(
            verify(&t),
            Err(VerifyError::Token(TokenError::AppVersionInvalid))
        );
    }
    let t = field_token(|m| {
        m.insert("app_version".into(), "v".repeat(201).into());
    });
    assert_eq!(
        verify(&t),
        Err(VerifyError::Token(TokenError::AppVersionInvalid))
    );
}

// ------------------------------------------------------------------ C1–C3 certificates

#[test]
fn c1_certificate_from_the_signing_ca_or_another_ca_is_refused() {
    let p = pki();
    let sign_cert = p
        .gen1
        .issue(Purpose::Sign, &p.key_a, "JPKI TEST SIGNER", in_years(5))
        .unwrap();
    assert_eq!(
        cert_err(&rs256_token(&sign_cert, &p.key_a, ORIGIN, NONCE)),
        CertError::UntrustedIssuer
    );
    let rogue = p.auth_cert(&p.rogue, &p.key_a);
    assert_eq!(
        cert_err(&rs256_token(&rogue, &p.key_a, ORIGIN, NONCE)),
        CertError::UntrustedIssuer
    );
    let (key, cert) = p
        .phr_rogue
        .issue_card(vec![KeyUsagePurpose::DigitalSignature]);
    assert_eq!(
        cert_err(&es256_token(&cert, &key, ORIGIN, NONCE)),
        CertError::UntrustedIssuer
    );
    // The CA certificate itself presented as the card certificate.
    let ca_as_leaf = rs256_token(&p.gen1.auth.cert_der, &p.gen1.auth.key, ORIGIN, NONCE);
    assert!(matches!(
        cert_err(&ca_as_leaf),
        CertError::CaCertificate | CertError::UntrustedIssuer
    ));
}

#[test]
fn c1_a_ca_flagged_leaf_from_the_right_ca_is_refused() {
    let p = pki();
    let mut o = CertOptions::like_card(Purpose::Auth, "CA LEAF", in_years(1));
    o.is_ca = true;
    o.key_usages.push(KeyUsagePurpose::KeyCertSign);
    let cert = p.auth_cert_with(&p.key_a, &o);
    assert_eq!(
        cert_err(&rs256_token(&cert, &p.key_a, ORIGIN, NONCE)),
        CertError::CaCertificate
    );
}

#[test]
fn c2_key_usage_without_digital_signature_or_missing_is_refused() {
    let p = pki();
    let mut o = CertOptions::like_card(Purpose::Auth, "KU", in_years(1));
    o.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let cert = p.auth_cert_with(&p.key_a, &o);
    assert_eq!(
        cert_err(&rs256_token(&cert, &p.key_a, ORIGIN, NONCE)),
        CertError::KeyUsageNotDigitalSignature
    );
    o.key_usages = vec![];
    let cert = p.auth_cert_with(&p.key_a, &o);
    assert_eq!(
        cert_err(&rs256_token(&cert, &p.key_a, ORIGIN, NONCE)),
        CertError::KeyUsageNotDigitalSignature
    );
    let (key, cert) = p.phr.issue_card(vec![KeyUsagePurpose::KeyAgreement]);
    assert_eq!(
        cert_err(&es256_token(&cert, &key, ORIGIN, NONCE)),
        CertError::KeyUsageNotDigitalSignature
    );
}

#[test]
fn c2_eku_without_client_auth_is_refused_and_with_client_auth_accepted() {
    let p = pki();
    let mut o = CertOptions::like_card(Purpose::Auth, "EKU", in_years(1));
    o.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.auth_cert_with(&p.key_a, &o);
    assert_eq!(
        cert_err(&rs256_token(&cert, &p.key_a, ORIGIN, NONCE)),
        CertError::WrongExtendedKeyUsage
    );
    o.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.auth_cert_with(&p.key_a, &o);
    assert!(verify(&rs256_token(&cert, &p.key_a, ORIGIN, NONCE)).is_ok());
}

#[test]
fn c3_expired_not_yet_valid_and_the_not_after_boundary() {
    let p = pki();
    let now = OffsetDateTime::now_utc();
    let mut o = CertOptions::like_card(Purpose::Auth, "EXPIRED", now - Duration::days(1));
    o.not_before = now - Duration::days(30);
    let expired = p.auth_cert_with(&p.key_a, &o);
    assert_eq!(
        cert_err(&rs256_token(&expired, &p.key_a, ORIGIN, NONCE)),
        CertError::Expired
    );

    let mut o = CertOptions::like_card(Purpose::Auth, "FUTURE", now + Duration::days(30));
    o.not_before = now + Duration::days(1);
    let future = p.auth_cert_with(&p.key_a, &o);
    assert_eq!(
        cert_err(&rs256_token(&future, &p.key_a, ORIGIN, NONCE)),
        CertError::NotYetValid
    );

    // notAfter exactly, ±1 s (validity is inclusive, RFC 5280 §4.1.2.5).
    let not_after = (now + Duration::days(10)).replace_nanosecond(0).unwrap();
    let o = CertOptions::like_card(Purpose::Auth, "EDGE", not_after);
    let edge = p.auth_cert_with(&p.key_a, &o);
    let na_ms = not_after.unix_timestamp() * 1000;
    // CRLs are valid for a day only: use a verifier whose CRLs cover the edge time.
    let far_crl = |ca: &card_agent::testca::JpkiTestCa| {
        ca.issue_crl(
            Purpose::Auth,
            &[],
            now - Duration::hours(1),
            now + Duration::days(20),
            2,
        )
        .unwrap()
    };
    let v2 = verifier_with_crls(vec![far_crl(&p.gen1), far_crl(&p.gen2)], vec![]);
    let at2 = |ms: i64| {
        v2.verify_json(
            &rs256_token(&edge, &p.key_a, ORIGIN, NONCE),
            ORIGIN,
            NONCE,
            ms,
        )
    };
    assert!(at2(na_ms - 1000).is_ok());
    assert!(at2(na_ms).is_ok());
    assert_eq!(
        at2(na_ms + 1000),
        Err(VerifyError::Certificate(CertError::Expired))
    );
}

// ------------------------------------------------------------------ C4–C6 revocation

fn serial(cert: &[u8]) -> Vec<u8> {
    testca::certificate_serial(cert).unwrap()
}

#[test]
fn c4_revoked_certificate_is_refused_and_others_pass() {
    let p = pki();
    let revoked = p.auth_cert(&p.gen1, &p.key_a);
    let fine = p.auth_cert(&p.gen1, &p.key_a);
    let v = verifier_with_crls(
        vec![
            p.auth_crl(&p.gen1, &[serial(&revoked)]),
            p.auth_crl(&p.gen2, &[]),
        ],
        vec![],
    );
    assert_eq!(
        v.verify_json(
            &rs256_token(&revoked, &p.key_a, ORIGIN, NONCE),
            ORIGIN,
            NONCE,
            now_ms()
        ),
        Err(VerifyError::Certificate(CertError::Revocation(
            RevocationError::Revoked
        )))
    );
    assert!(
        v.verify_json(
            &rs256_token(&fine, &p.key_a, ORIGIN, NONCE),
            ORIGIN,
            NONCE,
            now_ms()
        )
        .is_ok()
    );
    // PHR card.
    let (key, cert) = p.phr.issue_card(vec![KeyUsagePurpose::DigitalSignature]);
    let v = verifier_with_crls(vec![], vec![p.phr.crl(&[serial(&cert)], in_years(1))]);
    assert_eq!(
        v.verify_json(
            &es256_token(&cert, &key, ORIGIN, NONCE),
            ORIGIN,
            NONCE,
            now_ms()
        ),
        Err(VerifyError::Certificate(CertError::Revocation(
            RevocationError::Revoked
        )))
    );
}

#[test]
fn c4_serial_on_the_crl_of_the_other_generation_does_not_revoke_and_its_crl_does_not_count() {
    let p = pki();
    let cert = p.auth_cert(&p.gen1, &p.key_a);
    // Gen2's CRL (same issuer DN) lists the serial, gen1's CRL is missing: the gen2 CRL is not
    // signed by gen1's key, so there is no valid CRL for this certificate → refused, not "revoked".
    let v = verifier_with_crls(vec![p.auth_crl(&p.gen2, &[serial(&cert)])], vec![]);
    assert_eq!(
        v.verify_json(
            &rs256_token(&cert, &p.key_a, ORIGIN, NONCE),
            ORIGIN,
            NONCE,
            now_ms()
        ),
        Err(VerifyError::Certificate(CertError::Revocation(
            RevocationError::CrlSignatureInvalid
        )))
    );
    // With gen1's own (empty) CRL present as well, the certificate passes.
    let v = verifier_with_crls(
        vec![
            p.auth_crl(&p.gen2, &[serial(&cert)]),
            p.auth_crl(&p.gen1, &[]),
        ],
        vec![],
    );
    assert!(
        v.verify_json(
            &rs256_token(&cert, &p.key_a, ORIGIN, NONCE),
            ORIGIN,
            NONCE,
            now_ms()
        )
        .is_ok()
    );
}

#[test]
fn c5_missing_stale_future_and_rogue_crls_fail_closed() {
    let p = pki();
    let cert = p.auth_cert(&p.gen1, &p.key_a);
    let token = rs256_token(&cert, &p.key_a, ORIGIN, NONCE);
    let check = |crls: Vec<Vec<u8>>| match verifier_with_crls(crls, vec![]).verify_json(
        &token,
        ORIGIN,
        NONCE,
        now_ms(),
    ) {
        Err(VerifyError::Certificate(CertError::Revocation(e))) => e,
        other => panic!("expected a revocation error, got {other:?}"),
    };
    let now = OffsetDateTime::now_utc();
    // Missing.
    assert_eq!(check(vec![]), RevocationError::NoCrl);
    // Stale: nextUpdate passed.
    let stale = p
        .gen1
        .issue_crl(
            Purpose::Auth,
            &[],
            now - Duration::days(2),
            now - Duration::seconds(1),
            1,
        )
        .unwrap();
    assert_eq!(check(vec![stale]), RevocationError::Stale);
    // thisUpdate an hour in the future (beyond 15 min skew).
    let future = p
        .gen1
        .issue_crl(
            Purpose::Auth,
            &[],
            now + Duration::hours(1),
            now + Duration::days(1),
            1,
        )
        .unwrap();
    assert_eq!(check(vec![future]), RevocationError::NotYetValid);
    // Signed by another CA with the same DN (rogue): no valid signature.
    let rogue = p.auth_crl(&p.rogue, &[]);
    assert_eq!(check(vec![rogue]), RevocationError::CrlSignatureInvalid);
    // Not a CRL at all.
    assert!(matches!(
        gateway::domain::revocation::RevocationStore::from_crls(
            &[b"garbage".to_vec()],
            std::time::Duration::from_secs(1)
        ),
        Err(RevocationError::Malformed { .. })
    ));
}

#[tokio::test]
async fn c5_crl_sources_files_and_http_urls_and_a_failed_reload_keeps_failing_closed() {
    use gateway::domain::certs::{AnchorSet, CardKey, CertPolicy};
    use gateway::domain::revocation::{CrlSource, RevocationStore};
    use gateway::domain::verifier::TokenVerifier;
    use std::sync::Arc;
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let cert = p.auth_cert(&p.gen1, &p.key_a);
    let token = rs256_token(&cert, &p.key_a, ORIGIN, NONCE);
    let file = dir.path().join("gen1.crl");
    std::fs::write(&file, p.auth_crl(&p.gen1, &[])).unwrap();

    // An HTTP server on loopback serving gen2's CRL.
    let gen2_crl = p.auth_crl(&p.gen2, &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/auth.crl", listener.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/auth.crl",
        axum::routing::get(move || {
            let body = gen2_crl.clone();
            async move { body }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let store = Arc::new(RevocationStore::new(
        vec![
            CrlSource::parse(file.to_str().unwrap()).unwrap(),
            CrlSource::parse(&url).unwrap(),
        ],
        std::time::Duration::from_secs(900),
        std::time::Duration::from_secs(5),
    ));
    let set = AnchorSet::new(
        CardType::Jpki,
        CardKey::Auth,
        vec![p.gen1.auth.cert_der.clone(), p.gen2.auth.cert_der.clone()],
        CertPolicy::default(),
        store.clone(),
    )
    .unwrap();
    let v = TokenVerifier::new(vec![set]);
    // Before the first load: nothing → refused.
    assert_eq!(
        v.verify_json(&token, ORIGIN, NONCE, now_ms()),
        Err(VerifyError::Certificate(CertError::Revocation(
            RevocationError::NoCrl
        )))
    );
    let reports = v.refresh_revocation().await;
    assert!(reports.iter().all(|r| r.all_ok()), "{reports:?}");
    assert!(v.verify_json(&token, ORIGIN, NONCE, now_ms()).is_ok());
    let gen2_cert = p.auth_cert(&p.gen2, &p.key_a);
    assert!(
        v.verify_json(
            &rs256_token(&gen2_cert, &p.key_a, ORIGIN, NONCE),
            ORIGIN,
            NONCE,
            now_ms()
        )
        .is_ok()
    );

    // The file disappears: the reload fails, the loaded CRL stays until it goes stale (fail closed
    // after nextUpdate).
    std::fs::remove_file(&file).unwrap();
    let reports = v.refresh_revocation().await;
    assert!(!reports[0].all_ok());
    assert!(v.verify_json(&token, ORIGIN, NONCE, now_ms()).is_ok());
    let two_days = now_ms() + 2 * 86_400_000;
    assert_eq!(
        v.verify_json(&token, ORIGIN, NONCE, two_days),
        Err(VerifyError::Certificate(CertError::Revocation(
            RevocationError::Stale
        )))
    );
    // The server goes away: a fresh store cannot load → refused.
    server.abort();
    let _ = server.await;
    let lonely = RevocationStore::new(
        vec![CrlSource::parse(&url).unwrap()],
        std::time::Duration::from_secs(900),
        std::time::Duration::from_secs(5),
    );
    assert!(!lonely.refresh().await.all_ok());
    assert!(CrlSource::parse("https://example.jp/x.crl").is_err());
    assert!(CrlSource::parse("ldap://example.jp/x.crl").is_err());
}

#[test]
fn c6_crl_issuer_without_crl_sign_is_refused() {
    // A PHR CA whose certificate's key usage lacks cRLSign. rcgen refuses to sign a CRL for such
    // an issuer, so the CRL is signed by the same key and DN described with cRLSign: the bytes of
    // a CRL do not depend on the issuer's key usage.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "no crl sign CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = params.self_signed(&ca_key).unwrap().der().to_vec();
    let mut with_crl_sign = params.clone();
    with_crl_sign.key_usages.push(KeyUsagePurpose::CrlSign);
    let crl_issuer = rcgen::Issuer::new(with_crl_sign, &ca_key);
    let now = OffsetDateTime::now_utc();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now - Duration::hours(1),
        next_update: now + Duration::days(1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&crl_issuer)
    .unwrap()
    .der()
    .to_vec();
    let ca = PhrCa {
        key: ca_key,
        cert_der: ca_cert,
    };
    let (key, cert) = ca.issue_card(vec![KeyUsagePurpose::DigitalSignature]);
    let set = gateway::domain::certs::AnchorSet::new(
        CardType::Phr,
        gateway::domain::certs::CardKey::Auth,
        vec![ca.cert_der.clone()],
        gateway::domain::certs::CertPolicy::default(),
        std::sync::Arc::new(
            gateway::domain::revocation::RevocationStore::from_crls(
                &[crl],
                std::time::Duration::from_secs(900),
            )
            .unwrap(),
        ),
    )
    .unwrap();
    let v = gateway::domain::verifier::TokenVerifier::new(vec![set]);
    assert_eq!(
        v.verify_json(
            &es256_token(&cert, &key, ORIGIN, NONCE),
            ORIGIN,
            NONCE,
            now_ms()
        ),
        Err(VerifyError::Certificate(CertError::Revocation(
            RevocationError::IssuerNotCrlSigner
        )))
    );
}

#[test]
fn no_anchors_for_a_card_type_refuses() {
    let p = pki();
    let only_jpki = gateway::domain::verifier::TokenVerifier::new(vec![]);
    let cert = p.auth_cert(&p.gen1, &p.key_a);
    assert_eq!(
        only_jpki.verify_json(
            &rs256_token(&cert, &p.key_a, ORIGIN, NONCE),
            ORIGIN,
            NONCE,
            now_ms()
        ),
        Err(VerifyError::NoAnchors(CardType::Jpki))
    );
}
