//! Verification of what a PHR card signs (`docs/phr-card-profile.md` §6), without PC/SC: the
//! gateway links this with `card-agent = { default-features = false }`.
//!
//! - Holder certificate: issued by the configured PHR issuer CA (ecdsa-with-SHA256, RFC 5758
//!   §3.2), valid now, P-256 key, digitalSignature.
//! - Service-binding certificate: signed by the holder key, issuer = holder subject, subject
//!   `O=iPHR PHR service binding, OU=<service>, CN=<pseudonym>`, P-256 key.
//! - Consent record: strict parse, ECDSA P-256 over SHA-256(domain ‖ fields) by the holder key;
//!   [`ConsentLedger`] refuses a version that is not newer than the one it holds.
//! - Service grant: signed by the service's slot key; service, pseudonym, audience, nonce and
//!   validity must match.

use super::consent::{Category, ConsentFormatError, ConsentRecord};
use crate::piv::tlv::{self, TlvReader};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use x509_parser::prelude::*;

/// Subject organization of service-binding certificates.
pub const BINDING_ORG: &str = "iPHR PHR service binding";
/// Domain separation prefix of service grants.
pub const GRANT_DOMAIN: &[u8] = b"iPHR-grant-v1\0";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";

/// Why something a PHR card signed is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a parseable X.509 certificate, or not of the profile's shape.
    #[error("{what}: {reason}")]
    Certificate {
        /// Which certificate.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The certificate's issuer is not the expected one.
    #[error("{what}: issued by someone else")]
    WrongIssuer {
        /// Which certificate.
        what: &'static str,
    },
    /// A signature does not verify.
    #[error("{what}: signature does not verify")]
    BadSignature {
        /// What was signed.
        what: &'static str,
    },
    /// Outside the validity period.
    #[error("{what}: not valid at {now}")]
    NotValidNow {
        /// Which item.
        what: &'static str,
        /// The time checked (Unix seconds).
        now: i64,
    },
    /// Consent record or grant bytes are malformed.
    #[error(transparent)]
    Format(#[from] ConsentFormatError),
    /// A grant or record names another service than the binding.
    #[error("signed for service {found:?}, expected {expected:?}")]
    WrongService {
        /// Expected.
        expected: String,
        /// In the signed data.
        found: String,
    },
    /// A grant names another pseudonym than the binding.
    #[error("grant names another pseudonym than the service binding")]
    WrongPseudonym,
    /// Audience or nonce differ from what the verifier expects.
    #[error("grant is for another audience or challenge")]
    WrongChallenge,
    /// A consent record older than (or equal to, with other content) one already accepted.
    #[error("consent for {service}: version {got} is not newer than accepted version {known}")]
    Rollback {
        /// The service.
        service: String,
        /// Highest version accepted before.
        known: u32,
        /// Version presented.
        got: u32,
    },
}

fn cert_err(what: &'static str, reason: impl Into<String>) -> VerifyError {
    VerifyError::Certificate {
        what,
        reason: reason.into(),
    }
}

/// A verified holder certificate.
#[derive(Debug, Clone)]
pub struct HolderCert {
    /// The holder's pseudonymous id (subject CN).
    pub holder_id: String,
    /// The holder key (slot 9A).
    pub key: VerifyingKey,
    /// Raw subject name (the issuer of binding certificates).
    pub subject_raw: Vec<u8>,
    /// The certificate (DER).
    pub der: Vec<u8>,
}

/// A verified service binding.
#[derive(Debug, Clone)]
pub struct ServiceBinding {
    /// Service id (subject OU).
    pub service: String,
    /// The person's pseudonymous id at that service (subject CN).
    pub pseudonym: String,
    /// The service key on the card.
    pub key: VerifyingKey,
    /// The certificate (DER).
    pub der: Vec<u8>,
}

fn parse_cert<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, VerifyError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| cert_err(what, e.to_string()))?;
    if !rest.is_empty() {
        return Err(cert_err(what, "trailing bytes after the certificate"));
    }
    Ok(cert)
}

fn p256_key(cert: &X509Certificate<'_>, what: &'static str) -> Result<VerifyingKey, VerifyError> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY {
        return Err(cert_err(what, "not an EC key"));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    if curve.as_deref() != Some(OID_P256) {
        return Err(cert_err(what, "not a P-256 key"));
    }
    VerifyingKey::from_sec1_bytes(&spki.subject_public_key.data)
        .map_err(|_| cert_err(what, "invalid P-256 point"))
}

