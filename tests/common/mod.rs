//! Helpers for the root crate's integration tests: the shared kit (`ringws-testkit`: the server launcher,
//! the raw-TCP and TLS clients, `/metrics`) and the `ringws` binary cargo built for these tests.
//!
//! Set `RINGWS_TEST_LOG=1` to see the server's stderr (its logs) in the test output.
#![allow(dead_code)]

#[allow(unused_imports)] // each test file uses its own part of the kit
pub use ringws_testkit::*;

/// The `ringws` binary cargo built for these tests.
pub fn ringws_binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringws")
}
