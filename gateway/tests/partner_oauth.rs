//! Partner OAuth (security-scenarios F): `private_key_jwt` client assertions under FAPI 2.0 rules,
//! single-use `jti` across concurrent requests, and access tokens bound to the client's mTLS
//! certificate — on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Backend, TestDb, manual_clock};
use gateway::clock::Clock;
use gateway::domain::access::PartnerAccess;
use gateway::domain::oauth::{
    AccessError, AssertionAudience, AssertionError, AssertionTimes, JWT_BEARER_ASSERTION_TYPE,
    RegisteredClient, verify_client_assertion,
};
use gateway::domain::partner_auth::{
    AuthenticateError, ClientDirectory, PartnerAuth, PartnerAuthConfig, TokenRequest,
    TokenRequestError,
};
use gateway::domain::rate_limit::RateLimiter;
use gateway::domain::sha256;
use gateway::domain::trail::{MemoryTrail, TrailEvent};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

const CLIENT: &str = "partner-phr-app";
const ISSUER: &str = "https://gateway.iphr.test";
const TOKEN_ENDPOINT: &str = "https://gateway.iphr.test/oauth/token";

/// A partner's signing keys and mTLS certificates.
struct Keys {
    ec: KeyPair,
    ec_other: KeyPair,
    rsa: rsa::RsaPrivateKey,
    rsa_1024: rsa::RsaPrivateKey,
    cert: Vec<u8>,
    /// The key of `cert`, for the TLS client.
    cert_key: KeyPair,
    other_cert: Vec<u8>,
    other_cert_key: KeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand_core_rng();
        let self_signed = |cn: &str| {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let der = rcgen::CertificateParams::new(vec![cn.to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap()
                .der()
                .to_vec();
            (der, key)
        };
        let (cert, cert_key) = self_signed("partner.example.jp");
        let (other_cert, other_cert_key) = self_signed("attacker.example");
        Keys {
            ec: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            ec_other: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            rsa: card_agent::testca::generate_rsa_key().unwrap(),
            rsa_1024: rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap(),
            cert,
            cert_key,
            other_cert,
            other_cert_key,
        }
    })
}

fn rand_core_rng() -> rsa::rand_core::OsRng {
    rsa::rand_core::OsRng
}

fn ec_jwk(key: &KeyPair, kid: &str) -> Value {
    let point = key.public_key_raw();
    assert_eq!(point.len(), 65);
    json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    })
}

fn rsa_jwk(key: &rsa::RsaPrivateKey, kid: &str) -> Value {
    json!({
        "kty": "RSA", "kid": kid, "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

fn client() -> RegisteredClient {
    let k = keys();
    let jwks: JwkSet = serde_json::from_value(json!({ "keys": [
        ec_jwk(&k.ec, "ec-1"),
        rsa_jwk(&k.rsa, "rsa-1"),
        rsa_jwk(&k.rsa_1024, "rsa-weak"),
    ]}))
    .unwrap();
    RegisteredClient {
        client_id: CLIENT.into(),
        jwks,
        certificate_sha256: vec![sha256(&k.cert)],
        scopes: vec!["system/Observation.rs".into(), "system/Patient.rs".into()],
    }
}

fn audience() -> AssertionAudience {
    AssertionAudience {
        issuer: ISSUER.into(),
        token_endpoint: TOKEN_ENDPOINT.into(),
    }
}

fn claims(now: i64) -> Value {
    json!({
        "iss": CLIENT, "sub": CLIENT, "aud": TOKEN_ENDPOINT,
        "iat": now, "exp": now + 300, "jti": format!("jti-{}", rand_id()),
    })
}

fn rand_id() -> u64 {
    let b: [u8; 8] = gateway::domain::random_bytes(&ring::rand::SystemRandom::new()).unwrap();
    u64::from_be_bytes(b)
}

fn es256(claims: &Value, kid: Option<&str>, key: &KeyPair) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ec_der(&key.serialize_der()),
    )
    .unwrap()
}

fn rsa_signed(claims: &Value, alg: Algorithm, kid: &str, key: &rsa::RsaPrivateKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let der = key.to_pkcs1_der().unwrap();
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes())).unwrap()
}

