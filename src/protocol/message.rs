//! Per-connection receive state machine: bytes -> frames -> messages and control events (RFC 6455 sections
//! 5.2-5.6, 7 and 8).
//!
//! Owns `MessageReader` and the rules that depend on the connection: masking by role, RSV bits without an
//! extension, fragmentation order, control frames between fragments, close payload validation, fail-fast UTF-8
//! of text messages and the frame/message size limits (checked from the header, before any byte is buffered).
//! Every violation is a `ProtocolError` carrying the close code the RFC requires.
//!
//! Memory: the reader is 56 bytes and owns no buffer while idle. Payload is unmasked in place in the caller's
//! input; a message wholly inside one input is handed out with zero copies (fragments inside one input are
//! compacted in place). Only a message or control frame that spans inputs is copied, once, into an
//! assembly `Vec` taken on demand and freed (capacity released) when it completes. It must never perform
//! I/O, read a clock, log, or allocate for a message that fits in one input.

use super::close::{parse_close_payload, CloseCode};
use super::frame::{decode_header, FrameHeader, OpCode, MAX_HEADER_LEN};
use super::mask::apply_mask;
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

const NO_HEADER: FrameState = FrameState::Header {
    buf: [0; MAX_HEADER_LEN],
    len: 0,
};

/// Upper bound of `size_of::<MessageReader>()` on 64-bit targets, asserted by a unit test.
pub const MESSAGE_READER_MAX_SIZE: usize = 64;

/// The receive state of one connection. See the module documentation for its memory behaviour.
#[derive(Debug)]
pub struct MessageReader {
    /// Assembly storage: bytes of the message in progress that arrived in earlier inputs, then
    /// `control_len` bytes of a control frame split across inputs. Empty (no capacity) otherwise.
    buffer: Vec<u8>,
    frame: FrameState,
    utf8: Utf8Validator,
    role: Role,
    /// The data message in progress, if any.
    message: Option<MessageKind>,
    /// Bytes at the end of `buffer` that belong to the control frame in progress.
    control_len: u8,
    /// A close frame was received or an error returned: input is ignored from now on.
    done: bool,
}

/// Where the current control frame's payload lives during one `feed` call.
#[derive(Clone, Copy)]
enum ControlStart {
    /// Not in a control frame, or its earlier bytes are already in `buffer`.
    Buffered,
    /// The control frame started in this input; its payload begins here.
    Input(usize),
}

