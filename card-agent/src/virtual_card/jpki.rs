//! A software My Number card: the JPKI AP as a real card answers it (domain.md §5.1–5.2).
//!
//! Real retry counters with lockout (auth PIN 3 tries, sign PIN 5; `63Cx` after a wrong PIN,
//! `63C0` on the exhausting one, `6984` afterwards), counters kept in the card directory across
//! restarts, PIN-protected signing (`6982` without it), the 4 certificate EFs, and proper status
//! words for everything else (OpenSC sends about 29 probes meant for other cards before it
//! recognises this one).

use super::VirtualCard;
use crate::apdu::{Command, StatusWord, ins};
use crate::jpki::{JPKI_AID, ef};
use crate::testca::{self, JpkiTestCa, KeyAndCert, MaterialError, Purpose};
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The ATR of a My Number card as OpenSC's JPKI table lists it.
pub const MY_NUMBER_ATR: [u8; 9] = [0x3B, 0xE0, 0x00, 0xFF, 0x81, 0x31, 0xFE, 0x45, 0x14];

/// Default test PINs of a newly made virtual card.
pub const DEFAULT_AUTH_PIN: &str = "1234";
/// Default signing password of a newly made virtual card.
pub const DEFAULT_SIGN_PIN: &str = "ABC123";

const AUTH_MAX_TRIES: u8 = 3;
const SIGN_MAX_TRIES: u8 = 5;
/// Largest input to `80 2A 00 80` for a 2048-bit key (k − 11).
const MAX_SIGN_INPUT: usize = 245;

/// Everything a virtual My Number card holds, as stored in its directory.
pub struct JpkiCardMaterial {
    /// 利用者証明用 key and certificate.
    pub auth: KeyAndCert,
    /// Its CA certificate (EF 000B).
    pub auth_ca_der: Vec<u8>,
    /// 署名用 key and certificate.
    pub sign: KeyAndCert,
    /// Its CA certificate (EF 0002).
    pub sign_ca_der: Vec<u8>,
    state: CardState,
    state_path: Option<PathBuf>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CardState {
    auth_pin: Zeroizing<String>,
    sign_pin: Zeroizing<String>,
    auth_tries_left: u8,
    sign_tries_left: u8,
}

impl JpkiCardMaterial {
    /// Loads the card in `card_dir`, or issues a new one there from `ca` (test PINs
    /// [`DEFAULT_AUTH_PIN`], [`DEFAULT_SIGN_PIN`]).
    pub fn load_or_issue(card_dir: &Path, ca: &JpkiTestCa) -> Result<Self, MaterialError> {
        testca::create_dir(card_dir)?;
        let not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365 * 5);
        let auth = testca::load_or_make(card_dir, "auth", |pair| {
            ca.issue(
                Purpose::Auth,
                &pair.key,
                &testca::opaque_subject_id(),
                not_after,
            )
        })?;
        let sign = testca::load_or_make(card_dir, "sign", |pair| {
            ca.issue(Purpose::Sign, &pair.key, "JPKI TEST SIGNER", not_after)
        })?;
        let state_path = card_dir.join("card.json");
        let state = if state_path.exists() {
            let text = Zeroizing::new(testca::read_to_string(&state_path)?);
            serde_json::from_str(&text).map_err(|e| MaterialError::Corrupt {
                path: state_path.clone(),
                reason: e.to_string(),
            })?
        } else {
            let fresh = CardState {
                auth_pin: Zeroizing::new(DEFAULT_AUTH_PIN.into()),
                sign_pin: Zeroizing::new(DEFAULT_SIGN_PIN.into()),
                auth_tries_left: AUTH_MAX_TRIES,
                sign_tries_left: SIGN_MAX_TRIES,
            };
            save_state(&state_path, &fresh)?;
            fresh
        };
        Ok(JpkiCardMaterial {
            auth,
            auth_ca_der: ca.auth.cert_der.clone(),
            sign,
            sign_ca_der: ca.sign.cert_der.clone(),
            state,
            state_path: Some(state_path),
        })
    }

    /// Loads the card in `dir/card`, issued by the test CA in `dir/ca` (both made if absent).
    pub fn load_or_create(dir: &Path) -> Result<Self, MaterialError> {
        let ca = JpkiTestCa::load_or_create(&dir.join("ca"))?;
        Self::load_or_issue(&dir.join("card"), &ca)
    }

    /// Gives both PINs all their tries back (as a municipal office would), and stores that.
    pub fn reset_counters(&mut self) -> Result<(), MaterialError> {
        self.state.auth_tries_left = AUTH_MAX_TRIES;
        self.state.sign_tries_left = SIGN_MAX_TRIES;
        self.persist()
    }

    fn persist(&self) -> Result<(), MaterialError> {
        match &self.state_path {
            Some(path) => save_state(path, &self.state),
            None => Ok(()),
        }
    }
}

