//! Fuzz target: the UKE claims reader (+ FHIR export) never panics (issue 5).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    data_converter::fuzzing::uke(data);
});
