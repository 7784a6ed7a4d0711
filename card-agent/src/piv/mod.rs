//! PIV card client, NIST SP 800-73-4 Part 2 (card commands, §3) with the data model of Part 1
//! (§3 data objects, Table 3 container ids, Table 4b key references) and SP 800-78-4 algorithms.
//!
//! Commands used: SELECT (§3.1.1), GET DATA (§3.1.2), VERIFY (§3.2.1; without data it reads the
//! retry counter and spends nothing; `P1=FF` logs out), CHANGE REFERENCE DATA (§3.2.2), GENERAL
//! AUTHENTICATE (§3.2.4: management-key mutual authentication, ECDSA signing), PUT DATA
//! (§3.3.2), GENERATE ASYMMETRIC KEY PAIR (§3.3.3), and Yubico's SET MANAGEMENT KEY.
//!
//! [`Piv`] is typestated like [`crate::jpki::Jpki`]: signing exists only on
//! `Piv<_, PinVerified>`, which only [`Piv::verify_pin`] returns. PIN safety is the JPKI rule set
//! (security scenarios A1–A8): the counter is read with an empty VERIFY first, nothing is sent
//! when blocked, one try left needs [`LastTry::Confirmed`], a VERIFY is never re-sent, and after
//! a transport failure during VERIFY the counter is re-read.
//!
//! ```compile_fail
//! use card_agent::piv::{Piv, slot};
//! fn sign_without_pin<T: card_agent::transport::CardTransport>(t: T) {
//!     let mut card = Piv::select(t).unwrap();
//!     card.sign_p256(slot::AUTHENTICATION, &[0u8; 32]).unwrap();
//! }
//! ```

pub mod mgmt;
pub mod tlv;

use crate::apdu::{Command, ExchangeError, Status, StatusWord, exchange, ins};
use crate::pin::{self, LastTry, Pin, PinFormat, PinFormatError, VerifyOutcome};
use crate::transport::CardTransport;
pub use mgmt::ManagementKey;
use std::marker::PhantomData;
use zeroize::Zeroizing;

/// The PIV application identifier without version (SP 800-73-4 Part 2 §2.2), as SELECT sends it.
pub const PIV_AID: [u8; 9] = [0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00];

/// Key references (SP 800-73-4 Part 1 Table 4b).
pub mod slot {
    /// PIV Authentication key: the PHR holder key.
    pub const AUTHENTICATION: u8 = 0x9A;
    /// PIV Card Application Administration Key (management key).
    pub const MANAGEMENT: u8 = 0x9B;
    /// Digital Signature key.
    pub const SIGNATURE: u8 = 0x9C;
    /// Key Management key.
    pub const KEY_MANAGEMENT: u8 = 0x9D;
    /// Card Authentication key.
    pub const CARD_AUTHENTICATION: u8 = 0x9E;
    /// First retired key management key.
    pub const RETIRED_FIRST: u8 = 0x82;
    /// Last (20th) retired key management key.
    pub const RETIRED_LAST: u8 = 0x95;
    /// Number of retired key slots.
    pub const RETIRED_COUNT: usize = 20;

    /// The retired slot number `index` (0-based), if there is one.
    pub fn retired(index: usize) -> Option<u8> {
        (index < RETIRED_COUNT).then(|| RETIRED_FIRST + index as u8)
    }
}

/// Data object ids (SP 800-73-4 Part 1 Table 3), as 3-byte tags.
pub mod object {
    /// X.509 Certificate for Card Authentication (9E).
    pub const CARD_AUTH_CERT: u32 = 0x5FC101;
    /// Card Holder Unique Identifier.
    pub const CHUID: u32 = 0x5FC102;
    /// X.509 Certificate for PIV Authentication (9A).
    pub const AUTH_CERT: u32 = 0x5FC105;
    /// Security Object. Readable by anyone.
    pub const SECURITY_OBJECT: u32 = 0x5FC106;
    /// Card Capability Container.
    pub const CCC: u32 = 0x5FC107;
    /// Printed Information. Reading needs the PIN.
    pub const PRINTED_INFO: u32 = 0x5FC109;
    /// Key History (number of retired keys with certificates on the card).
    pub const KEY_HISTORY: u32 = 0x5FC10C;
    /// Retired X.509 Certificate for Key Management 1 (slot 82); 2–20 follow.
    pub const RETIRED_CERT_FIRST: u32 = 0x5FC10D;
    /// Objects that SP 800-73-4 lets only a PIN holder read.
    pub const PIN_TO_READ: [u32; 5] = [0x5FC103, 0x5FC108, 0x5FC109, 0x5FC121, 0x5FC123];
    /// Secure Messaging Certificate Signer. Readable by anyone.
    pub const SM_CERT_SIGNER: u32 = 0x5FC122;

