//! Card certificate DER (C9): chain, validity, profile, key usage, revocation against the JPKI and PHR anchors.
#![no_main]
use libfuzzer_sys::fuzz_target;

mod harness;

fuzz_target!(|data: &[u8]| {
    let _ = harness::harness().certificate(data);
});
