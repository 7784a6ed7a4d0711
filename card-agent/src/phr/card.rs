//! The agent's PHR-card operations (`docs/phr-card-profile.md` §3–§5) on any
//! [`CardTransport`]: issue, show, link a service, grant / revoke consent, sign a service grant.
//!
//! Every operation is one card session: SELECT, the work, and an explicit logout (`00 20 FF 80`)
//! at the end whatever happened, since PIV cards may keep a verified PIN across connections. Run
//! it inside a PC/SC transaction ([`crate::transport::pcsc::PcscCard::transaction`]) so that no
//! other application interleaves. Writes check before they touch anything: a full card, a
//! corrupt object or a consent set changed by someone else since it was read end the operation
//! with an error and nothing written.

use super::ca::PhrIssuerCa;
use super::consent::{
    Category, ConsentFormatError, ConsentRecord, ConsentSet, ConsentStatus, ConsentTerms,
};
use super::verify::{self, ServiceGrant, VerifyError};
use super::{CONSENT_OBJECTS, MGMT_KEY_OBJECT};
use crate::apdu::{Command, exchange, ins};
use crate::pin::LastTry;
use crate::piv::mgmt::{self, ManagementKey};
use crate::piv::{
    MAX_OBJECT_LEN, PIN_REFERENCE, PinState, PinVerified, Piv, PivError, PivPin, PivPuk, object,
    slot, tlv,
};
use crate::transport::CardTransport;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Every way a PHR-card operation ends without its result.
#[derive(Debug, thiserror::Error)]
pub enum PhrError {
    /// The PIV layer failed (PIN, transport, status words).
    #[error(transparent)]
    Piv(#[from] PivError),
    /// The card has no holder certificate in slot 9A.
    #[error("this card is not an issued PHR card: no holder certificate in slot 9A")]
    NotIssued,
    /// Issuance refused: the card is already a PHR card.
    #[error("this card is already issued (holder {holder_id}); nothing was changed")]
    AlreadyIssued {
        /// Its holder.
        holder_id: String,
    },
    /// Issuance refused: the default management key does not work.
    #[error("the card does not accept the factory management key ({0}); nothing was changed")]
    NotFactoryFresh(PivError),
    /// The service already has a slot.
    #[error("service {service} is already linked in slot {slot:02X}")]
    AlreadyLinked {
        /// Service.
        service: String,
        /// Its slot.
        slot: u8,
    },
    /// The service is linked on the card under another pseudonym than the one given.
    #[error("the card is linked to {service} as another person ({pseudonym}); nothing was written")]
    LinkedAsAnother {
        /// Service.
        service: String,
        /// The pseudonym on the card.
        pseudonym: String,
    },
    /// No slot holds this service.
    #[error("service {service} is not linked to this card")]
    NotLinked {
        /// Service.
        service: String,
    },
    /// All 20 retired slots hold services.
    #[error("the card is full: all {0} service key slots (82–95) are in use; no key was generated")]
    CardFull(usize),
    /// The consent set would not fit one data object.
    #[error(
        "the consent set would be {bytes} bytes, more than the {max} one object holds; nothing was written"
    )]
    ConsentStoreFull {
        /// Size needed.
        bytes: usize,
        /// Limit.
        max: usize,
    },
    /// A data object the operation depends on is corrupt.
    #[error("data object {object:06X} on the card is corrupt ({reason}); nothing was written")]
    CorruptObject {
        /// The object.
        object: u32,
        /// What is wrong.
        reason: String,
    },
    /// The consent set changed since the caller read it (another agent wrote).
    #[error(
        "the consents on the card changed meanwhile (generation {found}, expected {expected}): another agent wrote first; nothing was written, read the card again"
    )]
    ConcurrentUpdate {
        /// Generation the caller read.
        expected: u32,
        /// Generation on the card now.
        found: u32,
    },
    /// Revoke for a service without a granted consent.
    #[error("there is no granted consent for {service} to revoke")]
    NothingToRevoke {
        /// Service.
        service: String,
    },
    /// The management key object (5FC109) is missing or unreadable.
    #[error("the card's management key object (5FC109) is missing or malformed: {0}")]
    ManagementKeyMissing(String),
    /// The card's signature did not verify with the key its certificate names.
    #[error("the card's signature does not match its certificate: refusing to store it")]
    CardSignatureMismatch,
    /// The object read back differs from what was written.
    #[error("data object {0:06X} does not hold what was written")]
    WriteNotPersisted(u32),
    /// A request that breaks the profile's rules.
    #[error(transparent)]
    Format(#[from] ConsentFormatError),
    /// A certificate on the card fails verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Certificate(String),
}

impl From<crate::transport::TransportError> for PhrError {
    fn from(e: crate::transport::TransportError) -> Self {
        PhrError::Piv(e.into())
    }
}

/// A data object as read.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ObjectState<T> {
    /// Not on the card.
    Empty,
    /// Parsed.
    Valid {
        /// Content.
        value: T,
    },
    /// Present but not parseable.
    Corrupt {
        /// Why.
        reason: String,
    },
}

