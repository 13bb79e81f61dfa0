//! A message encoded once and shared by every connection that receives it (broadcast, publish).
//!
//! Server frames are unmasked, so every receiver gets the same bytes: a [`SharedMessage`] holds one
//! reference-counted frame, and each receiving send queue takes a reference, never a copy. It is the one
//! form in which a message crosses threads (workers, `ServerHandle`) and reaches a handler's
//! `on_published`; a connection asks it for the form that connection needs (`frame_for`): the plain frame,
//! or for a connection that agreed permessage-deflate without server context takeover the compressed
//! frame (RSV1), made at most once per
//! message by the worker that encodes it (`encode_compressed`), when compression is on, the message is at
//! or above the threshold and compressing shrinks it. Encoding is one allocation per form, the frame's own,
//! and one copy of the payload (or of its compressed form). Must never be re-encoded, compressed or copied
//! per receiver. A topic publication also carries, made once per node when first needed, its forms for
//! `ringws.v1` clients (the envelope) and for event streams (`GET /sse`).

use std::sync::{Arc, OnceLock};

use crate::channels::{Position, Stored};
use crate::protocol::deflate::{Compressors, Negotiated};
use crate::protocol::frame::{encode_header, OpCode};
use crate::protocol::MessageKind;

/// RSV1 in a frame's first byte: permessage-deflate's "compressed" bit.
const RSV1: u8 = 0x40;

/// One message, framed once, cheap to clone (a reference count).
#[derive(Debug, Clone)]
pub struct SharedMessage {
    kind: MessageKind,
    /// Bytes of the frame header before the payload in `plain`.
    header_len: u8,
    /// The window (bits) `compressed` was made with: only a connection whose agreement allows at least this
    /// window may get it.
    compressed_window_bits: u8,
    plain: Arc<[u8]>,
    /// The frame with its payload compressed (RSV1 set), when it was made and is smaller.
    compressed: Option<Arc<[u8]>>,
    /// What a message published on a topic carries besides its frames (`None` for a broadcast).
    publication: Option<Arc<Publication>>,
}

/// A topic publication's place and its other form: its offset in the topic's history (when the node keeps
/// history), whether it is a presence event rather than a publication, and the frame that carries it to
/// clients of the structured protocol (topic, offset, epoch, data), made at most once per node by the
/// first worker that needs it ([`SharedMessage::envelope`]).
#[derive(Debug, Default)]
struct Publication {
    position: Option<Position>,
    event: bool,
    envelope: OnceLock<SharedMessage>,
    /// Its event-stream form (`GET /sse`: an `id:` line with its position, a `data:` line with the
    /// envelope), made at most once per node like the envelope ([`SharedMessage::event_stream_form`]).
    event_stream: OnceLock<SharedMessage>,
}

/// One frame in its final allocation: the header, then the payload copied once (an exact-size iterator is
/// collected straight into the `Arc`'s own block; a `Vec` or `Box` would be a second block, copied again
/// into the `Arc`; the zero fill is a memset of memory the copy then writes, the safe way to get a unique
/// `Arc<[u8]>`).
fn frame(header: &[u8], payload: &[u8]) -> Arc<[u8]> {
    let mut frame: Arc<[u8]> = std::iter::repeat_n(0u8, header.len() + payload.len()).collect();
    let bytes = Arc::make_mut(&mut frame); // unique: no copy is made
    bytes[..header.len()].copy_from_slice(header);
    bytes[header.len()..].copy_from_slice(payload);
    frame
}

fn opcode(kind: MessageKind) -> OpCode {
    match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    }
}

impl SharedMessage {
    /// Frames `payload` as one unfragmented, unmasked server frame of `kind`.
    pub fn encode(kind: MessageKind, payload: &[u8]) -> SharedMessage {
        let mut header = [0u8; 14];
        let header_len = encode_header(&mut header, true, opcode(kind), payload.len() as u64, None);
        SharedMessage {
            kind,
            header_len: header_len as u8,
            compressed_window_bits: 0,
            plain: frame(&header[..header_len], payload),
            compressed: None,
            publication: None,
        }
    }

