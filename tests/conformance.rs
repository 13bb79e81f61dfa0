//! RFC 6455 conformance suite (custom harness): every case drives raw bytes over TCP against the running
//! server and asserts the exact reply. See `docs/CONFORMANCE.md` for the families, the strict choices
//! made where the RFC allows alternatives, and how to run it against another server.

mod common;
#[path = "conformance/mod.rs"]
mod suite;

fn main() {
    std::process::exit(suite::runner::main());
}