    /// The certificate object of a key slot.
    pub fn cert_for_slot(slot: u8) -> Option<u32> {
        match slot {
            super::slot::AUTHENTICATION => Some(AUTH_CERT),
            super::slot::SIGNATURE => Some(0x5FC10A),
            super::slot::KEY_MANAGEMENT => Some(0x5FC10B),
            super::slot::CARD_AUTHENTICATION => Some(CARD_AUTH_CERT),
            s @ super::slot::RETIRED_FIRST..=super::slot::RETIRED_LAST => {
                Some(RETIRED_CERT_FIRST + u32::from(s - super::slot::RETIRED_FIRST))
            }
            _ => None,
        }
    }
}

/// SP 800-78-4 Table 6-2: ECC P-256.
pub const ALG_ECC_P256: u8 = 0x11;
/// PIN key reference (PIV Card Application PIN).
pub const PIN_REFERENCE: u8 = 0x80;
/// PUK key reference.
pub const PUK_REFERENCE: u8 = 0x81;
/// PIN tries a PHR card is issued with (the counter shown when the PIN is already verified).
pub const PIN_MAX_TRIES: u8 = 3;
/// Largest data object we read or write (Nitrokey's software PIV card takes 7,600 bytes).
pub const MAX_OBJECT_LEN: usize = 7_600;

/// PIV Card Application PIN: 6–8 digits (SP 800-73-4 Part 2 §2.4.3), padded with `FF` to 8 bytes.
#[derive(Debug, Clone, Copy)]
pub enum PivPinFormat {}

/// PIV PIN Unblocking Key: 6–8 digits, padded like the PIN.
#[derive(Debug, Clone, Copy)]
pub enum PivPukFormat {}

fn check_piv_secret(name: &'static str, pin: &[u8]) -> Result<(), PinFormatError> {
    if !(6..=8).contains(&pin.len()) {
        return Err(PinFormatError::Length {
            name,
            min: 6,
            max: 8,
            got: pin.len(),
        });
    }
    if !pin.iter().all(u8::is_ascii_digit) {
        return Err(PinFormatError::Charset {
            name,
            allowed: "the digits 0–9",
        });
    }
    Ok(())
}

impl PinFormat for PivPinFormat {
    const NAME: &'static str = "PHR card PIN (6–8 digits)";
    fn check(pin: &[u8]) -> Result<(), PinFormatError> {
        check_piv_secret(Self::NAME, pin)
    }
}

impl PinFormat for PivPukFormat {
    const NAME: &'static str = "PHR card PUK (6–8 digits)";
    fn check(pin: &[u8]) -> Result<(), PinFormatError> {
        check_piv_secret(Self::NAME, pin)
    }
}

/// The PHR card PIN.
pub type PivPin = Pin<PivPinFormat>;
/// The PHR card PUK.
pub type PivPuk = Pin<PivPukFormat>;

/// Whether two PINs (or PUKs) are the same, without exposing them (constant time).
pub fn same_secret<F: PinFormat>(a: &Pin<F>, b: &Pin<F>) -> bool {
    let (a, b) = (a.expose(), b.expose());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The 8-byte `FF`-padded reference data of a PIN or PUK (SP 800-73-4 Part 2 §2.4.3).
fn padded<F: PinFormat>(pin: &Pin<F>) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0xFF; 8]);
    let bytes = pin.expose();
    out[..bytes.len()].copy_from_slice(bytes);
    out
}

/// Typestate: the PIV application is selected, no PIN verified in this session.
#[derive(Debug)]
pub enum Selected {}
/// Typestate: the PIN was verified; the private keys may sign.
#[derive(Debug)]
pub enum PinVerified {}

pub use crate::pin::PinState;

