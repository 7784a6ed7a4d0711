//! Shared fixtures of the gateway tests: test PKI (two JPKI-like auth CA generations sharing one
//! DN, the 署名用 CA, an unrelated CA, a PHR-card ECDSA P-256 CA), CRLs, token makers, databases
//! (SQLite in a temporary directory, PostgreSQL from `IPHR_TEST_PG_URL`), and a real gateway on
//! port 0 with TLS, polled on `/healthz` until it answers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod seed;

use card_agent::jpki::Jpki;
use card_agent::pin::{JpkiAuthPin, LastTry};
use card_agent::testca::{self, CertOptions, JpkiTestCa, Purpose};
use card_agent::virtual_card::InProcess;
use card_agent::virtual_card::jpki::{JpkiCardMaterial, VirtualJpkiCard};
use gateway::clock::{Clock, ManualClock, SharedClock};
use gateway::domain::auth::{AuthConfig, Authenticator};
use gateway::domain::certs::{AnchorSet, CardKey, CardType, CertPolicy};
use gateway::domain::revocation::RevocationStore;
use gateway::domain::session::SessionPolicy;
use gateway::domain::token::{AuthToken, SignatureAlgorithm, digest_to_sign, signed_data};
use gateway::domain::verifier::TokenVerifier;
use gateway::http::{AppState, SESSION_COOKIE};
use gateway::server::{Gateway, serve};
use gateway::store::Db;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    RevokedCertParams, SerialNumber,
};
use rsa::RsaPrivateKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration as StdDuration;
use time::{Duration, OffsetDateTime};

pub const ORIGIN_HOST: &str = "localhost";
pub const APP_VERSION: &str = "iphr-card-agent/0.1.0 (test)";

/// An ECDSA P-256 CA for PHR cards.
pub struct PhrCa {
    pub key: KeyPair,
    pub cert_der: Vec<u8>,
}

impl PhrCa {
    pub fn new(cn: &str) -> PhrCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "JP");
        dn.push(DnType::OrganizationName, "iPHR-TEST");
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert_der = params.self_signed(&key).unwrap().der().to_vec();
        PhrCa { key, cert_der }
    }

    /// A card: its P-256 key (PKCS#8) and certificate.
    pub fn issue_card(&self, key_usages: Vec<KeyUsagePurpose>) -> (KeyPair, Vec<u8>) {
        let card_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), &self.key).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "JP");
        dn.push(DnType::CommonName, testca::opaque_subject_id());
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from(rand_u64()));
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = key_usages;
        let der = params.signed_by(&card_key, &issuer).unwrap().der().to_vec();
        (card_key, der)
    }

    pub fn crl(&self, revoked: &[Vec<u8>], next_update: OffsetDateTime) -> Vec<u8> {
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), &self.key).unwrap();
        CertificateRevocationListParams {
            this_update: OffsetDateTime::now_utc() - Duration::hours(1),
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: OffsetDateTime::now_utc() - Duration::hours(2),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap()
        .der()
        .to_vec()
    }
}

fn rand_u64() -> u64 {
    let b: [u8; 8] = gateway::domain::random_bytes(&ring::rand::SystemRandom::new()).unwrap();
    u64::from_be_bytes(b) >> 1
}

/// Everything the tests sign with, made once per test binary.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    /// JPKI-like CA, generation 1 (auth and sign roots).
    pub gen1: JpkiTestCa,
    /// Generation 2: same DNs, other keys.
    pub gen2: JpkiTestCa,
    /// An unrelated JPKI-like CA (never configured).
    pub rogue: JpkiTestCa,
    /// RSA keys for cards.
    pub key_a: RsaPrivateKey,
    pub key_b: RsaPrivateKey,
    /// A PHR card CA and an unrelated one.
    pub phr: PhrCa,
    pub phr_rogue: PhrCa,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        Pki {
            gen1: JpkiTestCa::load_or_create(&path.join("gen1")).unwrap(),
            gen2: JpkiTestCa::load_or_create(&path.join("gen2")).unwrap(),
            rogue: JpkiTestCa::load_or_create(&path.join("rogue")).unwrap(),
            key_a: testca::generate_rsa_key().unwrap(),
            key_b: testca::generate_rsa_key().unwrap(),
            phr: PhrCa::new("PHR card issuer CA (test)"),
            phr_rogue: PhrCa::new("rogue PHR CA"),
            dir: path,
            _dir: dir,
        }
    })
}

