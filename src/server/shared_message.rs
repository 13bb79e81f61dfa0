//! A message encoded once and shared by every connection that receives it (broadcast, publish).
//!
//! Server frames are unmasked, so every receiver gets the same bytes: a [`SharedMessage`] holds one
//! reference-counted frame, and each receiving send queue takes a reference, never a copy. It is the one
//! form in which a message crosses threads (workers, `ServerHandle`) and reaches a handler's
//! `on_published`; a connection asks it for the form that connection needs (today the plain frame; a
//! compressed variant will sit beside it, made at most once per message). Encoding is one allocation, the
//! frame's own, and one copy of the payload. Must never be re-encoded or copied per receiver.

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
        // Built in its final allocation, the payload copied once: an exact-size iterator is collected straight
        // into the `Arc`'s own block (a `Vec` or `Box` would be a second block, copied again into the `Arc`).
        // The zero fill is a memset of memory the copy then writes; the safe way to get a unique `Arc<[u8]>`.
        let mut plain: Arc<[u8]> = std::iter::repeat_n(0u8, header_len + payload.len()).collect();
        let frame = Arc::make_mut(&mut plain); // unique: no copy is made
        frame[..header_len].copy_from_slice(&header[..header_len]);
        frame[header_len..].copy_from_slice(payload);
        SharedMessage {
            kind,
            header_len: header_len as u8,
            plain,
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

    // dhat counts the heap of this whole test binary; only `encode_is_one_allocation_of_the_frame` profiles.
    #[global_allocator]
    static ALLOC: dhat::Alloc = dhat::Alloc;

    #[test]
    fn encode_is_one_allocation_of_the_frame() {
        let _profiler = dhat::Profiler::builder().testing().build();
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let payload = vec![0x5au8; len];
            let frame_len = SharedMessage::encode(MessageKind::Binary, &payload)
                .plain_frame()
                .len();
            // Other tests allocate on other threads meanwhile and dhat counts the whole process (counts only
            // grow): try until a quiet window (the other tests end within seconds); the least is this encode's.
            let mut least = (u64::MAX, u64::MAX);
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < give_up {
                let before = dhat::HeapStats::get();
                let message = SharedMessage::encode(MessageKind::Binary, &payload);
                let after = dhat::HeapStats::get();
                assert_eq!(message.payload(), &payload[..]);
                least = least.min((
                    after.total_blocks - before.total_blocks,
                    after.total_bytes - before.total_bytes,
                ));
                if least.0 <= 1 {
                    break;
                }
            }
            let (blocks, bytes) = least;
            assert_eq!(blocks, 1, "len {len}: one block, the frame's own");
            // The frame plus the reference counts (and padding): no staging buffer the frame was copied from.
            let counts = 2 * std::mem::size_of::<usize>() as u64;
            assert!(
                (frame_len as u64 + counts..frame_len as u64 + 2 * counts).contains(&bytes),
                "len {len}: {bytes} bytes allocated for a {frame_len}-byte frame"
            );
        }
    }

    #[test]
    fn clones_share_one_frame() {
        let message = SharedMessage::encode(MessageKind::Text, b"hello");
        let copy = message.clone();
        assert!(Arc::ptr_eq(message.plain_frame(), copy.plain_frame()));
    }
}
