//! Challenge nonces (DESIGN §4 step 1; security-scenarios B2–B7): 32 bytes from the OS CSPRNG,
//! handed out as standard base64 (44 characters), stored with the session they were issued to and
//! their purpose, valid for 5 minutes, consumed once.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Random bytes per nonce.
pub const NONCE_BYTES: usize = 32;

/// What a nonce may be used for; a signature made for one purpose is refused for another (B13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoncePurpose {
    /// Sign-in.
    Login,
    /// Linking a renewed card to the signed-in person.
    Link,
}

impl NoncePurpose {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            NoncePurpose::Login => "login",
            NoncePurpose::Link => "link",
        }
    }
}

/// A new nonce, base64.
pub fn generate(rng: &ring::rand::SystemRandom) -> Result<String, ring::error::Unspecified> {
    let bytes: [u8; NONCE_BYTES] = super::random_bytes(rng)?;
    Ok(STANDARD.encode(bytes))
}
