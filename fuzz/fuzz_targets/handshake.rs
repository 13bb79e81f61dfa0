//! HTTP upgrade request parser and validator, and the client's response validator.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringws::protocol::fuzz_support::handshake(data));
