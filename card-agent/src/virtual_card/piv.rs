//! A software PIV card (NIST SP 800-73-4 Part 2 card commands; Part 1 data model), the virtual
//! PHR card. It behaves as the independent software PIV card observed in
//! `shared/reference/pcsc-stack.md` ("PIV as the PHR card") does, so the agent is tested against
//! the behaviour of real implementations:
//!
//! - SELECT by the full AID or any prefix of at least the 5-byte RID (yubico-piv-tool sends
//!   `A0 00 00 03 08`); answers with the application property template.
//! - Factory defaults: PIN `123456` (3 tries), PUK `12345678` (3 tries), 3DES management key
//!   `010203…0708` × 3. VERIFY without data answers `63Cx` or `9000` and never changes the
//!   counter; the exhausting wrong PIN answers `63C0`, then `6983`. `00 20 FF 80` logs out.
//! - Data objects: only SP 800-73-4 ids `5FC101`–`5FC123`, `7E`, `7F61` (`6A80` for others).
//!   `5FC103`, `5FC108`, `5FC109`, `5FC121`, `5FC123` need the PIN to read. Writing needs the
//!   management key. Objects up to 7,600 bytes, 64 KiB in all (`6A84` when full, old content
//!   kept). Key History (`5FC10C`) and Discovery (`7E`) are computed, not stored.
//! - P-256 keys generated in `9A`, `9C`, `9D`, `9E` and the retired slots `82`–`95`; ECDSA via
//!   GENERAL AUTHENTICATE with the PIN verified (`9E` without).
//! - Command chaining (CLA `10`), `61xx` for answers longer than Le, case-3 APDUs without Le.
//! - Yubico extensions that tools send: GET VERSION (`FD`), GET SERIAL (`F8`), SET MANAGEMENT
//!   KEY (`FF`). Anything else answers `6D00` (OpenSC probes with commands meant for other cards).
//!
//! State is kept in a directory (`piv-card.json`, owner-only) after every change, so a card
//! survives restarts and can be "pulled" and re-inserted. Fault injection for tests:
//! [`VirtualPivCard::die_at_put_data_link`] makes the card go silent in the middle of a chained
//! PUT DATA, as a card pulled mid-write does.

use super::VirtualCard;
use crate::apdu::{Command, StatusWord, ins};
use crate::piv::mgmt::{self, ManagementKey};
use crate::piv::{ALG_ECC_P256, PIN_REFERENCE, PUK_REFERENCE, object, slot, tlv};
use crate::testca::{self, MaterialError};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// ATR of the virtual PHR card (T=1, historical bytes "PHR-PIV").
pub const PIV_ATR: [u8; 15] = [
    0x3B, 0x8A, 0x80, 0x01, 0x50, 0x48, 0x52, 0x2D, 0x50, 0x49, 0x56, 0x00, 0x00, 0x00, 0x4E,
];
/// Factory PIN.
pub const DEFAULT_PIN: &str = "123456";
/// Factory PUK.
pub const DEFAULT_PUK: &str = "12345678";
/// Tries of PIN and PUK.
pub const MAX_TRIES: u8 = 3;
/// Largest single data object.
pub const MAX_OBJECT: usize = 7_600;
/// Total object storage.
pub const STORAGE: usize = 64 * 1024;

const FULL_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
const STATE_FILE: &str = "piv-card.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    serial: u32,
    pin: Zeroizing<String>,
    puk: Zeroizing<String>,
    pin_tries: u8,
    puk_tries: u8,
    mgmt_alg: u8,
    mgmt_key: Zeroizing<String>,
    /// slot → P-256 scalar, hex.
    keys: BTreeMap<u8, Zeroizing<String>>,
    /// object id → content (inside tag 53), hex.
    objects: BTreeMap<u32, String>,
}

impl State {
    fn factory() -> Self {
        State {
            serial: rand::Rng::r#gen::<u32>(&mut rand::thread_rng()) & 0x7FFF_FFFF,
            pin: Zeroizing::new(hex::encode(pad8(DEFAULT_PIN.as_bytes()))),
            puk: Zeroizing::new(hex::encode(pad8(DEFAULT_PUK.as_bytes()))),
            pin_tries: MAX_TRIES,
            puk_tries: MAX_TRIES,
            mgmt_alg: mgmt::ALG_3DES,
            mgmt_key: Zeroizing::new(hex::encode(mgmt::DEFAULT_3DES_KEY)),
            keys: BTreeMap::new(),
            objects: BTreeMap::new(),
        }
    }
}

