//! Signature verification of the token (DESIGN §4 step 3) with `ring` (tools-and-figures.md: about
//! 45,000 RSA-2048 verifications/s per core against 5,300 for the `rsa` crate).

use super::token::SignatureAlgorithm;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The certificate's key does not fit the claimed algorithm (RS256 with an EC key, ES256 with
    /// an RSA key, another curve).
    #[error("the certificate's key ({key}) cannot make {algorithm} signatures")]
    KeyAlgorithmMismatch {
        /// The key type found.
        key: &'static str,
        /// The claimed algorithm.
        algorithm: &'static str,
    },
    /// The signature does not verify with the certificate's key over the expected bytes.
    #[error("signature does not verify")]
    Invalid,
}

/// A public key taken from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: the PKCS#1 `RSAPublicKey` DER.
    Rsa(Vec<u8>),
    /// ECDSA P-256: the uncompressed point.
    EcP256(Vec<u8>),
    /// Anything else (other curves, Ed25519, DSA…), by OID.
    Other(String),
}

impl PublicKey {
    fn kind(&self) -> &'static str {
        match self {
            PublicKey::Rsa(_) => "RSA",
            PublicKey::EcP256(_) => "EC P-256",
            PublicKey::Other(_) => "other",
        }
    }
}

/// Verifies `signature` over `message` with `key` for `algorithm`.
pub fn verify(
    algorithm: SignatureAlgorithm,
    key: &PublicKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let (alg, key_bytes): (&dyn ring::signature::VerificationAlgorithm, &[u8]) =
        match (algorithm, key) {
            (SignatureAlgorithm::Rs256, PublicKey::Rsa(k)) => {
                (&ring::signature::RSA_PKCS1_2048_8192_SHA256, k)
            }
            (SignatureAlgorithm::Es256, PublicKey::EcP256(k)) => {
                (&ring::signature::ECDSA_P256_SHA256_FIXED, k)
            }
            _ => {
                return Err(SignatureError::KeyAlgorithmMismatch {
                    key: key.kind(),
                    algorithm: algorithm.name(),
                });
            }
        };
    ring::signature::UnparsedPublicKey::new(alg, key_bytes)
        .verify(message, signature)
        .map_err(|_| SignatureError::Invalid)
}

/// ECDSA P-256 / SHA-256 with an ASN.1 DER signature (not used by tokens; for the Wycheproof DER
/// vectors and later consent documents).
pub fn verify_es256_der(
    point: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(message, signature)
        .map_err(|_| SignatureError::Invalid)
}
