//! Issue 7 end to end, through pcscd + vpcd: a virtual PHR card is issued, the worker signs in at
//! the kiosk API with it, consents to three reference source servers (健診機関, 保険者,
//! 産業医クラウド), links the card at each with its enrollment code (a key per source on the
//! card), and signs a grant per source with that source's own card key; the gateway pulls, and the iPHR holds units A, B and C from
//! all three. A second pull adds nothing; a new file at a source arrives with the next scheduled
//! pull (the gateway's background task, not a call from the test). Then the kiosk page, in a real
//! headless Chromium with the same session, shows each source's state in Japanese, and its
//! 「今すぐ取り込む」 pulls a new file with the stored grant, showing the pull's progress.
//!
//! Every kiosk consent here is written to the PHR card first (issue 6 deliverable 3): the card's
//! consent set holds the granted record of each source, and, for a partner, the revoked record
//! after a revoke, the very records the gateway stored with each consent version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use card_agent::phr::ca::PhrIssuerCa;
use card_agent::phr::consent::ConsentStatus;
use card_agent::virtual_card::piv::VirtualPivCard;
use fantoccini::Locator;
use gateway::clock::SystemClock;
use gateway::config::Config;
use gateway::domain::consent::Category;
use gateway::server::{Gateway, serve};
use gateway::sources::{PullState, run_scheduled};
use gateway::store::records::{self, Search};
use gateway::store::services::{self, Service, ServiceKind};
use iphr_source::server::{Enrollment, RegisteredGateway, Source, SourceConfig};
use iphr_tests::browser::{
    click, sign_in_with_agent, start_agent, start_browser, type_pin, wait_text,
};
use iphr_tests::kiosk::{KioskClient, PhrCardAtReader, issue_card};
use iphr_tests::{insert, pcsc_lock};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const PIN: &str = "246810";
const GATEWAY_ID: &str = "iphr-gw.e2e";