/// A linked service as the card shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkedService {
    /// Retired key slot.
    pub slot: u8,
    /// Service id, from the binding certificate.
    pub service: String,
    /// The person's pseudonymous id at the service.
    pub pseudonym: String,
    /// Whether the binding certificate verifies with the holder key.
    pub verified: bool,
    /// The binding certificate (DER, hex in JSON).
    #[serde(serialize_with = "ser_hex")]
    pub cert_der: Vec<u8>,
}

fn ser_hex<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

/// Everything `phr show` reports. Reading it needs no PIN and spends no try.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CardView {
    /// The PIN counter.
    pub pin: PinState,
    /// Holder id (subject CN of the 9A certificate), if issued.
    pub holder_id: Option<String>,
    /// The holder certificate (DER, hex in JSON).
    #[serde(serialize_with = "ser_opt_hex")]
    pub holder_cert_der: Option<Vec<u8>>,
    /// Linked services in slot order.
    pub services: Vec<LinkedService>,
    /// Retired slots whose certificate object is corrupt.
    pub corrupt_slots: Vec<(u8, String)>,
    /// Free service slots.
    pub free_slots: usize,
    /// The two consent objects.
    pub consent_objects: Vec<(String, ObjectState<u32>)>,
    /// The current consent set (highest valid generation), empty if none.
    pub consents: ConsentSet,
    /// Consent records whose holder signature does not verify (by service).
    pub unverified_consents: Vec<String>,
}

fn ser_opt_hex<S: serde::Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_str(&hex::encode(b)),
        None => s.serialize_none(),
    }
}

impl CardView {
    /// Generation of the current consent set (0 when none was written).
    pub fn consent_generation(&self) -> u32 {
        self.consents.generation
    }

    /// The card's link to `service`, if any; one under another pseudonym than `pseudonym` (when
    /// given) is refused: the card would be another person there.
    pub fn link_for(
        &self,
        service: &str,
        pseudonym: Option<&str>,
    ) -> Result<Option<&LinkedService>, PhrError> {
        link_for(&self.services, service, pseudonym)
    }

    /// The slot of `service`, if linked.
    pub fn slot_of(&self, service: &str) -> Option<u8> {
        self.services
            .iter()
            .find(|s| s.service == service)
            .map(|s| s.slot)
    }
}

/// Runs `f` as one card session and logs out afterwards, whatever `f` returned.
pub(super) fn session<T: CardTransport + ?Sized, R>(
    t: &mut T,
    f: impl FnOnce(&mut T) -> Result<R, PhrError>,
) -> Result<R, PhrError> {
    let result = f(t);
    let logout = Command::new(0x00, ins::VERIFY, 0xFF, PIN_REFERENCE);
    if let Err(e) = exchange(t, &logout) {
        tracing::debug!(error = %e, "logout after the PHR session failed");
    }
    result
}

/// Wraps a certificate as a PIV certificate object (SP 800-73-4 Part 1 Table 10).
pub fn cert_object(cert_der: &[u8]) -> Vec<u8> {
    let mut out = tlv::encode(0x70, cert_der);
    tlv::push(&mut out, 0x71, &[0x00]);
    tlv::push(&mut out, 0xFE, &[]);
    out
}

/// The certificate inside a PIV certificate object.
pub fn cert_from_object(content: &[u8]) -> Result<Vec<u8>, String> {
    let items = tlv::parse_all(content).map_err(|e| e.to_string())?;
    let cert = items
        .iter()
        .find(|t| t.tag == 0x70)
        .ok_or("no certificate (70)")?;
    if let Some(info) = items.iter().find(|t| t.tag == 0x71)
        && info.value != [0x00]
    {
        return Err("compressed certificates are not supported".into());
    }
    let der = cert.value;
    crate::jpki::der_total_length(der)
        .ok()
        .filter(|n| *n == der.len())
        .ok_or("certificate is not one DER SEQUENCE")?;
    Ok(der.to_vec())
}

fn holder_key_of(cert_der: &[u8]) -> Result<super::verify::HolderCert, PhrError> {
    verify::holder_of_validated_cert(cert_der).map_err(|e| PhrError::CorruptObject {
        object: object::AUTH_CERT,
        reason: e.to_string(),
    })
}

pub(super) struct Snapshot {
    holder: Option<verify::HolderCert>,
    services: Vec<LinkedService>,
    corrupt_slots: Vec<(u8, String)>,
    free_slot: Option<u8>,
    consent_objects: Vec<(u32, ObjectState<ConsentSet>)>,
}

/// The link to `service` among `services`, if any; one under another pseudonym than `pseudonym`
/// (when given) is refused: the card would be another person there.
fn link_for<'s>(
    services: &'s [LinkedService],
    service: &str,
    pseudonym: Option<&str>,
) -> Result<Option<&'s LinkedService>, PhrError> {
    match services.iter().find(|s| s.service == service) {
        Some(linked) if pseudonym.is_some_and(|p| p != linked.pseudonym) => {
            Err(PhrError::LinkedAsAnother {
                service: service.to_owned(),
                pseudonym: linked.pseudonym.clone(),
            })
        }
        found => Ok(found),
    }
}

