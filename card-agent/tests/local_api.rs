//! The agent's localhost API (security-scenarios A9–A13) over real HTTP on 127.0.0.1, with the
//! in-process virtual My Number card. Every refusal must happen before any card I/O.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use card_agent::agent::{
    AgentError, CardAgent, CardKind, CardReader, EnteredPin, PinAnswer, PinPrompt, PinRequest,
};
use card_agent::local_api;
use card_agent::phr::ca::PhrIssuerCa;
use card_agent::phr::card as phr_card;
use card_agent::phr::consent::{ConsentRecord, ConsentStatus};
use card_agent::pin::{LastTry, PinReadError};
use card_agent::piv::{PivPin, PivPuk, mgmt};
use card_agent::transport::CardTransport;
use card_agent::virtual_card::jpki::VirtualJpkiCard;
use card_agent::virtual_card::piv::VirtualPivCard;
use card_agent::virtual_card::{InProcess, VirtualCard};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORIGIN: &str = "https://kiosk.example.jp:8443";
const NONCE: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
const PHR_PIN: &str = "246810";

/// One PIN request as the prompt saw it.
#[derive(Debug, Clone, PartialEq)]
struct Asked {
    origin: String,
    card: CardKind,
    what: String,
}

/// Answers PIN requests from a list (in the requested card's format), and records each request.
#[derive(Default)]
struct ScriptedPrompt {
    pins: Mutex<VecDeque<&'static str>>,
    asked: Mutex<Vec<Asked>>,
}

impl ScriptedPrompt {
    fn asked_by(&self) -> Vec<String> {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.origin.clone())
            .collect()
    }
}

impl PinPrompt for ScriptedPrompt {
    fn ask(&self, request: &PinRequest<'_>) -> Result<PinAnswer, PinReadError> {
        self.asked.lock().unwrap().push(Asked {
            origin: request.origin.to_owned(),
            card: request.card,
            what: request.signing.describe(),
        });
        let pin = self.pins.lock().unwrap().pop_front().unwrap_or("0000");
        Ok(PinAnswer {
            pin: EnteredPin::read_line(request.card, &mut pin.as_bytes())?,
            last_try: LastTry::Refuse,
        })
    }
}

struct Agent<C> {
    port: u16,
    card: InProcess<C>,
    prompt: Arc<ScriptedPrompt>,
    _dir: tempfile::TempDir,
}

async fn serve_card<C: VirtualCard + Send + 'static>(
    dir: tempfile::TempDir,
    card: InProcess<C>,
    pins: &[&'static str],
) -> Agent<C> {
    let (port, prompt) = serve_reader(card.clone(), pins).await;
    Agent {
        port,
        card,
        prompt,
        _dir: dir,
    }
}