fn save_state(path: &Path, state: &CardState) -> Result<(), MaterialError> {
    let json =
        Zeroizing::new(
            serde_json::to_vec_pretty(state).map_err(|e| MaterialError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })?,
        );
    testca::write_private(path, &json)
}

/// What the card has been asked, for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CardCounters {
    /// Command APDUs processed.
    pub apdus: u64,
    /// VERIFY commands that carried a PIN (each can cost a try).
    pub verify_with_pin: u64,
    /// VERIFY commands without data (counter queries).
    pub verify_queries: u64,
    /// Signatures computed.
    pub signatures: u64,
}

/// The virtual My Number card.
pub struct VirtualJpkiCard {
    material: JpkiCardMaterial,
    token_info: Vec<u8>,
    jpki_selected: bool,
    current_ef: Option<u16>,
    auth_verified: bool,
    sign_verified: bool,
    counters: CardCounters,
}

impl VirtualJpkiCard {
    /// A card holding `material`.
    pub fn new(material: JpkiCardMaterial) -> Self {
        let mut token_info = vec![b' '; 160];
        token_info[..15].copy_from_slice(b"JPKIAPICCTOKEN2");
        VirtualJpkiCard {
            material,
            token_info,
            jpki_selected: false,
            current_ef: None,
            auth_verified: false,
            sign_verified: false,
            counters: CardCounters::default(),
        }
    }

    /// The card stored in `dir` (made there on first use).
    pub fn open(dir: &Path) -> Result<Self, MaterialError> {
        Ok(Self::new(JpkiCardMaterial::load_or_create(dir)?))
    }

    /// The card's key material and certificates.
    pub fn material(&self) -> &JpkiCardMaterial {
        &self.material
    }

    /// Tries left on the auth PIN.
    pub fn auth_tries_left(&self) -> u8 {
        self.material.state.auth_tries_left
    }

    /// What the card has been asked so far.
    pub fn counters(&self) -> CardCounters {
        self.counters
    }

    /// Sets the auth PIN counter (tests: put the card at 1 try left, or blocked).
    pub fn set_auth_tries_left(&mut self, tries: u8) -> Result<(), MaterialError> {
        self.material.state.auth_tries_left = tries.min(AUTH_MAX_TRIES);
        self.material.persist()
    }

    /// Answers one command: response data and status word, or an error status word.
    fn handle(&mut self, command: &Command) -> Result<(Vec<u8>, StatusWord), StatusWord> {
        let ok = |data: Vec<u8>| (data, StatusWord::OK);
        match (command.cla, command.ins) {
            (cla, _) if cla & 0x0C != 0 => Err(StatusWord::SM_NOT_SUPPORTED),
            (cla, _) if cla & 0x03 != 0 => Err(StatusWord::CHANNEL_NOT_SUPPORTED),
            (cla, _) if cla & 0x10 != 0 => Err(StatusWord::CHAINING_NOT_SUPPORTED),
            (0x00, ins::SELECT) => self.select(command).map(|()| ok(Vec::new())),
            (0x00, ins::READ_BINARY) => self.read_binary(command),
            (0x00, ins::VERIFY) => self.verify(command).map(|()| ok(Vec::new())),
            (0x80, ins::PSO) => self.sign(command).map(ok),
            (0x00 | 0x80, _) => Err(StatusWord::INS_NOT_SUPPORTED),
            _ => Err(StatusWord::CLA_NOT_SUPPORTED),
        }
    }

    fn select(&mut self, command: &Command) -> Result<(), StatusWord> {
        match (command.p1, command.data()) {
            (0x04, aid) if aid == JPKI_AID => {
                self.jpki_selected = true;
                self.current_ef = None;
                Ok(())
            }
            (0x04, _) => Err(StatusWord::FILE_NOT_FOUND),
            (0x00, [0x3F, 0x00]) => {
                self.jpki_selected = false;
                self.current_ef = None;
                Ok(())
            }
            (0x00 | 0x02, [hi, lo]) if self.jpki_selected => {
                let id = u16::from_be_bytes([*hi, *lo]);
                if matches!(
                    id,
                    ef::TOKEN_INFO
                        | ef::AUTH_CERT
                        | ef::AUTH_CA_CERT
                        | ef::AUTH_KEY
                        | ef::AUTH_PIN
                        | ef::SIGN_CERT
                        | ef::SIGN_CA_CERT
                        | ef::SIGN_KEY
                        | ef::SIGN_PIN
                ) {
                    self.current_ef = Some(id);
                    Ok(())
                } else {
                    Err(StatusWord::FILE_NOT_FOUND)
                }
            }
            (0x00 | 0x02, _) => Err(StatusWord::FILE_NOT_FOUND),
            _ => Err(StatusWord::WRONG_P1P2),
        }
    }

