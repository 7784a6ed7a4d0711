//! The kiosk sign-in page (`GET /kiosk`) and its static script and style sheet.
//!
//! The page holds no rule: it asks the gateway for a nonce, hands the nonce to the card agent on
//! the kiosk's loopback (`kiosk.agent_url`), which asks the PIN in its own UI and has the card sign,
//! and passes the agent's token as-is to `POST /api/auth/token`. The agent URL and the session
//! idle timeout are rendered into `<meta>` elements; the page is served with a strict CSP (no
//! inline script or style, `connect-src` limited to the gateway and the agent). See `docs/kiosk.md`.

use super::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const PAGE_TEMPLATE: &str = include_str!("../../assets/kiosk.html");
const SCRIPT: &str = include_str!("../../assets/kiosk.js");
const STYLE: &str = include_str!("../../assets/kiosk.css");

/// Default card agent URL (the agent's default port on the IPv4 loopback).
pub const DEFAULT_AGENT_URL: &str = "http://127.0.0.1:24700";
/// Default kiosk idle timeout in seconds (matches the server's session idle timeout default).
pub const DEFAULT_IDLE_SECS: u64 = 120;

/// The rendered kiosk page and its headers.
#[derive(Debug, Clone)]
pub struct KioskPage {
    html: String,
    csp: HeaderValue,
}

impl Default for KioskPage {
    fn default() -> Self {
        // The default URL passes the check, so this cannot fail.
        KioskPage::new(DEFAULT_AGENT_URL, DEFAULT_IDLE_SECS)
            .unwrap_or_else(|_| unreachable!("the default agent URL is valid"))
    }
}

impl KioskPage {
    /// Renders the page for the agent at `agent_url` (checked with [`check_agent_url`]) and the
    /// client-side idle timeout `idle_secs`.
    pub fn new(agent_url: &str, idle_secs: u64) -> Result<KioskPage, String> {
        let agent = check_agent_url(agent_url)?;
        let html = PAGE_TEMPLATE
            .replace("{{AGENT_URL}}", &agent)
            .replace("{{IDLE_SECS}}", &idle_secs.to_string());
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self' {agent}; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        );
        let csp = HeaderValue::from_str(&csp).map_err(|e| e.to_string())?;
        Ok(KioskPage { html, csp })
    }

    /// The rendered HTML.
    pub fn html(&self) -> &str {
        &self.html
    }

    /// The `Content-Security-Policy` value.
    pub fn csp(&self) -> &HeaderValue {
        &self.csp
    }
}

/// Checks a card agent URL: `http://` on a loopback host (`127.0.0.1`, `localhost`, `[::1]`) with
/// an optional port, no path, query, user info or fragment. Returns it without a trailing `/`.
pub fn check_agent_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "must start with http:// (the agent listens on the loopback)".to_owned())?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(v6) = authority.strip_prefix("[::1]") {
        ("[::1]", v6)
    } else {
        match authority.find(':') {
            Some(colon) => authority.split_at(colon),
            None => (authority, ""),
        }
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(format!(
            "host {host:?} is not a loopback name (127.0.0.1, localhost, [::1])"
        ));
    }
    if let Some(digits) = port.strip_prefix(':') {
        let ok = !digits.is_empty()
            && digits.len() <= 5
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits
                .parse::<u32>()
                .is_ok_and(|p| (1..=65535).contains(&p));
        if !ok {
            return Err(format!("bad port {digits:?}"));
        }
    } else if !port.is_empty() {
        return Err("no path, query or fragment allowed".into());
    }
    Ok(format!("http://{host}{port}"))
}

/// The kiosk routes (merged into the main router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/kiosk", get(page))
        .route("/kiosk/kiosk.js", get(script))
        .route("/kiosk/kiosk.css", get(style))
}

async fn page(State(state): State<AppState>) -> Response {
    let mut response = axum::response::Html(state.kiosk.html().to_owned()).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, state.kiosk.csp().clone());
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn script() -> Response {
    static_asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    static_asset(STYLE, "text/css; charset=utf-8")
}

fn static_asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn agent_urls_must_be_loopback_http_origins() {
        for ok in [
            "http://127.0.0.1:24700",
            "http://127.0.0.1:24700/",
            "http://localhost:1",
            "http://[::1]:65535",
            "http://127.0.0.1",
        ] {
            assert!(check_agent_url(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            check_agent_url("http://127.0.0.1:24700/").unwrap(),
            "http://127.0.0.1:24700"
        );
        for bad in [
            "https://127.0.0.1:24700",
            "http://example.jp:24700",
            "http://127.0.0.2:24700",
            "http://127.0.0.1:0",
            "http://127.0.0.1:65536",
            "http://127.0.0.1:24700/v1",
            "http://127.0.0.1:24700; script-src *",
            "http://user@127.0.0.1:24700",
            "http://127.0.0.1:",
            "http://[::1]x",
        ] {
            assert!(check_agent_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_page_carries_the_agent_url_and_a_strict_csp() {
        let page = KioskPage::new("http://127.0.0.1:4321", 120).unwrap();
        assert!(
            page.html()
                .contains(r#"<meta name="iphr-agent-url" content="http://127.0.0.1:4321">"#)
        );
        assert!(
            page.html()
                .contains(r#"<meta name="iphr-idle-secs" content="120">"#)
        );
        assert!(!page.html().contains("<script>"));
        let csp = page.csp().to_str().unwrap();
        assert!(csp.contains("script-src 'self';"));
        assert!(csp.contains("connect-src 'self' http://127.0.0.1:4321;"));
    }
}
