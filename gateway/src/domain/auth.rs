//! Card sign-in as a service over the store (DESIGN §4; security-scenarios B2–B6, B13, C10, D1–D5):
//! issue a nonce to a browser session; on a token, look up that session's nonce, verify the token
//! against it ([`super::verifier`]), consume the nonce atomically, bind the certificate to a person
//! (first sign-in registers; a known certificate finds its person), and rotate the session id.
//! Every attempt, success or failure, is recorded. A renewed card is linked only from a session
//! signed in with the old card within the last 5 minutes, and never onto a certificate that is
//! already bound (no silent merge).

use super::certs::{CardType, ValidatedCert};
use super::nonce::{self, NoncePurpose};
use super::session::{SessionId, SessionPolicy};
use super::token::AuthToken;
use super::verifier::{TokenVerifier, VerifiedCard, VerifyError};
use crate::clock::SharedClock;
use crate::store::auth_events::{self, AuthEvent};
use crate::store::persons::{self, Binding};
use crate::store::sessions::{self, SessionRow};
use crate::store::{Db, StoreError, nonces};
use serde::Serialize;
use std::sync::Arc;

/// Longest device description kept.
const MAX_DEVICE_LEN: usize = 200;

/// Why an authentication step was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request has no live session (none, unknown, idle or too old).
    #[error("no live session")]
    NoSession,
    /// The session has no outstanding nonce for this purpose.
    #[error("no nonce was issued to this session for this purpose")]
    NoNonce,
    /// The session's nonce is past its lifetime.
    #[error("the nonce has expired")]
    NonceExpired,
    /// The nonce was consumed meanwhile (replay, or a concurrent submission won).
    #[error("the nonce was already used")]
    NonceConsumed,
    /// The token failed validation.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The step needs a signed-in session.
    #[error("not signed in")]
    NotSignedIn,
    /// Linking needs a card sign-in within the last [`AuthConfig::link_freshness_ms`].
    #[error("linking a new card needs a fresh sign-in with the old card")]
    SignInTooOld,
    /// The new certificate is the one already in use.
    #[error("the new certificate is the one already signed in")]
    SameCertificate,
    /// The new certificate is of another card type than the signed-in one.
    #[error("the new card is of another type")]
    CardTypeMismatch,
    /// The new certificate is already bound (to this or another person).
    #[error("the certificate is already bound to a person")]
    AlreadyBound,
    /// The binding found for the certificate names another card type (inconsistent data).
    #[error("stored binding is inconsistent with the certificate")]
    BindingInconsistent,
    /// The operating system's random generator failed.
    #[error("random generator failed")]
    Random,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    /// A stable reason code for the attempt log.
    pub fn reason(&self) -> String {
        match self {
            AuthError::NoSession => "no_session".into(),
            AuthError::NoNonce => "no_nonce".into(),
            AuthError::NonceExpired => "nonce_expired".into(),
            AuthError::NonceConsumed => "nonce_consumed".into(),
            AuthError::Verify(VerifyError::Token(e)) => format!("token: {e}"),
            AuthError::Verify(VerifyError::NoAnchors(t)) => format!("no_anchors: {}", t.as_str()),
            AuthError::Verify(VerifyError::Certificate(e)) => format!("certificate: {e}"),
            AuthError::Verify(VerifyError::Signature(e)) => format!("signature: {e}"),
            AuthError::NotSignedIn => "not_signed_in".into(),
            AuthError::SignInTooOld => "sign_in_too_old".into(),
            AuthError::SameCertificate => "same_certificate".into(),
            AuthError::CardTypeMismatch => "card_type_mismatch".into(),
            AuthError::AlreadyBound => "already_bound".into(),
            AuthError::BindingInconsistent => "binding_inconsistent".into(),
            AuthError::Random => "random_failed".into(),
            AuthError::Store(_) => "store_error".into(),
        }
    }

    /// True for failures of the server rather than of the request.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            AuthError::Random | AuthError::Store(_) | AuthError::BindingInconsistent
        )
    }
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// This gateway's origin: what the card must have signed.
    pub origin: String,
    /// Nonce lifetime.
    pub nonce_ttl_ms: i64,
    /// Session timeouts.
    pub session: SessionPolicy,
    /// How recent the old card's sign-in must be to link a new card.
    pub link_freshness_ms: i64,
}

/// A nonce handed out.
#[derive(Debug, Clone)]
pub struct IssuedNonce {
    /// The session it is bound to (new when the request had none).
    pub session: SessionId,
    /// True when `session` was created for this request.
    pub session_is_new: bool,
    /// The nonce (base64, 44 characters).
    pub nonce: String,
    /// Expiry.
    pub expires_at_ms: i64,
}

