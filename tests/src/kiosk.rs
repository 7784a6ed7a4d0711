//! A kiosk client for a PHR card: what the kiosk page and the card agent do together, over the
//! gateway's kiosk API (HTTPS, the session cookie, our `Origin`) and the real PC/SC stack — sign
//! in (slot 9A over `SHA-256(origin) ‖ SHA-256(nonce)`, DESIGN §4), consent (the card first
//! writes the consent record for the prepared document, linking the service if needed, then signs
//! the document's nonce; the gateway commits with both, `docs/kiosk.md`), link a source (a service key generated on the card, its binding
//! certificate sent to the source through the gateway), grant and pull (the service key signs
//! the grant, `docs/source-protocol.md` §4). Used by `tests/sources_e2e.rs` and the demo.

use card_agent::local_api;
use card_agent::phr::card::{self, PhrError};
use card_agent::phr::consent::Category;
use card_agent::phr::kiosk::{self as phr_kiosk, KioskConsent};
use card_agent::pin::LastTry;
use card_agent::piv::PivPin;
use card_agent::transport::pcsc::{PcscContext, PcscTransaction};
use serde_json::{Value, json};
use std::time::Duration;
use zeroize::Zeroizing;

/// The `app_version` of the tokens this client makes.
const APP_VERSION: &str = "iphr-tests/kiosk";

/// Why a kiosk step failed.
#[derive(Debug, thiserror::Error)]
pub enum KioskError {
    /// The gateway could not be reached.
    #[error("{path}: {source}")]
    Http {
        /// API path.
        path: String,
        /// Error.
        source: reqwest::Error,
    },
    /// The gateway answered with an error.
    #[error("{path}: HTTP {status}: {body}")]
    Api {
        /// API path.
        path: String,
        /// Status.
        status: u16,
        /// Body.
        body: Value,
    },
    /// The card refused or failed.
    #[error("card: {0}")]
    Card(String),
    /// The answer lacks a field.
    #[error("{path}: no {field} in {body}")]
    Missing {
        /// API path.
        path: String,
        /// Field.
        field: &'static str,
        /// Body.
        body: Value,
    },
}

fn card_error(e: impl std::fmt::Display) -> KioskError {
    KioskError::Card(e.to_string())
}

/// A PHR card in a PC/SC reader and its PIN (held zeroized, sent only to the card).
#[derive(Clone)]
pub struct PhrCardAtReader {
    reader: String,
    pin: Zeroizing<String>,
}

impl std::fmt::Debug for PhrCardAtReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhrCardAtReader")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl PhrCardAtReader {
    /// The card in `reader`.
    pub fn new(reader: &str, pin: &str) -> Self {
        PhrCardAtReader {
            reader: reader.to_owned(),
            pin: Zeroizing::new(pin.to_owned()),
        }
    }

    fn pin(&self) -> Result<PivPin, KioskError> {
        PivPin::parse(&self.pin).map_err(card_error)
    }

    /// Runs `f` in one PC/SC transaction on the card.
    fn on_card<R>(
        &self,
        f: impl FnOnce(&mut PcscTransaction<'_>) -> Result<R, PhrError>,
    ) -> Result<R, KioskError> {
        let ctx = PcscContext::establish().map_err(card_error)?;
        let mut card = ctx.connect(&self.reader).map_err(card_error)?;
        card.transaction(f).map_err(card_error)
    }

    /// The holder certificate (slot 9A), read without the PIN.
    pub fn holder_certificate(&self) -> Result<Vec<u8>, KioskError> {
        self.on_card(|tx| card::read_card(tx))?
            .holder_cert_der
            .ok_or_else(|| KioskError::Card("the card is not issued".into()))
    }

    /// A sign-in token over `origin` and `nonce` (ES256, P1363 signature), as the agent makes it.
    pub fn token(&self, origin: &str, nonce: &str) -> Result<String, KioskError> {
        let signed_data = card_agent::local_api::signed_data(origin, nonce);
        let pin = self.pin()?;
        let signed =
            self.on_card(|tx| card::sign_challenge(tx, &pin, LastTry::Refuse, &signed_data))?;
        Ok(local_api::token_json(signed.into(), APP_VERSION, None).to_string())
    }

    /// Generates the service's key on the card (unless the card already holds one for that
    /// service and pseudonym); returns the holder and binding certificates.
    pub fn link(&self, service: &str, pseudonym: &str) -> Result<(Vec<u8>, Vec<u8>), KioskError> {
        let view = self.on_card(|tx| card::read_card(tx))?;
        if let Some(s) = view
            .link_for(service, Some(pseudonym))
            .map_err(card_error)?
        {
            return Ok((self.holder_certificate()?, s.cert_der.clone()));
        }
        let pin = self.pin()?;
        let linked =
            self.on_card(|tx| card::link(tx, &pin, LastTry::Refuse, service, pseudonym))?;
        Ok((self.holder_certificate()?, linked.cert_der))
    }

    /// A consent change as the agent makes it: in one card session and one VERIFY, the record of
    /// a prepared gateway document (its canonical JSON) is written to the card, linking the
    /// service first when it is not linked (as `pseudonym`, or a random one), and the holder key
    /// signs `origin` and `nonce`; returns the commit body (the token with `card_record`).
    pub fn consent_token(
        &self,
        origin: &str,
        nonce: &str,
        document: &str,
        known_categories: &[String],
        pseudonym: Option<&str>,
        now: u32,
    ) -> Result<Value, KioskError> {
        let consent = KioskConsent::from_document(document).map_err(card_error)?;
        let signed_data = card_agent::local_api::signed_data(origin, nonce);
        let pin = self.pin()?;
        let ctx = PcscContext::establish().map_err(card_error)?;
        let mut card = ctx.connect(&self.reader).map_err(card_error)?;
        let (written, signed) = card
            .transaction(|tx| {
                phr_kiosk::write_kiosk_consent_and_sign(
                    tx,
                    &pin,
                    LastTry::Refuse,
                    &consent,
                    known_categories,
                    pseudonym,
                    now,
                    &signed_data,
                )
            })
            .map_err(card_error)?;
        Ok(local_api::token_json(
            signed.into(),
            APP_VERSION,
            Some(written.record_bytes()),
        ))
    }

    /// Signs the grant the gateway asked for with the service's key.
    pub fn sign_grant(&self, request: &Value, now: u32) -> Result<(Vec<u8>, Vec<u8>), KioskError> {
        let field = |name: &'static str| {
            request.get(name).ok_or_else(|| KioskError::Missing {
                path: "grant-request".into(),
                field: name,
                body: request.clone(),
            })
        };
        let text = |name: &'static str| -> Result<String, KioskError> {
            Ok(field(name)?.as_str().unwrap_or_default().to_owned())
        };
        let service = text("service")?;
        let audience = text("audience")?;
        let nonce = hex::decode(text("nonce_hex")?).map_err(card_error)?;
        let expires_at = field("expires_at")?.as_u64().unwrap_or(0);
        let scope = field("scope")?
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(Category::parse)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(card_error)?
            .unwrap_or_default();
        let ttl = u32::try_from(expires_at.saturating_sub(u64::from(now))).unwrap_or(u32::MAX);
        let pin = self.pin()?;
        let signed = self.on_card(|tx| {
            card::sign_grant(
                tx,
                &pin,
                LastTry::Refuse,
                &service,
                &audience,
                &nonce,
                scope,
                now,
                ttl,
            )
        })?;
        Ok((signed.grant_bytes, signed.signature))
    }
}

