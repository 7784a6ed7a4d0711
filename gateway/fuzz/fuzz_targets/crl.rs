//! CRL DER/PEM (C9): parse, signature, freshness; never lets the revoked seed certificate pass.
#![no_main]
use libfuzzer_sys::fuzz_target;

mod harness;

fuzz_target!(|data: &[u8]| {
    let _ = harness::harness().crl(data);
});
