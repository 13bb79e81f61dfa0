//! The permessage-deflate codec (RFC 7692 section 7.2), without I/O: raw deflate on flate2's zlib-rs backend.
//!
//! It owns `Inflater` (a message's compressed payload fed piece by piece as frames and receives arrive, the
//! `00 00 ff ff` tail appended at its end, the output limit checked *while* inflating so that a
//! decompression bomb never allocates past `max_message_size`), `Compressor` (a whole message in, raw
//! deflate with a sync flush, the tail stripped, `false` when the result is not smaller), `Negotiated` (an
//! agreement in one byte, kept by the connection's reader) and `InflatePool` (the worker's inflaters and its
//! output scratch, lent to one feed at a time).
//!
//! Default mode (no context takeover either way): one compressor per window size and one inflater per
//! worker, reset per message; a compressed message that spans receives holds an inflater from the pool only
//! while it is in progress, so an idle connection owns nothing. Context mode (`--compression context`, the
//! server's context only): each such connection's own `ContextCompressor` (`zlib_ctx.rs`), written into the
//! worker's output buffer here (`Compressors::compress_context`).
//!
//! Never panics on any input, never logs, never reads a clock; allocates only the output it is asked for
//! (bounded by the caller's limit) and, on first use, the zlib state.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{Agreed, DeflateParams};

/// The sync flush's tail: removed by the sender, appended by the receiver (RFC 7692 section 7.2.1, 7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What an inflater in progress costs a worker (zlib-rs state and its 32 KiB window: 47.7 KB measured by
/// `benches/deflate.rs`), counted against the assembly memory budget while a connection holds one.
pub const INFLATER_STATE_BYTES: usize = 48 * 1024;

/// Window of every inflater: a 15-bit inflater reads streams made with any window of 9 to 15 bits.
const INFLATE_WINDOW_BITS: u8 = 15;

/// Spare inflaters a pool keeps (more are dropped when given back).
const POOL_SPARES: usize = 8;

/// Output scratch kept between messages; above this the scratch is given back after the message.
const SCRATCH_KEEP: usize = 64 * 1024;

/// First output block reserved for a message (grown by doubling, never past the limit).
const FIRST_OUTPUT: usize = 4096;

/// Why inflating a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InflateError {
    /// The inflated message would pass the size limit (close 1009).
    TooBig,
    /// The compressed data is not a valid raw deflate stream (close 1007).
    Corrupt,
}

/// permessage-deflate as agreed for one connection, in one byte (0: not negotiated). Bit 7: on; bits 0-3:
/// the compressor's window (9..=15 bits); bit 4: the server keeps its context; bit 5: the client keeps its
/// context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Negotiated(u8);

impl Negotiated {
    /// No permessage-deflate on this connection.
    pub const NONE: Negotiated = Negotiated(0);
    const ON: u8 = 0x80;
    const SERVER_CONTEXT: u8 = 0x10;
    const CLIENT_CONTEXT: u8 = 0x20;

    /// The compact form of an agreement.
    pub fn from_agreed(agreed: &Agreed) -> Negotiated {
        let mut bits = Self::ON | (agreed.compress_window_bits().clamp(9, 15) & 0x0f);
        if agreed.server_context_takeover() {
            bits |= Self::SERVER_CONTEXT;
        }
        if agreed.client_context_takeover() {
            bits |= Self::CLIENT_CONTEXT;
        }
        Negotiated(bits)
    }

    /// Whether permessage-deflate was agreed (RSV1 then marks a compressed message).
    #[inline]
    pub fn is_on(self) -> bool {
        self.0 & Self::ON != 0
    }

    /// The window of the server's compressor for this connection (9..=15 bits).
    pub fn compress_window_bits(self) -> u8 {
        (self.0 & 0x0f).clamp(9, 15)
    }

    /// Whether the server's compressor keeps its context between messages.
    pub fn server_context_takeover(self) -> bool {
        self.0 & Self::SERVER_CONTEXT != 0
    }

