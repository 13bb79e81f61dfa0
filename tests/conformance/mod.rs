//! The RFC 6455 conformance suite: cases in the families of the Autobahn|Testsuite (1 framing, 2 ping/pong,
//! 3 reserved bits, 4 reserved opcodes, 5 fragmentation, 6 UTF-8, 7 close, 9 limits, 10 automatic
//! fragmentation, 12 and 13 permessage-deflate), generated from tables, run over raw TCP against one
//! running server.
//!
//! It owns the client side of the wire only; it must never share code with the server it judges, and no
//! case may pass without the server's reply having been read and compared.

pub mod cases;
pub mod deflate_window;
pub mod families;
pub mod runner;
pub mod script;
pub mod wire;
