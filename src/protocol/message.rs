//! Per-connection receive state machine: bytes -> frames -> messages and control events (RFC 6455 sections
//! 5.2-5.6, 7 and 8).
//!
//! Owns `MessageReader` and the rules that depend on the connection: masking by role, RSV bits (RSV1 only on
//! the first frame of a data message and only with permessage-deflate agreed, RFC 7692 section 6), fragmentation
//! order, control frames between fragments, close payload validation, fail-fast UTF-8 of text messages and the
//! frame/message size limits (checked from the header, before any byte is buffered; for a compressed message,
//! on the inflated size while inflating). Every violation is a `ProtocolError` carrying the close code the RFC
//! requires.
//!
//! A compressed message is inflated as its frames arrive (`feed_deflate`, with the worker's `InflatePool`): a
//! message inflated within one input goes out of the pool's scratch; one that spans inputs keeps its output
//! in the assembly buffer and its inflater in the caller's slot until it completes, so an idle reader still
//! owns nothing.
//!
//! Memory: the reader is 32 bytes on x86_64 (asserted by a test) and owns no buffer while idle: its
//! assembly buffer is boxed (`None` between messages, one null pointer).
//! A message wholly inside one input is unmasked in place in the caller's input and handed out with zero
//! copies (fragments inside one input are compacted in place). Only a message or control frame that spans
//! inputs is copied, once, into an assembly `Vec` taken on demand (sized once from the header when its last
//! frame's length is known) and freed (capacity released) when it completes; a data message's payload is
//! unmasked while it is copied there (one pass over the received bytes, `mask::extend_unmasked`). With
//! `feed_reusing` the assembly `Vec` (in its box, with [`SpareAssemblies`]) comes from the caller's
//! spares and goes back to them instead. It must never perform I/O, read a clock, log, or allocate for a
//! message that fits in one input.

use super::close::{parse_close_payload, CloseCode};
use super::deflate::{InflateError, InflatePool, Inflater, Negotiated};
use super::frame::{decode_header, FrameHeader, OpCode, MAX_HEADER_LEN};
use super::mask::{apply_mask, extend_unmasked};
use super::utf8::Utf8Validator;

pub use super::error::ProtocolError;

/// Which end of the connection this reader is: a server requires masked frames, a client unmasked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Server,
    Client,
}

/// Size limits, shared by every connection of a server (passed by reference to `feed`, not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    /// Largest accepted frame payload; a larger header fails with 1009 before its payload is read.
    pub max_frame_size: u64,
    /// Largest accepted message (sum of its fragments); exceeding it fails with 1009 as soon as a frame header
    /// announces it.
    pub max_message_size: usize,
}

impl Default for ReaderLimits {
    /// 16 MiB for both.
    fn default() -> ReaderLimits {
        ReaderLimits {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
        }
    }
}

/// The kind of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Payload is valid UTF-8 (checked).
    Text,
    Binary,
}

/// What the reader hands to the callback. Borrowed payloads are valid only during the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete message, unmasked (and for text, valid UTF-8).
    Message {
        kind: MessageKind,
        payload: &'a [u8],
    },
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// A valid close frame; afterwards the reader ignores all input.
    Close {
        code: Option<CloseCode>,
        reason: &'a str,
    },
}

#[derive(Debug, Clone, Copy)]
enum FrameState {
    /// Waiting for a header; `buf[..len]` holds the part already received.
    Header { buf: [u8; MAX_HEADER_LEN], len: u8 },
    /// Inside a frame's payload.
    Payload {
        remaining: u64,
        mask: Option<[u8; 4]>,
        phase: u8,
        opcode: OpCode,
        fin: bool,
    },
}

/// Largest message the reader reserves in one step when its size is known (see `feed`).
const RESERVE_AHEAD_MAX: u64 = 256 * 1024;

/// Largest assembly buffer `feed_reusing` keeps as a spare: room for a 64 KiB message (and its growth),
/// half of what the reader reserves ahead, so that holding a spare does not make a small message look like
/// a large one to a caller that watches `buffered_capacity`.
pub const SPARE_MAX: usize = 128 * 1024;

/// Most spare buffers `feed_reusing` keeps (so at most 4 MiB with [`SPARE_MAX`]).
pub const SPARE_COUNT: usize = 32;

const NO_HEADER: FrameState = FrameState::Header {
    buf: [0; MAX_HEADER_LEN],
    len: 0,
};

/// The assembly buffer of a message (or control frame) that spans inputs, boxed by the reader so that an
/// idle reader holds one null pointer rather than an empty `Vec`.
#[derive(Debug, Default)]
pub struct Assembly {
    buffer: Vec<u8>,
}

/// Where the caller of `feed_reusing` keeps its spare assembly buffers.
pub trait Spares {
    /// How many spares are kept.
    fn count(&self) -> usize;
    /// The last spare, as an assembly buffer (empty, with its capacity).
    fn pop(&mut self) -> Option<Box<Assembly>>;
    /// Keeps an emptied assembly buffer.
    fn push(&mut self, assembly: Box<Assembly>);
}

/// Plain buffers: each is boxed when a reader takes it and unboxed when it comes back (one small
/// allocation per assembled message).
impl Spares for Vec<Vec<u8>> {
    fn count(&self) -> usize {
        self.len()
    }
    fn pop(&mut self) -> Option<Box<Assembly>> {
        self.pop().map(|buffer| Box::new(Assembly { buffer }))
    }
    fn push(&mut self, assembly: Box<Assembly>) {
        self.push(assembly.buffer);
    }
}

/// Spares kept in the box the reader holds its buffer in, moved in and out whole: nothing is allocated or
/// freed per assembled message.
#[derive(Debug, Default)]
pub struct SpareAssemblies {
    // The boxes are the point: they move to and from the readers as they are.
    #[allow(clippy::vec_box)]
    boxes: Vec<Box<Assembly>>,
}

impl SpareAssemblies {
    pub const fn new() -> SpareAssemblies {
        SpareAssemblies { boxes: Vec::new() }
    }
}

impl Spares for SpareAssemblies {
    fn count(&self) -> usize {
        self.boxes.len()
    }
    fn pop(&mut self) -> Option<Box<Assembly>> {
        self.boxes.pop()
    }
    fn push(&mut self, assembly: Box<Assembly>) {
        self.boxes.push(assembly);
    }
}

/// `feed` and `feed_deflate` keep no spares.
const NO_SPARES: Option<&mut SpareAssemblies> = None;

/// `size_of::<MessageReader>()` on 64-bit targets, asserted by a unit test: the boxed assembly buffer (8),
/// the frame state (16), the UTF-8 state (4) and four bytes of message state and agreement.
pub const MESSAGE_READER_MAX_SIZE: usize = 32;

/// The receive state of one connection. See the module documentation for its memory behaviour.
#[derive(Debug)]
pub struct MessageReader {
    /// Assembly storage: bytes of the message in progress that arrived in earlier inputs, then
    /// `control_len` bytes of a control frame split across inputs. `None` otherwise: boxed, so that an
    /// idle reader holds one null pointer rather than an empty `Vec` (8 bytes, not 24).
    assembly: Option<Box<Assembly>>,
    frame: FrameState,
    utf8: Utf8Validator,
    /// The data message in progress, if any.
    message: Option<MessageKind>,
    /// Bytes at the end of the assembly buffer that belong to the control frame in progress.
    control_len: u8,
    /// `DONE`, `CLIENT`, `COMPRESSED` (one byte, so that the agreement below fits the reader's size).
    bits: u8,
    /// permessage-deflate as agreed at the handshake (the send side reads it too).
    deflate: Negotiated,
}

/// A close frame was received or an error returned: input is ignored from now on.
const DONE: u8 = 1 << 0;
/// The reader is a client's (`Role::Client`).
const CLIENT: u8 = 1 << 1;
/// The data message in progress is compressed (RSV1 on its first frame).
const COMPRESSED: u8 = 1 << 2;

