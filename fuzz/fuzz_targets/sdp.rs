#![no_main]

include!("../bodies/sdp.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| body(data));
