//! Fuzz target: the oh-records JSON reader (schema checks, rework sheet) and FHIR export never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    data_converter::fuzzing::oh_json(data);
});