impl Snapshot {
    fn active(&self) -> Option<(u32, &ConsentSet)> {
        self.consent_objects
            .iter()
            .filter_map(|(tag, s)| match s {
                ObjectState::Valid { value } => Some((*tag, value)),
                _ => None,
            })
            .max_by_key(|(_, set)| set.generation)
    }

    fn first_corrupt_consent(&self) -> Option<(u32, String)> {
        self.consent_objects.iter().find_map(|(tag, s)| match s {
            ObjectState::Corrupt { reason } => Some((*tag, reason.clone())),
            _ => None,
        })
    }

    /// The link of `service`, if any (see [`CardView::link_for`]).
    pub(super) fn link_for(
        &self,
        service: &str,
        pseudonym: Option<&str>,
    ) -> Result<Option<&LinkedService>, PhrError> {
        link_for(&self.services, service, pseudonym)
    }

    pub(super) fn holder(&self) -> Result<&verify::HolderCert, PhrError> {
        self.holder.as_ref().ok_or(PhrError::NotIssued)
    }
}

pub(super) fn snapshot<T: CardTransport, S>(piv: &mut Piv<T, S>) -> Result<Snapshot, PhrError> {
    let holder = match read_holder(piv) {
        Err(PhrError::NotIssued) => None,
        holder => Some(holder?),
    };
    let mut services = Vec::new();
    let mut corrupt_slots = Vec::new();
    let mut free_slot = None;
    for i in 0..slot::RETIRED_COUNT {
        let key_slot = slot::RETIRED_FIRST + i as u8;
        let tag = object::RETIRED_CERT_FIRST + i as u32;
        let Some(content) = piv.get_data(tag)? else {
            free_slot = free_slot.or(Some(key_slot));
            continue;
        };
        let parsed = cert_from_object(&content).and_then(|der| {
            verify::parse_binding_cert(&der)
                .map(|names| (der, names))
                .map_err(|e| e.to_string())
        });
        match parsed {
            Ok((der, (service, pseudonym))) => {
                let verified = holder.as_ref().is_some_and(|h| {
                    verify::verify_binding(&der, h, OffsetDateTime::now_utc().unix_timestamp())
                        .is_ok()
                });
                services.push(LinkedService {
                    slot: key_slot,
                    service,
                    pseudonym,
                    verified,
                    cert_der: der,
                });
            }
            Err(reason) => corrupt_slots.push((key_slot, reason)),
        }
    }
    let mut consent_objects = Vec::new();
    for tag in CONSENT_OBJECTS {
        let state = match piv.get_data(tag)? {
            None => ObjectState::Empty,
            Some(content) => match ConsentSet::parse(&content) {
                Ok(set) => ObjectState::Valid { value: set },
                Err(e) => ObjectState::Corrupt {
                    reason: e.to_string(),
                },
            },
        };
        consent_objects.push((tag, state));
    }
    Ok(Snapshot {
        holder,
        services,
        corrupt_slots,
        free_slot,
        consent_objects,
    })
}

/// Reads everything `phr show` reports. No PIN, no try spent.
pub fn read_card<T: CardTransport + ?Sized>(t: &mut T) -> Result<CardView, PhrError> {
    session(t, |t| {
        let mut piv = Piv::select(&mut *t)?;
        let pin = piv.pin_state()?;
        let snap = snapshot(&mut piv)?;
        let consents = snap.active().map(|(_, s)| s.clone()).unwrap_or_default();
        let unverified_consents = match &snap.holder {
            Some(h) => consents
                .records
                .iter()
                .filter(|r| verify::verify_consent_record(r, h).is_err())
                .map(|r| r.terms.service.clone())
                .collect(),
            None => consents
                .records
                .iter()
                .map(|r| r.terms.service.clone())
                .collect(),
        };
        Ok(CardView {
            pin,
            holder_id: snap.holder.as_ref().map(|h| h.holder_id.clone()),
            holder_cert_der: snap.holder.as_ref().map(|h| h.der.clone()),
            free_slots: slot::RETIRED_COUNT - snap.services.len() - snap.corrupt_slots.len(),
            corrupt_slots: snap.corrupt_slots,
            services: snap.services,
            consent_objects: snap
                .consent_objects
                .iter()
                .map(|(tag, s)| {
                    let state = match s {
                        ObjectState::Empty => ObjectState::Empty,
                        ObjectState::Valid { value } => ObjectState::Valid {
                            value: value.generation,
                        },
                        ObjectState::Corrupt { reason } => ObjectState::Corrupt {
                            reason: reason.clone(),
                        },
                    };
                    (format!("{tag:06X}"), state)
                })
                .collect(),
            consents,
            unverified_consents,
        })
    })
}

/// What issuance needs.
pub struct IssueRequest<'a> {
    /// The holder's pseudonymous id (holder certificate CN).
    pub holder_id: &'a str,
    /// The PIN to set (replaces the factory PIN `123456`).
    pub new_pin: &'a PivPin,
    /// The PUK to set (replaces the factory PUK `12345678`).
    pub new_puk: &'a PivPuk,
    /// The factory PIN and PUK (as the card vendor ships them).
    pub factory_pin: &'a PivPin,
    /// The factory PUK.
    pub factory_puk: &'a PivPuk,
    /// Holder certificate expiry.
    pub not_after: OffsetDateTime,
    /// Algorithm of the new management key ([`mgmt::ALG_AES256`] or [`mgmt::ALG_3DES`]).
    pub mgmt_alg: u8,
}

