//! Message payloads the load generator sends and the checks it runs on what comes back.
//!
//! Echo payloads: the sequence number (16 hex digits) then the connection id (8 hex digits), each written
//! least significant digit first, then the run's filler, cut to the message size. The filler (`Filler`,
//! made once per run) is `a..z` repeating (`--payload letters`, the default) or JSON-like records
//! (`--payload json`: objects with ids, names, flags, numbers and timestamps, which compress like real
//! JSON traffic; compressing the letters or random bytes would say nothing about permessage-deflate). Below 24
//! bytes the header is cut too, keeping the low digits of the sequence number, which change every message. Every byte of an
//! echo is compared; a payload from another connection or an older message is a mismatch.
//!
//! Broadcast payloads: `P`, 8 hex digits of the publisher id, 16 of its sequence number, 16 of the send
//! time (`CLOCK_MONOTONIC` ns), then the filler. All ASCII, so text and binary messages carry the same bytes.
//! Binary broadcast messages shorter than that (16 to 40 bytes) use the compact stamp instead: the publisher id
//! (u32), the low 32 bits of its sequence number (u32) and the send time (u64), little endian, then the filler;
//! the sequence number then wraps after 2^32 messages per publisher.
//! Nothing here allocates per message: callers keep one scratch buffer per thread.

use crate::wire::MessageKind;

pub const ECHO_HEADER: usize = 24;
pub const BROADCAST_HEADER: usize = 41;
pub const COMPACT_BROADCAST_HEADER: usize = 16;

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut [u8], value: u64) {
    let digits = out.len();
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *byte = HEX[((value >> shift) & 0xf) as usize];
    }
}

/// Like `put_hex`, least significant digit first.
fn put_hex_reversed(out: &mut [u8], value: u64) {
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = HEX[((value >> (4 * i)) & 0xf) as usize];
    }
}

fn echo_header(conn: u32, seq: u64) -> [u8; ECHO_HEADER] {
    let mut header = [0u8; ECHO_HEADER];
    put_hex_reversed(&mut header[..16], seq);
    put_hex_reversed(&mut header[16..], conn as u64);
    header
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for &d in digits {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | nibble as u64;
    }
    Some(value)
}

fn letter(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

/// What follows the stamp in every payload of a run (`--payload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// `a..z` repeating.
    #[default]
    Letters,
    /// JSON-like records (`{"id":..,"user":"..",..}`), no two alike: compresses like JSON traffic.
    Json,
}

/// The bytes every payload of the run carries at each offset (the stamp overwrites its start): `size`
/// bytes made once per run, so that checking a payload is one comparison.
pub fn filler(kind: PayloadKind, size: usize) -> Vec<u8> {
    match kind {
        PayloadKind::Letters => (0..size).map(letter).collect(),
        PayloadKind::Json => json_records(size),
    }
}

/// JSON-like records, deterministic, cut to `size` bytes. ASCII; quotes are the only bytes a JSON string
/// would need escaped.
fn json_records(size: usize) -> Vec<u8> {
    use std::io::Write;
    const USERS: [&str; 8] = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    const EVENTS: [&str; 6] = ["click", "view", "scroll", "purchase", "login", "logout"];
    const TAGS: [&str; 7] = ["red", "green", "blue", "new", "sale", "beta", "mobile"];
    let mut rng = crate::wire::Rng::new(0x5eed);
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(b"[");
    let mut id = 100_000u64;
    while out.len() < size {
        id += 1 + rng.below(7);
        let pick = |rng: &mut crate::wire::Rng, n: usize| rng.below(n as u64) as usize;
        let user = USERS[pick(&mut rng, USERS.len())];
        let event = EVENTS[pick(&mut rng, EVENTS.len())];
        let (tag1, tag2) = (
            TAGS[pick(&mut rng, TAGS.len())],
            TAGS[pick(&mut rng, TAGS.len())],
        );
        let cents = rng.below(100_000);
        let ts = 1_764_400_000_000 + rng.below(10_000_000);
        let _ = write!(
            out,
            r#"{{"id":{id},"user":"{user}","event":"{event}","ok":{},"price":{}.{:02},"tags":["{tag1}","{tag2}"],"ts":{ts}}},"#,
            rng.below(4) != 0,
            cents / 100,
            cents % 100,
        );
    }
    out.truncate(size);
    out
}

/// A reusable buffer holding the payload being sent (the filler is written once).
pub struct Scratch {
    buf: Vec<u8>,
}

impl Scratch {
    pub fn new(filler: &[u8]) -> Scratch {
        Scratch {
            buf: filler.to_vec(),
        }
    }