/// What one feed of a connection that agreed permessage-deflate inflates with: the worker's pool (lent for
/// the call) and the connection's slot for the inflater of a compressed message that spans inputs (`None`
/// between messages; count `INFLATER_STATE_BYTES` while it holds one). When the peer keeps its context
/// between messages (`keep`: context takeover, for a client reading a server that agreed to it), the slot
/// keeps the inflater, window and all, from the first compressed message on.
pub struct Inflating<'a> {
    pub pool: &'a mut InflatePool,
    pub held: &'a mut Option<Box<Inflater>>,
    pub keep: bool,
}

/// Where the current control frame's payload lives during one `feed` call.
#[derive(Clone, Copy)]
enum ControlStart {
    /// Not in a control frame, or its earlier bytes are already in the assembly buffer.
    Buffered,
    /// The control frame started in this input; its payload begins here.
    Input(usize),
}

impl MessageReader {
    pub fn new(role: Role) -> MessageReader {
        MessageReader {
            assembly: None,
            frame: NO_HEADER,
            utf8: Utf8Validator::new(),
            message: None,
            control_len: 0,
            bits: if role == Role::Client { CLIENT } else { 0 },
            deflate: Negotiated::NONE,
        }
    }

    pub fn role(&self) -> Role {
        if self.bits & CLIENT != 0 {
            Role::Client
        } else {
            Role::Server
        }
    }

    /// Records the permessage-deflate agreement: from now on RSV1 marks a compressed message (fed with
    /// `feed_deflate`).
    pub fn set_deflate(&mut self, negotiated: Negotiated) {
        self.deflate = negotiated;
    }

    /// The permessage-deflate agreement (`Negotiated::NONE` without one).
    pub fn deflate(&self) -> Negotiated {
        self.deflate
    }

    /// True once a close frame was received or `feed` returned an error.
    pub fn is_closed(&self) -> bool {
        self.bits & DONE != 0
    }

    /// True while a fragmented message or a frame is incomplete (the peer owes more bytes).
    pub fn is_mid_message(&self) -> bool {
        self.message.is_some() || !matches!(self.frame, FrameState::Header { len: 0, .. })
    }

    /// Heap bytes held right now by the assembly buffer (0 between messages).
    pub fn buffered_capacity(&self) -> usize {
        self.assembly.as_ref().map_or(0, |a| a.buffer.capacity())
    }

    /// The bytes in the assembly buffer (empty without one).
    fn assembled(&self) -> &[u8] {
        self.assembly
            .as_deref()
            .map_or(&[], |a| a.buffer.as_slice())
    }

    /// The assembly buffer, boxed on first use.
    fn assembly_mut(&mut self) -> &mut Vec<u8> {
        &mut self.assembly.get_or_insert_with(Box::default).buffer
    }

