//! Grant verification at the source, in the order of protocol §4's table, and nonce redemption.

use super::state::{LinkedKey, State};
use crate::protocol::{ErrorCode, GRANT_SKEW_SECS, GrantAlg, GrantHeader};
use card_agent::phr::consent::Category;
use card_agent::phr::verify::ServiceGrant;
use sha2::{Digest, Sha256};

/// A request's grant, verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The person.
    pub pseudonym: String,
    /// What it covers.
    pub scope: Vec<Category>,
}

/// A refusal: the code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code.
    pub code: ErrorCode,
    /// Why.
    pub message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Verifies the `Authorization` value for `service` and the TLS client's `audience` at `now`,
/// redeeming the grant's nonce in `state` on first use. Returns whether `state` changed.
pub fn verify(
    state: &mut State,
    service: &str,
    header: Option<&str>,
    audience: &str,
    now: i64,
) -> Result<(Verified, bool), Refusal> {
    let header = header.ok_or_else(|| refuse(ErrorCode::GrantMalformed, "no grant"))?;
    let header =
        GrantHeader::parse(header).map_err(|e| refuse(ErrorCode::GrantMalformed, e.to_string()))?;
    let grant = ServiceGrant::parse(&header.grant)
        .map_err(|e| refuse(ErrorCode::GrantMalformed, format!("grant: {e}")))?;
    let link = state.links.get(&grant.pseudonym).ok_or_else(|| {
        refuse(
            ErrorCode::UnknownPerson,
            "the grant's person is not linked at this source",
        )
    })?;
    if grant.service != service {
        return Err(refuse(
            ErrorCode::WrongService,
            format!(
                "the grant is for service {:?}, not {service:?}",
                grant.service
            ),
        ));
    }
    let digest = ServiceGrant::digest_of(&header.grant);
    check_signature(&link.key, header.alg, &digest, &header.signature)?;
    if grant.audience != audience {
        return Err(refuse(
            ErrorCode::WrongAudience,
            "the grant names another gateway than this TLS client",
        ));
    }
    if i64::from(grant.issued_at) > now + GRANT_SKEW_SECS {
        return Err(refuse(
            ErrorCode::GrantNotYetValid,
            "the grant is issued in the future",
        ));
    }
    if now > i64::from(grant.expires_at) {
        return Err(refuse(ErrorCode::GrantExpired, "the grant has expired"));
    }
    let nonce = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &grant.nonce,
    );
    let grant_hash = hex::encode(Sha256::digest(&header.grant));
    let changed = match state.redeemed_nonces.get(&nonce) {
        Some(redeemed_by) if *redeemed_by == grant_hash => false,
        Some(_) => {
            return Err(refuse(
                ErrorCode::NonceReplayed,
                "the grant's nonce was already redeemed by another grant",
            ));
        }
        None => match state.issued_nonces.get(&nonce) {
            Some(expires) if *expires >= now => {
                state.issued_nonces.remove(&nonce);
                state.redeemed_nonces.insert(nonce, grant_hash);
                true
            }
            _ => {
                return Err(refuse(
                    ErrorCode::NonceUnknown,
                    "the grant's nonce was not issued here or has expired",
                ));
            }
        },
    };
    Ok((
        Verified {
            pseudonym: grant.pseudonym,
            scope: grant.scope,
        },
        changed,
    ))
}

