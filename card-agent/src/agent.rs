//! What the agent does with a card in a reader: identify it, show it, sign a challenge.
//!
//! Card type comes from SELECT of the application (JPKI AP), never from the ATR. Each operation
//! runs on any [`CardTransport`]: a PC/SC transaction or an in-process virtual card.

use crate::certinfo::CertificateSummary;
use crate::jpki::{Jpki, JpkiError, PinState};
use crate::pin::{JpkiAuthPin, LastTry};
use crate::transport::CardTransport;
use sha2::{Digest, Sha256};

/// The kind of card in a reader.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum CardInfo {
    /// A My Number card (JPKI AP present).
    MyNumber {
        /// Token label from EF 0006 (`JPKIAPICCTOKEN2`).
        token: String,
        /// The 利用者証明用 certificate.
        auth_certificate: Box<CertificateSummary>,
        /// The auth PIN counter (read without spending a try).
        auth_pin: PinState,
    },
    /// A card this agent has no application for.
    Unknown,
}

/// Why a card could not be shown or used.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The JPKI application failed.
    #[error(transparent)]
    Jpki(#[from] JpkiError),
    /// The card's certificate does not parse.
    #[error(transparent)]
    Certificate(#[from] crate::certinfo::CertificateParseError),
    /// The reader or card could not be reached (e.g. starting the PC/SC transaction).
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// The card is not one this operation works with.
    #[error("this card is not a My Number card")]
    NotSupported,
}

/// Identifies the card and reads what can be read without a PIN (spends no PIN try).
pub fn read_card_info<T: CardTransport>(transport: T) -> Result<CardInfo, AgentError> {
    let mut jpki = match Jpki::select(transport) {
        Ok(jpki) => jpki,
        Err(JpkiError::NotJpki) => return Ok(CardInfo::Unknown),
        Err(e) => return Err(e.into()),
    };
    let token = jpki.read_token_label()?;
    let cert = jpki.read_auth_certificate()?;
    let auth_pin = jpki.auth_pin_state()?;
    Ok(CardInfo::MyNumber {
        token,
        auth_certificate: Box::new(CertificateSummary::from_der(&cert)?),
        auth_pin,
    })
}

/// A challenge signed by the card.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignedChallenge {
    /// JWS name of the signature algorithm (`RS256`: RSA PKCS#1 v1.5 with SHA-256).
    pub algorithm: &'static str,
    /// The signer's certificate, DER.
    #[serde(serialize_with = "as_base64")]
    pub certificate: Vec<u8>,
    /// The signature over SHA-256(challenge).
    #[serde(serialize_with = "as_base64")]
    pub signature: Vec<u8>,
}

fn as_base64<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Signs SHA-256(`challenge`) with the My Number card's auth key after one PIN verification.
///
/// `known_certificate` is the auth certificate read earlier from the same card (the card has not
/// left the reader since): it saves reading the certificate EF again, which leaves 6 APDUs
/// (SELECT AP, SELECT PIN EF, counter, VERIFY, SELECT key EF, sign). A wrong one only makes the
/// signature fail verification at the gateway.
pub fn sign_challenge<T: CardTransport>(
    transport: T,
    pin: &JpkiAuthPin,
    last_try: LastTry,
    challenge: &[u8],
    known_certificate: Option<&[u8]>,
) -> Result<SignedChallenge, AgentError> {
    let mut jpki = Jpki::select(transport)?;
    let certificate = match known_certificate {
        Some(cert) => cert.to_vec(),
        None => jpki.read_auth_certificate()?,
    };
    let mut verified = jpki.verify_auth_pin(pin, last_try)?;
    let digest: [u8; 32] = Sha256::digest(challenge).into();
    let signature = verified.sign_sha256(&digest)?;
    Ok(SignedChallenge {
        algorithm: "RS256",
        certificate,
        signature,
    })
}
