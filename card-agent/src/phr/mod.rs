//! The PHR card: a PIV card (NIST SP 800-73-4) with our profile, `docs/phr-card-profile.md`
//! (DESIGN.md §3.2).
//!
//! - [`consent`]: consent records and the consent set (formats, strict parsers).
//! - [`verify`]: verification of what the card signs — holder and service-binding certificates,
//!   consent records with version monotonicity, service grants. Needs no PC/SC.
//! - [`ca`]: the PHR card issuer CA for tests and the demo.
//! - [`card`]: the agent's operations on a card (issue, show, link, grant, revoke, sign a grant).
//! - [`kiosk`]: a gateway consent document written to the card (link if needed, then the record),
//!   and the mapping the gateway checks the record against.

pub mod ca;
pub mod card;
pub mod consent;
pub mod kiosk;
pub mod verify;

use crate::piv::object;

/// The two data objects that alternately hold the consent set (both readable without PIN):
/// Security Object `5FC106` and Secure Messaging Certificate Signer `5FC122`, which a PHR card
/// (no SP 800-73-4 security object, no secure messaging) leaves unused.
pub const CONSENT_OBJECTS: [u32; 2] = [object::SECURITY_OBJECT, object::SM_CERT_SIGNER];

/// Where issuance keeps the management key: Printed Information `5FC109` (PIN to read), in
/// Yubico's "PIN-protected management key" layout `88 { 89 key }`.
pub const MGMT_KEY_OBJECT: u32 = object::PRINTED_INFO;

#[cfg(test)]
mod tests {
    #[test]
    fn card_data_parsers_survive_random_input() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        let object = super::card::cert_object(&[0x30, 0x03, 0x02, 0x01, 0x05]);
        for _ in 0..5_000 {
            let mut bytes = object.clone();
            let i = rng.gen_range(0..bytes.len());
            bytes[i] = rng.r#gen();
            bytes.truncate(rng.gen_range(0..=bytes.len()));
            if let Ok(der) = super::card::cert_from_object(&bytes) {
                let _ = super::verify::parse_binding_cert(&der);
            }
            let junk: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.r#gen()).collect();
            let _ = super::card::cert_from_object(&junk);
            let _ = super::verify::parse_binding_cert(&junk);
        }
    }
}
