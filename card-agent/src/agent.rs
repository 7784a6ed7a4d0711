//! What the agent does with a card in a reader: identify it, show it, sign a challenge.
//!
//! Card type comes from SELECT of the application (JPKI AP), never from the ATR. Each operation
//! runs on any [`CardTransport`]: a PC/SC transaction or an in-process virtual card.

use crate::certinfo::CertificateSummary;
use crate::jpki::{Jpki, JpkiError, PinState};
use crate::pin::{JpkiAuthPin, JpkiAuthPinFormat, LastTry, PinReadError};
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
    /// No reader holds a card.
    #[error("no card in any reader")]
    NoCard,
    /// The person did not enter a usable PIN (nothing was sent to the card).
    #[error("PIN entry: {0}")]
    PinEntry(#[from] PinReadError),
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

/// What the person is asked when a PIN is needed.
#[derive(Debug, Clone, Copy)]
pub struct PinRequest<'a> {
    /// The web origin asking for the signature.
    pub origin: &'a str,
    /// Tries left on the card (read without spending one).
    pub tries_left: u8,
}

/// The person's answer.
pub struct PinAnswer {
    /// The PIN, format-checked.
    pub pin: JpkiAuthPin,
    /// Whether the person confirmed using the last try.
    pub last_try: LastTry,
}

/// The agent's own PIN entry (terminal, standard input, a pinpad): never the web page.
pub trait PinPrompt: Send + Sync {
    /// Asks for the PIN for one authentication.
    fn ask(&self, request: &PinRequest<'_>) -> Result<PinAnswer, PinReadError>;
}

/// What is known before the PIN is asked: the certificate and the counter.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The auth certificate, DER.
    pub certificate: Vec<u8>,
    /// Tries left (> 0: a blocked card ends in [`JpkiError::PinBlocked`]).
    pub tries_left: u8,
}

/// First half of an authentication: identify the card, read its certificate and PIN counter.
pub fn prepare_authentication<T: CardTransport>(transport: T) -> Result<Prepared, AgentError> {
    let mut jpki = match Jpki::select(transport) {
        Ok(jpki) => jpki,
        Err(JpkiError::NotJpki) => return Err(AgentError::NotSupported),
        Err(e) => return Err(e.into()),
    };
    let certificate = jpki.read_auth_certificate()?;
    let tries_left = match jpki.auth_pin_state()? {
        PinState::Blocked | PinState::TriesLeft(0) => return Err(JpkiError::PinBlocked.into()),
        PinState::TriesLeft(n) => n,
        PinState::Verified => crate::jpki::AUTH_PIN_MAX_TRIES,
    };
    Ok(Prepared {
        certificate,
        tries_left,
    })
}

/// Reads PINs as lines of standard input, one per request (automation and tests).
pub struct StdinPrompt {
    /// Whether a PIN may be used at one try left.
    pub confirm_last_try: bool,
}

impl PinPrompt for StdinPrompt {
    fn ask(&self, request: &PinRequest<'_>) -> Result<PinAnswer, PinReadError> {
        eprintln!(
            "PIN requested by {} ({} tries left): reading a line of standard input",
            request.origin, request.tries_left
        );
        let pin = crate::pin::read_pin_line::<JpkiAuthPinFormat>(&mut std::io::stdin().lock())?;
        let last_try = if self.confirm_last_try {
            LastTry::Confirmed
        } else {
            LastTry::Refuse
        };
        Ok(PinAnswer { pin, last_try })
    }
}

/// Asks on the agent's terminal without echo; at one try left the person must type `yes` first.
pub struct TerminalPrompt;

impl PinPrompt for TerminalPrompt {
    fn ask(&self, request: &PinRequest<'_>) -> Result<PinAnswer, PinReadError> {
        eprintln!(
            "{} がマイナンバーカードでの本人確認を求めています。",
            request.origin
        );
        let mut last_try = LastTry::Refuse;
        if request.tries_left == 1 {
            let answer = rpassword::prompt_password(
                "残り1回です。間違えるとカードがロックされます。続けるには yes と入力: ",
            )
            .map_err(PinReadError::Io)?;
            if answer.trim() == "yes" {
                last_try = LastTry::Confirmed;
            }
        }
        let prompt = format!("利用者証明用 PIN（4桁、残り{}回）: ", request.tries_left);
        let pin = crate::pin::prompt_pin::<JpkiAuthPinFormat>(&prompt)?;
        Ok(PinAnswer { pin, last_try })
    }
}

/// The card in a PC/SC reader, for the localhost API.
#[cfg(feature = "pcsc")]
pub struct PcscCardService {
    /// Reader to use; `None`: the first one holding a card.
    pub reader: Option<String>,
}

#[cfg(feature = "pcsc")]
impl PcscCardService {
    fn connect(&self) -> Result<crate::transport::pcsc::PcscCard, AgentError> {
        let ctx = crate::transport::pcsc::PcscContext::establish()?;
        let reader = match &self.reader {
            Some(reader) => reader.clone(),
            None => ctx.first_reader_with_card()?.ok_or(AgentError::NoCard)?,
        };
        Ok(ctx.connect(&reader)?)
    }
}

#[cfg(feature = "pcsc")]
impl crate::local_api::CardService for PcscCardService {
    fn status(&self) -> Result<CardInfo, AgentError> {
        self.connect()?.transaction(|tx| read_card_info(tx))
    }

    fn authenticate(
        &self,
        prompt: &dyn PinPrompt,
        origin: &str,
        signed_data: &[u8],
    ) -> Result<SignedChallenge, AgentError> {
        let mut card = self.connect()?;
        // No PC/SC transaction is held while the person types (Windows ends idle ones after 5 s);
        // `sign_challenge` reads the counter again before its VERIFY.
        let prepared = card.transaction(|tx| prepare_authentication(tx))?;
        let answer = prompt.ask(&PinRequest {
            origin,
            tries_left: prepared.tries_left,
        })?;
        let signed = card.transaction(|tx| {
            sign_challenge(
                tx,
                &answer.pin,
                answer.last_try,
                signed_data,
                Some(&prepared.certificate),
            )
        })?;
        card.disconnect()?;
        Ok(signed)
    }
}