/// PS256 by the `rsa` crate, for keys `ring` refuses to sign with (< 2048 bits).
fn ps256_any_size(claims: &Value, kid: &str, key: &rsa::RsaPrivateKey) -> String {
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "PS256", "typ": "JWT", "kid": kid}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signer = rsa::pss::BlindedSigningKey::<sha2::Sha256>::new(key.clone());
    let signature = signer.sign_with_rng(&mut rand_core_rng(), signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn verify(assertion: &str, now: i64) -> Result<String, AssertionError> {
    verify_client_assertion(
        assertion,
        &client(),
        &audience(),
        AssertionTimes::default(),
        now,
    )
    .map(|v| v.client_id)
}

const NOW: i64 = 1_800_000_000;

fn with(now: i64, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims(now);
    edit(c.as_object_mut().unwrap());
    c
}

#[test]
fn f1_assertion_lifetime_and_clock_skew_boundaries() {
    let k = keys();
    let at = |edit: fn(&mut serde_json::Map<String, Value>)| {
        verify(&es256(&with(NOW, edit), Some("ec-1"), &k.ec), NOW)
    };
    assert_eq!(at(|_| {}), Ok(CLIENT.into()));
    assert_eq!(
        at(|c| {
            c.insert("exp".into(), json!(NOW + 300));
        }),
        Ok(CLIENT.into())
    );
    assert_eq!(
        at(|c| {
            c.insert("exp".into(), json!(NOW + 301));
        }),
        Err(AssertionError::LifetimeTooLong)
    );
    assert_eq!(
        at(|c| {
            c.insert("exp".into(), json!(NOW));
        }),
        Err(AssertionError::Expired)
    );
    for ahead in [11, 30, 60] {
        let c = with(NOW, |c| {
            c.insert("iat".into(), json!(NOW + ahead));
        });
        assert_eq!(
            verify(&es256(&c, Some("ec-1"), &k.ec), NOW),
            Ok(CLIENT.into()),
            "iat +{ahead}s"
        );
    }
    for field in ["iat", "nbf"] {
        let c = with(NOW, |c| {
            c.insert(field.into(), json!(NOW + 61));
        });
        assert_eq!(
            verify(&es256(&c, Some("ec-1"), &k.ec), NOW),
            Err(AssertionError::FromTheFuture),
            "{field} +61s"
        );
    }
}

#[test]
fn f6_algorithms_other_than_ps256_and_es256_and_weak_rsa_keys_are_refused() {
    let k = keys();
    let c = claims(NOW);
    assert_eq!(
        verify(&rsa_signed(&c, Algorithm::PS256, "rsa-1", &k.rsa), NOW),
        Ok(CLIENT.into())
    );
    assert_eq!(
        verify(&ps256_any_size(&c, "rsa-1", &k.rsa), NOW),
        Ok(CLIENT.into())
    );
    assert_eq!(
        verify(&rsa_signed(&c, Algorithm::RS256, "rsa-1", &k.rsa), NOW),
        Err(AssertionError::AlgorithmNotAllowed("RS256".into()))
    );
    assert_eq!(
        verify(&ps256_any_size(&c, "rsa-weak", &k.rsa_1024), NOW),
        Err(AssertionError::WeakKey(1024))
    );
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(b"the client id as a secret"),
    )
    .unwrap();
    assert_eq!(
        verify(&hs, NOW),
        Err(AssertionError::AlgorithmNotAllowed("HS256".into()))
    );
    for alg in ["none", "None", "", "ES256K", "EdDSA"] {
        let token = unsigned(&json!({"alg": alg, "kid": "ec-1"}), &c);
        assert_eq!(
            verify(&token, NOW),
            Err(AssertionError::AlgorithmNotAllowed(alg.into())),
            "alg {alg:?}"
        );
    }
    // ES256 header over a key of the RSA family: no key fits.
    let es_with_rsa_kid = es256(&c, Some("rsa-1"), &k.ec);
    assert_eq!(
        verify(&es_with_rsa_kid, NOW),
        Err(AssertionError::NoMatchingKey)
    );
}

#[test]
fn f5_audience_issuer_subject_signature_and_claims_are_checked() {
    let k = keys();
    let check = |c: Value| verify(&es256(&c, Some("ec-1"), &k.ec), NOW);
    assert_eq!(
        check(with(NOW, |c| {
            c.insert("aud".into(), json!(ISSUER));
        })),
        Ok(CLIENT.into())
    );
    for aud in [
        json!("https://other-gateway.example/oauth/token"),
        json!([TOKEN_ENDPOINT]),
        json!([TOKEN_ENDPOINT, "https://other.example"]),
        json!(42),
    ] {
        assert_eq!(
            check(with(NOW, |c| {
                c.insert("aud".into(), aud.clone());
            })),
            Err(AssertionError::WrongAudience),
            "aud {aud}"
        );
    }
    assert_eq!(
        check(with(NOW, |c| {
            c.insert("sub".into(), json!("someone-else"));
        })),
        Err(AssertionError::WrongClient)
    );
    for claim in ["aud", "exp", "iat", "jti", "iss", "sub"] {
        assert!(
            matches!(
                check(with(NOW, |c| {
                    c.remove(claim);
                })),
                Err(AssertionError::Claim(_))
            ),
            "without {claim}"
        );
    }
    assert_eq!(
        check(with(NOW, |c| {
            c.insert("exp".into(), json!("soon"));
        })),
        Err(AssertionError::Claim("exp"))
    );
    // Signed by a key that is not registered, under a registered kid.
    assert_eq!(
        verify(&es256(&claims(NOW), Some("ec-1"), &k.ec_other), NOW),
        Err(AssertionError::BadSignature)
    );
    // One flipped payload bit.
    let good = es256(&claims(NOW), Some("ec-1"), &k.ec);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut payload = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
    payload[5] ^= 1;
    parts[1] = URL_SAFE_NO_PAD.encode(payload);
    assert!(verify(&parts.join("."), NOW).is_err());
    for junk in ["", "a.b", "a.b.c", "....", &"x".repeat(9000)] {
        assert!(
            matches!(verify(junk, NOW), Err(AssertionError::Malformed(_))),
            "{junk:.20}"
        );
    }
}

