//! The suite's own raw WebSocket client: the opening handshake, client frame encoding (masked, or
//! deliberately malformed) and strict decoding of what the server sends back.
//!
//! It owns nothing of the server and shares no code with `ringws::protocol`, so a bug there cannot hide
//! itself here. It must never tolerate a server frame RFC 6455 forbids (a masked server frame, a control
//! frame over 125 bytes or fragmented, reserved bits or opcodes): those are reported as failures.
//!
//! permessage-deflate (RFC 7692): a client may offer it; the server's answer is checked against the offer
//! (one element, known parameters, no duplicates, `client_max_window_bits` only when offered, windows
//! within what was offered), RSV1 is then allowed on the first frame of a data message only, and compressed
//! messages are inflated here (flate2 over the window the server may use: a server that compresses with a
//! wider window than it agreed fails to inflate).

use base64::Engine as _;
use sha1::{Digest, Sha1};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Larger server frames are reported as malformed rather than buffered (the suite never sends a
/// message over 17 MiB, so no correct echo needs more).
const MAX_SERVER_FRAME: u64 = 64 << 20;

const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A small deterministic generator (xorshift64*) for mask keys and payload bytes, seeded per case so
/// a failure can be replayed byte for byte.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(text: &str) -> Rng {
        // FNV-1a of the seed text; never zero.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(hash | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn mask_key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_be_bytes()
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// XORs `payload` with `key` (RFC 6455 section 5.3), eight bytes at a time where it can.
pub fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let value = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so key phase 0.
    for (index, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[index % 4];
    }
}

/// Everything that can be put into one client frame header, including what RFC 6455 forbids.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub fin: bool,
    /// RSV1..RSV3 as the three bits 0b100, 0b010, 0b001.
    pub rsv: u8,
    pub opcode: u8,
    /// `None` sends the frame unmasked (a protocol error from a client).
    pub mask: Option<[u8; 4]>,
    /// Overrides the length field (e.g. a 64-bit length with the top bit set); the payload bytes
    /// actually sent are still `payload`.
    pub length_override: Option<LengthField>,
}

#[derive(Clone, Copy, Debug)]
pub enum LengthField {
    /// 7-bit length 0..=125 written as-is.
    Short(u8),
    /// 126 followed by a 16-bit length.
    Medium(u16),
    /// 127 followed by a 64-bit length.
    Long(u64),
}

impl LengthField {
    fn minimal(len: usize) -> LengthField {
        if len <= 125 {
            LengthField::Short(len as u8)
        } else if len <= 0xFFFF {
            LengthField::Medium(len as u16)
        } else {
            LengthField::Long(len as u64)
        }
    }
}

/// Encodes one client frame.
pub fn encode_frame(spec: &FrameSpec, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    let mut first = spec.opcode & 0x0F;
    if spec.fin {
        first |= 0x80;
    }
    first |= (spec.rsv & 0x07) << 4;
    out.push(first);
    let mask_bit = if spec.mask.is_some() { 0x80 } else { 0 };
    match spec
        .length_override
        .unwrap_or_else(|| LengthField::minimal(payload.len()))
    {
        LengthField::Short(len) => out.push(mask_bit | (len & 0x7F)),
        LengthField::Medium(len) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&len.to_be_bytes());
        }
        LengthField::Long(len) => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    let start = match spec.mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.len()
        }
        None => out.len(),
    };
    out.extend_from_slice(payload);
    if let Some(key) = spec.mask {
        apply_mask(&mut out[start..], key);
    }
    out
}

/// A frame received from the server, already checked against the rules every server frame must follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
    /// RSV1 set (permessage-deflate agreed, first frame of a data message): the message is compressed.
    pub compressed: bool,
}

/// The sync flush's tail, removed by the sender and appended by the receiver (RFC 7692 section 7.2).
pub const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// permessage-deflate as the server answered it.
pub struct Deflate {
    /// The server keeps its context between messages (no `server_no_context_takeover` in the answer).
    server_context: bool,
    /// The largest window the server may compress with (bits).
    window_bits: u8,
    inflater: flate2::Decompress,
}

