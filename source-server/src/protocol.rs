//! The iPHR source protocol, version 1 (`docs/source-protocol.md`): the wire types and encodings
//! both the gateway and a source use.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use card_agent::phr::consent::{Category, Unit};

/// Scheme of the `Authorization` header carrying a grant (§4).
pub const GRANT_SCHEME: &str = "iPHR-Grant";
/// Bytes of a nonce (§4).
pub const NONCE_BYTES: usize = 32;
/// Seconds within which an issued nonce must be redeemed.
pub const NONCE_TTL_SECS: i64 = 300;
/// Clock skew allowed on a grant's issue time.
pub const GRANT_SKEW_SECS: i64 = 300;
/// Largest page of a file list.
pub const MAX_PAGE: usize = 500;
/// Header with the SHA-256 of a file's bytes (RFC 9530).
pub const REPR_DIGEST: &str = "repr-digest";

/// Paths of the protocol's endpoints.
pub mod paths {
    /// `POST`: a fresh nonce.
    pub const NONCES: &str = "/v1/nonces";
    /// `POST`: register a card's key for a pseudonym.
    pub const LINKS: &str = "/v1/links";
    /// `GET`: the grant's person's files, paged.
    pub const FILES: &str = "/v1/files";
}

/// Which card key signed a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantAlg {
    /// PHR card: ECDSA P-256 by the service's own slot key.
    P256,
    /// My Number card: RSASSA-PKCS1-v1_5 SHA-256 by the 利用者証明用 key.
    Jpki,
}

impl GrantAlg {
    /// The header token (`p256`, `jpki`).
    pub fn as_str(self) -> &'static str {
        match self {
            GrantAlg::P256 => "p256",
            GrantAlg::Jpki => "jpki",
        }
    }
}

/// A grant as carried in `Authorization: iPHR-Grant <alg>.<grant>.<signature>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantHeader {
    /// The signing key's kind.
    pub alg: GrantAlg,
    /// The grant's canonical TLV encoding (tag `E2`).
    pub grant: Vec<u8>,
    /// The card's signature (DER ECDSA or PKCS#1 v1.5).
    pub signature: Vec<u8>,
}

/// Why an `Authorization` header is not a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedGrant {
    /// No `iPHR-Grant` scheme.
    #[error("the Authorization header does not use the {GRANT_SCHEME} scheme")]
    Scheme,
    /// Not `alg.grant.signature`.
    #[error("the grant is not <alg>.<grant>.<signature>")]
    Parts,
    /// An algorithm this version does not know.
    #[error("unknown grant algorithm {0:?}")]
    Alg(String),
    /// A part is not base64url without padding.
    #[error("the grant's {0} is not base64url")]
    Base64(&'static str),
    /// Longer than any grant can be.
    #[error("the grant header is longer than {0} bytes")]
    TooLong(usize),
}

/// Longest header accepted (a grant is under 700 bytes, an RSA-2048 signature 256).
pub const MAX_GRANT_HEADER: usize = 4096;

impl GrantHeader {
    /// The header value.
    pub fn to_header_value(&self) -> String {
        format!(
            "{GRANT_SCHEME} {}.{}.{}",
            self.alg.as_str(),
            URL_SAFE_NO_PAD.encode(&self.grant),
            URL_SAFE_NO_PAD.encode(&self.signature)
        )
    }

    /// Parses a header value (the grant itself is parsed by the verifier).
    pub fn parse(value: &str) -> Result<GrantHeader, MalformedGrant> {
        if value.len() > MAX_GRANT_HEADER {
            return Err(MalformedGrant::TooLong(MAX_GRANT_HEADER));
        }
        let rest = value
            .strip_prefix(GRANT_SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or(MalformedGrant::Scheme)?;
        let mut parts = rest.split('.');
        let (Some(alg), Some(grant), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MalformedGrant::Parts);
        };
        let alg = match alg {
            "p256" => GrantAlg::P256,
            "jpki" => GrantAlg::Jpki,
            other => return Err(MalformedGrant::Alg(other.chars().take(16).collect())),
        };
        let decode = |part: &str, what| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .filter(|b| !b.is_empty())
                .ok_or(MalformedGrant::Base64(what))
        };
        Ok(GrantHeader {
            alg,
            grant: decode(grant, "grant")?,
            signature: decode(signature, "signature")?,
        })
    }
}

