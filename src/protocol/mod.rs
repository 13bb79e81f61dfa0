//! Sans-I/O RFC 6455: handshake, frame codec, SIMD unmasking, incremental UTF-8 validation, message
//! assembly and close codes.
//!
//! This layer is deterministic: it is fed bytes and returns events and bytes to send. It never performs a
//! syscall, never reads a clock, and allocates nothing per message in steady state. See the "Protocol layer
//! contract" in `docs/ARCHITECTURE.md`.

pub mod close;
pub mod deflate;
mod error;
pub mod frame;
pub mod handshake;
pub mod http_response;
pub mod mask;
pub mod message;
pub mod utf8;

#[doc(hidden)]
pub mod fuzz_support;

pub use close::CloseCode;
pub use error::ProtocolError;
pub use frame::{FrameHeader, OpCode};
pub use handshake::{HandshakeError, HandshakePolicy, Request, Upgrade};
pub use message::{Event, MessageKind, MessageReader, ReaderLimits, Role};
pub use utf8::{Utf8Error, Utf8Validator};