    /// Whether the client keeps its context (the server's inflater must keep its window).
    pub fn client_context_takeover(self) -> bool {
        self.0 & Self::CLIENT_CONTEXT != 0
    }

    /// The agreement a client reads from the server's answer (the parameters of its one permessage-deflate
    /// element): the server's window is `server_max_window_bits` when given, else 15.
    pub fn from_answer(answer: &DeflateParams) -> Negotiated {
        let mut bits = Self::ON | (answer.server_max_window_bits.unwrap_or(15).clamp(9, 15) & 0x0f);
        if !answer.server_no_context_takeover {
            bits |= Self::SERVER_CONTEXT;
        }
        if !answer.client_no_context_takeover {
            bits |= Self::CLIENT_CONTEXT;
        }
        Negotiated(bits)
    }
}

/// A raw-deflate inflater for one message at a time.
pub struct Inflater {
    raw: Decompress,
    /// The stream had a final block (BFINAL): what follows it in the message is ignored.
    ended: bool,
    /// `finish` ran: the message is complete.
    finished: bool,
    /// `total_in` and `total_out` when the current message began (not 0 only for an inflater kept between
    /// messages: the peer's context takeover).
    message_start: (u64, u64),
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("total_in", &self.raw.total_in())
            .field("total_out", &self.raw.total_out())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    /// An inflater with a 15-bit window: it reads a stream made with any window the client may use.
    pub fn new() -> Inflater {
        Inflater {
            raw: Decompress::new_with_window_bits(false, INFLATE_WINDOW_BITS),
            ended: false,
            finished: false,
            message_start: (0, 0),
        }
    }

    /// Inflates one piece of a message's compressed payload, appending to `out` (which holds the message's
    /// output so far). `out` never grows past `limit` bytes of length or capacity beyond `limit`: output that
    /// would pass it is `TooBig`, found while inflating.
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        while !input.is_empty() && !self.ended {
            if out.len() >= out.capacity() {
                if out.len() >= limit {
                    // No room is left: any further output is over the limit. Probe with a byte on the stack.
                    let mut probe = [0u8; 1];
                    let (consumed, produced, status) = self.step(input, &mut probe)?;
                    if produced > 0 {
                        return Err(InflateError::TooBig);
                    }
                    input = &input[consumed..];
                    if status == Status::StreamEnd {
                        self.ended = true;
                    } else if consumed == 0 {
                        // No progress without output room and nothing produced: the input is spent.
                        return Ok(());
                    }
                    continue;
                }
                let grow = out.capacity().max(FIRST_OUTPUT).min(limit - out.len());
                out.reserve_exact(grow);
            }
            let (before_in, before_out) = (self.raw.total_in(), self.raw.total_out());
            let status = self
                .raw
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|_| InflateError::Corrupt)?;
            let consumed = (self.raw.total_in() - before_in) as usize;
            let produced = (self.raw.total_out() - before_out) as usize;
            input = &input[consumed..];
            if status == Status::StreamEnd {
                self.ended = true;
            } else if consumed == 0 && produced == 0 && out.len() < out.capacity() {
                // zlib wants more input than this piece holds (it keeps the partial bits itself).
                return Ok(());
            }
        }
        Ok(())
    }

    /// Ends a message: inflates the `00 00 ff ff` tail the sender removed (RFC 7692 section 7.2.2).
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        self.inflate(&TAIL, out, limit)?;
        self.finished = true;
        Ok(())
    }

    /// Ready for the next message (no context takeover).
    pub fn reset(&mut self) {
        self.raw.reset(false);
        self.ended = false;
        self.finished = false;
        self.message_start = (0, 0);
    }

    /// Ready for the next message of a peer that keeps its context (context takeover): the window stays.
    /// A stream the peer ended (a final block) has no window to continue from: that one is reset.
    pub fn next_message(&mut self) {
        if self.ended {
            self.reset();
        } else {
            self.finished = false;
            self.message_start = (self.raw.total_in(), self.raw.total_out());
        }
    }

    /// (compressed bytes without the tail, inflated bytes) of the message that `finish` completed.
    fn message_counts(&self) -> (u64, u64) {
        let (start_in, start_out) = self.message_start;
        let compressed = (self.raw.total_in() - start_in).saturating_sub(TAIL.len() as u64);
        (compressed, self.raw.total_out() - start_out)
    }

    /// One call into zlib with a slice for output: (input consumed, output produced, status).
    fn step(
        &mut self,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(usize, usize, Status), InflateError> {
        let (before_in, before_out) = (self.raw.total_in(), self.raw.total_out());
        let status = self
            .raw
            .decompress(input, output, FlushDecompress::None)
            .map_err(|_| InflateError::Corrupt)?;
        Ok((
            (self.raw.total_in() - before_in) as usize,
            (self.raw.total_out() - before_out) as usize,
            status,
        ))
    }
}

