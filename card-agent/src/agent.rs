//! What the agent does with a card in a reader: identify it, show it, sign a challenge, write a
//! kiosk consent to a PHR card, link a source and sign its grant (PHR card, DESIGN §4).
//!
//! Card type comes from SELECT of the application (JPKI AP, else PIV with a PHR holder
//! certificate), never from the ATR. Each operation runs on any [`CardTransport`]: a PC/SC
//! transaction or an in-process virtual card; [`CardAgent`] is the localhost API's card over any
//! [`CardReader`].

use crate::certinfo::CertificateSummary;
use crate::jpki::{Jpki, JpkiError, PinState};
use crate::phr::card::{PhrError, SignedGrant};
use crate::phr::consent::Category;
use crate::phr::kiosk::{KioskConsent, KioskConsentError};
use crate::pin::{JpkiAuthPin, JpkiAuthPinFormat, LastTry, PinFormat, PinReadError};
use crate::piv::{PivError, PivPin, PivPinFormat};
use crate::transport::CardTransport;
use sha2::{Digest, Sha256};
use std::io::BufRead;

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
    /// An issued PHR card (PIV application with a holder certificate in slot 9A).
    Phr {
        /// The holder's pseudonymous id.
        holder_id: String,
        /// The holder certificate (slot 9A).
        holder_certificate: Box<CertificateSummary>,
        /// The PIN counter (read without spending a try).
        pin: PinState,
        /// Services with a key on the card.
        linked_services: Vec<String>,
    },
    /// A card this agent has no application for.
    Unknown,
}

