//! Chromium over WebDriver for the kiosk page tests: chromedriver with a headless Chromium
//! (`chromium`, `chromium-driver`; scripts/test-setup.d/50-chromium.sh), and waiting for what the
//! page shows by polling, never by sleeping a fixed time.

use fantoccini::{Client, ClientBuilder, Locator};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for anything the page should show.
pub const UI_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between two looks at the page or a starting process.
pub const POLL: Duration = Duration::from_millis(50);

/// A child process, killed and reaped on drop (with its whole process group when it leads one:
/// chromedriver's Chromium processes are in chromedriver's group).
pub struct ChildGuard {
    /// For messages.
    pub name: &'static str,
    /// The process.
    pub child: Child,
    /// Whether it leads a process group (killed whole).
    pub group: bool,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
        }
        if let Err(e) = self.child.kill() {
            eprintln!("kill {}: {e}", self.name);
        }
        let _ = self.child.wait();
    }
}

/// A free loopback TCP port (panics, failing the test, when loopback cannot be bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// Starts chromedriver and a headless Chromium session.
pub async fn start_browser(profile: &Path) -> (ChildGuard, Client) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromedriver: {e} (install chromium and chromium-driver: scripts/test-setup.d/50-chromium.sh)")
        });
    let driver = ChildGuard {
        name: "chromedriver",
        child,
        group: true,
    };
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--ignore-certificate-errors",
                "--lang=ja",
                "--window-size=1100,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + UI_TIMEOUT;
    let client = loop {
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.clone());
        match builder.connect(&url).await {
            Ok(client) => break client,
            Err(e) => {
                assert!(Instant::now() < deadline, "chromedriver session: {e}");
                tokio::time::sleep(POLL).await;
            }
        }
    };
    (driver, client)
}

/// Clicks the element `css` (found by the WebDriver's own wait).
pub async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Opens the kiosk page at `origin`, signs in with the card at the agent (its PIN typed into
/// the agent's prompt, never the page) and returns the person id the page shows.
pub async fn sign_in_with_agent(
    client: &Client,
    origin: &str,
    agent_pin: &mut ChildStdin,
    pin: &str,
) -> String {
    let page = format!("{origin}/kiosk");
    client
        .goto(&page)
        .await
        .unwrap_or_else(|e| panic!("open {page}: {e}"));
    wait_text(client, "#start h1", |t| t == "カードで本人確認").await;
    type_pin(agent_pin, pin);
    click(client, "#sign-in").await;
    wait_text(client, "#signed-in h1", |t| t == "サインインしました").await;
    wait_text(client, "#person-id", |t| !t.is_empty()).await
}

/// Waits until the element `css` is displayed and its text satisfies `ok`; returns the text.
pub async fn wait_text(client: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    wait_text_within(client, css, ok, UI_TIMEOUT).await
}

/// [`wait_text`] with its own time limit.
pub async fn wait_text_within(
    client: &Client,
    css: &str,
    ok: impl Fn(&str) -> bool,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    loop {
        if let Ok(el) = client.find(Locator::Css(css)).await
            && el.is_displayed().await.unwrap_or(false)
        {
            last = el.text().await.unwrap_or_default();
            if ok(&last) {
                return last;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{css}: not shown as expected within {limit:?}; last text {last:?}; page: {}",
            page_text(client).await
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The text of the page's `main` element (empty when there is none), for failure messages.
async fn page_text(client: &Client) -> String {
    match client.find(Locator::Css("main")).await {
        Ok(main) => main.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The `card-agent` binary: `IPHR_CARD_AGENT_BIN`, or next to the running test binary
/// (`target/<profile>/deps/<test>` → `target/<profile>/card-agent`).
pub fn card_agent_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("IPHR_CARD_AGENT_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let bin = exe
        .ancestors()
        .nth(2)
        .map(|profile| profile.join("card-agent"))
        .filter(|bin| bin.is_file());
    bin.unwrap_or_else(|| {
        panic!(
            "card-agent is missing next to {}: run `cargo build -p card-agent` (or `cargo test \
             --workspace`, which builds it) or set IPHR_CARD_AGENT_BIN",
            exe.display()
        )
    })
}

/// Starts `card-agent serve` on a free loopback port for `origin`, on `reader`; returns it, its
/// stdin (the PIN "terminal") and its URL.
pub fn start_agent(origin: &str, reader: &str) -> (ChildGuard, ChildStdin, String) {
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! { panic!("card-agent {what}: {e}") };
    let mut child = Command::new(card_agent_binary())
        .args([
            "serve",
            "--port",
            "0",
            "--allow-origin",
            origin,
            "--reader",
            reader,
            "--pin-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| fail("spawn", &e));
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        fail("pipes", &"not piped")
    };
    let guard = ChildGuard {
        name: "card-agent",
        child,
        group: false,
    };
    // It prints `{"listening": "127.0.0.1:N"}` (pretty-printed) once bound.
    let mut reader = BufReader::new(stdout);
    let mut text = String::new();
    let listening = loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .unwrap_or_else(|e| fail("stdout", &e));
        if n == 0 {
            fail("exited before listening", &text);
        }
        text.push_str(&line);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            match v["listening"].as_str() {
                Some(addr) => break addr.to_owned(),
                None => fail("printed", &text),
            }
        }
    };
    // Keep draining stdout so the agent never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    (guard, stdin, format!("http://{listening}"))
}

/// Types a PIN into the agent's prompt (its standard input).
pub fn type_pin(stdin: &mut ChildStdin, pin: &str) {
    writeln!(stdin, "{pin}")
        .and_then(|()| stdin.flush())
        .unwrap_or_else(|e| panic!("typing the PIN into card-agent: {e}"));
}
