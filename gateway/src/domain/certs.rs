//! Certificate validation against the trust anchors configured for one card type and key
//! (DESIGN §4 step 3; domain.md §5.3–5.4; security-scenarios C1–C3, C6–C8).
//!
//! Order: chain to an anchor of this set (path building and signatures by `rustls-webpki`, which
//! picks among anchors with the same DN by signature, as JPKI CA generations need) and validity of
//! every certificate on the path including the anchor → key usage → revocation (fail closed).
//! A certificate from another CA, or from the JPKI 署名用 hierarchy, chains to no anchor of the
//! 利用者証明用 set and is refused.

use super::chain_cache::{CachedChain, ChainCache, ChainCachePolicy, ChainCacheStats};
use super::revocation::{IssuerKey, RevocationError, RevocationStore};
use super::signature::PublicKey;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Card types the gateway knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardType {
    /// My Number card, JPKI AP.
    Jpki,
    /// PHR card (PIV profile, DESIGN §3.2).
    Phr,
}

impl CardType {
    /// `jpki` / `phr`.
    pub fn as_str(self) -> &'static str {
        match self {
            CardType::Jpki => "jpki",
            CardType::Phr => "phr",
        }
    }

    /// Parses [`CardType::as_str`].
    pub fn parse(s: &str) -> Option<CardType> {
        match s {
            "jpki" => Some(CardType::Jpki),
            "phr" => Some(CardType::Phr),
            _ => None,
        }
    }
}

/// Which key of the card a certificate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardKey {
    /// Authentication: JPKI 利用者証明用, PHR card slot 9A.
    Auth,
}

/// Extended key usage rule (webpki semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EkuPolicy {
    /// If the certificate has an EKU extension it must list clientAuth (JPKI certificates have none).
    #[default]
    ClientAuthIfPresent,
    /// The certificate must list clientAuth.
    ClientAuthRequired,
    /// If present, serverAuth must be listed (only for running x509-limbo's SERVER cases).
    ServerAuthIfPresent,
}

impl EkuPolicy {
    fn usage(self) -> webpki::KeyUsage {
        match self {
            EkuPolicy::ClientAuthIfPresent => webpki::KeyUsage::client_auth(),
            EkuPolicy::ClientAuthRequired => {
                webpki::KeyUsage::required(&[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02])
            }
            EkuPolicy::ServerAuthIfPresent => webpki::KeyUsage::server_auth(),
        }
    }
}

/// Whether revocation is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationMode {
    /// A fresh, valid CRL from the certificate's issuer is required (fail closed).
    #[default]
    Required,
    /// Not checked (logged at start; for test set-ups without CRLs).
    Disabled,
}

/// What a certificate must satisfy besides chaining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertPolicy {
    /// EKU rule.
    pub eku: EkuPolicy,
    /// keyUsage must be present with digitalSignature.
    pub require_digital_signature: bool,
    /// Revocation.
    pub revocation: RevocationMode,
    /// Most intermediates allowed between the card certificate and the anchor (`None`: webpki's
    /// own limit). Tokens carry no intermediates, so JPKI (single-level) paths have none anyway.
    pub max_intermediates: Option<usize>,
}