/// The two cards the agent works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardKind {
    /// My Number card: JPKI 利用者証明用 key (RSA-2048), 4-digit PIN.
    MyNumber,
    /// PHR card: holder key (P-256) in PIV slot 9A, 6–8 character PIN.
    Phr,
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
    /// The PHR card application failed.
    #[error(transparent)]
    Phr(#[from] PhrError),
    /// A kiosk consent the card cannot hold (the document, its categories or period); the card's
    /// own failures during a consent are [`AgentError::Phr`], like every other operation's.
    #[error(transparent)]
    KioskConsent(KioskConsentError),
    /// The card is not one this operation works with.
    #[error("this card is neither a My Number card nor an issued PHR card")]
    NotSupported,
    /// The PIN prompt answered with another kind of card's PIN (nothing was sent to the card).
    #[error("the PIN entered is for a {entered:?} card, the card in the reader is a {card:?} card")]
    PinKindMismatch {
        /// The card in the reader.
        card: CardKind,
        /// What the prompt gave.
        entered: CardKind,
    },
    /// The card in the reader changed between reading it and signing (another kind of card).
    #[error("the card in the reader changed during the operation")]
    CardChanged,
    /// Links and grants need a PHR card (a My Number card holds no service keys).
    #[error("this needs a PHR card; the card in the reader is a My Number card")]
    PhrCardRequired,
    /// The grant asked for ends before now (nothing was asked or signed).
    #[error("the grant's validity has already ended")]
    GrantExpired,
    /// A consent to a partner named a pseudonym (partners are linked under a random one).
    #[error("only a source consent names the person's pseudonym")]
    PseudonymForPartner,
    /// The service id or pseudonym of a link does not fit the card (nothing was sent to it).
    #[error("bad link name: {0}")]
    BadLinkName(PhrError),
    /// No reader holds a card.
    #[error("no card in any reader")]
    NoCard,
    /// The person did not enter a usable PIN (nothing was sent to the card).
    #[error("PIN entry: {0}")]
    PinEntry(#[from] PinReadError),
}

impl From<KioskConsentError> for AgentError {
    fn from(e: KioskConsentError) -> Self {
        match e {
            KioskConsentError::Card(e) => AgentError::Phr(e),
            e => AgentError::KioskConsent(e),
        }
    }
}

/// Identifies the card and reads what can be read without a PIN (spends no PIN try).
pub fn read_card_info<T: CardTransport>(mut transport: T) -> Result<CardInfo, AgentError> {
    let mut jpki = match Jpki::select(&mut transport) {
        Ok(jpki) => jpki,
        Err(JpkiError::NotJpki) => return read_phr_info(&mut transport),
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

/// A PHR card's holder, PIN counter and links; [`CardInfo::Unknown`] for a card that is not
/// an issued PHR card.
fn read_phr_info<T: CardTransport + ?Sized>(t: &mut T) -> Result<CardInfo, AgentError> {
    let view = match crate::phr::card::read_card(t) {
        Ok(view) => view,
        Err(PhrError::Piv(PivError::NotPiv)) => return Ok(CardInfo::Unknown),
        Err(e) => return Err(e.into()),
    };
    let (Some(holder_id), Some(der)) = (view.holder_id, view.holder_cert_der) else {
        return Ok(CardInfo::Unknown);
    };
    Ok(CardInfo::Phr {
        holder_id,
        holder_certificate: Box::new(CertificateSummary::from_der(&der)?),
        pin: view.pin,
        linked_services: view.services.into_iter().map(|s| s.service).collect(),
    })
}

/// A challenge signed by the card.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignedChallenge {
    /// JWS name of the signature algorithm: `RS256` (My Number: RSA PKCS#1 v1.5 with SHA-256)
    /// or `ES256` (PHR card: ECDSA P-256 with SHA-256, `r ‖ s`).
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

/// What the PIN will unlock the card for, shown by the agent's own prompt before the PIN is typed.
#[derive(Debug, Clone)]
pub enum Signing {
    /// Sign a challenge of the page's origin (sign-in, or a step the gateway confirms by card).
    Challenge,
    /// Write this consent change to the card (PHR card) and sign its document.
    Consent(KioskConsent),
    /// Make a source's key on the PHR card for the person's pseudonym there.
    Link(LinkToSign),
    /// Sign a source's grant with its key on the PHR card.
    Grant(GrantToSign),
}

impl Signing {
    /// One line in Japanese for the prompt.
    pub fn describe(&self) -> String {
        match self {
            Signing::Challenge => "カードでの本人確認（署名）".to_owned(),
            Signing::Consent(c) => {
                let action = match c.action {
                    crate::phr::kiosk::KioskAction::Grant => "同意",
                    crate::phr::kiosk::KioskAction::Revoke => "同意の取り消し",
                };
                let categories = if c.categories.is_empty() {
                    String::new()
                } else {
                    format!("（{}）", c.categories.join("、"))
                };
                format!("{} への{action}{categories}", c.service)
            }
            Signing::Link(l) => {
                format!("{} とのカード連携（利用者番号 {}）", l.service, l.pseudonym)
            }
            Signing::Grant(g) => {
                let scope: Vec<String> = g.scope.iter().map(ToString::to_string).collect();
                format!(
                    "{} からの取り込みの許可（{}、{} まで）",
                    g.service,
                    scope.join("、"),
                    ymd(g.expires_at)
                )
            }
        }
    }
}

/// `2027年4月1日` of a Unix time (UTC).
fn ymd(unix: u32) -> String {
    match time::OffsetDateTime::from_unix_timestamp(i64::from(unix)) {
        Ok(t) => format!("{}年{}月{}日", t.year(), u8::from(t.month()), t.day()),
        Err(_) => unix.to_string(),
    }
}

/// What the person is asked when a PIN is needed.
#[derive(Debug, Clone, Copy)]
pub struct PinRequest<'a> {
    /// The web origin asking for the signature.
    pub origin: &'a str,
    /// Tries left on the card (read without spending one).
    pub tries_left: u8,
    /// Whose PIN: the card in the reader.
    pub card: CardKind,
    /// What the signature is for.
    pub signing: &'a Signing,
}

/// A PIN as entered, checked against its card's format.
pub enum EnteredPin {
    /// The JPKI 利用者証明用 PIN.
    MyNumber(JpkiAuthPin),
    /// The PHR card (PIV) PIN.
    Phr(PivPin),
}

impl EnteredPin {
    /// Which card the PIN is for.
    pub fn kind(&self) -> CardKind {
        match self {
            EnteredPin::MyNumber(_) => CardKind::MyNumber,
            EnteredPin::Phr(_) => CardKind::Phr,
        }
    }

    /// Reads one line of `input` as the PIN of a `card` (see [`crate::pin::read_pin_line`]).
    pub fn read_line(card: CardKind, input: &mut impl BufRead) -> Result<Self, PinReadError> {
        Ok(match card {
            CardKind::MyNumber => EnteredPin::MyNumber(crate::pin::read_pin_line(input)?),
            CardKind::Phr => EnteredPin::Phr(crate::pin::read_pin_line(input)?),
        })
    }

    /// Asks on the terminal, without echo, for the PIN of a `card`.
    pub fn prompt(card: CardKind, prompt: &str) -> Result<Self, PinReadError> {
        Ok(match card {
            CardKind::MyNumber => EnteredPin::MyNumber(crate::pin::prompt_pin(prompt)?),
            CardKind::Phr => EnteredPin::Phr(crate::pin::prompt_pin(prompt)?),
        })
    }
}

impl std::fmt::Debug for EnteredPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnteredPin({:?}, <redacted>)", self.kind())
    }
}

