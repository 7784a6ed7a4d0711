//! The reference source server over real mutual TLS, with grants signed by the in-process virtual
//! PHR card (the same card code that runs through pcscd): linking, nonces, paged incremental
//! lists, downloads with their digest, each refusal of protocol §4, and the fault switches.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use card_agent::phr::ca::PhrIssuerCa;
use card_agent::phr::card;
use card_agent::phr::consent::Category;
use card_agent::pin::LastTry;
use card_agent::piv::{PivPin, PivPuk, mgmt};
use card_agent::virtual_card::InProcess;
use card_agent::virtual_card::piv::VirtualPivCard;
use iphr_source::protocol::{
    self, Credential, ErrorBody, ErrorCode, FileList, GrantAlg, GrantHeader, LinkRequest,
    NonceResponse,
};
use iphr_source::server::{Enrollment, RegisteredGateway, Source, SourceConfig, serve};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::Digest as _;
use std::path::Path;
use std::sync::Arc;

const PIN: &str = "246810";
const SERVICE: &str = "kenshin-tokyo";
const AUDIENCE: &str = "gw.test";

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

struct TlsPair {
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
}

fn tls_pair(name: &str) -> TlsPair {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    TlsPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
    }
}

struct World {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    card: InProcess<VirtualPivCard>,
    ca: PhrIssuerCa,
    source: Arc<Source>,
    url: String,
    client: reqwest::Client,
    stranger: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn issue_card(dir: &Path) -> (PhrIssuerCa, InProcess<VirtualPivCard>) {
    let ca = PhrIssuerCa::load_or_create(&dir.join("ca")).unwrap();
    let t = InProcess::new(VirtualPivCard::open(&dir.join("card")).unwrap());
    let mut tx = t.clone();
    card::issue_factory_fresh(
        &mut tx,
        &ca,
        "HOLDER-0001",
        &PivPin::parse(PIN).unwrap(),
        &PivPuk::parse("13572468").unwrap(),
        time::OffsetDateTime::now_utc() + time::Duration::days(365),
        mgmt::ALG_AES256,
    )
    .unwrap();
    (ca, t)
}

fn client(server: &TlsPair, identity: &TlsPair) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server.cert_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .identity(
            reqwest::Identity::from_pem(
                format!("{}{}", identity.cert_pem, identity.key_pem).as_bytes(),
            )
            .unwrap(),
        )
        .build()
        .unwrap()
}

async fn world() -> World {
    world_with(vec![]).await
}

async fn world_with(jpki_cas: Vec<Vec<u8>>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let (ca, card) = issue_card(dir.path());
    let server_tls = tls_pair("localhost");
    let gateway_tls = tls_pair("gw.test");
    let stranger_tls = tls_pair("stranger");
    let data = dir.path().join("data");
    let source = Source::open(SourceConfig {
        service_id: SERVICE.into(),
        data_dir: data.clone(),
        state_dir: dir.path().join("state"),
        phr_issuer_ca: Some(ca.cert_der.clone()),
        jpki_cas,
        gateways: vec![RegisteredGateway {
            audience: AUDIENCE.into(),
            certificate: gateway_tls.cert_der.clone(),
        }],
        enrollments: vec![
            Enrollment {
                code: "CODE-P1".into(),
                pseudonym: "P-1".into(),
                expires_at: None,
            },
            Enrollment {
                code: "CODE-J1".into(),
                pseudonym: "J-1".into(),
                expires_at: None,
            },
            Enrollment {
                code: "CODE-OLD".into(),
                pseudonym: "P-9".into(),
                expires_at: Some(1),
            },
        ],
    })
    .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        rustls_pki_types::pem::PemObject::from_pem_slice(server_tls.key_pem.as_bytes())
            .map(|k: PrivatePkcs8KeyDer<'static>| k.secret_pkcs8_der().to_vec())
            .unwrap(),
    ));
    let tls = source
        .tls_config(vec![CertificateDer::from(server_tls.cert_der.clone())], key)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, tls, Arc::clone(&source), async move {
        let _ = stopped.await;
    }));
    World {
        data,
        card,
        ca,
        source,
        url,
        client: client(&server_tls, &gateway_tls),
        stranger: client(&server_tls, &stranger_tls),
        _stop: stop,
        _dir: dir,
    }
}