/// A raw-deflate compressor: a whole message in, its permessage-deflate payload out.
pub struct Compressor {
    raw: Compress,
    /// Reset after each message (no context takeover).
    reset_per_message: bool,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("reset_per_message", &self.reset_per_message)
            .finish()
    }
}

impl Compressor {
    /// A compressor at `level` (0..=9, clamped) with a window of `window_bits` (9..=15, clamped); without
    /// context takeover it is reset after every message.
    pub fn new(level: u8, window_bits: u8, context_takeover: bool) -> Compressor {
        Compressor {
            raw: Compress::new_with_window_bits(
                Compression::new(level.min(9).into()),
                false,
                window_bits.clamp(9, 15),
            ),
            reset_per_message: !context_takeover,
        }
    }

    /// Compresses `input` as one message, appending its payload (sync flush, tail removed) to `out`.
    /// Returns `false`, with `out` as it was, when the payload would not be smaller than `input` (the
    /// message then goes plain).
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        // Room for a payload as long as the input plus the tail: a longer one is not worth sending, and
        // zlib writes no further than the spare capacity.
        out.reserve(input.len() + TAIL.len());
        let before_in = self.raw.total_in();
        let status = self.raw.compress_vec(input, out, FlushCompress::Sync);
        let consumed = (self.raw.total_in() - before_in) as usize;
        // Output room left over means the flush completed.
        let flushed = status.is_ok()
            && consumed == input.len()
            && out.len() < out.capacity()
            && out[start..].ends_with(&TAIL);
        let smaller = flushed && out.len() - start - TAIL.len() < input.len();
        // A message sent plain must not stay in the context either (the peer's inflater never saw it).
        if self.reset_per_message || !smaller {
            self.raw.reset();
        }
        if smaller {
            out.truncate(out.len() - TAIL.len());
        } else {
            out.truncate(start);
        }
        smaller
    }
}

/// The worker's inflating resources, lent to one feed of one connection at a time: the inflater for
/// messages that complete within a feed, spares for messages that span receives (held by their connection
/// only while in progress), and the output scratch of a message that completes within a feed.
#[derive(Debug, Default)]
pub struct InflatePool {
    current: Option<Box<Inflater>>,
    // Boxed like the one a connection holds: lending one moves a pointer.
    #[allow(clippy::vec_box)]
    spares: Vec<Box<Inflater>>,
    /// Output of the compressed message in progress within this feed (kept between messages up to
    /// `SCRATCH_KEEP` bytes of capacity).
    pub scratch: Vec<u8>,
    /// Messages inflated whole, their compressed bytes (without the tail) and their inflated bytes, since
    /// the owner last took these counts (`take_counts`).
    counts: (u64, u64, u64),
}

impl InflatePool {
    /// An inflater ready for a new message.
    pub fn take(&mut self) -> Box<Inflater> {
        self.current
            .take()
            .or_else(|| self.spares.pop())
            .unwrap_or_default()
    }