/// The person's answer.
pub struct PinAnswer {
    /// The PIN, format-checked.
    pub pin: EnteredPin,
    /// Whether the person confirmed using the last try.
    pub last_try: LastTry,
}

/// The agent's own PIN entry (terminal, standard input, a pinpad): never the web page.
pub trait PinPrompt: Send + Sync {
    /// Asks for the PIN for one operation.
    fn ask(&self, request: &PinRequest<'_>) -> Result<PinAnswer, PinReadError>;
}

/// What is known before the PIN is asked: the card, its certificate and its counter.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The card in the reader.
    pub card: CardKind,
    /// Its signing certificate (JPKI auth, or the PHR holder certificate), DER.
    pub certificate: Vec<u8>,
    /// Tries left (> 0: a blocked card ends in a `PinBlocked` error).
    pub tries_left: u8,
}

/// First half of an authentication: identify the card, read its certificate and PIN counter.
pub fn prepare_authentication<T: CardTransport>(mut transport: T) -> Result<Prepared, AgentError> {
    let mut jpki = match Jpki::select(&mut transport) {
        Ok(jpki) => jpki,
        Err(JpkiError::NotJpki) => return prepare_phr(&mut transport),
        Err(e) => return Err(e.into()),
    };
    let certificate = jpki.read_auth_certificate()?;
    let tries_left = match jpki.auth_pin_state()? {
        PinState::Blocked | PinState::TriesLeft(0) => return Err(JpkiError::PinBlocked.into()),
        PinState::TriesLeft(n) => n,
        PinState::Verified => crate::jpki::AUTH_PIN_MAX_TRIES,
    };
    Ok(Prepared {
        card: CardKind::MyNumber,
        certificate,
        tries_left,
    })
}

fn prepare_phr<T: CardTransport + ?Sized>(t: &mut T) -> Result<Prepared, AgentError> {
    let (holder, pin) = match crate::phr::card::holder_and_pin_state(t) {
        Ok(found) => found,
        Err(PhrError::Piv(PivError::NotPiv) | PhrError::NotIssued) => {
            return Err(AgentError::NotSupported);
        }
        Err(e) => return Err(e.into()),
    };
    phr_prepared(holder.der, pin)
}

/// A PHR card's [`Prepared`]: its holder certificate and PIN counter (a blocked PIN refused).
fn phr_prepared(holder_der: Vec<u8>, pin: PinState) -> Result<Prepared, AgentError> {
    let tries_left = match pin {
        PinState::Blocked | PinState::TriesLeft(0) => {
            return Err(PhrError::Piv(PivError::PinBlocked).into());
        }
        PinState::TriesLeft(n) => n,
        PinState::Verified => crate::piv::PIN_MAX_TRIES,
    };
    Ok(Prepared {
        card: CardKind::Phr,
        certificate: holder_der,
        tries_left,
    })
}

/// Signs SHA-256(`challenge`) with the PHR card's holder key after one PIN verification.
pub fn sign_challenge_phr<T: CardTransport>(
    mut transport: T,
    pin: &PivPin,
    last_try: LastTry,
    challenge: &[u8],
) -> Result<SignedChallenge, AgentError> {
    let signed = crate::phr::card::sign_challenge(&mut transport, pin, last_try, challenge)?;
    Ok(signed.into())
}

impl From<crate::phr::card::HolderSignature> for SignedChallenge {
    fn from(signed: crate::phr::card::HolderSignature) -> Self {
        SignedChallenge {
            algorithm: "ES256",
            certificate: signed.certificate,
            signature: signed.signature,
        }
    }
}