/// The API on a free port over `reader`, the prompt answering `pins`.
async fn serve_reader<R: CardReader>(
    reader: R,
    pins: &[&'static str],
) -> (u16, Arc<ScriptedPrompt>) {
    let prompt = Arc::new(ScriptedPrompt::default());
    prompt.pins.lock().unwrap().extend(pins);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = Arc::new(CardAgent::new(reader));
    let prompt_for_server: Arc<dyn PinPrompt> = prompt.clone();
    tokio::spawn(local_api::serve(
        listener,
        vec![ORIGIN.to_owned()],
        service,
        prompt_for_server,
        std::future::pending(),
    ));
    (port, prompt)
}

/// The agent with a fresh virtual My Number card.
async fn start(pins: &[&'static str]) -> Agent<VirtualJpkiCard> {
    let (dir, card) = common::fresh_card();
    serve_card(dir, InProcess::new(card), pins).await
}

/// The agent with a virtual PHR card issued to `HOLDER-LOCAL-1` (PIN [`PHR_PIN`]).
async fn start_phr(pins: &[&'static str]) -> Agent<VirtualPivCard> {
    let dir = tempfile::tempdir().unwrap();
    let ca = PhrIssuerCa::load_or_create(&dir.path().join("ca")).unwrap();
    let card = InProcess::new(VirtualPivCard::open(&dir.path().join("card")).unwrap());
    phr_card::issue_factory_fresh(
        &mut card.clone(),
        &ca,
        "HOLDER-LOCAL-1",
        &PivPin::parse(PHR_PIN).unwrap(),
        &PivPuk::parse("13572468").unwrap(),
        time::OffsetDateTime::now_utc() + time::Duration::days(365),
        mgmt::ALG_AES256,
    )
    .unwrap();
    serve_card(dir, card, pins).await
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends a raw HTTP/1.1 request (so that Host and Origin can be anything, even doubled).
async fn raw(port: u16, head: &str, body: &str) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn post(port: u16, path: &str, extra: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}")
}

/// A JSON POST of `path` from the page at `origin`.
fn page_post(port: u16, path: &str, origin: &str) -> String {
    post(
        port,
        path,
        &format!("Origin: {origin}\r\nContent-Type: application/json"),
    )
}

fn json_post(port: u16, origin: &str) -> String {
    page_post(port, "/v1/authenticate", origin)
}

fn nonce_body(nonce: &str) -> String {
    format!(r#"{{"nonce":"{nonce}"}}"#)
}

#[tokio::test]
async fn signs_for_the_browsers_origin_after_the_agents_own_pin_prompt() {
    let agent = start(&["1234"]).await;
    let reply = raw(
        agent.port,
        &json_post(agent.port, ORIGIN),
        &nonce_body(NONCE),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    let token = reply.json();
    assert_eq!(token["format"], "iphr-auth:1");
    assert_eq!(token["algorithm"], "RS256");
    assert!(
        token["app_version"]
            .as_str()
            .unwrap()
            .starts_with("card-agent/")
    );
    assert!(verify_rs256(&token, NONCE));
    assert_eq!(agent.prompt.asked_by(), vec![ORIGIN.to_owned()]);
}

#[tokio::test]
async fn a_wrong_pin_reports_the_tries_left() {
    let agent = start(&["9999"]).await;
    let reply = raw(
        agent.port,
        &json_post(agent.port, ORIGIN),
        &nonce_body(NONCE),
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "wrong_pin", "tries_left": 2})
    );
    assert_eq!(agent.card.card().counters().verify_with_pin, 1);
}

#[tokio::test]
async fn status_shows_the_card_without_spending_a_try() {
    let agent = start(&[]).await;
    let head = page_post(agent.port, "/v1/status", ORIGIN);
    let reply = raw(agent.port, &head, "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["auth_pin"]["tries_left"], 3);
    assert_eq!(agent.card.card().counters().verify_with_pin, 0);
}

#[tokio::test]
async fn foreign_hosts_are_refused_before_the_card() {
    let agent = start(&["1234"]).await;
    let port = agent.port;
    let hosts = [
        format!("evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("localhost.evil.jp:{port}"),
        format!("7f000001.rbndr.us:{port}"),
        format!("127.0.0.2:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("LOCALHOST:{port}"),
        "localhost".to_owned(),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        format!("2130706433:{port}"),
        String::new(),
    ];
    for host in hosts {
        let head = format!(
            "POST /v1/authenticate HTTP/1.1\r\nHost: {host}\r\nOrigin: {ORIGIN}\r\nContent-Type: application/json"
        );
        let reply = raw(port, &head, &nonce_body(NONCE)).await;
        assert_eq!(reply.status, 403, "Host {host:?} admitted");
        assert_eq!(reply.header("access-control-allow-origin"), None);
    }
    assert_eq!(
        agent.card.card().counters().apdus,
        0,
        "no card I/O for refused requests"
    );
}

#[tokio::test]
async fn origin_near_misses_are_refused_without_cors_headers() {
    let agent = start(&["1234"]).await;
    let port = agent.port;
    let near_misses = [
        "http://kiosk.example.jp:8443",
        "https://kiosk.example.jp:444",
        "https://kiosk.example.jp",
        "https://kiosk.example.jp.evil.jp:8443",
        "https://evilkiosk.example.jp:8443",
        "https://KIOSK.example.jp:8443",
        "https://kiosk.example.jp:8443/",
        "null",
    ];
    for origin in near_misses {
        let reply = raw(port, &json_post(port, origin), &nonce_body(NONCE)).await;
        assert_eq!(reply.status, 403, "{origin} admitted");
        assert_eq!(
            reply.header("access-control-allow-origin"),
            None,
            "{origin} echoed"
        );
        assert_eq!(reply.header("access-control-allow-private-network"), None);
    }
    let missing = post(port, "/v1/authenticate", "Content-Type: application/json");
    assert_eq!(raw(port, &missing, &nonce_body(NONCE)).await.status, 403);
    let doubled = post(
        port,
        "/v1/authenticate",
        &format!("Origin: {ORIGIN}\r\nOrigin: https://evil.jp\r\nContent-Type: application/json"),
    );
    assert_eq!(raw(port, &doubled, &nonce_body(NONCE)).await.status, 403);
    let referer_only = post(
        port,
        "/v1/authenticate",
        &format!("Referer: {ORIGIN}/kiosk\r\nContent-Type: application/json"),
    );
    assert_eq!(
        raw(port, &referer_only, &nonce_body(NONCE)).await.status,
        403
    );
    assert_eq!(agent.card.card().counters().apdus, 0);
}

#[tokio::test]
async fn only_json_posts_reach_the_card() {
    let agent = start(&["1234"]).await;
    let port = agent.port;
    let text = post(
        port,
        "/v1/authenticate",
        &format!("Origin: {ORIGIN}\r\nContent-Type: text/plain"),
    );
    assert_eq!(raw(port, &text, &nonce_body(NONCE)).await.status, 415);
    let form = post(
        port,
        "/v1/authenticate",
        &format!("Origin: {ORIGIN}\r\nContent-Type: application/x-www-form-urlencoded"),
    );
    assert_eq!(
        raw(port, &form, &format!("nonce={NONCE}")).await.status,
        415
    );
    let get =
        format!("GET /v1/authenticate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {ORIGIN}");
    assert_eq!(raw(port, &get, "").await.status, 405);
    let get_root = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {ORIGIN}");
    assert_eq!(raw(port, &get_root, "").await.status, 405);
    assert_eq!(agent.card.card().counters().apdus, 0);
}

#[tokio::test]
async fn a_body_origin_and_bad_sizes_are_refused() {
    let agent = start(&["1234"]).await;
    let port = agent.port;
    let with_origin = format!(r#"{{"nonce":"{NONCE}","origin":"https://evil.jp"}}"#);
    assert_eq!(
        raw(port, &json_post(port, ORIGIN), &with_origin)
            .await
            .status,
        400
    );
    for bad in [
        "A".repeat(43),
        "A".repeat(129),
        format!("{}<", &NONCE[..44]),
    ] {
        let reply = raw(port, &json_post(port, ORIGIN), &nonce_body(&bad)).await;
        assert_eq!(reply.status, 400, "nonce of {} chars", bad.len());
    }
    let huge = nonce_body(&"A".repeat(9 * 1024));
    assert_eq!(raw(port, &json_post(port, ORIGIN), &huge).await.status, 413);
    assert_eq!(agent.card.card().counters().apdus, 0);
    assert!(agent.prompt.asked_by().is_empty());
}

#[tokio::test]
async fn preflight_is_answered_only_for_the_allowed_origin() {
    let agent = start(&[]).await;
    let port = agent.port;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /v1/authenticate HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\
             Access-Control-Request-Private-Network: true"
        )
    };
    let ok = raw(port, &preflight(ORIGIN), "").await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(
        ok.header("access-control-allow-private-network"),
        Some("true")
    );
    let evil = raw(port, &preflight("https://evil.jp"), "").await;
    assert_eq!(evil.status, 403);
    assert_eq!(evil.header("access-control-allow-origin"), None);
    assert_eq!(evil.header("access-control-allow-private-network"), None);
}

#[test]
fn the_allow_list_takes_only_bare_https_origins() {
    for good in [
        "https://kiosk.example.jp",
        "https://localhost:8443",
        "https://[::1]:8443",
    ] {
        assert!(local_api::validate_origin(good).is_ok(), "{good}");
    }
    for bad in [
        "http://kiosk.example.jp",
        "https://kiosk.example.jp/",
        "https://kiosk.example.jp/path",
        "https://kiosk.example.jp?q",
        "https://kiosk.example.jp#f",
        "https://KIOSK.example.jp",
        "https://",
        "*",
    ] {
        assert!(local_api::validate_origin(bad).is_err(), "{bad}");
    }
    assert!(local_api::validate_origin(&format!("https://{}.jp", "a".repeat(250))).is_err());
}

// ----- PHR card: sign-in and consent (`POST /v1/consent`)

const KNOWN: [&str; 4] = ["A.checkup", "A.claims", "B.attendance", "C.interview"];

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A gateway consent document (canonical JSON, as `POST /api/consent/prepare` returns it).
fn document(origin: &str, action: &str, categories: &[&str]) -> String {
    let start = now_ms();
    serde_json::json!({
        "format": "iphr-consent/1",
        "origin": origin,
        "person_id": "person-1",
        "service_id": "partner-a",
        "version": 1,
        "action": action,
        "categories": categories,
        "period_start_ms": start,
        "period_end_ms": start + 30 * 86_400_000,
        "purpose": "健康管理と両立支援",
        "issued_at_ms": start,
        "salt": "c2FsdA",
    })
    .to_string()
}

fn nonce_of(document: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(document.as_bytes()))
}

fn consent_body(nonce: &str, document: &str) -> String {
    serde_json::json!({"nonce": nonce, "document": document, "known_categories": KNOWN}).to_string()
}

/// POSTs `document` to `/v1/consent` with its hash as the nonce, as the page does.
async fn post_consent(port: u16, document: &str) -> Reply {
    raw(
        port,
        &consent_post(port),
        &consent_body(&nonce_of(document), document),
    )
    .await
}

fn consent_post(port: u16) -> String {
    page_post(port, "/v1/consent", ORIGIN)
}

/// A base64 field of a token.
fn b64_field(token: &serde_json::Value, key: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(token[key].as_str().unwrap())
        .unwrap()
}

/// The RS256 token's signature verifies with its certificate over
/// `SHA-256(origin) ‖ SHA-256(nonce)`.
fn verify_rs256(token: &serde_json::Value, nonce: &str) -> bool {
    let mut signed = Sha256::digest(ORIGIN.as_bytes()).to_vec();
    signed.extend_from_slice(&Sha256::digest(nonce.as_bytes()));
    let (cert, signature) = (
        b64_field(token, "certificate"),
        b64_field(token, "signature"),
    );
    common::verify_with_cert(&cert, &signed, &signature)
}

/// The ES256 token's signature verifies with the P-256 key of its certificate over
/// `SHA-256(origin) ‖ SHA-256(nonce)`.
fn verify_es256(token: &serde_json::Value, nonce: &str) -> bool {
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    let cert = b64_field(token, "certificate");
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(parsed.public_key().raw).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&b64_field(token, "signature")).unwrap();
    let mut signed = Sha256::digest(ORIGIN.as_bytes()).to_vec();
    signed.extend_from_slice(&Sha256::digest(nonce.as_bytes()));
    key.verify(&signed, &signature).is_ok()
}

fn card_view(card: &InProcess<VirtualPivCard>) -> phr_card::CardView {
    phr_card::read_card(&mut card.clone()).unwrap()
}

/// The card is linked to `service` only, as `pseudonym`, and holds a granted consent for it.
fn assert_linked_and_granted(card: &InProcess<VirtualPivCard>, service: &str, pseudonym: &str) {
    let view = card_view(card);
    let links: Vec<(&str, &str)> = view
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.pseudonym.as_str()))
        .collect();
    assert_eq!(links, [(service, pseudonym)]);
    assert_eq!(
        view.consents.for_service(service).unwrap().terms.status,
        ConsentStatus::Granted
    );
}

#[tokio::test]
async fn a_phr_card_shows_its_holder_and_signs_in_with_es256() {
    let agent = start_phr(&[PHR_PIN]).await;
    let status = page_post(agent.port, "/v1/status", ORIGIN);
    let reply = raw(agent.port, &status, "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let info = reply.json();
    assert_eq!(info["type"], "phr");
    assert_eq!(info["holder_id"], "HOLDER-LOCAL-1");
    assert_eq!(info["pin"]["tries_left"], 3);

    let reply = raw(
        agent.port,
        &json_post(agent.port, ORIGIN),
        &nonce_body(NONCE),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json();
    assert_eq!(token["algorithm"], "ES256");
    assert!(token.get("card_record").is_none());
    assert!(verify_es256(&token, NONCE));
    let asked = agent.prompt.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].card, CardKind::Phr);
    assert_eq!(agent.card.card().counters().verify_with_pin, 1);
}

#[tokio::test]
async fn a_consent_is_written_to_the_phr_card_and_signed_under_one_pin_entry() {
    let agent = start_phr(&[PHR_PIN, PHR_PIN]).await;
    let before = agent.card.card().counters();
    let grant = document(ORIGIN, "grant", &["A.checkup", "B.attendance"]);
    let nonce = nonce_of(&grant);
    let reply = post_consent(agent.port, &grant).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json();
    assert_eq!(token["format"], "iphr-auth:1");
    assert_eq!(token["algorithm"], "ES256");
    assert!(
        verify_es256(&token, &nonce),
        "the token signs the document's nonce"
    );
    let after = agent.card.card().counters();
    assert_eq!(
        after.verify_with_pin - before.verify_with_pin,
        1,
        "one VERIFY"
    );
    assert_eq!(
        after.signatures - before.signatures,
        3,
        "link, record, token"
    );

    // The record answered is the one the card now holds, granted with the mapped terms.
    let record_bytes = hex::decode(token["card_record"].as_str().unwrap()).unwrap();
    let record = ConsentRecord::parse(&record_bytes).unwrap();
    let view = card_view(&agent.card);
    assert_eq!(view.consents.for_service("partner-a"), Some(&record));
    assert_eq!(record.terms.status, ConsentStatus::Granted);
    let categories: Vec<String> = record
        .terms
        .categories
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(categories, ["A:checkup", "B:attendance"]);
    assert!(
        view.services
            .iter()
            .any(|s| s.service == "partner-a" && s.verified)
    );

    // The prompt showed the change, for the page's origin and the PHR card.
    let asked = agent.prompt.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].origin, ORIGIN);
    assert_eq!(asked[0].card, CardKind::Phr);
    assert!(
        asked[0].what.contains("partner-a への同意"),
        "{}",
        asked[0].what
    );
    assert!(asked[0].what.contains("A.checkup"), "{}", asked[0].what);

    // A revoke: the card holds a newer revoked record.
    let revoke = document(ORIGIN, "revoke", &[]);
    let reply = post_consent(agent.port, &revoke).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let revoked = card_view(&agent.card)
        .consents
        .for_service("partner-a")
        .unwrap()
        .clone();
    assert_eq!(revoked.terms.status, ConsentStatus::Revoked);
    assert!(revoked.terms.version > record.terms.version);
}