fn check_signed_by(
    cert: &X509Certificate<'_>,
    issuer_key: &VerifyingKey,
    what: &'static str,
) -> Result<(), VerifyError> {
    if cert.signature_algorithm.algorithm.to_id_string() != OID_ECDSA_SHA256 {
        return Err(cert_err(what, "not signed with ecdsa-with-SHA256"));
    }
    let sig = Signature::from_der(&cert.signature_value.data)
        .map_err(|_| VerifyError::BadSignature { what })?;
    let digest = Sha256::digest(cert.tbs_certificate.as_ref());
    issuer_key
        .verify_prehash(&digest, &sig)
        .map_err(|_| VerifyError::BadSignature { what })
}

fn check_validity(
    cert: &X509Certificate<'_>,
    now: i64,
    what: &'static str,
) -> Result<(), VerifyError> {
    let v = cert.validity();
    if now < v.not_before.timestamp() || now > v.not_after.timestamp() {
        return Err(VerifyError::NotValidNow { what, now });
    }
    Ok(())
}

/// Verifies a holder certificate against the issuer CA certificate at time `now` (Unix seconds).
pub fn verify_holder_cert(
    holder_der: &[u8],
    issuer_ca_der: &[u8],
    now: i64,
) -> Result<HolderCert, VerifyError> {
    const WHAT: &str = "holder certificate";
    let ca = parse_cert(issuer_ca_der, "issuer CA certificate")?;
    let ca_key = p256_key(&ca, "issuer CA certificate")?;
    let cert = parse_cert(holder_der, WHAT)?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(VerifyError::WrongIssuer { what: WHAT });
    }
    check_signed_by(&cert, &ca_key, WHAT)?;
    check_validity(&cert, now, WHAT)?;
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.digital_signature() => {}
        _ => return Err(cert_err(WHAT, "key usage lacks digitalSignature")),
    }
    let holder = holder_of(&cert, holder_der)?;
    if holder.holder_id.is_empty() {
        return Err(cert_err(WHAT, "no subject CN"));
    }
    Ok(holder)
}

/// The holder key and id of a holder certificate whose chain the caller has already validated
/// (the gateway validates every card certificate against its configured anchors and CRLs before
/// it gets here; the agent reads its own card's). Checks only the shape: one DER certificate, a
/// P-256 key; the holder id is the subject CN (empty when absent). Never use it to accept a
/// certificate nobody validated: that is [`verify_holder_cert`].
pub fn holder_of_validated_cert(der: &[u8]) -> Result<HolderCert, VerifyError> {
    holder_of(&parse_cert(der, "holder certificate")?, der)
}

fn holder_of(cert: &X509Certificate<'_>, der: &[u8]) -> Result<HolderCert, VerifyError> {
    let key = p256_key(cert, "holder certificate")?;
    let holder_id = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok(HolderCert {
        holder_id,
        key,
        subject_raw: cert.subject().as_raw().to_vec(),
        der: der.to_vec(),
    })
}

/// Reads a binding certificate's service and pseudonym without verifying anything (display).
pub fn parse_binding_cert(der: &[u8]) -> Result<(String, String), VerifyError> {
    const WHAT: &str = "service-binding certificate";
    let cert = parse_cert(der, WHAT)?;
    binding_names(&cert)
}

fn binding_names(cert: &X509Certificate<'_>) -> Result<(String, String), VerifyError> {
    const WHAT: &str = "service-binding certificate";
    let subject = cert.subject();
    let org: Vec<&str> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    if org != [BINDING_ORG] {
        return Err(cert_err(
            WHAT,
            "subject O is not the service-binding profile's",
        ));
    }
    let ou: Vec<&str> = subject
        .iter_organizational_unit()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let cn: Vec<&str> = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    match (ou.as_slice(), cn.as_slice()) {
        ([service], [pseudonym]) => Ok(((*service).to_owned(), (*pseudonym).to_owned())),
        _ => Err(cert_err(
            WHAT,
            "subject needs exactly one OU (service) and one CN (pseudonym)",
        )),
    }
}

/// Verifies a service-binding certificate as issued by `holder`'s key.
pub fn verify_binding(
    binding_der: &[u8],
    holder: &HolderCert,
    now: i64,
) -> Result<ServiceBinding, VerifyError> {
    const WHAT: &str = "service-binding certificate";
    let cert = parse_cert(binding_der, WHAT)?;
    if cert.issuer().as_raw() != holder.subject_raw.as_slice() {
        return Err(VerifyError::WrongIssuer { what: WHAT });
    }
    check_signed_by(&cert, &holder.key, WHAT)?;
    check_validity(&cert, now, WHAT)?;
    let (service, pseudonym) = binding_names(&cert)?;
    super::consent::check_service_id(&service)?;
    let key = p256_key(&cert, WHAT)?;
    Ok(ServiceBinding {
        service,
        pseudonym,
        key,
        der: binding_der.to_vec(),
    })
}

