//! The kiosk sign-in page end to end in a real headless Chromium (issue 3, acceptance; issue 6
//! consent at the kiosk): the real gateway (TLS on port 0, SQLite in a temporary directory,
//! configured from a TOML file with the JPKI-like test CA and its CRL), the real `card-agent serve`
//! process (PIN on its standard input, as its own UI would ask it), consent changes signed by the
//! card, the worker's export and card-signed erasure (security-scenarios K1/K2), a virtual My
//! Number card through pcscd + vpcd, and Chromium driven over WebDriver (chromedriver +
//! fantoccini).
//!
//! Needs pcscd with the vpcd readers (`bash scripts/test.sh` starts it), `chromium` and
//! `chromium-driver` (scripts/test-setup.d/50-chromium.sh), and the `card-agent` binary (built
//! by `cargo test --workspace`; or set `IPHR_CARD_AGENT_BIN`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use card_agent::testca::{JpkiTestCa, Purpose};
use card_agent::virtual_card::jpki::{JpkiCardMaterial, VirtualJpkiCard};
use fantoccini::{Client, Locator};
use gateway::clock::SystemClock;
use gateway::config::Config;
use gateway::server::{Gateway, serve};
use iphr_tests::browser::{
    UI_TIMEOUT, click, start_agent, start_browser, type_pin, wait_text, wait_text_within,
};
use iphr_tests::{VPCD_READER_0, insert, pcsc_lock, persistent_dir};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CORRECT_PIN: &str = "1234";
const WRONG_PIN: &str = "9999";
/// The kiosk idle timeout in this test (shortened from the 120 s default so the test waits less).
const KIOSK_IDLE_SECS: u64 = 20;

/// The cargo target directory (`target/debug/deps/<test>` → `target`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

