//! `ProtocolError`: every way a peer can break RFC 6455 after the handshake, each mapped in one place to the
//! close code the RFC requires (1002, 1007, 1009) and a short reason that fits a close frame.
//!
//! Plain data (`Copy`, no allocation); it must never carry peer bytes.

use super::close::CloseCode;
use std::fmt;

/// A violation of RFC 6455 by the peer, detected while decoding frames or assembling messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolError {
    /// A client sent an unmasked frame to a server (RFC 6455 5.1).
    UnmaskedFrame,
    /// A server sent a masked frame to a client (RFC 6455 5.1).
    MaskedFrame,
    /// RSV1-3 set without a negotiated extension.
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF.
    ReservedOpcode,
    /// A control frame with FIN = 0.
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload.
    ControlFrameTooLong,
    /// A 64-bit payload length with the most significant bit set.
    InvalidLength,
    /// A continuation frame without a message in progress.
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// A close payload of exactly 1 byte.
    CloseTooShort,
    /// A close code that must not appear on the wire.
    InvalidCloseCode,
    /// A close reason that is not valid UTF-8.
    InvalidCloseReason,
    /// A text message that is not valid UTF-8.
    InvalidUtf8,
    /// A frame larger than `ReaderLimits::max_frame_size`.
    FrameTooBig,
    /// A message larger than `ReaderLimits::max_message_size` (for a compressed message: once inflated).
    MessageTooBig,
    /// A compressed message whose inflated size passes `ReaderLimits::max_message_size` (found while
    /// inflating: a decompression bomb never gets its output allocated).
    InflatedTooBig,
    /// RSV1 (permessage-deflate's "compressed" bit) on a control or continuation frame (RFC 7692 6.1).
    CompressionBitMisplaced,
    /// A compressed message that is not a valid raw deflate stream (RFC 7692 section 6.2 fails the
    /// connection; 1007 as for any payload not consistent with its message).
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code to send for this error.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8
            | ProtocolError::InvalidCloseReason
            | ProtocolError::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            ProtocolError::FrameTooBig
            | ProtocolError::MessageTooBig
            | ProtocolError::InflatedTooBig => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short static reason, suitable for the close frame and a log line.
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::UnmaskedFrame => "client frame not masked",
            ProtocolError::MaskedFrame => "server frame masked",
            ProtocolError::ReservedBits => "reserved bits set",
            ProtocolError::ReservedOpcode => "reserved opcode",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::ControlFrameTooLong => "control frame over 125 bytes",
            ProtocolError::InvalidLength => "invalid payload length",
            ProtocolError::UnexpectedContinuation => "continuation without a message",
            ProtocolError::ExpectedContinuation => "new message inside a fragmented message",
            ProtocolError::CloseTooShort => "close payload of 1 byte",
            ProtocolError::InvalidCloseCode => "invalid close code",
            ProtocolError::InvalidCloseReason => "close reason not UTF-8",
            ProtocolError::InvalidUtf8 => "text not UTF-8",
            ProtocolError::FrameTooBig => "frame too big",
            ProtocolError::MessageTooBig => "message too big",
            ProtocolError::InflatedTooBig => "message too big once inflated",
            ProtocolError::CompressionBitMisplaced => "RSV1 on a control or continuation frame",
            ProtocolError::InvalidCompressedData => "invalid compressed data",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.close_code().0)
    }
}

impl std::error::Error for ProtocolError {}