#[tokio::test]
async fn consent_requests_that_do_not_bind_their_document_are_refused_before_the_card() {
    let agent = start_phr(&[PHR_PIN]).await;
    let port = agent.port;
    let before = agent.card.card().counters();
    let grant = document(ORIGIN, "grant", &["A.checkup"]);
    let send = |body: String| async move { raw(port, &consent_post(port), &body).await };

    // The nonce is not the document's hash: the card would write one thing and sign another.
    let other = document(ORIGIN, "grant", &["A.checkup", "A.claims"]);
    let reply = send(consent_body(&nonce_of(&other), &grant)).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, "document_mismatch".into())
    );
    // A document prepared for another origin.
    let foreign = document("https://evil.example.jp", "grant", &["A.checkup"]);
    let reply = send(consent_body(&nonce_of(&foreign), &foreign)).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, "document_origin".into())
    );
    // A document without an origin, and one that is not a consent document.
    let bare = grant.replace(&format!(r#""origin":"{ORIGIN}","#), "");
    assert_ne!(bare, grant);
    let reply = send(consent_body(&nonce_of(&bare), &bare)).await;
    assert_eq!(reply.json()["error"], "document_origin");
    let junk = "not json";
    let reply = send(consent_body(&nonce_of(junk), junk)).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, "bad_document".into())
    );
    // Unknown fields (an origin beside the document) and a missing document.
    let mut extra: serde_json::Value =
        serde_json::from_str(&consent_body(&nonce_of(&grant), &grant)).unwrap();
    extra["origin"] = ORIGIN.into();
    assert_eq!(send(extra.to_string()).await.status, 400);
    let reply = send(serde_json::json!({"nonce": nonce_of(&grant)}).to_string()).await;
    assert_eq!(reply.status, 400);

    assert_eq!(
        agent.card.card().counters().apdus,
        before.apdus,
        "no card I/O"
    );
    assert!(agent.prompt.asked_by().is_empty(), "no PIN asked");
}

