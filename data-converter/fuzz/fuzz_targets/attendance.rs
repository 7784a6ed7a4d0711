//! Fuzz target: the attendance (勤怠) CSV reader, monthly summary, interview list and FHIR export never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    data_converter::fuzzing::attendance(data);
});
