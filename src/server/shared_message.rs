//! A message encoded once and shared by every connection that receives it (broadcast, publish).
//!
//! Server frames are unmasked, so every receiver gets the same bytes: a [`SharedMessage`] holds one
//! reference-counted frame, and each receiving send queue takes a reference, never a copy. It is the one
//! form in which a message crosses threads (workers, `ServerHandle`) and reaches a handler's
//! `on_published`; a connection asks it for the form that connection needs (today the plain frame; a
//! compressed variant will sit beside it, made at most once per message). Must never be re-encoded or
//! copied per receiver.

use std::sync::Arc;

use crate::protocol::frame::{encode_header, OpCode};
use crate::protocol::MessageKind;

/// One message, framed once, cheap to clone (a reference count).
#[derive(Debug, Clone)]
pub struct SharedMessage {
    kind: MessageKind,
    /// Bytes of the frame header before the payload in `plain`.
    header_len: u8,
    plain: Arc<[u8]>,
}

impl SharedMessage {
    /// Frames `payload` as one unfragmented, unmasked server frame of `kind`.
    pub fn encode(kind: MessageKind, payload: &[u8]) -> SharedMessage {
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        let mut header = [0u8; 14];
        let header_len = encode_header(&mut header, true, opcode, payload.len() as u64, None);
        let mut frame = Vec::with_capacity(header_len + payload.len());
        frame.extend_from_slice(&header[..header_len]);
        frame.extend_from_slice(payload);
        SharedMessage {
            kind,
            header_len: header_len as u8,
            plain: frame.into(),
        }
    }

    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The message's payload (as the application gave it).
    pub fn payload(&self) -> &[u8] {
        &self.plain[self.header_len as usize..]
    }

    /// The complete uncompressed frame, as queued to a connection without extensions.
    pub fn plain_frame(&self) -> &Arc<[u8]> {
        &self.plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::decode_header;

    #[test]
    fn the_frame_decodes_to_the_payload_at_every_length_class() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for kind in [MessageKind::Text, MessageKind::Binary] {
                let message = SharedMessage::encode(kind, &payload);
                assert_eq!(message.kind(), kind);
                assert_eq!(message.payload(), &payload[..], "len {len}");
                let (header, used) = decode_header(message.plain_frame()).unwrap().unwrap();
                assert!(header.fin);
                assert_eq!(header.payload_len, len as u64);
                assert_eq!(used + len, message.plain_frame().len());
            }
        }
    }

    #[test]
    fn clones_share_one_frame() {
        let message = SharedMessage::encode(MessageKind::Text, b"hello");
        let copy = message.clone();
        assert!(Arc::ptr_eq(message.plain_frame(), copy.plain_frame()));
    }
}