fn pad8(pin: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFF; 8];
    out[..pin.len().min(8)].copy_from_slice(&pin[..pin.len().min(8)]);
    out
}

/// What the card has been asked, for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PivCounters {
    /// Command APDUs processed.
    pub apdus: u64,
    /// VERIFY commands that carried a PIN.
    pub verify_with_pin: u64,
    /// VERIFY commands without data.
    pub verify_queries: u64,
    /// Signatures computed.
    pub signatures: u64,
    /// PUT DATA commands completed.
    pub objects_written: u64,
}

struct Chain {
    ins: u8,
    p1: u8,
    p2: u8,
    data: Zeroizing<Vec<u8>>,
    links: usize,
}

/// The virtual PIV card.
pub struct VirtualPivCard {
    state: State,
    dir: Option<PathBuf>,
    selected: bool,
    pin_verified: bool,
    admin: bool,
    /// Management-key witness (plain) handed out, awaiting the host's decryption.
    witness: Option<Zeroizing<Vec<u8>>>,
    /// Challenge handed out for external authentication.
    challenge: Option<Zeroizing<Vec<u8>>>,
    chain: Option<Chain>,
    pending: Vec<u8>,
    counters: PivCounters,
    die_at_link: Option<usize>,
    dead: bool,
}

impl VirtualPivCard {
    /// A factory-fresh card kept only in memory.
    pub fn in_memory() -> Self {
        Self::with_state(State::factory(), None)
    }

