//! Pulls from sources (issue 7; `docs/source-protocol.md` §7) against in-process reference source
//! servers (`iphr_source::server`, port 0, mutual TLS with rcgen certificates): three sources,
//! incremental and scheduled pulls, refusals (each with nothing stored and an audit entry), and
//! fault tests (timeout, 500, truncation, the same file twice, a ten times slower source) with the
//! requests counted at the source and the circuit breaker's state. PHR cards are simulated: the
//! holder certificate from the test PHR CA, a service-binding certificate and grants signed with
//! a P-256 key (the end-to-end through pcscd with the virtual card is in `tests/`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::seed::{self, DAY};
use common::{Backend, TestDb, pki};
use gateway::clock::{Clock, SharedClock, SystemClock};
use gateway::domain::consent::{Action, Category};
use gateway::domain::trail::{AuditTrail, MemoryTrail, SourceAction, TrailEvent};
use gateway::sources::breaker::{Breaker, BreakerState};
use gateway::sources::client::{ClientIdentity, ClientSettings, SourceClient};
use gateway::sources::{
    GrantRequest, HubSettings, KioskUser, PullProgress, PullState, SourceHub, SourcesError,
};
use gateway::store::Db;
use gateway::store::records;
use gateway::store::services::{self, Service, ServiceKind};
use iphr_source::protocol::Credential;
use iphr_source::server::{Enrollment, Faults, RegisteredGateway, Source, SourceConfig};
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const AUDIENCE: &str = "gw.test.example";

fn fixture(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data-converter/tests/fixtures")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One attendance worker's rows (a single-person `.attendance.csv`).
fn attendance_of(worker: &str) -> Vec<u8> {
    let text = String::from_utf8(fixture("attendance/feb-2026.csv")).unwrap();
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    for l in lines.filter(|l| l.split(',').nth(1) == Some(worker)) {
        out.push_str(l);
        out.push('\n');
    }
    out.into_bytes()
}

/// A CA and its certificate.
struct Ca {
    key: KeyPair,
    der: Vec<u8>,
}

impl Ca {
    fn new(cn: &str) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Ca { key, der }
    }

    /// A TLS server certificate for 127.0.0.1 / localhost.
    fn server_cert(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let issuer = Issuer::from_ca_cert_der(&self.der.as_slice().into(), &self.key).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }
}

/// The gateway's TLS client identity (self-signed; registered at each source).
struct GatewayIdentity {
    der: Vec<u8>,
    identity: ClientIdentity,
}