    /// The echo payload for `(conn, seq)`.
    pub fn echo(&mut self, conn: u32, seq: u64) -> &[u8] {
        let header = echo_header(conn, seq);
        let n = self.buf.len().min(ECHO_HEADER);
        self.buf[..n].copy_from_slice(&header[..n]);
        &self.buf
    }

    /// The broadcast payload for `(publisher, seq)` stamped with `sent_ns`.
    pub fn broadcast(&mut self, publisher: u32, seq: u64, sent_ns: u64) -> &[u8] {
        if self.buf.len() < BROADCAST_HEADER {
            self.buf[..4].copy_from_slice(&publisher.to_le_bytes());
            self.buf[4..8].copy_from_slice(&(seq as u32).to_le_bytes());
            self.buf[8..16].copy_from_slice(&sent_ns.to_le_bytes());
            return &self.buf;
        }
        self.buf[0] = b'P';
        put_hex(&mut self.buf[1..9], publisher as u64);
        put_hex(&mut self.buf[9..25], seq);
        put_hex(&mut self.buf[25..41], sent_ns);
        &self.buf
    }
}

/// Whether `payload` is exactly the echo payload of `(conn, seq)` over the run's `filler` (its size is
/// the message size).
pub fn echo_matches(payload: &[u8], conn: u32, seq: u64, filler: &[u8]) -> bool {
    if payload.len() != filler.len() {
        return false;
    }
    let header = echo_header(conn, seq);
    let n = filler.len().min(ECHO_HEADER);
    payload[..n] == header[..n] && payload[n..] == filler[n..]
}

