//! Test certificate authorities and card material, shaped like JPKI (domain.md §5.3–5.4).
//!
//! A JPKI-like test CA has one self-signed RSA-2048 root per purpose (利用者証明用 and 署名用),
//! `O=JPKI-TEST` so that no production verifier accepts it. Cards get an RSA-2048 key per purpose
//! and certificates whose subject is `C=JP, CN=<opaque id>` (auth) as on real cards. Everything is
//! written to a directory on first use and loaded from it afterwards; private keys are PKCS#8 PEM
//! files readable only by the owner. A real deployment configures the real J-LIS roots instead.

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_RSA_SHA256, RevokedCertParams, SerialNumber,
};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use std::fs;
use std::path::{Path, PathBuf};
use time::{Duration as TimeDuration, OffsetDateTime};
use zeroize::Zeroizing;

/// RSA modulus size of JPKI keys.
pub const RSA_BITS: usize = 2048;

/// Why test material could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A stored key or state file is corrupt.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Key generation failed.
    #[error("RSA key generation: {0}")]
    KeyGeneration(#[from] rsa::Error),
    /// Certificate creation failed.
    #[error("certificate creation: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// Which JPKI hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// 利用者証明用: user authentication.
    Auth,
    /// 署名用: digital signature.
    Sign,
}

impl Purpose {
    fn ca_ou(self) -> &'static str {
        match self {
            Purpose::Auth => "JPKI for user authentication",
            Purpose::Sign => "JPKI for digital signature",
        }
    }
}

/// An RSA key with its certificate.
pub struct KeyAndCert {
    /// The private key (zeroized on drop by the `rsa` crate).
    pub key: RsaPrivateKey,
    /// DER certificate.
    pub cert_der: Vec<u8>,
}

impl KeyAndCert {
    fn rcgen_key(&self) -> Result<KeyPair, MaterialError> {
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| MaterialError::Corrupt {
                path: PathBuf::new(),
                reason: format!("cannot encode key: {e}"),
            })?;
        Ok(KeyPair::from_pem_and_sign_algo(&pem, &PKCS_RSA_SHA256)?)
    }
}

/// A JPKI-like test CA: one root per purpose.
pub struct JpkiTestCa {
    /// 利用者証明用 root.
    pub auth: KeyAndCert,
    /// 署名用 root.
    pub sign: KeyAndCert,
}

impl JpkiTestCa {
    /// Loads the CA from `dir`, creating it there first if absent.
    pub fn load_or_create(dir: &Path) -> Result<Self, MaterialError> {
        create_dir(dir)?;
        Ok(JpkiTestCa {
            auth: load_or_make(dir, "auth-ca", |key| ca_certificate(key, Purpose::Auth))?,
            sign: load_or_make(dir, "sign-ca", |key| ca_certificate(key, Purpose::Sign))?,
        })
    }

    fn root(&self, purpose: Purpose) -> &KeyAndCert {
        match purpose {
            Purpose::Auth => &self.auth,
            Purpose::Sign => &self.sign,
        }
    }

    /// Issues an end-entity certificate for `public_key` in the given hierarchy.
    pub fn issue(
        &self,
        purpose: Purpose,
        key: &RsaPrivateKey,
        subject_cn: &str,
        not_after: OffsetDateTime,
    ) -> Result<Vec<u8>, MaterialError> {
        let root = self.root(purpose);
        let root_key = root.rcgen_key()?;
        let issuer = Issuer::from_ca_cert_der(&root.cert_der.as_slice().into(), &root_key)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "JP");
        if purpose == Purpose::Sign {
            dn.push(DnType::LocalityName, "Chiyoda-ku");
        }
        dn.push(DnType::CommonName, subject_cn);
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        params.not_before = OffsetDateTime::now_utc() - TimeDuration::days(1);
        params.not_after = not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = match purpose {
            Purpose::Auth => vec![KeyUsagePurpose::DigitalSignature],
            Purpose::Sign => {
                vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::ContentCommitment,
                ]
            }
        };
        params.use_authority_key_identifier_extension = true;
        let subject_key = KeyAndCert {
            key: key.clone(),
            cert_der: Vec::new(),
        }
        .rcgen_key()?;
        Ok(params.signed_by(&subject_key, &issuer)?.der().to_vec())
    }
}

/// What an end-entity certificate made by [`JpkiTestCa::issue_with`] contains; for negative tests
/// (expired, not yet valid, wrong key usage, an EKU, a CA flag).
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// Subject `CN`.
    pub subject_cn: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// keyUsage bits (the extension is left out when empty).
    pub key_usages: Vec<KeyUsagePurpose>,
    /// extendedKeyUsage purposes (the extension is left out when empty).
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    /// Marks the certificate as a CA (basicConstraints cA=TRUE).
    pub is_ca: bool,
}

impl CertOptions {
    /// What [`JpkiTestCa::issue`] makes for `purpose`: valid from yesterday to `not_after`,
    /// digitalSignature (plus nonRepudiation for 署名用), no EKU.
    pub fn like_card(purpose: Purpose, subject_cn: &str, not_after: OffsetDateTime) -> Self {
        CertOptions {
            subject_cn: subject_cn.to_owned(),
            not_before: OffsetDateTime::now_utc() - TimeDuration::days(1),
            not_after,
            key_usages: match purpose {
                Purpose::Auth => vec![KeyUsagePurpose::DigitalSignature],
                Purpose::Sign => vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::ContentCommitment,
                ],
            },
            extended_key_usages: Vec::new(),
            is_ca: false,
        }
    }
}