/// Issues a card as the vendor ships it (factory PIN and PUK of
/// [`crate::virtual_card::piv`], which PIV cards share): [`issue`] with those.
pub fn issue_factory_fresh<T: CardTransport + ?Sized>(
    t: &mut T,
    ca: &PhrIssuerCa,
    holder_id: &str,
    new_pin: &PivPin,
    new_puk: &PivPuk,
    not_after: OffsetDateTime,
    mgmt_alg: u8,
) -> Result<Issued, PhrError> {
    use crate::virtual_card::piv::{DEFAULT_PIN, DEFAULT_PUK};
    // Invariant: the factory defaults are 6 and 8 digits, valid PIV secrets
    // (`piv::tests::the_factory_pin_and_puk_are_valid_piv_secrets`).
    #[allow(clippy::expect_used)]
    let (factory_pin, factory_puk) = (
        PivPin::parse(DEFAULT_PIN).expect("the factory PIN is a valid PIV PIN"),
        PivPuk::parse(DEFAULT_PUK).expect("the factory PUK is a valid PIV PUK"),
    );
    issue(
        t,
        ca,
        &IssueRequest {
            holder_id,
            new_pin,
            new_puk,
            factory_pin: &factory_pin,
            factory_puk: &factory_puk,
            not_after,
            mgmt_alg,
        },
    )
}

/// The result of issuance.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Issued {
    /// Holder id.
    pub holder_id: String,
    /// Holder certificate (DER, hex in JSON).
    #[serde(serialize_with = "ser_hex")]
    pub holder_cert_der: Vec<u8>,
    /// Algorithm of the new management key.
    pub mgmt_alg: u8,
}

/// Issues a factory-fresh PIV card as a PHR card: holder key generated on the card in 9A,
/// holder certificate from `ca`, CHUID, a random management key (kept in the PIN-protected
/// object 5FC109, Yubico's layout) replacing the default, then PUK and PIN changed.
pub fn issue<T: CardTransport + ?Sized>(
    t: &mut T,
    ca: &PhrIssuerCa,
    req: &IssueRequest<'_>,
) -> Result<Issued, PhrError> {
    if req.holder_id.is_empty() || req.holder_id.len() > 64 {
        return Err(PhrError::Format(ConsentFormatError::Field {
            field: "holder id",
            reason: "1–64 bytes".into(),
        }));
    }
    session(t, |t| {
        let mut piv = Piv::select(&mut *t)?;
        if let Some(content) = piv.get_data(object::AUTH_CERT)? {
            let holder_id = cert_from_object(&content)
                .ok()
                .and_then(|der| holder_key_of(&der).ok())
                .map_or_else(|| "unreadable".to_owned(), |h| h.holder_id);
            return Err(PhrError::AlreadyIssued { holder_id });
        }
        piv.authenticate_admin(&ManagementKey::factory_default())
            .map_err(PhrError::NotFactoryFresh)?;
        let public = piv.generate_p256(slot::AUTHENTICATION)?;
        let cert = ca
            .issue_holder(&public, req.holder_id, req.not_after)
            .map_err(|e| PhrError::Certificate(e.to_string()))?;
        piv.put_data(object::AUTH_CERT, &cert_object(&cert))?;
        piv.put_data(object::CHUID, &chuid())?;
        let new_key = ManagementKey::random(req.mgmt_alg)
            .map_err(|e| PhrError::Certificate(e.to_string()))?;
        // Store the new key first (still under the default key): if setting it then fails, the
        // card keeps the default key and can be issued again.
        let mut stored = Zeroizing::new(Vec::new());
        tlv::push(&mut stored, 0x89, new_key.bytes());
        let stored = Zeroizing::new(tlv::encode(0x88, &stored));
        piv.put_data(MGMT_KEY_OBJECT, &stored)?;
        piv.set_management_key(&new_key)?;
        piv.change_puk(req.factory_puk, req.new_puk)?;
        piv.change_pin(req.factory_pin, req.new_pin)?;
        Ok(Issued {
            holder_id: req.holder_id.to_owned(),
            holder_cert_der: cert,
            mgmt_alg: new_key.algorithm(),
        })
    })
}

/// A CHUID (SP 800-73-4 Part 1 §3.1.2) with a random GUID, as OpenSC and yubico-piv-tool expect.
fn chuid() -> Vec<u8> {
    // FASC-N of the all-nines test credential, as card management tools write it.
    const FASCN: [u8; 25] = [
        0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68, 0x58, 0x21,
        0x08, 0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB,
    ];
    let mut guid = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut guid);
    let mut out = tlv::encode(0x30, &FASCN);
    tlv::push(&mut out, 0x34, &guid);
    tlv::push(&mut out, 0x35, b"20451231");
    tlv::push(&mut out, 0x3E, &[]);
    tlv::push(&mut out, 0xFE, &[]);
    out
}