    /// The card stored in `dir` (a factory-fresh one is made there on first use).
    pub fn open(dir: &Path) -> Result<Self, MaterialError> {
        testca::create_dir(dir)?;
        let path = dir.join(STATE_FILE);
        let state = if path.exists() {
            let text = Zeroizing::new(testca::read_to_string(&path)?);
            serde_json::from_str(&text).map_err(|e| MaterialError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?
        } else {
            State::factory()
        };
        let card = Self::with_state(state, Some(dir.to_owned()));
        card.persist()?;
        Ok(card)
    }

    fn with_state(state: State, dir: Option<PathBuf>) -> Self {
        VirtualPivCard {
            state,
            dir,
            selected: false,
            pin_verified: false,
            admin: false,
            witness: None,
            challenge: None,
            chain: None,
            pending: Vec::new(),
            counters: PivCounters::default(),
            die_at_link: None,
            dead: false,
        }
    }

    fn persist(&self) -> Result<(), MaterialError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(STATE_FILE);
        let json = Zeroizing::new(serde_json::to_vec_pretty(&self.state).map_err(|e| {
            MaterialError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?);
        testca::write_private(&path, &json)
    }

    /// What the card has been asked so far.
    pub fn counters(&self) -> PivCounters {
        self.counters
    }

    /// PIN tries left.
    pub fn pin_tries_left(&self) -> u8 {
        self.state.pin_tries
    }

    /// Sets the PIN counter (tests: one try left, or blocked).
    pub fn set_pin_tries_left(&mut self, tries: u8) -> Result<(), MaterialError> {
        self.state.pin_tries = tries.min(MAX_TRIES);
        self.persist()
    }

    /// A stored data object (content inside tag 53), for tests.
    pub fn object(&self, tag: u32) -> Option<Vec<u8>> {
        self.state
            .objects
            .get(&tag)
            .and_then(|h| hex::decode(h).ok())
    }

    /// Overwrites a data object directly, as a faulty card or another tool might (tests).
    pub fn set_object(&mut self, tag: u32, content: &[u8]) -> Result<(), MaterialError> {
        self.state.objects.insert(tag, hex::encode(content));
        self.persist()
    }

    /// The public key in `key_slot`, if one was generated.
    pub fn public_key(&self, key_slot: u8) -> Option<p256::PublicKey> {
        self.secret(key_slot).map(|k| k.public_key())
    }

    /// Makes the card go silent (0-byte answers until reset) when the `link`-th link (1-based) of
    /// a chained PUT DATA arrives; nothing of that PUT DATA is stored.
    pub fn die_at_put_data_link(&mut self, link: usize) {
        self.die_at_link = Some(link);
    }

    fn secret(&self, key_slot: u8) -> Option<p256::SecretKey> {
        let hex_key = self.state.keys.get(&key_slot)?;
        let bytes = Zeroizing::new(hex::decode(hex_key.as_str()).ok()?);
        p256::SecretKey::from_slice(&bytes).ok()
    }

    fn mgmt_key(&self) -> Option<ManagementKey> {
        let bytes = Zeroizing::new(hex::decode(self.state.mgmt_key.as_str()).ok()?);
        ManagementKey::from_parts(self.state.mgmt_alg, &bytes).ok()
    }

    fn used_storage(&self) -> usize {
        self.state.objects.values().map(|h| h.len() / 2).sum()
    }

    fn handle(&mut self, command: &Command) -> Result<Vec<u8>, StatusWord> {
        if command.cla & 0x0C != 0 {
            return Err(StatusWord::SM_NOT_SUPPORTED);
        }
        if command.cla & 0x03 != 0 {
            return Err(StatusWord::CHANNEL_NOT_SUPPORTED);
        }
        if command.cla & !0x10 != 0 {
            return Err(StatusWord::CLA_NOT_SUPPORTED);
        }
        if command.ins == ins::SELECT {
            return self.select(command);
        }
        if !self.selected {
            return Err(if is_known_ins(command.ins) {
                StatusWord::CONDITIONS_NOT_SATISFIED
            } else {
                StatusWord::INS_NOT_SUPPORTED
            });
        }
        match command.ins {
            ins::GET_DATA => self.get_data(command),
            ins::VERIFY => self.verify(command).map(|()| Vec::new()),
            ins::CHANGE_REFERENCE_DATA => self.change_reference(command).map(|()| Vec::new()),
            0x2C => self.reset_retry_counter(command).map(|()| Vec::new()),
            ins::PUT_DATA => self.put_data(command).map(|()| Vec::new()),
            ins::GENERATE_ASYMMETRIC_KEY_PAIR => self.generate(command),
            ins::GENERAL_AUTHENTICATE => self.general_authenticate(command),
            0xFD => Ok(vec![5, 4, 3]),
            0xF8 => Ok(self.state.serial.to_be_bytes().to_vec()),
            0xFF => self.set_management_key(command).map(|()| Vec::new()),
            _ => Err(StatusWord::INS_NOT_SUPPORTED),
        }
    }

    fn select(&mut self, command: &Command) -> Result<Vec<u8>, StatusWord> {
        let aid = command.data();
        if command.p1 != 0x04 {
            self.selected = false;
            return Err(StatusWord::FILE_NOT_FOUND);
        }
        if aid.len() < 5 || !FULL_AID.starts_with(aid) {
            self.selected = false;
            return Err(StatusWord::FILE_NOT_FOUND);
        }
        self.selected = true;
        self.admin = false;
        self.witness = None;
        self.challenge = None;
        // Application property template (SP 800-73-4 Part 2 §3.1.1, Table 3).
        let mut apt = Vec::new();
        tlv::push(&mut apt, 0x4F, &FULL_AID[5..]);
        tlv::push(&mut apt, 0x79, &tlv::encode(0x4F, &FULL_AID[..5]));
        tlv::push(&mut apt, 0x50, b"iPHR virtual PHR card");
        let mut algs = Vec::new();
        for alg in [mgmt::ALG_3DES, mgmt::ALG_AES256, ALG_ECC_P256] {
            tlv::push(&mut algs, 0x80, &[alg]);
        }
        tlv::push(&mut algs, 0x06, &[0x00]);
        tlv::push(&mut apt, 0xAC, &algs);
        Ok(tlv::encode(0x61, &apt))
    }

    fn get_data(&mut self, command: &Command) -> Result<Vec<u8>, StatusWord> {
        if (command.p1, command.p2) != (0x3F, 0xFF) {
            return Err(StatusWord::WRONG_P1P2);
        }
        let tag_bytes =
            tlv::parse_single(command.data(), 0x5C).map_err(|_| StatusWord::WRONG_DATA)?;
        let tag = tag_bytes
            .iter()
            .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        if tag_bytes.is_empty() || tag_bytes.len() > 3 {
            return Err(StatusWord::WRONG_DATA);
        }
        match tag {
            0x7E => {
                let mut d = Vec::new();
                tlv::push(&mut d, 0x4F, &FULL_AID);
                tlv::push(&mut d, 0x5F2F, &[0x40, 0x00]);
                return Ok(tlv::encode(0x7E, &d));
            }
            object::KEY_HISTORY => {
                let on_card = (0..slot::RETIRED_COUNT)
                    .take_while(|i| {
                        self.state
                            .objects
                            .contains_key(&(object::RETIRED_CERT_FIRST + *i as u32))
                    })
                    .count() as u8;
                let mut d = Vec::new();
                tlv::push(&mut d, 0xC1, &[on_card]);
                tlv::push(&mut d, 0xC2, &[0]);
                tlv::push(&mut d, 0xFE, &[]);
                return Ok(tlv::encode(0x53, &d));
            }
            0x5FC101..=0x5FC123 | 0x7F61 => {}
            _ => return Err(StatusWord::WRONG_DATA),
        }
        if object::PIN_TO_READ.contains(&tag) && !self.pin_verified {
            return Err(StatusWord::SECURITY_NOT_SATISFIED);
        }
        let content = self.object(tag).ok_or(StatusWord::FILE_NOT_FOUND)?;
        Ok(tlv::encode(0x53, &content))
    }

    fn put_data(&mut self, command: &Command) -> Result<(), StatusWord> {
        if (command.p1, command.p2) != (0x3F, 0xFF) {
            return Err(StatusWord::WRONG_P1P2);
        }
        if !self.admin {
            return Err(StatusWord::SECURITY_NOT_SATISFIED);
        }
        let mut reader = tlv::TlvReader::new(command.data());
        let tag_bytes = reader.expect(0x5C).map_err(|_| StatusWord::WRONG_DATA)?;
        let content = reader.expect(0x53).map_err(|_| StatusWord::WRONG_DATA)?;
        reader.finish().map_err(|_| StatusWord::WRONG_DATA)?;
        if tag_bytes.len() != 3 {
            return Err(StatusWord::WRONG_DATA);
        }
        let tag = tag_bytes
            .iter()
            .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        if !(0x5FC101..=0x5FC123).contains(&tag) || tag == object::KEY_HISTORY {
            return Err(StatusWord::WRONG_DATA);
        }
        if content.len() > MAX_OBJECT {
            return Err(StatusWord::NOT_ENOUGH_MEMORY);
        }
        let old = self.state.objects.get(&tag).map_or(0, |h| h.len() / 2);
        if self.used_storage() - old + content.len() > STORAGE {
            return Err(StatusWord::NOT_ENOUGH_MEMORY);
        }
        let previous = self.state.objects.insert(tag, hex::encode(content));
        if self.persist().is_err() {
            // Keep memory and disk in agreement: the write did not happen.
            match previous {
                Some(p) => self.state.objects.insert(tag, p),
                None => self.state.objects.remove(&tag),
            };
            return Err(StatusWord::UNKNOWN_ERROR);
        }
        self.counters.objects_written += 1;
        Ok(())
    }

    fn verify(&mut self, command: &Command) -> Result<(), StatusWord> {
        match (command.p1, command.p2) {
            (0xFF, PIN_REFERENCE) if command.data().is_empty() => {
                self.pin_verified = false;
                return Ok(());
            }
            (0x00, PIN_REFERENCE) => {}
            _ => return Err(StatusWord::WRONG_P1P2),
        }
        if command.data().is_empty() {
            self.counters.verify_queries += 1;
            if self.state.pin_tries == 0 {
                return Err(StatusWord::AUTH_BLOCKED);
            }
            if self.pin_verified {
                return Ok(());
            }
            return Err(StatusWord::new(0x63, 0xC0 | self.state.pin_tries));
        }
        self.counters.verify_with_pin += 1;
        if command.data().len() != 8 {
            return Err(StatusWord::WRONG_DATA);
        }
        if self.state.pin_tries == 0 {
            return Err(StatusWord::AUTH_BLOCKED);
        }
        let stored = Zeroizing::new(hex::decode(self.state.pin.as_str()).unwrap_or_default());
        if constant_time_eq(&stored, command.data()) {
            self.state.pin_tries = MAX_TRIES;
            self.pin_verified = true;
            self.persist().map_err(|_| StatusWord::UNKNOWN_ERROR)?;
            Ok(())
        } else {
            self.state.pin_tries -= 1;
            self.pin_verified = false;
            self.persist().map_err(|_| StatusWord::UNKNOWN_ERROR)?;
            Err(StatusWord::new(0x63, 0xC0 | self.state.pin_tries))
        }
    }

    fn change_reference(&mut self, command: &Command) -> Result<(), StatusWord> {
        if command.p1 != 0x00 || !matches!(command.p2, PIN_REFERENCE | PUK_REFERENCE) {
            return Err(StatusWord::WRONG_P1P2);
        }
        let data = command.data();
        if data.len() != 16 {
            return Err(StatusWord::WRONG_DATA);
        }
        let is_pin = command.p2 == PIN_REFERENCE;
        let (stored, tries) = if is_pin {
            (&mut self.state.pin, &mut self.state.pin_tries)
        } else {
            (&mut self.state.puk, &mut self.state.puk_tries)
        };
        if *tries == 0 {
            return Err(StatusWord::AUTH_BLOCKED);
        }
        let current = Zeroizing::new(hex::decode(stored.as_str()).unwrap_or_default());
        if !constant_time_eq(&current, &data[..8]) {
            *tries -= 1;
            let left = *tries;
            if is_pin {
                self.pin_verified = false;
            }
            self.persist().map_err(|_| StatusWord::UNKNOWN_ERROR)?;
            return Err(StatusWord::new(0x63, 0xC0 | left));
        }
        *stored = Zeroizing::new(hex::encode(&data[8..]));
        *tries = MAX_TRIES;
        self.persist().map_err(|_| StatusWord::UNKNOWN_ERROR)
    }

    fn reset_retry_counter(&mut self, command: &Command) -> Result<(), StatusWord> {
        if (command.p1, command.p2) != (0x00, PIN_REFERENCE) {
            return Err(StatusWord::WRONG_P1P2);
        }
        let data = command.data();
        if data.len() != 16 {
            return Err(StatusWord::WRONG_DATA);
        }
        if self.state.puk_tries == 0 {
            return Err(StatusWord::AUTH_BLOCKED);
        }
        let puk = Zeroizing::new(hex::decode(self.state.puk.as_str()).unwrap_or_default());
        if !constant_time_eq(&puk, &data[..8]) {
            self.state.puk_tries -= 1;
            let left = self.state.puk_tries;
            self.persist().map_err(|_| StatusWord::UNKNOWN_ERROR)?;
            return Err(StatusWord::new(0x63, 0xC0 | left));
        }
        self.state.pin = Zeroizing::new(hex::encode(&data[8..]));
        self.state.pin_tries = MAX_TRIES;
        self.state.puk_tries = MAX_TRIES;
        self.persist().map_err(|_| StatusWord::UNKNOWN_ERROR)
    }

    fn generate(&mut self, command: &Command) -> Result<Vec<u8>, StatusWord> {
        if command.p1 != 0x00 {
            return Err(StatusWord::WRONG_P1P2);
        }
        let key_slot = command.p2;
        if object::cert_for_slot(key_slot).is_none() {
            return Err(StatusWord::WRONG_P1P2);
        }
        if !self.admin {
            return Err(StatusWord::SECURITY_NOT_SATISFIED);
        }
        let template =
            tlv::parse_single(command.data(), 0xAC).map_err(|_| StatusWord::WRONG_DATA)?;
        match tlv::find(template, 0x80) {
            Ok(Some([ALG_ECC_P256])) => {}
            Ok(Some(_)) => return Err(StatusWord::FUNCTION_NOT_SUPPORTED),
            _ => return Err(StatusWord::WRONG_DATA),
        }
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let point = p256::EncodedPoint::from(secret.public_key());
        self.state.keys.insert(
            key_slot,
            Zeroizing::new(hex::encode(secret.to_bytes().as_slice())),
        );
        self.persist().map_err(|_| StatusWord::UNKNOWN_ERROR)?;
        Ok(tlv::encode(0x7F49, &tlv::encode(0x86, point.as_bytes())))
    }

    fn general_authenticate(&mut self, command: &Command) -> Result<Vec<u8>, StatusWord> {
        let (alg, key_slot) = (command.p1, command.p2);
        let dyn_auth =
            tlv::parse_single(command.data(), 0x7C).map_err(|_| StatusWord::WRONG_DATA)?;
        let items = tlv::parse_all(dyn_auth).map_err(|_| StatusWord::WRONG_DATA)?;
        let get = |tag: u32| items.iter().find(|t| t.tag == tag).map(|t| t.value);
        if key_slot == slot::MANAGEMENT {
            return self.management_auth(alg, get(0x80), get(0x81), get(0x82));
        }
        if alg != ALG_ECC_P256 {
            return Err(StatusWord::WRONG_P1P2);
        }
        if object::cert_for_slot(key_slot).is_none() {
            return Err(StatusWord::WRONG_P1P2);
        }
        let (Some([]), Some(challenge)) = (get(0x82), get(0x81)) else {
            return Err(StatusWord::WRONG_DATA);
        };
        if key_slot != slot::CARD_AUTHENTICATION && !self.pin_verified {
            return Err(StatusWord::SECURITY_NOT_SATISFIED);
        }
        let secret = self.secret(key_slot).ok_or(StatusWord::DATA_NOT_FOUND)?;
        // The challenge is the hash, brought to the field size (SEC 1 §4.1.3 bits2int).
        let mut digest = [0u8; 32];
        if challenge.is_empty() {
            return Err(StatusWord::WRONG_DATA);
        }
        if challenge.len() >= 32 {
            digest.copy_from_slice(&challenge[..32]);
        } else {
            digest[32 - challenge.len()..].copy_from_slice(challenge);
        }
        let signer = p256::ecdsa::SigningKey::from(&secret);
        let sig: p256::ecdsa::Signature = signer
            .sign_prehash(&digest)
            .map_err(|_| StatusWord::UNKNOWN_ERROR)?;
        self.counters.signatures += 1;
        Ok(tlv::encode(
            0x7C,
            &tlv::encode(0x82, sig.to_der().as_bytes()),
        ))
    }

    fn management_auth(
        &mut self,
        alg: u8,
        witness: Option<&[u8]>,
        challenge: Option<&[u8]>,
        response: Option<&[u8]>,
    ) -> Result<Vec<u8>, StatusWord> {
        let key = self.mgmt_key().ok_or(StatusWord::UNKNOWN_ERROR)?;
        if alg != key.algorithm() {
            self.admin = false;
            return Err(StatusWord::WRONG_P1P2);
        }
        let bs = key.block_len();
        match (witness, challenge, response) {
            // Step 1 of mutual authentication: hand out an encrypted witness.
            (Some([]), None, _) => {
                let mut w = Zeroizing::new(vec![0u8; bs]);
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut w);
                let enc = key.encrypt_block(&w).ok_or(StatusWord::UNKNOWN_ERROR)?;
                self.witness = Some(w);
                self.admin = false;
                Ok(tlv::encode(0x7C, &tlv::encode(0x80, &enc)))
            }
            // Step 2: the host decrypted the witness and sends its own challenge (and nothing
            // else: Nitrokey's piv-authenticator answers 6A80 to an extra response tag).
            (Some(decrypted), Some(host_challenge), None) => {
                let expected = self
                    .witness
                    .take()
                    .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
                if !constant_time_eq(&expected, decrypted) || host_challenge.len() != bs {
                    self.admin = false;
                    return Err(StatusWord::SECURITY_NOT_SATISFIED);
                }
                let enc = key
                    .encrypt_block(host_challenge)
                    .ok_or(StatusWord::WRONG_DATA)?;
                self.admin = true;
                Ok(tlv::encode(0x7C, &tlv::encode(0x82, &enc)))
            }
            // External authentication: a challenge for the host to encrypt.
            (None, Some([]), _) => {
                let mut c = Zeroizing::new(vec![0u8; bs]);
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut c);
                let out = tlv::encode(0x7C, &tlv::encode(0x81, &c));
                self.challenge = Some(c);
                self.admin = false;
                Ok(out)
            }
            (None, None, Some(answer)) if !answer.is_empty() => {
                let c = self
                    .challenge
                    .take()
                    .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
                let expected = key.encrypt_block(&c).ok_or(StatusWord::UNKNOWN_ERROR)?;
                if constant_time_eq(&expected, answer) {
                    self.admin = true;
                    Ok(Vec::new())
                } else {
                    self.admin = false;
                    Err(StatusWord::SECURITY_NOT_SATISFIED)
                }
            }
            _ => Err(StatusWord::WRONG_DATA),
        }
    }

