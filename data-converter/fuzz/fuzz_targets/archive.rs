//! Fuzz target: the archive reader (ZIP + ix08 + CDA members) never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    data_converter::fuzzing::archive(data);
});