impl World {
    fn put_file(&self, pseudonym: &str, name: &str, bytes: &[u8]) {
        let dir = self.data.join(pseudonym);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    /// Links the card for `SERVICE` as `pseudonym` and returns the link request.
    fn card_credential(&self, pseudonym: &str) -> Credential {
        let mut t = self.card.clone();
        let linked = card::link(
            &mut t,
            &PivPin::parse(PIN).unwrap(),
            LastTry::Refuse,
            SERVICE,
            pseudonym,
        )
        .unwrap();
        let view = card::read_card(&mut t).unwrap();
        Credential::Phr {
            holder_certificate: view.holder_cert_der.unwrap(),
            binding_certificate: linked.cert_der,
        }
    }

    async fn link(&self, code: &str, credential: Credential) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/links", self.url))
            .json(&LinkRequest {
                enrollment_code: code.into(),
                credential,
            })
            .send()
            .await
            .unwrap()
    }

    async fn nonce(&self) -> Vec<u8> {
        let r = self
            .client
            .post(format!("{}/v1/nonces", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<NonceResponse>()
            .await
            .unwrap()
            .nonce_bytes()
            .unwrap()
    }

    fn sign_grant(&self, nonce: &[u8], scope: &[&str], audience: &str, ttl: u32) -> String {
        let mut t = self.card.clone();
        let signed = card::sign_grant(
            &mut t,
            &PivPin::parse(PIN).unwrap(),
            LastTry::Refuse,
            SERVICE,
            audience,
            nonce,
            scope.iter().map(|c| Category::parse(c).unwrap()).collect(),
            now(),
            ttl,
        )
        .unwrap();
        GrantHeader {
            alg: GrantAlg::P256,
            grant: signed.grant_bytes,
            signature: signed.signature,
        }
        .to_header_value()
    }

    async fn list(&self, grant: &str, after: Option<&str>, limit: usize) -> reqwest::Response {
        let mut url = format!("{}/v1/files?limit={limit}", self.url);
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        self.client
            .get(url)
            .header("authorization", grant)
            .send()
            .await
            .unwrap()
    }
}

async fn error_code(r: reqwest::Response) -> (u16, ErrorCode) {
    let status = r.status().as_u16();
    (status, r.json::<ErrorBody>().await.unwrap().error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_grant_list_fetch_incrementally() {
    let w = world().await;
    w.put_file("P-1", "kenshin-2025.zip", b"archive bytes");
    w.put_file("P-1", "claims.uke", b"uke bytes");
    w.put_file("P-1", ".partial.zip", b"still writing");
    w.put_file("P-2", "other.zip", b"someone else");

    let r = w.link("CODE-P1", w.card_credential("P-1")).await;
    assert_eq!(r.status(), 201);
    // The code is burnt.
    let (status, code) = error_code(w.link("CODE-P1", w.card_credential_again()).await).await;
    assert_eq!((status, code), (409, ErrorCode::EnrollmentCodeInvalid));

    let grant = w.sign_grant(&w.nonce().await, &["A:checkup"], AUDIENCE, 3600);
    let list: FileList = w.list(&grant, None, 10).await.json().await.unwrap();
    // Only P-1's, only what the scope covers, no dot files.
    assert_eq!(list.files.len(), 1, "{list:?}");
    let f = &list.files[0];
    assert_eq!(f.name, "kenshin-2025.zip");
    assert_eq!(f.categories, vec!["A.checkup"]);
    assert!(!list.more);
    let cursor = list.next_cursor.clone().unwrap();

    let r = w
        .client
        .get(format!("{}/v1/files/{}", w.url, f.id))
        .header("authorization", &grant)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let digest = r
        .headers()
        .get(protocol::REPR_DIGEST)
        .and_then(|v| protocol::parse_repr_digest(v.to_str().unwrap()))
        .unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..], b"archive bytes");
    assert_eq!(digest, <[u8; 32]>::from(sha2::Sha256::digest(&body)));
    assert_eq!(f.sha256_bytes(), Some(digest));

    // The uke file is outside the scope: not downloadable either.
    let uke_id = {
        // A wider grant needs a new nonce.
        let wide = w.sign_grant(&w.nonce().await, &["A:*"], AUDIENCE, 3600);
        let all: FileList = w.list(&wide, None, 10).await.json().await.unwrap();
        assert_eq!(all.files.len(), 2);
        all.files
            .iter()
            .find(|f| f.name == "claims.uke")
            .unwrap()
            .id
            .clone()
    };
    let r = w
        .client
        .get(format!("{}/v1/files/{uke_id}", w.url))
        .header("authorization", &grant)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, ErrorCode::NotFound));