/// Every way a PIV operation ends without its result.
#[derive(Debug, thiserror::Error)]
pub enum PivError {
    /// SELECT of the PIV application answered `6A82`.
    #[error("not a PIV card: the PIV application is absent")]
    NotPiv,
    /// The PIN is blocked. Known beforehand, no VERIFY was sent.
    #[error("the PIN is blocked; unblock it with the PUK")]
    PinBlocked,
    /// Only one try is left and the caller did not confirm; nothing was sent.
    #[error("one PIN try left: a wrong PIN would block the card; confirm to continue")]
    LastTryNeedsConfirmation,
    /// VERIFY answered `63Cx`: wrong PIN, x tries left (x > 0).
    #[error("wrong PIN: {tries_left} tries left")]
    WrongPin {
        /// Tries left after this one.
        tries_left: u8,
    },
    /// CHANGE REFERENCE DATA of the PUK (or with the PUK) failed: wrong PUK.
    #[error("wrong PUK: {tries_left} tries left")]
    WrongPuk {
        /// Tries left.
        tries_left: u8,
    },
    /// The transport failed while a VERIFY was under way. Not re-sent; the counter was re-read.
    #[error(
        "the card connection failed during PIN verification ({source}); tries left now: {tries_left:?}"
    )]
    VerifyInterrupted {
        /// Counter re-read after the failure (`None` when that failed too).
        tries_left: Option<PinState>,
        /// The failure.
        source: ExchangeError,
    },
    /// The management key was refused (the card is not in the state the caller assumed).
    #[error("the card refused the management key ({sw})")]
    ManagementKeyRefused {
        /// Status word of the failed step.
        sw: StatusWord,
    },
    /// The card's answer to our challenge was wrong: not the card we think, or not the key.
    #[error("the card failed management-key mutual authentication")]
    CardAuthenticationFailed,
    /// `6982`: the operation needs the PIN or the management key.
    #[error("{during}: security status not satisfied (6982)")]
    SecurityNotSatisfied {
        /// The step.
        during: &'static str,
    },
    /// `6A84`: the card's storage is full.
    #[error("{during}: the card is out of memory (6A84)")]
    OutOfMemory {
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
    /// A response that is not what SP 800-73-4 says.
    #[error("{what}: {reason}")]
    Malformed {
        /// What was read.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The transport failed, or the response had no status word.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

impl From<crate::transport::TransportError> for PivError {
    fn from(e: crate::transport::TransportError) -> Self {
        PivError::Exchange(ExchangeError::Transport(e))
    }
}

fn status_error(during: &'static str, sw: StatusWord) -> PivError {
    match sw.meaning() {
        Status::SecurityNotSatisfied => PivError::SecurityNotSatisfied { during },
        Status::Blocked => PivError::PinBlocked,
        _ if sw == StatusWord::NOT_ENOUGH_MEMORY => PivError::OutOfMemory { during },
        _ => PivError::CardStatus { during, sw },
    }
}

fn malformed(what: &'static str, reason: impl Into<String>) -> PivError {
    PivError::Malformed {
        what,
        reason: reason.into(),
    }
}

/// The PIV application on a card, in state `S`.
pub struct Piv<T: CardTransport, S = Selected> {
    transport: T,
    state: PhantomData<S>,
}

impl<T: CardTransport> Piv<T, Selected> {
    /// Selects the PIV application. Returns the application property template's algorithms too.
    pub fn select(mut transport: T) -> Result<Self, PivError> {
        select_piv(&mut transport)?;
        Ok(Piv {
            transport,
            state: PhantomData,
        })
    }

    /// Verifies the PIN, once, with the JPKI safety rules (see the module documentation).
    pub fn verify_pin(
        mut self,
        pin: &PivPin,
        last_try: LastTry,
    ) -> Result<Piv<T, PinVerified>, PivError> {
        let before = self.pin_state()?;
        let data = padded(pin);
        let verify = Command::new(0x00, ins::VERIFY, 0x00, PIN_REFERENCE)
            .with_data(data.as_slice())
            .sensitive();
        match pin::verify_once(
            &mut self.transport,
            before,
            last_try,
            &verify,
            reread_pin_state,
        ) {
            VerifyOutcome::Verified => Ok(Piv {
                transport: self.transport,
                state: PhantomData,
            }),
            VerifyOutcome::WrongPin { tries_left } => Err(PivError::WrongPin { tries_left }),
            VerifyOutcome::Blocked => Err(PivError::PinBlocked),
            VerifyOutcome::LastTryNeedsConfirmation => Err(PivError::LastTryNeedsConfirmation),
            VerifyOutcome::Interrupted { tries_left, source } => {
                Err(PivError::VerifyInterrupted { tries_left, source })
            }
            VerifyOutcome::Status(sw) => Err(status_error("VERIFY", sw)),
        }
    }
}

impl<T: CardTransport, S> Piv<T, S> {
    /// Reads the PIN counter without spending a try (VERIFY without data).
    pub fn pin_state(&mut self) -> Result<PinState, PivError> {
        query_pin_state(&mut self.transport)
    }

    /// Reads a data object; `None` when the card does not have it (`6A82`).
    pub fn get_data(&mut self, tag: u32) -> Result<Option<Vec<u8>>, PivError> {
        let mut tag_bytes = Vec::new();
        tlv::push_tag(&mut tag_bytes, tag);
        let get = Command::new(0x00, ins::GET_DATA, 0x3F, 0xFF)
            .with_data(tlv::encode(0x5C, &tag_bytes))
            .with_le(256);
        let response = exchange(&mut self.transport, &get)?;
        match response.sw.meaning() {
            Status::Ok => {}
            Status::NotFound => return Ok(None),
            _ => return Err(status_error("GET DATA", response.sw)),
        }
        if response.data.is_empty() {
            return Ok(None);
        }
        let inner = tlv::parse_single(&response.data, 0x53)
            .map_err(|e| malformed("data object", format!("{tag:06X}: {e}")))?;
        Ok(Some(inner.to_vec()))
    }

    /// Authenticates with the management key (mutual: the card proves it has the key too).
    pub fn authenticate_admin(&mut self, key: &ManagementKey) -> Result<(), PivError> {
        let alg = key.algorithm();
        let step1 = Command::new(0x00, ins::GENERAL_AUTHENTICATE, alg, slot::MANAGEMENT)
            .with_data([0x7C, 0x02, 0x80, 0x00])
            .with_le(256);
        let r = exchange(&mut self.transport, &step1)?;
        if !r.is_ok() {
            return Err(PivError::ManagementKeyRefused { sw: r.sw });
        }
        let dyn_auth = tlv::parse_single(&r.data, 0x7C)
            .map_err(|e| malformed("management key witness", e.to_string()))?;
        let witness = tlv::find(dyn_auth, 0x80)
            .map_err(|e| malformed("management key witness", e.to_string()))?
            .ok_or_else(|| malformed("management key witness", "no witness (80)"))?;
        let decrypted = Zeroizing::new(
            key.decrypt_block(witness)
                .ok_or_else(|| malformed("management key witness", "not one cipher block"))?,
        );
        let mut challenge = Zeroizing::new(vec![0u8; key.block_len()]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut challenge);
        let mut inner = Zeroizing::new(Vec::new());
        tlv::push(&mut inner, 0x80, &decrypted);
        tlv::push(&mut inner, 0x81, &challenge);
        let step2 = Command::new(0x00, ins::GENERAL_AUTHENTICATE, alg, slot::MANAGEMENT)
            .with_data(tlv::encode(0x7C, &inner))
            .with_le(256)
            .sensitive();
        let r = exchange(&mut self.transport, &step2)?;
        if !r.is_ok() {
            return Err(PivError::ManagementKeyRefused { sw: r.sw });
        }
        let dyn_auth = tlv::parse_single(&r.data, 0x7C)
            .map_err(|e| malformed("management key response", e.to_string()))?;
        let response = tlv::find(dyn_auth, 0x82)
            .map_err(|e| malformed("management key response", e.to_string()))?
            .ok_or_else(|| malformed("management key response", "no response (82)"))?;
        let expected = key
            .encrypt_block(&challenge)
            .ok_or_else(|| malformed("management key response", "bad block"))?;
        if expected.as_slice() != response {
            return Err(PivError::CardAuthenticationFailed);
        }
        Ok(())
    }

    /// Writes a data object (needs the management key). `content` goes inside tag `53`.
    pub fn put_data(&mut self, tag: u32, content: &[u8]) -> Result<(), PivError> {
        if content.len() > MAX_OBJECT_LEN {
            return Err(PivError::OutOfMemory { during: "PUT DATA" });
        }
        let mut tag_bytes = Vec::new();
        tlv::push_tag(&mut tag_bytes, tag);
        let mut data = tlv::encode(0x5C, &tag_bytes);
        tlv::push(&mut data, 0x53, content);
        let mut put = Command::new(0x00, ins::PUT_DATA, 0x3F, 0xFF).with_data(data);
        if object::PIN_TO_READ.contains(&tag) {
            // Objects only readable after VERIFY PIN may hold secrets (the PHR profile keeps the
            // management key in 5FC109): never log them, wipe them after sending.
            put = put.sensitive();
        }
        let r = exchange(&mut self.transport, &put)?;
        if r.is_ok() {
            Ok(())
        } else {
            Err(status_error("PUT DATA", r.sw))
        }
    }

    /// Generates a P-256 key pair in `key_slot` (needs the management key); returns the public key.
    pub fn generate_p256(&mut self, key_slot: u8) -> Result<p256::PublicKey, PivError> {
        let gen_cmd = Command::new(0x00, ins::GENERATE_ASYMMETRIC_KEY_PAIR, 0x00, key_slot)
            .with_data([0xAC, 0x03, 0x80, 0x01, ALG_ECC_P256])
            .with_le(256);
        let r = exchange(&mut self.transport, &gen_cmd)?;
        if !r.is_ok() {
            return Err(status_error("GENERATE ASYMMETRIC KEY PAIR", r.sw));
        }
        let template = tlv::parse_single(&r.data, 0x7F49)
            .map_err(|e| malformed("generated public key", e.to_string()))?;
        let point = tlv::find(template, 0x86)
            .map_err(|e| malformed("generated public key", e.to_string()))?
            .ok_or_else(|| malformed("generated public key", "no EC point (86)"))?;
        p256::PublicKey::from_sec1_bytes(point)
            .map_err(|_| malformed("generated public key", "not a P-256 point"))
    }

    /// Replaces the management key (Yubico `SET MANAGEMENT KEY`; needs the current one).
    pub fn set_management_key(&mut self, new: &ManagementKey) -> Result<(), PivError> {
        let mut data = Zeroizing::new(vec![new.algorithm(), slot::MANAGEMENT]);
        data.push(new.bytes().len() as u8);
        data.extend_from_slice(new.bytes());
        let cmd = Command::new(0x00, 0xFF, 0xFF, 0xFF)
            .with_data(data.as_slice())
            .sensitive();
        let r = exchange(&mut self.transport, &cmd)?;
        if r.is_ok() {
            Ok(())
        } else {
            Err(status_error("SET MANAGEMENT KEY", r.sw))
        }
    }

    /// Changes the PIN (CHANGE REFERENCE DATA with the current PIN; a wrong one costs a try).
    pub fn change_pin(&mut self, old: &PivPin, new: &PivPin) -> Result<(), PivError> {
        match self.pin_state()? {
            PinState::Blocked | PinState::TriesLeft(0) => return Err(PivError::PinBlocked),
            PinState::TriesLeft(1) => return Err(PivError::LastTryNeedsConfirmation),
            _ => {}
        }
        self.change_reference(PIN_REFERENCE, &padded(old), &padded(new))
            .map_err(|e| match e {
                PivError::WrongPuk { tries_left } => PivError::WrongPin { tries_left },
                other => other,
            })
    }

    /// Changes the PUK (CHANGE REFERENCE DATA with the current PUK).
    pub fn change_puk(&mut self, old: &PivPuk, new: &PivPuk) -> Result<(), PivError> {
        self.change_reference(PUK_REFERENCE, &padded(old), &padded(new))
    }

    fn change_reference(&mut self, reference: u8, old: &[u8], new: &[u8]) -> Result<(), PivError> {
        let mut data = Zeroizing::new(old.to_vec());
        data.extend_from_slice(new);
        let cmd = Command::new(0x00, ins::CHANGE_REFERENCE_DATA, 0x00, reference)
            .with_data(data.as_slice())
            .sensitive();
        let r = exchange(&mut self.transport, &cmd)?;
        match r.sw.meaning() {
            Status::Ok => Ok(()),
            Status::RetriesLeft(0) | Status::Blocked => Err(PivError::PinBlocked),
            Status::RetriesLeft(tries_left) => Err(PivError::WrongPuk { tries_left }),
            _ => Err(status_error("CHANGE REFERENCE DATA", r.sw)),
        }
    }

    /// Gives the transport back. Call [`Piv::logout`] first if a PIN was verified.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Forgets the verified PIN on the card (`00 20 FF 80`). Some cards keep a verified PIN
    /// across reconnects; ending every session with this is the only portable way.
    pub fn logout(mut self) -> Result<Piv<T, Selected>, PivError> {
        let cmd = Command::new(0x00, ins::VERIFY, 0xFF, PIN_REFERENCE);
        let r = exchange(&mut self.transport, &cmd)?;
        if !r.is_ok() {
            return Err(status_error("logout", r.sw));
        }
        Ok(Piv {
            transport: self.transport,
            state: PhantomData,
        })
    }

    /// Raw access to the transport (tests, and OpenSC-style probing).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }
}

impl<T: CardTransport> Piv<T, PinVerified> {
    /// Signs a SHA-256 digest with the P-256 key in `key_slot` (GENERAL AUTHENTICATE, `81` =
    /// challenge); returns the DER ECDSA signature as the card gives it.
    pub fn sign_p256(&mut self, key_slot: u8, digest: &[u8; 32]) -> Result<Vec<u8>, PivError> {
        let mut inner = Vec::with_capacity(40);
        tlv::push(&mut inner, 0x82, &[]);
        tlv::push(&mut inner, 0x81, digest);
        let cmd = Command::new(0x00, ins::GENERAL_AUTHENTICATE, ALG_ECC_P256, key_slot)
            .with_data(tlv::encode(0x7C, &inner))
            .with_le(256);
        let r = exchange(&mut self.transport, &cmd)?;
        if !r.is_ok() {
            return Err(status_error("GENERAL AUTHENTICATE (sign)", r.sw));
        }
        let dyn_auth =
            tlv::parse_single(&r.data, 0x7C).map_err(|e| malformed("signature", e.to_string()))?;
        let sig = tlv::find(dyn_auth, 0x82)
            .map_err(|e| malformed("signature", e.to_string()))?
            .ok_or_else(|| malformed("signature", "no response (82)"))?;
        if sig.is_empty() {
            return Err(malformed("signature", "empty"));
        }
        Ok(sig.to_vec())
    }
}

fn select_piv<T: CardTransport + ?Sized>(transport: &mut T) -> Result<(), PivError> {
    let select = Command::new(0x00, ins::SELECT, 0x04, 0x00)
        .with_data(PIV_AID)
        .with_le(256);
    let response = exchange(transport, &select)?;
    match response.sw.meaning() {
        Status::Ok => Ok(()),
        Status::NotFound => Err(PivError::NotPiv),
        _ => Err(status_error("SELECT PIV", response.sw)),
    }
}

fn query_pin_state<T: CardTransport + ?Sized>(transport: &mut T) -> Result<PinState, PivError> {
    let query = Command::new(0x00, ins::VERIFY, 0x00, PIN_REFERENCE);
    let response = exchange(transport, &query)?;
    PinState::from_status(response.sw).ok_or_else(|| status_error("PIN retry counter", response.sw))
}

/// After a failed VERIFY exchange: select again (the card may have been reset) and read the
/// counter. Sends no PIN.
fn reread_pin_state<T: CardTransport + ?Sized>(transport: &mut T) -> Option<PinState> {
    select_piv(transport).ok()?;
    query_pin_state(transport).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_factory_pin_and_puk_are_valid_piv_secrets() {
        use crate::virtual_card::piv::{DEFAULT_PIN, DEFAULT_PUK};
        assert!(PivPin::parse(DEFAULT_PIN).is_ok());
        assert!(PivPuk::parse(DEFAULT_PUK).is_ok());
    }

    #[test]
    fn piv_pin_is_six_to_eight_digits_and_padded() {
        for good in ["123456", "1234567", "12345678"] {
            assert!(PivPin::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "12345",
            "123456789",
            "12345a",
            "１２３４５６",
            "123 456",
        ] {
            assert!(PivPin::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let pin = PivPin::parse("123456").unwrap();
        assert_eq!(
            padded(&pin).as_slice(),
            &[b'1', b'2', b'3', b'4', b'5', b'6', 0xFF, 0xFF]
        );
    }

    #[test]
    fn slots_map_to_their_certificate_objects() {
        assert_eq!(object::cert_for_slot(0x9A), Some(0x5FC105));
        assert_eq!(object::cert_for_slot(0x82), Some(0x5FC10D));
        assert_eq!(object::cert_for_slot(0x95), Some(0x5FC120));
        assert_eq!(object::cert_for_slot(0x96), None);
        assert_eq!(slot::retired(19), Some(0x95));
        assert_eq!(slot::retired(20), None);
    }
}