struct Pem {
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn self_signed(name: &str) -> Pem {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// One source of the test.
struct TestSource {
    service: &'static str,
    name: &'static str,
    pseudonym: &'static str,
    code: &'static str,
    categories: &'static [Category],
}

const SOURCES: [TestSource; 3] = [
    TestSource {
        service: "kenshin-tokyo",
        name: "東京健診センター",
        pseudonym: "K-0001",
        code: "KENSHIN-7KQ2-MX4P",
        categories: &[Category::Checkup],
    },
    TestSource {
        service: "kyokai-kenpo",
        name: "健康保険組合",
        pseudonym: "H-0001",
        code: "KENPO-9D2T-AXQ1",
        categories: &[Category::Claims],
    },
    TestSource {
        service: "op-cloud",
        name: "産業医クラウド",
        pseudonym: "W003",
        code: "OPCLOUD-44RW-PZ8C",
        categories: &[
            Category::Attendance,
            Category::Interview,
            Category::OhOpinion,
        ],
    },
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sources")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Starts a reference source server on 127.0.0.1:0 serving the fixture files of `s`.
async fn start_source(
    dir: &Path,
    s: &TestSource,
    gateway_client: &[u8],
    phr_ca: &[u8],
) -> (String, Pem, PathBuf, tokio::sync::oneshot::Sender<()>) {
    let base = dir.join(s.service);
    let data = base.join("data");
    copy_dir(
        &fixtures().join(s.service).join(s.pseudonym),
        &data.join(s.pseudonym),
    );
    let source = Source::open(SourceConfig {
        service_id: s.service.into(),
        data_dir: data.clone(),
        state_dir: base.join("state"),
        phr_issuer_ca: Some(phr_ca.to_vec()),
        jpki_cas: vec![],
        gateways: vec![RegisteredGateway {
            audience: GATEWAY_ID.into(),
            certificate: gateway_client.to_vec(),
        }],
        enrollments: vec![Enrollment {
            code: s.code.into(),
            pseudonym: s.pseudonym.into(),
            expires_at: None,
        }],
    })
    .unwrap();
    let tls_pair = self_signed("localhost");
    let key = PrivateKeyDer::from_pem_slice(tls_pair.key.as_bytes()).unwrap();
    let tls = source
        .tls_config(vec![CertificateDer::from(tls_pair.der.clone())], key)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(iphr_source::server::serve(listener, tls, source, async {
        let _ = stopped.await;
    }));
    (url, tls_pair, data, stop)
}

/// The gateway configuration every test here shares (TLS files written to `dir`, SQLite, PHR
/// cards trusted, the kiosk's agent when given).
fn base_config(dir: &Path, origin: &str, gateway_tls: &Pem, agent_url: Option<&str>) -> String {
    let kiosk = agent_url.map_or(String::new(), |url| {
        format!("[kiosk]\nagent_url = \"{url}\"\n")
    });
    let d = dir.display();
    std::fs::write(dir.join("tls.pem"), &gateway_tls.cert).unwrap();
    std::fs::write(dir.join("tls.key"), &gateway_tls.key).unwrap();
    format!(
        r#"
public_origin = "{origin}"
[tls]
cert = "{d}/tls.pem"
key = "{d}/tls.key"
[database]
url = "sqlite://{d}/gateway.db"
{kiosk}[[trust]]
card_type = "phr"
key = "auth"
anchors = ["{d}/phr-issuer-ca.der"]
revocation = "disabled"
"#
    )
}

fn write_gateway_config(
    dir: &Path,
    origin: &str,
    gateway_tls: &Pem,
    client: &Pem,
    sources: &[(String, PathBuf)],
    agent_url: Option<&str>,
) -> PathBuf {
    let d = dir.display();
    std::fs::write(dir.join("source-client.pem"), &client.cert).unwrap();
    std::fs::write(dir.join("source-client.key"), &client.key).unwrap();
    let mut toml = base_config(dir, origin, gateway_tls, agent_url);
    toml.push_str(&format!(
        r#"[sources]
gateway_id = "{GATEWAY_ID}"
client_cert = "{d}/source-client.pem"
client_key = "{d}/source-client.key"
pull_interval_secs = 2
request_timeout_ms = 15000
"#
    ));
    for (s, (url, ca)) in SOURCES.iter().zip(sources) {
        toml.push_str(&format!(
            "[[sources.source]]\nid = \"{}\"\nurl = \"{url}\"\nserver_ca = \"{}\"\n",
            s.service,
            ca.display()
        ));
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The person's resources per category.
async fn categories_of(db: &gateway::store::Db, person: &str) -> (usize, BTreeSet<String>) {
    let all = records::search(
        db,
        person,
        &Search {
            categories: Category::ALL
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            resource_type: None,
            fhir_category: None,
            code: None,
            date_from: None,
            date_to: None,
            limit: 100_000,
            offset: 0,
        },
    )
    .await
    .unwrap();
    let categories = all.iter().map(|r| r.category.clone()).collect();
    (all.len(), categories)
}

/// The card issuer (its certificate also in `d/phr-issuer-ca.der`) and a factory-fresh virtual
/// PIV card in vpcd reader 1, issued through pcscd to `holder` with [`PIN`].
async fn issued_card(
    d: &Path,
    holder: &'static str,
) -> (
    PhrIssuerCa,
    iphr_tests::InsertedCard<VirtualPivCard>,
    PhrCardAtReader,
) {
    let ca = PhrIssuerCa::load_or_create(&d.join("issuer")).unwrap();
    std::fs::write(d.join("phr-issuer-ca.der"), &ca.cert_der).unwrap();
    let inserted = insert(VirtualPivCard::open(&d.join("card")).unwrap(), 1);
    let reader = inserted.reader();
    tokio::task::spawn_blocking({
        let ca_dir = d.join("issuer");
        move || {
            let ca = PhrIssuerCa::load_or_create(&ca_dir).unwrap();
            issue_card(reader, &ca, holder, PIN).unwrap();
        }
    })
    .await
    .unwrap();
    let card = PhrCardAtReader::new(reader, PIN);
    (ca, inserted, card)
}

/// Registers a service asking for `categories` for 365 days.
async fn register(
    db: &gateway::store::Db,
    id: &str,
    kind: ServiceKind,
    name: &str,
    purpose: &str,
    categories: &[Category],
) {
    services::upsert(
        db,
        &Service {
            id: id.into(),
            kind,
            name: name.into(),
            purpose: purpose.into(),
            categories: categories.to_vec(),
            period_days: 365,
            certificate_sha256: None,
            jwks: None,
            scopes: String::new(),
            rate_per_sec: 10,
        },
        0,
    )
    .await
    .unwrap();
}

/// Registers a test source as a source service.
async fn register_source(db: &gateway::store::Db, s: &TestSource) {
    register(
        db,
        s.service,
        ServiceKind::Source,
        s.name,
        "健康管理と両立支援のための記録の取り込み",
        s.categories,
    )
    .await;
}

/// Serves the gateway until `true` is sent on the returned channel.
fn serve_until_stopped(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(listener, gateway, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    (stop, server)
}

/// What the card in `reader` shows (no PIN).
async fn read_card(reader: &str) -> card_agent::phr::card::CardView {
    let reader = reader.to_owned();
    tokio::task::spawn_blocking(move || {
        iphr_tests::on_card(&reader, |tx| card_agent::phr::card::read_card(tx)).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phr_card_links_three_sources_consents_and_the_gateway_pulls_units_a_b_c() {
    let _lock = pcsc_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let (ca, inserted, card) = issued_card(d, "HOLDER-E2E-7").await;
    let reader = inserted.reader();

    // Three reference sources, each trusting the PHR issuer and the gateway's client certificate.
    let client = self_signed("iphr-gw.e2e");
    let mut endpoints = Vec::new();
    let mut data_dirs = Vec::new();
    let mut stops = Vec::new();
    for s in &SOURCES {
        let (url, tls, data, stop) = start_source(d, s, &client.der, &ca.cert_der).await;
        let ca_path = d.join(format!("{}-server.pem", s.service));
        std::fs::write(&ca_path, &tls.cert).unwrap();
        endpoints.push((url, ca_path));
        data_dirs.push(data);
        stops.push(stop);
    }

    // The gateway, its sources registered as source services, scheduled pulls every 2 s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let gateway_tls = self_signed("localhost");
    let config = Config::load(Some(&write_gateway_config(
        d,
        &origin,
        &gateway_tls,
        &client,
        &endpoints,
        None,
    )))
    .unwrap();
    let gateway = Gateway::from_config(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let db = gateway.app.auth.db().clone();
    for s in &SOURCES {
        register_source(&db, s).await;
    }
    let hub = gateway.app.sources.clone().unwrap();
    let (stop, server) = serve_until_stopped(listener, gateway);

    // At the kiosk: sign in with the card, then per source consent, link, grant, pull.
    let mut kiosk = KioskClient::new(&origin, gateway_tls.cert.as_bytes()).unwrap();
    let person = kiosk.sign_in(&card).await.unwrap();
    let mut files_at_sources = 0;
    for (s, data) in SOURCES.iter().zip(&data_dirs) {
        let categories: Vec<&str> = s.categories.iter().map(|c| c.as_str()).collect();
        kiosk
            .consent_as(&card, s.service, Some(s.pseudonym), &categories)
            .await
            .unwrap();
        let linked = kiosk
            .link_source(&card, s.service, s.pseudonym, s.code)
            .await
            .unwrap();
        assert_eq!(linked["source"]["linked"], true, "{linked}");
        let pull = kiosk.grant(&card, s.service).await.unwrap();
        let mut seen = Vec::new();
        let last = kiosk
            .wait_pull(&pull, Duration::from_secs(60), |p| seen.push(p.clone()))
            .await
            .unwrap();
        assert_eq!(last["state"], "done", "{}: {last}", s.service);
        let expected_files = std::fs::read_dir(data.join(s.pseudonym)).unwrap().count() as u64;
        assert_eq!(last["listed"], expected_files, "{last}");
        assert_eq!(last["stored"], expected_files, "{last}");
        assert_eq!(last["refused"], 0, "{last}");
        assert!(seen.len() >= 2, "progress was shown: {seen:?}");
        files_at_sources += expected_files;
    }
    // The card holds one key per source (three linked services).
    let view = read_card(reader).await;
    let linked: BTreeSet<&str> = view.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        linked,
        SOURCES.iter().map(|s| s.service).collect::<BTreeSet<_>>()
    );
    // Each consent is on the card too: a granted record per source with its categories, linked
    // under the source's own pseudonym (the consent linked the card, the source link reused it).
    for s in &SOURCES {
        let record = view.consents.for_service(s.service).unwrap();
        assert_eq!(record.terms.status, ConsentStatus::Granted, "{}", s.service);
        let expected: Vec<String> = s
            .categories
            .iter()
            .map(|c| c.as_str().replace('.', ":"))
            .collect();
        let on_card: Vec<String> = record
            .terms
            .categories
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(on_card, expected, "{}", s.service);
        let link = view
            .services
            .iter()
            .find(|l| l.service == s.service)
            .unwrap();
        assert_eq!(link.pseudonym, s.pseudonym);
    }
    assert!(view.unverified_consents.is_empty());

    // Units A, B and C, from all three sources.
    let (resources, categories) = categories_of(&db, &person).await;
    for c in [
        "A.checkup",
        "A.claims",
        "B.attendance",
        "C.interview",
        "C.oh-opinion",
    ] {
        assert!(categories.contains(c), "{c} missing from {categories:?}");
    }
    let (imports, total) = records::counts(&db).await.unwrap();
    assert_eq!(u64::try_from(imports).unwrap(), files_at_sources);

    // A second pull from each source adds nothing.
    for s in &SOURCES {
        let p = hub.pull(&person, s.service).await;
        assert_eq!(p.state, PullState::Done, "{p:?}");
        assert_eq!((p.stored, p.fetched), (0, 0), "{p:?}");
    }
    assert_eq!(records::counts(&db).await.unwrap(), (imports, total));

    // A new file at the 健診機関 arrives with the next scheduled pull.
    let (stop_schedule, schedule_stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(run_scheduled(
        Arc::clone(&hub),
        Duration::from_secs(2),
        async {
            let _ = schedule_stopped.await;
        },
    ));
    std::fs::copy(
        fixtures().join("next/kenshin-2025.xml"),
        data_dirs[0].join("K-0001/kenshin-2025.xml"),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (now_imports, _) = records::counts(&db).await.unwrap();
        if now_imports == imports + 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduled pull did not bring the new file"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (after, _) = categories_of(&db, &person).await;
    assert!(after > resources, "{after} resources, before {resources}");
    let dated_2025 = records::search(
        &db,
        &person,
        &Search {
            categories: vec!["A.checkup".into()],
            resource_type: Some("Observation".into()),
            fhir_category: None,
            code: None,
            date_from: Some("2025-01-01".into()),
            date_to: Some("2025-12-31".into()),
            limit: 1000,
            offset: 0,
        },
    )
    .await
    .unwrap();
    assert!(!dated_2025.is_empty(), "no 2025 observation arrived");

    // The kiosk shows each source linked, consented, with a grant and its last pull.
    let overview = kiosk.sources().await.unwrap();
    for s in overview["sources"].as_array().unwrap() {
        assert_eq!(s["linked"], true, "{s}");
        assert_eq!(s["consent_in_force"], true, "{s}");
        assert!(s["grant_expires_at_ms"].as_i64().unwrap() > 0, "{s}");
        assert_eq!(s["last_outcome"], "ok", "{s}");
        // Every file now at the source is in the record, each once.
        let i = SOURCES.iter().position(|x| s["id"] == x.service).unwrap();
        let expected = std::fs::read_dir(data_dirs[i].join(SOURCES[i].pseudonym))
            .unwrap()
            .count();
        assert_eq!(s["files_stored"], expected, "{s}");
    }

    let _ = stop_schedule.send(());
    scheduler.await.unwrap();

    // The kiosk page with this session: the sources and a pull now, with its progress.
    let profile = tempfile::tempdir().unwrap();
    let (_driver, browser) = start_browser(profile.path()).await;
    browser.goto(&format!("{origin}/kiosk")).await.unwrap();
    // The page's session: its own nonce, signed by the card as the agent would (the page's
    // sign-in through the real agent is in `the_kiosk_page_writes_a_consent_and_a_revoke_to_the_phr_card`),
    // its own token request.
    let nonce = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch('/api/auth/nonce', {method: 'POST', headers: {'content-type': 'application/json'},\
               body: JSON.stringify({purpose: 'login'})})\
               .then(r => r.json()).then(j => done(j.nonce), () => done(null));",
            vec![],
        )
        .await
        .unwrap();
    let nonce = nonce.as_str().unwrap().to_owned();
    let token = tokio::task::spawn_blocking({
        let (card, origin) = (card.clone(), origin.clone());
        move || card.token(&origin, &nonce).unwrap()
    })
    .await
    .unwrap();
    let status = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch('/api/auth/token', {method: 'POST', headers: {'content-type': 'application/json'},\
               body: arguments[0]}).then(r => done(r.status), () => done(0));",
            vec![serde_json::Value::String(token)],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    browser.goto(&format!("{origin}/kiosk")).await.unwrap();
    wait_text(&browser, "#signed-in h1", |t| t == "サインインしました").await;
    wait_text(&browser, "#sources h2", |t| t == "データの取り込み").await;
    let kenshin = "#source-list li[data-source='kenshin-tokyo']";
    let item = wait_text(&browser, kenshin, |t| t.contains("東京健診センター")).await;
    assert!(
        item.contains("カード連携済み")
            && item.contains("同意中")
            && item.contains("取り込んだファイル：2 件"),
        "{item}"
    );
    // A new claims file at the insurer (July instead of June), pulled from the page.
    // (Shift_JIS trail bytes are never ASCII digits: a byte replace changes only the dates.)
    let june = std::fs::read(data_dirs[1].join("H-0001/claims-202406.uke")).unwrap();
    let mut july = Vec::with_capacity(june.len());
    let mut rest = june.as_slice();
    while let Some(at) = rest.windows(6).position(|w| w == b"202406") {
        july.extend_from_slice(&rest[..at]);
        july.extend_from_slice(b"202407");
        rest = &rest[at + 6..];
    }
    july.extend_from_slice(rest);
    assert_ne!(july, june);
    std::fs::write(data_dirs[1].join("H-0001/claims-202407.uke"), &july).unwrap();
    let insurer = "#source-list li[data-source='kyokai-kenpo']";
    wait_text(&browser, &format!("{insurer} .stored"), |t| {
        t.starts_with("取り込んだファイル：1 件")
    })
    .await;
    browser
        .find(Locator::Css(&format!("{insurer} button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let progress = wait_text(&browser, &format!("{insurer} .progress"), |t| {
        t.starts_with("完了")
    })
    .await;
    assert!(progress.contains("新規保存 1 件"), "{progress}");
    wait_text(&browser, &format!("{insurer} .stored"), |t| {
        t.starts_with("取り込んだファイル：2 件")
    })
    .await;

    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
    drop(stops);
    drop(inserted);
}

/// Issue 6 deliverable 3 from the kiosk page, in Chromium, through the real `card-agent serve`
/// and pcscd + vpcd: the worker signs in with the PHR card, a wrong PIN writes nothing, a consent
/// to a partner writes the granted record to the card (linking the partner under a random
/// pseudonym) under one PIN entry, a revoke writes the revoked record, and the gateway stores
/// exactly the records the card holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kiosk_page_writes_a_consent_and_a_revoke_to_the_phr_card() {
    let _lock = pcsc_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ca, inserted, _card) = issued_card(d, "HOLDER-E2E-6").await;
    let reader = inserted.reader();

    // A gateway with one partner (no sources).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let (_agent, mut agent_pin, agent_url) = start_agent(&origin, reader);
    let tls = self_signed("localhost");
    let toml = base_config(d, &origin, &tls, Some(&agent_url));
    std::fs::write(d.join("gateway.toml"), toml).unwrap();
    let config = Config::load(Some(&d.join("gateway.toml"))).unwrap();
    let gateway = Gateway::from_config(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let db = gateway.app.auth.db().clone();
    const PARTNER: &str = "partner-e2e";
    register(
        &db,
        PARTNER,
        ServiceKind::Partner,
        "健康アプリ",
        "健康管理と両立支援のための記録の閲覧と産業医面談の準備",
        &[
            Category::Checkup,
            Category::PhysicianOpinion,
            Category::Attendance,
        ],
    )
    .await;
    let (stop, server) = serve_until_stopped(listener, gateway);

    let profile = tempfile::tempdir().unwrap();
    let (_driver, browser) = start_browser(profile.path()).await;

    // Sign-in with the PHR card: the PIN typed into the agent, never the page.
    let person = sign_in_with_agent(&browser, &origin, &mut agent_pin, PIN).await;
    let card_type = wait_text(&browser, "#card-type", |t| !t.is_empty()).await;
    assert_eq!(card_type, "PHRカード");
    let item = wait_text(&browser, "#partners li", |t| t.contains("健康アプリ")).await;
    assert!(item.contains("同意していません"), "{item}");

    // A wrong PIN: the tries left are shown; nothing is linked or written on the card, nothing
    // stored at the gateway.
    type_pin(&mut agent_pin, "999999");
    click(&browser, "#partners li button").await;
    let message = wait_text(&browser, "#consent-message", |t| t.contains("残り")).await;
    assert!(message.contains("残り 2 回"), "{message}");
    let view = read_card(reader).await;
    assert!(view.consents.records.is_empty() && view.services.is_empty());
    assert!(
        gateway::store::consent::head(&db, &person, PARTNER)
            .await
            .unwrap()
            .is_none()
    );

    // Grant: the card links the partner and holds the granted record.
    type_pin(&mut agent_pin, PIN);
    click(&browser, "#partners li button").await;
    wait_text(&browser, "#consent-message", |t| {
        t == "健康アプリ へのデータ提供に同意しました"
    })
    .await;
    wait_text(&browser, "#partners li .status", |t| {
        t.starts_with("同意中")
    })
    .await;
    let view = read_card(reader).await;
    let link = view.services.iter().find(|l| l.service == PARTNER).unwrap();
    assert!(
        link.verified && link.pseudonym.starts_with("p-"),
        "{link:?}"
    );
    let record = view.consents.for_service(PARTNER).unwrap().clone();
    assert_eq!(record.terms.status, ConsentStatus::Granted);
    let categories: Vec<String> = record
        .terms
        .categories
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        categories,
        ["A:checkup", "A:physician-opinio", "B:attendance"]
    );
    assert_eq!(record.terms.purpose, "健康管理と両立支援のための記録の");
    assert_eq!(
        record.terms.not_after - record.terms.not_before,
        365 * 86_400
    );
    assert!(view.unverified_consents.is_empty());

    // Revoke: the card holds the revoked record, newer than the grant.
    type_pin(&mut agent_pin, PIN);
    click(&browser, "#partners li button").await;
    wait_text(&browser, "#consent-message", |t| {
        t == "健康アプリ への同意を取り消しました"
    })
    .await;
    wait_text(&browser, "#partners li .status", |t| {
        t == "同意していません"
    })
    .await;
    let view = read_card(reader).await;
    let after = view.consents.for_service(PARTNER).unwrap().clone();
    assert_eq!(after.terms.status, ConsentStatus::Revoked);
    assert!(after.terms.version > record.terms.version);
    assert_eq!(after.terms.categories, record.terms.categories);

    // The gateway stored exactly the records the card holds.
    let stored = gateway::store::consent::card_records(&db, &person, PARTNER)
        .await
        .unwrap();
    assert_eq!(
        stored,
        vec![
            (1, Some(record.encode().unwrap())),
            (2, Some(after.encode().unwrap()))
        ]
    );

    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
    drop(inserted);
}

/// The whole source flow from the kiosk page, in Chromium, through the real `card-agent serve`
/// and pcscd: the person types the number and code of the source's enrollment letter; one PIN
/// consents, the card recording the consent and making the source's key for that number; the
/// gateway links the card at the source (a mistyped code is shown and retried without another
/// PIN); a second PIN signs the grant and the pull's progress is shown until the files are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kiosk_page_links_a_source_consents_and_grants_a_pull_with_the_phr_card() {
    let _lock = pcsc_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, inserted, _card) = issued_card(d, "HOLDER-E2E-8").await;
    let reader = inserted.reader();
    let s = &SOURCES[0];
    let client = self_signed(GATEWAY_ID);
    let (url, tls, data, stop_source) = start_source(d, s, &client.der, &ca.cert_der).await;
    let source_ca = d.join(format!("{}-server.pem", s.service));
    std::fs::write(&source_ca, &tls.cert).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let (_agent, mut agent_pin, agent_url) = start_agent(&origin, reader);
    let gateway_tls = self_signed("localhost");
    let config = Config::load(Some(&write_gateway_config(
        d,
        &origin,
        &gateway_tls,
        &client,
        &[(url, source_ca)],
        Some(&agent_url),
    )))
    .unwrap();
    let gateway = Gateway::from_config(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let db = gateway.app.auth.db().clone();
    register_source(&db, s).await;
    let (stop, server) = serve_until_stopped(listener, gateway);

    let profile = tempfile::tempdir().unwrap();
    let (_driver, browser) = start_browser(profile.path()).await;
    let find = |css: &'static str| {
        let browser = browser.clone();
        async move { browser.find(Locator::Css(css)).await.unwrap() }
    };
    let person = sign_in_with_agent(&browser, &origin, &mut agent_pin, PIN).await;
    let item = wait_text(&browser, "#source-list li", |t| t.contains(s.name)).await;
    assert!(item.contains("カード未連携・同意なし"), "{item}");

    // Without the letter's number and code nothing happens (no PIN asked).
    click(&browser, "#source-list li button.link").await;
    wait_text(&browser, "#source-list li .progress", |t| {
        t == "登録のご案内にある利用者番号と登録コードを入力してください"
    })
    .await;

    // A mistyped code: the consent is on the card and at the gateway, the source refuses the code.
    let pseudonym = find("#source-list li input.pseudonym").await;
    pseudonym.send_keys(s.pseudonym).await.unwrap();
    let code = find("#source-list li input.enrollment-code").await;
    code.send_keys("WRONG-CODE-0000").await.unwrap();
    type_pin(&mut agent_pin, PIN);
    click(&browser, "#source-list li button.link").await;
    let refused = wait_text(&browser, "#source-list li .progress", |t| {
        t.contains("登録コード")
    })
    .await;
    assert_eq!(
        refused,
        "登録コードが正しくないか、有効期限が切れています。"
    );
    let view = read_card(reader).await;
    let links: Vec<(&str, &str)> = view
        .services
        .iter()
        .map(|l| (l.service.as_str(), l.pseudonym.as_str()))
        .collect();
    assert_eq!(
        links,
        [(s.service, s.pseudonym)],
        "linked under the letter's number"
    );
    let record = view.consents.for_service(s.service).unwrap();
    assert_eq!(record.terms.status, ConsentStatus::Granted);

    // The right code: no second PIN (the card is linked), the gateway links it at the source.
    code.clear().await.unwrap();
    code.send_keys(s.code).await.unwrap();
    click(&browser, "#source-list li button.link").await;
    let message = wait_text(&browser, "#sources-message", |t| !t.is_empty()).await;
    assert_eq!(
        message,
        format!(
            "{} とカードを連携し、同意しました。「取り込みを許可する」で取り込みを始められます",
            s.name
        )
    );
    let status = wait_text(&browser, "#source-list li .status", |t| {
        t.starts_with("カード連携済み")
    })
    .await;
    assert_eq!(status, "カード連携済み・同意中");

    // The grant, signed with the source's key on the card; the pull's progress to its end.
    type_pin(&mut agent_pin, PIN);
    click(&browser, "#source-list li button.grant").await;
    let files = std::fs::read_dir(data.join(s.pseudonym)).unwrap().count();
    let done = wait_text(&browser, "#source-list li .progress", |t| {
        t.starts_with("完了") || t.starts_with("失敗") || t.starts_with("取り込めません")
    })
    .await;
    assert_eq!(
        done,
        format!("完了：一覧 {files} 件・取得 {files} 件・新規保存 {files} 件・保存済み 0 件")
    );
    let stored = wait_text(&browser, "#source-list li .stored", |t| {
        t.starts_with("取り込んだファイル")
    })
    .await;
    assert!(
        stored.starts_with(&format!("取り込んだファイル：{files} 件")),
        "{stored}"
    );
    let status = wait_text(&browser, "#source-list li .status", |t| {
        t.contains("取り込みの許可は")
    })
    .await;
    assert!(
        status.starts_with("カード連携済み・同意中・取り込みの許可は"),
        "{status}"
    );
    let pull = find("#source-list li button.pull").await;
    assert_eq!(pull.text().await.unwrap(), "今すぐ取り込む");
    let (resources, categories) = categories_of(&db, &person).await;
    assert!(resources > 0);
    assert!(categories.contains("A.checkup"), "{categories:?}");

    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
    let _ = stop_source.send(());
    drop(inserted);
}