fn read_mgmt_key<T: CardTransport>(
    piv: &mut Piv<T, PinVerified>,
) -> Result<ManagementKey, PhrError> {
    let content = Zeroizing::new(
        piv.get_data(MGMT_KEY_OBJECT)?
            .ok_or_else(|| PhrError::ManagementKeyMissing("absent".into()))?,
    );
    let inner = tlv::parse_single(&content, 0x88)
        .map_err(|e| PhrError::ManagementKeyMissing(e.to_string()))?;
    let key = tlv::find(inner, 0x89)
        .map_err(|e| PhrError::ManagementKeyMissing(e.to_string()))?
        .ok_or_else(|| PhrError::ManagementKeyMissing("no key (89)".into()))?;
    let alg = match key.len() {
        24 => mgmt::ALG_3DES,
        32 => mgmt::ALG_AES256,
        n => return Err(PhrError::ManagementKeyMissing(format!("{n}-byte key"))),
    };
    ManagementKey::from_parts(alg, key).map_err(|e| PhrError::ManagementKeyMissing(e.to_string()))
}

/// Signs with the 9A key through rcgen (for binding certificates).
struct CardSigner<'p, T: CardTransport> {
    piv: RefCell<&'p mut Piv<T, PinVerified>>,
    public: Vec<u8>,
    error: RefCell<Option<PivError>>,
}

impl<T: CardTransport> rcgen::PublicKeyData for CardSigner<'_, T> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl<T: CardTransport> rcgen::SigningKey for CardSigner<'_, T> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest: [u8; 32] = Sha256::digest(msg).into();
        self.piv
            .borrow_mut()
            .sign_p256(slot::AUTHENTICATION, &digest)
            .map_err(|e| {
                *self.error.borrow_mut() = Some(e);
                rcgen::Error::RemoteKeyError
            })
    }
}

/// Links a service: a P-256 key generated on the card in the first free retired slot (from 82),
/// and a service-binding certificate (signed by the holder key) in that slot's object.
pub fn link<T: CardTransport + ?Sized>(
    t: &mut T,
    pin: &PivPin,
    last_try: LastTry,
    service: &str,
    pseudonym: &str,
) -> Result<LinkedService, PhrError> {
    check_link_names(service, pseudonym)?;
    session(t, |t| {
        let mut piv = Piv::select(&mut *t)?;
        let snap = snapshot(&mut piv)?;
        let holder = snap.holder()?.clone();
        let key_slot = slot_for_link(&snap, service)?;
        let mut piv = piv.verify_pin(pin, last_try)?;
        link_verified(&mut piv, &holder, key_slot, service, pseudonym)
    })
}

/// The rules of a service id and a pseudonym, checked before anything is sent to the card.
pub fn check_link_names(service: &str, pseudonym: &str) -> Result<(), PhrError> {
    super::consent::check_service_id(service)?;
    if pseudonym.is_empty() || pseudonym.len() > 64 {
        return Err(PhrError::Format(ConsentFormatError::Field {
            field: "pseudonym",
            reason: "1–64 bytes".into(),
        }));
    }
    Ok(())
}

/// The slot a new link of `service` takes, or why there is none (already linked, card full);
/// decided from the snapshot, before the PIN.
pub(super) fn slot_for_link(snap: &Snapshot, service: &str) -> Result<u8, PhrError> {
    if let Some(s) = snap.services.iter().find(|s| s.service == service) {
        return Err(PhrError::AlreadyLinked {
            service: service.to_owned(),
            slot: s.slot,
        });
    }
    snap.free_slot
        .ok_or(PhrError::CardFull(slot::RETIRED_COUNT))
}

/// After VERIFY PIN: generates the service key in `key_slot`, certifies it with the holder key,
/// checks the certificate and stores it.
pub(super) fn link_verified<T: CardTransport>(
    piv: &mut Piv<T, PinVerified>,
    holder: &verify::HolderCert,
    key_slot: u8,
    service: &str,
    pseudonym: &str,
) -> Result<LinkedService, PhrError> {
    let key = read_mgmt_key(piv)?;
    piv.authenticate_admin(&key)?;
    let public = piv.generate_p256(key_slot)?;
    let cert = binding_certificate(piv, holder, &public, service, pseudonym)?;
    let verified =
        verify::verify_binding(&cert, holder, OffsetDateTime::now_utc().unix_timestamp())
            .map_err(|_| PhrError::CardSignatureMismatch)?;
    let tag = object::cert_for_slot(key_slot).ok_or(PhrError::CardFull(slot::RETIRED_COUNT))?;
    piv.put_data(tag, &cert_object(&cert))?;
    Ok(LinkedService {
        slot: key_slot,
        service: verified.service,
        pseudonym: verified.pseudonym,
        verified: true,
        cert_der: cert,
    })
}