impl Deflate {
    /// Inflates one message's payload (the tail appended here), at most `limit` bytes. The output goes
    /// out 256 bytes at a time, so that zlib can reach back only as far as the agreed window (it would
    /// otherwise accept any distance into the output of the same call).
    pub fn inflate(&mut self, payload: &[u8], limit: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let input = [payload, &DEFLATE_TAIL[..]].concat();
        let mut offset = 0;
        let mut chunk = [0u8; 256];
        loop {
            let (before_in, before_out) = (self.inflater.total_in(), self.inflater.total_out());
            let status = self
                .inflater
                .decompress(&input[offset..], &mut chunk, flate2::FlushDecompress::Sync)
                .map_err(|e| format!("the server's compressed message does not inflate: {e}"))?;
            offset += (self.inflater.total_in() - before_in) as usize;
            let produced = (self.inflater.total_out() - before_out) as usize;
            out.extend_from_slice(&chunk[..produced]);
            if out.len() > limit {
                return Err(format!("inflated message over {limit} bytes"));
            }
            if offset == input.len() && produced < chunk.len()
                || status == flate2::Status::StreamEnd
            {
                break;
            }
            if produced == 0 && offset == input.len() {
                break;
            }
        }
        if !self.server_context {
            self.inflater.reset(false);
        }
        let (longest, _) =
            crate::suite::deflate_window::longest_reference(&input, !self.server_context)?;
        if longest > 1 << self.window_bits {
            return Err(format!(
                "a back-reference {longest} bytes back, beyond the {}-bit window agreed",
                self.window_bits
            ));
        }
        Ok(out)
    }
}

/// The parameters of one extension element: `name; a; b=1; c="2"` -> (name, [(a, None), (b, 1), (c, 2)]).
fn parse_element(element: &str) -> (String, Vec<(String, Option<String>)>) {
    let mut parts = element.split(';');
    let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = parts
        .map(|param| match param.split_once('=') {
            Some((key, value)) => (
                key.trim().to_ascii_lowercase(),
                Some(value.trim().trim_matches('"').to_string()),
            ),
            None => (param.trim().to_ascii_lowercase(), None),
        })
        .collect();
    (name, params)
}

/// Checks the server's `Sec-WebSocket-Extensions` answer against the client's offer (several elements
/// possible: the answer must honour one of them) and returns the state to inflate with.
pub fn check_deflate_answer(offer: &str, answer: &str) -> Result<Deflate, String> {
    if answer.contains(',') {
        return Err(format!("answer {answer:?} has more than one element"));
    }
    let (name, params) = parse_element(answer);
    if name != "permessage-deflate" {
        return Err(format!("answer {answer:?} is not permessage-deflate"));
    }
    let mut seen = Vec::new();
    let (mut server_context, mut server_bits, mut client_bits) = (true, 15u8, None);
    for (key, value) in &params {
        if seen.contains(key) {
            return Err(format!("answer {answer:?} repeats {key}"));
        }
        seen.push(key.clone());
        let bits = || -> Result<u8, String> {
            value
                .as_deref()
                .and_then(|v| v.parse::<u8>().ok())
                .filter(|b| {
                    (8..=15).contains(b) && !value.as_deref().unwrap_or("").starts_with('0')
                })
                .ok_or(format!("answer {answer:?}: {key} needs a value of 8 to 15"))
        };
        match key.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" if value.is_some() => {
                return Err(format!("answer {answer:?}: {key} takes no value"));
            }
            "server_no_context_takeover" => server_context = false,
            "client_no_context_takeover" => {}
            "server_max_window_bits" => server_bits = bits()?,
            "client_max_window_bits" => client_bits = Some(bits()?),
            _ => return Err(format!("answer {answer:?}: unknown parameter {key}")),
        }
    }
    // The answer must fit one of the offers.
    let fits = offer
        .split(',')
        .map(parse_element)
        .any(|(offered, offered_params)| {
            let get = |key: &str| offered_params.iter().find(|(k, _)| k == key);
            offered == "permessage-deflate"
                && client_bits.is_none_or(|bits| {
                    get("client_max_window_bits").is_some_and(|(_, value)| {
                        value
                            .as_deref()
                            .is_none_or(|v| v.parse::<u8>().is_ok_and(|o| bits <= o))
                    })
                })
                && get("server_max_window_bits").is_none_or(|(_, value)| {
                    value
                        .as_deref()
                        .and_then(|v| v.parse::<u8>().ok())
                        .is_some_and(|o| {
                            seen.iter().any(|k| k == "server_max_window_bits") && server_bits <= o
                        })
                })
                && (get("server_no_context_takeover").is_none() || !server_context)
        });
    if !fits {
        return Err(format!(
            "answer {answer:?} does not honour the offer {offer:?}"
        ));
    }
    Ok(Deflate {
        server_context,
        window_bits: server_bits,
        inflater: flate2::Decompress::new_with_window_bits(false, server_bits.max(9)),
    })
}

