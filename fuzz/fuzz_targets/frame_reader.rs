//! Frame decoder + message state machine under arbitrary chunking (see `ringws::protocol::fuzz_support`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringws::protocol::fuzz_support::frame_reader(data));
