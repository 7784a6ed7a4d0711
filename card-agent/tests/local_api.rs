//! The agent's localhost API (security-scenarios A9–A13) over real HTTP on 127.0.0.1, with the
//! in-process virtual My Number card. Every refusal must happen before any card I/O.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use card_agent::agent::{
    self, AgentError, CardInfo, PinAnswer, PinPrompt, PinRequest, SignedChallenge,
};
use card_agent::local_api::{self, CardService};
use card_agent::pin::{JpkiAuthPin, LastTry, PinReadError};
use card_agent::virtual_card::InProcess;
use card_agent::virtual_card::jpki::VirtualJpkiCard;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORIGIN: &str = "https://kiosk.example.jp:8443";
const NONCE: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";

struct InProcessService(InProcess<VirtualJpkiCard>);

impl CardService for InProcessService {
    fn status(&self) -> Result<CardInfo, AgentError> {
        agent::read_card_info(self.0.clone())
    }
    fn authenticate(
        &self,
        prompt: &dyn PinPrompt,
        origin: &str,
        signed_data: &[u8],
    ) -> Result<SignedChallenge, AgentError> {
        let prepared = agent::prepare_authentication(self.0.clone())?;
        let answer = prompt.ask(&PinRequest {
            origin,
            tries_left: prepared.tries_left,
        })?;
        agent::sign_challenge(
            self.0.clone(),
            &answer.pin,
            answer.last_try,
            signed_data,
            Some(&prepared.certificate),
        )
    }
}

/// Answers PIN requests from a list, and records who asked.
#[derive(Default)]
struct ScriptedPrompt {
    pins: Mutex<VecDeque<&'static str>>,
    asked_by: Mutex<Vec<String>>,
}

impl PinPrompt for ScriptedPrompt {
    fn ask(&self, request: &PinRequest<'_>) -> Result<PinAnswer, PinReadError> {
        self.asked_by
            .lock()
            .unwrap()
            .push(request.origin.to_owned());
        let pin = self.pins.lock().unwrap().pop_front().unwrap_or("0000");
        Ok(PinAnswer {
            pin: JpkiAuthPin::parse(pin).unwrap(),
            last_try: LastTry::Refuse,
        })
    }
}

struct Agent {
    port: u16,
    card: InProcess<VirtualJpkiCard>,
    prompt: Arc<ScriptedPrompt>,
    _dir: tempfile::TempDir,
}

async fn start(pins: &[&'static str]) -> Agent {
    let (dir, card) = common::fresh_card();
    let card = InProcess::new(card);
    let prompt = Arc::new(ScriptedPrompt::default());
    prompt.pins.lock().unwrap().extend(pins);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = Arc::new(InProcessService(card.clone()));
    let prompt_for_server: Arc<dyn PinPrompt> = prompt.clone();
    tokio::spawn(local_api::serve(
        listener,
        vec![ORIGIN.to_owned()],
        service,
        prompt_for_server,
        std::future::pending(),
    ));
    Agent {
        port,
        card,
        prompt,
        _dir: dir,
    }
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

fn json_post(port: u16, origin: &str) -> String {
    post(
        port,
        "/v1/authenticate",
        &format!("Origin: {origin}\r\nContent-Type: application/json"),
    )
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
    use base64::Engine;
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(token[k].as_str().unwrap())
            .unwrap()
    };
    let mut signed = Sha256::digest(ORIGIN.as_bytes()).to_vec();
    signed.extend_from_slice(&Sha256::digest(NONCE.as_bytes()));
    assert!(common::verify_with_cert(
        &b64("certificate"),
        &signed,
        &b64("signature")
    ));
    assert_eq!(
        *agent.prompt.asked_by.lock().unwrap(),
        vec![ORIGIN.to_owned()]
    );
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
    let head = post(
        agent.port,
        "/v1/status",
        &format!("Origin: {ORIGIN}\r\nContent-Type: application/json"),
    );
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
    assert!(agent.prompt.asked_by.lock().unwrap().is_empty());
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