impl Default for CertPolicy {
    fn default() -> Self {
        CertPolicy {
            eku: EkuPolicy::ClientAuthIfPresent,
            require_digital_signature: true,
            revocation: RevocationMode::Required,
            max_intermediates: None,
        }
    }
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not a DER X.509 certificate.
    #[error("certificate is malformed: {0}")]
    Malformed(String),
    /// No configured anchor of this card type and key issued it (another CA or another purpose).
    #[error("certificate is not issued by a trusted CA for this card type and key")]
    UntrustedIssuer,
    /// The certificate (or an intermediate) has expired.
    #[error("certificate has expired")]
    Expired,
    /// The certificate (or an intermediate) is not yet valid.
    #[error("certificate is not yet valid")]
    NotYetValid,
    /// The anchor that issued it is outside its own validity period.
    #[error("the issuing CA certificate is outside its validity period")]
    AnchorOutsideValidity,
    /// The EKU extension does not allow client authentication.
    #[error("extended key usage does not allow client authentication")]
    WrongExtendedKeyUsage,
    /// keyUsage is absent or lacks digitalSignature.
    #[error("key usage does not allow digital signatures")]
    KeyUsageNotDigitalSignature,
    /// A CA certificate was presented as the card's certificate.
    #[error("a CA certificate cannot be a card certificate")]
    CaCertificate,
    /// The card certificate breaks the end-entity profile: serial zero or longer than 20 octets,
    /// empty subject, keyCertSign/cRLSign, name constraints, an extension that does not parse, or
    /// a key other than RSA ≥ 2048 bits or EC P-256.
    #[error("card certificate profile: {0}")]
    Profile(String),
    /// An intermediate breaks the CA profile (empty subject, empty name constraints, an extension
    /// that does not parse) or there are more intermediates than allowed.
    #[error("intermediate CA certificate: {0}")]
    Intermediate(String),
    /// Any other path failure (bad signature on the chain, name constraints, path length, …).
    #[error("certificate chain is invalid: {0}")]
    Chain(String),
    /// Revocation check failed (revoked, or no fresh trustworthy CRL).
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// An anchor given in the configuration is not usable.
    #[error("trust anchor {index}: {reason}")]
    BadAnchor {
        /// Position in the configured list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A certificate that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedCert {
    /// SHA-256 of the DER.
    pub fingerprint: [u8; 32],
    /// Subject DN (RFC 4514 text).
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial, lower-case hex.
    pub serial_hex: String,
    /// Validity start (ms since epoch).
    pub not_before_ms: i64,
    /// Validity end (ms since epoch).
    pub not_after_ms: i64,
    /// Its public key.
    pub public_key: PublicKey,
    /// Index of the anchor it chains to, in configuration order.
    pub anchor_index: usize,
}

/// Signature algorithms accepted on certificates and CRLs.
pub static CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// The trust anchors, policy and revocation data of one card type and key.
pub struct AnchorSet {
    /// Card type.
    pub card_type: CardType,
    /// Card key.
    pub key: CardKey,
    anchors: Vec<TrustAnchor<'static>>,
    anchor_validity_secs: Vec<(i64, i64)>,
    anchor_key_ids: Vec<Option<Vec<u8>>>,
    anchor_issuer_keys: Vec<IssuerKey>,
    policy: CertPolicy,
    revocation: Arc<RevocationStore>,
    chain_cache: ChainCache,
}

impl std::fmt::Debug for AnchorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnchorSet")
            .field("card_type", &self.card_type)
            .field("key", &self.key)
            .field("anchors", &self.anchors.len())
            .field("policy", &self.policy)
            .field("chain_cache", &self.chain_cache.policy())
            .finish()
    }
}