fn binding_certificate<T: CardTransport>(
    piv: &mut Piv<T, PinVerified>,
    holder: &verify::HolderCert,
    public: &p256::PublicKey,
    service: &str,
    pseudonym: &str,
) -> Result<Vec<u8>, PhrError> {
    use p256::pkcs8::EncodePublicKey;
    use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose};
    let cert_err = |e: String| PhrError::Certificate(e);
    let spki = public
        .to_public_key_der()
        .map_err(|e| cert_err(e.to_string()))?;
    let subject_key = rcgen::SubjectPublicKeyInfo::from_der(spki.as_bytes())
        .map_err(|e| cert_err(e.to_string()))?;
    let signer = CardSigner {
        public: holder.key.to_encoded_point(false).as_bytes().to_vec(),
        piv: RefCell::new(piv),
        error: RefCell::new(None),
    };
    let issuer = Issuer::from_ca_cert_der(&holder.der.as_slice().into(), &signer)
        .map_err(|e| cert_err(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, verify::BINDING_ORG);
    dn.push(DnType::OrganizationalUnitName, service);
    dn.push(DnType::CommonName, pseudonym);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365 * 10);
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
    serial[0] &= 0x7F;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let result = params.signed_by(&subject_key, &issuer);
    drop(issuer);
    if let Some(e) = signer.error.into_inner() {
        return Err(PhrError::Piv(e));
    }
    Ok(result.map_err(|e| cert_err(e.to_string()))?.der().to_vec())
}

/// What a consent grant asks for.
#[derive(Debug, Clone)]
pub struct ConsentRequest {
    /// Service id (must be linked).
    pub service: String,
    /// Categories granted.
    pub categories: Vec<Category>,
    /// Purpose.
    pub purpose: String,
    /// Valid from (Unix seconds).
    pub not_before: u32,
    /// Valid until (Unix seconds).
    pub not_after: u32,
}

impl ConsentRequest {
    /// The terms of its grant record (`slot_of` finds the service's slot).
    pub(super) fn grant_terms(&self, slot_of: SlotOf<'_>) -> Result<Terms, PhrError> {
        Ok((
            slot_of(&self.service)?,
            ConsentStatus::Granted,
            self.categories.clone(),
            self.purpose.clone(),
            self.not_before,
            self.not_after,
        ))
    }
}

/// The terms of a record revoking `current` at `now`: the same categories and purpose, valid
/// from now until the later of its end and now + 1 s.
pub(super) fn revoked_terms(slot: u8, current: &ConsentRecord, now: u32) -> Terms {
    (
        slot,
        ConsentStatus::Revoked,
        current.terms.categories.clone(),
        current.terms.purpose.clone(),
        now,
        current.terms.not_after.max(now.saturating_add(1)),
    )
}

/// A consent record written to the card.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsentWritten {
    /// The record.
    pub record: ConsentRecord,
    /// Its encoding (hex in JSON): what a gateway verifies.
    #[serde(serialize_with = "ser_hex")]
    pub record_bytes: Vec<u8>,
    /// Generation of the consent set now current.
    pub generation: u32,
    /// The object written.
    pub object: String,
}

/// Grants consent: a new record (version = highest on the card + 1) signed by the holder key,
/// in a new consent set written to the object that does not hold the current one.
///
/// `expected_generation` is the consent generation the caller showed the person (0 = none); if
/// the card holds another, someone else wrote meanwhile and nothing is written.
pub fn grant<T: CardTransport + ?Sized>(
    t: &mut T,
    pin: &PivPin,
    last_try: LastTry,
    request: &ConsentRequest,
    expected_generation: Option<u32>,
    now: u32,
) -> Result<ConsentWritten, PhrError> {
    write_consent(
        t,
        pin,
        last_try,
        expected_generation,
        now,
        |slot_of, _| request.grant_terms(slot_of),
        &request.service,
    )
}

/// Revokes the granted consent of `service`: a new record with status revoked (same categories
/// and purpose, valid from now), superseding the grant.
pub fn revoke<T: CardTransport + ?Sized>(
    t: &mut T,
    pin: &PivPin,
    last_try: LastTry,
    service: &str,
    expected_generation: Option<u32>,
    now: u32,
) -> Result<ConsentWritten, PhrError> {
    write_consent(
        t,
        pin,
        last_try,
        expected_generation,
        now,
        |slot_of, set| {
            let slot = slot_of(service)?;
            let current = set
                .for_service(service)
                .filter(|r| r.terms.status == ConsentStatus::Granted)
                .ok_or_else(|| PhrError::NothingToRevoke {
                    service: service.to_owned(),
                })?;
            Ok(revoked_terms(slot, current, now))
        },
        service,
    )
}

/// The terms of a record to write: slot, status, categories, purpose, not before, not after.
pub(super) type Terms = (u8, ConsentStatus, Vec<Category>, String, u32, u32);

/// How a write finds a service's slot (`Err(NotLinked)` when it has none).
pub(super) type SlotOf<'a> = &'a dyn Fn(&str) -> Result<u8, PhrError>;

