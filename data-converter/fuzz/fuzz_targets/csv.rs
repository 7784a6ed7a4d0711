//! Fuzz target: the health-check CSV reader (UTF-8 and Shift_JIS layouts) never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    data_converter::fuzzing::csv(data);
});