impl AnchorSet {
    /// Builds a set from anchor certificates (DER).
    pub fn new(
        card_type: CardType,
        key: CardKey,
        anchors: Vec<Vec<u8>>,
        policy: CertPolicy,
        revocation: Arc<RevocationStore>,
    ) -> Result<AnchorSet, CertError> {
        let anchors_der: Vec<CertificateDer<'static>> =
            anchors.into_iter().map(CertificateDer::from).collect();
        let mut parsed = Vec::with_capacity(anchors_der.len());
        let mut validity = Vec::with_capacity(anchors_der.len());
        let mut key_ids = Vec::with_capacity(anchors_der.len());
        let mut issuer_keys = Vec::with_capacity(anchors_der.len());
        for (index, der) in anchors_der.iter().enumerate() {
            let anchor =
                webpki::anchor_from_trusted_cert(der).map_err(|e| CertError::BadAnchor {
                    index,
                    reason: e.to_string(),
                })?;
            parsed.push(anchor.to_owned());
            let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::BadAnchor {
                index,
                reason: e.to_string(),
            })?;
            if cert.subject().iter().next().is_none() {
                return Err(CertError::BadAnchor {
                    index,
                    reason: "empty subject".into(),
                });
            }
            match cert.basic_constraints() {
                Ok(Some(bc)) if bc.value.ca => {}
                _ => {
                    return Err(CertError::BadAnchor {
                        index,
                        reason: "not a CA certificate (basicConstraints cA=TRUE missing)".into(),
                    });
                }
            }
            validity.push((
                cert.validity().not_before.timestamp(),
                cert.validity().not_after.timestamp(),
            ));
            key_ids.push(
                cert.extensions()
                    .iter()
                    .find_map(|e| match e.parsed_extension() {
                        x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                            Some(k.0.to_vec())
                        }
                        _ => None,
                    }),
            );
            issuer_keys.push(IssuerKey::from_der(der).map_err(|e| CertError::BadAnchor {
                index,
                reason: e.to_string(),
            })?);
        }
        Ok(AnchorSet {
            card_type,
            key,
            anchors: parsed,
            anchor_validity_secs: validity,
            anchor_key_ids: key_ids,
            anchor_issuer_keys: issuer_keys,
            policy,
            revocation,
            chain_cache: ChainCache::new(ChainCachePolicy::default()),
        })
    }

    /// The same set with another chain cache policy (the cache starts empty).
    #[must_use]
    pub fn with_chain_cache(mut self, policy: ChainCachePolicy) -> AnchorSet {
        self.chain_cache = ChainCache::new(policy);
        self
    }

    /// Counters of the chain cache.
    pub fn chain_cache_stats(&self) -> ChainCacheStats {
        self.chain_cache.stats()
    }

    /// The revocation data of this set.
    pub fn revocation(&self) -> &Arc<RevocationStore> {
        &self.revocation
    }

    /// The policy.
    pub fn policy(&self) -> CertPolicy {
        self.policy
    }

    /// Validates `leaf_der` (with optional intermediates) at `now_ms`.
    ///
    /// Without intermediates (tokens carry none), a path validated earlier for the same DER is
    /// taken from the chain cache ([`super::chain_cache`]) when its entry is fresh and `now_ms` is
    /// inside the validity of the certificate and its anchor; the steps after the chain (profile,
    /// key usage, revocation against the CRLs loaded now) run every time.
    pub fn validate(
        &self,
        leaf_der: &[u8],
        intermediates: &[CertificateDer<'_>],
        now_ms: i64,
    ) -> Result<ValidatedCert, CertError> {
        let (rest, leaf) =
            X509Certificate::from_der(leaf_der).map_err(|e| CertError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Malformed(
                "trailing bytes after the certificate".into(),
            ));
        }
        let fingerprint = super::sha256(leaf_der);
        let cacheable = intermediates.is_empty();
        // 1–2. Chain and validity: remembered, or built now.
        let cached = if cacheable {
            self.chain_cache.get(&fingerprint, now_ms)
        } else {
            None
        };
        let path = match cached {
            Some(chain) => CheckedPath {
                anchor_index: chain.anchor_index,
                intermediate_issuer_der: None,
            },
            None => self.check_path(leaf_der, &leaf, intermediates, now_ms)?,
        };
        let anchor_index = path.anchor_index;
        check_leaf_profile(&leaf).map_err(CertError::Profile)?;
        // 3. Key usage.
        if self.policy.require_digital_signature {
            match leaf.key_usage() {
                Ok(Some(ku)) if ku.value.digital_signature() => {}
                Ok(_) => return Err(CertError::KeyUsageNotDigitalSignature),
                Err(e) => return Err(CertError::Malformed(e.to_string())),
            }
        }
        // 4. Revocation, against the CRL of the leaf's issuer (as loaded now).
        if self.policy.revocation == RevocationMode::Required {
            let intermediate_issuer = path
                .intermediate_issuer_der
                .as_deref()
                .map(IssuerKey::from_der)
                .transpose()?;
            let issuer = intermediate_issuer
                .as_ref()
                .unwrap_or(&self.anchor_issuer_keys[anchor_index]);
            self.revocation
                .check(leaf.raw_serial(), leaf.issuer().as_raw(), issuer, now_ms)?;
        }
        let not_before_secs = leaf.validity().not_before.timestamp();
        let not_after_secs = leaf.validity().not_after.timestamp();
        if cacheable && cached.is_none() {
            let (anchor_from, anchor_to) = self.anchor_validity_secs[anchor_index];
            self.chain_cache.insert(
                fingerprint,
                CachedChain {
                    anchor_index,
                    valid_from_secs: not_before_secs.max(anchor_from),
                    valid_to_secs: not_after_secs.min(anchor_to),
                },
                now_ms,
            );
        }
        Ok(ValidatedCert {
            fingerprint,
            subject: leaf.subject().to_string(),
            issuer: leaf.issuer().to_string(),
            serial_hex: hex_lower(leaf.raw_serial()),
            not_before_ms: not_before_secs.saturating_mul(1000),
            not_after_ms: not_after_secs.saturating_mul(1000),
            public_key: public_key(&leaf),
            anchor_index,
        })
    }

    /// Steps 1–2 without the cache: builds the path with webpki (chain signatures, validity of the
    /// leaf and intermediates, EKU), then checks the anchor's validity, the intermediates' profile
    /// and their number.
    fn check_path(
        &self,
        leaf_der: &[u8],
        leaf: &X509Certificate<'_>,
        intermediates: &[CertificateDer<'_>],
        now_ms: i64,
    ) -> Result<CheckedPath, CertError> {
        let leaf_cert_der = CertificateDer::from(leaf_der);
        let ee = webpki::EndEntityCert::try_from(&leaf_cert_der)
            .map_err(|e| CertError::Malformed(e.to_string()))?;
        // The anchor whose subjectKeyIdentifier equals the leaf's authorityKeyIdentifier is tried
        // alone first (one signature verification instead of one per same-named generation); the
        // signature decides either way, and on failure all anchors are tried.
        let time = crate::clock::unix_time(now_ms);
        let usage = self.policy.eku.usage();
        let hinted = authority_key_id(leaf).and_then(|aki| {
            self.anchor_key_ids
                .iter()
                .position(|ski| ski.as_deref() == Some(aki))
        });
        let first = hinted.and_then(|i| {
            ee.verify_for_usage(
                CHAIN_ALGORITHMS,
                &self.anchors[i..=i],
                intermediates,
                time,
                usage,
                None,
                None,
            )
            .ok()
        });
        let path = match first {
            Some(path) => path,
            None => ee
                .verify_for_usage(
                    CHAIN_ALGORITHMS,
                    &self.anchors,
                    intermediates,
                    time,
                    usage,
                    None,
                    None,
                )
                .map_err(map_webpki_error)?,
        };
        let anchor_index = self
            .anchors
            .iter()
            .position(|a| std::ptr::eq(a, path.anchor()))
            .ok_or_else(|| CertError::Chain("path ends at an unknown anchor".into()))?;
        // Second granularity, as webpki compares the other certificates.
        let (anchor_from, anchor_to) = self.anchor_validity_secs[anchor_index];
        let now_secs = now_ms.div_euclid(1000);
        if now_secs < anchor_from || now_secs > anchor_to {
            return Err(CertError::AnchorOutsideValidity);
        }
        let mut intermediates_used = 0;
        for der in path.intermediate_certificates().map(|c| c.der()) {
            intermediates_used += 1;
            let (_, ica) = X509Certificate::from_der(&der)
                .map_err(|e| CertError::Intermediate(e.to_string()))?;
            check_intermediate_profile(&ica).map_err(CertError::Intermediate)?;
        }
        if self
            .policy
            .max_intermediates
            .is_some_and(|max| intermediates_used > max)
        {
            return Err(CertError::Intermediate(format!(
                "{intermediates_used} intermediates, at most {:?} allowed",
                self.policy.max_intermediates
            )));
        }
        let issuer_raw = leaf.issuer().as_raw();
        let intermediate_issuer_der = path
            .intermediate_certificates()
            .map(|c| c.der())
            .find(|der| {
                X509Certificate::from_der(der)
                    .map(|(_, c)| c.subject().as_raw() == issuer_raw)
                    .unwrap_or(false)
            })
            .map(|der| der.to_vec());
        Ok(CheckedPath {
            anchor_index,
            intermediate_issuer_der,
        })
    }
}

