//! Consent set parser (the content of data objects 5FC106 / 5FC122): never panics; accepted
//! bytes re-encode exactly.
#![no_main]
use card_agent::phr::consent::ConsentSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = ConsentSet::parse(data) {
        assert_eq!(set.encode().ok().as_deref(), Some(data));
    }
});