/// The PIN format's name, for prompts.
fn pin_name(card: CardKind) -> &'static str {
    match card {
        CardKind::MyNumber => JpkiAuthPinFormat::NAME,
        CardKind::Phr => PivPinFormat::NAME,
    }
}

/// Reads PINs as lines of standard input, one per request (automation and tests).
pub struct StdinPrompt {
    /// Whether a PIN may be used at one try left.
    pub confirm_last_try: bool,
}

impl PinPrompt for StdinPrompt {
    fn ask(&self, request: &PinRequest<'_>) -> Result<PinAnswer, PinReadError> {
        eprintln!(
            "{} PIN requested by {} for {} ({} tries left): reading a line of standard input",
            pin_name(request.card),
            request.origin,
            request.signing.describe(),
            request.tries_left
        );
        let pin = EnteredPin::read_line(request.card, &mut std::io::stdin().lock())?;
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
        let (card, pin_label) = match request.card {
            CardKind::MyNumber => ("マイナンバーカード", "利用者証明用 PIN（4桁"),
            CardKind::Phr => ("PHRカード", "PHRカードの PIN（6〜8桁"),
        };
        eprintln!("{} が{card}での署名を求めています。", request.origin);
        eprintln!("内容: {}", request.signing.describe());
        match request.signing {
            Signing::Consent(c) => eprintln!("利用目的: {}", c.purpose),
            Signing::Grant(g) => eprintln!("取り込む先: {}", g.audience),
            Signing::Challenge | Signing::Link(_) => {}
        }
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
        let prompt = format!("{pin_label}、残り{}回）: ", request.tries_left);
        let pin = EnteredPin::prompt(request.card, &prompt)?;
        Ok(PinAnswer { pin, last_try })
    }
}

/// Exclusive access to the card in the agent's reader, one session at a time.
pub trait CardReader: Send + Sync + 'static {
    /// Runs `f` in one exclusive session with the card (a PC/SC transaction, or the virtual
    /// card's lock); no other application's commands interleave.
    fn session<R>(
        &self,
        f: impl FnOnce(&mut dyn CardTransport) -> Result<R, AgentError>,
    ) -> Result<R, AgentError>;
}

impl<C: crate::virtual_card::VirtualCard + Send + 'static> CardReader
    for crate::virtual_card::InProcess<C>
{
    fn session<R>(
        &self,
        f: impl FnOnce(&mut dyn CardTransport) -> Result<R, AgentError>,
    ) -> Result<R, AgentError> {
        f(&mut self.clone())
    }
}

/// A consent change as the kiosk page hands it over (`POST /v1/consent`), made by
/// [`ConsentToSign::from_request`]: the document's hash is the nonce, and its origin is the page's.
#[derive(Debug, Clone)]
pub struct ConsentToSign {
    /// The gateway's prepared document, parsed.
    pub consent: KioskConsent,
    /// Every category the gateway knows (its wire form), for the card mapping.
    pub known_categories: Vec<String>,
    /// What kind of service the document is for.
    pub service_kind: ServiceKind,
    /// A source only: the person's pseudonym there (from its enrollment letter), under which a
    /// card not yet linked to the source is linked in the same session.
    pub pseudonym: Option<String>,
}

/// Why a consent request is refused before the card is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    /// The nonce is not base64(SHA-256(document)): the card would write one document and sign
    /// another.
    #[error("the nonce is not the hash of the document")]
    DocumentMismatch,
    /// The document does not parse as a kiosk consent.
    #[error("the consent document does not parse")]
    BadDocument,
    /// The document names another origin than the page's.
    #[error("the consent document names another origin than the page's")]
    DocumentOrigin,
}

impl ConsentToSign {
    /// The page's consent request for the page at `origin`: `nonce` must be
    /// base64(SHA-256(`document`)) and the document must name `origin`.
    pub fn from_request(
        origin: &str,
        nonce: &str,
        document: &str,
        known_categories: Vec<String>,
        service_kind: ServiceKind,
        pseudonym: Option<String>,
    ) -> Result<Self, ConsentRefusal> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        if b64.encode(Sha256::digest(document.as_bytes())) != nonce {
            return Err(ConsentRefusal::DocumentMismatch);
        }
        let consent =
            KioskConsent::from_document(document).map_err(|_| ConsentRefusal::BadDocument)?;
        if consent.origin.as_deref() != Some(origin) {
            return Err(ConsentRefusal::DocumentOrigin);
        }
        Ok(ConsentToSign {
            consent,
            known_categories,
            service_kind,
            pseudonym,
        })
    }
}

