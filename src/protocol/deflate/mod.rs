//! permessage-deflate (RFC 7692): the extension's negotiation, without I/O.
//!
//! It owns the `Sec-WebSocket-Extensions` answer: parsing every offer a client sends, choosing the first
//! permessage-deflate offer this server can honour exactly under its `DeflateConfig`, and writing the
//! response value. It never fails a handshake (a malformed header or an unacceptable offer only declines the
//! extension), never panics on any input, and allocates nothing but the response value appended to the
//! caller's `Vec`. It does not compress or inflate anything: the codec is a later room of this module, and
//! until it exists the server keeps declining the extension.
//!
//! - `negotiate.rs`: the header grammar (RFC 6455 section 9.1), the permessage-deflate parameters (RFC 7692
//!   section 7.1), `DeflateConfig`, `negotiate` and `Agreed`.
//! - `tests.rs`: one unit test per negotiation rule, with the offers browsers and client libraries send.

mod negotiate;
#[cfg(test)]
mod tests;

pub use negotiate::{
    negotiate, offers, Agreed, ClientMaxWindowBits, ConfigError, Decline, DeflateConfig,
    DeflateMode, DeflateParams, Extension, Malformed, Offers, Param, EXTENSION_NAME,
};