    /// Gives back an inflater whose message ended (or was dropped); it is reset here.
    pub fn give(&mut self, mut inflater: Box<Inflater>) {
        self.count(&inflater);
        inflater.reset();
        if self.current.is_none() {
            self.current = Some(inflater);
        } else if self.spares.len() < POOL_SPARES {
            self.spares.push(inflater);
        }
    }

    /// Counts the message an inflater kept by its connection (the peer's context takeover) just finished,
    /// and readies it for the next one without losing its window.
    pub fn next_message(&mut self, inflater: &mut Inflater) {
        self.count(inflater);
        inflater.next_message();
    }

    fn count(&mut self, inflater: &Inflater) {
        if inflater.finished {
            let (compressed, inflated) = inflater.message_counts();
            self.counts.0 += 1;
            self.counts.1 += compressed;
            self.counts.2 += inflated;
        }
    }

    /// (messages, compressed bytes, inflated bytes) of the messages inflated whole since the last call.
    pub fn take_counts(&mut self) -> (u64, u64, u64) {
        std::mem::take(&mut self.counts)
    }

    /// After a message's output left the scratch: clear it, and give back a large one.
    pub fn clear_scratch(&mut self) {
        self.scratch.clear();
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
    }
}

/// The worker's compressors: one per window size actually agreed, made on first use, reset per message.
#[derive(Debug)]
pub struct Compressors {
    level: u8,
    by_window: [Option<Box<Compressor>>; 7],
    /// The last compressed payload (reused between messages).
    pub out: Vec<u8>,
}

impl Compressors {
    pub fn new(level: u8) -> Compressors {
        Compressors {
            level,
            by_window: Default::default(),
            out: Vec::new(),
        }
    }

    /// Compresses `payload` for a connection that agreed `negotiated` into `self.out` (replacing it).
    /// `false`: send it plain (not smaller).
    pub fn compress(&mut self, negotiated: Negotiated, payload: &[u8]) -> bool {
        self.compress_window(negotiated.compress_window_bits(), payload)
    }

    /// Compresses `payload` with a window of `bits` (9..=15, clamped) into `self.out` (replacing it).
    /// `false`: send it plain (not smaller).
    pub fn compress_window(&mut self, bits: u8, payload: &[u8]) -> bool {
        let bits = bits.clamp(9, 15);
        let slot = &mut self.by_window[(bits - 9) as usize];
        let level = self.level;
        let compressor = slot.get_or_insert_with(|| Box::new(Compressor::new(level, bits, false)));
        self.out.clear();
        if self.out.capacity() > SCRATCH_KEEP {
            self.out = Vec::new();
        }
        compressor.compress(payload, &mut self.out)
    }