/// A partner may be linked on first consent under a random pseudonym; a source knows the person
/// under the pseudonym of its enrollment, so its link is made with that (kiosk API, `phr link`)
/// and a consent to a source the card is not linked to yet is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// A partner PHR service (reads through the gateway).
    #[default]
    Partner,
    /// A data source (health-check provider, insurer, occupational-physician cloud).
    Source,
}

/// A link the kiosk page asks for (`POST /v1/link`): the source's key made on the PHR card for
/// the person's pseudonym there (from the source's enrollment letter).
#[derive(Debug, Clone)]
pub struct LinkToSign {
    /// The source's service id.
    pub service: String,
    /// The person's pseudonymous id at the source.
    pub pseudonym: String,
}

/// The certificates the gateway hands to the source.
#[derive(Debug, Clone)]
pub struct Linked {
    /// The holder certificate (slot 9A), DER.
    pub holder_cert_der: Vec<u8>,
    /// The binding certificate of the source's key, DER.
    pub binding_cert_der: Vec<u8>,
}

/// A grant the gateway asked for (its `grant-request` answer), checked by the API: the card
/// signs it with the source's key, valid until `expires_at`.
#[derive(Debug, Clone)]
pub struct GrantToSign {
    /// The source's service id.
    pub service: String,
    /// Who may use the grant (the gateway's id).
    pub audience: String,
    /// The source's nonce, 32 bytes.
    pub nonce: Vec<u8>,
    /// The categories the gateway may pull (within the consent).
    pub scope: Vec<Category>,
    /// End of validity, Unix seconds (the consent's end).
    pub expires_at: u32,
}

impl GrantToSign {
    /// The fields of the gateway's `grant-request` answer, `None` unless each has its shape: a
    /// service id, an audience of 1–255 bytes, a 32-byte nonce (hex), as many categories as a
    /// grant on the card holds (1–[`MAX_CATEGORIES`](crate::phr::consent::MAX_CATEGORIES)).
    pub fn from_request(
        service: String,
        audience: String,
        nonce_hex: &str,
        scope: &[String],
        expires_at: u32,
    ) -> Option<Self> {
        crate::phr::consent::check_service_id(&service).ok()?;
        if audience.is_empty() || audience.len() > 255 {
            return None;
        }
        let nonce = hex::decode(nonce_hex).ok().filter(|n| n.len() == 32)?;
        if scope.is_empty() || scope.len() > crate::phr::consent::MAX_CATEGORIES {
            return None;
        }
        let scope = scope
            .iter()
            .map(|c| Category::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        Some(GrantToSign {
            service,
            audience,
            nonce,
            scope,
            expires_at,
        })
    }
}

/// A signed consent change: the token, and for a PHR card the record it now holds.
#[derive(Debug, Clone)]
pub struct ConsentSigned {
    /// The card's signature over the document's challenge.
    pub signed: SignedChallenge,
    /// The consent record written to the PHR card (tag `E1`); `None` for a My Number card.
    pub card_record: Option<Vec<u8>>,
}

/// The localhost API's card: any [`CardReader`] (PC/SC, or a virtual card in-process).
pub struct CardAgent<R> {
    reader: R,
}

impl<R: CardReader> CardAgent<R> {
    /// The agent over `reader`.
    pub fn new(reader: R) -> Self {
        CardAgent { reader }
    }

    /// Reads the card in one session: which card, its certificate, its PIN counter.
    fn prepare(&self) -> Result<Prepared, AgentError> {
        self.reader.session(|t| prepare_authentication(t))
    }

