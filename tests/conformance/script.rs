//! Cases as scripts: what the client sends (frames, how the bytes are chopped into writes) and what the
//! server must answer, step by step, and the executor that runs a script over one fresh connection.
//!
//! The executor is strict in the way RFC 6455 is: a reply must be exactly the expected frames, in order;
//! after a protocol violation the only bytes allowed are one close frame with the required code followed
//! by the server closing TCP. It never retries and never skips a step.

use crate::suite::wire::{
    describe_close_payload, encode_frame, opcode_name, preview, Client, Frame, FrameSpec,
    LengthField, ReadEnd, Rng, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
};
use std::net::SocketAddr;
use std::time::Duration;

/// What the server's close frame may carry.
#[derive(Clone, Debug)]
pub enum CloseReply {
    /// Exactly this status code (any valid UTF-8 reason).
    Code(u16),
    /// No payload, or code 1000 (the answer to a close frame that carried no code).
    EmptyOrNormal,
    /// The code received echoed back, or 1000 (RFC 6455 section 5.5.1: an endpoint "typically echos"
    /// the code; both are conformant).
    EchoOrNormal(u16),
}

impl CloseReply {
    fn matches(&self, payload: &[u8]) -> bool {
        match self {
            CloseReply::Code(code) => {
                payload.len() >= 2 && u16::from_be_bytes([payload[0], payload[1]]) == *code
            }
            CloseReply::EchoOrNormal(code) => {
                payload.len() >= 2
                    && [*code, 1000].contains(&u16::from_be_bytes([payload[0], payload[1]]))
            }
            CloseReply::EmptyOrNormal => {
                payload.is_empty()
                    || (payload.len() >= 2 && u16::from_be_bytes([payload[0], payload[1]]) == 1000)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            CloseReply::Code(code) => format!("a close frame with code {code}"),
            CloseReply::EmptyOrNormal => "a close frame with no payload or code 1000".into(),
            CloseReply::EchoOrNormal(code) => format!("a close frame with code {code} or 1000"),
        }
    }
}

pub enum Step {
    /// The opening handshake offers these extensions (must be the first step): the server must accept
    /// (`accepted`, its answer checked against the offer) or decline.
    Offer {
        offer: String,
        accepted: bool,
    },
    /// One write of these bytes.
    Send(Vec<u8>),
    /// The bytes in writes of `chunk` bytes with `pause` between writes.
    Chopped {
        bytes: Vec<u8>,
        chunk: usize,
        pause: Duration,
    },
    /// The bytes written by a separate thread while the following steps read (joined at the end).
    SendInBackground(Vec<u8>),
    Pause(Duration),
    /// A whole data message (the server may fragment it) of this opcode and payload.
    ExpectMessage {
        opcode: u8,
        payload: Vec<u8>,
    },
    ExpectPong(Vec<u8>),
    /// A whole data message and a pong, in either order (RFC 6455 does not order a pong against the
    /// echo of a message received just before the ping).
    ExpectMessageAndPong {
        opcode: u8,
        payload: Vec<u8>,
        pong: Vec<u8>,
    },
    /// The server failed the connection: one close frame with this code, then TCP closed, nothing else.
    /// The client sends nothing more.
    ExpectFailure(u16),
    /// The server's close frame (an answer to ours), then TCP closed, nothing else.
    ExpectCloseReply(CloseReply),
    /// Several messages sent back to back and read back one by one: `count` messages of `payload`.
    /// Used by the limits family, where a script of thousands of steps would be wasteful.
    RoundTrips {
        opcode: u8,
        payload: Vec<u8>,
        count: usize,
    },
}

/// Builds a case's steps. Frames are accumulated in `pending` and written as one write when an
/// expectation follows (or `flush` is called), so a row of frames goes out in a single TCP segment.
pub struct Script {
    pub rng: Rng,
    pub steps: Vec<Step>,
    pending: Vec<u8>,
    sync_counter: u32,
}

impl Script {
    pub fn new(rng: Rng) -> Script {
        Script {
            rng,
            steps: Vec::new(),
            pending: Vec::new(),
            sync_counter: 0,
        }
    }