// ---------------------------------------------------------------- the token service

fn service(db: &TestDb, clock: Arc<gateway::clock::ManualClock>) -> PartnerAuth {
    let clients = ClientDirectory::default();
    clients.register(client());
    PartnerAuth::new(
        db.db.clone(),
        clock,
        clients,
        PartnerAuthConfig {
            audience: audience(),
            times: AssertionTimes::default(),
            token_ttl_ms: 300_000,
        },
    )
}

fn request(assertion: String) -> TokenRequest {
    TokenRequest {
        grant_type: Some("client_credentials".into()),
        client_id: None,
        client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE.into()),
        client_assertion: Some(assertion),
        scope: Some("system/Observation.rs".into()),
    }
}

async fn token_service_binds_tokens_to_the_certificate_and_refuses_replays(backend: Backend) {
    let db = TestDb::new(backend).await;
    let clock = manual_clock();
    let auth = service(&db, clock.clone());
    let k = keys();
    let now = clock.now_ms() / 1000;
    let assertion = es256(&claims(now), Some("ec-1"), &k.ec);

    // F2 at the token endpoint: no certificate, or one not registered.
    for cert in [None, Some(k.other_cert.as_slice())] {
        let e = auth
            .issue_token(&request(assertion.clone()), cert)
            .await
            .unwrap_err();
        assert!(matches!(e, TokenRequestError::InvalidClient(_)), "{e}");
    }
    let issued = auth
        .issue_token(&request(assertion.clone()), Some(&k.cert))
        .await
        .unwrap();
    assert_eq!(issued.token_type, "Bearer");
    assert_eq!(issued.scope, "system/Observation.rs");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&issued.access_token).unwrap().len(),
        32
    );
    // F1: the same assertion again.
    let e = auth
        .issue_token(&request(assertion), Some(&k.cert))
        .await
        .unwrap_err();
    assert!(matches!(e, TokenRequestError::Replayed), "{e}");

    let bearer = format!("Bearer {}", issued.access_token);
    let binding = auth
        .authenticate(Some(&bearer), Some(&k.cert))
        .await
        .unwrap();
    assert_eq!(binding.client_id, CLIENT);
    // F2 at the resource: without the certificate, with another one, without the header.
    for cert in [None, Some(k.other_cert.as_slice())] {
        assert!(matches!(
            auth.authenticate(Some(&bearer), cert).await,
            Err(AuthenticateError::Access(AccessError::CertificateMismatch))
        ));
    }
    assert!(matches!(
        auth.authenticate(None, Some(&k.cert)).await,
        Err(AuthenticateError::Access(AccessError::Missing))
    ));
    assert!(matches!(
        auth.authenticate(Some(&issued.access_token), Some(&k.cert))
            .await,
        Err(AuthenticateError::Access(AccessError::Missing))
    ));
    let mut forged = issued.access_token.clone().into_bytes();
    forged[3] ^= 1;
    let forged = format!("Bearer {}", String::from_utf8(forged).unwrap());
    assert!(matches!(
        auth.authenticate(Some(&forged), Some(&k.cert)).await,
        Err(AuthenticateError::Access(AccessError::Unknown))
    ));
    // Lifetime: valid until 300 s, refused at 300 s.
    clock.advance_ms(299_999);
    assert!(
        auth.authenticate(Some(&bearer), Some(&k.cert))
            .await
            .is_ok()
    );
    clock.advance_ms(1);
    assert!(matches!(
        auth.authenticate(Some(&bearer), Some(&k.cert)).await,
        Err(AuthenticateError::Access(AccessError::Expired))
    ));

    // Scope not registered; wrong grant type; client_id that contradicts the assertion.
    let now = clock.now_ms() / 1000;
    let mut r = request(es256(&claims(now), Some("ec-1"), &k.ec));
    r.scope = Some("system/*.rs".into());
    assert!(matches!(
        auth.issue_token(&r, Some(&k.cert)).await,
        Err(TokenRequestError::InvalidScope)
    ));
    let mut r = request(es256(&claims(now), Some("ec-1"), &k.ec));
    r.grant_type = Some("authorization_code".into());
    assert!(matches!(
        auth.issue_token(&r, Some(&k.cert)).await,
        Err(TokenRequestError::UnsupportedGrantType)
    ));
    let mut r = request(es256(&claims(now), Some("ec-1"), &k.ec));
    r.client_id = Some("another-partner".into());
    assert!(matches!(
        auth.issue_token(&r, Some(&k.cert)).await,
        Err(TokenRequestError::InvalidClient(_))
    ));

    // Withdrawing the partner kills its live tokens.
    let fresh = auth
        .issue_token(
            &request(es256(&claims(now), Some("ec-1"), &k.ec)),
            Some(&k.cert),
        )
        .await
        .unwrap();
    let bearer = format!("Bearer {}", fresh.access_token);
    assert!(
        auth.authenticate(Some(&bearer), Some(&k.cert))
            .await
            .is_ok()
    );
    assert_eq!(auth.withdraw(CLIENT).await.unwrap(), 2);
    assert!(matches!(
        auth.authenticate(Some(&bearer), Some(&k.cert)).await,
        Err(AuthenticateError::Access(AccessError::Unknown))
    ));
    db.cleanup().await;
}