impl Frame {
    pub fn describe(&self) -> String {
        let name = opcode_name(self.opcode);
        if self.opcode == OP_CLOSE {
            format!("close frame {}", describe_close_payload(&self.payload))
        } else {
            format!(
                "{name} frame (fin={}, {} bytes{})",
                self.fin,
                self.payload.len(),
                preview(&self.payload)
            )
        }
    }
}

pub fn opcode_name(opcode: u8) -> String {
    match opcode {
        OP_CONTINUATION => "continuation".into(),
        OP_TEXT => "text".into(),
        OP_BINARY => "binary".into(),
        OP_CLOSE => "close".into(),
        OP_PING => "ping".into(),
        OP_PONG => "pong".into(),
        other => format!("opcode {other:#x}"),
    }
}

pub fn describe_close_payload(payload: &[u8]) -> String {
    match payload.len() {
        0 => "with no payload".into(),
        1 => "with a 1-byte payload".into(),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            match std::str::from_utf8(&payload[2..]) {
                Ok("") => format!("code {code}"),
                Ok(reason) => format!("code {code} reason {reason:?}"),
                Err(_) => format!("code {code} with an invalid UTF-8 reason"),
            }
        }
    }
}

/// A short hex preview of the first bytes of a payload, for failure messages.
pub fn preview(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 16 { " .." } else { "" };
    format!(": {}{more}", shown.join(" "))
}

/// What a read produced when it did not produce a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The server closed TCP: a read returned 0 bytes, or the connection was reset.
    Closed { reset: bool, leftover: usize },
    /// Nothing complete arrived within the timeout.
    Timeout { buffered: usize },
    /// The server sent bytes that break RFC 6455 for a server frame.
    Malformed(String),
    /// Some other socket error.
    Io(String),
}

impl ReadEnd {
    pub fn describe(&self) -> String {
        match self {
            ReadEnd::Closed { reset, leftover } => {
                let how = if *reset { "reset" } else { "closed" };
                if *leftover > 0 {
                    format!("TCP {how} by the server in the middle of a frame ({leftover} bytes buffered)")
                } else {
                    format!("TCP {how} by the server")
                }
            }
            ReadEnd::Timeout { buffered } => {
                format!(
                    "nothing within the timeout ({buffered} bytes of an incomplete frame buffered)"
                )
            }
            ReadEnd::Malformed(what) => format!("malformed server frame: {what}"),
            ReadEnd::Io(what) => format!("socket error: {what}"),
        }
    }
}

/// One client connection after a successful opening handshake.
pub struct Client {
    stream: TcpStream,
    received: Vec<u8>,
    /// Where each read lands before it is appended to `received`.
    scratch: Vec<u8>,
    /// Offset of the first unconsumed byte in `received`.
    consumed: usize,
    pub timeout: Duration,
    pub rng: Rng,
    /// The first write error seen (the server may legitimately close while the client still writes).
    pub write_error: Option<String>,
    /// permessage-deflate, when offered and agreed.
    pub deflate: Option<Deflate>,
}

