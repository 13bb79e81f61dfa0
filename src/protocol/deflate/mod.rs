//! permessage-deflate (RFC 7692): the extension's negotiation, without I/O.
//!
//! It owns the `Sec-WebSocket-Extensions` answer: parsing every offer a client sends, choosing the first
//! permessage-deflate offer this server can honour exactly under its `DeflateConfig`, and writing the
//! response value. It never fails a handshake (a malformed header or an unacceptable offer only declines the
//! extension), never panics on any input, and allocates nothing but the response value appended to the
//! caller's `Vec`.
//!
//! - `codec.rs`: the codec itself (inflate with the size limit checked while inflating, compress with the
//!   tail stripped), the agreement in one byte (`Negotiated`), the worker's inflater pool and compressors.
//! - `negotiate.rs`: the header grammar (RFC 6455 section 9.1), the permessage-deflate parameters (RFC 7692
//!   section 7.1), `DeflateConfig`, `negotiate` and `Agreed`.
//! - `zlib_ctx.rs`: `ContextCompressor`, the compressor of a context-takeover connection (stock zlib, FFI).
//! - `tests.rs`: one unit test per negotiation rule, with the offers browsers and client libraries send.

mod codec;
mod negotiate;
#[cfg(test)]
mod tests;
mod zlib_ctx;

pub use codec::{
    Compressor, Compressors, InflateError, InflatePool, Inflater, Negotiated, INFLATER_STATE_BYTES,
    TAIL,
};
pub use negotiate::{
    negotiate, offers, Agreed, ClientMaxWindowBits, ConfigError, Decline, DeflateConfig,
    DeflateMode, DeflateParams, Extension, Malformed, Offers, Param, EXTENSION_NAME,
};
pub use zlib_ctx::{ContextCompressor, ContextInitError};

/// `len` bytes that do not shrink when compressed (xorshift), for the tests of this module and its users.
#[cfg(test)]
pub(crate) fn test_noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
