//! The rules of card sign-in (DESIGN §4), independent of HTTP:
//! - [`token`]: the token's wire format and the bytes the card signs;
//! - [`signature`]: RS256 (JPKI) and ES256 (PHR card) verification with `ring`;
//! - [`certs`]: trust anchors per card type and key, chain, validity, key usage;
//! - [`chain_cache`]: bounded, short-lived memory of validated certificate paths;
//! - [`revocation`]: CRLs from files or URLs, fail closed;
//! - [`verifier`]: the whole pure validation, in DESIGN order;
//! - [`nonce`], [`session`]: challenge nonces and browser sessions;
//! - [`auth`]: sign-in, person binding, linking a renewed card, sign-out;
//! - [`audit`]: the hash-chained audit log's records, canonical bytes, signed checkpoints and
//!   verification;
//! - [`oauth`], [`partner_auth`]: partner client assertions (`private_key_jwt`) and access tokens
//!   bound to the partner's mTLS certificate;
//! - [`consent`], [`access`], [`rate_limit`]: consent decisions, partner reads within consent,
//!   per-partner rate limits;
//! - [`import`]: delivered files into stored FHIR resources;
//! - [`privacy`]: the worker's export and erasure of their own record (K1/K2).

pub mod access;
pub mod audit;
pub mod auth;
pub mod certs;
pub mod chain_cache;
pub mod consent;
pub mod consent_desk;
pub mod import;
pub mod nonce;
pub mod oauth;
pub mod origin;
pub mod partner_auth;
pub mod privacy;
pub mod rate_limit;
pub mod revocation;
pub mod session;
pub mod signature;
pub mod token;
pub mod trail;
pub mod verifier;

/// SHA-256.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Fills `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>(
    rng: &ring::rand::SystemRandom,
) -> Result<[u8; N], ring::error::Unspecified> {
    ring::rand::generate::<[u8; N]>(rng).map(|r| r.expose())
}
