//! The opening handshake (RFC 6455 section 4) over HTTP/1.1, both sides, without I/O: bytes in, a verdict
//! and response bytes out.
//!
//! It owns the HTTP/1.1 exchange that turns a TCP connection into a WebSocket, and nothing else: it never
//! sees a socket or a ring, never reads a clock, and allocates nothing beyond the response (or request)
//! bytes appended to the caller's `Vec` (and, on the client side, the chosen subprotocol's name). It never
//! echoes a subprotocol the client did not offer and never panics on any input. One room per job:
//!
//! - `request.rs`: HTTP/1.1 request heads: `parse_request` (zero-copy, "need more" vs error, header block
//!   limit, `Content-Length` with `Transfer-Encoding` refused on every route) and `Request` with its header
//!   helpers and `content_length`.
//! - `upgrade.rs`: the server side: `HandshakePolicy`, `validate_upgrade` (RFC 6455 4.2.1, Origin allowlist,
//!   subprotocol choice, key check), `accept_key`, `write_101` (and `write_101_with_extensions`: the permessage-deflate answer).
//! - `error.rs`: `HandshakeError`, mapped in exactly one place (`status`, `reason`, `write_response`) to the
//!   HTTP answer.
//! - `client.rs`: the client side: `encode_key`, `build_client_request`, `validate_server_response`,
//!   `ResponseError`.
//!
//! The generic HTTP/1.1 response writer (`write_http_response`, `status_text`) lives in
//! `protocol::http_response`; it is re-exported here so older paths keep working. Every public item is
//! re-exported at `protocol::handshake::*`, so callers need not know which room holds it.

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
pub use upgrade::{
    accept_key, validate_upgrade, write_101, write_101_with_extensions, HandshakePolicy, Upgrade,
};
