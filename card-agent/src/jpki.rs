//! JPKI AP (公的個人認証AP) of the My Number card: the 利用者証明用 (user authentication) key.
//!
//! APDUs as in `shared/reference/domain.md` §5.1–5.2 (J-LIS JPKI card AP; OpenSC `card-jpki.c`):
//! SELECT the AP by AID, READ BINARY the DER certificate EFs, query the PIN retry counter with an
//! empty VERIFY (`63Cx`, spends no try), VERIFY the 4-digit PIN, and COMPUTE DIGITAL SIGNATURE
//! (`80 2A 00 80`) over a DigestInfo with the key EF selected.
//!
//! [`Jpki`] is typestated: signing exists only on `Jpki<_, AuthPinVerified>`, which only
//! [`Jpki::verify_auth_pin`] returns. This does not compile:
//!
//! ```compile_fail
//! use card_agent::jpki::Jpki;
//! fn sign_without_pin<T: card_agent::transport::CardTransport>(t: T) {
//!     let mut card = Jpki::select(t).unwrap();
//!     card.sign_sha256(&[0u8; 32]).unwrap();
//! }
//! ```

use crate::apdu::{Command, ExchangeError, Status, StatusWord, exchange, ins};
use crate::pin::{self, JpkiAuthPin, LastTry, VerifyOutcome};
use crate::transport::CardTransport;
use std::marker::PhantomData;

/// AID of the JPKI AP.
pub const JPKI_AID: [u8; 10] = [0xD3, 0x92, 0xF0, 0x00, 0x26, 0x01, 0x00, 0x00, 0x00, 0x01];

/// Elementary files of the JPKI AP.
pub mod ef {
    /// Token information (`JPKIAPICCTOKEN2` on a My Number card).
    pub const TOKEN_INFO: u16 = 0x0006;
    /// 利用者証明用証明書: readable without PIN.
    pub const AUTH_CERT: u16 = 0x000A;
    /// Its CA certificate (never a trust anchor).
    pub const AUTH_CA_CERT: u16 = 0x000B;
    /// The user-authentication private key.
    pub const AUTH_KEY: u16 = 0x0017;
    /// The user-authentication PIN (4 digits, 3 tries).
    pub const AUTH_PIN: u16 = 0x0018;
    /// 署名用証明書 (PIN required; holds name and address; not used by this system).
    pub const SIGN_CERT: u16 = 0x0001;
    /// Its CA certificate.
    pub const SIGN_CA_CERT: u16 = 0x0002;
    /// The signing private key.
    pub const SIGN_KEY: u16 = 0x001A;
    /// The signing password (6–16 upper-case alphanumerics, 5 tries).
    pub const SIGN_PIN: u16 = 0x001B;
}

/// Tries of the user-authentication PIN when it is fresh.
pub const AUTH_PIN_MAX_TRIES: u8 = 3;

/// Largest certificate EF we read (real ones are about 1.2 KiB).
pub const MAX_EF_LEN: usize = 8 * 1024;

/// DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1).
pub const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Typestate: the JPKI AP is selected, no PIN verified in this session.
#[derive(Debug)]
pub enum Selected {}
/// Typestate: the user-authentication PIN was verified; the auth key may sign.
#[derive(Debug)]
pub enum AuthPinVerified {}

pub use crate::pin::PinState;