    // Nothing new after the cursor; a new file appears after it; the same grant works again.
    let again: FileList = w
        .list(&grant, Some(&cursor), 10)
        .await
        .json()
        .await
        .unwrap();
    assert!(again.files.is_empty());
    w.put_file("P-1", "kenshin-2026.xml", b"<ClinicalDocument/>");
    let newer: FileList = w
        .list(&grant, Some(&cursor), 10)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(newer.files.len(), 1);
    assert_eq!(newer.files[0].name, "kenshin-2026.xml");

    // Paging: limit 1 over two files.
    let first: FileList = w.list(&grant, None, 1).await.json().await.unwrap();
    assert!(first.more);
    let second: FileList = w
        .list(&grant, first.next_cursor.as_deref(), 1)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second.files[0].name, "kenshin-2026.xml");
    assert!(!second.more);
}

impl World {
    /// The already-linked card's credential, read again (no new key).
    fn card_credential_again(&self) -> Credential {
        let mut t = self.card.clone();
        let view = card::read_card(&mut t).unwrap();
        Credential::Phr {
            holder_certificate: view.holder_cert_der.unwrap(),
            binding_certificate: view.services[0].cert_der.clone(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_links_and_grants() {
    let w = world().await;
    // Expired code; wrong pseudonym for the code; not a PHR-CA holder.
    let cred = w.card_credential("P-1");
    assert_eq!(
        error_code(w.link("CODE-OLD", cred.clone()).await).await,
        (409, ErrorCode::EnrollmentCodeInvalid)
    );
    assert_eq!(
        error_code(w.link("NOPE", cred.clone()).await).await,
        (409, ErrorCode::EnrollmentCodeInvalid)
    );
    let foreign_ca = PhrIssuerCa::load_or_create(&w._dir.path().join("other-ca")).unwrap();
    assert_ne!(foreign_ca.cert_der, w.ca.cert_der);
    let Credential::Phr {
        binding_certificate,
        ..
    } = cred.clone()
    else {
        unreachable!()
    };
    let forged = Credential::Phr {
        holder_certificate: foreign_ca.cert_der.clone(),
        binding_certificate,
    };
    assert_eq!(
        error_code(w.link("CODE-P1", forged).await).await,
        (409, ErrorCode::CertificateInvalid)
    );
    // Bad JSON.
    let r = w
        .client
        .post(format!("{}/v1/links", w.url))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.1, ErrorCode::BadRequest);
    assert_eq!(w.link("CODE-P1", cred).await.status(), 201);

    w.put_file("P-1", "a.zip", b"zip");
    // No grant; expired grant; another audience; replayed nonce.
    let r = w
        .client
        .get(format!("{}/v1/files", w.url))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, ErrorCode::GrantMalformed));
    let short = w.sign_grant(&w.nonce().await, &["A:*"], AUDIENCE, 60);
    w.source.faults().set_clock_offset(120);
    assert_eq!(
        error_code(w.list(&short, None, 10).await).await,
        (401, ErrorCode::GrantExpired)
    );
    w.source.faults().set_clock_offset(0);
    let other_aud = w.sign_grant(&w.nonce().await, &["A:*"], "gw.other", 3600);
    assert_eq!(
        error_code(w.list(&other_aud, None, 10).await).await,
        (403, ErrorCode::WrongAudience)
    );
    let nonce = w.nonce().await;
    let g1 = w.sign_grant(&nonce, &["A:checkup"], AUDIENCE, 3600);
    assert_eq!(w.list(&g1, None, 10).await.status(), 200);
    let g2 = w.sign_grant(&nonce, &["A:*"], AUDIENCE, 3600);
    assert_eq!(
        error_code(w.list(&g2, None, 10).await).await,
        (401, ErrorCode::NonceReplayed)
    );
    // Unregistered TLS client: the handshake fails.
    assert!(
        w.stranger
            .post(format!("{}/v1/nonces", w.url))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_fail_delay_and_truncate_and_the_state_is_persisted() {
    let w = world().await;
    assert_eq!(
        w.link("CODE-P1", w.card_credential("P-1")).await.status(),
        201
    );
    w.put_file("P-1", "a.zip", &vec![7u8; 10_000]);
    let grant = w.sign_grant(&w.nonce().await, &["A:*"], AUDIENCE, 3600);
    let faults = w.source.faults();
    faults.fail_next(2, 500);
    assert_eq!(w.list(&grant, None, 10).await.status(), 500);
    assert_eq!(w.list(&grant, None, 10).await.status(), 500);
    let list: FileList = w.list(&grant, None, 10).await.json().await.unwrap();
    let id = list.files[0].id.clone();
    faults.truncate_next(1);
    let r = w
        .client
        .get(format!("{}/v1/files/{id}", w.url))
        .header("authorization", &grant)
        .send()
        .await
        .unwrap();
    assert_eq!(r.content_length(), Some(10_000));
    assert!(r.bytes().await.is_err(), "a truncated body must fail");
    faults.set_delay(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(w.list(&grant, None, 10).await.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    faults.set_delay(std::time::Duration::ZERO);
    assert!(faults.requests() >= 6);
    assert_eq!(faults.file_requests(), 1);

    // The state file holds the link, the redeemed nonce and the journal.
    let state = iphr_source::server::State::load(&w._dir.path().join("state")).unwrap();
    assert!(state.links.contains_key("P-1"));
    assert_eq!(state.redeemed_nonces.len(), 1);
    assert_eq!(state.journal.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_my_number_card_links_with_its_certificate_and_signs_grants_with_its_auth_key() {
    use card_agent::jpki::Jpki;
    use card_agent::pin::JpkiAuthPin;
    use card_agent::virtual_card::jpki::{JpkiCardMaterial, VirtualJpkiCard};
    let material_dir = tempfile::tempdir().unwrap();
    let material = JpkiCardMaterial::load_or_create(material_dir.path()).unwrap();
    let w = world_with(vec![material.auth_ca_der.clone()]).await;
    let jpki_card = InProcess::new(VirtualJpkiCard::new(material));
    let certificate = Jpki::select(jpki_card.clone())
        .unwrap()
        .read_auth_certificate()
        .unwrap();
    // A JPKI certificate from another CA is refused; the card's certificate links.
    let other = tempfile::tempdir().unwrap();
    let other = JpkiCardMaterial::load_or_create(other.path()).unwrap();
    assert_eq!(
        error_code(
            w.link(
                "CODE-J1",
                Credential::Jpki {
                    certificate: other.auth.cert_der.clone()
                }
            )
            .await
        )
        .await,
        (409, ErrorCode::CertificateInvalid)
    );
    assert_eq!(
        w.link("CODE-J1", Credential::Jpki { certificate })
            .await
            .status(),
        201
    );
    w.put_file("J-1", "a.zip", b"zip");
    let grant = card_agent::phr::verify::ServiceGrant {
        service: SERVICE.into(),
        pseudonym: "J-1".into(),
        audience: AUDIENCE.into(),
        nonce: w.nonce().await,
        issued_at: now(),
        expires_at: now() + 3600,
        scope: vec![Category::parse("A:*").unwrap()],
    };
    let bytes = grant.encode().unwrap();
    let digest = card_agent::phr::verify::ServiceGrant::digest_of(&bytes);
    let signature = Jpki::select(jpki_card.clone())
        .unwrap()
        .verify_auth_pin(&JpkiAuthPin::parse("1234").unwrap(), LastTry::Refuse)
        .unwrap()
        .sign_sha256(&digest)
        .unwrap();
    let header = |alg, signature: &[u8]| {
        GrantHeader {
            alg,
            grant: bytes.clone(),
            signature: signature.to_vec(),
        }
        .to_header_value()
    };
    // Claimed as a PHR-card signature it fails; as JPKI it passes.
    assert_eq!(
        error_code(w.list(&header(GrantAlg::P256, &signature), None, 10).await).await,
        (401, ErrorCode::BadSignature)
    );
    let mut flipped = signature.clone();
    flipped[10] ^= 1;
    assert_eq!(
        error_code(w.list(&header(GrantAlg::Jpki, &flipped), None, 10).await).await,
        (401, ErrorCode::BadSignature)
    );
    let list: FileList = w
        .list(&header(GrantAlg::Jpki, &signature), None, 10)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.files.len(), 1);
}
