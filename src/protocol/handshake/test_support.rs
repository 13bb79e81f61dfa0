//! Test-only: the sample upgrade request the handshake rooms' unit tests start from (RFC 6455's own key).
//! Compiled only for tests; never part of the library.

/// The `Sec-WebSocket-Key` of RFC 6455 section 1.3.
pub const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A valid browser-like upgrade request for `/chat?room=1`, with `extra` header lines before the blank line.
pub fn request(extra: &str) -> Vec<u8> {
    format!(
        "GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}
