//! Revocation by CRL (DESIGN §4 step 3; security-scenarios C4–C6; domain.md §5.5), fail closed.
//!
//! CRLs come from configured sources (files, or `http://` URLs as CRL distribution points use) and
//! are reloaded periodically; a source that fails to load keeps its previous CRL, which then goes
//! stale by itself. A certificate passes only if a CRL with its issuer's name, signed by its
//! issuer's key (so JPKI CA generations sharing one DN are told apart by signature), from an
//! issuer allowed to sign CRLs, is current (`thisUpdate` not in the future beyond the allowed
//! skew, `nextUpdate` present and not passed), complete (no delta or partitioned CRL, no unknown
//! critical extension), has a `cRLNumber`, and does not list the serial. Anything else refuses.
//! A CRL's signature is verified once per (CRL, issuer key) and remembered.

use super::sha256;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// Largest CRL accepted.
pub const MAX_CRL_BYTES: usize = 16 * 1024 * 1024;

const OID_CRL_NUMBER: &str = "2.5.29.20";
const OID_DELTA_CRL: &str = "2.5.29.27";
const OID_ISSUING_DP: &str = "2.5.29.28";
const OID_AUTHORITY_KEY_ID: &str = "2.5.29.35";
const OID_CERTIFICATE_ISSUER: &str = "2.5.29.29";
const OID_REASON_CODE: &str = "2.5.29.21";
const OID_INVALIDITY_DATE: &str = "2.5.29.24";

/// Why revocation status could not be established as "not revoked".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// The certificate is listed on its issuer's CRL.
    #[error("certificate is revoked")]
    Revoked,
    /// No CRL from the certificate's issuer is loaded (missing source, failed fetch).
    #[error("no CRL from the certificate's issuer is available")]
    NoCrl,
    /// CRLs with the issuer's name exist but none is signed by the issuer's key.
    #[error("no CRL with a valid signature from the certificate's issuer")]
    CrlSignatureInvalid,
    /// The issuer's keyUsage does not include cRLSign.
    #[error("the issuer is not allowed to sign CRLs")]
    IssuerNotCrlSigner,
    /// The newest CRL's nextUpdate has passed, or it has none.
    #[error("the CRL is stale (nextUpdate passed or absent)")]
    Stale,
    /// The newest CRL's thisUpdate lies further in the future than the allowed clock skew.
    #[error("the CRL is not yet valid (thisUpdate in the future)")]
    NotYetValid,
    /// The CRL is of a kind we do not evaluate (delta, partitioned, indirect, unknown critical
    /// extension, no cRLNumber): refused rather than misread.
    #[error("unsupported CRL: {0}")]
    Unsupported(String),
    /// A CRL could not be parsed.
    #[error("CRL from {source_name} is malformed: {reason}")]
    Malformed {
        /// Where it came from.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A CRL source could not be read or fetched.
    #[error("CRL source {source_name}: {reason}")]
    Fetch {
        /// Where.
        source_name: String,
        /// What happened.
        reason: String,
    },
    /// A configured source is not a file path or an `http://` URL.
    #[error("unsupported CRL source {0:?} (use a file path or an http:// URL)")]
    BadSource(String),
}

/// Where a CRL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlSource {
    /// A local file (DER or PEM).
    File(PathBuf),
    /// An `http://` URL.
    Http(String),
    /// Given in memory (tests, x509-limbo).
    Static(String),
}

impl CrlSource {
    /// Parses a configured source: `http://…`, `file://…` or a path.
    pub fn parse(s: &str) -> Result<CrlSource, RevocationError> {
        if s.starts_with("http://") {
            Ok(CrlSource::Http(s.to_owned()))
        } else if let Some(path) = s.strip_prefix("file://") {
            Ok(CrlSource::File(PathBuf::from(path)))
        } else if s.contains("://") || s.is_empty() {
            Err(RevocationError::BadSource(s.to_owned()))
        } else {
            Ok(CrlSource::File(PathBuf::from(s)))
        }
    }

    fn name(&self) -> String {
        match self {
            CrlSource::File(p) => p.display().to_string(),
            CrlSource::Http(u) => u.clone(),
            CrlSource::Static(n) => n.clone(),
        }
    }
}

#[derive(Debug)]
struct LoadedCrl {
    der: Vec<u8>,
    der_hash: [u8; 32],
    issuer_raw: Vec<u8>,
    this_update_ms: i64,
    next_update_ms: Option<i64>,
    revoked: HashSet<Vec<u8>>,
    unsupported: Option<String>,
}