#[tokio::test]
async fn a_consent_the_card_cannot_hold_is_refused_before_the_pin_is_asked() {
    let agent = start_phr(&[PHR_PIN]).await;
    let before = agent.card.card().counters();
    let wide: Vec<String> = (0..7).map(|i| format!("C.kind-{i}")).collect();
    let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
    let grant = document(ORIGIN, "grant", &wide);
    let reply = post_consent(agent.port, &grant).await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.json()["error"], "too_many_categories");
    assert!(agent.prompt.asked_by().is_empty());
    let after = agent.card.card().counters();
    assert_eq!(after.verify_with_pin, before.verify_with_pin);
    assert_eq!(after.objects_written, before.objects_written);
}

#[tokio::test]
async fn a_wrong_pin_writes_nothing_to_the_phr_card() {
    let agent = start_phr(&["999999"]).await;
    let before = agent.card.card().counters();
    let grant = document(ORIGIN, "grant", &["A.checkup"]);
    let reply = post_consent(agent.port, &grant).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "wrong_pin", "tries_left": 2})
    );
    let after = agent.card.card().counters();
    assert_eq!(after.objects_written, before.objects_written);
    let view = card_view(&agent.card);
    assert!(view.consents.records.is_empty());
    assert!(view.services.is_empty(), "no link made");
}

