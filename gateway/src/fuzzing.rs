//! Entry points of the gateway fuzz targets (`gateway/fuzz/`; security-scenarios B15, C9, I) and of
//! the in-tree random-input test: the token parser and the whole token verification, certificate
//! (DER) validation, and CRL (DER or PEM) loading and checking. Each takes arbitrary bytes and must
//! not panic; each also asserts an oracle that a fuzzer can break:
//! - a token that parses re-encodes to a token that parses to the same value;
//! - a token or certificate that verifies carries the seed's signed bytes (no mutation of signed
//!   content is ever accepted);
//! - no CRL makes the seed's revoked certificate pass (fail closed).
//!
//! Seeds (`gateway/fuzz/seeds/`, written by `cargo run -p gateway --example fuzz_seeds`) are valid
//! at [`SEED_NOW_MS`] for [`SEED_ORIGIN`] and [`SEED_NONCE`].

use crate::domain::certs::{AnchorSet, CardKey, CardType, CertError, CertPolicy, ValidatedCert};
use crate::domain::revocation::{IssuerKey, RevocationError, RevocationStore};
use crate::domain::token::{AuthToken, MAX_TOKEN_LEN, MIN_TOKEN_LEN};
use crate::domain::verifier::{TokenVerifier, VerifiedCard, VerifyError};
use std::sync::Arc;
use std::time::Duration;
use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};

/// The origin the seed tokens are signed for.
pub const SEED_ORIGIN: &str = "https://kiosk.iphr.test";
/// The nonce the seed tokens are signed over (32 bytes, base64).
pub const SEED_NONCE: &str = "ZnV6ei1zZWVkLW5vbmNlLTMyLWJ5dGVzLWxvbmctISE=";
/// 2027-01-01T00:00:00Z: inside the validity of every seed certificate and CRL.
pub const SEED_NOW_MS: i64 = 1_798_761_600_000;

/// Trust set-up shared by every input of a fuzzing run.
pub struct Harness {
    verifier: TokenVerifier,
    /// Per anchor (JPKI, PHR): its DN (DER), its key, and a serial its seed CRL revokes.
    revoked: [(Vec<u8>, IssuerKey, Vec<u8>); 2],
    /// TBSCertificate bytes of the seed leaves.
    seed_tbs: Vec<Vec<u8>>,
}

/// The seed files a [`Harness`] is built from.
pub struct Seeds<'a> {
    /// JPKI-like authentication CA certificate.
    pub jpki_anchor: &'a [u8],
    /// Its CRL, revoking at least one serial.
    pub jpki_crl: &'a [u8],
    /// PHR card issuer CA certificate.
    pub phr_anchor: &'a [u8],
    /// Its CRL, revoking at least one serial.
    pub phr_crl: &'a [u8],
    /// The valid leaves (their TBS is what a mutant may not change and still verify).
    pub leaves: &'a [&'a [u8]],
}

impl Harness {
    /// Builds the verifier from the seeds; fails on seeds that do not parse.
    pub fn new(seeds: &Seeds<'_>) -> Result<Harness, String> {
        let skew = Duration::from_secs(900);
        let set = |card_type, anchor: &[u8], crl: &[u8]| {
            let revocation = RevocationStore::from_crls(&[crl.to_vec()], skew)
                .map_err(|e| format!("seed CRL: {e}"))?;
            AnchorSet::new(
                card_type,
                CardKey::Auth,
                vec![anchor.to_vec()],
                CertPolicy::default(),
                Arc::new(revocation),
            )
            .map_err(|e| format!("seed anchor: {e}"))
        };
        let verifier = TokenVerifier::new(vec![
            set(CardType::Jpki, seeds.jpki_anchor, seeds.jpki_crl)?,
            set(CardType::Phr, seeds.phr_anchor, seeds.phr_crl)?,
        ]);
        let revoked = |anchor: &[u8], crl: &[u8]| -> Result<_, String> {
            let (_, cert) = X509Certificate::from_der(anchor).map_err(|e| e.to_string())?;
            let key = IssuerKey::from_der(anchor).map_err(|e| e.to_string())?;
            let (_, crl) = CertificateRevocationList::from_der(crl).map_err(|e| e.to_string())?;
            let serial = crl
                .iter_revoked_certificates()
                .next()
                .ok_or("a seed CRL must revoke a serial")?
                .raw_serial()
                .to_vec();
            Ok((cert.subject().as_raw().to_vec(), key, serial))
        };
        let seed_tbs = seeds
            .leaves
            .iter()
            .map(|der| tbs(der).ok_or_else(|| "seed leaf does not parse".to_owned()))
            .collect::<Result<_, _>>()?;
        Ok(Harness {
            verifier,
            revoked: [
                revoked(seeds.jpki_anchor, seeds.jpki_crl)?,
                revoked(seeds.phr_anchor, seeds.phr_crl)?,
            ],
            seed_tbs,
        })
    }