    /// Bytes for an event stream (`GET /sse`: Server-Sent Events, whole events), shared like a frame:
    /// not a WebSocket frame, and only ever queued to event-stream connections (its `payload` is the
    /// bytes themselves).
    pub fn stream(bytes: &[u8]) -> SharedMessage {
        SharedMessage {
            kind: MessageKind::Text,
            header_len: 0,
            compressed_window_bits: 0,
            plain: frame(&[], bytes),
            compressed: None,
            publication: None,
        }
    }

    /// The message as a publication on a topic (without a position): it can then carry an envelope.
    pub fn into_publication(mut self) -> SharedMessage {
        self.publication = Some(Arc::default());
        self
    }

    /// The message as the publication at `position` of its topic's history.
    pub fn with_position(mut self, position: Position) -> SharedMessage {
        self.publication = Some(Arc::new(Publication {
            position: Some(position),
            ..Publication::default()
        }));
        self
    }

    /// The message as a presence event (join or leave) on a topic: delivered to the clients that asked
    /// for those, never stored in history.
    pub fn into_event(mut self) -> SharedMessage {
        self.publication = Some(Arc::new(Publication {
            event: true,
            ..Publication::default()
        }));
        self
    }

    /// The publication's offset and epoch in its topic's history, if the node keeps history.
    pub fn position(&self) -> Option<Position> {
        self.publication.as_ref().and_then(|p| p.position)
    }

    /// Whether this is a presence event ([`SharedMessage::into_event`]).
    pub fn is_event(&self) -> bool {
        self.publication.as_ref().is_some_and(|p| p.event)
    }

    /// The publication's envelope (its form for structured-protocol clients), made by `make` the first time
    /// any worker asks and shared from then on; `None` for a message that is not a topic publication.
    pub fn envelope(&self, make: impl FnOnce() -> SharedMessage) -> Option<&SharedMessage> {
        self.publication
            .as_ref()
            .map(|publication| publication.envelope.get_or_init(make))
    }

    /// The publication's event-stream form ([`SharedMessage::stream`] bytes), made by `make` the first
    /// time any worker asks and shared from then on; `None` for a message that is not a topic publication.
    pub fn event_stream_form(
        &self,
        make: impl FnOnce() -> SharedMessage,
    ) -> Option<&SharedMessage> {
        self.publication
            .as_ref()
            .map(|publication| publication.event_stream.get_or_init(make))
    }