    /// Appends to the assembly buffer; nothing to append takes no box.
    fn assemble(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.assembly_mut().extend_from_slice(bytes);
        }
    }

    /// Consumes all of `input`: unmasks payload in place, calls `on_event` for each complete message and
    /// control frame in order, and keeps any incomplete header or message for the next call. Results are the
    /// same however the byte stream is split into inputs. On `Err`, send a close frame with
    /// `err.close_code()` and stop reading: the reader ignores further input, as it does after `Event::Close`.
    /// A frame with RSV1 set is `ProtocolError::ReservedBits` here, agreement or not: compressed messages
    /// need `feed_deflate`.
    pub fn feed<F>(
        &mut self,
        input: &mut [u8],
        limits: &ReaderLimits,
        mut on_event: F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        self.unless_closed(|reader| {
            reader.feed_inner(input, limits, None, false, NO_SPARES, &mut on_event)
        })
    }

    /// `feed` with the caller's spare assembly buffers (shared by the readers of one thread, say): a message
    /// that needs assembling takes the last of `spares` instead of allocating, and the assembly buffer of a
    /// message that completes joins `spares` (cleared; kept while `spares` holds fewer than
    /// [`SPARE_COUNT`] and it is at most [`SPARE_MAX`] bytes, freed otherwise), so the pages of large
    /// messages are reused, not faulted in afresh for each. Between messages the reader still owns nothing.
    /// With [`SpareAssemblies`] a spare moves in its box, so assembling a message allocates nothing once
    /// a spare is there; with a `Vec<Vec<u8>>` each one takes a small box.
    pub fn feed_reusing<F, S: Spares>(
        &mut self,
        input: &mut [u8],
        limits: &ReaderLimits,
        spares: &mut S,
        mut on_event: F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        self.unless_closed(|reader| {
            reader.feed_inner(input, limits, None, false, Some(spares), &mut on_event)
        })
    }

    /// Runs `feed` unless the reader is closed; an error closes it (and frees its buffer).
    fn unless_closed(
        &mut self,
        feed: impl FnOnce(&mut Self) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        if self.is_closed() {
            return Ok(());
        }
        let result = feed(self);
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// `feed` for a connection that agreed permessage-deflate: compressed messages (RSV1 on their first
    /// frame) are inflated piece by piece as they arrive, text validated as it is inflated, and delivered as
    /// `Event::Message` exactly like uncompressed ones. The inflated size is what `max_message_size` bounds
    /// (1009, found while inflating); a corrupt stream is `InvalidCompressedData` (1007). `inflating.held`
    /// holds an inflater from `inflating.pool` after the call only while a compressed message is in progress.
    pub fn feed_deflate<F>(
        &mut self,
        input: &mut [u8],
        limits: &ReaderLimits,
        inflating: Inflating<'_>,
        mut on_event: F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        if self.is_closed() {
            return Ok(());
        }
        let Inflating { pool, held, keep } = inflating;
        let inflating = Some((&mut *pool, &mut *held));
        let result = self.feed_inner(input, limits, inflating, keep, NO_SPARES, &mut on_event);
        if result.is_err() {
            self.fail();
            if let Some(inflater) = held.take() {
                pool.give(inflater);
            }
            pool.clear_scratch();
        }
        result
    }

    fn fail(&mut self) {
        self.bits = (self.bits | DONE) & !COMPRESSED;
        self.assembly = None;
    }

    /// Before the first bytes of a message go to the assembly buffer: the last of the caller's spares, if
    /// the reader has no room of its own.
    fn adopt_spare<S: Spares>(&mut self, spares: &mut Option<&mut S>) {
        if self.buffered_capacity() == 0 {
            if let Some(spare) = spares.as_mut().and_then(|spares| spares.pop()) {
                self.assembly = Some(spare);
            }
        }
    }

    /// A message completed: its assembly buffer joins the caller's spares (see `feed_reusing`) or is freed.
    fn release_buffer<S: Spares>(&mut self, spares: &mut Option<&mut S>) {
        let Some(mut assembly) = self.assembly.take() else {
            return;
        };
        if let Some(spares) = spares {
            if spares.count() < SPARE_COUNT && (1..=SPARE_MAX).contains(&assembly.buffer.capacity())
            {
                assembly.buffer.clear();
                spares.push(assembly);
            }
        }
    }

    fn feed_inner<F, S: Spares>(
        &mut self,
        input: &mut [u8],
        limits: &ReaderLimits,
        mut inflating: Option<(&mut InflatePool, &mut Option<Box<Inflater>>)>,
        keep: bool,
        mut spare: Option<&mut S>,
        on_event: &mut F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        // The inflater of the compressed message in progress, while this call has it.
        let mut active: Option<Box<Inflater>> =
            inflating.as_mut().and_then(|(_, held)| held.take());
        let mut pos = 0usize;
        // Message bytes gathered inside `input` during this call: (start, len). Used only while the assembly buffer
        // holds no bytes of the message; later fragments are moved down to follow the earlier ones.
        let mut local: Option<(usize, usize)> = None;
        let mut control_start = ControlStart::Buffered;
        loop {
            let (remaining, mask, phase, opcode, fin) = match self.frame {
                FrameState::Header { buf, len } => {
                    let (header, consumed) = if len == 0 {
                        match decode_header(&input[pos..])? {
                            Some(found) => found,
                            None => {
                                let rest = &input[pos..];
                                let mut buf = [0u8; MAX_HEADER_LEN];
                                buf[..rest.len()].copy_from_slice(rest);
                                self.frame = FrameState::Header {
                                    buf,
                                    len: rest.len() as u8,
                                };
                                pos = input.len();
                                break;
                            }
                        }
                    } else {
                        let have = len as usize;
                        let take = (MAX_HEADER_LEN - have).min(input.len() - pos);
                        let mut joined = buf;
                        joined[have..have + take].copy_from_slice(&input[pos..pos + take]);
                        match decode_header(&joined[..have + take])? {
                            // The earlier bytes alone were not a header, so `n > have`.
                            Some((header, n)) => (header, n - have),
                            None => {
                                self.frame = FrameState::Header {
                                    buf: joined,
                                    len: (have + take) as u8,
                                };
                                pos += take;
                                break;
                            }
                        }
                    };
                    pos += consumed;
                    let local_len = local.map_or(0, |(_, l)| l);
                    self.start_frame(&header, limits, local_len, inflating.is_some())?;
                    if header.opcode.is_control() {
                        control_start = ControlStart::Input(pos);
                    }
                    // Go straight on to the payload: the state is stored only if the input ends inside it.
                    (
                        header.payload_len,
                        header.mask,
                        0u8,
                        header.opcode,
                        header.fin,
                    )
                }
                FrameState::Payload {
                    remaining,
                    mask,
                    phase,
                    opcode,
                    fin,
                } => (remaining, mask, phase, opcode, fin),
            };
            let take = remaining.min((input.len() - pos) as u64) as usize;
            let start = pos;
            pos += take;
            let remaining = remaining - take as u64;
            let complete = remaining == 0;
            // Payload of an uncompressed data frame bound for the assembly buffer (the message began in an
            // earlier input, or goes on in a later one) is unmasked while it is copied there, in one pass;
            // everything else is unmasked in place.
            let to_assembly = !opcode.is_control()
                && self.bits & COMPRESSED == 0
                && (!complete || !self.assembled().is_empty());
            if let (Some(key), false) = (mask, to_assembly) {
                apply_mask(&mut input[start..pos], key, phase as usize);
            }
            self.frame = if complete {
                NO_HEADER
            } else {
                FrameState::Payload {
                    remaining,
                    mask,
                    phase: ((phase as usize + take) & 3) as u8,
                    opcode,
                    fin,
                }
            };
            if opcode.is_control() {
                let buffered = matches!(control_start, ControlStart::Buffered);
                if !complete {
                    if buffered {
                        // Began in an earlier input: keep gathering behind the message bytes.
                        self.assemble(&input[start..pos]);
                        self.control_len += take as u8;
                    }
                    break;
                }
                let payload: &[u8] = match control_start {
                    ControlStart::Input(s) => &input[s..pos],
                    ControlStart::Buffered => {
                        self.assemble(&input[start..pos]);
                        let buffer = self.assembled();
                        &buffer[buffer.len() - self.control_len as usize - take..]
                    }
                };
                control_start = ControlStart::Buffered;
                match opcode {
                    OpCode::Ping => on_event(Event::Ping(payload)),
                    OpCode::Pong => on_event(Event::Pong(payload)),
                    _ => {
                        let (code, reason) = parse_close_payload(payload)?;
                        on_event(Event::Close { code, reason });
                        self.bits |= DONE;
                        self.assembly = None;
                        if let (Some(inflater), Some((pool, _))) = (active, inflating) {
                            pool.give(inflater);
                            pool.clear_scratch();
                        }
                        return Ok(());
                    }
                }
                if buffered {
                    let message_bytes = self.assembled().len() - self.control_len as usize - take;
                    self.control_len = 0;
                    if message_bytes == 0 {
                        self.assembly = None;
                    } else {
                        self.assembly_mut().truncate(message_bytes);
                    }
                }
                continue;
            }
            // A data frame: validate text as it arrives, gather the message.
            let kind = self.message.unwrap_or(MessageKind::Binary);
            if self.bits & COMPRESSED != 0 {
                // `start_frame` lets RSV1 through only with a pool to inflate with.
                let Some((pool, _)) = inflating.as_mut() else {
                    return Err(ProtocolError::ReservedBits);
                };
                let inflater = active.get_or_insert_with(|| pool.take());
                // The output so far is in the assembly buffer when the message began in an earlier input,
                // else in the pool's scratch.
                let out = match self.assembly.as_deref_mut() {
                    Some(a) if !a.buffer.is_empty() => &mut a.buffer,
                    _ => &mut pool.scratch,
                };
                let before = out.len();
                let limit = limits.max_message_size;
                let last = complete && fin;
                inflater
                    .inflate(&input[start..pos], out, limit)
                    .and_then(|()| match last {
                        true => inflater.finish(out, limit),
                        false => Ok(()),
                    })
                    .map_err(|error| match error {
                        InflateError::TooBig => ProtocolError::InflatedTooBig,
                        InflateError::Corrupt => ProtocolError::InvalidCompressedData,
                    })?;
                if kind == MessageKind::Text {
                    self.utf8
                        .feed(&out[before..])
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                if !complete {
                    break;
                }
                if fin {
                    if kind == MessageKind::Text {
                        self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                    }
                    self.message = None;
                    self.bits &= !COMPRESSED;
                    on_event(Event::Message { kind, payload: out });
                    pool.clear_scratch();
                    self.assembly = None;
                    if keep {
                        pool.next_message(inflater);
                    } else if let Some(inflater) = active.take() {
                        pool.give(inflater);
                    }
                }
                continue;
            }
            if to_assembly {
                if self.assembled().is_empty() {
                    // The message goes on in a later input and its bytes so far are in this one (unmasked
                    // in place, checked): they move to the assembly buffer first. When this frame is its
                    // last, its size is known: reserve it once instead of growing (bounded, so that a
                    // header alone cannot make the reader ask for a large block).
                    let (s, l) = local.take().unwrap_or((start, 0));
                    let total = (l as u64)
                        .saturating_add(take as u64)
                        .saturating_add(remaining);
                    self.adopt_spare(&mut spare);
                    if fin && total <= RESERVE_AHEAD_MAX {
                        self.assembly_mut().reserve_exact(total as usize);
                    }
                    self.assemble(&input[s..s + l]);
                }
                if take > 0 {
                    let buffer = &mut self.assembly.get_or_insert_with(Box::default).buffer;
                    let appended = buffer.len();
                    match mask {
                        Some(key) => {
                            extend_unmasked(buffer, &input[start..pos], key, phase as usize)
                        }
                        None => buffer.extend_from_slice(&input[start..pos]),
                    }
                    if kind == MessageKind::Text {
                        self.utf8
                            .feed(&buffer[appended..])
                            .map_err(|_| ProtocolError::InvalidUtf8)?;
                    }
                }
            } else {
                if kind == MessageKind::Text {
                    self.utf8
                        .feed(&input[start..pos])
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                local = Some(match local {
                    None => (start, take),
                    Some((s, l)) => {
                        if s + l != start {
                            input.copy_within(start..pos, s + l);
                        }
                        (s, l + take)
                    }
                });
            }
            if !complete {
                break;
            }
            if fin {
                if kind == MessageKind::Text {
                    self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                self.message = None;
                if self.assembled().is_empty() {
                    let (s, l) = local.take().unwrap_or((0, 0));
                    on_event(Event::Message {
                        kind,
                        payload: &input[s..s + l],
                    });
                    // Room reserved for a message whose header came in an earlier input and whose payload
                    // came here whole: not needed after all.
                    self.release_buffer(&mut spare);
                } else {
                    local = None;
                    on_event(Event::Message {
                        kind,
                        payload: self.assembled(),
                    });
                    self.release_buffer(&mut spare);
                }
            }
        }
        debug_assert_eq!(pos, input.len());
        // Keep what the next input continues: message bytes first, then the control frame in progress.
        // (Inside a data frame's payload the message bytes moved to the assembly buffer above; here the
        // input ends inside a header or a control frame.)
        if let Some((s, l)) = local {
            self.adopt_spare(&mut spare);
            self.assemble(&input[s..s + l]);
        }
        if let Some((pool, held)) = inflating {
            // A compressed message continues in a later input: its output so far moves to the assembly
            // buffer, its inflater to the connection's slot.
            if !pool.scratch.is_empty() {
                let buffer = self.assembly_mut();
                buffer.reserve_exact(pool.scratch.len());
                buffer.extend_from_slice(&pool.scratch);
                pool.clear_scratch();
            }
            *held = active;
        }
        if let (ControlStart::Input(s), FrameState::Payload { .. }) = (control_start, self.frame) {
            self.assemble(&input[s..pos]);
            self.control_len = (pos - s) as u8;
        }
        Ok(())
    }

    /// Applies the connection rules to a new frame header and enters its payload.
    fn start_frame(
        &mut self,
        header: &FrameHeader,
        limits: &ReaderLimits,
        local_len: usize,
        can_inflate: bool,
    ) -> Result<(), ProtocolError> {
        let rsv1 = header.rsv & 0b100 != 0;
        if header.rsv & 0b011 != 0 || rsv1 && !(can_inflate && self.deflate.is_on()) {
            return Err(ProtocolError::ReservedBits);
        }
        if rsv1 && !matches!(header.opcode, OpCode::Text | OpCode::Binary) {
            // RFC 7692 section 6.1: RSV1 only on the first frame of a data message.
            return Err(ProtocolError::CompressionBitMisplaced);
        }
        match (self.role(), header.mask) {
            (Role::Server, None) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, Some(_)) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if header.payload_len > limits.max_frame_size {
            return Err(ProtocolError::FrameTooBig);
        }
        let message_so_far = match header.opcode {
            OpCode::Continuation => {
                if self.message.is_none() {
                    return Err(ProtocolError::UnexpectedContinuation);
                }
                (self.assembled().len() + local_len) as u64
            }
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                self.message = Some(if header.opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                });
                self.utf8.reset();
                if rsv1 {
                    self.bits |= COMPRESSED;
                }
                0
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => 0,
        };
        // A compressed message is bounded by its inflated size, while inflating.
        if !header.opcode.is_control()
            && self.bits & COMPRESSED == 0
            && message_so_far.saturating_add(header.payload_len) > limits.max_message_size as u64
        {
            return Err(ProtocolError::MessageTooBig);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::encode_frame;

    const KEY: [u8; 4] = [0x11, 0x8f, 0x3c, 0xd4];

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Message(MessageKind, Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
    }

    fn own(event: Event<'_>) -> Owned {
        match event {
            Event::Message { kind, payload } => Owned::Message(kind, payload.to_vec()),
            Event::Ping(p) => Owned::Ping(p.to_vec()),
            Event::Pong(p) => Owned::Pong(p.to_vec()),
            Event::Close { code, reason } => Owned::Close(code.map(|c| c.0), reason.to_string()),
        }
    }

    /// A frame as a client sends it (masked).
    fn cf(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, fin, opcode, payload, Some(KEY));
        out
    }

    /// Feeds `bytes` to a server reader cut at `cuts`; returns the events and the first error.
    fn run_cut(
        bytes: &[u8],
        cuts: &[usize],
        limits: &ReaderLimits,
    ) -> (Vec<Owned>, Result<(), ProtocolError>) {
        let mut reader = MessageReader::new(Role::Server);
        let mut events = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let mut piece = bytes[start..end].to_vec();
            start = end;
            if let Err(e) = reader.feed(&mut piece, limits, |ev| events.push(own(ev))) {
                return (events, Err(e));
            }
        }
        (events, Ok(()))
    }

    fn run(bytes: &[u8]) -> (Vec<Owned>, Result<(), ProtocolError>) {
        run_cut(bytes, &[], &ReaderLimits::default())
    }

    fn text(s: &str) -> Owned {
        Owned::Message(MessageKind::Text, s.as_bytes().to_vec())
    }

    #[test]
    fn reader_stays_small() {
        let size = std::mem::size_of::<MessageReader>();
        println!("size_of::<MessageReader>() = {size}");
        assert_eq!(size, MESSAGE_READER_MAX_SIZE, "{size} bytes");
        assert_eq!(std::mem::size_of::<Option<Box<Assembly>>>(), 8);
        let reader = MessageReader::new(Role::Server);
        assert!(reader.assembly.is_none() && reader.buffered_capacity() == 0);
    }

    #[test]
    fn single_frame_message_is_zero_copy_and_unmasked_in_place() {
        let mut input = cf(true, OpCode::Binary, b"\x00\x01payload");
        let range = input.as_ptr_range();
        let mut reader = MessageReader::new(Role::Server);
        let mut seen = 0;
        reader
            .feed(&mut input, &ReaderLimits::default(), |ev| {
                let Event::Message { kind, payload } = ev else {
                    panic!("{ev:?}")
                };
                assert_eq!(
                    (kind, payload),
                    (MessageKind::Binary, &b"\x00\x01payload"[..])
                );
                assert!(
                    range.contains(&payload.as_ptr()),
                    "payload must point into the input buffer"
                );
                seen += 1;
            })
            .unwrap();
        assert_eq!(seen, 1);
        assert_eq!(reader.buffered_capacity(), 0);
    }

    #[test]
    fn fragments_inside_one_input_need_no_allocation() {
        let mut input = [
            cf(false, OpCode::Text, b"Hel"),
            cf(true, OpCode::Ping, b"p"),
            cf(true, OpCode::Continuation, b"lo"),
        ]
        .concat();
        let mut reader = MessageReader::new(Role::Server);
        let mut events = Vec::new();
        reader
            .feed(&mut input, &ReaderLimits::default(), |ev| {
                events.push(own(ev))
            })
            .unwrap();
        assert_eq!(events, vec![Owned::Ping(b"p".to_vec()), text("Hello")]);
        assert_eq!(reader.buffered_capacity(), 0);
    }

    #[test]
    fn known_message_size_is_reserved_once_within_a_bound() {
        let limits = ReaderLimits::default();
        // 16 KiB in one frame, cut after 1000 bytes: the rest is known, reserved exactly once.
        let payload = vec![7u8; 16 * 1024];
        let bytes = cf(true, OpCode::Binary, &payload);
        let mut reader = MessageReader::new(Role::Server);
        let mut got = Vec::new();
        let (a, b) = bytes.split_at(1000);
        reader.feed(&mut a.to_vec(), &limits, |_| {}).unwrap();
        assert_eq!(reader.buffered_capacity(), payload.len());
        reader
            .feed(&mut b.to_vec(), &limits, |ev| got.push(own(ev)))
            .unwrap();
        assert_eq!(got, vec![Owned::Message(MessageKind::Binary, payload)]);
        // A header announcing 1 MiB with a few bytes behind it: nothing reserved ahead of the data.
        let mut header = cf(true, OpCode::Binary, &vec![1u8; 1 << 20]);
        header.truncate(20);
        let mut reader = MessageReader::new(Role::Server);
        reader.feed(&mut header, &limits, |_| {}).unwrap();
        assert!(
            reader.buffered_capacity() < 4096,
            "{}",
            reader.buffered_capacity()
        );
        // Not the last frame of its message: the total is unknown, nothing reserved ahead either.
        let first = cf(false, OpCode::Binary, &[3u8; 5000]);
        let mut reader = MessageReader::new(Role::Server);
        reader
            .feed(&mut first[..100].to_vec(), &limits, |_| {})
            .unwrap();
        assert!(
            reader.buffered_capacity() < 5000,
            "{}",
            reader.buffered_capacity()
        );
    }

    #[test]
    fn message_spanning_inputs_is_assembled_then_released() {
        let bytes = cf(true, OpCode::Text, "héllo wörld".as_bytes());
        let mut reader = MessageReader::new(Role::Server);
        let limits = ReaderLimits::default();
        let mut events = Vec::new();
        let (a, b) = bytes.split_at(9);
        reader
            .feed(&mut a.to_vec(), &limits, |ev| events.push(own(ev)))
            .unwrap();
        assert!(events.is_empty());
        assert!(reader.buffered_capacity() > 0 && reader.is_mid_message());
        reader
            .feed(&mut b.to_vec(), &limits, |ev| events.push(own(ev)))
            .unwrap();
        assert_eq!(events, vec![text("héllo wörld")]);
        assert_eq!(
            reader.buffered_capacity(),
            0,
            "assembly buffer freed once the message completes"
        );
        assert!(reader.assembly.is_none(), "and its box");
        assert!(!reader.is_mid_message());
    }

    #[test]
    fn an_idle_reader_holds_no_box_whatever_the_split() {
        // Empty inputs, a header alone, an empty fragment then a split header, a control frame split
        // across inputs inside a message: between messages no box is left behind.
        let stream = [
            cf(false, OpCode::Binary, b""),
            cf(true, OpCode::Ping, b"0123456789"),
            cf(true, OpCode::Continuation, b""),
            cf(true, OpCode::Text, &[b'a'; 200]),
            cf(false, OpCode::Text, b"ab"),
            cf(true, OpCode::Pong, b"xy"),
            cf(true, OpCode::Continuation, b"cd"),
        ]
        .concat();
        let limits = ReaderLimits::default();
        for i in 0..=stream.len() {
            for j in [i, i + 1, i + 7].map(|j| j.min(stream.len())) {
                let mut reader = MessageReader::new(Role::Server);
                let mut start = 0;
                for end in [i, i, j, stream.len()] {
                    reader
                        .feed(&mut stream[start..end].to_vec(), &limits, |_| {})
                        .unwrap();
                    start = end;
                    if !reader.is_mid_message() {
                        assert!(reader.assembly.is_none(), "cuts {i} {j}, at {end}");
                    }
                }
                assert!(reader.assembly.is_none() && !reader.is_mid_message());
            }
        }
    }

    #[test]
    fn messages_spanning_two_to_five_inputs_are_unmasked_while_assembled() {
        // Inputs of a receive buffer's size, the payload cut at offsets that are not 0 mod 4 into the key:
        // a message of 2 to 5 inputs, one frame or three fragments with a ping between them, text and
        // binary; also one input that ends inside the next message's header. Events as a whole feed gives,
        // the assembly buffer sized once from the header, and the bytes that went to the assembly buffer
        // left masked in the input (unmasked while copied, not in place first).
        let limits = ReaderLimits::default();
        let payload: Vec<u8> = "ringws é ".bytes().cycle().take(5000).collect();
        let text_payload = String::from_utf8(payload[..4997].to_vec()).unwrap();
        for buf_size in [1023usize, 1250, 1667, 2501, 4999] {
            for kind in [OpCode::Text, OpCode::Binary] {
                let body = if kind == OpCode::Text {
                    text_payload.as_bytes()
                } else {
                    &payload[..]
                };
                let single = cf(true, kind, body);
                let (a, b) = body.split_at(1501);
                let fragmented = [
                    cf(false, kind, a),
                    cf(true, OpCode::Ping, b"p"),
                    cf(true, OpCode::Continuation, b),
                ]
                .concat();
                for (stream, fragments) in [(single, 1), (fragmented, 2)] {
                    let stream = [stream, cf(true, OpCode::Binary, b"next")].concat();
                    let (expected, result) = run(&stream);
                    result.unwrap();
                    let mut reader = MessageReader::new(Role::Server);
                    let mut events = Vec::new();
                    let mut capacities = Vec::new();
                    let pieces: Vec<&[u8]> = stream.chunks(buf_size).collect();
                    assert!((2..=6).contains(&pieces.len()), "{buf_size}");
                    for piece in &pieces {
                        let mut input = piece.to_vec();
                        reader
                            .feed(&mut input, &limits, |ev| events.push(own(ev)))
                            .unwrap();
                        capacities.push(reader.buffered_capacity());
                        if reader.buffered_capacity() > 0 && fragments == 1 {
                            // All of this input went to the assembly buffer (and a header): untouched.
                            assert!(input == *piece, "input unmasked in place ({buf_size})");
                        }
                    }
                    assert_eq!(events, expected, "{buf_size} {kind:?} {fragments}");
                    if fragments == 1 {
                        // Reserved once from the header: the capacity never changes mid-message.
                        let held: Vec<_> = capacities.iter().filter(|&&c| c > 0).collect();
                        assert!(held.iter().all(|&&c| c == body.len()), "{capacities:?}");
                    }
                    assert_eq!(reader.buffered_capacity(), 0);
                }
            }
        }
    }

    #[test]
    fn feed_reusing_assembles_in_the_spare_and_gives_it_back() {
        let limits = ReaderLimits::default();
        let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let stream = [
            cf(true, OpCode::Binary, &payload),
            cf(true, OpCode::Text, b"small"),
            cf(true, OpCode::Binary, &payload[..20_000]),
        ]
        .concat();
        let (expected, result) = run(&stream);
        result.unwrap();
        let mut reader = MessageReader::new(Role::Server);
        let mut spares = vec![Vec::with_capacity(100_000)];
        let spare_at = spares[0].as_ptr();
        let mut events = Vec::new();
        let mut from_spare = Vec::new();
        for piece in stream.chunks(16 * 1024) {
            reader
                .feed_reusing(&mut piece.to_vec(), &limits, &mut spares, |ev| {
                    if let Event::Message { payload, .. } = ev {
                        from_spare.push(payload.as_ptr() == spare_at);
                    }
                    events.push(own(ev))
                })
                .unwrap();
            // While a message is assembled the reader holds the spare's memory, else the caller does.
            if reader.buffered_capacity() > 0 {
                assert_eq!((reader.buffered_capacity(), spares.len()), (100_000, 0));
            } else {
                assert_eq!(spares.len(), 1);
                assert_eq!((spares[0].len(), spares[0].capacity()), (0, 100_000));
            }
        }
        assert_eq!(events, expected);
        // Both large messages were assembled in the spare's memory; the small one came from the input.
        assert_eq!(from_spare, [true, false, true]);
        assert_eq!(reader.buffered_capacity(), 0);
        assert_eq!(spares[0].as_ptr(), spare_at);
        // Spares kept boxed move whole: the same box and buffer, in and out, nothing allocated.
        let mut reader = MessageReader::new(Role::Server);
        let mut boxed = SpareAssemblies::new();
        boxed.push(Box::new(Assembly {
            buffer: Vec::with_capacity(100_000),
        }));
        let (box_at, buffer_at) = (
            &*boxed.boxes[0] as *const Assembly,
            boxed.boxes[0].buffer.as_ptr(),
        );
        let mut got = Vec::new();
        for piece in stream.chunks(16 * 1024) {
            reader
                .feed_reusing(&mut piece.to_vec(), &limits, &mut boxed, |ev| {
                    got.push(own(ev))
                })
                .unwrap();
            if reader.buffered_capacity() > 0 {
                let held = reader.assembly.as_deref().unwrap();
                assert_eq!((held as *const Assembly, boxed.count()), (box_at, 0));
            }
        }
        assert_eq!(got, expected);
        assert!(reader.assembly.is_none());
        assert_eq!(
            (
                &*boxed.boxes[0] as *const Assembly,
                boxed.boxes[0].buffer.as_ptr()
            ),
            (box_at, buffer_at)
        );
        // Without spares a message allocates, and its buffer becomes one; one over `SPARE_MAX` is freed,
        // and none beyond `SPARE_COUNT` is kept.
        for (spares_before, size, kept) in [
            (0, payload.len(), 1),
            (0, SPARE_MAX + 1, 0),
            (SPARE_COUNT, payload.len(), SPARE_COUNT),
        ] {
            // The message takes its buffer from none; `spares_before` spares are there when it completes.
            let mut spares: Vec<Vec<u8>> = Vec::new();
            let mut reader = MessageReader::new(Role::Server);
            let mut events = 0;
            for (i, piece) in cf(true, OpCode::Binary, &vec![3u8; size])
                .chunks(64 * 1024)
                .enumerate()
            {
                if i == 1 {
                    spares.resize_with(spares_before, Vec::new);
                }
                reader
                    .feed_reusing(&mut piece.to_vec(), &limits, &mut spares, |_| events += 1)
                    .unwrap();
            }
            assert_eq!((events, spares.len()), (1, kept), "{spares_before} {size}");
            assert_eq!(reader.buffered_capacity(), 0);
            if spares_before == 0 && kept == 1 {
                assert!(spares[0].capacity() >= size && spares[0].is_empty());
            }
        }
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let stream = [
            cf(true, OpCode::Text, b""),
            cf(false, OpCode::Text, "κόσ".as_bytes()),
            cf(true, OpCode::Ping, b"ping!"),
            cf(false, OpCode::Continuation, &"με".as_bytes()[..1]),
            cf(true, OpCode::Pong, b""),
            cf(true, OpCode::Continuation, &"με".as_bytes()[1..]),
            cf(true, OpCode::Binary, &[7u8; 300]),
            cf(false, OpCode::Binary, b""),
            cf(true, OpCode::Continuation, b""),
            cf(true, OpCode::Close, b"\x03\xe8done"),
        ]
        .concat();
        let limits = ReaderLimits::default();
        let (whole, result) = run_cut(&stream, &[], &limits);
        result.unwrap();
        assert_eq!(
            whole,
            vec![
                text(""),
                Owned::Ping(b"ping!".to_vec()),
                Owned::Pong(vec![]),
                text("κόσμε"),
                Owned::Message(MessageKind::Binary, vec![7u8; 300]),
                Owned::Message(MessageKind::Binary, vec![]),
                Owned::Close(Some(1000), "done".into()),
            ]
        );
        for i in 0..=stream.len() {
            assert_eq!(
                run_cut(&stream, &[i], &limits),
                (whole.clone(), Ok(())),
                "cut at {i}"
            );
        }
        for step in [1, 2, 3, 7, 13] {
            let cuts: Vec<usize> = (step..stream.len()).step_by(step).collect();
            assert_eq!(
                run_cut(&stream, &cuts, &limits),
                (whole.clone(), Ok(())),
                "every {step} bytes"
            );
        }
    }

    #[test]
    fn control_frame_split_inside_fragmented_message() {
        let stream = [
            cf(false, OpCode::Binary, b"abc"),
            cf(true, OpCode::Ping, b"0123456789"),
            cf(true, OpCode::Continuation, b"def"),
        ]
        .concat();
        let expected = vec![
            Owned::Ping(b"0123456789".to_vec()),
            Owned::Message(MessageKind::Binary, b"abcdef".to_vec()),
        ];
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                assert_eq!(
                    run_cut(&stream, &[i, j], &ReaderLimits::default()),
                    (expected.clone(), Ok(())),
                    "cuts {i} {j}"
                );
            }
        }
    }

    #[test]
    fn server_requires_masked_frames_and_client_unmasked() {
        let mut unmasked = Vec::new();
        encode_frame(&mut unmasked, true, OpCode::Text, b"hi", None);
        assert_eq!(run(&unmasked).1, Err(ProtocolError::UnmaskedFrame));
        assert_eq!(
            ProtocolError::UnmaskedFrame.close_code(),
            CloseCode::PROTOCOL_ERROR
        );

        let mut client = MessageReader::new(Role::Client);
        let mut events = Vec::new();
        client
            .feed(&mut unmasked.clone(), &ReaderLimits::default(), |ev| {
                events.push(own(ev))
            })
            .unwrap();
        assert_eq!(events, vec![text("hi")]);
        let mut client = MessageReader::new(Role::Client);
        let err = client.feed(
            &mut cf(true, OpCode::Text, b"hi"),
            &ReaderLimits::default(),
            |_| {},
        );
        assert_eq!(err, Err(ProtocolError::MaskedFrame));
        assert_eq!(
            ProtocolError::MaskedFrame.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn reserved_bits_and_opcodes_are_1002() {
        for rsv in [0x40u8, 0x20, 0x10] {
            let mut frame = cf(true, OpCode::Text, b"x");
            frame[0] |= rsv;
            assert_eq!(run(&frame).1, Err(ProtocolError::ReservedBits));
        }
        for op in [3u8, 7, 0xb, 0xf] {
            let mut frame = cf(true, OpCode::Binary, b"x");
            frame[0] = 0x80 | op;
            assert_eq!(run(&frame).1, Err(ProtocolError::ReservedOpcode));
        }
        assert_eq!(
            ProtocolError::ReservedBits.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
        assert_eq!(
            ProtocolError::ReservedOpcode.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn control_frame_rules() {
        let mut long_ping = vec![0x89, 0x80 | 126, 0, 126];
        long_ping.extend_from_slice(&KEY);
        long_ping.extend_from_slice(&[0; 126]);
        assert_eq!(run(&long_ping).1, Err(ProtocolError::ControlFrameTooLong));
        assert_eq!(
            run(&cf(false, OpCode::Ping, b"x")).1,
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            run(&cf(true, OpCode::Ping, &[b'p'; 125])).0,
            vec![Owned::Ping(vec![b'p'; 125])]
        );
        for e in [
            ProtocolError::ControlFrameTooLong,
            ProtocolError::FragmentedControlFrame,
        ] {
            assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn fragmentation_order_rules() {
        assert_eq!(
            run(&cf(true, OpCode::Continuation, b"x")).1,
            Err(ProtocolError::UnexpectedContinuation)
        );
        let new_start = [
            cf(false, OpCode::Text, b"a"),
            cf(true, OpCode::Binary, b"b"),
        ]
        .concat();
        assert_eq!(run(&new_start).1, Err(ProtocolError::ExpectedContinuation));
        let after_end = [
            cf(true, OpCode::Text, b"a"),
            cf(true, OpCode::Continuation, b"b"),
        ]
        .concat();
        let (events, result) = run(&after_end);
        assert_eq!(
            (events, result),
            (vec![text("a")], Err(ProtocolError::UnexpectedContinuation))
        );
    }

    #[test]
    fn invalid_text_fails_fast_with_1007() {
        // The first fragment is already certainly invalid: fail before the message ends.
        let (events, result) = run(&cf(false, OpCode::Text, b"ok\xc0\xafmore"));
        assert!(events.is_empty());
        assert_eq!(result, Err(ProtocolError::InvalidUtf8));
        assert_eq!(
            ProtocolError::InvalidUtf8.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
        // Even within one frame that has not fully arrived yet.
        let frame = cf(
            true,
            OpCode::Text,
            b"\xff and much more text that is still on its way",
        );
        assert_eq!(
            run_cut(&frame, &[7], &ReaderLimits::default()),
            (vec![], Err(ProtocolError::InvalidUtf8))
        );
        // Unfinished code point at the end of the message.
        assert_eq!(
            run(&cf(true, OpCode::Text, b"ab\xe2\x82")).1,
            Err(ProtocolError::InvalidUtf8)
        );
        // Binary is not checked.
        assert!(run(&cf(true, OpCode::Binary, b"\xff")).1.is_ok());
    }

    #[test]
    fn code_point_may_straddle_frames() {
        let euro = "€".as_bytes();
        let stream = [
            cf(false, OpCode::Text, &euro[..1]),
            cf(false, OpCode::Continuation, &euro[1..2]),
            cf(true, OpCode::Continuation, &euro[2..]),
        ]
        .concat();
        assert_eq!(run(&stream), (vec![text("€")], Ok(())));
    }

    #[test]
    fn close_payload_rules() {
        assert_eq!(
            run(&cf(true, OpCode::Close, b"")),
            (vec![Owned::Close(None, String::new())], Ok(()))
        );
        assert_eq!(
            run(&cf(true, OpCode::Close, b"\x03")).1,
            Err(ProtocolError::CloseTooShort)
        );
        assert_eq!(
            run(&cf(true, OpCode::Close, b"\x03\xec")).1,
            Err(ProtocolError::InvalidCloseCode)
        ); // 1004
        assert_eq!(
            run(&cf(true, OpCode::Close, b"\x03\xe8\xce")).1,
            Err(ProtocolError::InvalidCloseReason)
        );
        assert_eq!(
            ProtocolError::CloseTooShort.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
        assert_eq!(
            ProtocolError::InvalidCloseReason.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
        let (events, result) = run(&cf(true, OpCode::Close, b"\x0f\xa0app"));
        assert_eq!(
            (events, result),
            (vec![Owned::Close(Some(4000), "app".into())], Ok(()))
        );
    }

    #[test]
    fn input_after_close_is_ignored() {
        let stream = [
            cf(true, OpCode::Close, b"\x03\xe8"),
            cf(true, OpCode::Text, b"late"),
            vec![0xff, 0xff],
        ]
        .concat();
        let mut reader = MessageReader::new(Role::Server);
        let mut events = Vec::new();
        reader
            .feed(&mut stream.clone(), &ReaderLimits::default(), |ev| {
                events.push(own(ev))
            })
            .unwrap();
        reader
            .feed(
                &mut cf(true, OpCode::Text, b"later"),
                &ReaderLimits::default(),
                |ev| events.push(own(ev)),
            )
            .unwrap();
        assert_eq!(events, vec![Owned::Close(Some(1000), String::new())]);
        assert!(reader.is_closed());
    }

    #[test]
    fn close_between_fragments_is_allowed() {
        let stream = [
            cf(false, OpCode::Text, b"half"),
            cf(true, OpCode::Close, b"\x03\xe9"),
        ]
        .concat();
        assert_eq!(
            run(&stream),
            (vec![Owned::Close(Some(1001), String::new())], Ok(()))
        );
    }

    #[test]
    fn size_limits_are_1009_from_the_header() {
        let limits = ReaderLimits {
            max_frame_size: 100,
            max_message_size: 150,
        };
        // Only the header of a 101-byte frame arrives: rejected before any payload.
        let frame = cf(true, OpCode::Binary, &[0; 101]);
        assert_eq!(
            run_cut(&frame[..6], &[], &limits),
            (vec![], Err(ProtocolError::FrameTooBig))
        );
        assert_eq!(
            run_cut(&cf(true, OpCode::Binary, &[1; 100]), &[], &limits).1,
            Ok(())
        );
        // 80 + 80 > 150: rejected on the second header.
        let two = [
            cf(false, OpCode::Binary, &[0; 80]),
            cf(true, OpCode::Continuation, &[0; 80]),
        ]
        .concat();
        assert_eq!(
            run_cut(&two[..6 + 80 + 6], &[], &limits),
            (vec![], Err(ProtocolError::MessageTooBig))
        );
        // Also when the first part was assembled in an earlier input.
        assert_eq!(
            run_cut(&two[..6 + 80 + 6], &[40], &limits),
            (vec![], Err(ProtocolError::MessageTooBig))
        );
        let ok = [
            cf(false, OpCode::Binary, &[0; 75]),
            cf(true, OpCode::Continuation, &[0; 75]),
        ]
        .concat();
        assert_eq!(run_cut(&ok, &[50], &limits).0.len(), 1);
        assert_eq!(ProtocolError::FrameTooBig.close_code(), CloseCode::TOO_BIG);
        assert_eq!(
            ProtocolError::MessageTooBig.close_code(),
            CloseCode::TOO_BIG
        );
    }

    #[test]
    fn length_with_top_bit_is_1002() {
        let mut frame = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        frame.extend_from_slice(&KEY);
        assert_eq!(run(&frame).1, Err(ProtocolError::InvalidLength));
        assert_eq!(
            ProtocolError::InvalidLength.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn input_after_an_error_is_ignored_and_memory_released() {
        let mut reader = MessageReader::new(Role::Server);
        let limits = ReaderLimits::default();
        let partial = cf(false, OpCode::Binary, &[5; 50]);
        reader
            .feed(&mut partial[..20].to_vec(), &limits, |_| {})
            .unwrap();
        assert!(reader.buffered_capacity() > 0);
        let mut bad = partial[20..].to_vec();
        bad.extend_from_slice(&cf(true, OpCode::Text, b"x"));
        assert_eq!(
            reader.feed(&mut bad, &limits, |_| {}),
            Err(ProtocolError::ExpectedContinuation)
        );
        assert_eq!(reader.buffered_capacity(), 0);
        let mut events = 0;
        reader
            .feed(&mut cf(true, OpCode::Binary, b"y"), &limits, |_| {
                events += 1
            })
            .unwrap();
        assert_eq!(events, 0);
    }

    mod compressed {
        use super::*;
        use crate::protocol::deflate::{negotiate, Compressor, DeflateConfig};

        /// RFC 7692 section 7.2.3.1: "Hello" compressed.
        const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

        fn agreed() -> Negotiated {
            let agreed = negotiate(
                [b"permessage-deflate; client_max_window_bits".as_slice()],
                &DeflateConfig::default(),
            )
            .unwrap();
            Negotiated::from_agreed(&agreed)
        }

        /// A client frame with RSV1 set.
        fn rsv1(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
            let mut frame = cf(fin, opcode, payload);
            frame[0] |= 0x40;
            frame
        }

        fn deflate(input: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            assert!(Compressor::new(6, 15, false).compress(input, &mut out));
            out
        }

        /// A server that keeps its context (context takeover): a client's reader with `keep` holds one
        /// inflater, window and all, across messages; without `keep` the later messages do not inflate.
        fn read_context_stream(
            keep: bool,
        ) -> (Vec<Owned>, Result<(), ProtocolError>, (u64, u64, u64)) {
            let record =
                br#"{"user":"alice","room":"lobby","text":"hello there, how are you today?"}"#;
            let mut compressor = Compressor::new(6, 15, true);
            let mut wire = Vec::new();
            let mut compressed_total = 0u64;
            for _ in 0..3 {
                let mut out = Vec::new();
                assert!(compressor.compress(record, &mut out));
                compressed_total += out.len() as u64;
                let mut frame = Vec::new();
                crate::protocol::frame::encode_frame(&mut frame, true, OpCode::Text, &out, None);
                frame[0] |= 0x40;
                wire.extend_from_slice(&frame);
            }
            let mut reader = MessageReader::new(Role::Client);
            reader.set_deflate(agreed());
            let mut pool = InflatePool::default();
            let mut slot = None;
            let mut events = Vec::new();
            let mut result = Ok(());
            // In two pieces, the cut inside the second message.
            let cut = wire.len() / 2;
            for piece in [&wire[..cut], &wire[cut..]] {
                let mut piece = piece.to_vec();
                let inflating = Inflating {
                    pool: &mut pool,
                    held: &mut slot,
                    keep,
                };
                result =
                    reader.feed_deflate(&mut piece, &ReaderLimits::default(), inflating, |ev| {
                        events.push(own(ev))
                    });
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                assert_eq!(
                    slot.is_some(),
                    keep,
                    "between messages, the slot keeps it only with keep"
                );
            }
            let counts = pool.take_counts();
            assert!(compressed_total > 0);
            (events, result, counts)
        }

        #[test]
        fn a_kept_inflater_reads_a_server_that_keeps_its_context() {
            let record =
                br#"{"user":"alice","room":"lobby","text":"hello there, how are you today?"}"#;
            let (events, result, (messages, compressed, inflated)) = read_context_stream(true);
            assert_eq!(result, Ok(()));
            assert_eq!(events.len(), 3);
            for event in &events {
                assert_eq!(event, &Owned::Message(MessageKind::Text, record.to_vec()));
            }
            assert_eq!((messages, inflated), (3, 3 * record.len() as u64));
            assert!(
                compressed > 0 && compressed < inflated,
                "{compressed} of {inflated}"
            );
            // Without keeping it, the second message refers back into a window that is gone.
            let (events, result, _) = read_context_stream(false);
            assert_eq!(events.len(), 1);
            assert_eq!(result, Err(ProtocolError::InvalidCompressedData));
        }

        struct Run {
            events: Vec<Owned>,
            result: Result<(), ProtocolError>,
            /// After each piece: (assembly capacity, an inflater held).
            held: Vec<(usize, bool)>,
        }

        fn run_deflate(bytes: &[u8], cuts: &[usize], limits: &ReaderLimits) -> Run {
            let mut reader = MessageReader::new(Role::Server);
            reader.set_deflate(agreed());
            let mut pool = InflatePool::default();
            let mut slot = None;
            let mut run = Run {
                events: Vec::new(),
                result: Ok(()),
                held: Vec::new(),
            };
            let mut start = 0;
            for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
                let mut piece = bytes[start..end].to_vec();
                start = end;
                let inflating = Inflating {
                    pool: &mut pool,
                    held: &mut slot,
                    keep: false,
                };
                let result = reader
                    .feed_deflate(&mut piece, limits, inflating, |ev| run.events.push(own(ev)));
                run.held.push((reader.buffered_capacity(), slot.is_some()));
                assert!(pool.scratch.is_empty(), "scratch left behind");
                if result.is_err() {
                    assert!(slot.is_none());
                    run.result = result;
                    break;
                }
            }
            run
        }

        #[test]
        fn rfc_hello_in_any_split_with_a_ping_between_fragments() {
            let stream = [
                rsv1(true, OpCode::Text, &HELLO),
                rsv1(false, OpCode::Binary, &HELLO[..3]),
                cf(true, OpCode::Ping, b"p"),
                cf(true, OpCode::Continuation, &HELLO[3..]),
                cf(true, OpCode::Text, b"plain"),
            ]
            .concat();
            let expected = vec![
                text("Hello"),
                Owned::Ping(b"p".to_vec()),
                Owned::Message(MessageKind::Binary, b"Hello".to_vec()),
                text("plain"),
            ];
            let limits = ReaderLimits::default();
            for i in 0..=stream.len() {
                for j in (i..=stream.len()).step_by(3) {
                    let run = run_deflate(&stream, &[i, j], &limits);
                    assert_eq!(
                        (&run.events, run.result),
                        (&expected, Ok(())),
                        "cuts {i} {j}"
                    );
                    assert_eq!(run.held.last(), Some(&(0, false)), "cuts {i} {j}");
                }
            }
        }

        #[test]
        fn a_message_spanning_inputs_holds_its_inflater_only_while_in_progress() {
            let input = "{\"k\":\"value\"},".repeat(2000);
            let payload = deflate(input.as_bytes());
            let frame = rsv1(true, OpCode::Text, &payload);
            let run = run_deflate(&frame, &[frame.len() / 2], &ReaderLimits::default());
            assert_eq!(run.result, Ok(()));
            assert_eq!(run.events, vec![text(&input)]);
            assert!(run.held[0].1 && run.held[0].0 > 0, "{:?}", run.held);
            assert_eq!(run.held[1], (0, false));
        }

        #[test]
        fn rsv1_rules() {
            let limits = ReaderLimits::default();
            // Not agreed: RSV1 is a reserved bit, fed either way.
            assert_eq!(
                run(&rsv1(true, OpCode::Text, &HELLO)).1,
                Err(ProtocolError::ReservedBits)
            );
            // Agreed, but fed without a pool: refused too.
            let mut reader = MessageReader::new(Role::Server);
            reader.set_deflate(agreed());
            assert_eq!(
                reader.feed(&mut rsv1(true, OpCode::Text, &HELLO), &limits, |_| {}),
                Err(ProtocolError::ReservedBits)
            );
            // On a continuation or a control frame: 1002.
            let continuation = [
                rsv1(false, OpCode::Text, &HELLO[..3]),
                rsv1(true, OpCode::Continuation, &HELLO[3..]),
            ]
            .concat();
            assert_eq!(
                run_deflate(&continuation, &[], &limits).result,
                Err(ProtocolError::CompressionBitMisplaced)
            );
            for opcode in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
                assert_eq!(
                    run_deflate(&rsv1(true, opcode, b""), &[], &limits).result,
                    Err(ProtocolError::CompressionBitMisplaced),
                    "{opcode:?}"
                );
            }
            assert_eq!(
                ProtocolError::CompressionBitMisplaced.close_code(),
                CloseCode::PROTOCOL_ERROR
            );
            // RSV2 and RSV3 stay reserved.
            let mut frame = rsv1(true, OpCode::Text, &HELLO);
            frame[0] |= 0x20;
            assert_eq!(
                run_deflate(&frame, &[], &limits).result,
                Err(ProtocolError::ReservedBits)
            );
        }

        #[test]
        fn bomb_is_1009_within_the_limit() {
            let payload = deflate(&vec![b'a'; 1 << 20]);
            assert!(payload.len() < 2048);
            let limits = ReaderLimits {
                max_frame_size: 1 << 20,
                max_message_size: 64 * 1024,
            };
            let frame = rsv1(true, OpCode::Binary, &payload);
            for cuts in [
                vec![],
                vec![frame.len() / 2],
                (1..frame.len()).step_by(97).collect(),
            ] {
                let run = run_deflate(&frame, &cuts, &limits);
                assert_eq!(run.result, Err(ProtocolError::InflatedTooBig));
                assert_eq!(
                    ProtocolError::InflatedTooBig.close_code(),
                    CloseCode::TOO_BIG
                );
                let most = run
                    .held
                    .iter()
                    .map(|(capacity, _)| *capacity)
                    .max()
                    .unwrap();
                assert!(most <= limits.max_message_size, "{most}");
            }
        }

        #[test]
        fn corrupt_data_is_1007_and_invalid_text_fails_fast() {
            let limits = ReaderLimits::default();
            let run = run_deflate(
                &rsv1(true, OpCode::Binary, &[0xff, 0xff, 0xff]),
                &[],
                &limits,
            );
            assert_eq!(run.result, Err(ProtocolError::InvalidCompressedData));
            assert_eq!(
                ProtocolError::InvalidCompressedData.close_code(),
                CloseCode::INVALID_PAYLOAD
            );
            // Invalid UTF-8 in the first fragment's inflated text: refused before the message ends.
            let mut bad = b"ok \xc0\xaf ".to_vec();
            bad.extend_from_slice(&[b'x'; 300]);
            let payload = deflate(&bad);
            let run = run_deflate(&rsv1(false, OpCode::Text, &payload), &[], &limits);
            assert_eq!(run.result, Err(ProtocolError::InvalidUtf8));
            assert!(run.events.is_empty());
        }

        #[test]
        fn reader_still_fits_with_the_agreement() {
            assert!(std::mem::size_of::<MessageReader>() <= MESSAGE_READER_MAX_SIZE);
            let mut reader = MessageReader::new(Role::Client);
            reader.set_deflate(agreed());
            assert_eq!(reader.role(), Role::Client);
            assert!(reader.deflate().is_on());
        }
    }
}
