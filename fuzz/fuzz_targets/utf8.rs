//! Incremental UTF-8 validation over pieces against `std::str::from_utf8`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringws::protocol::fuzz_support::utf8_pieces(data));
