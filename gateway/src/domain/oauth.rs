//! Partner authentication (DESIGN §6; security-scenarios F): OAuth 2.0 client credentials with
//! `private_key_jwt` client assertions (RFC 7523 §2.2 and §3; OpenID Connect Core §9) under the
//! FAPI 2.0 Security Profile rules (§5.4: PS256 or ES256 only, RSA ≥ 2048 bits), and access tokens
//! bound to the client's mutual-TLS certificate (RFC 8705 §3, `x5t#S256`).
//!
//! Pure: the caller supplies the clock, the client's registered keys and certificate fingerprints,
//! and records the assertion's `jti` (single use) in the store before issuing a token.

use super::sha256;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashSet;

/// RFC 7523 §2.2 `client_assertion_type`.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest assertion read (bytes).
pub const MAX_ASSERTION_LEN: usize = 8 * 1024;
/// Longest `jti` and client id accepted.
pub const MAX_ID_LEN: usize = 256;
/// Smallest RSA modulus accepted (FAPI 2.0 §5.4.1).
pub const MIN_RSA_BITS: usize = 2048;

/// Time rules for assertions (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssertionTimes {
    /// `exp` may lie at most this far ahead (SMART: 5 minutes).
    pub max_lifetime_secs: i64,
    /// `iat` and `nbf` may lie at most this far ahead (FAPI 2.0 §5.3.2.1 clock skew: 10–60 s).
    pub max_future_skew_secs: i64,
}

impl Default for AssertionTimes {
    fn default() -> Self {
        AssertionTimes {
            max_lifetime_secs: 300,
            max_future_skew_secs: 60,
        }
    }
}

/// What the gateway accepts as an assertion's audience: its issuer identifier or its token
/// endpoint URL, as a single string (an array is refused: audience injection, RFC 7523bis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionAudience {
    /// The authorization server's issuer identifier.
    pub issuer: String,
    /// The token endpoint URL.
    pub token_endpoint: String,
}

/// A partner as registered: its keys for assertions and its mTLS certificates.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    /// `client_id`.
    pub client_id: String,
    /// Public keys for `private_key_jwt`.
    pub jwks: JwkSet,
    /// SHA-256 of each registered client certificate (DER).
    pub certificate_sha256: Vec<[u8; 32]>,
    /// Scopes the client may be granted (SMART v2 `system/…` scopes).
    pub scopes: Vec<String>,
}

/// Why a client assertion was refused. Every variant leads to the same `invalid_client` answer;
/// the variant goes to the audit log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Empty, too long, or not a compact JWS with a JSON header and claims.
    #[error("client assertion is malformed: {0}")]
    Malformed(String),
    /// `alg` is not PS256 or ES256 (e.g. `none`, HS256, RS256).
    #[error("client assertion algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// No registered key matches the `kid` and algorithm.
    #[error("no registered key matches the assertion")]
    NoMatchingKey,
    /// The matching RSA key is shorter than [`MIN_RSA_BITS`].
    #[error("registered RSA key has {0} bits")]
    WeakKey(usize),
    /// The signature does not verify.
    #[error("client assertion signature is invalid")]
    BadSignature,
    /// A required claim is missing or has the wrong type.
    #[error("client assertion claim {0} missing or invalid")]
    Claim(&'static str),
    /// `iss` or `sub` is not the client id.
    #[error("client assertion iss/sub is not the client")]
    WrongClient,
    /// `aud` is not this server (or is an array).
    #[error("client assertion audience is not this server")]
    WrongAudience,
    /// `exp` has passed.
    #[error("client assertion has expired")]
    Expired,
    /// `exp` lies more than the allowed lifetime ahead.
    #[error("client assertion lives too long")]
    LifetimeTooLong,
    /// `iat` or `nbf` lies too far in the future.
    #[error("client assertion is from the future")]
    FromTheFuture,
}