    fn set_management_key(&mut self, command: &Command) -> Result<(), StatusWord> {
        if command.p1 != 0xFF || !matches!(command.p2, 0xFF | 0xFE) {
            return Err(StatusWord::WRONG_P1P2);
        }
        if !self.admin {
            return Err(StatusWord::SECURITY_NOT_SATISFIED);
        }
        let [alg, reference, len, key @ ..] = command.data() else {
            return Err(StatusWord::WRONG_DATA);
        };
        if *reference != slot::MANAGEMENT || usize::from(*len) != key.len() {
            return Err(StatusWord::WRONG_DATA);
        }
        let new = ManagementKey::from_parts(*alg, key).map_err(|_| StatusWord::WRONG_DATA)?;
        let (old_alg, old_key) = (self.state.mgmt_alg, self.state.mgmt_key.clone());
        self.state.mgmt_alg = new.algorithm();
        self.state.mgmt_key = Zeroizing::new(hex::encode(new.bytes()));
        if self.persist().is_err() {
            self.state.mgmt_alg = old_alg;
            self.state.mgmt_key = old_key;
            return Err(StatusWord::UNKNOWN_ERROR);
        }
        Ok(())
    }

    /// Runs one (possibly chained) command; `None` means the card went silent.
    fn process_command(&mut self, command: Command) -> Option<Result<Vec<u8>, StatusWord>> {
        if command.cla & 0x10 != 0 && command.cla & 0xEF == 0 {
            let chain = self.chain.get_or_insert_with(|| Chain {
                ins: command.ins,
                p1: command.p1,
                p2: command.p2,
                data: Zeroizing::new(Vec::new()),
                links: 0,
            });
            if (chain.ins, chain.p1, chain.p2) != (command.ins, command.p1, command.p2) {
                self.chain = None;
                return Some(Err(StatusWord::CONDITIONS_NOT_SATISFIED));
            }
            chain.links += 1;
            if command.ins == ins::PUT_DATA && self.die_at_link == Some(chain.links) {
                self.chain = None;
                self.dead = true;
                return None;
            }
            if chain.data.len() + command.data().len() > 3 * MAX_OBJECT {
                self.chain = None;
                return Some(Err(StatusWord::NOT_ENOUGH_MEMORY));
            }
            chain.data.extend_from_slice(command.data());
            return Some(Ok(Vec::new()));
        }
        let full = match self.chain.take() {
            Some(chain) => {
                if (chain.ins, chain.p1, chain.p2) != (command.ins, command.p1, command.p2) {
                    return Some(Err(StatusWord::CONDITIONS_NOT_SATISFIED));
                }
                if command.ins == ins::PUT_DATA && self.die_at_link == Some(chain.links + 1) {
                    self.dead = true;
                    return None;
                }
                let mut data = chain.data.to_vec();
                data.extend_from_slice(command.data());
                let mut joined =
                    Command::new(command.cla, command.ins, command.p1, command.p2).with_data(data);
                if let Some(le) = command.le() {
                    joined = joined.with_le(le);
                }
                joined
            }
            None => command,
        };
        let full = if matches!(
            full.ins,
            ins::VERIFY | ins::CHANGE_REFERENCE_DATA | 0x2C | 0xFF | ins::GENERAL_AUTHENTICATE
        ) {
            full.sensitive()
        } else {
            full
        };
        Some(self.handle(&full))
    }
}

