//! The permessage-deflate inflater over arbitrary payloads cut into pieces: no panic, never past the limit.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringws::protocol::fuzz_support::inflate(data));