impl LoadedCrl {
    fn parse(source_name: &str, bytes: &[u8]) -> Result<LoadedCrl, RevocationError> {
        let malformed = |reason: String| RevocationError::Malformed {
            source_name: source_name.to_owned(),
            reason,
        };
        let der = if bytes.starts_with(b"-----BEGIN") {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateRevocationListDer::from_pem_slice(bytes)
                .map_err(|e| malformed(e.to_string()))?
                .as_ref()
                .to_vec()
        } else {
            bytes.to_vec()
        };
        let (rest, crl) =
            CertificateRevocationList::from_der(&der).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes".into()));
        }
        let mut unsupported = None;
        let mut has_number = false;
        for ext in crl.extensions() {
            let oid = ext.oid.to_id_string();
            match oid.as_str() {
                OID_CRL_NUMBER if ext.critical => {
                    unsupported = Some("cRLNumber marked critical (RFC 5280 §5.2.3)".to_owned());
                }
                OID_CRL_NUMBER => has_number = true,
                OID_AUTHORITY_KEY_ID => {}
                OID_DELTA_CRL => unsupported = Some("delta CRL".to_owned()),
                OID_ISSUING_DP => {
                    unsupported = Some("partitioned CRL (issuingDistributionPoint)".to_owned());
                }
                _ if ext.critical => {
                    unsupported = Some(format!("unknown critical extension {oid}"));
                }
                _ => {}
            }
        }
        if !has_number && unsupported.is_none() {
            unsupported = Some("cRLNumber missing".to_owned());
        }
        let mut revoked = HashSet::new();
        for entry in crl.iter_revoked_certificates() {
            for ext in entry.extensions() {
                let oid = ext.oid.to_id_string();
                match oid.as_str() {
                    OID_REASON_CODE | OID_INVALIDITY_DATE => {}
                    OID_CERTIFICATE_ISSUER => unsupported = Some("indirect CRL".to_owned()),
                    _ if ext.critical => {
                        unsupported = Some(format!("unknown critical entry extension {oid}"));
                    }
                    _ => {}
                }
            }
            revoked.insert(entry.raw_serial().to_vec());
        }
        Ok(LoadedCrl {
            der_hash: sha256(&der),
            issuer_raw: crl.issuer().as_raw().to_vec(),
            this_update_ms: crl.last_update().timestamp().saturating_mul(1000),
            next_update_ms: crl
                .next_update()
                .map(|t| t.timestamp().saturating_mul(1000)),
            revoked,
            unsupported,
            der,
        })
    }
}

/// (SHA-256 of a CRL, SHA-256 of an issuer's SubjectPublicKeyInfo).
type SignatureKey = ([u8; 32], [u8; 32]);

/// The CRLs of one trust-anchor set.
#[derive(Debug)]
pub struct RevocationStore {
    sources: Vec<CrlSource>,
    loaded: RwLock<Vec<Option<Arc<LoadedCrl>>>>,
    signature_ok: Mutex<HashMap<SignatureKey, bool>>,
    max_skew_ms: i64,
    fetch_timeout: Duration,
}

/// What one refresh did, per source.
#[derive(Debug)]
pub struct RefreshReport {
    /// Source name and its outcome.
    pub results: Vec<(String, Result<(), RevocationError>)>,
}

impl RefreshReport {
    /// True when every source loaded.
    pub fn all_ok(&self) -> bool {
        self.results.iter().all(|(_, r)| r.is_ok())
    }
}

impl RevocationStore {
    /// A store reading `sources` (nothing is loaded until [`RevocationStore::refresh`]).
    pub fn new(sources: Vec<CrlSource>, max_skew: Duration, fetch_timeout: Duration) -> Self {
        let n = sources.len();
        RevocationStore {
            sources,
            loaded: RwLock::new(vec![None; n]),
            signature_ok: Mutex::new(HashMap::new()),
            max_skew_ms: i64::try_from(max_skew.as_millis()).unwrap_or(i64::MAX),
            fetch_timeout,
        }
    }

    /// A store holding the given CRLs (DER or PEM) and nothing else.
    pub fn from_crls(crls: &[Vec<u8>], max_skew: Duration) -> Result<Self, RevocationError> {
        let mut sources = Vec::new();
        let mut loaded = Vec::new();
        for (i, bytes) in crls.iter().enumerate() {
            let name = format!("crl #{i}");
            loaded.push(Some(Arc::new(LoadedCrl::parse(&name, bytes)?)));
            sources.push(CrlSource::Static(name));
        }
        let store = RevocationStore::new(sources, max_skew, Duration::from_secs(5));
        *write(&store.loaded) = loaded;
        Ok(store)
    }