/// A reader whose PHR card is swapped for a My Number card after the first session (the one
/// that reads the card before the PIN).
struct SwappedAfterFirstSession {
    phr: InProcess<VirtualPivCard>,
    my_number: InProcess<VirtualJpkiCard>,
    sessions: std::sync::atomic::AtomicUsize,
}

impl CardReader for SwappedAfterFirstSession {
    fn session<R>(
        &self,
        f: impl FnOnce(&mut dyn CardTransport) -> Result<R, AgentError>,
    ) -> Result<R, AgentError> {
        if self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            self.phr.session(f)
        } else {
            self.my_number.session(f)
        }
    }
}

#[tokio::test]
async fn a_card_swapped_during_a_consent_is_reported_as_changed() {
    let phr = start_phr(&[]).await;
    let (_jpki_dir, jpki) = common::fresh_card();
    let reader = SwappedAfterFirstSession {
        phr: phr.card.clone(),
        my_number: InProcess::new(jpki),
        sessions: Default::default(),
    };
    let (port, prompt) = serve_reader(reader, &[PHR_PIN]).await;
    let reply = post_consent(port, &document(ORIGIN, "grant", &["A.checkup"])).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.json()["error"], "card_changed");
    assert_eq!(prompt.asked.lock().unwrap()[0].card, CardKind::Phr);
    assert!(card_view(&phr.card).consents.records.is_empty());
}

