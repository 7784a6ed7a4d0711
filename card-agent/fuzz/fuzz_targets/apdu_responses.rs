//! Card answers (R-APDUs, status words, certificate EFs) through the APDU layer and JPKI client.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    card_agent::fuzzing::card_responses(data);
});