/// What the signed-in view shows about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateSummary {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial (hex).
    pub serial: String,
    /// Validity start (ms since epoch).
    pub not_before_ms: i64,
    /// Validity end (ms since epoch).
    pub not_after_ms: i64,
}

impl From<&ValidatedCert> for CertificateSummary {
    fn from(c: &ValidatedCert) -> Self {
        CertificateSummary {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            serial: c.serial_hex.clone(),
            not_before_ms: c.not_before_ms,
            not_after_ms: c.not_after_ms,
        }
    }
}

impl From<&Binding> for CertificateSummary {
    fn from(b: &Binding) -> Self {
        CertificateSummary {
            subject: b.subject.clone(),
            issuer: b.issuer.clone(),
            serial: b.serial_hex.clone(),
            not_before_ms: b.not_before_ms,
            not_after_ms: b.not_after_ms,
        }
    }
}

/// A completed sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The new session id (the old one is gone).
    pub session: SessionId,
    /// The person.
    pub person_id: String,
    /// True when this sign-in registered the person.
    pub new_person: bool,
    /// Card type.
    pub card_type: CardType,
    /// The certificate.
    pub certificate: CertificateSummary,
}

/// The signed-in state of a session.
#[derive(Debug, Clone, Serialize)]
pub struct WhoAmI {
    /// The person.
    pub person_id: String,
    /// Card type.
    pub card_type: CardType,
    /// The certificate signed in with.
    pub certificate: CertificateSummary,
    /// When the card sign-in happened.
    pub authenticated_at_ms: i64,
    /// When the session ends if idle from now.
    pub idle_expires_at_ms: i64,
}

/// A live session.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// Hash of its id.
    pub id_hash: [u8; 32],
    /// Stored state.
    pub row: SessionRow,
}

/// The sign-in service.
pub struct Authenticator {
    db: Db,
    clock: SharedClock,
    verifier: Arc<TokenVerifier>,
    config: AuthConfig,
    rng: ring::rand::SystemRandom,
}