/// Parses a consent record and checks the holder's signature over it.
pub fn verify_consent(
    record_bytes: &[u8],
    holder: &HolderCert,
) -> Result<ConsentRecord, VerifyError> {
    let record = ConsentRecord::parse(record_bytes)?;
    verify_consent_record(&record, holder)?;
    Ok(record)
}

/// Checks the holder's signature over an already parsed record.
pub fn verify_consent_record(
    record: &ConsentRecord,
    holder: &HolderCert,
) -> Result<(), VerifyError> {
    const WHAT: &str = "consent record";
    let sig = Signature::from_der(&record.signature)
        .map_err(|_| VerifyError::BadSignature { what: WHAT })?;
    holder
        .key
        .verify_prehash(&record.digest()?, &sig)
        .map_err(|_| VerifyError::BadSignature { what: WHAT })
}

/// What the ledger did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerOutcome {
    /// Newer than anything known for that service: now the current one.
    Accepted,
    /// The very record already accepted (same version, same bytes).
    AlreadyKnown,
}

/// The highest consent version accepted per (holder, service): a verifier's memory that makes an
/// older record presented after a newer one fail (rollback), as the gateway's store does.
#[derive(Debug, Default, Clone)]
pub struct ConsentLedger {
    latest: HashMap<(String, String), (u32, [u8; 32])>,
}

impl ConsentLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `record_bytes` against `holder` and accepts it if newer than the known version.
    pub fn accept(
        &mut self,
        record_bytes: &[u8],
        holder: &HolderCert,
    ) -> Result<(LedgerOutcome, ConsentRecord), VerifyError> {
        let record = verify_consent(record_bytes, holder)?;
        let key = (holder.holder_id.clone(), record.terms.service.clone());
        let fingerprint: [u8; 32] = Sha256::digest(record_bytes).into();
        match self.latest.get(&key) {
            Some((known, fp)) if *known == record.terms.version && *fp == fingerprint => {
                Ok((LedgerOutcome::AlreadyKnown, record))
            }
            Some((known, _)) if *known >= record.terms.version => Err(VerifyError::Rollback {
                service: record.terms.service.clone(),
                known: *known,
                got: record.terms.version,
            }),
            _ => {
                self.latest.insert(key, (record.terms.version, fingerprint));
                Ok((LedgerOutcome::Accepted, record))
            }
        }
    }
}

/// A service-specific grant: the person lets `service` (which knows them as `pseudonym`) act
/// towards `audience` (e.g. the gateway) for `scope`, answering `nonce`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceGrant {
    /// Service id.
    pub service: String,
    /// The person's pseudonymous id at the service.
    pub pseudonym: String,
    /// Who the grant is presented to (an origin or URL).
    pub audience: String,
    /// The verifier's challenge, 1–64 bytes.
    #[serde(with = "hex_vec")]
    pub nonce: Vec<u8>,
    /// Issued (Unix seconds).
    pub issued_at: u32,
    /// Expires (Unix seconds).
    pub expires_at: u32,
    /// Categories covered.
    pub scope: Vec<Category>,
}

mod hex_vec {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
}

fn grant_field(reason: impl Into<String>) -> ConsentFormatError {
    ConsentFormatError::Field {
        field: "grant",
        reason: reason.into(),
    }
}

impl ServiceGrant {
    /// The grant's encoding (tag `E2`).
    pub fn encode(&self) -> Result<Vec<u8>, ConsentFormatError> {
        super::consent::check_service_id(&self.service)?;
        if self.pseudonym.is_empty() || self.pseudonym.len() > 64 {
            return Err(grant_field("pseudonym must be 1–64 bytes"));
        }
        if self.audience.is_empty() || self.audience.len() > 255 {
            return Err(grant_field("audience must be 1–255 bytes"));
        }
        if self.nonce.is_empty() || self.nonce.len() > 64 {
            return Err(grant_field("nonce must be 1–64 bytes"));
        }
        if self.expires_at <= self.issued_at {
            return Err(grant_field("expires before it is issued"));
        }
        if self.scope.len() > super::consent::MAX_CATEGORIES {
            return Err(grant_field("too many categories"));
        }
        let mut inner = Vec::new();
        tlv::push(&mut inner, 0x80, self.service.as_bytes());
        tlv::push(&mut inner, 0x81, self.pseudonym.as_bytes());
        tlv::push(&mut inner, 0x82, self.audience.as_bytes());
        tlv::push(&mut inner, 0x83, &self.nonce);
        tlv::push(&mut inner, 0x84, &self.issued_at.to_be_bytes());
        tlv::push(&mut inner, 0x85, &self.expires_at.to_be_bytes());
        let mut scope = Vec::new();
        for c in &self.scope {
            let mut v = vec![match c.unit {
                super::consent::Unit::A => b'A',
                super::consent::Unit::B => b'B',
                super::consent::Unit::C => b'C',
            }];
            v.extend_from_slice(c.kind.as_bytes());
            tlv::push(&mut scope, 0x86, &v);
        }
        tlv::push(&mut inner, 0xA6, &scope);
        Ok(tlv::encode(0xE2, &inner))
    }