/// `POST /v1/nonces` answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceResponse {
    /// base64url (no padding) of [`NONCE_BYTES`] random bytes.
    pub nonce: String,
    /// Unix seconds after which it can no longer be redeemed.
    pub expires_at: i64,
}

impl NonceResponse {
    /// The nonce's bytes.
    pub fn nonce_bytes(&self) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD
            .decode(&self.nonce)
            .ok()
            .filter(|b| b.len() == NONCE_BYTES)
    }
}

/// `POST /v1/links` body.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The one-time code the source gave the person.
    pub enrollment_code: String,
    /// The card's credential.
    pub credential: Credential,
}

/// The key a source registers for a pseudonym.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Credential {
    /// PHR card: the holder certificate and the service-binding certificate.
    Phr {
        /// Holder certificate (slot 9A), DER.
        #[serde(with = "b64")]
        holder_certificate: Vec<u8>,
        /// Service-binding certificate of this service's slot, DER.
        #[serde(with = "b64")]
        binding_certificate: Vec<u8>,
    },
    /// My Number card: the 利用者証明用 certificate.
    Jpki {
        /// DER.
        #[serde(with = "b64")]
        certificate: Vec<u8>,
    },
}

/// `POST /v1/links` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkResponse {
    /// The source's service id.
    pub service: String,
    /// The person's pseudonym at the source.
    pub pseudonym: String,
}

/// One file in a list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Id for `GET /v1/files/{id}`: 1–64 of `A-Z a-z 0-9 - _ .`.
    pub id: String,
    /// File name; its suffix tells the format.
    pub name: String,
    /// Categories of its records (`A.checkup` …).
    pub categories: Vec<String>,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lower-case hex.
    pub sha256: String,
}

impl FileEntry {
    /// The SHA-256, if well-formed.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        hex::decode(&self.sha256).ok()?.try_into().ok()
    }

    /// Whether the id is safe to put in a path.
    pub fn id_is_valid(id: &str) -> bool {
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }
}

/// `GET /v1/files` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileList {
    /// This page, oldest first.
    pub files: Vec<FileEntry>,
    /// Cursor for the next request (absent when nothing was ever listed).
    pub next_cursor: Option<String>,
    /// Whether another page follows now.
    pub more: bool,
}

/// Error codes (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed.
    BadRequest,
    /// The grant header is missing or malformed.
    GrantMalformed,
    /// The grant's signature does not verify with the registered key.
    BadSignature,
    /// The grant has expired.
    GrantExpired,
    /// The grant is issued in the future.
    GrantNotYetValid,
    /// The nonce was not issued here (or expired before it was redeemed).
    NonceUnknown,
    /// The nonce was redeemed by another grant.
    NonceReplayed,
    /// The grant names another service.
    WrongService,
    /// The grant names another audience than the TLS client's.
    WrongAudience,
    /// The pseudonym is not linked here.
    UnknownPerson,
    /// No such file for this person.
    NotFound,
    /// The pseudonym is linked to another key.
    AlreadyLinked,
    /// The enrollment code is unknown, used or expired.
    EnrollmentCodeInvalid,
    /// A certificate presented at linking does not verify.
    CertificateInvalid,
    /// The source is overloaded or down for a while.
    Unavailable,
    /// The source failed.
    Internal,
    /// A code this version does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status a source answers with.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BadRequest => 400,
            GrantMalformed | BadSignature | GrantExpired | GrantNotYetValid | NonceUnknown
            | NonceReplayed => 401,
            WrongService | WrongAudience | UnknownPerson => 403,
            NotFound => 404,
            AlreadyLinked | EnrollmentCodeInvalid | CertificateInvalid => 409,
            Unavailable => 503,
            Internal | Unknown => 500,
        }
    }

    /// The wire form.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            GrantMalformed => "grant_malformed",
            BadSignature => "bad_signature",
            GrantExpired => "grant_expired",
            GrantNotYetValid => "grant_not_yet_valid",
            NonceUnknown => "nonce_unknown",
            NonceReplayed => "nonce_replayed",
            WrongService => "wrong_service",
            WrongAudience => "wrong_audience",
            UnknownPerson => "unknown_person",
            NotFound => "not_found",
            AlreadyLinked => "already_linked",
            EnrollmentCodeInvalid => "enrollment_code_invalid",
            CertificateInvalid => "certificate_invalid",
            Unavailable => "unavailable",
            Internal => "internal",
            Unknown => "unknown",
        }
    }
}