#[tokio::test]
async fn a_my_number_consent_only_signs() {
    let agent = start(&["1234"]).await;
    let grant = document(ORIGIN, "grant", &["A.checkup"]);
    let nonce = nonce_of(&grant);
    let reply = post_consent(agent.port, &grant).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json();
    assert_eq!(token["algorithm"], "RS256");
    assert!(token.get("card_record").is_none(), "{token}");
    assert!(verify_rs256(&token, &nonce));
    let asked = agent.prompt.asked.lock().unwrap().clone();
    assert_eq!(asked[0].card, CardKind::MyNumber);
}

#[tokio::test]
async fn a_source_consent_needs_the_card_linked_under_the_sources_pseudonym() {
    let agent = start_phr(&[PHR_PIN]).await;
    let grant = document(ORIGIN, "grant", &["A.checkup"]);
    let as_source = |document: &str| {
        let mut body: serde_json::Value =
            serde_json::from_str(&consent_body(&nonce_of(document), document)).unwrap();
        body["service_kind"] = "source".into();
        body.to_string()
    };
    // Not linked yet: a random pseudonym would make the card another person at the source.
    let before = agent.card.card().counters();
    let reply = raw(agent.port, &consent_post(agent.port), &as_source(&grant)).await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.json()["error"], "source_not_linked");
    assert!(agent.prompt.asked_by().is_empty(), "no PIN asked");
    let after = agent.card.card().counters();
    assert_eq!(after.verify_with_pin, before.verify_with_pin);
    assert!(card_view(&agent.card).services.is_empty(), "nothing linked");

    // Linked with its enrollment's pseudonym: the consent is written, the link kept.
    phr_card::link(
        &mut agent.card.clone(),
        &PivPin::parse(PHR_PIN).unwrap(),
        LastTry::Refuse,
        "partner-a",
        "K-0001",
    )
    .unwrap();
    let reply = raw(agent.port, &consent_post(agent.port), &as_source(&grant)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_linked_and_granted(&agent.card, "partner-a", "K-0001");
}

// --- sources: link and grant (PHR card) ---

const SOURCE: &str = "insurer-a";

fn link_post(port: u16) -> String {
    page_post(port, "/v1/link", ORIGIN)
}

fn grant_post(port: u16) -> String {
    page_post(port, "/v1/grant", ORIGIN)
}

fn link_body(service: &str, pseudonym: &str) -> String {
    serde_json::json!({"service_id": service, "pseudonym": pseudonym}).to_string()
}

/// `POST /v1/link` for [`SOURCE`] as `pseudonym`, from the page.
async fn post_link(port: u16, pseudonym: &str) -> Reply {
    raw(port, &link_post(port), &link_body(SOURCE, pseudonym)).await
}

fn unix_now() -> u32 {
    u32::try_from(now_ms() / 1000).unwrap()
}

/// The gateway's `grant-request` answer for [`SOURCE`], as the page passes it on.
fn grant_request(expires_at: u32) -> serde_json::Value {
    serde_json::json!({
        "service": SOURCE,
        "pseudonym": "K-0001",
        "audience": "iphr-gateway-test",
        "nonce": "ignored-by-the-agent",
        "nonce_hex": "ab".repeat(32),
        "scope": ["A:checkup", "C:physician-opinio"],
        "expires_at": expires_at,
        "ttl_secs": 3600,
        "nonce_expires_at_ms": now_ms() + 300_000,
    })
}

/// The holder certificate of the card, verified against the issuing CA in the agent's folder.
fn holder_of<C>(agent: &Agent<C>, holder_der: &[u8]) -> card_agent::phr::verify::HolderCert {
    let ca = PhrIssuerCa::load_or_create(&agent._dir.path().join("ca")).unwrap();
    card_agent::phr::verify::verify_holder_cert(holder_der, &ca.cert_der, i64::from(unix_now()))
        .unwrap()
}

