//! PIV certificate object (70 cert, 71 info, FE) as read from the card: never panics.
#![no_main]
use card_agent::phr::card::cert_from_object;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(der) = cert_from_object(data) {
        let _ = card_agent::phr::verify::parse_binding_cert(&der);
    }
});
