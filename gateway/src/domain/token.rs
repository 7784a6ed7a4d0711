//! The authentication token (DESIGN §4 step 3) and the bytes the card signs.
//!
//! Wire format, a JSON object with exactly these fields (after web-eid's `web-eid:1.0` token):
//! ```json
//! {"format": "iphr-auth:1", "certificate": "<base64 DER>", "algorithm": "RS256" | "ES256",
//!  "signature": "<base64>", "app_version": "<agent name and version>"}
//! ```
//! The card signs `SHA-256(origin) ‖ SHA-256(nonce)` (64 bytes; the nonce as the base64 text the
//! gateway handed out): RS256 = RSA PKCS#1 v1.5 with SHA-256 over those bytes (the JPKI card signs
//! the DigestInfo of their SHA-256); ES256 = ECDSA P-256 with SHA-256, signature as r ‖ s (64 bytes,
//! IEEE P1363, as in JWS). Hashing each part separately keeps (`example.com`, `.eu1234`) and
//! (`example.com.eu`, `1234`) apart (security-scenarios B12).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// The one supported `format`.
pub const TOKEN_FORMAT: &str = "iphr-auth:1";
/// Shortest token accepted (bytes of JSON), as web-eid.
pub const MIN_TOKEN_LEN: usize = 100;
/// Longest token accepted (bytes of JSON), as web-eid.
pub const MAX_TOKEN_LEN: usize = 10_000;
/// Longest `app_version`.
pub const MAX_APP_VERSION_LEN: usize = 200;

/// Signature algorithms of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// RSA PKCS#1 v1.5 with SHA-256 (JPKI 利用者証明用 key, RSA-2048).
    Rs256,
    /// ECDSA P-256 with SHA-256, r ‖ s (PHR card slot 9A).
    Es256,
}

impl SignatureAlgorithm {
    /// The JWS name.
    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::Rs256 => "RS256",
            SignatureAlgorithm::Es256 => "ES256",
        }
    }
}

/// A parsed token; nothing in it is trusted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthToken {
    /// The card's certificate (DER).
    pub certificate_der: Vec<u8>,
    /// The claimed algorithm.
    pub algorithm: SignatureAlgorithm,
    /// The signature.
    pub signature: Vec<u8>,
    /// The agent's self-description (logged, not trusted).
    pub app_version: String,
}

/// Why a token was refused before any cryptography (security-scenarios B8–B10).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Fewer than [`MIN_TOKEN_LEN`] bytes.
    #[error("token too short: {0} bytes")]
    TooShort(usize),
    /// More than [`MAX_TOKEN_LEN`] bytes.
    #[error("token too long: {0} bytes")]
    TooLong(usize),
    /// Not a JSON object with exactly the five string fields (missing, extra, wrong type).
    #[error("token is not the expected JSON object: {0}")]
    Malformed(String),
    /// `format` is not [`TOKEN_FORMAT`].
    #[error("unsupported token format {0:?}")]
    UnsupportedFormat(String),
    /// `algorithm` is not RS256 or ES256 (e.g. `none`, empty, HS256).
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// `certificate` is empty.
    #[error("certificate is empty")]
    CertificateEmpty,
    /// `certificate` is not base64.
    #[error("certificate is not base64")]
    CertificateNotBase64,
    /// `signature` is empty.
    #[error("signature is empty")]
    SignatureEmpty,
    /// `signature` is not base64.
    #[error("signature is not base64")]
    SignatureNotBase64,
    /// `app_version` is empty, too long or has control characters.
    #[error("app_version is invalid")]
    AppVersionInvalid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireToken {
    format: String,
    certificate: String,
    algorithm: String,
    signature: String,
    app_version: String,
}

impl AuthToken {
    /// Parses the token JSON.
    pub fn parse(bytes: &[u8]) -> Result<AuthToken, TokenError> {
        if bytes.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(bytes.len()));
        }
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong(bytes.len()));
        }
        let wire: WireToken =
            serde_json::from_slice(bytes).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if wire.format != TOKEN_FORMAT {
            return Err(TokenError::UnsupportedFormat(wire.format));
        }
        let algorithm = match wire.algorithm.as_str() {
            "RS256" => SignatureAlgorithm::Rs256,
            "ES256" => SignatureAlgorithm::Es256,
            _ => return Err(TokenError::UnsupportedAlgorithm(wire.algorithm)),
        };
        if wire.certificate.is_empty() {
            return Err(TokenError::CertificateEmpty);
        }
        let certificate_der = STANDARD
            .decode(wire.certificate.as_bytes())
            .map_err(|_| TokenError::CertificateNotBase64)?;
        if wire.signature.is_empty() {
            return Err(TokenError::SignatureEmpty);
        }
        let signature = STANDARD
            .decode(wire.signature.as_bytes())
            .map_err(|_| TokenError::SignatureNotBase64)?;
        if wire.app_version.is_empty()
            || wire.app_version.len() > MAX_APP_VERSION_LEN
            || wire.app_version.chars().any(char::is_control)
        {
            return Err(TokenError::AppVersionInvalid);
        }
        Ok(AuthToken {
            certificate_der,
            algorithm,
            signature,
            app_version: wire.app_version,
        })
    }

    /// Serialises a token (agents and tests).
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "format": TOKEN_FORMAT,
            "certificate": STANDARD.encode(&self.certificate_der),
            "algorithm": self.algorithm.name(),
            "signature": STANDARD.encode(&self.signature),
            "app_version": self.app_version,
        })
        .to_string()
    }
}

/// The 64 bytes the card signs: `SHA-256(origin) ‖ SHA-256(nonce)`.
pub fn signed_data(origin: &str, nonce: &str) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&super::sha256(origin.as_bytes()));
    out[32..].copy_from_slice(&super::sha256(nonce.as_bytes()));
    out
}

/// The SHA-256 digest that an RS256 card signs (as a DigestInfo): `SHA-256(signed_data)`.
pub fn digest_to_sign(origin: &str, nonce: &str) -> [u8; 32] {
    super::sha256(&signed_data(origin, nonce))
}