#[tokio::test]
async fn a_source_is_linked_on_the_phr_card_under_its_enrollment_pseudonym() {
    let agent = start_phr(&[PHR_PIN]).await;
    let reply = post_link(agent.port, "K-0001").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let linked = reply.json();
    let holder_der = hex::decode(linked["holder_cert_der"].as_str().unwrap()).unwrap();
    let binding_der = hex::decode(linked["binding_cert_der"].as_str().unwrap()).unwrap();
    let holder = holder_of(&agent, &holder_der);
    assert_eq!(holder.holder_id, "HOLDER-LOCAL-1");
    let binding =
        card_agent::phr::verify::verify_binding(&binding_der, &holder, i64::from(unix_now()))
            .unwrap();
    assert_eq!(
        (binding.service.as_str(), binding.pseudonym.as_str()),
        (SOURCE, "K-0001")
    );
    let asked = agent.prompt.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].card, CardKind::Phr);
    assert_eq!(
        asked[0].what,
        "insurer-a とのカード連携（利用者番号 K-0001）"
    );
    let view = card_view(&agent.card);
    assert_eq!(view.services.len(), 1);
    assert_eq!(view.services[0].cert_der, binding_der);

    // The same link again: the card's certificates, no PIN, nothing written.
    let before = agent.card.card().counters();
    let reply = post_link(agent.port, "K-0001").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), linked);
    assert_eq!(agent.prompt.asked_by().len(), 1, "no second PIN");
    assert_eq!(
        agent.card.card().counters().objects_written,
        before.objects_written
    );

    // Another pseudonym at the same source: another person there, refused before the PIN.
    let reply = post_link(agent.port, "K-0002").await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.json()["error"], "linked_as_another");
    assert_eq!(agent.prompt.asked_by().len(), 1);
    assert_eq!(card_view(&agent.card).services.len(), 1);
}

#[tokio::test]
async fn link_requests_are_refused_before_the_pin() {
    let agent = start_phr(&[PHR_PIN]).await;
    let long = "K".repeat(65);
    for (body, why) in [
        ("{", "not JSON"),
        (r#"{"service_id":"insurer-a"}"#, "no pseudonym"),
        (
            r#"{"service_id":"insurer-a","pseudonym":"K-1","origin":"https://evil.example"}"#,
            "unknown field",
        ),
        (&link_body(SOURCE, "") as &str, "empty pseudonym"),
        (&link_body(SOURCE, &long), "65-byte pseudonym"),
        (&link_body("Insurer A", "K-1"), "not a service id"),
    ] {
        let reply = raw(agent.port, &link_post(agent.port), body).await;
        assert_eq!(reply.status, 400, "{why}: {}", reply.body);
        assert_eq!(reply.json()["error"], "bad_request", "{why}");
    }
    assert!(agent.prompt.asked_by().is_empty());
    assert_eq!(agent.card.card().counters().verify_with_pin, 0);

    // A My Number card holds no service keys.
    let agent = start(&["1234"]).await;
    let reply = post_link(agent.port, "K-0001").await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.json()["error"], "phr_card_required");
    assert!(agent.prompt.asked_by().is_empty());
}

#[tokio::test]
async fn a_wrong_pin_links_nothing() {
    let agent = start_phr(&["999999"]).await;
    let reply = post_link(agent.port, "K-0001").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "wrong_pin", "tries_left": 2})
    );
    assert!(card_view(&agent.card).services.is_empty());
}

#[tokio::test]
async fn a_grant_is_signed_with_the_sources_key_on_the_card() {
    let agent = start_phr(&[PHR_PIN, PHR_PIN]).await;
    let reply = post_link(agent.port, "K-0001").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let linked = reply.json();
    let expires_at = unix_now() + 30 * 86_400;
    let body = serde_json::json!({"request": grant_request(expires_at)}).to_string();
    let reply = raw(agent.port, &grant_post(agent.port), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let signed = reply.json();
    let grant_bytes = hex::decode(signed["grant_bytes"].as_str().unwrap()).unwrap();
    let signature = hex::decode(signed["signature"].as_str().unwrap()).unwrap();

    // As the source verifies it: the binding from the link, the nonce and audience it issued.
    let holder = holder_of(
        &agent,
        &hex::decode(linked["holder_cert_der"].as_str().unwrap()).unwrap(),
    );
    let binding = card_agent::phr::verify::verify_binding(
        &hex::decode(linked["binding_cert_der"].as_str().unwrap()).unwrap(),
        &holder,
        i64::from(unix_now()),
    )
    .unwrap();
    let nonce = [0xab; 32];
    let grant = card_agent::phr::verify::verify_grant(
        &grant_bytes,
        &signature,
        &binding,
        &card_agent::phr::verify::GrantExpectation {
            audience: "iphr-gateway-test",
            nonce: &nonce,
            now: i64::from(unix_now()),
        },
    )
    .unwrap();
    let scope: Vec<String> = grant.scope.iter().map(ToString::to_string).collect();
    assert_eq!(scope, ["A:checkup", "C:physician-opinio"]);
    assert_eq!(grant.pseudonym, "K-0001");
    assert!(
        grant.expires_at.abs_diff(expires_at) <= 2,
        "{}",
        grant.expires_at
    );
    // A nonce the source did not issue does not pass.
    assert!(
        card_agent::phr::verify::verify_grant(
            &grant_bytes,
            &signature,
            &binding,
            &card_agent::phr::verify::GrantExpectation {
                audience: "iphr-gateway-test",
                nonce: &[0xac; 32],
                now: i64::from(unix_now()),
            },
        )
        .is_err()
    );
    let asked = agent.prompt.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2);
    assert!(
        asked[1]
            .what
            .starts_with("insurer-a からの取り込みの許可（A:checkup、C:physician-opinio、"),
        "{}",
        asked[1].what
    );
    assert!(asked[1].what.ends_with("日 まで）"), "{}", asked[1].what);
}

