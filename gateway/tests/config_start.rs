//! The gateway built from a configuration file plus environment variables, as `iphr-gateway`
//! does (DESIGN §7: migrations at start; config file + env), served over TLS on port 0; and two
//! gateway instances sharing one PostgreSQL database consume a nonce exactly once between them.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// figment::Jail takes a closure returning figment's own (large) error type.
#![allow(clippy::result_large_err)]

mod common;

use common::*;
use gateway::clock::SystemClock;
use gateway::config::Config;
use gateway::domain::auth::{AuthError, Authenticator};
use gateway::domain::nonce::NoncePurpose;
use gateway::server::{Gateway, serve};
use gateway::store::Db;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_starts_from_a_config_file_with_env_overrides_and_signs_in() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // TLS (PEM), anchors (DER and PEM), CRLs (DER files).
    let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&server_key)
        .unwrap();
    std::fs::write(d.join("tls.pem"), server_cert.pem()).unwrap();
    std::fs::write(d.join("tls.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(d.join("gen1.der"), &p.gen1.auth.cert_der).unwrap();
    let gen2_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            &p.gen2.auth.cert_der
        )
    );
    std::fs::write(d.join("gen2.pem"), gen2_pem).unwrap();
    std::fs::write(d.join("gen1.crl"), p.auth_crl(&p.gen1, &[])).unwrap();
    std::fs::write(d.join("gen2.crl"), p.auth_crl(&p.gen2, &[])).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let toml = format!(
        r#"
public_origin = "https://wrong.example"
listen = "127.0.0.1:0"
[tls]
cert = "{d}/tls.pem"
key = "{d}/tls.key"
[database]
url = "sqlite://{d}/gateway.db"
[session]
idle_timeout_secs = 120
[[trust]]
card_type = "jpki"
key = "auth"
anchors = ["{d}/gen1.der", "{d}/gen2.pem"]
crls = ["{d}/gen1.crl", "file://{d}/gen2.crl"]
"#,
        d = d.display()
    );
    let config_path = d.join("gateway.toml");
    std::fs::write(&config_path, toml).unwrap();
    let origin = format!("https://localhost:{}", addr.port());
    // figment's Jail sets the variable for the closure only and restores the environment.
    let mut loaded = None;
    figment::Jail::expect_with(|jail| {
        jail.set_env("IPHR_GATEWAY_PUBLIC_ORIGIN", &origin);
        loaded = Some(Config::load(Some(&config_path)).unwrap());
        Ok(())
    });
    let config = loaded.unwrap();
    assert_eq!(
        config.public_origin, origin,
        "environment overrides the file"
    );
    let gateway = Gateway::from_config(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, gateway, async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(server_cert.der()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let health = client
        .get(format!("{origin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let mut browser = Browser {
        client,
        origin: origin.clone(),
        cookie: None,
    };
    let nonce = browser.nonce().await;
    let card = Card::new();
    let r = browser
        .post("/api/auth/token", Some(card.token(&origin, &nonce)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    // Bad configurations are refused with a message.
    std::fs::write(
        d.join("bad.toml"),
        "public_origin = \"ftp://x\"\n[tls]\ncert=\"a\"\nkey=\"b\"\n",
    )
    .unwrap();
    let err = Config::load(Some(&d.join("bad.toml"))).unwrap_err();
    assert!(err.to_string().contains("public_origin"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgresql_consume_a_nonce_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let origin = "https://kiosk.example.jp";
    // A second pool on the same database stands for a second gateway process.
    let url = db.url.clone();
    let other_pool = Db::connect(&url, 5).await.unwrap();
    let a = Arc::new(Authenticator::new(
        db.db.clone(),
        Arc::new(SystemClock),
        Arc::new(default_verifier()),
        auth_config(origin),
    ));
    let b = Arc::new(Authenticator::new(
        other_pool.clone(),
        Arc::new(SystemClock),
        Arc::new(default_verifier()),
        auth_config(origin),
    ));
    let card = Card::new();
    for _ in 0..20 {
        let issued = a.issue_nonce(None, NoncePurpose::Login).await.unwrap();
        let token = card.token(origin, &issued.nonce);
        let cookie = issued.session.as_str().to_owned();
        let (ra, rb) = tokio::join!(
            a.sign_in(Some(&cookie), &token, None),
            b.sign_in(Some(&cookie), &token, None)
        );
        let successes = [ra.is_ok(), rb.is_ok()].iter().filter(|x| **x).count();
        assert_eq!(successes, 1, "{ra:?} {rb:?}");
        for r in [ra, rb] {
            if let Err(e) = r {
                assert!(
                    matches!(
                        e,
                        AuthError::NonceConsumed | AuthError::NoSession | AuthError::NoNonce
                    ),
                    "{e:?}"
                );
            }
        }
    }
    other_pool.close().await;
    db.cleanup().await;
}