fn gateway_identity() -> GatewayIdentity {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(vec!["gw.test.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    GatewayIdentity {
        der: cert.der().to_vec(),
        identity: ClientIdentity {
            chain: vec![cert.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(key.serialize_der().into())),
        },
    }
}

/// A reference source server on 127.0.0.1:0.
struct TestSource {
    id: String,
    url: String,
    ca: Ca,
    faults: Arc<Faults>,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestSource {
    async fn start(
        id: &str,
        gateway: &GatewayIdentity,
        enrollments: Vec<Enrollment>,
    ) -> TestSource {
        Self::start_with_ca(id, gateway, enrollments, Ca::new(&format!("{id} CA"))).await
    }

    async fn start_with_ca(
        id: &str,
        gateway: &GatewayIdentity,
        enrollments: Vec<Enrollment>,
        ca: Ca,
    ) -> TestSource {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let source = Source::open(SourceConfig {
            service_id: id.to_owned(),
            data_dir: data_dir.clone(),
            state_dir: dir.path().join("state"),
            phr_issuer_ca: Some(pki().phr.cert_der.clone()),
            jpki_cas: Vec::new(),
            gateways: vec![RegisteredGateway {
                audience: AUDIENCE.to_owned(),
                certificate: gateway.der.clone(),
            }],
            enrollments,
        })
        .unwrap();
        let (chain, key) = ca.server_cert();
        let tls = source.tls_config(chain, key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let faults = source.faults();
        tokio::spawn(iphr_source::server::serve(listener, tls, source, async {
            let _ = stop_rx.await;
        }));
        TestSource {
            id: id.to_owned(),
            url: format!("https://127.0.0.1:{}", addr.port()),
            ca,
            faults,
            data_dir,
            _dir: dir,
            stop: Some(stop_tx),
        }
    }

    /// Puts a file into the person's directory at the source.
    fn put(&self, pseudonym: &str, name: &str, bytes: &[u8]) {
        let dir = self.data_dir.join(pseudonym);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    fn client(&self, gateway: &GatewayIdentity, settings: ClientSettings) -> SourceClient {
        SourceClient::new(
            &self.id,
            &self.url,
            &[CertificateDer::from(self.ca.der.clone())],
            &gateway.identity,
            settings,
            Breaker::new(4, Duration::from_secs(60)),
        )
        .unwrap()
    }
}

impl Drop for TestSource {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn settings() -> ClientSettings {
    ClientSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        max_attempts: 3,
        backoff_base: Duration::from_millis(20),
        max_file_bytes: 16 * 1024 * 1024,
    }
}

/// A simulated PHR card: the holder key and certificate from the test PHR CA.
struct TestCard {
    holder_key: KeyPair,
    holder_der: Vec<u8>,
}

/// A service slot of a card: its binding certificate and key.
struct Slot {
    binding_der: Vec<u8>,
    key: SigningKey,
    service: String,
}

impl TestCard {
    fn new() -> TestCard {
        let (holder_key, holder_der) = pki()
            .phr
            .issue_card(vec![KeyUsagePurpose::DigitalSignature]);
        TestCard {
            holder_key,
            holder_der,
        }
    }

    fn fingerprint(&self) -> Vec<u8> {
        gateway::domain::sha256(&self.holder_der).to_vec()
    }

    /// `phr link`: a service key and its binding certificate signed by the holder key.
    fn link(&self, service: &str, pseudonym: &str) -> Slot {
        let service_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer =
            Issuer::from_ca_cert_der(&self.holder_der.as_slice().into(), &self.holder_key).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::OrganizationName,
            card_agent::phr::verify::BINDING_ORG,
        );
        dn.push(DnType::OrganizationalUnitName, service);
        dn.push(DnType::CommonName, pseudonym);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
        let binding_der = params
            .signed_by(&service_key, &issuer)
            .unwrap()
            .der()
            .to_vec();
        Slot {
            binding_der,
            key: SigningKey::from_pkcs8_der(&service_key.serialize_der()).unwrap(),
            service: service.to_owned(),
        }
    }
}

/// What `phr sign-grant` makes: the grant TLV and the DER signature.
struct GrantSpec<'a> {
    service: &'a str,
    pseudonym: &'a str,
    audience: &'a str,
    nonce: Vec<u8>,
    issued_at: i64,
    expires_at: i64,
    scope: Vec<String>,
}

fn sign_grant(key: &SigningKey, spec: &GrantSpec<'_>) -> (Vec<u8>, Vec<u8>) {
    use card_agent::phr::consent::Category as CardCategory;
    use card_agent::phr::verify::ServiceGrant;
    let grant = ServiceGrant {
        service: spec.service.to_owned(),
        pseudonym: spec.pseudonym.to_owned(),
        audience: spec.audience.to_owned(),
        nonce: spec.nonce.clone(),
        issued_at: u32::try_from(spec.issued_at).unwrap(),
        expires_at: u32::try_from(spec.expires_at).unwrap(),
        scope: spec
            .scope
            .iter()
            .map(|c| CardCategory::parse(c).unwrap())
            .collect(),
    }
    .encode()
    .unwrap();
    let sig: p256::ecdsa::Signature = key.sign_prehash(&ServiceGrant::digest_of(&grant)).unwrap();
    (grant, sig.to_der().as_bytes().to_vec())
}

fn now_s() -> i64 {
    SystemClock.now_ms() / 1000
}

async fn register_source(db: &Db, id: &str, categories: &[Category]) {
    services::upsert(
        db,
        &Service {
            id: id.into(),
            kind: ServiceKind::Source,
            name: format!("{id} 健診センター"),
            purpose: "健診結果の取り込み".into(),
            categories: categories.to_vec(),
            period_days: 365,
            certificate_sha256: None,
            jwks: None,
            scopes: String::new(),
            rate_per_sec: 100,
        },
        0,
    )
    .await
    .unwrap();
}

/// The world of one test: a database, an audit trail, sources, the hub.
struct World {
    t: TestDb,
    trail: Arc<MemoryTrail>,
    hub: Arc<SourceHub>,
    sources: Vec<TestSource>,
}

impl World {
    async fn new(backend: Backend, ids: &[&str], settings: ClientSettings) -> World {
        let gateway = gateway_identity();
        let mut sources = Vec::new();
        for id in ids {
            sources.push(TestSource::start(id, &gateway, enrollments(id)).await);
        }
        Self::with_sources(backend, sources, gateway, settings).await
    }

    async fn with_sources(
        backend: Backend,
        sources: Vec<TestSource>,
        gateway: GatewayIdentity,
        settings: ClientSettings,
    ) -> World {
        let t = TestDb::new(backend).await;
        let trail = Arc::new(MemoryTrail::new());
        let clients = sources
            .iter()
            .map(|s| s.client(&gateway, settings))
            .collect();
        let clock: SharedClock = Arc::new(SystemClock);
        let trail_dyn: Arc<dyn AuditTrail> = trail.clone();
        let hub = SourceHub::new(
            HubSettings {
                gateway_id: AUDIENCE.to_owned(),
                page_size: 2,
            },
            clients,
            t.db.clone(),
            trail_dyn,
            clock,
            vec![pki().phr.cert_der.clone()],
        )
        .unwrap();
        World {
            t,
            trail,
            hub,
            sources,
        }
    }

    fn source(&self, id: &str) -> &TestSource {
        self.sources.iter().find(|s| s.id == id).unwrap()
    }

    fn db(&self) -> &Db {
        &self.t.db
    }

    /// A person with a consent towards `source` for `categories` and the card linked there.
    async fn person_at(
        &self,
        person: &str,
        card: &TestCard,
        source: &str,
        pseudonym: &str,
        categories: &[Category],
    ) -> (KioskUser, Slot) {
        self.db()
            .execute_raw(&format!(
                "INSERT INTO persons (id, created_at_ms) VALUES ('{person}', 0) \
                 ON CONFLICT (id) DO NOTHING"
            ))
            .await
            .unwrap();
        register_source(self.db(), source, categories).await;
        let now = SystemClock.now_ms();
        seed::change(
            self.db(),
            person,
            source,
            Action::Grant,
            categories,
            now - 60_000,
            now + 30 * DAY,
        )
        .await;
        let user = KioskUser {
            person_id: person.to_owned(),
            session_hash: gateway::domain::sha256(person.as_bytes()),
            card_fingerprint: card.fingerprint(),
        };
        let slot = card.link(source, pseudonym);
        self.hub
            .link(
                &user,
                source,
                &code_of(source, pseudonym),
                Credential::Phr {
                    holder_certificate: card.holder_der.clone(),
                    binding_certificate: slot.binding_der.clone(),
                },
            )
            .await
            .unwrap();
        (user, slot)
    }

    /// Grant request → card signature → submit; returns the pull id.
    async fn grant(&self, user: &KioskUser, slot: &Slot) -> Result<String, SourcesError> {
        let req = self.hub.grant_request(user, &slot.service).await.unwrap();
        let (grant, sig) = sign_requested(slot, &req);
        self.hub
            .submit_grant(user, &slot.service, &grant, &sig)
            .await
    }

    async fn wait(&self, user: &KioskUser, pull: &str) -> PullProgress {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = self.hub.progress(&user.person_id, pull).unwrap();
            if p.state != PullState::Running {
                return p;
            }
            assert!(Instant::now() < deadline, "pull still running: {p:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn counts(&self) -> (i64, i64) {
        records::counts(self.db()).await.unwrap()
    }

    /// Audit events of an action about a source.
    fn source_events(&self, source: &str, action: SourceAction) -> Vec<serde_json::Value> {
        self.trail
            .events()
            .into_iter()
            .filter_map(|e| match e {
                TrailEvent::Source(s) if s.source_id == source && s.action == action => {
                    Some(serde_json::json!({"outcome": s.outcome, "detail": s.detail}))
                }
                _ => None,
            })
            .collect()
    }
}

impl World {
    /// The reasons of the files refused at `source`, in the audit trail's order.
    fn deny_reasons(&self, source: &str) -> Vec<String> {
        self.source_events(source, SourceAction::Pull)
            .iter()
            .filter(|e| e["outcome"] == "deny")
            .map(|e| e["detail"]["reason"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// The grant the gateway asked for, signed with the slot's key (valid as long as it asked).
fn sign_requested(slot: &Slot, req: &GrantRequest) -> (Vec<u8>, Vec<u8>) {
    sign_grant(
        &slot.key,
        &GrantSpec {
            service: &req.service,
            pseudonym: &req.pseudonym,
            audience: &req.audience,
            nonce: hex::decode(&req.nonce_hex).unwrap(),
            issued_at: now_s(),
            expires_at: now_s() + i64::from(req.ttl_secs),
            scope: req.scope.clone(),
        },
    )
}

fn code_of(source: &str, pseudonym: &str) -> String {
    format!("CODE-{source}-{pseudonym}")
}

/// Enrollment codes for pseudonyms P-1 … P-4 at a source.
fn enrollments(source: &str) -> Vec<Enrollment> {
    (1..=4)
        .map(|i| Enrollment {
            code: code_of(source, &format!("P-{i}")),
            pseudonym: format!("P-{i}"),
            expires_at: None,
        })
        .collect()
}

const CHECKUP: &[Category] = &[Category::Checkup];

#[tokio::test]
async fn three_sources_pull_then_nothing_new_then_a_new_file_sqlite() {
    three_sources_pull(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sources_pull_then_nothing_new_then_a_new_file_postgres() {
    three_sources_pull(Backend::Postgres).await;
}

async fn three_sources_pull(backend: Backend) {
    let w = World::new(backend, &["kenshin", "insurer", "ohcloud"], settings()).await;
    let card = TestCard::new();
    w.source("kenshin")
        .put("P-1", "kenshin-2024.xml", &fixture("cda/minimal.xml"));
    w.source("insurer")
        .put("P-1", "kenshin-full.xml", &fixture("cda/full.xml"));
    w.source("ohcloud").put(
        "P-1",
        "stress-2025.stress.json",
        &fixture("stress/person.json"),
    );
    let mut users = Vec::new();
    for (source, cats) in [
        ("kenshin", CHECKUP),
        ("insurer", CHECKUP),
        (
            "ohcloud",
            &[Category::StressCheck, Category::Attendance][..],
        ),
    ] {
        users.push((source, w.person_at("p1", &card, source, "P-1", cats).await));
    }
    let mut pulls = Vec::new();
    for (source, (user, slot)) in &users {
        pulls.push((*source, w.grant(user, slot).await.unwrap()));
    }
    for (source, pull) in &pulls {
        let p = w.wait(&users[0].1.0, pull).await;
        assert_eq!(p.state, PullState::Done, "{source}: {p:?}");
        assert_eq!(
            (p.listed, p.stored, p.refused),
            (1, 1, 0),
            "{source}: {p:?}"
        );
        assert!(p.resources > 0);
    }
    let (imports, resources) = w.counts().await;
    assert_eq!(imports, 3);
    // Every stored resource belongs to p1 now (its keys were linked in the import transaction).
    let patients = records::patient_ids_of(w.db(), "p1").await.unwrap();
    assert_eq!(patients.len(), 3, "{patients:?}");
    // Imports are audited with the person; every pull too.
    let imports_audited = w
        .trail
        .events()
        .into_iter()
        .filter(|e| matches!(e, TrailEvent::Import(i) if i.person_id.as_deref() == Some("p1")))
        .count();
    assert_eq!(imports_audited, 3);
    for source in ["kenshin", "insurer", "ohcloud"] {
        assert_eq!(w.source_events(source, SourceAction::Pull).len(), 1);
        assert_eq!(w.source_events(source, SourceAction::Grant).len(), 1);
        assert_eq!(w.source_events(source, SourceAction::Link).len(), 1);
    }

    // The second pull adds nothing and downloads nothing.
    let before = w.source("kenshin").faults.file_requests();
    for source in ["kenshin", "insurer", "ohcloud"] {
        let p = w.hub.pull("p1", source).await;
        assert_eq!(p.state, PullState::Done, "{p:?}");
        assert_eq!((p.stored, p.refused, p.failed), (0, 0, 0), "{p:?}");
    }
    assert_eq!(w.counts().await, (imports, resources));
    assert_eq!(w.source("kenshin").faults.file_requests(), before);

    // A new file at a source arrives with the next scheduled pull.
    w.source("ohcloud")
        .put("P-1", "feb-2026.attendance.csv", &attendance_of("W001"));
    let stop = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = stop;
    let task = tokio::spawn(gateway::sources::run_scheduled(
        w.hub.clone(),
        Duration::from_millis(200),
        async {
            let _ = stop_rx.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.counts().await.0 < 4 {
        assert!(Instant::now() < deadline, "the new file did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    task.await.unwrap();
    let (imports2, resources2) = w.counts().await;
    assert_eq!(imports2, 4);
    assert!(resources2 > resources);
    let links = gateway::store::sources::of_person(w.db(), "p1")
        .await
        .unwrap();
    assert_eq!(links.len(), 3);
    assert!(
        links
            .iter()
            .all(|l| l.last_outcome.as_deref() == Some("ok"))
    );
    w.t.cleanup().await;
}

/// Fault test: a source that times out on every request, one that answers 500, one that
/// truncates its bodies, one that sends the same file twice, and one ten times slower than the
/// others; the breaker opens for the broken ones, the others finish, nothing is stored twice.
#[tokio::test]
async fn faults_bounded_retries_breaker_and_other_sources_finish() {
    let ids = [
        "good", "slowpoke", "timeout", "error500", "truncate", "twice",
    ];
    let w = World::new(Backend::Sqlite, &ids, settings()).await;
    let card = TestCard::new();
    let files: [(&str, &str, Vec<u8>); 6] = [
        ("good", "a.xml", fixture("cda/minimal.xml")),
        ("slowpoke", "b.xml", fixture("cda/full.xml")),
        ("timeout", "c.stress.json", fixture("stress/person.json")),
        ("error500", "d.attendance.csv", attendance_of("W001")),
        ("truncate", "e.attendance.csv", attendance_of("W002")),
        ("twice", "f.attendance.csv", attendance_of("W003")),
    ];
    let mut users = Vec::new();
    for (source, _, _) in &files {
        let cats = [
            Category::Checkup,
            Category::StressCheck,
            Category::Attendance,
        ];
        users.push((
            *source,
            w.person_at("p1", &card, source, "P-1", &cats).await,
        ));
    }
    // The grants are signed while every source is healthy (a source must accept a grant before
    // the gateway stores it); their first pulls find nothing yet.
    for (_, (user, slot)) in &users {
        let pull = w.grant(user, slot).await.unwrap();
        assert_eq!(w.wait(user, &pull).await.state, PullState::Done);
    }
    // Then the files arrive, the same one twice under another name, and the faults start.
    for (source, name, bytes) in &files {
        w.source(source).put("P-1", name, bytes);
    }
    w.source("twice")
        .put("P-1", "f-copy.attendance.csv", &files[5].2);
    w.source("slowpoke")
        .faults
        .set_delay(Duration::from_millis(150));
    w.source("good").faults.set_delay(Duration::from_millis(15));
    w.source("timeout").faults.set_delay(Duration::from_secs(5));
    w.source("error500").faults.fail_next(1000, 500);
    w.source("truncate").faults.truncate_next(1000);
    let baseline: Vec<u64> = ids.iter().map(|s| w.source(s).faults.requests()).collect();
    let timeout_attempts_before = w.hub.client("timeout").unwrap().attempts();
    let start = Instant::now();
    let ids_started: Vec<_> = users
        .iter()
        .map(|(source, (user, _))| (*source, user.clone(), w.hub.start_pull("p1", source)))
        .collect();
    let mut done = std::collections::BTreeMap::new();
    for (source, user, pull) in &ids_started {
        let p = w.wait(user, pull).await;
        done.insert(*source, (p, start.elapsed()));
    }
    let requests = |s: &str| {
        let i = ids.iter().position(|x| *x == s).unwrap();
        w.source(s).faults.requests() - baseline[i]
    };
    // Healthy sources finish with their file.
    for s in ["good", "slowpoke"] {
        let (p, _) = &done[s];
        assert_eq!((p.state, p.stored), (PullState::Done, 1), "{s}: {p:?}");
    }
    // The same file twice: stored once, the second one counted as a duplicate (not downloaded).
    let (p, _) = &done["twice"];
    assert_eq!(
        (p.state, p.stored, p.duplicates),
        (PullState::Done, 1, 1),
        "{p:?}"
    );
    assert_eq!(w.source("twice").faults.file_requests(), 1);
    // Timeouts: the list request is tried max_attempts times, then the pull fails.
    let (p, _) = &done["timeout"];
    assert_eq!(p.state, PullState::Failed, "{p:?}");
    assert_eq!(p.error.as_deref(), Some("timeout"));
    // Counted at both ends: the source counts a request on arrival, before its delay.
    assert_eq!(
        w.hub.client("timeout").unwrap().attempts() - timeout_attempts_before,
        3,
        "bounded attempts"
    );
    assert_eq!(requests("timeout"), 3, "bounded attempts at the source");
    // 500: three attempts, then failed; the breaker (4 failures) is not open yet …
    let (p, _) = &done["error500"];
    assert_eq!(p.state, PullState::Failed, "{p:?}");
    assert_eq!(requests("error500"), 3);
    assert_eq!(
        w.hub.client("error500").unwrap().breaker().view().state,
        BreakerState::Closed
    );
    // … one more pull opens it after one attempt, and the next one fails fast without a request.
    let p = w.hub.pull("p1", "error500").await;
    assert_eq!(p.state, PullState::Failed);
    assert_eq!(
        w.hub.client("error500").unwrap().breaker().view().state,
        BreakerState::Open
    );
    let before = w.source("error500").faults.requests();
    let p = w.hub.pull("p1", "error500").await;
    assert_eq!(p.error.as_deref(), Some("breaker_open"), "{p:?}");
    assert_eq!(w.source("error500").faults.requests(), before, "fails fast");
    assert!(p.message.unwrap().contains("提供元"));
    // Truncated bodies: the file is fetched max_attempts times, refused, nothing stored.
    let (p, _) = &done["truncate"];
    assert_eq!((p.stored, p.failed), (0, 1), "{p:?}");
    assert_eq!(p.error.as_deref(), Some("truncated"));
    assert_eq!(w.source("truncate").faults.file_requests(), 3);
    let file_errors = w.source_events("truncate", SourceAction::Pull);
    assert!(
        file_errors
            .iter()
            .any(|e| e["detail"]["reason"] == "truncated"),
        "{file_errors:?}"
    );
    // The slow source did not hold the others back: the good one ended well before it.
    let (_, good_at) = done["good"];
    let (_, slow_at) = done["slowpoke"];
    assert!(good_at < slow_at, "good {good_at:?}, slow {slow_at:?}");
    // Nothing stored twice, nothing of the broken sources stored.
    let (imports, _) = w.counts().await;
    assert_eq!(imports, 3, "good, slowpoke, twice");
    // After the faults end, the truncated file arrives with the next pull (cursor kept before it).
    w.source("truncate").faults.truncate_next(0);
    let p = w.hub.pull("p1", "truncate").await;
    assert_eq!((p.state, p.stored), (PullState::Done, 1), "{p:?}");
    w.t.cleanup().await;
}

/// Refusals at the gateway: each one clear, nothing stored, an audit entry.
#[tokio::test]
async fn refusals_store_nothing_and_are_audited() {
    let w = World::new(Backend::Sqlite, &["kenshin", "other"], settings()).await;
    let card = TestCard::new();
    w.source("kenshin")
        .put("P-1", "kenshin-2024.xml", &fixture("cda/minimal.xml"));
    let (user, slot) = w.person_at("p1", &card, "kenshin", "P-1", CHECKUP).await;
    let (_, other_slot) = w.person_at("p1", &card, "other", "P-1", CHECKUP).await;

    async fn attempt(
        w: &World,
        user: &KioskUser,
        key: &SigningKey,
        edit: impl FnOnce(&mut GrantSpec<'_>),
    ) -> Result<String, SourcesError> {
        let req = w.hub.grant_request(user, "kenshin").await.unwrap();
        let mut spec = GrantSpec {
            service: &req.service,
            pseudonym: &req.pseudonym,
            audience: &req.audience,
            nonce: hex::decode(&req.nonce_hex).unwrap(),
            issued_at: now_s(),
            expires_at: now_s() + 3600,
            scope: req.scope.clone(),
        };
        edit(&mut spec);
        let (grant, sig) = sign_grant(key, &spec);
        w.hub.submit_grant(user, "kenshin", &grant, &sig).await
    }

    // An expired grant.
    let e = attempt(&w, &user, &slot.key, |s| {
        s.issued_at -= 7200;
        s.expires_at = now_s() - 60;
    })
    .await
    .unwrap_err();
    assert_eq!(e.code(), "grant_expired", "{e}");
    // A grant for another service (signed with the other service's key, naming it).
    let e = attempt(&w, &user, &other_slot.key, |s| s.service = "other")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "bad_signature", "{e}");
    let e = attempt(&w, &user, &slot.key, |s| s.service = "other")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "wrong_service", "{e}");
    // A grant for another person (another pseudonym).
    let e = attempt(&w, &user, &slot.key, |s| s.pseudonym = "P-2")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "wrong_person", "{e}");
    // A grant for another audience.
    let e = attempt(&w, &user, &slot.key, |s| s.audience = "evil.example")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "card_data_invalid", "{e}");
    // A scope beyond the consent.
    let e = attempt(&w, &user, &slot.key, |s| s.scope.push("A:claims".into()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "scope_beyond_consent", "{e}");
    // A replayed nonce: the same grant a second time.
    let req = w.hub.grant_request(&user, "kenshin").await.unwrap();
    let (grant, sig) = sign_grant(
        &slot.key,
        &GrantSpec {
            service: &req.service,
            pseudonym: &req.pseudonym,
            audience: &req.audience,
            nonce: hex::decode(&req.nonce_hex).unwrap(),
            issued_at: now_s(),
            expires_at: now_s() + 3600,
            scope: req.scope.clone(),
        },
    );
    let first = w
        .hub
        .submit_grant(&user, "kenshin", &grant, &sig)
        .await
        .unwrap();
    let p = w.wait(&user, &first).await;
    assert_eq!(p.state, PullState::Done);
    let (imports, resources) = w.counts().await;
    assert_eq!(imports, 1);
    let e = w
        .hub
        .submit_grant(&user, "kenshin", &grant, &sig)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "nonce_replayed", "{e}");
    assert_eq!(w.counts().await, (imports, resources));
    // Every refusal above is one audit entry (deny) with its reason.
    let grants = w.source_events("kenshin", SourceAction::Grant);
    let reasons: Vec<&str> = grants
        .iter()
        .filter(|g| g["outcome"] == "deny")
        .map(|g| g["detail"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "grant_expired",
            "bad_signature",
            "wrong_service",
            "wrong_person",
            "card_data_invalid",
            "scope_beyond_consent",
            "nonce_replayed"
        ]
    );
    // The holder certificate of another card is refused at linking.
    let stranger = TestCard::new();
    let s2 = stranger.link("other", "P-2");
    let e = w
        .hub
        .link(
            &user,
            "other",
            &code_of("other", "P-2"),
            Credential::Phr {
                holder_certificate: stranger.holder_der.clone(),
                binding_certificate: s2.binding_der,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "not_your_card");
    // The source refuses a grant whose time ran out there: the grant is dropped, audited.
    w.source("kenshin").faults.set_clock_offset(7200);
    let p = w.hub.pull("p1", "kenshin").await;
    assert_eq!(p.state, PullState::Refused, "{p:?}");
    assert_eq!(p.error.as_deref(), Some("grant_expired"));
    let link = gateway::store::sources::get(w.db(), "p1", "kenshin")
        .await
        .unwrap()
        .unwrap();
    assert!(
        link.grant.is_none(),
        "scheduled pulls stop until a new grant"
    );
    let p = w.hub.pull("p1", "kenshin").await;
    assert_eq!(p.error.as_deref(), Some("no_grant"));
    assert_eq!(w.counts().await, (imports, resources));
    w.t.cleanup().await;
}

/// Without consent (or with an expired one) nothing at the kiosk works.
#[tokio::test]
async fn no_consent_no_link_no_grant() {
    let w = World::new(Backend::Sqlite, &["kenshin"], settings()).await;
    let card = TestCard::new();
    seed::add_person(w.db(), "p9").await;
    register_source(w.db(), "kenshin", CHECKUP).await;
    let user = KioskUser {
        person_id: "p9".into(),
        session_hash: [9; 32],
        card_fingerprint: card.fingerprint(),
    };
    let slot = card.link("kenshin", "P-3");
    let cred = Credential::Phr {
        holder_certificate: card.holder_der.clone(),
        binding_certificate: slot.binding_der.clone(),
    };
    let e = w
        .hub
        .link(&user, "kenshin", &code_of("kenshin", "P-3"), cred.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "no_consent");
    let now = SystemClock.now_ms();
    seed::change(
        w.db(),
        "p9",
        "kenshin",
        Action::Grant,
        CHECKUP,
        now - 2 * DAY,
        now - DAY,
    )
    .await;
    let e = w
        .hub
        .link(&user, "kenshin", &code_of("kenshin", "P-3"), cred)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "consent_expired");
    let e = w.hub.grant_request(&user, "kenshin").await.unwrap_err();
    assert_eq!(e.code(), "consent_expired");
    assert_eq!(w.source_events("kenshin", SourceAction::Link).len(), 2);
    w.t.cleanup().await;
}

/// Files refused whole: an unknown format, a record of another linked person, a category
/// outside the consent; the source's certificate not the registered one.
#[tokio::test]
async fn refused_files_and_unregistered_source_certificate() {
    let gateway = gateway_identity();
    let good = TestSource::start("kenshin", &gateway, enrollments("kenshin")).await;
    // A source whose server certificate comes from a CA the gateway did not register for it.
    let mut rogue = TestSource::start("rogue", &gateway, enrollments("rogue")).await;
    rogue.ca = Ca::new("the CA configured at the gateway");
    let w = World::with_sources(Backend::Sqlite, vec![good, rogue], gateway, settings()).await;
    let card = TestCard::new();
    let (user, slot) = w.person_at("p1", &card, "kenshin", "P-1", CHECKUP).await;
    // Another person's record, already linked to p2.
    let other_card = TestCard::new();
    let (user2, slot2) = w
        .person_at("p2", &other_card, "kenshin", "P-2", CHECKUP)
        .await;
    w.source("kenshin")
        .put("P-2", "theirs.xml", &fixture("cda/full.xml"));
    let pull = w.grant(&user2, &slot2).await.unwrap();
    assert_eq!(w.wait(&user2, &pull).await.stored, 1);
    let (imports, resources) = w.counts().await;
    // A misconfigured source that lists a file of a format it does not know.
    w.source("kenshin").faults.list_unknown_formats(true);
    w.source("kenshin").put("P-1", "notes.pdf", b"%PDF-1.4");
    w.source("kenshin").put("P-1", "copy-of-theirs.xml", &{
        let mut b = fixture("cda/full.xml");
        b.extend_from_slice(b"\n");
        b
    });
    // A file in a known format whose content is broken (XML cut off mid-document).
    w.source("kenshin")
        .put("P-1", "broken.xml", &fixture("bad/truncated.xml"));
    let pull = w.grant(&user, &slot).await.unwrap();
    let p = w.wait(&user, &pull).await;
    assert_eq!(
        (p.state, p.stored, p.refused),
        (PullState::Partial, 0, 3),
        "{p:?}"
    );
    assert_eq!(w.counts().await, (imports, resources));
    let reasons = w.deny_reasons("kenshin");
    assert!(
        reasons.contains(&"unknown_format".to_owned()),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"other_person".to_owned()), "{reasons:?}");
    assert!(
        reasons.contains(&"conversion_failed".to_owned()),
        "{reasons:?}"
    );
    // Refused files do not block the files after them: the broken XML, on the second page, was
    // reached; the cursor moved past all three; the next pull lists and audits nothing again.
    let link = gateway::store::sources::get(w.db(), "p1", "kenshin")
        .await
        .unwrap()
        .unwrap();
    assert!(link.cursor.is_some());
    let audited = w.source_events("kenshin", SourceAction::Pull).len();
    let p = w.hub.pull("p1", "kenshin").await;
    assert_eq!(
        (p.state, p.listed, p.refused),
        (PullState::Done, 0, 0),
        "{p:?}"
    );
    assert_eq!(
        w.source_events("kenshin", SourceAction::Pull).len(),
        audited + 1,
        "only the pull itself"
    );
    // A source presenting an unregistered certificate: refused at the handshake, nothing sent.
    register_source(w.db(), "rogue", CHECKUP).await;
    let now = SystemClock.now_ms();
    seed::change(
        w.db(),
        "p1",
        "rogue",
        Action::Grant,
        CHECKUP,
        now - 1000,
        now + DAY,
    )
    .await;
    let rogue_slot = card.link("rogue", "P-1");
    let before = w.source("rogue").faults.requests();
    let e = w
        .hub
        .link(
            &user,
            "rogue",
            &code_of("rogue", "P-1"),
            Credential::Phr {
                holder_certificate: card.holder_der.clone(),
                binding_certificate: rogue_slot.binding_der,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "certificate_not_registered", "{e}");
    assert_eq!(w.source("rogue").faults.requests(), before, "nothing sent");
    let audited = w.source_events("rogue", SourceAction::Link);
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["detail"]["reason"], "certificate_not_registered");
    w.t.cleanup().await;
}

/// Bytes imported earlier by another route (drop directory, CLI), without a person: a pull of the
/// same bytes with a grant stores nothing again but links their keys to the grant's person; a
/// second pull does not download them again.
#[tokio::test]
async fn bytes_imported_before_by_another_route_are_linked_by_the_pull() {
    let w = World::new(Backend::Sqlite, &["kenshin"], settings()).await;
    let bytes = fixture("cda/minimal.xml");
    let importer = gateway::importer::Importer::new(
        w.db().clone(),
        Arc::new(MemoryTrail::new()),
        Arc::new(SystemClock),
    );
    importer
        .import_bytes(bytes.clone(), "minimal.xml", "drop-dir", None)
        .await
        .unwrap();
    let card = TestCard::new();
    let (user, slot) = w.person_at("p1", &card, "kenshin", "P-1", CHECKUP).await;
    assert!(
        records::patient_ids_of(w.db(), "p1")
            .await
            .unwrap()
            .is_empty()
    );
    w.source("kenshin").put("P-1", "kenshin-2024.xml", &bytes);
    let counts = w.counts().await;
    let pull = w.grant(&user, &slot).await.unwrap();
    let p = w.wait(&user, &pull).await;
    assert_eq!(
        (p.state, p.fetched, p.stored, p.duplicates),
        (PullState::Done, 1, 0, 1),
        "{p:?}"
    );
    assert_eq!(w.counts().await, counts, "nothing stored twice");
    assert_eq!(
        records::patient_ids_of(w.db(), "p1").await.unwrap().len(),
        1
    );
    // Now held by p1: a new grant lists it again (no cursor), and it is not downloaded again.
    let downloads = w.source("kenshin").faults.file_requests();
    let pull = w.grant(&user, &slot).await.unwrap();
    let p = w.wait(&user, &pull).await;
    assert_eq!(
        (p.state, p.listed, p.fetched, p.duplicates),
        (PullState::Done, 1, 0, 1),
        "{p:?}"
    );
    assert_eq!(w.source("kenshin").faults.file_requests(), downloads);
}

/// Two gateways on one PostgreSQL: while one pulls a (person, source) pair under its lease, the
/// other's pull of the same pair is refused as busy; the file is downloaded and stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgres_never_pull_the_same_pair_at_once() {
    let w = World::new(Backend::Postgres, &["kenshin"], settings()).await;
    let card = TestCard::new();
    let (user, slot) = w.person_at("p1", &card, "kenshin", "P-1", CHECKUP).await;
    w.source("kenshin")
        .put("P-1", "kenshin-2024.xml", &fixture("cda/minimal.xml"));
    // Store the grant (its own pull runs to the end first).
    let pull = w.grant(&user, &slot).await.unwrap();
    assert_eq!(w.wait(&user, &pull).await.state, PullState::Done);
    w.source("kenshin")
        .put("P-1", "kenshin-2025.xml", &fixture("cda/full.xml"));
    // A second gateway process: its own hub (own lease owner) on the same database.
    let gateway = gateway_identity();
    let other = SourceHub::new(
        HubSettings {
            gateway_id: AUDIENCE.to_owned(),
            page_size: 2,
        },
        vec![w.source("kenshin").client(&gateway, settings())],
        w.db().clone(),
        Arc::new(MemoryTrail::new()),
        Arc::new(SystemClock),
        vec![pki().phr.cert_der.clone()],
    )
    .unwrap();
    w.source("kenshin")
        .faults
        .set_delay(Duration::from_millis(400));
    let first = w.hub.start_pull("p1", "kenshin");
    // Wait until the first pull holds the lease (its list request is at the source).
    let deadline = Instant::now() + Duration::from_secs(10);
    let requests = w.source("kenshin").faults.requests();
    while w.source("kenshin").faults.requests() == requests {
        assert!(
            Instant::now() < deadline,
            "the first pull never reached the source"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = other.pull("p1", "kenshin").await;
    assert_eq!(second.error.as_deref(), Some("busy"), "{second:?}");
    assert_eq!(second.fetched, 0);
    let first = w.wait(&user, &first).await;
    assert_eq!(
        (first.state, first.stored),
        (PullState::Done, 1),
        "{first:?}"
    );
    assert_eq!(
        w.source("kenshin").faults.file_requests(),
        2,
        "each file once"
    );
    w.t.cleanup().await;
}

/// A grant is stored only once the source accepted it: signed while the source answers 503, the
/// kiosk step fails (after the bounded attempts) and nothing is stored; signed again once the
/// source is back, it is stored and pulls.
#[tokio::test]
async fn a_grant_the_source_cannot_accept_now_is_not_stored() {
    let w = World::new(Backend::Sqlite, &["kenshin"], settings()).await;
    let card = TestCard::new();
    let (user, slot) = w.person_at("p1", &card, "kenshin", "P-1", CHECKUP).await;
    w.source("kenshin")
        .put("P-1", "kenshin-2024.xml", &fixture("cda/minimal.xml"));
    let req = w.hub.grant_request(&user, "kenshin").await.unwrap();
    // The nonce was issued; now the source is down.
    w.source("kenshin").faults.fail_next(1000, 503);
    let (grant, sig) = sign_requested(&slot, &req);
    let e = w
        .hub
        .submit_grant(&user, "kenshin", &grant, &sig)
        .await
        .unwrap_err();
    assert!(matches!(e, SourcesError::Source(_)), "{e:?}");
    let link = gateway::store::sources::get(w.db(), "p1", "kenshin")
        .await
        .unwrap()
        .unwrap();
    assert!(link.grant.is_none(), "no grant stored");
    assert_eq!(w.counts().await.0, 0);
    w.source("kenshin").faults.fail_next(0, 503);
    let pull = w.grant(&user, &slot).await.unwrap();
    assert_eq!(w.wait(&user, &pull).await.stored, 1);
}

/// A pulled file whose person key already holds records from other imports, and is not linked to
/// anyone, is refused whole: the pull alone never claims someone's earlier records (a misfiled
/// file would hand them to the wrong person); staff link the key after an identity check.
#[tokio::test]
async fn a_key_with_records_from_elsewhere_needs_an_identity_check() {
    let w = World::new(Backend::Sqlite, &["kenshin"], settings()).await;
    let importer = gateway::importer::Importer::new(
        w.db().clone(),
        Arc::new(MemoryTrail::new()),
        Arc::new(SystemClock),
    );
    importer
        .import_bytes(fixture("cda/minimal.xml"), "minimal.xml", "drop-dir", None)
        .await
        .unwrap();
    let card = TestCard::new();
    let (user, slot) = w.person_at("p1", &card, "kenshin", "P-1", CHECKUP).await;
    // Other bytes (a later copy) about the same person key.
    let mut later = fixture("cda/minimal.xml");
    later.extend_from_slice(b"\n");
    w.source("kenshin").put("P-1", "minimal-copy.xml", &later);
    let counts = w.counts().await;
    let pull = w.grant(&user, &slot).await.unwrap();
    let p = w.wait(&user, &pull).await;
    assert_eq!((p.stored, p.refused), (0, 1), "{p:?}");
    assert_eq!(p.error.as_deref(), Some("identity_check"), "{p:?}");
    assert_eq!(w.counts().await, counts, "nothing stored");
    assert!(
        records::patient_ids_of(w.db(), "p1")
            .await
            .unwrap()
            .is_empty()
    );
    let reasons = w.deny_reasons("kenshin");
    assert_eq!(reasons, vec!["identity_check".to_owned()]);
}
