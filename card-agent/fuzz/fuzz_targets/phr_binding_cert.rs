//! Service-binding certificate reader (retired-slot certificate objects): never panics.
#![no_main]
use card_agent::phr::verify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verify::parse_binding_cert(data);
});