/// The kiosk API with one browser session.
pub struct KioskClient {
    http: reqwest::Client,
    origin: String,
    cookie: Option<String>,
}

impl KioskClient {
    /// A client of the gateway at `origin` trusting `ca_pem` for its TLS certificate.
    pub fn new(origin: &str, ca_pem: &[u8]) -> Result<KioskClient, KioskError> {
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).map_err(|source| {
                KioskError::Http {
                    path: "tls".into(),
                    source,
                }
            })?)
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| KioskError::Http {
                path: "client".into(),
                source,
            })?;
        Ok(KioskClient {
            http,
            origin: origin.to_owned(),
            cookie: None,
        })
    }

    /// Sends a request; keeps the session cookie; returns the status and the JSON body.
    pub async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), KioskError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.origin))
            .header("origin", &self.origin);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let http = |source| KioskError::Http {
            path: path.to_owned(),
            source,
        };
        let response = request.send().await.map_err(http)?;
        for value in response.headers().get_all("set-cookie") {
            if let Some(pair) = value.to_str().ok().and_then(|v| v.split(';').next()) {
                self.cookie = Some(pair.to_owned());
            }
        }
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(http)?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn ok(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, KioskError> {
        let (status, value) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(KioskError::Api {
                path: path.to_owned(),
                status,
                body: value,
            })
        }
    }

    fn get_str(path: &str, body: &Value, field: &'static str) -> Result<String, KioskError> {
        body.get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| KioskError::Missing {
                path: path.to_owned(),
                field,
                body: body.clone(),
            })
    }

    /// Signs in with the card; returns the person id.
    pub async fn sign_in(&mut self, card: &PhrCardAtReader) -> Result<String, KioskError> {
        let nonce = self
            .ok(
                reqwest::Method::POST,
                "/api/auth/nonce",
                Some(json!({"purpose": "login"})),
            )
            .await?;
        let nonce = Self::get_str("/api/auth/nonce", &nonce, "nonce")?;
        let token = blocking(card, {
            let origin = self.origin.clone();
            move |c| c.token(&origin, &nonce)
        })
        .await?;
        let token: Value = serde_json::from_str(&token).map_err(card_error)?;
        let signed_in = self
            .ok(reqwest::Method::POST, "/api/auth/token", Some(token))
            .await?;
        Self::get_str("/api/auth/token", &signed_in, "person_id")
    }

    /// Grants consent to `service` for `categories` (`A.checkup` …): the card writes the consent
    /// record and signs the document. A link the card makes now uses `pseudonym` (a source's,
    /// from its enrollment; a partner gets a random one), an existing link must have it.
    pub async fn consent_as(
        &mut self,
        card: &PhrCardAtReader,
        service: &str,
        pseudonym: Option<&str>,
        categories: &[&str],
    ) -> Result<Value, KioskError> {
        let body = json!({"service_id": service, "action": "grant", "categories": categories});
        self.change_consent(card, body, pseudonym).await
    }

    /// Prepare → the card writes the record → the card signs the document → commit with both.
    async fn change_consent(
        &mut self,
        card: &PhrCardAtReader,
        body: Value,
        pseudonym: Option<&str>,
    ) -> Result<Value, KioskError> {
        const PATH: &str = "/api/consent/prepare";
        let prepared = self.ok(reqwest::Method::POST, PATH, Some(body)).await?;
        let nonce = Self::get_str(PATH, &prepared, "nonce")?;
        let document = Self::get_str(PATH, &prepared, "document")?;
        let known: Vec<String> = prepared
            .get("known_categories")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let pseudonym = pseudonym.map(str::to_owned);
        let (origin, now) = (self.origin.clone(), unix_now());
        let token = blocking(card, move |c| {
            c.consent_token(
                &origin,
                &nonce,
                &document,
                &known,
                pseudonym.as_deref(),
                now,
            )
        })
        .await?;
        self.ok(reqwest::Method::POST, "/api/consent/commit", Some(token))
            .await
    }

    /// Links the card at `service` as `pseudonym` with the enrollment code the source gave.
    pub async fn link_source(
        &mut self,
        card: &PhrCardAtReader,
        service: &str,
        pseudonym: &str,
        enrollment_code: &str,
    ) -> Result<Value, KioskError> {
        let (holder, binding) = blocking(card, {
            let (service, pseudonym) = (service.to_owned(), pseudonym.to_owned());
            move |c| c.link(&service, &pseudonym)
        })
        .await?;
        self.ok(
            reqwest::Method::POST,
            &format!("/api/sources/{service}/link"),
            Some(json!({
                "enrollment_code": enrollment_code,
                "holder_cert_der": hex::encode(holder),
                "binding_cert_der": hex::encode(binding),
            })),
        )
        .await
    }

    /// Asks for a grant, has the card sign it, hands it in; returns the pull id.
    pub async fn grant(
        &mut self,
        card: &PhrCardAtReader,
        service: &str,
    ) -> Result<String, KioskError> {
        let path = format!("/api/sources/{service}/grant-request");
        let request = self.ok(reqwest::Method::POST, &path, None).await?;
        let now = unix_now();
        let (grant, signature) = blocking(card, move |c| c.sign_grant(&request, now)).await?;
        let path = format!("/api/sources/{service}/grant");
        let accepted = self
            .ok(
                reqwest::Method::POST,
                &path,
                Some(json!({
                    "grant_bytes": hex::encode(grant),
                    "signature": hex::encode(signature),
                })),
            )
            .await?;
        Self::get_str(&path, &accepted, "pull")
    }

    /// Polls a pull until it ends, calling `progress` with every new state; returns the last.
    pub async fn wait_pull(
        &mut self,
        pull: &str,
        timeout: Duration,
        mut progress: impl FnMut(&Value),
    ) -> Result<Value, KioskError> {
        let path = format!("/api/sources/pulls/{pull}");
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            let now = self.ok(reqwest::Method::GET, &path, None).await?;
            if now != last {
                progress(&now);
                last = now.clone();
            }
            if now.get("state").and_then(Value::as_str) != Some("running") {
                return Ok(now);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(KioskError::Api {
                    path,
                    status: 0,
                    body: json!({"error": "the pull did not end in time", "last": now}),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /api/sources`.
    pub async fn sources(&mut self) -> Result<Value, KioskError> {
        self.ok(reqwest::Method::GET, "/api/sources", None).await
    }
}

async fn blocking<R: Send + 'static>(
    card: &PhrCardAtReader,
    f: impl FnOnce(&PhrCardAtReader) -> Result<R, KioskError> + Send + 'static,
) -> Result<R, KioskError> {
    let card = card.clone();
    tokio::task::spawn_blocking(move || f(&card))
        .await
        .map_err(card_error)?
}

/// Unix seconds now.
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// Issues a factory-fresh PHR card in `reader` (holder key and certificate from `ca`, PIN `pin`,
/// PUK `13572468`), as the card issuer's desk does.
pub fn issue_card(
    reader: &str,
    ca: &card_agent::phr::ca::PhrIssuerCa,
    holder_id: &str,
    pin: &str,
) -> Result<(), KioskError> {
    use card_agent::piv::{PivPuk, mgmt};
    let card = PhrCardAtReader::new(reader, pin);
    let new_pin = card.pin()?;
    let new_puk = PivPuk::parse("13572468").map_err(card_error)?;
    card.on_card(|tx| {
        card::issue_factory_fresh(
            tx,
            ca,
            holder_id,
            &new_pin,
            &new_puk,
            time::OffsetDateTime::now_utc() + time::Duration::days(365 * 5),
            mgmt::ALG_AES256,
        )
    })?;
    Ok(())
}