impl MessageReader {
    pub fn new(role: Role) -> MessageReader {
        MessageReader {
            buffer: Vec::new(),
            frame: NO_HEADER,
            utf8: Utf8Validator::new(),
            role,
            message: None,
            control_len: 0,
            done: false,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// True once a close frame was received or `feed` returned an error.
    pub fn is_closed(&self) -> bool {
        self.done
    }

    /// True while a fragmented message or a frame is incomplete (the peer owes more bytes).
    pub fn is_mid_message(&self) -> bool {
        self.message.is_some() || !matches!(self.frame, FrameState::Header { len: 0, .. })
    }

    /// Heap bytes held right now by the assembly buffer (0 between messages).
    pub fn buffered_capacity(&self) -> usize {
        self.buffer.capacity()
    }

    /// Consumes all of `input`: unmasks payload in place, calls `on_event` for each complete message and
    /// control frame in order, and keeps any incomplete header or message for the next call. Results are the
    /// same however the byte stream is split into inputs. On `Err`, send a close frame with
    /// `err.close_code()` and stop reading: the reader ignores further input, as it does after `Event::Close`.
    pub fn feed<F>(
        &mut self,
        input: &mut [u8],
        limits: &ReaderLimits,
        mut on_event: F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        if self.done {
            return Ok(());
        }
        let result = self.feed_inner(input, limits, &mut on_event);
        if result.is_err() {
            self.done = true;
            self.buffer = Vec::new();
        }
        result
    }

    fn feed_inner<F>(
        &mut self,
        input: &mut [u8],
        limits: &ReaderLimits,
        on_event: &mut F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        let mut pos = 0usize;
        // Message bytes gathered inside `input` during this call: (start, len). Used only while `buffer` holds
        // no bytes of the message; later fragments are moved down to follow the earlier ones.
        let mut local: Option<(usize, usize)> = None;
        let mut control_start = ControlStart::Buffered;
        loop {
            match self.frame {
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
                    self.start_frame(&header, limits, local_len)?;
                    if header.opcode.is_control() {
                        control_start = ControlStart::Input(pos);
                    }
                }
                FrameState::Payload {
                    remaining,
                    mask,
                    phase,
                    opcode,
                    fin,
                } => {
                    let take = remaining.min((input.len() - pos) as u64) as usize;
                    let start = pos;
                    pos += take;
                    if let Some(key) = mask {
                        apply_mask(&mut input[start..pos], key, phase as usize);
                    }
                    let remaining = remaining - take as u64;
                    let complete = remaining == 0;
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
                                self.buffer.extend_from_slice(&input[start..pos]);
                                self.control_len += take as u8;
                            }
                            break;
                        }
                        let payload: &[u8] = match control_start {
                            ControlStart::Input(s) => &input[s..pos],
                            ControlStart::Buffered => {
                                self.buffer.extend_from_slice(&input[start..pos]);
                                &self.buffer[self.buffer.len() - self.control_len as usize - take..]
                            }
                        };
                        control_start = ControlStart::Buffered;
                        match opcode {
                            OpCode::Ping => on_event(Event::Ping(payload)),
                            OpCode::Pong => on_event(Event::Pong(payload)),
                            _ => {
                                let (code, reason) = parse_close_payload(payload)?;
                                on_event(Event::Close { code, reason });
                                self.done = true;
                                self.buffer = Vec::new();
                                return Ok(());
                            }
                        }
                        if buffered {
                            let message_bytes =
                                self.buffer.len() - self.control_len as usize - take;
                            self.buffer.truncate(message_bytes);
                            self.control_len = 0;
                            if self.buffer.is_empty() {
                                self.buffer = Vec::new();
                            }
                        }
                        continue;
                    }
                    // A data frame: validate text as it arrives, gather the message.
                    let kind = self.message.unwrap_or(MessageKind::Binary);
                    if kind == MessageKind::Text {
                        self.utf8
                            .feed(&input[start..pos])
                            .map_err(|_| ProtocolError::InvalidUtf8)?;
                    }
                    if self.buffer.is_empty() {
                        local = Some(match local {
                            None => (start, take),
                            Some((s, l)) => {
                                if s + l != start {
                                    input.copy_within(start..pos, s + l);
                                }
                                (s, l + take)
                            }
                        });
                    } else {
                        self.buffer.extend_from_slice(&input[start..pos]);
                    }
                    if !complete {
                        break;
                    }
                    if fin {
                        if kind == MessageKind::Text {
                            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                        }
                        self.message = None;
                        if self.buffer.is_empty() {
                            let (s, l) = local.take().unwrap_or((0, 0));
                            on_event(Event::Message {
                                kind,
                                payload: &input[s..s + l],
                            });
                        } else {
                            local = None;
                            on_event(Event::Message {
                                kind,
                                payload: &self.buffer,
                            });
                            self.buffer = Vec::new();
                        }
                    }
                }
            }
        }
        debug_assert_eq!(pos, input.len());
        // Keep what the next input continues: message bytes first, then the control frame in progress.
        if let Some((s, l)) = local {
            self.buffer.extend_from_slice(&input[s..s + l]);
        }
        if let (ControlStart::Input(s), FrameState::Payload { .. }) = (control_start, self.frame) {
            self.buffer.extend_from_slice(&input[s..pos]);
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
    ) -> Result<(), ProtocolError> {
        if header.rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        match (self.role, header.mask) {
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
                (self.buffer.len() + local_len) as u64
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
                0
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => 0,
        };
        if !header.opcode.is_control()
            && message_so_far.saturating_add(header.payload_len) > limits.max_message_size as u64
        {
            return Err(ProtocolError::MessageTooBig);
        }
        self.frame = FrameState::Payload {
            remaining: header.payload_len,
            mask: header.mask,
            phase: 0,
            opcode: header.opcode,
            fin: header.fin,
        };
        Ok(())
    }
}
