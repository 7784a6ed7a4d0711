//! Service grant parser: never panics; accepted bytes re-encode exactly.
#![no_main]
use card_agent::phr::verify::ServiceGrant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(grant) = ServiceGrant::parse(data) {
        assert_eq!(grant.encode().ok().as_deref(), Some(data));
    }
});