pub fn in_years(years: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::days(365 * years)
}

impl Pki {
    /// A 利用者証明用 certificate for `key` from `ca`.
    pub fn auth_cert(&self, ca: &JpkiTestCa, key: &RsaPrivateKey) -> Vec<u8> {
        ca.issue(
            Purpose::Auth,
            key,
            &testca::opaque_subject_id(),
            in_years(5),
        )
        .unwrap()
    }

    pub fn auth_cert_with(&self, key: &RsaPrivateKey, options: &CertOptions) -> Vec<u8> {
        self.gen1.issue_with(Purpose::Auth, key, options).unwrap()
    }

    /// A fresh CRL of `ca`'s auth root listing `revoked`.
    pub fn auth_crl(&self, ca: &JpkiTestCa, revoked: &[Vec<u8>]) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        ca.issue_crl(
            Purpose::Auth,
            revoked,
            now - Duration::hours(1),
            now + Duration::days(1),
            1,
        )
        .unwrap()
    }
}

/// The standard anchor sets: JPKI auth gen1 + gen2 with fresh empty CRLs, PHR CA with an empty CRL.
#[allow(clippy::needless_pass_by_value)] // callers build the lists inline
pub fn verifier_with_crls(jpki_crls: Vec<Vec<u8>>, phr_crls: Vec<Vec<u8>>) -> TokenVerifier {
    let p = pki();
    let skew = StdDuration::from_secs(900);
    let jpki = AnchorSet::new(
        CardType::Jpki,
        CardKey::Auth,
        vec![p.gen1.auth.cert_der.clone(), p.gen2.auth.cert_der.clone()],
        CertPolicy::default(),
        Arc::new(RevocationStore::from_crls(&jpki_crls, skew).unwrap()),
    )
    .unwrap();
    let phr = AnchorSet::new(
        CardType::Phr,
        CardKey::Auth,
        vec![p.phr.cert_der.clone()],
        CertPolicy::default(),
        Arc::new(RevocationStore::from_crls(&phr_crls, skew).unwrap()),
    )
    .unwrap();
    TokenVerifier::new(vec![jpki, phr])
}

pub fn default_verifier() -> TokenVerifier {
    let p = pki();
    verifier_with_crls(
        vec![p.auth_crl(&p.gen1, &[]), p.auth_crl(&p.gen2, &[])],
        vec![p.phr.crl(&[], in_years(1))],
    )
}

/// An RS256 token signed with an RSA key directly.
pub fn rs256_token(cert_der: &[u8], key: &RsaPrivateKey, origin: &str, nonce: &str) -> Vec<u8> {
    let digest = digest_to_sign(origin, nonce);
    let signature = key
        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
        .unwrap();
    token_json(cert_der, SignatureAlgorithm::Rs256, signature)
}

/// An ES256 token (P1363 signature) signed with a PKCS#8 P-256 key.
pub fn es256_token(cert_der: &[u8], key: &KeyPair, origin: &str, nonce: &str) -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.serialize_der(),
        &rng,
    )
    .unwrap();
    let signature = pair.sign(&rng, &signed_data(origin, nonce)).unwrap();
    token_json(
        cert_der,
        SignatureAlgorithm::Es256,
        signature.as_ref().to_vec(),
    )
}

pub fn token_json(cert_der: &[u8], algorithm: SignatureAlgorithm, signature: Vec<u8>) -> Vec<u8> {
    AuthToken {
        certificate_der: cert_der.to_vec(),
        algorithm,
        signature,
        app_version: APP_VERSION.into(),
    }
    .to_json()
    .into_bytes()
}