/// The outcome of steps 1–2.
struct CheckedPath {
    /// Index of the anchor the path ends at.
    anchor_index: usize,
    /// The intermediate on the path named as the leaf's issuer, if any.
    intermediate_issuer_der: Option<Vec<u8>>,
}

/// The keyIdentifier of a certificate's authorityKeyIdentifier.
fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })
}

/// End-entity rules webpki leaves out (RFC 5280 §4.1.2.2, §4.1.2.6, §4.2.1.3, §4.2.1.10) and the
/// keys a token can use.
fn check_leaf_profile(leaf: &X509Certificate<'_>) -> Result<(), String> {
    use x509_parser::extensions::ParsedExtension;
    let serial = leaf.raw_serial();
    if serial.len() > 20 {
        return Err("serial number longer than 20 octets".into());
    }
    if serial.iter().all(|b| *b == 0) {
        return Err("serial number is zero".into());
    }
    if leaf.subject().iter().next().is_none() {
        return Err("empty subject".into());
    }
    if let Ok(Some(ku)) = leaf.key_usage()
        && (ku.value.key_cert_sign() || ku.value.crl_sign())
    {
        return Err("keyCertSign or cRLSign in an end-entity certificate".into());
    }
    for ext in leaf.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::NameConstraints(_) => {
                return Err("name constraints in an end-entity certificate".into());
            }
            ParsedExtension::AuthorityKeyIdentifier(_)
            | ParsedExtension::SubjectKeyIdentifier(_)
                if ext.critical =>
            {
                return Err("key identifier extension marked critical".into());
            }
            ParsedExtension::ParseError { error } => {
                return Err(format!(
                    "extension {} does not parse: {error}",
                    ext.oid.to_id_string()
                ));
            }
            _ => {}
        }
    }
    match leaf.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa))
            if rsa.key_size() >= 2048 && modulus_bits(rsa.modulus).is_multiple_of(8) =>
        {
            Ok(())
        }
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
            Err(format!("RSA key of {} bits", modulus_bits(rsa.modulus)))
        }
        _ => match public_key(leaf) {
            PublicKey::EcP256(_) => Ok(()),
            PublicKey::Rsa(_) => Err("RSA key does not parse".into()),
            PublicKey::Other(what) => Err(format!("unsupported key type {what}")),
        },
    }
}