impl JpkiTestCa {
    /// Issues an end-entity certificate with chosen validity, key usage, EKU and CA flag.
    pub fn issue_with(
        &self,
        purpose: Purpose,
        key: &RsaPrivateKey,
        options: &CertOptions,
    ) -> Result<Vec<u8>, MaterialError> {
        let root = self.root(purpose);
        let root_key = root.rcgen_key()?;
        let issuer = Issuer::from_ca_cert_der(&root.cert_der.as_slice().into(), &root_key)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "JP");
        dn.push(DnType::CommonName, options.subject_cn.as_str());
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        params.not_before = options.not_before;
        params.not_after = options.not_after;
        params.is_ca = if options.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = options.key_usages.clone();
        params.extended_key_usages = options.extended_key_usages.clone();
        params.use_authority_key_identifier_extension = true;
        let subject_key = KeyAndCert {
            key: key.clone(),
            cert_der: Vec::new(),
        }
        .rcgen_key()?;
        Ok(params.signed_by(&subject_key, &issuer)?.der().to_vec())
    }

    /// Issues a CRL (DER) from the root of `purpose` listing `revoked_serials` (big-endian serial
    /// bytes as in the certificates), valid from `this_update` to `next_update`.
    pub fn issue_crl(
        &self,
        purpose: Purpose,
        revoked_serials: &[Vec<u8>],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
        crl_number: u64,
    ) -> Result<Vec<u8>, MaterialError> {
        let root = self.root(purpose);
        let root_key = root.rcgen_key()?;
        let issuer = Issuer::from_ca_cert_der(&root.cert_der.as_slice().into(), &root_key)?;
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: this_update,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&issuer)?.der().to_vec())
    }
}

/// The serial number (big-endian bytes, as encoded) of a DER certificate.
pub fn certificate_serial(cert_der: &[u8]) -> Result<Vec<u8>, MaterialError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| MaterialError::Corrupt {
            path: PathBuf::new(),
            reason: format!("not a DER certificate: {e}"),
        })?;
    Ok(cert.tbs_certificate.raw_serial().to_vec())
}

fn ca_certificate(key: &KeyAndCert, purpose: Purpose) -> Result<Vec<u8>, MaterialError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "JP");
    dn.push(DnType::OrganizationName, "JPKI-TEST");
    dn.push(DnType::OrganizationalUnitName, purpose.ca_ou());
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial());
    params.not_before = OffsetDateTime::now_utc() - TimeDuration::days(1);
    params.not_after = OffsetDateTime::now_utc() + TimeDuration::days(365 * 10);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let rcgen_key = key.rcgen_key()?;
    Ok(params.self_signed(&rcgen_key)?.der().to_vec())
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill(&mut bytes);
    bytes[0] &= 0x7F; // positive INTEGER
    SerialNumber::from_slice(&bytes)
}

/// An opaque subject id like a real 利用者証明用 certificate's (23 upper-case alphanumerics).
pub fn opaque_subject_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::thread_rng();
    (0..23)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Generates an RSA-2048 key.
pub fn generate_rsa_key() -> Result<RsaPrivateKey, MaterialError> {
    Ok(RsaPrivateKey::new(&mut rand::thread_rng(), RSA_BITS)?)
}

/// Loads `<stem>.key.pem` + `<stem>.der` from `dir`, or generates the key, makes the certificate
/// with `make_cert` and stores both.
pub(crate) fn load_or_make(
    dir: &Path,
    stem: &str,
    make_cert: impl FnOnce(&KeyAndCert) -> Result<Vec<u8>, MaterialError>,
) -> Result<KeyAndCert, MaterialError> {
    let key_path = dir.join(format!("{stem}.key.pem"));
    let cert_path = dir.join(format!("{stem}.der"));
    if key_path.exists() && cert_path.exists() {
        let pem = Zeroizing::new(read_to_string(&key_path)?);
        let key = RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| MaterialError::Corrupt {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let cert_der = fs::read(&cert_path).map_err(|source| MaterialError::Io {
            path: cert_path,
            source,
        })?;
        return Ok(KeyAndCert { key, cert_der });
    }
    let mut pair = KeyAndCert {
        key: generate_rsa_key()?,
        cert_der: Vec::new(),
    };
    pair.cert_der = make_cert(&pair)?;
    let pem = pair
        .key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| MaterialError::Corrupt {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
    write_private(&key_path, pem.as_bytes())?;
    write_private(&cert_path, &pair.cert_der)?;
    Ok(pair)
}

/// Creates `dir` (and parents).
pub(crate) fn create_dir(dir: &Path) -> Result<(), MaterialError> {
    fs::create_dir_all(dir).map_err(|source| MaterialError::Io {
        path: dir.to_owned(),
        source,
    })
}

pub(crate) fn read_to_string(path: &Path) -> Result<String, MaterialError> {
    fs::read_to_string(path).map_err(|source| MaterialError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file readable only by its owner (keys, PINs, certificates alike), through a temporary
/// file and a rename so that a reader never sees half a file.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), MaterialError> {
    let tmp = path.with_extension("tmp");
    let io = |source| MaterialError::Io {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
    }
    #[cfg(not(unix))]
    fs::write(&tmp, bytes).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}
