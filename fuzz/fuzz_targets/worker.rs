//! A whole worker (echo or pub/sub handler) on the simulated ring: the input picks the configuration and
//! every completion in turn; `ringws::server::worker::sim::run` panics when an invariant breaks. The same
//! body runs on stable in `tests/worker_sim.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringws::server::worker::sim::run(data);
});