fn write_consent<T: CardTransport + ?Sized>(
    t: &mut T,
    pin: &PivPin,
    last_try: LastTry,
    expected_generation: Option<u32>,
    now: u32,
    make: impl FnOnce(SlotOf<'_>, &ConsentSet) -> Result<Terms, PhrError>,
    service: &str,
) -> Result<ConsentWritten, PhrError> {
    super::consent::check_service_id(service)?;
    session(t, |t| {
        let mut piv = Piv::select(&mut *t)?;
        let snap = snapshot(&mut piv)?;
        let plan = plan_write(&snap, expected_generation, now, service, None, make)?;
        let mut piv = piv.verify_pin(pin, last_try)?;
        finish_write(&mut piv, plan)
    })
}

/// A consent write decided before the PIN is sent: the record's terms and the set it goes into.
pub(super) struct PlannedWrite {
    holder: verify::HolderCert,
    terms: ConsentTerms,
    digest: [u8; 32],
    next: ConsentSet,
    target: u32,
}

/// Everything a consent write checks before the PIN: no corrupt consent object, the generation
/// the caller expects, the terms `make` builds (the service's slot from the snapshot, or
/// `linking` when the same session links the service first), the size of the new set.
pub(super) fn plan_write(
    snap: &Snapshot,
    expected_generation: Option<u32>,
    now: u32,
    service: &str,
    linking: Option<u8>,
    make: impl FnOnce(SlotOf<'_>, &ConsentSet) -> Result<Terms, PhrError>,
) -> Result<PlannedWrite, PhrError> {
    let holder = snap.holder()?.clone();
    if let Some((object, reason)) = snap.first_corrupt_consent() {
        return Err(PhrError::CorruptObject { object, reason });
    }
    let (active_tag, current) = match snap.active() {
        Some((tag, set)) => (Some(tag), set.clone()),
        None => (None, ConsentSet::default()),
    };
    if let Some(expected) = expected_generation
        && expected != current.generation
    {
        return Err(PhrError::ConcurrentUpdate {
            expected,
            found: current.generation,
        });
    }
    let slot_of = |s: &str| -> Result<u8, PhrError> {
        snap.services
            .iter()
            .find(|l| l.service == s)
            .map(|l| l.slot)
            .or(linking.filter(|_| s == service))
            .ok_or_else(|| PhrError::NotLinked {
                service: s.to_owned(),
            })
    };
    let (key_slot, status, categories, purpose, not_before, not_after) = make(&slot_of, &current)?;
    let terms = ConsentTerms {
        version: current.max_version() + 1,
        service: service.to_owned(),
        slot: key_slot,
        status,
        categories,
        purpose,
        not_before,
        not_after,
        signed_at: now,
    };
    let digest = terms.digest()?;
    let mut next = current.clone();
    // Size check with a maximal signature before anything is sent.
    next.put(ConsentRecord {
        terms: terms.clone(),
        signature: vec![0x30; super::consent::MAX_SIGNATURE_LEN],
    });
    next.generation = current.generation + 1;
    let worst = next.encode()?.len();
    if worst > MAX_OBJECT_LEN {
        return Err(PhrError::ConsentStoreFull {
            bytes: worst,
            max: MAX_OBJECT_LEN,
        });
    }
    let target = match active_tag {
        Some(tag) if tag == CONSENT_OBJECTS[0] => CONSENT_OBJECTS[1],
        _ => CONSENT_OBJECTS[0],
    };
    Ok(PlannedWrite {
        holder,
        terms,
        digest,
        next,
        target,
    })
}

/// After VERIFY PIN: signs the planned record with 9A, checks the signature against the holder
/// certificate, writes the new set into the other object and reads it back.
pub(super) fn finish_write<T: CardTransport>(
    piv: &mut Piv<T, PinVerified>,
    plan: PlannedWrite,
) -> Result<ConsentWritten, PhrError> {
    let PlannedWrite {
        holder,
        terms,
        digest,
        mut next,
        target,
    } = plan;
    let signature = holder_sign(piv, &holder, &digest)?;
    let record = ConsentRecord { terms, signature };
    let record_bytes = record.encode()?;
    next.put(record.clone());
    let encoded = next.encode()?;
    let key = read_mgmt_key(piv)?;
    piv.authenticate_admin(&key)?;
    match piv.put_data(target, &encoded) {
        Ok(()) => {}
        Err(PivError::OutOfMemory { .. }) => {
            return Err(PhrError::ConsentStoreFull {
                bytes: encoded.len(),
                max: MAX_OBJECT_LEN,
            });
        }
        Err(e) => return Err(e.into()),
    }
    if piv.get_data(target)?.as_deref() != Some(encoded.as_slice()) {
        return Err(PhrError::WriteNotPersisted(target));
    }
    Ok(ConsentWritten {
        record,
        record_bytes,
        generation: next.generation,
        object: format!("{target:06X}"),
    })
}

/// Signs `digest` with the holder key (slot 9A) and checks the signature against the holder
/// certificate; returns it DER-encoded, as the card gave it.
fn holder_sign<T: CardTransport>(
    piv: &mut Piv<T, PinVerified>,
    holder: &verify::HolderCert,
    digest: &[u8; 32],
) -> Result<Vec<u8>, PhrError> {
    let signature = piv.sign_p256(slot::AUTHENTICATION, digest)?;
    let sig = p256::ecdsa::Signature::from_der(&signature)
        .map_err(|_| PhrError::CardSignatureMismatch)?;
    holder
        .key
        .verify_prehash(digest, &sig)
        .map_err(|_| PhrError::CardSignatureMismatch)?;
    Ok(signature)
}

/// A challenge signed by the holder key: the PHR card's sign-in (and consent) token signature.
#[derive(Debug, Clone)]
pub struct HolderSignature {
    /// The holder certificate (slot 9A), DER.
    pub certificate: Vec<u8>,
    /// ECDSA P-256 over SHA-256(challenge), IEEE P1363 (`r ‖ s`, 64 bytes: JWS `ES256`).
    pub signature: Vec<u8>,
}

/// The holder certificate and PIN counter, read without a PIN (no try spent).
pub fn holder_and_pin_state<T: CardTransport + ?Sized>(
    t: &mut T,
) -> Result<(verify::HolderCert, PinState), PhrError> {
    session(t, |t| {
        let mut piv = Piv::select(&mut *t)?;
        let holder = read_holder(&mut piv)?;
        Ok((holder, piv.pin_state()?))
    })
}

fn read_holder<T: CardTransport, S>(piv: &mut Piv<T, S>) -> Result<verify::HolderCert, PhrError> {
    let content = piv
        .get_data(object::AUTH_CERT)?
        .ok_or(PhrError::NotIssued)?;
    let der = cert_from_object(&content).map_err(|reason| PhrError::CorruptObject {
        object: object::AUTH_CERT,
        reason,
    })?;
    holder_key_of(&der)
}

/// Signs SHA-256(`challenge`) with the holder key after one VERIFY PIN (the sign-in token of
/// `docs/gateway-auth.md`); the signature is checked against the holder certificate first.
pub fn sign_challenge<T: CardTransport + ?Sized>(
    t: &mut T,
    pin: &PivPin,
    last_try: LastTry,
    challenge: &[u8],
) -> Result<HolderSignature, PhrError> {
    session(t, |t| {
        let mut piv = Piv::select(&mut *t)?;
        let holder = read_holder(&mut piv)?;
        let mut piv = piv.verify_pin(pin, last_try)?;
        holder_challenge_signature(&mut piv, &holder, challenge)
    })
}

/// The holder key's signature over SHA-256(`challenge`), in a session whose PIN is verified.
pub(super) fn holder_challenge_signature<T: CardTransport>(
    piv: &mut Piv<T, PinVerified>,
    holder: &verify::HolderCert,
    challenge: &[u8],
) -> Result<HolderSignature, PhrError> {
    let digest: [u8; 32] = Sha256::digest(challenge).into();
    let der = holder_sign(piv, holder, &digest)?;
    let signature = p256::ecdsa::Signature::from_der(&der)
        .map_err(|_| PhrError::CardSignatureMismatch)?
        .to_bytes()
        .to_vec();
    Ok(HolderSignature {
        certificate: holder.der.clone(),
        signature,
    })
}

/// A grant signed by a service's key on the card.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignedGrant {
    /// The grant.
    pub grant: ServiceGrant,
    /// Its encoding (hex in JSON): the signed bytes after the domain prefix.
    #[serde(serialize_with = "ser_hex")]
    pub grant_bytes: Vec<u8>,
    /// DER ECDSA signature by the service's slot key (hex in JSON).
    #[serde(serialize_with = "ser_hex")]
    pub signature: Vec<u8>,
    /// The service-binding certificate (hex in JSON).
    #[serde(serialize_with = "ser_hex")]
    pub binding_cert_der: Vec<u8>,
    /// The holder certificate (hex in JSON).
    #[serde(serialize_with = "ser_hex")]
    pub holder_cert_der: Vec<u8>,
}

/// Signs a service-specific grant with that service's key (the person's PIN is needed).
#[allow(clippy::too_many_arguments)]
pub fn sign_grant<T: CardTransport + ?Sized>(
    t: &mut T,
    pin: &PivPin,
    last_try: LastTry,
    service: &str,
    audience: &str,
    nonce: &[u8],
    scope: Vec<Category>,
    now: u32,
    ttl_seconds: u32,
) -> Result<SignedGrant, PhrError> {
    session(t, |t| {
        let mut piv = Piv::select(&mut *t)?;
        let snap = snapshot(&mut piv)?;
        let holder = snap.holder()?.clone();
        let linked = snap
            .services
            .iter()
            .find(|s| s.service == service)
            .ok_or_else(|| PhrError::NotLinked {
                service: service.to_owned(),
            })?;
        let binding = verify::verify_binding(
            &linked.cert_der,
            &holder,
            OffsetDateTime::now_utc().unix_timestamp(),
        )?;
        let grant = ServiceGrant {
            service: binding.service.clone(),
            pseudonym: binding.pseudonym.clone(),
            audience: audience.to_owned(),
            nonce: nonce.to_vec(),
            issued_at: now,
            expires_at: now.saturating_add(ttl_seconds.max(1)),
            scope,
        };
        let grant_bytes = grant.encode()?;
        let digest = ServiceGrant::digest_of(&grant_bytes);
        let mut piv = piv.verify_pin(pin, last_try)?;
        let signature = piv.sign_p256(linked.slot, &digest)?;
        let sig = p256::ecdsa::Signature::from_der(&signature)
            .map_err(|_| PhrError::CardSignatureMismatch)?;
        binding
            .key
            .verify_prehash(&digest, &sig)
            .map_err(|_| PhrError::CardSignatureMismatch)?;
        Ok(SignedGrant {
            grant,
            grant_bytes,
            signature,
            binding_cert_der: linked.cert_der.clone(),
            holder_cert_der: holder.der.clone(),
        })
    })
}
