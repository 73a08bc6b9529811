#![no_main]

include!("../bodies/stream_framer.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| body(data));
