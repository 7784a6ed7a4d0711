//! Consent record parser (PHR profile §4): never panics; accepted bytes re-encode exactly.
#![no_main]
use card_agent::phr::consent::ConsentRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = ConsentRecord::parse(data) {
        assert_eq!(record.encode().ok().as_deref(), Some(data));
    }
});