/// A virtual My Number card (in-process) issued by generation 1.
pub struct Card {
    _dir: tempfile::TempDir,
    pub transport: InProcess<VirtualJpkiCard>,
}

impl Card {
    pub fn new() -> Card {
        let dir = tempfile::tempdir().unwrap();
        let material = JpkiCardMaterial::load_or_issue(dir.path(), &pki().gen1).unwrap();
        Card {
            transport: InProcess::new(VirtualJpkiCard::new(material)),
            _dir: dir,
        }
    }

    pub fn certificate(&self) -> Vec<u8> {
        Jpki::select(self.transport.clone())
            .unwrap()
            .read_auth_certificate()
            .unwrap()
    }

    /// What the agent will do: read the certificate, verify the PIN, sign the challenge.
    pub fn token(&self, origin: &str, nonce: &str) -> Vec<u8> {
        let mut jpki = Jpki::select(self.transport.clone()).unwrap();
        let cert = jpki.read_auth_certificate().unwrap();
        let mut jpki = jpki
            .verify_auth_pin(&JpkiAuthPin::parse("1234").unwrap(), LastTry::Refuse)
            .unwrap();
        let signature = jpki.sign_sha256(&digest_to_sign(origin, nonce)).unwrap();
        token_json(&cert, SignatureAlgorithm::Rs256, signature)
    }
}

// ---------------------------------------------------------------- databases

pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test; PostgreSQL ones are dropped by [`TestDb::cleanup`].
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

pub fn pg_url() -> String {
    std::env::var("IPHR_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "IPHR_TEST_PG_URL is not set: PostgreSQL tests need it. Run `bash scripts/test.sh` (its hook \
             scripts/test-setup.d/30-postgres.sh uses 127.0.0.1:5432 or starts a throwaway cluster), \
             or export IPHR_TEST_PG_URL=postgres://USER@HOST:PORT/DB with a role that may CREATE DATABASE"
        )
    })
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("gateway.db").display());
                TestDb {
                    db: Db::connect(&url, 8).await.unwrap(),
                    url,
                    _dir: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres => {
                let admin_url = pg_url();
                let name = format!("iphr_gw_{:016x}", rand_u64());
                let admin = Db::connect_raw_postgres(&admin_url).await.unwrap();
                admin
                    .execute_raw(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                admin.close().await;
                let (base, _) = admin_url.rsplit_once('/').unwrap();
                let url = format!("{base}/{name}");
                TestDb {
                    db: Db::connect(&url, 10).await.unwrap(),
                    url,
                    _dir: None,
                    pg: Some((admin_url, name)),
                }
            }
        }
    }

    pub async fn cleanup(self) {
        self.db.close().await;
        if let Some((admin_url, name)) = self.pg {
            let admin = Db::connect_raw_postgres(&admin_url).await.unwrap();
            admin
                .execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .unwrap();
            admin.close().await;
        }
    }
}

// ---------------------------------------------------------------- authenticator & server

pub fn auth_config(origin: &str) -> AuthConfig {
    AuthConfig {
        origin: origin.to_owned(),
        nonce_ttl_ms: 300_000,
        session: SessionPolicy {
            idle_ms: 120_000,
            absolute_ms: 12 * 3600 * 1000,
        },
        link_freshness_ms: 300_000,
    }
}

pub fn manual_clock() -> Arc<ManualClock> {
    ManualClock::starting_now()
}