/// Builds into `out` the ringws pub/sub command that publishes `payload` on `topic`: for text,
/// `{"op":"pub","topic":"T","data":"<payload>"}` (the payload is ASCII; its quotes and backslashes are
/// escaped, and the server delivers the string's text, the payload itself); for binary,
/// `[3][topic length][topic][payload]`.
pub fn publish_command(out: &mut Vec<u8>, kind: MessageKind, topic: &str, payload: &[u8]) {
    out.clear();
    match kind {
        MessageKind::Text => {
            out.extend_from_slice(br#"{"op":"pub","topic":""#);
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(br#"","data":""#);
            for &byte in payload {
                if byte == b'"' || byte == b'\\' {
                    out.push(b'\\');
                }
                out.push(byte);
            }
            out.extend_from_slice(br#""}"#);
        }
        MessageKind::Binary => {
            out.push(3);
            out.push(topic.len() as u8);
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(payload);
        }
    }
}

/// A decoded broadcast payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Decodes and checks a broadcast payload over the run's `filler` (its size is the message size); `None`
/// if any byte is wrong.
pub fn parse_broadcast(payload: &[u8], filler: &[u8]) -> Option<Stamp> {
    let size = filler.len();
    if size < BROADCAST_HEADER {
        return parse_compact_broadcast(payload, filler);
    }
    if payload.len() != size || size < BROADCAST_HEADER || payload[0] != b'P' {
        return None;
    }
    let stamp = Stamp {
        publisher: parse_hex(&payload[1..9])? as u32,
        seq: parse_hex(&payload[9..25])?,
        sent_ns: parse_hex(&payload[25..41])?,
    };
    (payload[BROADCAST_HEADER..] == filler[BROADCAST_HEADER..]).then_some(stamp)
}

/// The compact stamp of binary broadcast messages of 16 to 40 bytes.
fn parse_compact_broadcast(payload: &[u8], filler: &[u8]) -> Option<Stamp> {
    let size = filler.len();
    if payload.len() != size || size < COMPACT_BROADCAST_HEADER {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(payload[at..at + 4].try_into().unwrap());
    let stamp = Stamp {
        publisher: u32_at(0),
        seq: u32_at(4) as u64,
        sent_ns: u64::from_le_bytes(payload[8..16].try_into().unwrap()),
    };
    (payload[COMPACT_BROADCAST_HEADER..] == filler[COMPACT_BROADCAST_HEADER..]).then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(size: usize) -> Vec<u8> {
        filler(PayloadKind::Letters, size)
    }

    #[test]
    fn echo_round_trip_and_every_byte_checked() {
        for kind in [PayloadKind::Letters, PayloadKind::Json] {
            for size in [0usize, 1, 8, 20, 24, 25, 1024] {
                let filler = filler(kind, size);
                let mut scratch = Scratch::new(&filler);
                let mut payload = scratch.echo(7, 123_456).to_vec();
                assert!(echo_matches(&payload, 7, 123_456, &filler));
                assert_eq!(echo_matches(&payload, 7, 123_457, &filler), size == 0);
                assert_eq!(echo_matches(&payload, 8, 123_456, &filler), size <= 16);
                for i in 0..size {
                    payload[i] ^= 1;
                    assert!(
                        !echo_matches(&payload, 7, 123_456, &filler),
                        "{kind:?} size {size} byte {i}"
                    );
                    payload[i] ^= 1;
                }
                assert!(
                    !echo_matches(&payload[..size.saturating_sub(1)], 7, 123_456, &filler)
                        || size == 0
                );
            }
        }
    }

    #[test]
    fn letters_repeat_a_to_z() {
        let letters = letters(60);
        assert_eq!(&letters[..28], b"abcdefghijklmnopqrstuvwxyzab");
        assert_eq!(letters.len(), 60);
    }

    #[test]
    fn json_filler_is_json_records_of_the_exact_size_and_compresses_like_json() {
        let json = filler(PayloadKind::Json, 4096);
        assert_eq!(json.len(), 4096);
        assert!(json.is_ascii());
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.starts_with(r#"[{"id":"#), "{text}");
        // Whole records parse as JSON objects, and no two are alike.
        let whole = &text[1..text.rfind("},").unwrap() + 1];
        let records: Vec<serde_json::Value> =
            serde_json::from_str(&format!("[{whole}]")).expect("JSON records");
        assert!(records.len() > 20);
        assert!(records
            .iter()
            .all(|r| r["user"].is_string() && r["ts"].is_u64()));
        let distinct: std::collections::HashSet<String> =
            records.iter().map(|r| r.to_string()).collect();
        assert_eq!(distinct.len(), records.len());
        // A 1 KiB message compresses (alone, no context) to between a fifth and a half of its size:
        // like JSON, unlike random bytes (no gain) or the letters (a few percent).
        let ratio = |bytes: &[u8]| {
            let mut out = Vec::new();
            assert!(
                ringws::protocol::deflate::Compressor::new(6, 15, false).compress(bytes, &mut out)
            );
            out.len() as f64 / bytes.len() as f64
        };
        let json_ratio = ratio(&json[..1024]);
        assert!(
            (0.2..0.5).contains(&json_ratio),
            "json 1 KiB ratio {json_ratio}"
        );
        assert!(ratio(&letters(1024)) < 0.1);
    }

    #[test]
    fn publish_commands() {
        let mut out = Vec::new();
        publish_command(&mut out, MessageKind::Text, "a/b", b"Pxyz");
        assert_eq!(out, br#"{"op":"pub","topic":"a/b","data":"Pxyz"}"#);
        publish_command(&mut out, MessageKind::Text, "a/b", br#"P{"k":"v\n"}"#);
        assert_eq!(
            out,
            br#"{"op":"pub","topic":"a/b","data":"P{\"k\":\"v\\n\"}"}"#
        );
        let command: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(command["data"], r#"P{"k":"v\n"}"#);
        publish_command(&mut out, MessageKind::Binary, "a/b", b"Pxyz");
        assert_eq!(out, b"\x03\x03a/bPxyz");
    }

    #[test]
    fn broadcast_round_trip() {
        for kind in [PayloadKind::Letters, PayloadKind::Json] {
            let filler = filler(kind, 64);
            let mut scratch = Scratch::new(&filler);
            let mut payload = scratch.broadcast(3, 99, 1_234_567_890).to_vec();
            assert_eq!(
                parse_broadcast(&payload, &filler),
                Some(Stamp {
                    publisher: 3,
                    seq: 99,
                    sent_ns: 1_234_567_890
                })
            );
            payload[50] = b'!';
            assert_eq!(parse_broadcast(&payload, &filler), None);
            assert_eq!(parse_broadcast(&payload[..63], &filler), None);
        }
    }

    #[test]
    fn compact_broadcast_round_trip() {
        for size in [16usize, 17, 40] {
            let filler = letters(size);
            let mut scratch = Scratch::new(&filler);
            let mut payload = scratch.broadcast(70_000, 5, 987_654_321_012).to_vec();
            assert_eq!(payload.len(), size);
            assert_eq!(
                parse_broadcast(&payload, &filler),
                Some(Stamp {
                    publisher: 70_000,
                    seq: 5,
                    sent_ns: 987_654_321_012
                })
            );
            assert_eq!(parse_broadcast(&payload[..size - 1], &filler), None);
            if size > 16 {
                payload[size - 1] = b'!';
                assert_eq!(parse_broadcast(&payload, &filler), None);
            }
        }
        assert_eq!(parse_broadcast(&[0u8; 15], &letters(15)), None);
    }
}
