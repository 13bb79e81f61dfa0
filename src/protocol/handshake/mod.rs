//! The opening handshake (RFC 6455 section 4) over HTTP/1.1, both sides, without I/O.
//!
//! Server side: `parse_request` (httparse, zero-copy, fixed header array; "need more" vs error; header block
//! limit), `validate_upgrade` (RFC 6455 4.2.1 plus Origin allowlist and subprotocol choice), `accept_key`,
//! `write_101`, and `HandshakeError`, mapped in exactly one place (`status`, `reason`, `write_response`) to
//! the HTTP answer. Client side: `build_client_request` and `validate_server_response`.
//!
//! It must never allocate while parsing (responses are appended to the caller's `Vec`), never echo a
//! subprotocol the client did not offer, and never panic on any input.

// compatibility re-export: the generic HTTP/1.1 response writer lives in `protocol::http_response`.
pub use crate::protocol::http_response::{status_text, write_http_response};

mod client;
mod error;
mod request;
#[cfg(test)]
mod test_support;
mod upgrade;

pub use client::{build_client_request, encode_key, validate_server_response, ResponseError};
pub use error::HandshakeError;
pub use request::{parse_request, Request, DEFAULT_MAX_HEADER_BYTES, MAX_HEADERS};
pub use upgrade::{accept_key, validate_upgrade, write_101, HandshakePolicy, Upgrade};