    /// `encode`, plus the compressed frame for connections that agreed permessage-deflate, made once here
    /// with `compressors` at `window_bits` (none when compressing does not shrink the payload).
    pub fn encode_compressed(
        kind: MessageKind,
        payload: &[u8],
        compressors: &mut Compressors,
        window_bits: u8,
    ) -> SharedMessage {
        let mut message = SharedMessage::encode(kind, payload);
        if compressors.compress_window(window_bits, payload) {
            let compressed = &compressors.out;
            let mut header = [0u8; 14];
            let header_len = encode_header(
                &mut header,
                true,
                opcode(kind),
                compressed.len() as u64,
                None,
            );
            header[0] |= RSV1;
            message.compressed = Some(frame(&header[..header_len], compressed));
            message.compressed_window_bits = window_bits;
        }
        message
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

    /// The compressed frame (RSV1 set), if one was made.
    pub fn compressed_frame(&self) -> Option<&Arc<[u8]>> {
        self.compressed.as_ref()
    }

    /// The frame for a connection with this permessage-deflate agreement: the compressed one when there is
    /// one and the connection's agreed window takes it, else the plain one. A connection whose server
    /// context is kept (`--compression context`) always gets the plain one: the shared compressed frame is
    /// not in that connection's compressor's window, so once its client inflated it the next message
    /// compressed for that connection would refer to the wrong bytes (plain also costs nothing per
    /// receiver, where compressing per connection would).
    pub fn frame_for(&self, negotiated: Negotiated) -> &Arc<[u8]> {
        match &self.compressed {
            Some(compressed)
                if negotiated.is_on()
                    && !negotiated.server_context_takeover()
                    && negotiated.compress_window_bits() >= self.compressed_window_bits =>
            {
                compressed
            }
            _ => &self.plain,
        }
    }
}

impl Stored for SharedMessage {
    /// The frames it holds (plain, compressed, and the envelope once made, estimated as the plain
    /// frame's size plus the envelope's fields).
    fn stored_bytes(&self) -> usize {
        let frames = self.plain.len() + self.compressed.as_ref().map_or(0, |c| c.len());
        frames
            + self
                .publication
                .as_ref()
                .map_or(0, |_| self.plain.len() + 96)
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
    fn the_compressed_frame_goes_to_connections_whose_window_takes_it() {
        use crate::protocol::deflate::{Inflater, TAIL};
        let payload = "{\"event\":\"tick\",\"price\":101.5},".repeat(40);
        let mut compressors = Compressors::new(6);
        let message = SharedMessage::encode_compressed(
            MessageKind::Text,
            payload.as_bytes(),
            &mut compressors,
            12,
        );
        let compressed = message.compressed_frame().expect("JSON shrinks");
        let (header, used) = decode_header(compressed).unwrap().unwrap();
        assert_eq!((header.rsv, header.fin), (0b100, true));
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        inflater
            .inflate(&compressed[used..], &mut out, 1 << 20)
            .unwrap();
        inflater.inflate(&TAIL, &mut out, 1 << 20).unwrap();
        assert_eq!(out, payload.as_bytes());
        assert_eq!(message.payload(), payload.as_bytes());
        // Plain for a connection without the extension, or whose agreed window is narrower.
        let agreed = |bits: u8| {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            let config = crate::protocol::deflate::DeflateConfig::default();
            Negotiated::from_agreed(
                &crate::protocol::deflate::negotiate([offer.as_bytes()], &config).unwrap(),
            )
        };
        assert!(Arc::ptr_eq(
            message.frame_for(Negotiated::NONE),
            message.plain_frame()
        ));
        assert!(Arc::ptr_eq(
            message.frame_for(agreed(11)),
            message.plain_frame()
        ));
        assert!(Arc::ptr_eq(message.frame_for(agreed(12)), compressed));
        assert!(Arc::ptr_eq(message.frame_for(agreed(15)), compressed));
        // Plain for a connection that keeps the server's context, whatever its window.
        let context = crate::protocol::deflate::DeflateConfig {
            mode: crate::protocol::deflate::DeflateMode::Context,
            context_window_bits: 15,
            ..Default::default()
        };
        let keeps = Negotiated::from_agreed(
            &crate::protocol::deflate::negotiate([b"permessage-deflate".as_slice()], &context)
                .unwrap(),
        );
        assert!(keeps.server_context_takeover());
        assert_eq!(keeps.compress_window_bits(), 15);
        assert!(Arc::ptr_eq(message.frame_for(keeps), message.plain_frame()));
        // A payload that does not shrink has no compressed form.
        let noise = crate::protocol::deflate::test_noise(300);
        let message =
            SharedMessage::encode_compressed(MessageKind::Binary, &noise, &mut compressors, 15);
        assert!(message.compressed_frame().is_none());
        assert!(Arc::ptr_eq(
            message.frame_for(agreed(15)),
            message.plain_frame()
        ));
    }

    #[test]
    fn the_event_stream_form_is_made_once_and_shared() {
        let message = SharedMessage::encode(MessageKind::Text, b"hi").into_publication();
        let mut made = 0;
        for _ in 0..3 {
            let form = message
                .event_stream_form(|| {
                    made += 1;
                    SharedMessage::stream(b"data: x\n\n")
                })
                .expect("a publication has one");
            assert_eq!(form.payload(), b"data: x\n\n");
            assert_eq!(&form.plain_frame()[..], b"data: x\n\n");
        }
        assert_eq!(made, 1);
        let broadcast = SharedMessage::encode(MessageKind::Text, b"hi");
        assert!(broadcast
            .event_stream_form(|| SharedMessage::stream(b""))
            .is_none());
    }

    #[test]
    fn clones_share_one_frame() {
        let message = SharedMessage::encode(MessageKind::Text, b"hello");
        let copy = message.clone();
        assert!(Arc::ptr_eq(message.plain_frame(), copy.plain_frame()));
    }
}