async fn one_assertion_submitted_100_times_concurrently_gives_one_token(backend: Backend) {
    let db = TestDb::new(backend).await;
    let clock = manual_clock();
    let auth = Arc::new(service(&db, clock.clone()));
    let assertion = es256(&claims(clock.now_ms() / 1000), Some("ec-1"), &keys().ec);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let auth = auth.clone();
            let r = request(assertion.clone());
            tokio::spawn(async move { auth.issue_token(&r, Some(&keys().cert)).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(TokenRequestError::Replayed) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_f2_token_service_sqlite() {
    token_service_binds_tokens_to_the_certificate_and_refuses_replays(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_f2_token_service_postgres() {
    token_service_binds_tokens_to_the_certificate_and_refuses_replays(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_concurrent_replays_of_one_assertion_sqlite() {
    one_assertion_submitted_100_times_concurrently_gives_one_token(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_concurrent_replays_of_one_assertion_postgres() {
    one_assertion_submitted_100_times_concurrently_gives_one_token(Backend::Postgres).await;
}

// ---------------------------------------------------------------- over mutual TLS

struct PartnerServer {
    addr: std::net::SocketAddr,
    server_cert: Vec<u8>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_partner_server(auth: PartnerAuth) -> PartnerServer {
    let db = auth_db(&auth);
    start_partner_server_with(auth, db, Arc::new(MemoryTrail::new()), 1_000).await
}

fn auth_db(auth: &PartnerAuth) -> gateway::store::Db {
    auth.db().clone()
}

async fn start_partner_server_with(
    auth: PartnerAuth,
    db: gateway::store::Db,
    trail: Arc<MemoryTrail>,
    rate: u32,
) -> PartnerServer {
    use gateway::http::partner::PartnerState;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&server_key)
        .unwrap();
    let directory = auth.clients().clone();
    let tls = gateway::tls::partner_from_der(
        vec![server_cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        Arc::new(move |der: &[u8]| directory.knows_certificate(der)),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let clock: gateway::clock::SharedClock = Arc::new(gateway::clock::SystemClock);
    let state = PartnerState {
        auth: Arc::new(auth),
        access: Arc::new(PartnerAccess::new(db.clone(), clock.clone(), trail.clone())),
        limiter: Arc::new(RateLimiter::new()),
        rates: Arc::default(),
        default_rate: rate,
        fhir_base: format!("https://localhost:{}/fhir", addr.port()),
        exports: Default::default(),
        importer: Some(gateway::importer::Importer::new(
            db.clone(),
            trail.clone(),
            clock.clone(),
        )),
        clock,
    };
    let task = tokio::spawn(gateway::server::serve_partner(
        listener,
        tls,
        state,
        async {
            let _ = stopped.await;
        },
    ));
    PartnerServer {
        addr,
        server_cert: server_cert.der().to_vec(),
        stop: Some(stop),
        task,
    }
}

impl PartnerServer {
    fn client(&self, identity: Option<(&[u8], &KeyPair)>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_der(&self.server_cert).unwrap())
            .resolve("localhost", self.addr);
        if let Some((cert, key)) = identity {
            let pem = format!("{}{}", pem_block("CERTIFICATE", cert), key.serialize_pem());
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD;
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Gets an access token over `client`'s connection with `assertion`.
async fn access_token(server: &PartnerServer, client: &reqwest::Client, assertion: &str) -> String {
    let body: Value = client
        .post(server.url("/oauth/token"))
        .form(&form(assertion))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn form(assertion: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "client_credentials".into()),
        ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE.into()),
        ("client_assertion", assertion.into()),
        ("scope", "system/Patient.rs".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_token_endpoint_needs_a_registered_client_certificate_over_mutual_tls() {
    let db = TestDb::new(Backend::Sqlite).await;
    let clock = manual_clock();
    let server = start_partner_server(service(&db, clock.clone())).await;
    let k = keys();
    let now = clock.now_ms() / 1000;

    // The handshake itself fails without a certificate, or with one nobody registered.
    for identity in [None, Some((k.other_cert.as_slice(), &k.other_cert_key))] {
        let client = server.client(identity);
        let sent = client.get(server.url("/healthz")).send().await;
        assert!(sent.is_err(), "handshake must fail: {sent:?}");
    }

    let client = server.client(Some((&k.cert, &k.cert_key)));
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let assertion = es256(&claims(now), Some("ec-1"), &k.ec);
    let reply = client
        .post(server.url("/oauth/token"))
        .form(&form(&assertion))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["cache-control"], "no-store");
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "system/Patient.rs");
    let token = body["access_token"].as_str().unwrap();
    let auth = service(&db, clock.clone());
    assert!(
        auth.authenticate(Some(&format!("Bearer {token}")), Some(&k.cert))
            .await
            .is_ok(),
        "the token is bound to the connection's certificate"
    );

    // Replay, JSON instead of a form, a bad assertion.
    let reply = client
        .post(server.url("/oauth/token"))
        .form(&form(&assertion))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    assert_eq!(
        reply.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let reply = client
        .post(server.url("/oauth/token"))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    assert_eq!(
        reply.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(now),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let reply = client
        .post(server.url("/oauth/token"))
        .form(&form(&hs))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    let reply = client
        .post(server.url("/oauth/token"))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    assert_eq!(
        reply.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
    server.stop().await;
    db.cleanup().await;
}

// ---------------------------------------------------------------- the FHIR API over mutual TLS

/// A second registered partner with its own certificate.
fn second_client() -> (RegisteredClient, Vec<u8>, KeyPair) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let der = rcgen::CertificateParams::new(vec!["second.example.jp".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .der()
        .to_vec();
    let jwks: JwkSet =
        serde_json::from_value(json!({ "keys": [ec_jwk(&keys().ec_other, "ec-b")] })).unwrap();
    let client = RegisteredClient {
        client_id: "partner-b".into(),
        jwks,
        certificate_sha256: vec![sha256(&der)],
        scopes: vec!["system/Observation.rs".into(), "system/Patient.rs".into()],
    };
    (client, der, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_api_over_mutual_tls_serves_only_within_consent() {
    use common::seed::{DAY, add_partner, change, seed_person};
    use gateway::domain::consent::{Action, Category};
    let db = TestDb::new(Backend::Sqlite).await;
    add_partner(&db.db, CLIENT).await;
    add_partner(&db.db, "partner-b").await;
    let person = seed_person(&db.db, 1).await;
    let other = seed_person(&db.db, 2).await;
    let now = gateway::clock::SystemClock.now_ms();
    change(
        &db.db,
        &person,
        CLIENT,
        Action::Grant,
        &[Category::Checkup],
        now - 1_000,
        now + DAY,
    )
    .await;
    change(
        &db.db,
        &person,
        "partner-b",
        Action::Grant,
        &Category::ALL,
        now - 1_000,
        now + DAY,
    )
    .await;

    let clock = gateway::clock::ManualClock::new(now);
    let auth = service(&db, clock.clone());
    let (b, b_cert, b_key) = second_client();
    auth.clients().register(b);
    let trail = Arc::new(MemoryTrail::new());
    let server = start_partner_server_with(auth, db.db.clone(), trail.clone(), 12).await;
    let k = keys();
    let client = server.client(Some((&k.cert, &k.cert_key)));

    // The CapabilityStatement needs no token.
    let r = client
        .get(server.url("/fhir/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/fhir+json");
    assert_eq!(
        r.json::<Value>().await.unwrap()["resourceType"],
        "CapabilityStatement"
    );

    let assertion = es256(&claims(now / 1000), Some("ec-1"), &k.ec);
    let token = access_token(&server, &client, &assertion).await;
    let bearer = format!("Bearer {token}");
    let get = |path: String, auth: Option<String>, c: &reqwest::Client| {
        let mut req = c.get(server.url(&path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };

    // Reads within consent.
    let r = get(
        format!("/fhir/Patient/{person}"),
        Some(bearer.clone()),
        &client,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], person.as_str());
    let r = get(
        format!("/fhir/Observation?patient={person}&_count=10"),
        Some(bearer.clone()),
        &client,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let bundle: Value = r.json().await.unwrap();
    let ids: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["obs-1-1", "obs-1-2"],
        "checkup only, not attendance"
    );
    assert_eq!(
        bundle["entry"][0]["resource"]["subject"]["reference"],
        format!("Patient/{person}")
    );
    let r = get(
        format!("/fhir/Patient/{person}/$everything"),
        Some(bearer.clone()),
        &client,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["total"], 3);

    // Not consented, not existing, other category: one answer, 404.
    for path in [
        format!("/fhir/Patient/{other}"),
        "/fhir/Patient/nobody".to_owned(),
        "/fhir/Condition/cond-1".to_owned(),
        format!("/fhir/Observation?patient={other}"),
    ] {
        let r = get(path.clone(), Some(bearer.clone()), &client)
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["resourceType"],
            "OperationOutcome"
        );
    }

    // F5: the token in the query string; no token; J4: an oversized page.
    let r = get(
        format!("/fhir/Patient/{person}?access_token={token}"),
        None,
        &client,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = get(format!("/fhir/Patient/{person}"), None, &client)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let r = get(
        format!("/fhir/Observation?patient={person}&_count=100000"),
        Some(bearer.clone()),
        &client,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    // F2: the token over another registered client's connection.
    let client_b = server.client(Some((&b_cert, &b_key)));
    let r = get(
        format!("/fhir/Patient/{person}"),
        Some(bearer.clone()),
        &client_b,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);

    // E6: a revoke commits, the next read is refused.
    change(&db.db, &person, CLIENT, Action::Revoke, &[], now, now).await;
    let r = get(
        format!("/fhir/Patient/{person}"),
        Some(bearer.clone()),
        &client,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);

    // J3: over the rate (12/s) the partner gets 429 with Retry-After.
    let mut limited = None;
    for _ in 0..30 {
        let r = get(
            "/fhir/Patient/nobody".to_owned(),
            Some(bearer.clone()),
            &client,
        )
        .await
        .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("rate limit reached");
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );

    // Every decision was audited (E10).
    let events = trail.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TrailEvent::Access(a) if a.denied.is_none()))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TrailEvent::Access(a) if a.denied == Some("revoked")))
    );
    server.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_imports_over_mutual_tls_all_or_nothing_and_idempotently() {
    use gateway::store::services::{Service, ServiceKind, upsert};
    let db = TestDb::new(Backend::Sqlite).await;
    common::seed::add_partner(&db.db, CLIENT).await;
    let now = gateway::clock::SystemClock.now_ms();
    let clock = gateway::clock::ManualClock::new(now);
    let auth = service(&db, clock.clone());
    // The second registered client is a source (a health-check institution).
    let (source, source_cert, source_key) = second_client();
    auth.clients().register(source);
    upsert(
        &db.db,
        &Service {
            id: "partner-b".into(),
            kind: ServiceKind::Source,
            name: "健診機関".into(),
            purpose: "健診結果の提供".into(),
            categories: Vec::new(),
            period_days: 365,
            certificate_sha256: None,
            jwks: None,
            scopes: String::new(),
            rate_per_sec: 100,
        },
        now,
    )
    .await
    .unwrap();
    let trail = Arc::new(MemoryTrail::new());
    let server = start_partner_server_with(auth, db.db.clone(), trail.clone(), 100).await;
    let k = keys();
    let source_client = server.client(Some((&source_cert, &source_key)));
    let mut c = claims(now / 1000);
    c["iss"] = json!("partner-b");
    c["sub"] = json!("partner-b");
    let source_token = format!(
        "Bearer {}",
        access_token(
            &server,
            &source_client,
            &es256(&c, Some("ec-b"), &keys().ec_other)
        )
        .await
    );
    let cda = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data-converter/tests/fixtures/cda/full.xml"),
    )
    .unwrap();
    let post = |client: &reqwest::Client, bearer: &str, file: &str, body: Vec<u8>| {
        client
            .post(server.url(&format!("/import?file={file}")))
            .header("authorization", bearer)
            .body(body)
            .send()
    };
    let r = post(&source_client, &source_token, "full.xml", cda.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let first: Value = r.json().await.unwrap();
    assert!(first["resources"].as_u64().unwrap() > 10, "{first}");
    let counts = gateway::store::records::counts(&db.db).await.unwrap();
    // The same bytes again: nothing added.
    let r = post(&source_client, &source_token, "full-again.xml", cda.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["already_imported"], true);
    assert_eq!(again["import_id"], first["import_id"]);
    assert_eq!(
        gateway::store::records::counts(&db.db).await.unwrap(),
        counts
    );
    // A broken file: refused with its position, nothing stored.
    let mut broken = cda.clone();
    broken.truncate(cda.len() / 2);
    let r = post(&source_client, &source_token, "broken.xml", broken)
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let refused: Value = r.json().await.unwrap();
    assert!(
        refused["detail"].as_str().unwrap().contains("broken.xml"),
        "{refused}"
    );
    assert_eq!(
        gateway::store::records::counts(&db.db).await.unwrap(),
        counts
    );
    // A partner may not import; nobody without a token may.
    let partner_client = server.client(Some((&k.cert, &k.cert_key)));
    let partner_token = format!(
        "Bearer {}",
        access_token(
            &server,
            &partner_client,
            &es256(&claims(now / 1000), Some("ec-1"), &k.ec)
        )
        .await
    );
    let r = post(&partner_client, &partner_token, "x.xml", cda.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = source_client
        .post(server.url("/import?file=x.xml"))
        .body(cda.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The imports are audited.
    let imports = trail
        .events()
        .into_iter()
        .filter(|e| matches!(e, TrailEvent::Import(_)))
        .count();
    assert_eq!(imports, 2);
    server.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_serves_only_consenting_persons_and_only_to_the_partner_that_asked() {
    use common::seed::{DAY, add_partner, change, seed_person};
    use gateway::domain::consent::{Action, Category};
    let db = TestDb::new(Backend::Sqlite).await;
    add_partner(&db.db, CLIENT).await;
    add_partner(&db.db, "partner-b").await;
    let p1 = seed_person(&db.db, 1).await;
    let p2 = seed_person(&db.db, 2).await;
    let p3 = seed_person(&db.db, 3).await;
    let now = gateway::clock::SystemClock.now_ms();
    change(
        &db.db,
        &p1,
        CLIENT,
        Action::Grant,
        &[Category::Checkup],
        now - 1_000,
        now + DAY,
    )
    .await;
    change(
        &db.db,
        &p2,
        CLIENT,
        Action::Grant,
        &[Category::Attendance],
        now - 1_000,
        now + DAY,
    )
    .await;
    change(
        &db.db,
        &p3,
        "partner-b",
        Action::Grant,
        &Category::ALL,
        now - 1_000,
        now + DAY,
    )
    .await;
    let clock = gateway::clock::ManualClock::new(now);
    let auth = service(&db, clock.clone());
    let (b, b_cert, b_key) = second_client();
    auth.clients().register(b);
    let trail = Arc::new(MemoryTrail::new());
    let server = start_partner_server_with(auth, db.db.clone(), trail.clone(), 1_000).await;
    let k = keys();
    let client = server.client(Some((&k.cert, &k.cert_key)));
    let bearer = format!(
        "Bearer {}",
        access_token(
            &server,
            &client,
            &es256(&claims(now / 1000), Some("ec-1"), &k.ec)
        )
        .await
    );

    // Kick-off needs Prefer: respond-async.
    let r = client
        .get(server.url("/fhir/$export"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .get(server.url("/fhir/$export"))
        .header("authorization", &bearer)
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let status_url = r.headers()["content-location"].to_str().unwrap().to_owned();
    assert!(status_url.contains("/fhir/$export-status/"));
    let path = status_url
        .split_once("/fhir/")
        .map(|(_, p)| format!("/fhir/{p}"))
        .unwrap();

    // Another partner cannot see the job.
    let client_b = server.client(Some((&b_cert, &b_key)));
    let mut cb = claims(now / 1000);
    cb["iss"] = json!("partner-b");
    cb["sub"] = json!("partner-b");
    let bearer_b = format!(
        "Bearer {}",
        access_token(&server, &client_b, &es256(&cb, Some("ec-b"), &k.ec_other)).await
    );
    let r = client_b
        .get(server.url(&path))
        .header("authorization", &bearer_b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Poll until done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let manifest: Value = loop {
        let r = client
            .get(server.url(&path))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            202 => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "export did not finish"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            200 => break r.json().await.unwrap(),
            other => panic!("status {other}"),
        }
    };
    assert_eq!(manifest["requiresAccessToken"], true);
    let mut lines = Vec::new();
    for out in manifest["output"].as_array().unwrap() {
        let url = out["url"].as_str().unwrap();
        let path = url
            .split_once("/fhir/")
            .map(|(_, p)| format!("/fhir/{p}"))
            .unwrap();
        let r = client
            .get(server.url(&path))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
        for line in r.text().await.unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["resourceType"], out["type"]);
            lines.push(format!(
                "{}/{}",
                v["resourceType"].as_str().unwrap(),
                v["id"].as_str().unwrap()
            ));
        }
    }
    lines.sort();
    // p1: Patient + its two checkup Observations; p2: Patient + its attendance Observation; p3
    // consented only to partner-b: nothing.
    assert_eq!(
        lines,
        vec![
            "Observation/hours-2".to_owned(),
            "Observation/obs-1-1".to_owned(),
            "Observation/obs-1-2".to_owned(),
            format!("Patient/{p1}"),
            format!("Patient/{p2}"),
        ]
    );
    // Each person's part was audited as an export.
    let exports = trail
        .events()
        .into_iter()
        .filter(|e| matches!(e, TrailEvent::Access(a) if a.action == gateway::domain::access::AccessAction::Export))
        .count();
    assert_eq!(exports, 2);
    server.stop().await;
    db.cleanup().await;
}

// ---------------------------------------------------------------- G8: no secrets in the logs

/// Everything logged by this test binary from the first call on, at DEBUG and above.
fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
    .clone()
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g8_logs_hold_no_tokens_session_ids_nonces_or_clinical_values() {
    use common::seed::{DAY, add_partner, add_person, change};
    use gateway::domain::consent::{Action, Category};
    use gateway::store::records::{NewImport, NewPersonKey, NewResource};
    let logs = captured_logs();
    let db = TestDb::new(Backend::Sqlite).await;
    add_partner(&db.db, CLIENT).await;
    add_person(&db.db, "p-canary").await;
    let clinical = "CANARY-中性脂肪-217mg";
    gateway::store::records::import(
        &db.db,
        &NewImport {
            content_sha256: [9; 32],
            source_id: None,
            file_name: "canary.xml".into(),
            format: "test".into(),
            records: 1,
            person_keys: vec![NewPersonKey {
                person_key: "key-canary".into(),
                patient_id: "pat-canary".into(),
            }],
            resources: vec![NewResource {
                resource_type: "Observation".into(),
                id: "obs-canary".into(),
                person_key: "key-canary".into(),
                category: Category::Checkup.as_str().into(),
                fhir_category: None,
                code: None,
                effective: None,
                json: json!({"resourceType": "Observation", "id": "obs-canary",
                    "subject": {"reference": "Patient/pat-canary"}, "valueString": clinical})
                .to_string(),
            }],
        },
        0,
    )
    .await
    .unwrap();
    gateway::store::records::link_person_key(&db.db, "key-canary", "p-canary", 0)
        .await
        .unwrap();
    let now = gateway::clock::SystemClock.now_ms();
    change(
        &db.db,
        "p-canary",
        CLIENT,
        Action::Grant,
        &[Category::Checkup],
        now - 1,
        now + DAY,
    )
    .await;

    // The partner side: assertion, token, reads, refusals.
    let clock = gateway::clock::ManualClock::new(now);
    let server = start_partner_server_with(
        service(&db, clock.clone()),
        db.db.clone(),
        Arc::new(MemoryTrail::new()),
        1_000,
    )
    .await;
    let k = keys();
    let client = server.client(Some((&k.cert, &k.cert_key)));
    let assertion = es256(&claims(now / 1000), Some("ec-1"), &k.ec);
    let token = access_token(&server, &client, &assertion).await;
    // The same assertion again (refused, logged as such).
    let _ = client
        .post(server.url("/oauth/token"))
        .form(&form(&assertion))
        .send()
        .await;
    let r = client
        .get(server.url("/fhir/Observation/obs-canary"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains(clinical));
    let wrong = format!("{token}x");
    let _ = client
        .get(server.url("/fhir/Observation/obs-canary"))
        .header("authorization", format!("Bearer {wrong}"))
        .send()
        .await;
    let _ = client
        .get(server.url(&format!("/fhir/Patient/p-canary?access_token={token}")))
        .send()
        .await;
    server.stop().await;

    // The kiosk side: a session, a nonce, a card token, a consent document.
    let gw =
        common::TestGateway::start(db.db.clone(), common::default_verifier(), clock.clone()).await;
    let card = common::Card::new();
    let mut browser = gw.browser();
    let nonce = browser.nonce().await;
    let card_token = card.token(&gw.origin, &nonce);
    let r = browser
        .post("/api/auth/token", Some(card_token.clone()))
        .await;
    assert_eq!(r.status, 200);
    let session = browser.cookie.clone().unwrap();
    let r = browser
        .post(
            "/api/consent/prepare",
            Some(br#"{"service_id":"partner-phr-app","action":"revoke"}"#.to_vec()),
        )
        .await;
    let consent_nonce = r.json["nonce"].as_str().unwrap().to_owned();
    let _ = browser
        .post(
            "/api/consent/commit",
            Some(card.token(&gw.origin, &consent_nonce)),
        )
        .await;
    gw.stop().await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("token"), "the capture works: {}", text.len());
    let token_json: Value = serde_json::from_slice(&card_token).unwrap();
    let signature = token_json["signature"].as_str().unwrap_or("").to_owned();
    for (what, canary) in [
        ("access token", token.as_str()),
        ("refused access token", wrong.as_str()),
        ("client assertion", assertion.as_str()),
        ("clinical value", clinical),
        ("session id", session.as_str()),
        ("sign-in nonce", nonce.as_str()),
        ("consent nonce", consent_nonce.as_str()),
        ("card signature", signature.as_str()),
    ] {
        assert!(!canary.is_empty(), "{what}");
        assert!(!text.contains(canary), "{what} found in the logs");
    }
    db.cleanup().await;
}
