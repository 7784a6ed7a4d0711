//! Auth-token JSON (security-scenarios B15): parse, re-encode, full verification for the seed origin and nonce.
#![no_main]
use libfuzzer_sys::fuzz_target;

mod harness;

fuzz_target!(|data: &[u8]| {
    let _ = harness::harness().token(data);
});
