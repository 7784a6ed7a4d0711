//! The PHR card issuer CA for tests and the demo (`docs/phr-card-profile.md` §3): one
//! self-signed P-256 root, `O=iPHR-TEST`, kept in a directory (key PKCS#8 PEM, owner-only; cert
//! DER), made on first use. It certifies the holder key (slot 9A) of every PHR card it issues.
//! A deployment configures its real issuer CA instead; nothing here is a production trust anchor.

use crate::testca::{self, MaterialError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use std::path::Path;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// Organization of every holder certificate subject.
pub const HOLDER_ORG: &str = "iPHR PHR card";
/// Organization of the test issuer CA.
pub const CA_ORG: &str = "iPHR-TEST";

/// The issuer CA.
pub struct PhrIssuerCa {
    key: KeyPair,
    /// The CA certificate (DER): the trust anchor verifiers configure for PHR cards.
    pub cert_der: Vec<u8>,
}

impl PhrIssuerCa {
    /// Loads the CA in `dir`, or creates it there.
    pub fn load_or_create(dir: &Path) -> Result<Self, MaterialError> {
        testca::create_dir(dir)?;
        let key_path = dir.join("phr-issuer-ca.key.pem");
        let cert_path = dir.join("phr-issuer-ca.der");
        if key_path.exists() && cert_path.exists() {
            let pem = Zeroizing::new(testca::read_to_string(&key_path)?);
            let key =
                KeyPair::from_pem_and_sign_algo(&pem, &PKCS_ECDSA_P256_SHA256).map_err(|e| {
                    MaterialError::Corrupt {
                        path: key_path.clone(),
                        reason: e.to_string(),
                    }
                })?;
            let cert_der = std::fs::read(&cert_path).map_err(|source| MaterialError::Io {
                path: cert_path.clone(),
                source,
            })?;
            return Ok(PhrIssuerCa { key, cert_der });
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "JP");
        dn.push(DnType::OrganizationName, CA_ORG);
        dn.push(DnType::CommonName, "iPHR PHR card issuer TEST CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365 * 20);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().to_vec();
        let pem = Zeroizing::new(key.serialize_pem());
        testca::write_private(&key_path, pem.as_bytes())?;
        testca::write_private(&cert_path, &cert_der)?;
        Ok(PhrIssuerCa { key, cert_der })
    }

    /// Certifies a card's holder key: subject `C=JP, O=iPHR PHR card, CN=<holder id>`,
    /// digitalSignature, clientAuth, valid from yesterday to `not_after`.
    pub fn issue_holder(
        &self,
        public_key: &p256::PublicKey,
        holder_id: &str,
        not_after: OffsetDateTime,
    ) -> Result<Vec<u8>, MaterialError> {
        use p256::pkcs8::EncodePublicKey;
        let spki = public_key
            .to_public_key_der()
            .map_err(|e| MaterialError::Corrupt {
                path: Default::default(),
                reason: format!("public key: {e}"),
            })?;
        let subject_key = rcgen::SubjectPublicKeyInfo::from_der(spki.as_bytes())?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), &self.key)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "JP");
        dn.push(DnType::OrganizationName, HOLDER_ORG);
        dn.push(DnType::CommonName, holder_id);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        Ok(params.signed_by(&subject_key, &issuer)?.der().to_vec())
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    bytes[0] &= 0x7F;
    SerialNumber::from_slice(&bytes)
}