fn is_known_ins(ins_byte: u8) -> bool {
    matches!(
        ins_byte,
        ins::GET_DATA
            | ins::VERIFY
            | ins::CHANGE_REFERENCE_DATA
            | 0x2C
            | ins::PUT_DATA
            | ins::GENERATE_ASYMMETRIC_KEY_PAIR
            | ins::GENERAL_AUTHENTICATE
            | 0xFD
            | 0xF8
            | 0xFF
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn with_sw(mut data: Vec<u8>, sw: StatusWord) -> Vec<u8> {
    data.extend_from_slice(&sw.0.to_be_bytes());
    data
}

impl VirtualCard for VirtualPivCard {
    fn atr(&self) -> Vec<u8> {
        PIV_ATR.to_vec()
    }

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        if self.dead {
            return Vec::new();
        }
        self.counters.apdus += 1;
        let extended = apdu.len() > 6 && apdu[4] == 0x00;
        let command = match Command::parse(apdu) {
            Ok(command) => command,
            Err(_) => return StatusWord::WRONG_LENGTH.0.to_be_bytes().to_vec(),
        };
        // GET RESPONSE hands out what is left of the last answer.
        if command.ins == ins::GET_RESPONSE && command.cla == 0x00 {
            if self.pending.is_empty() {
                return StatusWord::CONDITIONS_NOT_SATISFIED
                    .0
                    .to_be_bytes()
                    .to_vec();
            }
            let le = command.le().unwrap_or(256);
            return self.give(le);
        }
        self.pending.clear();
        let le = command.le().unwrap_or(256);
        match self.process_command(command) {
            None => Vec::new(),
            Some(Ok(data)) => {
                self.pending = data;
                let le = if extended { 65_536 } else { le };
                self.give(le)
            }
            Some(Err(sw)) => sw.0.to_be_bytes().to_vec(),
        }
    }

    fn reset(&mut self) {
        self.selected = false;
        self.pin_verified = false;
        self.admin = false;
        self.witness = None;
        self.challenge = None;
        self.chain = None;
        self.pending.clear();
        self.dead = false;
        self.die_at_link = None;
    }
}

impl VirtualPivCard {
    fn give(&mut self, le: usize) -> Vec<u8> {
        let n = self.pending.len().min(le);
        let head: Vec<u8> = self.pending.drain(..n).collect();
        match self.pending.len() {
            0 => with_sw(head, StatusWord::OK),
            rest if rest >= 256 => with_sw(head, StatusWord::new(0x61, 0x00)),
            rest => with_sw(head, StatusWord::new(0x61, rest as u8)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin::LastTry;
    use crate::piv::{PinState, Piv, PivPin};
    use crate::virtual_card::InProcess;

    #[test]
    fn select_by_rid_and_unknown_commands() {
        let mut card = VirtualPivCard::in_memory();
        let r = card.process(&[0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08]);
        assert_eq!(&r[r.len() - 2..], &[0x90, 0x00]);
        assert_eq!(r[0], 0x61);
        let r = card.process(&[0x00, 0xA4, 0x04, 0x00, 0x02, 0xD2, 0x76]);
        assert_eq!(r, [0x6A, 0x82]);
        let r = card.process(&[0x00, 0xCA, 0x01, 0x00, 0x00]);
        assert_eq!(r, [0x6D, 0x00]);
        assert!(card.process(&[0x00]).len() == 2);
    }

    #[test]
    fn pin_counter_and_logout() {
        let t = InProcess::new(VirtualPivCard::in_memory());
        let mut piv = Piv::select(t.clone()).unwrap();
        for _ in 0..100 {
            assert_eq!(piv.pin_state().unwrap(), PinState::TriesLeft(3));
        }
        let piv = piv
            .verify_pin(&PivPin::parse(DEFAULT_PIN).unwrap(), LastTry::Refuse)
            .unwrap();
        let mut piv = piv.logout().unwrap();
        assert_eq!(piv.pin_state().unwrap(), PinState::TriesLeft(3));
        assert_eq!(t.card().counters().verify_with_pin, 1);
    }

    #[test]
    fn long_answers_come_in_pieces() {
        let mut card = VirtualPivCard::in_memory();
        card.set_object(0x5FC106, &[0x42; 1000]).unwrap();
        card.process(&[0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08]);
        let r = card.process(&[0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x06]);
        assert_eq!(r.len(), 258);
        assert_eq!(&r[256..], &[0x61, 0x00]);
        let t = InProcess::new(card);
        let mut piv = Piv::select(t).unwrap();
        assert_eq!(piv.get_data(0x5FC106).unwrap().unwrap(), vec![0x42; 1000]);
    }
}
