//! The partner token service (DESIGN §6): the OAuth 2.0 client-credentials grant (RFC 6749 §4.4)
//! with `private_key_jwt` (RFC 7523), only over mutual TLS with a registered client certificate,
//! issuing short-lived opaque access tokens bound to that certificate (RFC 8705 §3); and the
//! resource side: a bearer token from the `Authorization` header (RFC 6750 §2.1 only — never the
//! query string) presented on a connection with the same certificate.

use super::oauth::{
    AccessError, AssertionAudience, AssertionError, AssertionTimes, JWT_BEARER_ASSERTION_TYPE,
    RegisteredClient, TokenBinding, access_token_hash, certificate_registered, check_binding,
    verify_client_assertion,
};
use crate::clock::SharedClock;
use crate::store::{Db, StoreError, oauth as store};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Settings of the token service.
#[derive(Debug, Clone)]
pub struct PartnerAuthConfig {
    /// What assertions must name as `aud`.
    pub audience: AssertionAudience,
    /// Assertion time rules.
    pub times: AssertionTimes,
    /// Access-token lifetime (ms); FAPI-style short-lived.
    pub token_ttl_ms: i64,
}

/// A token request's form fields (RFC 6749 §4.4.2, RFC 7521 §4.2).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: Option<String>,
    /// Optional; when present it must equal the assertion's client.
    pub client_id: Option<String>,
    /// Must be [`JWT_BEARER_ASSERTION_TYPE`].
    pub client_assertion_type: Option<String>,
    /// The signed JWT.
    pub client_assertion: Option<String>,
    /// Space-separated scopes; all must be registered for the client.
    pub scope: Option<String>,
}

/// Why a token request was refused (RFC 6749 §5.2 error codes).
#[derive(Debug, thiserror::Error)]
pub enum TokenRequestError {
    /// A field is missing or wrong (`invalid_request`).
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    /// Not `client_credentials` (`unsupported_grant_type`).
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// Unknown client, no or unregistered certificate, or a refused assertion
    /// (`invalid_client`); the reason is for the audit log only.
    #[error("invalid_client: {0}")]
    InvalidClient(String),
    /// The assertion was used before (`invalid_client`).
    #[error("invalid_client: client assertion replayed")]
    Replayed,
    /// A scope not registered for the client (`invalid_scope`).
    #[error("invalid_scope")]
    InvalidScope,
    /// The store failed; nothing was issued.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
}

impl TokenRequestError {
    /// The RFC 6749 §5.2 `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            TokenRequestError::InvalidRequest(_) => "invalid_request",
            TokenRequestError::UnsupportedGrantType => "unsupported_grant_type",
            TokenRequestError::InvalidClient(_) | TokenRequestError::Replayed => "invalid_client",
            TokenRequestError::InvalidScope => "invalid_scope",
            TokenRequestError::Store(_) | TokenRequestError::Random => "server_error",
        }
    }
}

impl From<AssertionError> for TokenRequestError {
    fn from(e: AssertionError) -> Self {
        TokenRequestError::InvalidClient(e.to_string())
    }
}

/// An issued access token (RFC 6749 §5.1).
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuedToken {
    /// The opaque token (256 random bits, base64url).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: i64,
    /// Granted scope.
    pub scope: String,
}

/// The registered partners, by client id.
#[derive(Debug, Default, Clone)]
pub struct ClientDirectory(Arc<RwLock<HashMap<String, RegisteredClient>>>);

impl ClientDirectory {
    /// Adds or replaces a client.
    pub fn register(&self, client: RegisteredClient) {
        self.write().insert(client.client_id.clone(), client);
    }

    /// Removes a client; its tokens are revoked by [`PartnerAuth::withdraw`].
    pub fn remove(&self, client_id: &str) -> Option<RegisteredClient> {
        self.write().remove(client_id)
    }

    /// The ids of every registered client.
    pub fn ids(&self) -> Vec<String> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The client with this id.
    pub fn get(&self, client_id: &str) -> Option<RegisteredClient> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(client_id)
            .cloned()
    }

    /// True when some client registered this certificate (DER): the TLS layer's check
    /// ([`crate::tls::CertificateRegistry`]).
    pub fn knows_certificate(&self, certificate_der: &[u8]) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .any(|client| certificate_registered(client, certificate_der))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, RegisteredClient>> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The token service and the resource-side token check.
pub struct PartnerAuth {
    db: Db,
    clock: SharedClock,
    clients: ClientDirectory,
    config: PartnerAuthConfig,
    rng: ring::rand::SystemRandom,
    /// Bindings read from the store in the last [`BINDING_CACHE_MS`], by token hash.
    bindings: std::sync::Mutex<HashMap<[u8; 32], (TokenBinding, i64)>>,
}

/// How long a token binding read from the store is reused. Expiry, the certificate and the
/// client's registration are still checked on every request; a token deleted in the store by
/// another gateway (withdrawal) is refused here at most this long after.
pub const BINDING_CACHE_MS: i64 = 1_000;
/// Most cached bindings (the cache is emptied when full).
const BINDING_CACHE_MAX: usize = 50_000;

