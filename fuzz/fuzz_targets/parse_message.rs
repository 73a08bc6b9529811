#![no_main]

include!("../bodies/parse_message.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| body(data));