/// A running gateway.
pub struct TestGateway {
    pub origin: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub app: AppState,
    pub trail: Arc<gateway::domain::trail::MemoryTrail>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestGateway {
    /// Starts the real server (TLS) on 127.0.0.1:0 and waits until `/healthz` answers 200.
    pub async fn start(db: Db, verifier: TokenVerifier, clock: SharedClock) -> TestGateway {
        TestGateway::start_with_trail(db, verifier, clock, None).await
    }

    /// [`TestGateway::start`] writing consent and privacy events to `audit` (e.g. a real
    /// `AuditLog`) instead of the in-memory trail.
    pub async fn start_with_trail(
        db: Db,
        verifier: TokenVerifier,
        clock: SharedClock,
        audit: Option<Arc<dyn gateway::domain::trail::AuditTrail>>,
    ) -> TestGateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = format!("https://{ORIGIN_HOST}:{}", addr.port());
        let auth = Arc::new(Authenticator::new(
            db,
            clock,
            Arc::new(verifier),
            auth_config(&origin),
        ));
        let trail = Arc::new(gateway::domain::trail::MemoryTrail::new());
        let audit: Arc<dyn gateway::domain::trail::AuditTrail> = audit.unwrap_or(trail.clone());
        let app = AppState {
            consent: Arc::new(gateway::domain::consent_desk::ConsentDesk::new(
                auth.clone(),
                audit.clone(),
            )),
            privacy: Arc::new(gateway::domain::privacy::PrivacyDesk::new(
                auth.clone(),
                audit,
                gateway::domain::privacy::DEFAULT_BACKUP_PURGE_DAYS,
            )),
            auth,
            kiosk: Arc::default(),
            sources: None,
        };
        let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let server_cert = CertificateParams::new(vec![ORIGIN_HOST.to_owned()])
            .unwrap()
            .self_signed(&server_key)
            .unwrap();
        let tls = gateway::tls::from_der(
            vec![server_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
        let gateway = Gateway {
            app: app.clone(),
            tls,
            audit: None,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, gateway, async {
            let _ = stop_rx.await;
        }));
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_der(server_cert.der()).unwrap())
            .resolve(ORIGIN_HOST, addr)
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let gw = TestGateway {
            origin,
            addr,
            client,
            app,
            trail,
            stop: Some(stop_tx),
            task: Some(task),
        };
        gw.wait_healthy().await;
        gw
    }

    async fn wait_healthy(&self) {
        let deadline = std::time::Instant::now() + StdDuration::from_secs(30);
        loop {
            match self.client.get(self.url("/healthz")).send().await {
                Ok(r) if r.status() == 200 => return,
                other => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "gateway not healthy within 30 s: {other:?}"
                    );
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    pub fn browser(&self) -> Browser {
        Browser {
            client: self.client.clone(),
            origin: self.origin.clone(),
            cookie: None,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A browser: keeps the session cookie, sends the gateway's Origin on POSTs.
#[derive(Clone)]
pub struct Browser {
    pub client: reqwest::Client,
    pub origin: String,
    pub cookie: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub json: serde_json::Value,
    pub set_cookie: Vec<String>,
}

impl Browser {
    pub async fn post(&mut self, path: &str, body: Option<Vec<u8>>) -> Reply {
        let origin = self.origin.clone();
        self.post_with_origin(path, body, Some(&origin)).await
    }

    pub async fn post_with_origin(
        &mut self,
        path: &str,
        body: Option<Vec<u8>>,
        origin: Option<&str>,
    ) -> Reply {
        let mut req = self
            .client
            .post(format!("{}{path}", self.origin))
            .header("user-agent", "gateway-test");
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        self.send(req).await
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let req = self.client.get(format!("{}{path}", self.origin));
        self.send(req).await
    }

    async fn send(&mut self, mut req: reqwest::RequestBuilder) -> Reply {
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("{SESSION_COOKIE}={c}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let set_cookie: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookie {
            let value = c
                .strip_prefix(&format!("{SESSION_COOKIE}="))
                .and_then(|rest| rest.split(';').next())
                .unwrap();
            self.cookie = (!value.is_empty()).then(|| value.to_owned());
        }
        let bytes = resp.bytes().await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            json,
            set_cookie,
        }
    }

    /// Asks for a login nonce.
    pub async fn nonce(&mut self) -> String {
        let r = self.post("/api/auth/nonce", None).await;
        assert_eq!(r.status, 200, "{:?}", r.json);
        r.json["nonce"].as_str().unwrap().to_owned()
    }
}

pub fn now_ms(clock: &dyn Clock) -> i64 {
    clock.now_ms()
}