impl PartnerAuth {
    /// A service over `db` for the clients in `clients`.
    pub fn new(
        db: Db,
        clock: SharedClock,
        clients: ClientDirectory,
        config: PartnerAuthConfig,
    ) -> Self {
        PartnerAuth {
            db,
            clock,
            clients,
            config,
            rng: ring::rand::SystemRandom::new(),
            bindings: std::sync::Mutex::default(),
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The registered clients.
    pub fn clients(&self) -> &ClientDirectory {
        &self.clients
    }

    /// Handles a token request that arrived on a connection with `client_certificate` (DER).
    pub async fn issue_token(
        &self,
        request: &TokenRequest,
        client_certificate: Option<&[u8]>,
    ) -> Result<IssuedToken, TokenRequestError> {
        if request.grant_type.as_deref() != Some("client_credentials") {
            return Err(match request.grant_type {
                None => TokenRequestError::InvalidRequest("grant_type"),
                Some(_) => TokenRequestError::UnsupportedGrantType,
            });
        }
        if request.client_assertion_type.as_deref() != Some(JWT_BEARER_ASSERTION_TYPE) {
            return Err(TokenRequestError::InvalidRequest("client_assertion_type"));
        }
        let assertion = request
            .client_assertion
            .as_deref()
            .ok_or(TokenRequestError::InvalidRequest("client_assertion"))?;
        let claimed = unverified_issuer(assertion)
            .ok_or(TokenRequestError::InvalidRequest("client_assertion"))?;
        if request.client_id.as_deref().is_some_and(|id| id != claimed) {
            return Err(TokenRequestError::InvalidClient(
                "client_id differs from the assertion".into(),
            ));
        }
        let client = self
            .clients
            .get(&claimed)
            .ok_or_else(|| TokenRequestError::InvalidClient("unknown client".into()))?;
        let certificate = client_certificate.ok_or_else(|| {
            TokenRequestError::InvalidClient("no client certificate on the connection".into())
        })?;
        if !certificate_registered(&client, certificate) {
            return Err(TokenRequestError::InvalidClient(
                "client certificate not registered for this client".into(),
            ));
        }
        let now_ms = self.clock.now_ms();
        let verified = verify_client_assertion(
            assertion,
            &client,
            &self.config.audience,
            self.config.times,
            now_ms.div_euclid(1000),
        )?;
        let scope = granted_scope(&client, request.scope.as_deref())?;
        let jti_until_ms = verified.expires_at_secs.saturating_mul(1000);
        if !store::use_jti(&self.db, &verified.client_id, &verified.jti, jti_until_ms).await? {
            return Err(TokenRequestError::Replayed);
        }
        let random: [u8; 32] =
            super::random_bytes(&self.rng).map_err(|_| TokenRequestError::Random)?;
        let access_token = URL_SAFE_NO_PAD.encode(random);
        let binding = TokenBinding {
            client_id: verified.client_id,
            certificate_sha256: super::sha256(certificate),
            scope: scope.clone(),
            expires_at_ms: now_ms.saturating_add(self.config.token_ttl_ms),
        };
        store::insert_token(
            &self.db,
            &access_token_hash(&access_token),
            &binding,
            now_ms,
        )
        .await?;
        Ok(IssuedToken {
            access_token,
            token_type: "Bearer",
            expires_in: self.config.token_ttl_ms / 1000,
            scope,
        })
    }

    /// Checks the `Authorization` header of a resource request on a connection with
    /// `client_certificate`.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        client_certificate: Option<&[u8]>,
    ) -> Result<TokenBinding, AuthenticateError> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty() && t.len() <= 128)
            .ok_or(AccessError::Missing)?;
        let hash = access_token_hash(token);
        let now = self.clock.now_ms();
        let cached = self
            .bindings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash)
            .filter(|(_, at)| now.saturating_sub(*at) < BINDING_CACHE_MS && *at <= now)
            .map(|(b, _)| b.clone());
        let binding = match cached {
            Some(b) => Some(b),
            None => {
                let found = store::find_token(&self.db, &hash).await?;
                if let Some(b) = &found {
                    let mut cache = self
                        .bindings
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if cache.len() >= BINDING_CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(hash, (b.clone(), now));
                }
                found
            }
        };
        let binding = check_binding(binding, client_certificate, now)?;
        if self.clients.get(&binding.client_id).is_none() {
            return Err(AccessError::Unknown.into());
        }
        Ok(binding)
    }

    /// Withdraws a client: removed from the directory, every token revoked.
    pub async fn withdraw(&self, client_id: &str) -> Result<u64, StoreError> {
        self.clients.remove(client_id);
        self.bindings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (b, _)| b.client_id != client_id);
        store::revoke_client_tokens(&self.db, client_id).await
    }
}

/// Why a resource request's token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticateError {
    /// The token (401 `invalid_token`).
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The `iss` of an assertion before verification: only to look up which client's keys to use.
fn unverified_issuer(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

fn granted_scope(
    client: &RegisteredClient,
    requested: Option<&str>,
) -> Result<String, TokenRequestError> {
    let Some(requested) = requested.filter(|s| !s.trim().is_empty()) else {
        return Ok(client.scopes.join(" "));
    };
    let mut granted = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if !client.scopes.iter().any(|s| s == scope) {
            return Err(TokenRequestError::InvalidScope);
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(granted.join(" "))
}
