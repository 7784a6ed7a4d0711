//! The harness every target shares, built once from the committed seeds.

use gateway::fuzzing::{Harness, Seeds};
use std::sync::OnceLock;

macro_rules! seed {
    ($name:literal) => {
        include_bytes!(concat!("../seeds/", $name)).as_slice()
    };
}

pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
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
        .unwrap_or_else(|e| panic!("the committed seeds must load: {e}"))
    })
}