/// Every way a JPKI operation ends without its result. Status words map as in `docs/card-status-words.md`.
#[derive(Debug, thiserror::Error)]
pub enum JpkiError {
    /// SELECT of the JPKI AP answered `6A82`: not a My Number card (or a card without JPKI).
    #[error("not a My Number card: the JPKI application is absent")]
    NotJpki,
    /// The PIN is blocked. Known beforehand, no VERIFY was sent.
    #[error("the PIN is blocked; only the municipal office can unlock it")]
    PinBlocked,
    /// Only one try is left and the caller did not confirm; nothing was sent.
    #[error("one try left: a wrong PIN would block the card; confirm to continue")]
    LastTryNeedsConfirmation,
    /// VERIFY answered `63Cx`: wrong PIN, x tries left (x > 0).
    #[error("wrong PIN: {tries_left} tries left")]
    WrongPin {
        /// Tries left after this one.
        tries_left: u8,
    },
    /// The transport failed while a VERIFY was under way. The VERIFY was not re-sent; the counter
    /// was re-read (`None` when that failed too).
    #[error(
        "the card connection failed during PIN verification ({source}); tries left now: {tries_left:?}"
    )]
    VerifyInterrupted {
        /// Counter re-read after the failure.
        tries_left: Option<PinState>,
        /// The failure.
        source: ExchangeError,
    },
    /// `6982`: the operation needs a verified PIN.
    #[error("{during}: a verified PIN is required (6982)")]
    SecurityNotSatisfied {
        /// The step.
        during: &'static str,
    },
    /// `6A82` for an elementary file.
    #[error("{during}: file not found (6A82)")]
    FileNotFound {
        /// The step.
        during: &'static str,
    },
    /// `6D00`: the card does not know the instruction.
    #[error("{during}: instruction not supported (6D00)")]
    InsNotSupported {
        /// The step.
        during: &'static str,
    },
    /// Any other ISO 7816-4 error or warning status word.
    #[error("{during}: card answered {sw}")]
    CardStatus {
        /// The step.
        during: &'static str,
        /// The status word.
        sw: StatusWord,
    },
    /// Bytes that are not an ISO 7816-4 status word (garbage).
    #[error("{during}: invalid status word {sw}")]
    InvalidStatus {
        /// The step.
        during: &'static str,
        /// What came back.
        sw: StatusWord,
    },
    /// File content that is not what the specification says (e.g. a certificate EF that is not DER).
    #[error("{what}: {reason}")]
    Malformed {
        /// What was read.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The transport failed, or the response had no status word (0 or 1 bytes).
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

impl From<crate::transport::TransportError> for JpkiError {
    fn from(e: crate::transport::TransportError) -> Self {
        JpkiError::Exchange(ExchangeError::Transport(e))
    }
}

fn status_error(during: &'static str, sw: StatusWord) -> JpkiError {
    match sw.meaning() {
        Status::SecurityNotSatisfied => JpkiError::SecurityNotSatisfied { during },
        Status::NotFound => JpkiError::FileNotFound { during },
        Status::InsNotSupported => JpkiError::InsNotSupported { during },
        Status::Blocked => JpkiError::PinBlocked,
        Status::Invalid => JpkiError::InvalidStatus { during, sw },
        _ => JpkiError::CardStatus { during, sw },
    }
}

/// The JPKI AP on a card, in state `S`.
pub struct Jpki<T: CardTransport, S = Selected> {
    transport: T,
    state: PhantomData<S>,
}

impl<T: CardTransport> Jpki<T, Selected> {
    /// Selects the JPKI AP. This, not the ATR, is what identifies a My Number card.
    pub fn select(mut transport: T) -> Result<Self, JpkiError> {
        select_ap(&mut transport)?;
        Ok(Jpki {
            transport,
            state: PhantomData,
        })
    }

    /// Verifies the user-authentication PIN, once.
    ///
    /// Reads the counter first: no VERIFY when it is blocked, none at one try left unless
    /// `last_try` is [`LastTry::Confirmed`]. Never retries. After a transport failure during the
    /// VERIFY the counter is re-read and the VERIFY is not re-sent.
    pub fn verify_auth_pin(
        mut self,
        pin: &JpkiAuthPin,
        last_try: LastTry,
    ) -> Result<Jpki<T, AuthPinVerified>, JpkiError> {
        let before = self.auth_pin_state()?;
        let verify = Command::new(0x00, ins::VERIFY, 0x00, 0x80)
            .with_data(pin.expose())
            .sensitive();
        match pin::verify_once(
            &mut self.transport,
            before,
            last_try,
            &verify,
            reread_pin_state,
        ) {
            VerifyOutcome::Verified => Ok(Jpki {
                transport: self.transport,
                state: PhantomData,
            }),
            VerifyOutcome::WrongPin { tries_left } => Err(JpkiError::WrongPin { tries_left }),
            VerifyOutcome::Blocked => Err(JpkiError::PinBlocked),
            VerifyOutcome::LastTryNeedsConfirmation => Err(JpkiError::LastTryNeedsConfirmation),
            VerifyOutcome::Interrupted { tries_left, source } => {
                Err(JpkiError::VerifyInterrupted { tries_left, source })
            }
            VerifyOutcome::Status(sw) => Err(status_error("VERIFY", sw)),
        }
    }
}

impl<T: CardTransport, S> Jpki<T, S> {
    /// Reads the 利用者証明用証明書 (DER). No PIN needed.
    pub fn read_auth_certificate(&mut self) -> Result<Vec<u8>, JpkiError> {
        read_der_ef(&mut self.transport, ef::AUTH_CERT, "auth certificate")
    }

    /// Reads the CA certificate of the auth certificate (DER). Informational, never an anchor.
    pub fn read_auth_ca_certificate(&mut self) -> Result<Vec<u8>, JpkiError> {
        read_der_ef(&mut self.transport, ef::AUTH_CA_CERT, "auth CA certificate")
    }

    /// Reads the token label (`JPKIAPICCTOKEN2` on a My Number card).
    pub fn read_token_label(&mut self) -> Result<String, JpkiError> {
        select_ef(&mut self.transport, ef::TOKEN_INFO, "SELECT token info")?;
        let label = read_binary(&mut self.transport, 0, 32, "READ token info")?;
        let text = String::from_utf8_lossy(&label);
        Ok(text.trim_end_matches([' ', '\0']).to_owned())
    }

    /// Reads the auth PIN counter without spending a try (empty VERIFY).
    pub fn auth_pin_state(&mut self) -> Result<PinState, JpkiError> {
        select_ef(&mut self.transport, ef::AUTH_PIN, "SELECT auth PIN")?;
        query_pin_state(&mut self.transport)
    }

    /// Gives the transport back (the card keeps its security state until reset).
    pub fn into_transport(self) -> T {
        self.transport
    }
}

impl<T: CardTransport> Jpki<T, AuthPinVerified> {
    /// Signs a DigestInfo with the user-authentication key (RSA PKCS#1 v1.5, padding on card).
    pub fn sign_digest_info(&mut self, digest_info: &[u8]) -> Result<Vec<u8>, JpkiError> {
        select_ef(&mut self.transport, ef::AUTH_KEY, "SELECT auth key")?;
        let sign = Command::new(0x80, ins::PSO, 0x00, 0x80)
            .with_data(digest_info)
            .with_le(256);
        let response = exchange(&mut self.transport, &sign)?;
        if !response.is_ok() {
            return Err(status_error("COMPUTE DIGITAL SIGNATURE", response.sw));
        }
        if response.data.is_empty() {
            return Err(JpkiError::Malformed {
                what: "signature",
                reason: "the card returned no signature".into(),
            });
        }
        Ok(response.data)
    }

    /// Signs a SHA-256 digest (wrapped in its DigestInfo).
    pub fn sign_sha256(&mut self, digest: &[u8; 32]) -> Result<Vec<u8>, JpkiError> {
        self.sign_digest_info(&sha256_digest_info(digest))
    }
}

/// DigestInfo for a SHA-256 digest.
pub fn sha256_digest_info(digest: &[u8; 32]) -> Vec<u8> {
    let mut info = Vec::with_capacity(SHA256_DIGEST_INFO_PREFIX.len() + 32);
    info.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
    info.extend_from_slice(digest);
    info
}

fn select_ap<T: CardTransport + ?Sized>(transport: &mut T) -> Result<(), JpkiError> {
    let select = Command::new(0x00, ins::SELECT, 0x04, 0x0C).with_data(JPKI_AID);
    let response = exchange(transport, &select)?;
    match response.sw.meaning() {
        Status::Ok => Ok(()),
        Status::NotFound => Err(JpkiError::NotJpki),
        _ => Err(status_error("SELECT JPKI AP", response.sw)),
    }
}

fn select_ef<T: CardTransport + ?Sized>(
    transport: &mut T,
    ef: u16,
    during: &'static str,
) -> Result<(), JpkiError> {
    let select = Command::new(0x00, ins::SELECT, 0x02, 0x0C).with_data(ef.to_be_bytes());
    let response = exchange(transport, &select)?;
    if response.is_ok() {
        Ok(())
    } else {
        Err(status_error(during, response.sw))
    }
}

fn query_pin_state<T: CardTransport + ?Sized>(transport: &mut T) -> Result<PinState, JpkiError> {
    let query = Command::new(0x00, ins::VERIFY, 0x00, 0x80);
    let response = exchange(transport, &query)?;
    PinState::from_status(response.sw).ok_or_else(|| status_error("PIN retry counter", response.sw))
}

/// After a failed VERIFY exchange: select again from scratch (the card may have been reset) and
/// read the counter. Sends no PIN.
fn reread_pin_state<T: CardTransport + ?Sized>(transport: &mut T) -> Option<PinState> {
    select_ap(transport).ok()?;
    select_ef(transport, ef::AUTH_PIN, "SELECT auth PIN").ok()?;
    query_pin_state(transport).ok()
}

fn read_binary<T: CardTransport + ?Sized>(
    transport: &mut T,
    offset: usize,
    len: usize,
    during: &'static str,
) -> Result<Vec<u8>, JpkiError> {
    let [hi, lo] = u16::try_from(offset)
        .ok()
        .filter(|o| *o <= 0x7FFF)
        .ok_or_else(|| JpkiError::Malformed {
            what: "READ BINARY",
            reason: format!("offset {offset} beyond 15 bits"),
        })?
        .to_be_bytes();
    let read = Command::new(0x00, ins::READ_BINARY, hi, lo).with_le(len);
    let response = exchange(transport, &read)?;
    match response.sw.meaning() {
        Status::Ok => Ok(response.data),
        Status::Warning if response.sw == StatusWord::END_OF_FILE => Ok(response.data),
        _ => Err(status_error(during, response.sw)),
    }
}

/// Reads an EF holding one DER object: its header first for the length, then the rest.
fn read_der_ef<T: CardTransport + ?Sized>(
    transport: &mut T,
    ef: u16,
    what: &'static str,
) -> Result<Vec<u8>, JpkiError> {
    select_ef(transport, ef, what)?;
    let mut content = read_binary(transport, 0, 4, what)?;
    let total =
        der_total_length(&content).map_err(|reason| JpkiError::Malformed { what, reason })?;
    if total > MAX_EF_LEN {
        return Err(JpkiError::Malformed {
            what,
            reason: format!("{total} bytes is too long"),
        });
    }
    content.truncate(total);
    let chunk = if transport.supports_extended_length() {
        MAX_EF_LEN
    } else {
        255
    };
    while content.len() < total {
        let want = chunk.min(total - content.len());
        let part = read_binary(transport, content.len(), want, what)?;
        if part.is_empty() {
            return Err(JpkiError::Malformed {
                what,
                reason: format!("file ends at {} of {total} bytes", content.len()),
            });
        }
        content.extend_from_slice(&part[..part.len().min(total - content.len())]);
    }
    Ok(content)
}

/// Total length (header + content) of the DER object whose first bytes are `header`.
pub fn der_total_length(header: &[u8]) -> Result<usize, String> {
    match header {
        [0x30, len, ..] if *len < 0x80 => Ok(2 + *len as usize),
        [0x30, 0x81, len, ..] => Ok(3 + *len as usize),
        [0x30, 0x82, hi, lo, ..] => Ok(4 + u16::from_be_bytes([*hi, *lo]) as usize),
        [0x30, ..] if header.len() < 4 => {
            Err(format!("DER header cut short ({} bytes)", header.len()))
        }
        [0x30, n, ..] => Err(format!("DER length form {n:#04x} not supported")),
        [] => Err("empty file".into()),
        [tag, ..] => Err(format!("not a DER SEQUENCE (tag {tag:#04x})")),
    }
}
