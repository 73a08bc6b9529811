#![no_main]

include!("../bodies/transactions.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| body(data));
