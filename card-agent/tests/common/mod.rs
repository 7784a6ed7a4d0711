//! Shared test fixtures: one generated virtual-card directory per test binary, copied per test so
//! that PIN counters never leak between tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use card_agent::virtual_card::jpki::VirtualJpkiCard;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The template card, generated once (RSA key generation is the slow part).
fn template() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jpki-template-card");
        let lock = dir.with_extension("lock");
        std::fs::create_dir_all(&dir).unwrap();
        let guard = std::fs::File::create(&lock).unwrap();
        guard.lock().unwrap();
        card_agent::virtual_card::jpki::JpkiCardMaterial::load_or_create(&dir).unwrap();
        dir
    })
}

/// A fresh copy of the template card in its own temporary directory.
pub fn fresh_card() -> (tempfile::TempDir, VirtualJpkiCard) {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(template(), tmp.path());
    // Fresh counters for every test.
    let mut card = VirtualJpkiCard::open(tmp.path()).unwrap();
    card.set_auth_tries_left(3).unwrap();
    (tmp, card)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Verifies an RSA PKCS#1 v1.5 SHA-256 signature with the public key of a DER certificate.
pub fn verify_with_cert(cert_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use rsa::pkcs8::DecodePublicKey;
    use sha2::Digest;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    let key = rsa::RsaPublicKey::from_public_key_der(cert.public_key().raw).unwrap();
    let digest = sha2::Sha256::digest(message);
    key.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, signature)
        .is_ok()
}
