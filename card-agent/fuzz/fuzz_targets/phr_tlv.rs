//! BER-TLV parser (SP 800-73-4 data objects): never panics; what parses re-encodes to itself
//! when it used minimal lengths.
#![no_main]
use card_agent::piv::tlv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = tlv::parse_all(data) {
        let mut out = Vec::new();
        for t in &items {
            tlv::push(&mut out, t.tag, t.value);
        }
        assert!(out.len() <= data.len() + 4 * items.len());
    }
    let _ = tlv::find(data, 0x53);
    let _ = tlv::parse_single(data, 0x7C);
});