/// An assertion that verified; its `jti` has still to be recorded as used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The client.
    pub client_id: String,
    /// The assertion's unique id.
    pub jti: String,
    /// Its expiry (s since epoch): how long the `jti` must be remembered.
    pub expires_at_secs: i64,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
    aud: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    jti: Option<serde_json::Value>,
}

/// Verifies a `private_key_jwt` client assertion of `client` at `now_secs`.
pub fn verify_client_assertion(
    assertion: &str,
    client: &RegisteredClient,
    audience: &AssertionAudience,
    times: AssertionTimes,
    now_secs: i64,
) -> Result<VerifiedAssertion, AssertionError> {
    if assertion.is_empty() || assertion.len() > MAX_ASSERTION_LEN {
        return Err(AssertionError::Malformed("length".into()));
    }
    let header_alg = raw_header_alg(assertion)?;
    let algorithm = match header_alg.as_str() {
        "PS256" => Algorithm::PS256,
        "ES256" => Algorithm::ES256,
        _ => return Err(AssertionError::AlgorithmNotAllowed(header_alg)),
    };
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| AssertionError::Malformed(e.to_string()))?;
    let key = select_key(&client.jwks, header.kid.as_deref(), algorithm)?;
    let decoding_key = DecodingKey::from_jwk(key).map_err(|_| AssertionError::NoMatchingKey)?;

    // Signature and algorithm only; every claim is checked below against our own clock.
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(assertion, &decoding_key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => AssertionError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                AssertionError::AlgorithmNotAllowed(header_alg.clone())
            }
            _ => AssertionError::Malformed(e.to_string()),
        })?
        .claims;

    let iss = string_claim(claims.iss.as_ref(), "iss")?;
    let sub = string_claim(claims.sub.as_ref(), "sub")?;
    if iss != client.client_id || sub != client.client_id {
        return Err(AssertionError::WrongClient);
    }
    match claims.aud.as_ref() {
        Some(serde_json::Value::String(aud))
            if *aud == audience.issuer || *aud == audience.token_endpoint => {}
        Some(_) => return Err(AssertionError::WrongAudience),
        None => return Err(AssertionError::Claim("aud")),
    }
    let jti = string_claim(claims.jti.as_ref(), "jti")?;
    let exp = time_claim(claims.exp.as_ref(), "exp")?.ok_or(AssertionError::Claim("exp"))?;
    let iat = time_claim(claims.iat.as_ref(), "iat")?.ok_or(AssertionError::Claim("iat"))?;
    let nbf = time_claim(claims.nbf.as_ref(), "nbf")?;
    if exp <= now_secs {
        return Err(AssertionError::Expired);
    }
    if exp > now_secs.saturating_add(times.max_lifetime_secs) {
        return Err(AssertionError::LifetimeTooLong);
    }
    let latest_start = now_secs.saturating_add(times.max_future_skew_secs);
    if iat > latest_start || nbf.is_some_and(|nbf| nbf > latest_start) {
        return Err(AssertionError::FromTheFuture);
    }
    Ok(VerifiedAssertion {
        client_id: client.client_id.clone(),
        jti: jti.to_owned(),
        expires_at_secs: exp,
    })
}

/// The header's `alg` as written, read before `jsonwebtoken` (whose `Algorithm` has no `none`)
/// so that a refusal names what was sent.
fn raw_header_alg(assertion: &str) -> Result<String, AssertionError> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header_b64 = assertion
        .split('.')
        .next()
        .ok_or_else(|| AssertionError::Malformed("no header".into()))?;
    let header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| AssertionError::Malformed("header is not base64url".into()))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|_| AssertionError::Malformed("header is not JSON".into()))?;
    match header.get("alg") {
        Some(serde_json::Value::String(alg)) => Ok(alg.clone()),
        _ => Err(AssertionError::Malformed("header has no alg".into())),
    }
}