    /// Compresses `payload` with a connection's own `compressor` (context takeover) into `self.out`
    /// (replacing it). `false`: send it plain (not smaller).
    pub fn compress_context(
        &mut self,
        compressor: &mut super::ContextCompressor,
        payload: &[u8],
    ) -> bool {
        self.out.clear();
        if self.out.capacity() > SCRATCH_KEEP {
            self.out = Vec::new();
        }
        compressor.compress(payload, &mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Inflates a whole message in one piece.
    fn inflate_all(payload: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        inflater.inflate(payload, &mut out, limit)?;
        inflater.finish(&mut out, limit)?;
        Ok(out)
    }

    fn compress(level: u8, bits: u8, input: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        Compressor::new(level, bits, false)
            .compress(input, &mut out)
            .then_some(out)
    }

    fn json(len: usize) -> Vec<u8> {
        let mut text = String::new();
        let mut i = 0u32;
        while text.len() < len {
            text.push_str(&format!(
                "{{\"id\":{i},\"user\":\"u{}\",\"text\":\"hello number {}\"}},",
                i % 7,
                i * 31 % 1000
            ));
            i += 1;
        }
        text.truncate(len);
        text.into_bytes()
    }

    #[test]
    fn rfc_7692_examples_inflate_to_hello() {
        // Section 7.2.3.1 (also fragmented: the pieces arrive apart), 7.2.3.3 (a stored block), 7.2.3.4
        // (BFINAL set: the tail after the final block is ignored), 7.2.3.5 (two blocks).
        let examples: [&[u8]; 4] = [
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            &[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
            &[
                0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
            ],
        ];
        for example in examples {
            assert_eq!(inflate_all(example, 100).unwrap(), b"Hello", "{example:x?}");
            for cut in 0..=example.len() {
                let mut inflater = Inflater::new();
                let mut out = Vec::new();
                inflater.inflate(&example[..cut], &mut out, 100).unwrap();
                inflater.inflate(&example[cut..], &mut out, 100).unwrap();
                inflater.finish(&mut out, 100).unwrap();
                assert_eq!(out, b"Hello", "{example:x?} cut at {cut}");
            }
        }
        // Our compressor writes the example's bytes, and finds them no smaller than "Hello".
        let mut raw = Compress::new_with_window_bits(Compression::new(6), false, 15);
        let mut out = Vec::with_capacity(64);
        raw.compress_vec(b"Hello", &mut out, FlushCompress::Sync)
            .unwrap();
        assert_eq!(
            out,
            [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff]
        );
        assert_eq!(compress(6, 15, b"Hello"), None);
    }

    #[test]
    fn empty_message() {
        // RFC 7692 section 7.2.3.6: an empty message compresses to a single 0x00 byte.
        assert_eq!(inflate_all(&[0x00], 10).unwrap(), b"");
        assert_eq!(inflate_all(&[], 10).unwrap(), b"");
        // Not smaller than nothing: sent plain.
        assert_eq!(compress(6, 15, b""), None);
    }

    #[test]
    fn json_round_trips_and_shrinks() {
        for len in [128, 1024, 16 * 1024, 128 * 1024] {
            let input = json(len);
            let payload = compress(6, 15, &input).expect("JSON shrinks");
            assert!(
                payload.len() < input.len() * 3 / 4,
                "{len}: {}",
                payload.len()
            );
            assert!(!payload.ends_with(&TAIL));
            assert_eq!(inflate_all(&payload, len).unwrap(), input);
        }
    }

    #[test]
    fn incompressible_data_goes_plain() {
        let noise = super::super::test_noise(4096);
        let mut out = b"kept".to_vec();
        let mut compressor = Compressor::new(6, 15, false);
        assert!(!compressor.compress(&noise, &mut out));
        assert_eq!(out, b"kept", "output restored");
        // The compressor is usable afterwards.
        assert!(compressor.compress(&json(1000), &mut out));
        assert_eq!(inflate_all(&out[4..], 1000).unwrap(), json(1000));
    }

    #[test]
    fn window_bits_9_and_15() {
        let input = json(64 * 1024);
        for bits in [9, 15] {
            let payload = compress(6, bits, &input).unwrap();
            // The per-worker inflater (15 bits) reads both.
            assert_eq!(inflate_all(&payload, input.len()).unwrap(), input);
            // A 9-bit stream never refers back further than 512 bytes: a 9-bit inflater reads it too.
            let mut narrow = Decompress::new_with_window_bits(false, bits);
            let mut out = Vec::with_capacity(input.len() + 16);
            narrow
                .decompress_vec(&payload, &mut out, FlushDecompress::Sync)
                .unwrap();
            narrow
                .decompress_vec(&TAIL, &mut out, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(out, input, "{bits} bits");
        }
        // A negotiated window reaches the compressor.
        let mut compressors = Compressors::new(6);
        let agreed = Negotiated(Negotiated::ON | 9);
        assert_eq!(agreed.compress_window_bits(), 9);
        assert!(compressors.compress(agreed, &input));
        assert_eq!(compressors.out, compress(6, 9, &input).unwrap());
    }

    #[test]
    fn bomb_fails_without_allocating_past_the_limit() {
        // 1 MiB of zeros compresses to about 1 KiB.
        let zeros = vec![0u8; 1 << 20];
        let bomb = compress(9, 15, &zeros).unwrap();
        assert!(bomb.len() <= 1100, "{}", bomb.len());
        for limit in [0, 1, 1000, 4096, 64 * 1024, (1 << 20) - 1] {
            let mut inflater = Inflater::new();
            let mut out = Vec::new();
            let result = inflater
                .inflate(&bomb, &mut out, limit)
                .and_then(|()| inflater.finish(&mut out, limit));
            assert_eq!(result, Err(InflateError::TooBig), "limit {limit}");
            assert!(
                out.capacity() <= limit,
                "limit {limit}: capacity {}",
                out.capacity()
            );
        }
        // Exactly at the limit is fine, fed a byte at a time.
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        for byte in bomb.chunks(1) {
            inflater.inflate(byte, &mut out, 1 << 20).unwrap();
        }
        inflater.finish(&mut out, 1 << 20).unwrap();
        assert_eq!(out.len(), 1 << 20);
        assert!(out.capacity() <= 1 << 20);
    }

    #[test]
    fn corrupt_streams_are_errors() {
        // Block type 3 is reserved; a stored block whose NLEN does not match its LEN; a distance too far back.
        let cases: [&[u8]; 3] = [
            &[0xff, 0xff, 0xff],
            &[0x00, 0x05, 0x00, 0x00, 0x00, 0x48],
            &[0x63, 0x00, 0x42, 0x00],
        ];
        for case in cases {
            assert_eq!(
                inflate_all(case, 1000),
                Err(InflateError::Corrupt),
                "{case:x?}"
            );
        }
        // The inflater serves the next message after a reset.
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        assert!(inflater.inflate(&[0xff, 0xff], &mut out, 10).is_err());
        inflater.reset();
        out.clear();
        inflater
            .inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 10)
            .unwrap();
        inflater.finish(&mut out, 10).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn pool_lends_and_takes_back() {
        let mut pool = InflatePool::default();
        let a = pool.take();
        let b = pool.take();
        pool.give(a);
        pool.give(b);
        assert!(pool.current.is_some());
        assert_eq!(pool.spares.len(), 1);
        for _ in 0..20 {
            let taken: Vec<_> = (0..20).map(|_| pool.take()).collect();
            for inflater in taken {
                pool.give(inflater);
            }
        }
        assert!(pool.spares.len() <= POOL_SPARES);
        pool.scratch.reserve(SCRATCH_KEEP + 1);
        pool.clear_scratch();
        assert_eq!(pool.scratch.capacity(), 0);
    }

    #[test]
    fn negotiated_is_one_byte() {
        assert_eq!(std::mem::size_of::<Negotiated>(), 1);
        assert!(!Negotiated::NONE.is_on());
        let offer = super::super::negotiate(
            [b"permessage-deflate; server_max_window_bits=10".as_slice()],
            &super::super::DeflateConfig::default(),
        )
        .expect("agreed");
        let negotiated = Negotiated::from_agreed(&offer);
        assert!(negotiated.is_on());
        assert_eq!(negotiated.compress_window_bits(), 10);
        assert!(!negotiated.server_context_takeover());
        assert!(!negotiated.client_context_takeover());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip_in_any_pieces(
            input in prop::collection::vec(prop_oneof![Just(b'a'), Just(b'{'), any::<u8>()], 0..4000),
            cuts in prop::collection::vec(0usize..4000, 0..6),
            bits in 9u8..=15,
            level in 0u8..=9,
        ) {
            let mut out = Vec::new();
            if Compressor::new(level, bits, false).compress(&input, &mut out) {
                prop_assert!(out.len() < input.len());
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (out.len() + 1)).collect();
                cuts.sort_unstable();
                let mut inflater = Inflater::new();
                let mut got = Vec::new();
                let mut from = 0;
                for cut in cuts.into_iter().chain([out.len()]) {
                    inflater.inflate(&out[from..cut], &mut got, input.len()).unwrap();
                    from = cut;
                }
                inflater.finish(&mut got, input.len()).unwrap();
                prop_assert_eq!(got, input);
            }
        }
    }
}