/// `GET /api/session` from inside the page (the session cookie is HttpOnly).
async fn session_status(client: &Client) -> u64 {
    client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch('/api/session').then(r => done(r.status), () => done(0));",
            vec![],
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

fn subject_cn(cert_der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    cert.subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// Writes the gateway's TOML configuration (TLS, SQLite, the test CA and a fresh CRL, the agent
/// URL) into `dir`.
fn write_config(dir: &Path, ca: &JpkiTestCa, origin: &str, agent_url: &str) -> PathBuf {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("tls.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("jpki-auth-ca.der"), &ca.auth.cert_der).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let crl = ca
        .issue_crl(
            Purpose::Auth,
            &[],
            now - time::Duration::hours(1),
            now + time::Duration::days(1),
            1,
        )
        .unwrap();
    std::fs::write(dir.join("jpki-auth.crl"), crl).unwrap();
    let toml = format!(
        r#"
public_origin = "{origin}"
[tls]
cert = "{d}/tls.pem"
key = "{d}/tls.key"
[database]
url = "sqlite://{d}/gateway.db"
[session]
idle_timeout_secs = {KIOSK_IDLE_SECS}
[kiosk]
agent_url = "{agent_url}"
[[trust]]
card_type = "jpki"
key = "auth"
anchors = ["{d}/jpki-auth-ca.der"]
crls = ["{d}/jpki-auth.crl"]
"#,
        d = dir.display()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_page_signs_in_with_the_card_shows_tries_left_and_signs_out_in_chromium() {
    let _lock = pcsc_lock();
    let dir = tempfile::tempdir().unwrap();

    // The test CA (kept across runs: RSA key generation is slow in debug builds) and a card it
    // issued, with all PIN tries.
    let material_dir = persistent_dir("kiosk-browser");
    let ca = JpkiTestCa::load_or_create(&material_dir.join("ca")).unwrap();
    let mut material = JpkiCardMaterial::load_or_issue(&material_dir.join("card"), &ca).unwrap();
    material.reset_counters().unwrap();
    let cn = subject_cn(&material.auth.cert_der);
    let card = insert(VirtualJpkiCard::new(material), 0);

    // The gateway's port first: the agent's allowed origin names it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let (_agent, mut agent_pin, agent_url) = start_agent(&origin, VPCD_READER_0);

    let config = Config::load(Some(&write_config(dir.path(), &ca, &origin, &agent_url))).unwrap();
    assert_eq!(config.kiosk.agent_url, agent_url);
    let gateway = Gateway::from_config(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    // A partner asking for health-check results, shown on the consent list after sign-in.
    let db = gateway.app.auth.db().clone();
    let audit = gateway.audit.clone().unwrap();
    gateway::store::services::upsert(
        &db,
        &gateway::store::services::Service {
            id: "partner-kenko".into(),
            kind: gateway::store::services::ServiceKind::Partner,
            name: "けんこう手帳アプリ".into(),
            purpose: "健診結果の経年表示".into(),
            categories: vec![gateway::domain::consent::Category::Checkup],
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
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, gateway, async {
        let _ = stopped.await;
    }));

    let profile = tempfile::tempdir().unwrap();
    let (_driver, client) = start_browser(profile.path()).await;
    client.goto(&format!("{origin}/kiosk")).await.unwrap();
    wait_text(&client, "#start h1", |t| t == "カードで本人確認").await;
    // The PIN is never asked in the page.
    assert!(
        client
            .find_all(Locator::Css("input"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(session_status(&client).await, 401);

    // (b) A wrong PIN typed into the agent: the page shows the tries left.
    type_pin(&mut agent_pin, WRONG_PIN);
    click(&client, "#sign-in").await;
    let message = wait_text(&client, "#message", |t| !t.is_empty()).await;
    assert!(message.contains("残り 2 回"), "{message}");
    assert_eq!(session_status(&client).await, 401);

    // (a) The right PIN: signed in, the certificate shown.
    type_pin(&mut agent_pin, CORRECT_PIN);
    click(&client, "#sign-in").await;
    wait_text(&client, "#signed-in h1", |t| t == "サインインしました").await;
    let subject = wait_text(&client, "#subject", |t| !t.is_empty()).await;
    assert!(subject.contains(&cn), "subject {subject:?} lacks CN {cn}");
    let card_type = wait_text(&client, "#card-type", |t| !t.is_empty()).await;
    assert_eq!(card_type, "マイナンバーカード");
    let person = wait_text(&client, "#person-id", |t| !t.is_empty()).await;
    assert!(!person.is_empty());
    let validity = wait_text(&client, "#validity", |t| t.contains('〜')).await;
    assert!(validity.contains('年'), "{validity}");
    assert_eq!(session_status(&client).await, 200);

    // (e) Consent: the partner's request is listed; granting and revoking each need a fresh card
    // signature (the PIN typed into the agent again) over the consent document.
    let status = wait_text(&client, "#partners li .status", |t| !t.is_empty()).await;
    assert_eq!(status, "同意していません");
    let item = wait_text(&client, "#partners li", |t| {
        t.contains("けんこう手帳アプリ")
    })
    .await;
    assert!(
        item.contains("健診結果（A）") && item.contains("健診結果の経年表示"),
        "{item}"
    );
    let person_id = person.clone();
    type_pin(&mut agent_pin, CORRECT_PIN);
    click(&client, "#partners li button").await;
    wait_text(&client, "#consent-message", |t| {
        t == "けんこう手帳アプリ へのデータ提供に同意しました"
    })
    .await;
    let status = wait_text(&client, "#partners li .status", |t| t.starts_with("同意中")).await;
    assert!(status.contains('〜'), "{status}");
    let head = gateway::store::consent::head(&db, &person_id, "partner-kenko")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.status, gateway::domain::consent::Status::Permit);
    // The partner reads (through the gateway's own audit log) while the consent holds.
    let partner = gateway::domain::access::PartnerAccess::new(
        db.clone(),
        Arc::new(SystemClock),
        Arc::new(audit.clone()),
    );
    partner.patient("partner-kenko", &person_id).await.unwrap();
    let png = client.screenshot().await.unwrap();
    let shot = target_dir().join("kiosk-signed-in.png");
    std::fs::write(&shot, png).unwrap();
    eprintln!("screenshot: {}", shot.display());
    type_pin(&mut agent_pin, CORRECT_PIN);
    click(&client, "#partners li button").await;
    wait_text(&client, "#consent-message", |t| {
        t == "けんこう手帳アプリ への同意を取り消しました"
    })
    .await;
    let head = gateway::store::consent::head(&db, &person_id, "partner-kenko")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (head.version, head.status),
        (2, gateway::domain::consent::Status::Deny)
    );
    assert!(partner.patient("partner-kenko", &person_id).await.is_err());
    // (f) The access history on the page: the read that was served and the one refused.
    click(&client, "#show-history").await;
    let rows = wait_text(&client, "#history-rows", |t| t.contains("拒否")).await;
    assert!(rows.contains("けんこう手帳アプリ"), "{rows}");
    assert!(
        rows.contains("提供") && rows.contains("1件の読み取り"),
        "{rows}"
    );

    // (g) データの書き出し: a 特定健診 document imported and linked to the worker now, downloaded
    // as one FHIR Bundle; the page says how many resources it holds.
    let importer = gateway::importer::Importer::new(
        db.clone(),
        Arc::new(audit.clone()),
        Arc::new(SystemClock),
    );
    let cda = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/sources/kenshin-tokyo/K-0001/kenshin-2024.xml"),
    )
    .unwrap();
    importer
        .import_bytes(cda.clone(), "kenshin-2024.xml", "cli", None)
        .await
        .unwrap();
    for k in gateway::domain::import::convert(&cda, "kenshin-2024.xml", None)
        .unwrap()
        .person_keys
    {
        assert!(
            gateway::store::records::link_person_key(&db, &k.person_key, &person_id, 0)
                .await
                .unwrap()
        );
    }
    let stored = gateway::store::erasure::person_rows(&db, &person_id)
        .await
        .unwrap()
        .len();
    assert!(stored > 10, "{stored}");
    click(&client, "#export").await;
    let exported = wait_text(&client, "#export-message", |t| !t.is_empty()).await;
    assert!(
        exported.starts_with(&format!("記録 {stored} 件を書き出しました（iphr-"))
            && exported.ends_with(".iphr-export.json）"),
        "{exported}"
    );

    // (h) データの消去: what would go is shown; the card signs (PIN in the agent) after the
    // confirmation; the record is gone and the page says until when backups hold it.
    click(&client, "#erase").await;
    let summary = wait_text(&client, "#erase-summary", |t| !t.is_empty()).await;
    assert!(
        summary.starts_with(&format!(
            "保存されている記録 {stored} 件を消去し、同意 0 件"
        )),
        "{summary}"
    );
    type_pin(&mut agent_pin, CORRECT_PIN);
    click(&client, "#erase-sign").await;
    let erased = wait_text(&client, "#erase-message", |t| {
        t.starts_with("データを消去しました")
    })
    .await;
    assert!(
        erased.contains(&format!("記録 {stored} 件")) && erased.contains("までに消去されます"),
        "{erased}"
    );
    assert!(
        gateway::store::erasure::person_rows(&db, &person_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        gateway::store::erasure::register(
            &db,
            gateway::store::erasure::RegisterFilter::Person(&person_id)
        )
        .await
        .unwrap()
        .len(),
        1
    );

    // (c) Sign-out: back to the start screen, and the session is gone.
    click(&client, "#sign-out").await;
    wait_text(&client, "#start h1", |t| t == "カードで本人確認").await;
    wait_text(&client, "#message", |t| t == "サインアウトしました").await;
    assert_eq!(session_status(&client).await, 401);

    // (d) Kiosk idle timeout: signed in again and left alone, the page signs itself out after the
    // configured idle time (shortened here; 120 s by default) and the server session is gone.
    type_pin(&mut agent_pin, CORRECT_PIN);
    click(&client, "#sign-in").await;
    wait_text(&client, "#signed-in h1", |t| t == "サインインしました").await;
    let signed_in = Instant::now();
    assert_eq!(session_status(&client).await, 200);
    wait_text_within(
        &client,
        "#message",
        |t| t == "一定時間操作がなかったため、サインアウトしました",
        Duration::from_secs(KIOSK_IDLE_SECS) + UI_TIMEOUT,
    )
    .await;
    assert!(
        signed_in.elapsed() >= Duration::from_secs(KIOSK_IDLE_SECS - 1),
        "signed out after {:?}, before the idle time",
        signed_in.elapsed()
    );
    wait_text(&client, "#start h1", |t| t == "カードで本人確認").await;
    assert_eq!(session_status(&client).await, 401);

    // A14: the browser itself keeps other origins away from the agent. From the allow-listed
    // origin a fetch to the agent answers (positive control); from another origin (the same page
    // under https://127.0.0.1:port) the same fetch is blocked, and the card sees nothing.
    let agent_fetch = format!(
        "const done = arguments[arguments.length - 1];\
         fetch('{agent_url}/v1/status', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: '{{}}'}})\
           .then(r => done('status ' + r.status), e => done('blocked ' + e.name));"
    );
    let from_allowed = client.execute_async(&agent_fetch, vec![]).await.unwrap();
    assert_eq!(from_allowed, "status 200");
    let port = origin.rsplit(':').next().unwrap();
    client
        .goto(&format!("https://127.0.0.1:{port}/kiosk"))
        .await
        .unwrap();
    wait_text(&client, "#start h1", |t| t == "カードで本人確認").await;
    let apdus_before = card.card().counters().apdus;
    let from_other = client.execute_async(&agent_fetch, vec![]).await.unwrap();
    assert_eq!(from_other, "blocked TypeError");
    assert_eq!(
        card.card().counters().apdus,
        apdus_before,
        "no card I/O for another origin"
    );

    client.close().await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