    /// Appends a masked frame to the pending bytes.
    pub fn frame(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> &mut Script {
        let key = self.rng.mask_key();
        let spec = FrameSpec {
            fin,
            rsv,
            opcode,
            mask: Some(key),
            length_override: None,
        };
        self.pending
            .extend_from_slice(&encode_frame(&spec, payload));
        self
    }

    /// Appends a frame built from a full spec (unmasked, odd length fields).
    pub fn raw_frame(&mut self, spec: FrameSpec, payload: &[u8]) -> &mut Script {
        self.pending
            .extend_from_slice(&encode_frame(&spec, payload));
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Script {
        self.pending.extend_from_slice(bytes);
        self
    }

    pub fn text(&mut self, payload: &[u8]) -> &mut Script {
        self.frame(true, 0, OP_TEXT, payload)
    }

    pub fn binary(&mut self, payload: &[u8]) -> &mut Script {
        self.frame(true, 0, OP_BINARY, payload)
    }

    pub fn ping(&mut self, payload: &[u8]) -> &mut Script {
        self.frame(true, 0, OP_PING, payload)
    }

    pub fn pong(&mut self, payload: &[u8]) -> &mut Script {
        self.frame(true, 0, OP_PONG, payload)
    }

    pub fn close(&mut self, payload: &[u8]) -> &mut Script {
        self.frame(true, 0, OP_CLOSE, payload)
    }

    /// Offers `offer` at the handshake; the server must accept it.
    pub fn offer(&mut self, offer: &str) -> &mut Script {
        assert!(
            self.steps.is_empty() && self.pending.is_empty(),
            "the offer comes first"
        );
        self.steps.push(Step::Offer {
            offer: offer.to_string(),
            accepted: true,
        });
        self
    }

    /// Offers `offer` at the handshake; the server must decline it.
    pub fn offer_declined(&mut self, offer: &str) -> &mut Script {
        assert!(
            self.steps.is_empty() && self.pending.is_empty(),
            "the offer comes first"
        );
        self.steps.push(Step::Offer {
            offer: offer.to_string(),
            accepted: false,
        });
        self
    }

    /// Appends a compressed message (permessage-deflate, raw deflate with a sync flush, tail removed,
    /// `window_bits` 9..=15, no context kept) in `frames` frames (as even as possible), RSV1 on the first.
    pub fn compressed(
        &mut self,
        opcode: u8,
        payload: &[u8],
        frames: usize,
        window_bits: u8,
    ) -> &mut Script {
        let compressed = deflate_payload(payload, window_bits);
        let fragment = compressed.len().div_ceil(frames.max(1)).max(1);
        let count = compressed.len().div_ceil(fragment).max(1);
        for index in 0..count {
            let start = (index * fragment).min(compressed.len());
            let end = ((index + 1) * fragment).min(compressed.len());
            let (op, rsv) = if index == 0 {
                (opcode, 0b100)
            } else {
                (OP_CONTINUATION, 0)
            };
            self.frame(index + 1 == count, rsv, op, &compressed[start..end]);
        }
        self
    }

    /// Appends a message split into frames of at most `fragment` bytes (at least one frame).
    pub fn fragmented(&mut self, opcode: u8, payload: &[u8], fragment: usize) -> &mut Script {
        let fragment = fragment.max(1);
        let count = payload.len().div_ceil(fragment).max(1);
        for index in 0..count {
            let start = (index * fragment).min(payload.len());
            let end = ((index + 1) * fragment).min(payload.len());
            let op = if index == 0 { opcode } else { OP_CONTINUATION };
            self.frame(index + 1 == count, 0, op, &payload[start..end]);
        }
        self
    }

    /// Takes the pending bytes back (to split or corrupt them by hand).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Writes the pending bytes as one write.
    pub fn flush(&mut self) -> &mut Script {
        if !self.pending.is_empty() {
            let bytes = std::mem::take(&mut self.pending);
            self.steps.push(Step::Send(bytes));
        }
        self
    }

    /// Writes the pending bytes from another thread while the next steps read the replies.
    pub fn flush_in_background(&mut self) -> &mut Script {
        if !self.pending.is_empty() {
            let bytes = std::mem::take(&mut self.pending);
            self.steps.push(Step::SendInBackground(bytes));
        }
        self
    }

    /// Writes the pending bytes in writes of `chunk` bytes, `pause` apart.
    pub fn flush_chopped(&mut self, chunk: usize, pause: Duration) -> &mut Script {
        if !self.pending.is_empty() {
            let bytes = std::mem::take(&mut self.pending);
            self.steps.push(Step::Chopped {
                bytes,
                chunk,
                pause,
            });
        }
        self
    }

    pub fn pause(&mut self, duration: Duration) -> &mut Script {
        self.flush();
        self.steps.push(Step::Pause(duration));
        self
    }

    pub fn expect_message(&mut self, opcode: u8, payload: &[u8]) -> &mut Script {
        self.flush();
        self.steps.push(Step::ExpectMessage {
            opcode,
            payload: payload.to_vec(),
        });
        self
    }

    pub fn expect_text(&mut self, payload: &[u8]) -> &mut Script {
        self.expect_message(OP_TEXT, payload)
    }

    pub fn expect_binary(&mut self, payload: &[u8]) -> &mut Script {
        self.expect_message(OP_BINARY, payload)
    }

    pub fn expect_message_and_pong(
        &mut self,
        opcode: u8,
        payload: &[u8],
        pong: &[u8],
    ) -> &mut Script {
        self.flush();
        self.steps.push(Step::ExpectMessageAndPong {
            opcode,
            payload: payload.to_vec(),
            pong: pong.to_vec(),
        });
        self
    }

    pub fn expect_pong(&mut self, payload: &[u8]) -> &mut Script {
        self.flush();
        self.steps.push(Step::ExpectPong(payload.to_vec()));
        self
    }

    /// Proves the server has sent nothing so far that the script did not expect, and that it is still
    /// reading: a ping with a unique payload whose pong must be the very next frame.
    pub fn sync(&mut self) -> &mut Script {
        self.sync_counter += 1;
        let payload = format!("sync-{}", self.sync_counter).into_bytes();
        self.ping(&payload);
        self.expect_pong(&payload)
    }

    pub fn expect_failure(&mut self, code: u16) -> &mut Script {
        self.flush();
        self.steps.push(Step::ExpectFailure(code));
        self
    }

    pub fn expect_close_reply(&mut self, reply: CloseReply) -> &mut Script {
        self.flush();
        self.steps.push(Step::ExpectCloseReply(reply));
        self
    }

    /// The normal end of a case: close with 1000, expect 1000 back and TCP closed by the server.
    pub fn close_normally(&mut self) -> &mut Script {
        self.close(&1000u16.to_be_bytes());
        self.expect_close_reply(CloseReply::Code(1000))
    }

    pub fn round_trips(&mut self, opcode: u8, payload: Vec<u8>, count: usize) -> &mut Script {
        self.flush();
        self.steps.push(Step::RoundTrips {
            opcode,
            payload,
            count,
        });
        self
    }

    pub fn finish(mut self) -> Vec<Step> {
        self.flush();
        self.steps
    }
}

/// Runs the steps over a new connection; `Err` says which step and what differed.
pub fn execute(
    addr: SocketAddr,
    timeout: Duration,
    rng: Rng,
    steps: Vec<Step>,
) -> Result<(), String> {
    let (offer, accepted) = match steps.first() {
        Some(Step::Offer { offer, accepted }) => (Some(offer.clone()), *accepted),
        _ => (None, false),
    };
    let mut client = Client::connect_offering(addr, timeout, rng, offer.as_deref(), accepted)
        .map_err(|e| format!("handshake: {e}"))?;
    let mut writers = Vec::new();
    let mut outcome = Ok(());
    for (index, step) in steps.into_iter().enumerate() {
        if let Step::Offer { .. } = step {
            continue;
        }
        if let Step::SendInBackground(bytes) = step {
            writers.push(client.spawn_writer(bytes));
            continue;
        }
        if let Err(error) = run_step(&mut client, step) {
            let note = match &client.write_error {
                Some(write_error) => format!(" (an earlier write failed: {write_error})"),
                None => String::new(),
            };
            outcome = Err(format!("step {}: {error}{note}", index + 1));
            break;
        }
    }
    if outcome.is_err() {
        // Unblock any writer still waiting on a server that stopped reading.
        client.shutdown_both();
    }
    for writer in writers {
        let _ = writer.join();
    }
    outcome
}

fn run_step(client: &mut Client, step: Step) -> Result<(), String> {
    match step {
        Step::SendInBackground(_) | Step::Offer { .. } => unreachable!("handled by execute"),
        Step::Send(bytes) => {
            client.send(&bytes);
            Ok(())
        }
        Step::Chopped {
            bytes,
            chunk,
            pause,
        } => {
            client.send_chopped(&bytes, chunk, pause);
            Ok(())
        }
        Step::Pause(duration) => {
            std::thread::sleep(duration);
            Ok(())
        }
        Step::ExpectMessage { opcode, payload } => expect_message(client, opcode, &payload),
        Step::ExpectMessageAndPong {
            opcode,
            payload,
            pong,
        } => {
            let wanted = format!("a {} message or a pong", opcode_name(opcode));
            let first = next_frame(client, &wanted)?;
            if first.opcode == OP_PONG {
                if first.payload != pong {
                    return Err(format!(
                        "expected a pong{}, got {}",
                        preview(&pong),
                        first.describe()
                    ));
                }
                expect_message(client, opcode, &payload)
            } else {
                continue_message(client, first, opcode, &payload)?;
                let frame = next_frame(client, &format!("a pong{}", preview(&pong)))?;
                if frame.opcode != OP_PONG || frame.payload != pong {
                    return Err(format!(
                        "expected a pong{}, got {}",
                        preview(&pong),
                        frame.describe()
                    ));
                }
                Ok(())
            }
        }
        Step::ExpectPong(payload) => {
            let frame = next_frame(client, &format!("a pong{}", preview(&payload)))?;
            if frame.opcode != OP_PONG || frame.payload != payload {
                return Err(format!(
                    "expected a pong of {} bytes{}, got {}",
                    payload.len(),
                    preview(&payload),
                    frame.describe()
                ));
            }
            Ok(())
        }
        Step::ExpectFailure(code) => {
            let wanted = CloseReply::Code(code);
            let frame = next_frame(client, &wanted.describe())?;
            check_close(&frame, &wanted)?;
            expect_tcp_closed(client)
        }
        Step::ExpectCloseReply(wanted) => {
            let frame = next_frame(client, &wanted.describe())?;
            check_close(&frame, &wanted)?;
            expect_tcp_closed(client)
        }
        Step::RoundTrips {
            opcode,
            payload,
            count,
        } => {
            let spec_opcode = opcode;
            for round in 0..count {
                let key = client.rng.mask_key();
                let spec = FrameSpec {
                    fin: true,
                    rsv: 0,
                    opcode: spec_opcode,
                    mask: Some(key),
                    length_override: None,
                };
                client.send(&encode_frame(&spec, &payload));
                expect_message(client, opcode, &payload)
                    .map_err(|e| format!("round trip {}: {e}", round + 1))?;
            }
            Ok(())
        }
    }
}

fn next_frame(client: &mut Client, wanted: &str) -> Result<Frame, String> {
    client
        .read_frame()
        .map_err(|end| format!("expected {wanted}, got {}", end.describe()))
}

fn check_close(frame: &Frame, wanted: &CloseReply) -> Result<(), String> {
    if frame.opcode != OP_CLOSE {
        return Err(format!(
            "expected {}, got {}",
            wanted.describe(),
            frame.describe()
        ));
    }
    if frame.payload.len() == 1 {
        return Err("server close frame has a 1-byte payload".into());
    }
    if frame.payload.len() >= 2 {
        let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
        if !close_code_may_be_sent(code) {
            return Err(format!(
                "server sent close code {code}, which must never be sent"
            ));
        }
        if std::str::from_utf8(&frame.payload[2..]).is_err() {
            return Err("server close reason is not valid UTF-8".into());
        }
    }
    if !wanted.matches(&frame.payload) {
        return Err(format!(
            "expected {}, got close frame {}",
            wanted.describe(),
            describe_close_payload(&frame.payload)
        ));
    }
    Ok(())
}

/// Codes an endpoint may put on the wire (RFC 6455 section 7.4, IANA registry).
pub fn close_code_may_be_sent(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// After a close frame the server must close TCP and send nothing more.
fn expect_tcp_closed(client: &mut Client) -> Result<(), String> {
    match client.read_frame() {
        Ok(frame) => Err(format!(
            "expected TCP closed after the close frame, got {}",
            frame.describe()
        )),
        Err(ReadEnd::Closed {
            leftover: 0,
            reset: false,
        }) => Ok(()),
        Err(end) => Err(format!(
            "expected TCP closed after the close frame, got {}",
            end.describe()
        )),
    }
}

fn expect_message(client: &mut Client, opcode: u8, payload: &[u8]) -> Result<(), String> {
    let wanted = format!(
        "a {} message of {} bytes{}",
        opcode_name(opcode),
        payload.len(),
        preview(payload)
    );
    let first = next_frame(client, &wanted)?;
    continue_message(client, first, opcode, payload)
}

/// Checks a data message whose first frame has been read already.
fn continue_message(
    client: &mut Client,
    first: Frame,
    opcode: u8,
    payload: &[u8],
) -> Result<(), String> {
    let wanted = format!(
        "a {} message of {} bytes{}",
        opcode_name(opcode),
        payload.len(),
        preview(payload)
    );
    if first.opcode != opcode {
        return Err(format!("expected {wanted}, got {}", first.describe()));
    }
    let mut fin = first.fin;
    let compressed = first.compressed;
    let mut received = first.payload;
    let mut fragments = 1usize;
    while !fin {
        let frame = next_frame(
            client,
            &format!("a continuation of the {} message", opcode_name(opcode)),
        )?;
        if frame.opcode != OP_CONTINUATION {
            return Err(format!(
                "in the middle of a fragmented {} message ({} bytes so far), got {}",
                opcode_name(opcode),
                received.len(),
                frame.describe()
            ));
        }
        fin = frame.fin;
        fragments += 1;
        received.extend_from_slice(&frame.payload);
    }
    if compressed {
        let deflate = client
            .deflate
            .as_mut()
            .ok_or("RSV1 without permessage-deflate agreed")?;
        received = deflate.inflate(&received, payload.len().max(1) * 2 + 1024)?;
    }
    if received != payload {
        let offset = received
            .iter()
            .zip(payload)
            .position(|(a, b)| a != b)
            .unwrap_or(received.len().min(payload.len()));
        return Err(format!(
            "expected {wanted}, got {} bytes in {fragments} frame(s){} (first difference at offset {offset})",
            received.len(),
            preview(&received)
        ));
    }
    if opcode == OP_TEXT && std::str::from_utf8(&received).is_err() {
        return Err("server sent a text message that is not valid UTF-8".into());
    }
    Ok(())
}

/// A frame spec helper for the cases that need unusual headers.
pub fn spec(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>) -> FrameSpec {
    FrameSpec {
        fin,
        rsv,
        opcode,
        mask,
        length_override: None,
    }
}

pub fn with_length(mut frame: FrameSpec, length: LengthField) -> FrameSpec {
    frame.length_override = Some(length);
    frame
}

/// A permessage-deflate payload: raw deflate with `window_bits`, a sync flush, the tail removed (RFC 7692
/// section 7.2.1). Made by flate2, not by the server's codec.
pub fn deflate_payload(payload: &[u8], window_bits: u8) -> Vec<u8> {
    let mut compress =
        flate2::Compress::new_with_window_bits(flate2::Compression::new(6), false, window_bits);
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 16 + 64);
    let mut offset = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let before = compress.total_in();
        compress
            .compress_vec(&payload[offset..], &mut out, flate2::FlushCompress::Sync)
            .expect("deflate");
        offset += (compress.total_in() - before) as usize;
        if offset == payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&crate::suite::wire::DEFLATE_TAIL));
    out.truncate(out.len() - 4);
    out
}