fn select_key<'a>(
    jwks: &'a JwkSet,
    kid: Option<&str>,
    algorithm: Algorithm,
) -> Result<&'a Jwk, AssertionError> {
    let fits = |jwk: &&Jwk| match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::RSA(_), Algorithm::PS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        _ => false,
    };
    let mut candidates = jwks
        .keys
        .iter()
        .filter(|jwk| kid.is_none() || jwk.common.key_id.as_deref() == kid)
        .filter(fits);
    let key = candidates.next().ok_or(AssertionError::NoMatchingKey)?;
    if kid.is_none() && candidates.next().is_some() {
        // Several keys could match and the assertion names none: refuse rather than guess.
        return Err(AssertionError::NoMatchingKey);
    }
    if let AlgorithmParameters::RSA(rsa) = &key.algorithm {
        let bits = rsa_modulus_bits(&rsa.n)?;
        if bits < MIN_RSA_BITS {
            return Err(AssertionError::WeakKey(bits));
        }
    }
    Ok(key)
}

fn rsa_modulus_bits(n_b64url: &str) -> Result<usize, AssertionError> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let n = URL_SAFE_NO_PAD
        .decode(n_b64url)
        .map_err(|_| AssertionError::NoMatchingKey)?;
    let n = match n.iter().position(|&b| b != 0) {
        Some(first) => &n[first..],
        None => return Ok(0),
    };
    let leading = n.first().map_or(0, |b| b.leading_zeros() as usize);
    Ok(n.len() * 8 - leading)
}

fn string_claim<'a>(
    value: Option<&'a serde_json::Value>,
    name: &'static str,
) -> Result<&'a str, AssertionError> {
    match value {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => Ok(s),
        _ => Err(AssertionError::Claim(name)),
    }
}

fn time_claim(
    value: Option<&serde_json::Value>,
    name: &'static str,
) -> Result<Option<i64>, AssertionError> {
    match value {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(AssertionError::Claim(name)),
    }
}

/// Why an access token was refused at the resource server. All map to 401 `invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No `Authorization: Bearer` header (a token in the query string is never read).
    #[error("no access token")]
    Missing,
    /// Unknown or already purged.
    #[error("unknown access token")]
    Unknown,
    /// Past its expiry.
    #[error("access token has expired")]
    Expired,
    /// The connection has no client certificate, or another one than the token is bound to.
    #[error("access token is bound to another client certificate")]
    CertificateMismatch,
}

/// What the store keeps of an issued access token (the token itself only as its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBinding {
    /// The client it was issued to.
    pub client_id: String,
    /// `cnf.x5t#S256`: SHA-256 of the client certificate of the token request.
    pub certificate_sha256: [u8; 32],
    /// Granted scope.
    pub scope: String,
    /// Expiry (ms since epoch).
    pub expires_at_ms: i64,
}

/// The store key of an access token: its SHA-256, so a database leak yields no usable token.
pub fn access_token_hash(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
}

/// Checks a stored binding against the certificate of the connection presenting the token.
pub fn check_binding(
    binding: Option<TokenBinding>,
    presented_certificate_der: Option<&[u8]>,
    now_ms: i64,
) -> Result<TokenBinding, AccessError> {
    let binding = binding.ok_or(AccessError::Unknown)?;
    if binding.expires_at_ms <= now_ms {
        return Err(AccessError::Expired);
    }
    // A fingerprint of a certificate the client sends is not secret: a plain comparison is fine.
    let presented = presented_certificate_der.map(sha256);
    if presented != Some(binding.certificate_sha256) {
        return Err(AccessError::CertificateMismatch);
    }
    Ok(binding)
}

/// True when `certificate_der` is one of the client's registered mTLS certificates.
pub fn certificate_registered(client: &RegisteredClient, certificate_der: &[u8]) -> bool {
    let fingerprint = sha256(certificate_der);
    client.certificate_sha256.contains(&fingerprint)
}