    /// Parses a grant strictly (canonical encoding only).
    pub fn parse(bytes: &[u8]) -> Result<Self, ConsentFormatError> {
        let inner = tlv::parse_single(bytes, 0xE2)?;
        let mut r = TlvReader::new(inner);
        let text = |v: &[u8]| String::from_utf8(v.to_vec()).map_err(|_| grant_field("not UTF-8"));
        let u32v = |v: &[u8]| -> Result<u32, ConsentFormatError> {
            Ok(u32::from_be_bytes(
                v.try_into()
                    .map_err(|_| grant_field("time must be 4 bytes"))?,
            ))
        };
        let service = text(r.expect(0x80)?)?;
        let pseudonym = text(r.expect(0x81)?)?;
        let audience = text(r.expect(0x82)?)?;
        let nonce = r.expect(0x83)?.to_vec();
        let issued_at = u32v(r.expect(0x84)?)?;
        let expires_at = u32v(r.expect(0x85)?)?;
        let scope_raw = r.expect(0xA6)?;
        r.finish()?;
        let mut scope = Vec::new();
        let mut sr = TlvReader::new(scope_raw);
        while let Some(t) = sr.next_tlv()? {
            if t.tag != 0x86 || scope.len() == super::consent::MAX_CATEGORIES {
                return Err(grant_field("bad scope"));
            }
            let text = std::str::from_utf8(t.value).map_err(|_| grant_field("not UTF-8"))?;
            let (u, k) = text
                .split_at_checked(1)
                .ok_or_else(|| grant_field("empty category"))?;
            scope.push(Category::parse(&format!("{u}:{k}"))?);
        }
        let grant = ServiceGrant {
            service,
            pseudonym,
            audience,
            nonce,
            issued_at,
            expires_at,
            scope,
        };
        if grant.encode()? != bytes {
            return Err(ConsentFormatError::NotCanonical);
        }
        Ok(grant)
    }

    /// SHA-256 over the grant domain and the encoding: what the service key signs.
    pub fn digest_of(encoded: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(GRANT_DOMAIN);
        h.update(encoded);
        h.finalize().into()
    }
}

/// What the verifier of a grant expects.
#[derive(Debug, Clone)]
pub struct GrantExpectation<'a> {
    /// Its own audience string.
    pub audience: &'a str,
    /// The nonce it issued.
    pub nonce: &'a [u8],
    /// Now (Unix seconds).
    pub now: i64,
}

/// Verifies a grant and its signature against a verified service binding.
pub fn verify_grant(
    grant_bytes: &[u8],
    signature_der: &[u8],
    binding: &ServiceBinding,
    expect: &GrantExpectation<'_>,
) -> Result<ServiceGrant, VerifyError> {
    const WHAT: &str = "service grant";
    let grant = ServiceGrant::parse(grant_bytes)?;
    let sig =
        Signature::from_der(signature_der).map_err(|_| VerifyError::BadSignature { what: WHAT })?;
    binding
        .key
        .verify_prehash(&ServiceGrant::digest_of(grant_bytes), &sig)
        .map_err(|_| VerifyError::BadSignature { what: WHAT })?;
    if grant.service != binding.service {
        return Err(VerifyError::WrongService {
            expected: binding.service.clone(),
            found: grant.service,
        });
    }
    if grant.pseudonym != binding.pseudonym {
        return Err(VerifyError::WrongPseudonym);
    }
    if grant.audience != expect.audience || grant.nonce != expect.nonce {
        return Err(VerifyError::WrongChallenge);
    }
    if expect.now < i64::from(grant.issued_at) - 300 || expect.now > i64::from(grant.expires_at) {
        return Err(VerifyError::NotValidNow {
            what: WHAT,
            now: expect.now,
        });
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_round_trip_and_random_input() {
        let g = ServiceGrant {
            service: "insurer-b".into(),
            pseudonym: "P-123".into(),
            audience: "https://gw.example.jp".into(),
            nonce: vec![7; 32],
            issued_at: 1_700_000_000,
            expires_at: 1_700_000_300,
            scope: vec![Category::parse("A:*").unwrap()],
        };
        let enc = g.encode().unwrap();
        assert_eq!(ServiceGrant::parse(&enc).unwrap(), g);
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..3_000 {
            let mut b = enc.clone();
            let i = rng.gen_range(0..b.len());
            b[i] = rng.r#gen();
            b.truncate(rng.gen_range(0..=b.len()));
            let _ = ServiceGrant::parse(&b);
            let _ = parse_binding_cert(&b);
        }
    }
}