impl Authenticator {
    /// A service over `db`.
    pub fn new(
        db: Db,
        clock: SharedClock,
        verifier: Arc<TokenVerifier>,
        config: AuthConfig,
    ) -> Self {
        Authenticator {
            db,
            clock,
            verifier,
            config,
            rng: ring::rand::SystemRandom::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The verifier.
    pub fn verifier(&self) -> &Arc<TokenVerifier> {
        &self.verifier
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The current time.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The live session for a cookie value, touched; expired sessions are deleted.
    pub async fn live_session(
        &self,
        cookie: Option<&str>,
    ) -> Result<Option<LiveSession>, AuthError> {
        let Some(id) = cookie.and_then(SessionId::parse) else {
            return Ok(None);
        };
        let hash = id.hash();
        let Some(row) = sessions::get(&self.db, &hash).await? else {
            return Ok(None);
        };
        let now = self.now_ms();
        if self
            .config
            .session
            .expired(row.created_at_ms, row.last_seen_ms, now)
        {
            sessions::delete(&self.db, &hash).await?;
            return Ok(None);
        }
        sessions::touch(&self.db, &hash, now).await?;
        Ok(Some(LiveSession { id_hash: hash, row }))
    }

    /// Issues a nonce for `purpose` to the session of `cookie`, creating an anonymous session
    /// when there is none (login only; linking needs a signed-in session).
    pub async fn issue_nonce(
        &self,
        cookie: Option<&str>,
        purpose: NoncePurpose,
    ) -> Result<IssuedNonce, AuthError> {
        let now = self.now_ms();
        let live = self.live_session(cookie).await?;
        let (session, session_is_new, hash) = match (live, cookie.and_then(SessionId::parse)) {
            (Some(live), Some(id)) => {
                if purpose == NoncePurpose::Link && live.row.person_id.is_none() {
                    return Err(AuthError::NotSignedIn);
                }
                (id, false, live.id_hash)
            }
            _ => {
                if purpose == NoncePurpose::Link {
                    return Err(AuthError::NotSignedIn);
                }
                let id = SessionId::generate(&self.rng).map_err(|_| AuthError::Random)?;
                let hash = id.hash();
                sessions::insert(
                    &self.db,
                    &hash,
                    &SessionRow {
                        person_id: None,
                        card_fingerprint: None,
                        created_at_ms: now,
                        last_seen_ms: now,
                        authenticated_at_ms: None,
                    },
                )
                .await?;
                (id, true, hash)
            }
        };
        let nonce = nonce::generate(&self.rng).map_err(|_| AuthError::Random)?;
        let expires_at_ms = now.saturating_add(self.config.nonce_ttl_ms);
        nonces::replace(&self.db, &nonce, &hash, purpose.as_str(), expires_at_ms).await?;
        Ok(IssuedNonce {
            session,
            session_is_new,
            nonce,
            expires_at_ms,
        })
    }

    /// Verifies the token against the session's nonce for `purpose` and consumes the nonce.
    async fn verify_and_consume(
        &self,
        session: &LiveSession,
        purpose: NoncePurpose,
        token: &[u8],
        fingerprint_out: &mut Option<Vec<u8>>,
    ) -> Result<VerifiedCard, AuthError> {
        let now = self.now_ms();
        let (nonce, expires_at_ms) = nonces::peek(&self.db, &session.id_hash, purpose.as_str())
            .await?
            .ok_or(AuthError::NoNonce)?;
        if now >= expires_at_ms {
            return Err(AuthError::NonceExpired);
        }
        let parsed = AuthToken::parse(token).map_err(VerifyError::from)?;
        *fingerprint_out = Some(super::sha256(&parsed.certificate_der).to_vec());
        let verified = self
            .verifier
            .verify(&parsed, &self.config.origin, &nonce, now)?;
        if !nonces::consume(&self.db, &nonce, &session.id_hash, purpose.as_str(), now).await? {
            return Err(AuthError::NonceConsumed);
        }
        Ok(verified)
    }

    /// Signs in with a token. On success the old session id is replaced by a new one.
    pub async fn sign_in(
        &self,
        cookie: Option<&str>,
        token: &[u8],
        device: Option<&str>,
    ) -> Result<SignedIn, AuthError> {
        let mut fingerprint = None;
        let result = self.sign_in_inner(cookie, token, &mut fingerprint).await;
        self.record(&result, fingerprint, device, |s: &SignedIn| {
            (s.card_type, s.person_id.clone())
        })
        .await;
        result
    }

    async fn sign_in_inner(
        &self,
        cookie: Option<&str>,
        token: &[u8],
        fingerprint: &mut Option<Vec<u8>>,
    ) -> Result<SignedIn, AuthError> {
        let session = self
            .live_session(cookie)
            .await?
            .ok_or(AuthError::NoSession)?;
        let verified = self
            .verify_and_consume(&session, NoncePurpose::Login, token, fingerprint)
            .await?;
        let now = self.now_ms();
        let cert = &verified.certificate;
        let (binding, new_person) = match persons::find_binding(&self.db, &cert.fingerprint).await?
        {
            Some(binding) => (binding, false),
            None => {
                let person_id = self.new_person_id()?;
                let binding = self.binding_for(&verified, person_id, now, None);
                if persons::register(&self.db, &binding).await? {
                    (binding, true)
                } else {
                    // A concurrent first sign-in with the same certificate registered it.
                    let existing = persons::find_binding(&self.db, &cert.fingerprint)
                        .await?
                        .ok_or(AuthError::BindingInconsistent)?;
                    (existing, false)
                }
            }
        };
        if binding.card_type != verified.card_type.as_str() {
            return Err(AuthError::BindingInconsistent);
        }
        let new_id = SessionId::generate(&self.rng).map_err(|_| AuthError::Random)?;
        sessions::rotate(
            &self.db,
            &session.id_hash,
            &new_id.hash(),
            &SessionRow {
                person_id: Some(binding.person_id.clone()),
                card_fingerprint: Some(cert.fingerprint.to_vec()),
                created_at_ms: now,
                last_seen_ms: now,
                authenticated_at_ms: Some(now),
            },
        )
        .await?;
        Ok(SignedIn {
            session: new_id,
            person_id: binding.person_id,
            new_person,
            card_type: verified.card_type,
            certificate: cert.into(),
        })
    }

    /// Links a renewed card to the person signed in with the old one (C10).
    pub async fn link(
        &self,
        cookie: Option<&str>,
        token: &[u8],
        device: Option<&str>,
    ) -> Result<SignedIn, AuthError> {
        let mut fingerprint = None;
        let result = self.link_inner(cookie, token, &mut fingerprint).await;
        self.record(&result, fingerprint, device, |s: &SignedIn| {
            (s.card_type, s.person_id.clone())
        })
        .await;
        result
    }

    async fn link_inner(
        &self,
        cookie: Option<&str>,
        token: &[u8],
        fingerprint: &mut Option<Vec<u8>>,
    ) -> Result<SignedIn, AuthError> {
        let session = self
            .live_session(cookie)
            .await?
            .ok_or(AuthError::NoSession)?;
        let (Some(person_id), Some(old_fp), Some(auth_at)) = (
            session.row.person_id.clone(),
            session.row.card_fingerprint.clone(),
            session.row.authenticated_at_ms,
        ) else {
            return Err(AuthError::NotSignedIn);
        };
        if self.now_ms().saturating_sub(auth_at) > self.config.link_freshness_ms {
            return Err(AuthError::SignInTooOld);
        }
        let old = persons::find_binding(&self.db, &old_fp)
            .await?
            .ok_or(AuthError::BindingInconsistent)?;
        let verified = self
            .verify_and_consume(&session, NoncePurpose::Link, token, fingerprint)
            .await?;
        let cert = &verified.certificate;
        if cert.fingerprint.as_slice() == old_fp.as_slice() {
            return Err(AuthError::SameCertificate);
        }
        if old.card_type != verified.card_type.as_str() {
            return Err(AuthError::CardTypeMismatch);
        }
        let now = self.now_ms();
        let binding = self.binding_for(&verified, person_id.clone(), now, Some(old_fp));
        if !persons::link(&self.db, &binding).await? {
            return Err(AuthError::AlreadyBound);
        }
        let cookie_id = cookie
            .and_then(SessionId::parse)
            .ok_or(AuthError::NoSession)?;
        Ok(SignedIn {
            session: cookie_id,
            person_id,
            new_person: false,
            card_type: verified.card_type,
            certificate: cert.into(),
        })
    }

    /// The signed-in state of the session of `cookie`.
    pub async fn whoami(&self, cookie: Option<&str>) -> Result<WhoAmI, AuthError> {
        let session = self
            .live_session(cookie)
            .await?
            .ok_or(AuthError::NotSignedIn)?;
        let (Some(person_id), Some(fp), Some(auth_at)) = (
            session.row.person_id,
            session.row.card_fingerprint,
            session.row.authenticated_at_ms,
        ) else {
            return Err(AuthError::NotSignedIn);
        };
        let binding = persons::find_binding(&self.db, &fp)
            .await?
            .ok_or(AuthError::BindingInconsistent)?;
        let card_type =
            CardType::parse(&binding.card_type).ok_or(AuthError::BindingInconsistent)?;
        Ok(WhoAmI {
            person_id,
            card_type,
            certificate: (&binding).into(),
            authenticated_at_ms: auth_at,
            idle_expires_at_ms: self.now_ms().saturating_add(self.config.session.idle_ms),
        })
    }

    /// Ends the session of `cookie`; true when there was one.
    pub async fn sign_out(&self, cookie: Option<&str>) -> Result<bool, AuthError> {
        let Some(id) = cookie.and_then(SessionId::parse) else {
            return Ok(false);
        };
        Ok(sessions::delete(&self.db, &id.hash()).await?)
    }

    /// Deletes expired nonces and sessions; returns (nonces, sessions) deleted.
    pub async fn purge_expired(&self) -> Result<(u64, u64), AuthError> {
        let now = self.now_ms();
        let n = nonces::purge_expired(&self.db, now).await?;
        let s = sessions::purge_expired(
            &self.db,
            now.saturating_sub(self.config.session.idle_ms),
            now.saturating_sub(self.config.session.absolute_ms),
        )
        .await?;
        Ok((n, s))
    }

    fn new_person_id(&self) -> Result<String, AuthError> {
        let bytes: [u8; 16] = super::random_bytes(&self.rng).map_err(|_| AuthError::Random)?;
        Ok(super::certs::hex_lower(&bytes))
    }

    fn binding_for(
        &self,
        verified: &VerifiedCard,
        person_id: String,
        now: i64,
        linked_from: Option<Vec<u8>>,
    ) -> Binding {
        let c = &verified.certificate;
        Binding {
            cert_fingerprint: c.fingerprint.to_vec(),
            person_id,
            card_type: verified.card_type.as_str().to_owned(),
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            serial_hex: c.serial_hex.clone(),
            not_before_ms: c.not_before_ms,
            not_after_ms: c.not_after_ms,
            created_at_ms: now,
            linked_from,
        }
    }

    async fn record<T>(
        &self,
        result: &Result<T, AuthError>,
        fingerprint: Option<Vec<u8>>,
        device: Option<&str>,
        who: impl Fn(&T) -> (CardType, String),
    ) {
        let device = device.map(|d| d.chars().take(MAX_DEVICE_LEN).collect::<String>());
        let event = match result {
            Ok(value) => {
                let (card_type, person) = who(value);
                AuthEvent {
                    at_ms: self.now_ms(),
                    outcome: "success",
                    reason: "ok".into(),
                    card_type: Some(card_type.as_str().into()),
                    cert_fingerprint: fingerprint,
                    person_id: Some(person),
                    device,
                }
            }
            Err(e) => {
                tracing::info!(reason = %e.reason(), "card authentication refused");
                AuthEvent {
                    at_ms: self.now_ms(),
                    outcome: "failure",
                    reason: e.reason(),
                    card_type: None,
                    cert_fingerprint: fingerprint,
                    person_id: None,
                    device,
                }
            }
        };
        if let Err(e) = auth_events::insert(&self.db, &event).await {
            tracing::error!(error = %e, "could not record an authentication attempt");
        }
    }
}