fn check_signature(
    key: &LinkedKey,
    alg: GrantAlg,
    digest: &[u8; 32],
    signature: &[u8],
) -> Result<(), Refusal> {
    let bad = || {
        refuse(
            ErrorCode::BadSignature,
            "the grant's signature does not verify with the key registered at linking",
        )
    };
    match (key, alg) {
        (LinkedKey::P256 { sec1 }, GrantAlg::P256) => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1).map_err(|_| bad())?;
            let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| bad())?;
            key.verify_prehash(digest, &sig).map_err(|_| bad())
        }
        (LinkedKey::Jpki { spki }, GrantAlg::Jpki) => {
            use rsa::pkcs8::DecodePublicKey as _;
            let key = rsa::RsaPublicKey::from_public_key_der(spki).map_err(|_| bad())?;
            key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), digest, signature)
                .map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::state::Link;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;

    const NOW: i64 = 1_800_000_000;

    fn signed(key: &SigningKey, grant: &ServiceGrant) -> String {
        let bytes = grant.encode().unwrap();
        let sig: p256::ecdsa::Signature =
            key.sign_prehash(&ServiceGrant::digest_of(&bytes)).unwrap();
        GrantHeader {
            alg: GrantAlg::P256,
            grant: bytes,
            signature: sig.to_der().as_bytes().to_vec(),
        }
        .to_header_value()
    }

    fn setup() -> (State, SigningKey, ServiceGrant) {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let mut state = State::default();
        state.links.insert(
            "P-1".into(),
            Link {
                key: LinkedKey::P256 {
                    sec1: key
                        .verifying_key()
                        .to_encoded_point(false)
                        .as_bytes()
                        .to_vec(),
                },
                linked_at: NOW,
            },
        );
        let nonce = vec![9u8; 32];
        state.issued_nonces.insert(
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &nonce),
            NOW + 300,
        );
        let grant = ServiceGrant {
            service: "kenshin".into(),
            pseudonym: "P-1".into(),
            audience: "gw".into(),
            nonce,
            issued_at: u32::try_from(NOW).unwrap(),
            expires_at: u32::try_from(NOW + 3600).unwrap(),
            scope: vec![Category::parse("A:checkup").unwrap()],
        };
        (state, key, grant)
    }

    #[test]
    fn a_good_grant_redeems_its_nonce_once_and_is_accepted_again() {
        let (mut state, key, grant) = setup();
        let h = signed(&key, &grant);
        let (v, changed) = verify(&mut state, "kenshin", Some(&h), "gw", NOW).unwrap();
        assert!(changed);
        assert_eq!(v.pseudonym, "P-1");
        assert!(state.issued_nonces.is_empty());
        let (_, changed) = verify(&mut state, "kenshin", Some(&h), "gw", NOW + 60).unwrap();
        assert!(!changed);
    }

    #[test]
    fn each_refusal_of_the_table() {
        let code = |state: &mut State, h: &str, service: &str, aud: &str, now: i64| {
            verify(state, service, Some(h), aud, now).unwrap_err().code
        };
        let (mut state, key, grant) = setup();
        let good = signed(&key, &grant);
        assert_eq!(
            verify(&mut state, "kenshin", None, "gw", NOW)
                .unwrap_err()
                .code,
            ErrorCode::GrantMalformed
        );
        assert_eq!(
            code(
                &mut state,
                "iPHR-Grant p256.AAAA.AAAA",
                "kenshin",
                "gw",
                NOW
            ),
            ErrorCode::GrantMalformed
        );
        let other_person = ServiceGrant {
            pseudonym: "P-2".into(),
            ..grant.clone()
        };
        assert_eq!(
            code(
                &mut state,
                &signed(&key, &other_person),
                "kenshin",
                "gw",
                NOW
            ),
            ErrorCode::UnknownPerson
        );
        assert_eq!(
            code(&mut state, &good, "insurer", "gw", NOW),
            ErrorCode::WrongService
        );
        let stranger = SigningKey::from_slice(&[8u8; 32]).unwrap();
        assert_eq!(
            code(&mut state, &signed(&stranger, &grant), "kenshin", "gw", NOW),
            ErrorCode::BadSignature
        );
        assert_eq!(
            code(&mut state, &good, "kenshin", "gw-2", NOW),
            ErrorCode::WrongAudience
        );
        assert_eq!(
            code(&mut state, &good, "kenshin", "gw", NOW - 301),
            ErrorCode::GrantNotYetValid
        );
        assert_eq!(
            code(&mut state, &good, "kenshin", "gw", NOW + 3601),
            ErrorCode::GrantExpired
        );
        let unknown_nonce = ServiceGrant {
            nonce: vec![1u8; 32],
            ..grant.clone()
        };
        assert_eq!(
            code(
                &mut state,
                &signed(&key, &unknown_nonce),
                "kenshin",
                "gw",
                NOW
            ),
            ErrorCode::NonceUnknown
        );
        // Nothing above redeemed the nonce; the good grant does, then another grant with the
        // same nonce is a replay.
        verify(&mut state, "kenshin", Some(&good), "gw", NOW).unwrap();
        let wider = ServiceGrant {
            scope: vec![Category::parse("A:*").unwrap()],
            ..grant.clone()
        };
        assert_eq!(
            code(&mut state, &signed(&key, &wider), "kenshin", "gw", NOW),
            ErrorCode::NonceReplayed
        );
    }

    #[test]
    fn an_expired_nonce_cannot_be_redeemed() {
        let (mut state, key, grant) = setup();
        let h = signed(&key, &grant);
        assert_eq!(
            verify(&mut state, "kenshin", Some(&h), "gw", NOW + 301)
                .unwrap_err()
                .code,
            ErrorCode::NonceUnknown
        );
    }
}
