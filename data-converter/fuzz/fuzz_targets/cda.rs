//! Fuzz target: the 特定健診 CDA reader must return Ok or Err for any bytes, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    data_converter::fuzzing::cda(data);
});
