//! Helpers shared by the integration tests of `ringws` and `ringws-loadgen` (and the examples that drive a
//! real server): start the `ringws` binary on an ephemeral port and stop it by PID (`server`), talk to it
//! byte by byte over raw TCP (`raw`), over TLS with a certificate made at test time (`tls`), read its
//! `/metrics` (`metrics`), read its memory from `/proc` (`proc`), point a client at a port nothing
//! listens on (`ports`), run a `redis-server` of its own (`redis`), and sign JWTs (`jwt`).
//!
//! Every helper here talks to a server from the outside, the way a client or an operator would: it never
//! links the server's code and never reaches into it, so a test that uses it pins behaviour, not internals.
//! Nothing here assumes a fixed port or a shared server; every process started is stopped by its PID.
//! The binary is always given by the caller (`env!("CARGO_BIN_EXE_ringws")` in the root crate; in the load
//! generator's tests, `ringws` beside `env!("CARGO_BIN_EXE_ringws-loadgen")`, so of the same profile).

pub mod jwt;
pub mod metrics;
pub mod ports;
pub mod proc;
pub mod raw;
pub mod redis;
pub mod server;
pub mod tls;

pub use jwt::{hs256_token, unix_now};
pub use metrics::{metric, metric_sum, metrics_text, wait_open};
pub use ports::{closed_port_url, free_port};
pub use proc::{rss_anon_kib, rss_kib};
pub use raw::*;
pub use server::ServerProcess;