    /// [`Self::prepare`] and, for a PHR card when `with_view`, what the card holds (links,
    /// consents), in one session without the PIN.
    fn prepare_with_view(
        &self,
        with_view: bool,
    ) -> Result<(Prepared, Option<crate::phr::card::CardView>), AgentError> {
        self.reader.session(|t| {
            if with_view {
                // A PHR card is read once: the view holds its certificate and PIN counter.
                match crate::phr::card::read_card(&mut *t) {
                    Ok(view) => {
                        let Some(holder_der) = view.holder_cert_der.clone() else {
                            return Err(AgentError::NotSupported);
                        };
                        return Ok((phr_prepared(holder_der, view.pin)?, Some(view)));
                    }
                    // Not a PHR card: identified below.
                    Err(PhrError::Piv(PivError::NotPiv)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((prepare_authentication(&mut *t)?, None))
        })
    }

    /// [`Self::prepare_with_view`] for a PHR card only (links and grants).
    fn prepare_phr_card(&self) -> Result<(Prepared, crate::phr::card::CardView), AgentError> {
        match self.prepare_with_view(true)? {
            (prepared, Some(view)) => Ok((prepared, view)),
            (_, None) => Err(AgentError::PhrCardRequired),
        }
    }

    /// Asks the PIN of the prepared card. No card session is held while the person types
    /// (Windows ends idle PC/SC transactions after 5 s); the signing session reads the counter
    /// again before its VERIFY.
    fn ask(
        prompt: &dyn PinPrompt,
        origin: &str,
        prepared: &Prepared,
        signing: &Signing,
    ) -> Result<PinAnswer, AgentError> {
        let answer = prompt.ask(&PinRequest {
            origin,
            tries_left: prepared.tries_left,
            card: prepared.card,
            signing,
        })?;
        if answer.pin.kind() != prepared.card {
            return Err(AgentError::PinKindMismatch {
                card: prepared.card,
                entered: answer.pin.kind(),
            });
        }
        Ok(answer)
    }
}

/// A card of another kind than the one prepared: the operation stops (nothing was verified).
fn changed<T>(e: AgentError) -> Result<T, AgentError> {
    match e {
        AgentError::NotSupported
        | AgentError::Jpki(JpkiError::NotJpki)
        | AgentError::Phr(PhrError::Piv(PivError::NotPiv) | PhrError::NotIssued) => {
            Err(AgentError::CardChanged)
        }
        e => Err(e),
    }
}

impl<R: CardReader> crate::local_api::CardService for CardAgent<R> {
    fn status(&self) -> Result<CardInfo, AgentError> {
        self.reader.session(|t| read_card_info(t))
    }

    fn authenticate(
        &self,
        prompt: &dyn PinPrompt,
        origin: &str,
        signed_data: &[u8],
    ) -> Result<SignedChallenge, AgentError> {
        let prepared = self.prepare()?;
        let answer = Self::ask(prompt, origin, &prepared, &Signing::Challenge)?;
        self.reader
            .session(|t| match &answer.pin {
                EnteredPin::MyNumber(pin) => sign_challenge(
                    t,
                    pin,
                    answer.last_try,
                    signed_data,
                    Some(&prepared.certificate),
                ),
                EnteredPin::Phr(pin) => sign_challenge_phr(t, pin, answer.last_try, signed_data),
            })
            .or_else(changed)
    }

    fn consent(
        &self,
        prompt: &dyn PinPrompt,
        origin: &str,
        signed_data: &[u8],
        request: &ConsentToSign,
    ) -> Result<ConsentSigned, AgentError> {
        let service = &request.consent.service;
        if let Some(pseudonym) = &request.pseudonym {
            // A partner is linked under a random pseudonym; only a source names one.
            if request.service_kind != ServiceKind::Source {
                return Err(AgentError::PseudonymForPartner);
            }
            crate::phr::card::check_link_names(service, pseudonym)
                .map_err(AgentError::BadLinkName)?;
        }
        let is_source = request.service_kind == ServiceKind::Source;
        let (prepared, view) = self.prepare_with_view(is_source)?;
        if prepared.card == CardKind::Phr {
            // A consent the card cannot hold is refused before anyone types a PIN.
            request.consent.card_purpose()?;
            if request.consent.action == crate::phr::kiosk::KioskAction::Grant {
                request.consent.grant_request(&request.known_categories)?;
            }
            if let Some(view) = view {
                let pseudonym = request.pseudonym.as_deref();
                if view.link_for(service, pseudonym)?.is_none() && pseudonym.is_none() {
                    return Err(PhrError::NotLinked {
                        service: service.clone(),
                    }
                    .into());
                }
            }
        }
        let signing = Signing::Consent(request.consent.clone());
        let answer = Self::ask(prompt, origin, &prepared, &signing)?;
        self.reader
            .session(|t| match &answer.pin {
                EnteredPin::MyNumber(pin) => Ok(ConsentSigned {
                    signed: sign_challenge(
                        t,
                        pin,
                        answer.last_try,
                        signed_data,
                        Some(&prepared.certificate),
                    )?,
                    card_record: None,
                }),
                EnteredPin::Phr(pin) => {
                    let (written, signature) = crate::phr::kiosk::write_kiosk_consent_and_sign(
                        t,
                        pin,
                        answer.last_try,
                        &request.consent,
                        &request.known_categories,
                        request.pseudonym.as_deref(),
                        unix_now(),
                        signed_data,
                    )?;
                    Ok(ConsentSigned {
                        signed: signature.into(),
                        card_record: Some(written.written.record_bytes),
                    })
                }
            })
            .or_else(changed)
    }

    fn link(
        &self,
        prompt: &dyn PinPrompt,
        origin: &str,
        request: &LinkToSign,
    ) -> Result<Linked, AgentError> {
        crate::phr::card::check_link_names(&request.service, &request.pseudonym)
            .map_err(AgentError::BadLinkName)?;
        let (prepared, view) = self.prepare_phr_card()?;
        // Already linked under this pseudonym: no PIN (another one is refused).
        if let Some(s) = view.link_for(&request.service, Some(&request.pseudonym))? {
            return Ok(Linked {
                holder_cert_der: prepared.certificate,
                binding_cert_der: s.cert_der.clone(),
            });
        }
        let signing = Signing::Link(request.clone());
        let answer = Self::ask(prompt, origin, &prepared, &signing)?;
        let EnteredPin::Phr(pin) = &answer.pin else {
            return Err(AgentError::PhrCardRequired);
        };
        let linked = self
            .reader
            .session(|t| {
                Ok(crate::phr::card::link(
                    t,
                    pin,
                    answer.last_try,
                    &request.service,
                    &request.pseudonym,
                )?)
            })
            .or_else(changed)?;
        Ok(Linked {
            holder_cert_der: prepared.certificate,
            binding_cert_der: linked.cert_der,
        })
    }

    fn grant(
        &self,
        prompt: &dyn PinPrompt,
        origin: &str,
        request: &GrantToSign,
    ) -> Result<SignedGrant, AgentError> {
        let (prepared, view) = self.prepare_phr_card()?;
        if view.link_for(&request.service, None)?.is_none() {
            return Err(PhrError::NotLinked {
                service: request.service.clone(),
            }
            .into());
        }
        let now = unix_now();
        let ttl = request.expires_at.saturating_sub(now);
        if ttl == 0 {
            return Err(AgentError::GrantExpired);
        }
        let signing = Signing::Grant(request.clone());
        let answer = Self::ask(prompt, origin, &prepared, &signing)?;
        let EnteredPin::Phr(pin) = &answer.pin else {
            return Err(AgentError::PhrCardRequired);
        };
        self.reader
            .session(|t| {
                Ok(crate::phr::card::sign_grant(
                    t,
                    pin,
                    answer.last_try,
                    &request.service,
                    &request.audience,
                    &request.nonce,
                    request.scope.clone(),
                    now,
                    ttl,
                )?)
            })
            .or_else(changed)
    }
}

/// Now in Unix seconds (a clock before 1970 or after 2106 reads as 0 / `u32::MAX`).
fn unix_now() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// A PC/SC reader: each session connects, runs in one transaction, and resets the card on
/// disconnect (no PIN stays verified after the session).
#[cfg(feature = "pcsc")]
pub struct PcscReader {
    /// Reader to use; `None`: the first one holding a card.
    pub reader: Option<String>,
}

#[cfg(feature = "pcsc")]
impl CardReader for PcscReader {
    fn session<R>(
        &self,
        f: impl FnOnce(&mut dyn CardTransport) -> Result<R, AgentError>,
    ) -> Result<R, AgentError> {
        let ctx = crate::transport::pcsc::PcscContext::establish()?;
        let reader = match &self.reader {
            Some(reader) => reader.clone(),
            None => ctx.first_reader_with_card()?.ok_or(AgentError::NoCard)?,
        };
        let mut card = ctx.connect(&reader)?;
        let result = card.transaction(|tx| f(tx));
        // The work is done (a consent may be on the card): a failed disconnect must not turn it
        // into an error; the card is reset when the handle drops anyway.
        if let Err(e) = card.disconnect() {
            tracing::debug!(error = %e, "disconnect after the card session");
        }
        result
    }
}