/// Whether an HTTP status is worth retrying (§6).
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// An error answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The code.
    pub error: ErrorCode,
    /// For people.
    pub message: String,
}

/// `Repr-Digest` value for a SHA-256.
pub fn repr_digest(sha256: &[u8; 32]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(sha256))
}

/// The SHA-256 of a `Repr-Digest` value, if it has one.
pub fn parse_repr_digest(value: &str) -> Option<[u8; 32]> {
    value.split(',').find_map(|item| {
        let b64 = item
            .trim()
            .strip_prefix("sha-256=:")?
            .strip_suffix(':')?
            .to_owned();
        STANDARD.decode(b64).ok()?.try_into().ok()
    })
}

/// A gateway category (`A.checkup`) as a card category (`A:checkup`).
pub fn card_category(category: &str) -> Option<Category> {
    let (unit, kind) = category.split_once('.')?;
    Category::parse(&format!("{unit}:{kind}")).ok()
}

/// Whether a grant's scope covers a gateway category (a unit's `*` covers all of the unit).
pub fn scope_covers(scope: &[Category], category: &str) -> bool {
    let Some(wanted) = card_category(category) else {
        return false;
    };
    scope
        .iter()
        .any(|c| c.unit == wanted.unit && (c.kind == "*" || c.kind == wanted.kind))
}

/// The unit letter of a card category.
pub fn unit_letter(unit: Unit) -> char {
    match unit {
        Unit::A => 'A',
        Unit::B => 'B',
        Unit::C => 'C',
    }
}

/// Serde helper: bytes as standard base64.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    /// Serializes.
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }

    /// Deserializes.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_header_round_trips_and_refuses_malformed_values() {
        let h = GrantHeader {
            alg: GrantAlg::P256,
            grant: vec![0xE2, 0x00],
            signature: vec![1, 2, 3],
        };
        assert_eq!(GrantHeader::parse(&h.to_header_value()), Ok(h.clone()));
        let v = h.to_header_value();
        assert_eq!(
            GrantHeader::parse(&v.replacen("iPHR-Grant", "Bearer", 1)),
            Err(MalformedGrant::Scheme)
        );
        assert_eq!(
            GrantHeader::parse(&format!("{v}.x")),
            Err(MalformedGrant::Parts)
        );
        assert_eq!(
            GrantHeader::parse("iPHR-Grant rsa.AA.AA"),
            Err(MalformedGrant::Alg("rsa".into()))
        );
        assert_eq!(
            GrantHeader::parse("iPHR-Grant p256.A+A.AA"),
            Err(MalformedGrant::Base64("grant"))
        );
        assert_eq!(
            GrantHeader::parse("iPHR-Grant p256.AA."),
            Err(MalformedGrant::Base64("signature"))
        );
        assert_eq!(
            GrantHeader::parse(&format!("iPHR-Grant p256.{}.AA", "A".repeat(5000))),
            Err(MalformedGrant::TooLong(MAX_GRANT_HEADER))
        );
    }

    #[test]
    fn repr_digest_round_trips() {
        let d = [7u8; 32];
        assert_eq!(parse_repr_digest(&repr_digest(&d)), Some(d));
        assert_eq!(
            parse_repr_digest(&format!("sha-512=:AA==:, {}", repr_digest(&d))),
            Some(d)
        );
        assert_eq!(parse_repr_digest("sha-256=:AAAA:"), None);
    }

    #[test]
    fn scope_covers_exact_kinds_and_unit_wildcards_only() {
        let scope = vec![
            Category::parse("A:checkup").unwrap(),
            Category::parse("C:*").unwrap(),
        ];
        assert!(scope_covers(&scope, "A.checkup"));
        assert!(!scope_covers(&scope, "A.claims"));
        assert!(scope_covers(&scope, "C.interview"));
        assert!(!scope_covers(&scope, "B.attendance"));
        assert!(!scope_covers(&scope, "nonsense"));
    }

    #[test]
    fn unknown_error_codes_still_parse() {
        let b: ErrorBody = serde_json::from_str(r#"{"error":"teapot","message":"x"}"#).unwrap();
        assert_eq!(b.error, ErrorCode::Unknown);
        let b: ErrorBody =
            serde_json::from_str(r#"{"error":"nonce_replayed","message":"x"}"#).unwrap();
        assert_eq!(b.error.status(), 401);
        assert_eq!(b.error.as_str(), "nonce_replayed");
    }
}