    fn read_binary(&mut self, command: &Command) -> Result<(Vec<u8>, StatusWord), StatusWord> {
        if command.p1 & 0x80 != 0 {
            return Err(StatusWord::FUNCTION_NOT_SUPPORTED);
        }
        let content: &[u8] = match self.current_ef {
            Some(ef::TOKEN_INFO) => &self.token_info,
            Some(ef::AUTH_CERT) => &self.material.auth.cert_der,
            Some(ef::AUTH_CA_CERT) => &self.material.auth_ca_der,
            Some(ef::SIGN_CERT) if !self.sign_verified => {
                return Err(StatusWord::SECURITY_NOT_SATISFIED);
            }
            Some(ef::SIGN_CERT) => &self.material.sign.cert_der,
            Some(ef::SIGN_CA_CERT) => &self.material.sign_ca_der,
            Some(_) => return Err(StatusWord::INCOMPATIBLE_FILE),
            None => return Err(StatusWord::NO_CURRENT_EF),
        };
        let offset = u16::from_be_bytes([command.p1, command.p2]) as usize;
        if offset > content.len() {
            return Err(StatusWord::WRONG_PARAMETERS);
        }
        let want = command.le().unwrap_or(256);
        let end = content.len().min(offset + want);
        let data = content[offset..end].to_vec();
        // 6282: end of file reached before Le bytes; the data is still returned.
        let sw = if data.len() < want {
            StatusWord::END_OF_FILE
        } else {
            StatusWord::OK
        };
        Ok((data, sw))
    }

    fn verify(&mut self, command: &Command) -> Result<(), StatusWord> {
        if command.p1 != 0x00 || command.p2 != 0x80 {
            return Err(StatusWord::WRONG_P1P2);
        }
        let is_auth = match self.current_ef {
            Some(ef::AUTH_PIN) => true,
            Some(ef::SIGN_PIN) => false,
            _ => return Err(StatusWord::DATA_NOT_FOUND),
        };
        let state = &mut self.material.state;
        let (stored, tries, max, verified) = if is_auth {
            (
                &state.auth_pin,
                &mut state.auth_tries_left,
                AUTH_MAX_TRIES,
                &mut self.auth_verified,
            )
        } else {
            (
                &state.sign_pin,
                &mut state.sign_tries_left,
                SIGN_MAX_TRIES,
                &mut self.sign_verified,
            )
        };
        if command.data().is_empty() {
            self.counters.verify_queries += 1;
            return Err(StatusWord::new(0x63, 0xC0 | *tries));
        }
        self.counters.verify_with_pin += 1;
        if *tries == 0 {
            return Err(StatusWord::REFERENCE_DATA_UNUSABLE);
        }
        let matches = constant_time_eq(stored.as_bytes(), command.data());
        if matches {
            *tries = max;
            *verified = true;
        } else {
            *tries -= 1;
            *verified = false;
        }
        let tries_now = *tries;
        if self.material.persist().is_err() {
            tracing::error!("virtual card: cannot store the PIN counter");
            return Err(StatusWord::UNKNOWN_ERROR);
        }
        if matches {
            Ok(())
        } else {
            Err(StatusWord::new(0x63, 0xC0 | tries_now))
        }
    }

    fn sign(&mut self, command: &Command) -> Result<Vec<u8>, StatusWord> {
        if command.p1 != 0x00 || command.p2 != 0x80 {
            return Err(StatusWord::WRONG_P1P2);
        }
        let key: &RsaPrivateKey = match self.current_ef {
            Some(ef::AUTH_KEY) if self.auth_verified => &self.material.auth.key,
            Some(ef::SIGN_KEY) if self.sign_verified => &self.material.sign.key,
            Some(ef::AUTH_KEY | ef::SIGN_KEY) => return Err(StatusWord::SECURITY_NOT_SATISFIED),
            _ => return Err(StatusWord::CONDITIONS_NOT_SATISFIED),
        };
        if command.data().is_empty() || command.data().len() > MAX_SIGN_INPUT {
            return Err(StatusWord::WRONG_LENGTH);
        }
        let signature = key
            .sign(Pkcs1v15Sign::new_unprefixed(), command.data())
            .map_err(|_| StatusWord::UNKNOWN_ERROR)?;
        self.counters.signatures += 1;
        Ok(signature)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl VirtualCard for VirtualJpkiCard {
    fn atr(&self) -> Vec<u8> {
        MY_NUMBER_ATR.to_vec()
    }

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.counters.apdus += 1;
        let command = match Command::parse(apdu) {
            Ok(command) => command,
            Err(_) => return StatusWord::WRONG_LENGTH.0.to_be_bytes().to_vec(),
        };
        let command = if command.ins == ins::VERIFY {
            command.sensitive()
        } else {
            command
        };
        match self.handle(&command) {
            Ok((mut data, sw)) => {
                data.extend_from_slice(&sw.0.to_be_bytes());
                data
            }
            Err(sw) => sw.0.to_be_bytes().to_vec(),
        }
    }

    fn reset(&mut self) {
        self.jpki_selected = false;
        self.current_ef = None;
        self.auth_verified = false;
        self.sign_verified = false;
    }
}