    /// Parses and verifies `data` as a token for the seed origin and nonce.
    pub fn token(&self, data: &[u8]) -> Result<VerifiedCard, VerifyError> {
        let token = AuthToken::parse(data)?;
        let again = token.to_json();
        // Re-encoding drops whitespace and escapes, so it may fall below the minimum length.
        if (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&again.len()) {
            assert_eq!(
                AuthToken::parse(again.as_bytes()).as_ref(),
                Ok(&token),
                "a parsed token must survive re-encoding"
            );
        }
        let verified = self
            .verifier
            .verify(&token, SEED_ORIGIN, SEED_NONCE, SEED_NOW_MS)?;
        assert!(
            self.is_seed_leaf(&token.certificate_der),
            "a token verified with a certificate whose signed content is not a seed's"
        );
        Ok(verified)
    }

    /// Validates `data` as a leaf certificate against the JPKI and the PHR anchors.
    pub fn certificate(&self, data: &[u8]) -> [Result<ValidatedCert, CertError>; 2] {
        [CardType::Jpki, CardType::Phr].map(|card_type| {
            let set = self
                .verifier
                .anchor_set(card_type, CardKey::Auth)
                .ok_or_else(|| CertError::Malformed("no anchor set".into()))?;
            let validated = set.validate(data, &[], SEED_NOW_MS)?;
            assert!(
                self.is_seed_leaf(data),
                "a certificate validated whose signed content is not a seed's"
            );
            Ok(validated)
        })
    }

    /// Loads `data` as the only CRL and checks each anchor's revoked seed serial.
    pub fn crl(&self, data: &[u8]) -> Vec<Result<(), RevocationError>> {
        let Ok(store) = RevocationStore::from_crls(&[data.to_vec()], Duration::from_secs(900))
        else {
            return Vec::new();
        };
        self.revoked
            .iter()
            .map(|(issuer_raw, key, serial)| {
                let outcome = store.check(serial, issuer_raw, key, SEED_NOW_MS);
                assert!(
                    outcome.is_err(),
                    "a CRL let the revoked seed certificate pass"
                );
                outcome
            })
            .collect()
    }

    fn is_seed_leaf(&self, der: &[u8]) -> bool {
        tbs(der).is_some_and(|t| self.seed_tbs.contains(&t))
    }
}

