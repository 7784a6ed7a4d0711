//! The whole token validation, pure and synchronous (DESIGN §4 step 3): parse → certificate
//! against the anchors of the card type the algorithm implies (chain → validity → key usage →
//! revocation) → signature over `SHA-256(origin) ‖ SHA-256(nonce)` rebuilt from the gateway's own
//! origin and the nonce it stored. Consuming the nonce is the caller's next step ([`super::auth`]).

use super::certs::{AnchorSet, CardKey, CardType, CertError, ValidatedCert};
use super::revocation::RefreshReport;
use super::signature::{self, SignatureError};
use super::token::{AuthToken, SignatureAlgorithm, TokenError, signed_data};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Structure (B8–B10).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No trust anchors are configured for the card type this algorithm implies.
    #[error("no trust anchors configured for {0:?} cards")]
    NoAnchors(CardType),
    /// Certificate (C1–C6).
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// Signature (B5, B9, B11).
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// A token whose certificate and signature are valid for the expected origin and nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCard {
    /// Card type.
    pub card_type: CardType,
    /// The certificate.
    pub certificate: ValidatedCert,
    /// The agent's self-description.
    pub app_version: String,
}

/// All configured anchor sets.
#[derive(Debug, Default)]
pub struct TokenVerifier {
    sets: Vec<AnchorSet>,
}

impl TokenVerifier {
    /// A verifier over these sets.
    pub fn new(sets: Vec<AnchorSet>) -> Self {
        TokenVerifier { sets }
    }

    /// The set of a card type and key.
    pub fn anchor_set(&self, card_type: CardType, key: CardKey) -> Option<&AnchorSet> {
        self.sets
            .iter()
            .find(|s| s.card_type == card_type && s.key == key)
    }

    /// The card type whose authentication key signs with `algorithm`.
    pub fn card_type_for(algorithm: SignatureAlgorithm) -> CardType {
        match algorithm {
            SignatureAlgorithm::Rs256 => CardType::Jpki,
            SignatureAlgorithm::Es256 => CardType::Phr,
        }
    }

    /// Parses and verifies a token (JSON bytes).
    pub fn verify_json(
        &self,
        token: &[u8],
        origin: &str,
        nonce: &str,
        now_ms: i64,
    ) -> Result<VerifiedCard, VerifyError> {
        let token = AuthToken::parse(token)?;
        self.verify(&token, origin, nonce, now_ms)
    }

    /// Verifies a parsed token.
    pub fn verify(
        &self,
        token: &AuthToken,
        origin: &str,
        nonce: &str,
        now_ms: i64,
    ) -> Result<VerifiedCard, VerifyError> {
        let card_type = Self::card_type_for(token.algorithm);
        let set = self
            .anchor_set(card_type, CardKey::Auth)
            .ok_or(VerifyError::NoAnchors(card_type))?;
        let certificate = set.validate(&token.certificate_der, &[], now_ms)?;
        signature::verify(
            token.algorithm,
            &certificate.public_key,
            &signed_data(origin, nonce),
            &token.signature,
        )?;
        Ok(VerifiedCard {
            card_type,
            certificate,
            app_version: token.app_version.clone(),
        })
    }

    /// Reloads the CRLs of every set.
    pub async fn refresh_revocation(&self) -> Vec<RefreshReport> {
        let mut reports = Vec::new();
        for set in &self.sets {
            reports.push(set.revocation().refresh().await);
        }
        reports
    }
}
