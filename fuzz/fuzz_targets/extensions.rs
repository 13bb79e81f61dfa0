//! `Sec-WebSocket-Extensions` parsing and permessage-deflate negotiation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringws::protocol::fuzz_support::extensions(data));