fn tbs(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.tbs_certificate.as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::domain::revocation::RevocationError;

    macro_rules! seed {
        ($name:literal) => {
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/", $name)).as_slice()
        };
    }

    fn harness() -> Harness {
        Harness::new(&Seeds {
            jpki_anchor: seed!("jpki-anchor.der"),
            jpki_crl: seed!("crl/jpki.der"),
            phr_anchor: seed!("phr-anchor.der"),
            phr_crl: seed!("crl/phr.der"),
            leaves: &[
                seed!("certificate/jpki-leaf.der"),
                seed!("certificate/phr-leaf.der"),
            ],
        })
        .unwrap()
    }

    /// Deterministic xorshift, so a failure names a reproducible iteration.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % (n.max(1) as u64)).unwrap()
        }
    }

    /// One to four byte-level edits: flip, set, insert, delete, truncate, duplicate a span.
    fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
        let mut data = seed.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(data.len());
            match rng.below(6) {
                0 if !data.is_empty() => data[at] ^= 1 << rng.below(8),
                1 if !data.is_empty() => data[at] = rng.next() as u8,
                2 => data.insert(at, rng.next() as u8),
                3 if !data.is_empty() => {
                    data.remove(at);
                }
                4 => data.truncate(at),
                _ => {
                    let len = rng.below(16).min(data.len() - at.min(data.len()));
                    let span = data[at..at + len].to_vec();
                    data.splice(at..at, span);
                }
            }
        }
        data
    }

    #[test]
    fn the_seeds_are_accepted_so_the_fuzzers_reach_the_deep_paths() {
        let h = harness();
        let rs = h.token(seed!("token/rs256.json")).unwrap();
        assert_eq!(rs.card_type, CardType::Jpki);
        let es = h.token(seed!("token/es256.json")).unwrap();
        assert_eq!(es.card_type, CardType::Phr);
        let [jpki, phr] = h.certificate(seed!("certificate/jpki-leaf.der"));
        assert!(jpki.is_ok() && phr.is_err());
        let [jpki, phr] = h.certificate(seed!("certificate/phr-leaf.der"));
        assert!(jpki.is_err() && phr.is_ok());
        let [revoked, _] = h.certificate(seed!("certificate/jpki-revoked.der"));
        assert!(matches!(
            revoked,
            Err(CertError::Revocation(RevocationError::Revoked))
        ));
        let outcomes = h.crl(seed!("crl/jpki.der"));
        assert_eq!(outcomes[0], Err(RevocationError::Revoked));
        assert_eq!(outcomes[1], Err(RevocationError::NoCrl));
        let outcomes = h.crl(seed!("crl/phr.der"));
        assert_eq!(outcomes[0], Err(RevocationError::NoCrl));
        assert_eq!(outcomes[1], Err(RevocationError::Revoked));
    }

    #[test]
    fn a_token_signed_for_another_nonce_is_refused_by_the_harness() {
        let h = harness();
        let text = std::str::from_utf8(seed!("token/rs256.json")).unwrap();
        let other = text.replace("(fuzz seed)", "(fuzz seed, edited)");
        // app_version is not signed: still accepted. The origin/nonce are fixed by the harness,
        // so only the signature field decides.
        assert!(h.token(other.as_bytes()).is_ok());
        let token = AuthToken::parse(text.as_bytes()).unwrap();
        let mut wrong = token.clone();
        wrong.signature[10] ^= 1;
        assert!(matches!(
            h.token(wrong.to_json().as_bytes()),
            Err(VerifyError::Signature(_))
        ));
    }

    #[test]
    fn random_mutations_of_every_seed_never_panic_and_never_pass_the_oracles() {
        let iterations: usize = std::env::var("IPHR_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500);
        let h = harness();
        let mut rng = Rng(0x1f2e_3d4c_5b6a_7988);
        let mut token_ok = 0;
        for seed in [seed!("token/rs256.json"), seed!("token/es256.json")] {
            for _ in 0..iterations {
                token_ok += usize::from(h.token(&mutate(seed, &mut rng)).is_ok());
            }
        }
        for seed in [
            seed!("certificate/jpki-leaf.der"),
            seed!("certificate/phr-leaf.der"),
            seed!("certificate/jpki-revoked.der"),
        ] {
            for _ in 0..iterations {
                let _ = h.certificate(&mutate(seed, &mut rng));
            }
        }
        let mut crl_loaded = 0;
        for seed in [seed!("crl/jpki.der"), seed!("crl/phr.der")] {
            for _ in 0..iterations {
                crl_loaded += usize::from(!h.crl(&mutate(seed, &mut rng)).is_empty());
            }
        }
        // Some token mutations only touch unsigned JSON (app_version, whitespace) and verify;
        // some CRL mutations still parse. Both show the mutations reach past the first check.
        assert!(token_ok > 0, "no token mutation verified");
        assert!(crl_loaded > 0, "no mutated CRL parsed");
    }
}