#[tokio::test]
async fn grant_requests_are_refused_before_the_pin() {
    let agent = start_phr(&[]).await;
    let future = unix_now() + 86_400;
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut request = grant_request(future);
        change(&mut request);
        serde_json::json!({ "request": request }).to_string()
    };
    let refuse = |body: String, status: u16, code: &'static str, why: &'static str| {
        let port = agent.port;
        async move {
            let reply = raw(port, &grant_post(port), &body).await;
            assert_eq!(reply.status, status, "{why}: {}", reply.body);
            assert_eq!(reply.json()["error"], code, "{why}");
        }
    };
    refuse(with(&|_| {}), 422, "source_not_linked", "not linked").await;
    let malformed: [(String, &str); 7] = [
        (with(&|r| r["nonce_hex"] = "abcd".into()), "short nonce"),
        (
            with(&|r| {
                r["scope"] = (1..=7).map(|i| format!("A:kind-{i}")).collect();
            }),
            "more categories than a grant on the card holds",
        ),
        (
            with(&|r| r["scope"] = serde_json::json!(["D:everything"])),
            "unknown unit",
        ),
        (with(&|r| r["scope"] = serde_json::json!([])), "empty scope"),
        (with(&|r| r["audience"] = "".into()), "no audience"),
        (
            with(&|r| {
                r.as_object_mut().unwrap().remove("service");
            }),
            "no service",
        ),
        (
            format!(r#"{{"request":{},"origin":"x"}}"#, grant_request(future)),
            "unknown field",
        ),
    ];
    for (body, why) in malformed {
        refuse(body, 400, "bad_request", why).await;
    }
    assert!(agent.prompt.asked_by().is_empty());

    // Linked: a grant that has already ended is still refused before the PIN.
    phr_card::link(
        &mut agent.card.clone(),
        &PivPin::parse(PHR_PIN).unwrap(),
        LastTry::Refuse,
        SOURCE,
        "K-0001",
    )
    .unwrap();
    let before = agent.card.card().counters();
    refuse(
        serde_json::json!({"request": grant_request(unix_now() - 60)}).to_string(),
        400,
        "grant_expired",
        "ended",
    )
    .await;
    assert!(agent.prompt.asked_by().is_empty());
    assert_eq!(
        agent.card.card().counters().verify_with_pin,
        before.verify_with_pin
    );

    // A My Number card holds no service keys.
    let agent = start(&["1234"]).await;
    let reply = raw(
        agent.port,
        &grant_post(agent.port),
        &serde_json::json!({"request": grant_request(future)}).to_string(),
    )
    .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.json()["error"], "phr_card_required");
    assert!(agent.prompt.asked_by().is_empty());
}

#[tokio::test]
async fn a_source_consent_links_the_card_under_the_pseudonym_it_names() {
    let agent = start_phr(&[PHR_PIN]).await;
    let grant = document(ORIGIN, "grant", &["A.checkup"]);
    let body = |kind: &str, pseudonym: &str| {
        let mut body: serde_json::Value =
            serde_json::from_str(&consent_body(&nonce_of(&grant), &grant)).unwrap();
        body["service_kind"] = kind.into();
        body["pseudonym"] = pseudonym.into();
        body.to_string()
    };
    // Refused before the card: a pseudonym for a partner, or one the card cannot hold.
    for (kind, pseudonym) in [
        ("partner", "K-0009"),
        ("source", ""),
        ("source", &"K".repeat(65)),
    ] {
        let reply = raw(
            agent.port,
            &consent_post(agent.port),
            &body(kind, pseudonym),
        )
        .await;
        assert_eq!(reply.status, 400, "{kind} {pseudonym:?}: {}", reply.body);
        assert_eq!(reply.json()["error"], "bad_request");
    }
    assert!(agent.prompt.asked_by().is_empty());

    // One PIN entry: the card is linked under the source's pseudonym and holds the consent.
    let reply = raw(
        agent.port,
        &consent_post(agent.port),
        &body("source", "K-0009"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(agent.prompt.asked_by().len(), 1);
    assert_linked_and_granted(&agent.card, "partner-a", "K-0009");

    // Another pseudonym at the same source: refused before the PIN, nothing written.
    let before = agent.card.card().counters();
    let reply = raw(
        agent.port,
        &consent_post(agent.port),
        &body("source", "K-0010"),
    )
    .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.json()["error"], "linked_as_another");
    assert_eq!(agent.prompt.asked_by().len(), 1);
    assert_eq!(
        agent.card.card().counters().objects_written,
        before.objects_written
    );
}