    /// Reloads every file and URL source. A source that fails keeps its previous CRL.
    pub async fn refresh(&self) -> RefreshReport {
        let mut results = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            let name = source.name();
            let outcome = match self.fetch(source).await {
                Ok(None) => Ok(()),
                Ok(Some(bytes)) => LoadedCrl::parse(&name, &bytes).map(|crl| {
                    if let Some(slot) = write(&self.loaded).get_mut(i) {
                        *slot = Some(Arc::new(crl));
                    }
                }),
                Err(e) => Err(e),
            };
            if let Err(e) = &outcome {
                tracing::error!(source = %name, error = %e, "CRL not loaded; certificates of its issuer are refused once the previous CRL (if any) goes stale");
            }
            results.push((name, outcome));
        }
        RefreshReport { results }
    }

    async fn fetch(&self, source: &CrlSource) -> Result<Option<Vec<u8>>, RevocationError> {
        let fetch_error = |reason: String| RevocationError::Fetch {
            source_name: source.name(),
            reason,
        };
        match source {
            CrlSource::Static(_) => Ok(None),
            CrlSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| fetch_error(e.to_string()))?;
                if bytes.len() > MAX_CRL_BYTES {
                    return Err(fetch_error("too large".into()));
                }
                Ok(Some(bytes))
            }
            CrlSource::Http(url) => tokio::time::timeout(self.fetch_timeout, fetch_http(url))
                .await
                .map_err(|_| fetch_error(format!("timed out after {:?}", self.fetch_timeout)))?
                .map(Some)
                .map_err(fetch_error),
        }
    }

    /// Checks the certificate with serial `serial` issued by `issuer_raw` (DN, DER) whose issuer
    /// certificate is `issuer`, at `now_ms`.
    pub fn check(
        &self,
        serial: &[u8],
        issuer_raw: &[u8],
        issuer: &IssuerKey,
        now_ms: i64,
    ) -> Result<(), RevocationError> {
        let candidates: Vec<Arc<LoadedCrl>> = read(&self.loaded)
            .iter()
            .flatten()
            .filter(|crl| crl.issuer_raw == issuer_raw)
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Err(RevocationError::NoCrl);
        }
        if !issuer.crl_sign_allowed {
            return Err(RevocationError::IssuerNotCrlSigner);
        }
        let best = candidates
            .iter()
            .filter(|crl| self.signed_by(crl, issuer))
            .max_by_key(|crl| crl.this_update_ms)
            .ok_or(RevocationError::CrlSignatureInvalid)?;
        if let Some(reason) = &best.unsupported {
            return Err(RevocationError::Unsupported(reason.clone()));
        }
        match best.next_update_ms {
            Some(next) if now_ms < next => {}
            _ => return Err(RevocationError::Stale),
        }
        if best.this_update_ms > now_ms.saturating_add(self.max_skew_ms) {
            return Err(RevocationError::NotYetValid);
        }
        if best.revoked.contains(serial) {
            return Err(RevocationError::Revoked);
        }
        Ok(())
    }

    fn signed_by(&self, crl: &LoadedCrl, issuer: &IssuerKey) -> bool {
        let key = (crl.der_hash, issuer.spki_hash);
        if let Some(ok) = lock(&self.signature_ok).get(&key) {
            return *ok;
        }
        let ok = X509Certificate::from_der(&issuer.cert_der)
            .ok()
            .zip(CertificateRevocationList::from_der(&crl.der).ok())
            .is_some_and(|((_, cert), (_, parsed))| {
                parsed.verify_signature(cert.public_key()).is_ok()
            });
        lock(&self.signature_ok).insert(key, ok);
        ok
    }
}

/// What revocation checking needs of an issuer certificate, computed once per anchor.
#[derive(Debug, Clone)]
pub struct IssuerKey {
    /// The issuer certificate (DER), parsed only to verify a CRL signature not yet seen.
    pub cert_der: Vec<u8>,
    /// SHA-256 of its SubjectPublicKeyInfo.
    pub spki_hash: [u8; 32],
    /// False when its keyUsage is present without cRLSign.
    pub crl_sign_allowed: bool,
}

impl IssuerKey {
    /// Reads an issuer certificate.
    pub fn from_der(cert_der: &[u8]) -> Result<IssuerKey, RevocationError> {
        let malformed = |reason: String| RevocationError::Malformed {
            source_name: "issuer certificate".into(),
            reason,
        };
        let (_, cert) =
            X509Certificate::from_der(cert_der).map_err(|e| malformed(e.to_string()))?;
        let crl_sign_allowed = match cert.key_usage() {
            Ok(Some(ku)) => ku.value.crl_sign(),
            Ok(None) => true,
            Err(e) => return Err(malformed(e.to_string())),
        };
        Ok(IssuerKey {
            cert_der: cert_der.to_vec(),
            spki_hash: sha256(cert.public_key().raw),
            crl_sign_allowed,
        })
    }
}

async fn fetch_http(url: &str) -> Result<Vec<u8>, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let client: Client<_, Empty<hyper::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response = client.get(uri).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_CRL_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(body.to_bytes().to_vec())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
