//! Writes the seed inputs of the gateway fuzz targets (`gateway/fuzz/seeds/`): a JPKI-like
//! authentication CA and a PHR-card P-256 CA (certificates only; their keys are thrown away), a
//! valid leaf of each, a revoked JPKI leaf, a CRL of each CA, and RS256 / ES256 tokens signed for
//! [`gateway::fuzzing::SEED_ORIGIN`] and [`gateway::fuzzing::SEED_NONCE`]. Everything is valid at
//! [`gateway::fuzzing::SEED_NOW_MS`].
//!
//! `cargo run -p gateway --example fuzz_seeds -- gateway/fuzz/seeds`

use anyhow::{Context, Result};
use card_agent::testca::{self, CertOptions, JpkiTestCa, Purpose};
use gateway::domain::token::{AuthToken, SignatureAlgorithm, digest_to_sign, signed_data};
use gateway::fuzzing::{SEED_NONCE, SEED_ORIGIN};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    RevokedCertParams, SerialNumber,
};
use std::path::{Path, PathBuf};
use time::macros::datetime;

fn main() -> Result<()> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: fuzz_seeds OUT_DIR")?;
    let not_before = datetime!(2026-11-01 0:00 UTC);
    let not_after = datetime!(2031-11-01 0:00 UTC);

    let ca_dir = tempfile::tempdir()?;
    let jpki = JpkiTestCa::load_or_create(ca_dir.path())?;
    let card_key = testca::generate_rsa_key()?;
    let mut options = CertOptions::like_card(Purpose::Auth, "FUZZSEED0001", not_after);
    options.not_before = not_before;
    let jpki_leaf = jpki.issue_with(Purpose::Auth, &card_key, &options)?;
    let revoked_key = testca::generate_rsa_key()?;
    options.subject_cn = "FUZZSEED0002".into();
    let jpki_revoked = jpki.issue_with(Purpose::Auth, &revoked_key, &options)?;
    let jpki_crl = jpki.issue_crl(
        Purpose::Auth,
        &[testca::certificate_serial(&jpki_revoked)?],
        not_before,
        not_after,
        1,
    )?;
    let rs256 = card_key.sign(
        rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
        &digest_to_sign(SEED_ORIGIN, SEED_NONCE),
    )?;

    let phr_ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&[
        (DnType::OrganizationName, "iPHR-TEST"),
        (DnType::CommonName, "PHR card issuer CA (fuzz seed)"),
    ]);
    params.not_before = not_before;
    params.not_after = datetime!(2036-11-01 0:00 UTC);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let phr_ca = params.self_signed(&phr_ca_key)?.der().to_vec();
    let issuer = Issuer::from_ca_cert_der(&phr_ca.as_slice().into(), &phr_ca_key)?;
    let phr_card_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&[(DnType::CommonName, "FUZZSEED0003")]);
    params.serial_number = Some(SerialNumber::from(3u64));
    params.not_before = not_before;
    params.not_after = not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let phr_leaf = params.signed_by(&phr_card_key, &issuer)?.der().to_vec();
    let phr_crl = CertificateRevocationListParams {
        this_update: not_before,
        next_update: not_after,
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(4u64),
            revocation_time: not_before,
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)?
    .der()
    .to_vec();
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &phr_card_key.serialize_der(),
        &rng,
    )
    .map_err(|e| anyhow::anyhow!("P-256 key: {e}"))?;
    let es256 = pair
        .sign(&rng, &signed_data(SEED_ORIGIN, SEED_NONCE))
        .map_err(|e| anyhow::anyhow!("P-256 signature: {e}"))?
        .as_ref()
        .to_vec();

    write(&out, "jpki-anchor.der", &jpki.auth.cert_der)?;
    write(&out, "phr-anchor.der", &phr_ca)?;
    write(&out, "certificate/jpki-leaf.der", &jpki_leaf)?;
    write(&out, "certificate/jpki-revoked.der", &jpki_revoked)?;
    write(&out, "certificate/phr-leaf.der", &phr_leaf)?;
    write(&out, "crl/jpki.der", &jpki_crl)?;
    write(&out, "crl/phr.der", &phr_crl)?;
    write(
        &out,
        "token/rs256.json",
        &token(&jpki_leaf, SignatureAlgorithm::Rs256, rs256),
    )?;
    write(
        &out,
        "token/es256.json",
        &token(&phr_leaf, SignatureAlgorithm::Es256, es256),
    )?;
    Ok(())
}

fn dn(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "JP");
    for (kind, value) in parts {
        dn.push(kind.clone(), *value);
    }
    dn
}

fn token(certificate_der: &[u8], algorithm: SignatureAlgorithm, signature: Vec<u8>) -> Vec<u8> {
    AuthToken {
        certificate_der: certificate_der.to_vec(),
        algorithm,
        signature,
        app_version: "iphr-card-agent/0.1.0 (fuzz seed)".into(),
    }
    .to_json()
    .into_bytes()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, bytes).with_context(|| path.display().to_string())
}