impl Client {
    /// Connects and performs the opening handshake, checking the 101 answer and `Sec-WebSocket-Accept`;
    /// with a `Sec-WebSocket-Extensions` offer, which the server must accept (`accepted`, its answer
    /// checked against the offer) or decline (no answer).
    pub fn connect_offering(
        addr: SocketAddr,
        timeout: Duration,
        rng: Rng,
        offer: Option<&str>,
        accepted: bool,
    ) -> Result<Client, String> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set_nodelay: {e}"))?;
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| format!("set_write_timeout: {e}"))?;
        let mut client = Client {
            stream,
            received: Vec::with_capacity(64 * 1024),
            scratch: vec![0; 256 * 1024],
            consumed: 0,
            timeout,
            rng,
            write_error: None,
            deflate: None,
        };
        let answer = client.handshake(addr, offer)?;
        match (offer, answer) {
            (None, None) => {}
            (None, Some(answer)) => {
                return Err(format!("extensions answered without an offer: {answer:?}"))
            }
            (Some(offer), None) if accepted => {
                return Err(format!(
                    "the offer {offer:?} was declined (no Sec-WebSocket-Extensions)"
                ))
            }
            (Some(_), None) => {}
            (Some(offer), Some(answer)) if !accepted => {
                return Err(format!(
                    "the offer {offer:?} should be declined, got {answer:?}"
                ))
            }
            (Some(offer), Some(answer)) => {
                client.deflate = Some(check_deflate_answer(offer, &answer)?);
            }
        }
        Ok(client)
    }

    /// The opening handshake; returns the `Sec-WebSocket-Extensions` answer, if any.
    fn handshake(
        &mut self,
        addr: SocketAddr,
        offer: Option<&str>,
    ) -> Result<Option<String>, String> {
        let mut key_bytes = [0u8; 16];
        self.rng.fill(&mut key_bytes);
        let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
        let extensions = offer
            .map(|offer| format!("Sec-WebSocket-Extensions: {offer}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n"
        );
        self.stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("write handshake: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let head_end = loop {
            if let Some(pos) = find(&self.received, b"\r\n\r\n") {
                break pos + 4;
            }
            if self.received.len() > 16 * 1024 {
                return Err("handshake response headers exceed 16 KiB".into());
            }
            match self.fill(deadline) {
                Ok(()) => {}
                Err(end) => return Err(format!("handshake response: {}", end.describe())),
            }
        };
        let head = String::from_utf8_lossy(&self.received[..head_end]).into_owned();
        self.consumed = head_end;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        if !status.starts_with("HTTP/1.1 101") {
            return Err(format!(
                "handshake answered {status:?}, expected HTTP/1.1 101"
            ));
        }
        let mut accept = None;
        let mut upgrade = None;
        let mut connection = None;
        let mut answer: Option<String> = None;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim().to_string();
                match name.trim().to_ascii_lowercase().as_str() {
                    "sec-websocket-accept" => accept = Some(value),
                    "upgrade" => upgrade = Some(value),
                    "connection" => connection = Some(value),
                    "sec-websocket-extensions" => {
                        answer = Some(match answer {
                            Some(earlier) => format!("{earlier}, {value}"),
                            None => value,
                        })
                    }
                    _ => {}
                }
            }
        }
        let mut hasher = Sha1::new();
        hasher.update(key.as_bytes());
        hasher.update(WEBSOCKET_GUID.as_bytes());
        let expected = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());
        if accept.as_deref() != Some(expected.as_str()) {
            return Err(format!(
                "Sec-WebSocket-Accept {accept:?}, expected {expected:?}"
            ));
        }
        if !upgrade.is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
            return Err("101 response without `Upgrade: websocket`".into());
        }
        if !connection.is_some_and(|v| {
            v.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        }) {
            return Err("101 response without `Connection: Upgrade`".into());
        }
        Ok(answer)
    }

    /// Writes bytes in one write call. A write error is remembered, not returned: the server may have
    /// closed already, and what it sent before that is what the case checks.
    pub fn send(&mut self, bytes: &[u8]) {
        if self.write_error.is_some() {
            return;
        }
        if let Err(error) = self.stream.write_all(bytes) {
            self.write_error = Some(error.to_string());
        }
    }

    /// Writes bytes in chunks of `chunk` bytes, pausing `pause` between chunks (zero: no pause, each
    /// chunk still its own write and, with Nagle off, its own TCP segment).
    pub fn send_chopped(&mut self, bytes: &[u8], chunk: usize, pause: Duration) {
        for (index, piece) in bytes.chunks(chunk.max(1)).enumerate() {
            if index > 0 && !pause.is_zero() {
                std::thread::sleep(pause);
            }
            self.send(piece);
            if self.write_error.is_some() {
                return;
            }
        }
    }

    /// Reads more bytes into the receive buffer, or says why it could not before `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), ReadEnd> {
        if self.consumed > 0 && self.consumed == self.received.len() {
            self.received.clear();
            self.consumed = 0;
        } else if self.consumed > 1 << 20 {
            self.received.drain(..self.consumed);
            self.consumed = 0;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadEnd::Timeout {
                buffered: self.received.len() - self.consumed,
            });
        }
        let _ = self.stream.set_read_timeout(Some(deadline - now));
        let old_len = self.received.len();
        // Read into a scratch buffer zeroed once, then copy: no per-read zero-fill of spare capacity.
        let result = self.stream.read(&mut self.scratch);
        match result {
            Ok(0) => Err(ReadEnd::Closed {
                reset: false,
                leftover: old_len - self.consumed,
            }),
            Ok(n) => {
                self.received.extend_from_slice(&self.scratch[..n]);
                Ok(())
            }
            Err(error) => match error.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => Err(ReadEnd::Timeout {
                    buffered: old_len - self.consumed,
                }),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => Err(ReadEnd::Closed {
                    reset: true,
                    leftover: old_len - self.consumed,
                }),
                ErrorKind::Interrupted => Ok(()),
                _ => Err(ReadEnd::Io(error.to_string())),
            },
        }
    }

    /// Reads the next whole frame, waiting at most `self.timeout`.
    pub fn read_frame(&mut self) -> Result<Frame, ReadEnd> {
        self.read_frame_within(self.timeout)
    }

    pub fn read_frame_within(&mut self, timeout: Duration) -> Result<Frame, ReadEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.parse_frame()? {
                return Ok(frame);
            }
            self.fill(deadline)?;
        }
    }

    /// Parses one frame out of the receive buffer if it is complete.
    fn parse_frame(&mut self) -> Result<Option<Frame>, ReadEnd> {
        let buf = &self.received[self.consumed..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        let rsv = (buf[0] >> 4) & 0x07;
        let opcode = buf[0] & 0x0F;
        let masked = buf[1] & 0x80 != 0;
        let (len, header) = match buf[1] & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                let len = u16::from_be_bytes([buf[2], buf[3]]) as u64;
                if len < 126 {
                    return Err(ReadEnd::Malformed(format!(
                        "16-bit length {len} where the 7-bit form is required"
                    )));
                }
                (len, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(ReadEnd::Malformed(
                        "64-bit length with the top bit set".into(),
                    ));
                }
                if len <= 0xFFFF {
                    return Err(ReadEnd::Malformed(format!(
                        "64-bit length {len} where a shorter form is required"
                    )));
                }
                (len, 10)
            }
            short => (short as u64, 2),
        };
        if masked {
            return Err(ReadEnd::Malformed(
                "server frame has the MASK bit set".into(),
            ));
        }
        let compressed =
            rsv == 0b100 && self.deflate.is_some() && matches!(opcode, OP_TEXT | OP_BINARY);
        if rsv != 0 && !compressed {
            return Err(ReadEnd::Malformed(format!("reserved bits {rsv:#05b} set")));
        }
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(ReadEnd::Malformed(format!("reserved opcode {opcode:#x}")));
        }
        if opcode >= 0x8 && (!fin || len > 125) {
            return Err(ReadEnd::Malformed(format!(
                "control frame {} with fin={fin} and {len} bytes",
                opcode_name(opcode)
            )));
        }
        if len > MAX_SERVER_FRAME {
            return Err(ReadEnd::Malformed(format!(
                "server frame announces {len} bytes, more than any message the suite sends"
            )));
        }
        let total = header as u64 + len;
        if (buf.len() as u64) < total {
            let needed = total as usize;
            if self.received.capacity() < self.consumed + needed {
                self.received
                    .reserve(self.consumed + needed - self.received.len());
            }
            return Ok(None);
        }
        let payload = buf[header..total as usize].to_vec();
        self.consumed += total as usize;
        Ok(Some(Frame {
            fin,
            opcode,
            payload,
            compressed,
        }))
    }

    /// Writes `bytes` from a new thread on a clone of the socket (write errors are ignored there: the
    /// reader sees their effect).
    pub fn spawn_writer(&self, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
        let stream = self.stream.try_clone();
        std::thread::spawn(move || {
            if let Ok(mut stream) = stream {
                let _ = stream.write_all(&bytes);
            }
        })
    }

    pub fn shutdown_both(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
