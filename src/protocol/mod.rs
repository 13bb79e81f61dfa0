//! Sans-I/O RFC 6455: handshake, frame codec, SIMD unmasking, incremental UTF-8 validation, message
//! assembly and close codes.
//!
//! This layer is deterministic: it is fed bytes and returns events and bytes to send. It never performs a
//! syscall, never reads a clock, and allocates nothing per message in steady state.