/// CA rules for intermediates webpki leaves out (RFC 5280 §4.1.2.6, §4.2.1.10).
fn check_intermediate_profile(ica: &X509Certificate<'_>) -> Result<(), String> {
    use x509_parser::extensions::ParsedExtension;
    if ica.subject().iter().next().is_none() {
        return Err("empty subject".into());
    }
    let mut has_ski = false;
    for ext in ica.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(_)
            | ParsedExtension::SubjectKeyIdentifier(_)
                if ext.critical =>
            {
                return Err("key identifier extension marked critical".into());
            }
            ParsedExtension::SubjectKeyIdentifier(_) => has_ski = true,
            ParsedExtension::NameConstraints(_) | ParsedExtension::PolicyConstraints(_)
                if !ext.critical =>
            {
                return Err("name or policy constraints not marked critical".into());
            }
            ParsedExtension::NameConstraints(nc)
                if nc.permitted_subtrees.as_ref().is_none_or(Vec::is_empty)
                    && nc.excluded_subtrees.as_ref().is_none_or(Vec::is_empty) =>
            {
                return Err("name constraints without permitted or excluded subtrees".into());
            }
            ParsedExtension::ParseError { error } => {
                return Err(format!(
                    "extension {} does not parse: {error}",
                    ext.oid.to_id_string()
                ));
            }
            _ => {}
        }
    }
    if !has_ski {
        return Err("no subjectKeyIdentifier".into());
    }
    Ok(())
}

/// Bit length of a big-endian modulus.
fn modulus_bits(modulus: &[u8]) -> usize {
    let trimmed: &[u8] = match modulus.iter().position(|b| *b != 0) {
        Some(i) => &modulus[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

fn public_key(cert: &X509Certificate<'_>) -> PublicKey {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        PublicKey::Rsa(spki.subject_public_key.data.to_vec())
    } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => PublicKey::EcP256(spki.subject_public_key.data.to_vec()),
            Some(c) => PublicKey::Other(format!("EC {}", c.to_id_string())),
            None => PublicKey::Other("EC without named curve".into()),
        }
    } else {
        PublicKey::Other(alg.to_id_string())
    }
}

fn map_webpki_error(e: webpki::Error) -> CertError {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => CertError::Expired,
        E::CertNotValidYet { .. } => CertError::NotYetValid,
        // A same-named anchor whose key did not sign it is just as untrusted as no anchor.
        E::UnknownIssuer | E::InvalidSignatureForPublicKey => CertError::UntrustedIssuer,
        E::RequiredEkuNotFoundContext(_) => CertError::WrongExtendedKeyUsage,
        E::CaUsedAsEndEntity => CertError::CaCertificate,
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertError::Malformed(e.to_string()),
        other => CertError::Chain(format!("{other:?}")),
    }
}

/// Lower-case hex.
pub fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
