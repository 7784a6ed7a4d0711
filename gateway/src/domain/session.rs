//! Browser session ids (security-scenarios D1–D3): 256 bits from the OS CSPRNG, base64url without
//! padding (43 characters), sent only in a `__Host-` cookie (Secure, HttpOnly, SameSite=Strict);
//! the database keeps only their SHA-256. A new id is issued at sign-in (no fixation).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Random bytes per session id.
pub const SESSION_ID_BYTES: usize = 32;
/// Length of the encoded id.
pub const SESSION_ID_LEN: usize = 43;

/// A session id as the browser holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(…)")
    }
}

impl SessionId {
    /// A new random id.
    pub fn generate(rng: &ring::rand::SystemRandom) -> Result<SessionId, ring::error::Unspecified> {
        let bytes: [u8; SESSION_ID_BYTES] = super::random_bytes(rng)?;
        Ok(SessionId(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Accepts only well-formed ids (anything else is treated as no session).
    pub fn parse(s: &str) -> Option<SessionId> {
        (s.len() == SESSION_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| SessionId(s.to_owned()))
    }

    /// The cookie value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the database stores.
    pub fn hash(&self) -> [u8; 32] {
        super::sha256(self.0.as_bytes())
    }
}

/// Session timeouts in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Idle timeout (kiosk: 120 s).
    pub idle_ms: i64,
    /// Absolute timeout (12 h).
    pub absolute_ms: i64,
}

impl SessionPolicy {
    /// True when a session created at `created_ms` and last seen at `last_seen_ms` is over at `now_ms`.
    pub fn expired(&self, created_ms: i64, last_seen_ms: i64, now_ms: i64) -> bool {
        now_ms.saturating_sub(last_seen_ms) >= self.idle_ms
            || now_ms.saturating_sub(created_ms) >= self.absolute_ms
    }
}
