//! Message payloads the load generator sends and the checks it runs on what comes back.
//!
//! Echo payloads: the sequence number (16 hex digits) then the connection id (8 hex digits), each written
//! least significant digit first, then a fixed filler (`a..z` repeating), cut to the message size. Below 24
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

fn filler(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

/// A reusable buffer holding the payload being sent (the filler is written once).
pub struct Scratch {
    buf: Vec<u8>,
}

impl Scratch {
    pub fn new(size: usize) -> Scratch {
        Scratch {
            buf: (0..size).map(filler).collect(),
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

/// Whether `payload` is exactly the echo payload of `(conn, seq)` at `size` bytes.
pub fn echo_matches(payload: &[u8], conn: u32, seq: u64, size: usize) -> bool {
    if payload.len() != size {
        return false;
    }
    let header = echo_header(conn, seq);
    let n = size.min(ECHO_HEADER);
    payload[..n] == header[..n] && filler_matches(&payload[n..], n)
}

/// The filler repeated 64 times, so that checking it is a few `memcmp`s rather than a loop per byte.
const FILLER_PERIOD: usize = 26;
static FILLER_PATTERN: [u8; FILLER_PERIOD * 64] = {
    let mut pattern = [0u8; FILLER_PERIOD * 64];
    let mut i = 0;
    while i < pattern.len() {
        pattern[i] = b'a' + (i % FILLER_PERIOD) as u8;
        i += 1;
    }
    pattern
};

/// Whether `bytes` is the filler as it appears from payload offset `start` on.
fn filler_matches(bytes: &[u8], start: usize) -> bool {
    let longest = FILLER_PATTERN.len() - FILLER_PERIOD;
    let mut pos = 0;
    while pos < bytes.len() {
        let phase = (start + pos) % FILLER_PERIOD;
        let take = (bytes.len() - pos).min(longest);
        if bytes[pos..pos + take] != FILLER_PATTERN[phase..phase + take] {
            return false;
        }
        pos += take;
    }
    true
}

/// Builds into `out` the ringws pub/sub command that publishes `payload` on `topic`: for text,
/// `{"op":"pub","topic":"T","data":"<payload>"}` (the payload is ASCII without quotes or backslashes, so it
/// needs no escaping); for binary, `[3][topic length][topic][payload]`.
pub fn publish_command(out: &mut Vec<u8>, kind: MessageKind, topic: &str, payload: &[u8]) {
    out.clear();
    match kind {
        MessageKind::Text => {
            out.extend_from_slice(br#"{"op":"pub","topic":""#);
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(br#"","data":""#);
            out.extend_from_slice(payload);
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

/// Decodes and checks a broadcast payload of `size` bytes; `None` if any byte is wrong.
pub fn parse_broadcast(payload: &[u8], size: usize) -> Option<Stamp> {
    if size < BROADCAST_HEADER {
        return parse_compact_broadcast(payload, size);
    }
    if payload.len() != size || size < BROADCAST_HEADER || payload[0] != b'P' {
        return None;
    }
    let stamp = Stamp {
        publisher: parse_hex(&payload[1..9])? as u32,
        seq: parse_hex(&payload[9..25])?,
        sent_ns: parse_hex(&payload[25..41])?,
    };
    filler_matches(&payload[BROADCAST_HEADER..], BROADCAST_HEADER).then_some(stamp)
}

/// The compact stamp of binary broadcast messages of 16 to 40 bytes.
fn parse_compact_broadcast(payload: &[u8], size: usize) -> Option<Stamp> {
    if payload.len() != size || size < COMPACT_BROADCAST_HEADER {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(payload[at..at + 4].try_into().unwrap());
    let stamp = Stamp {
        publisher: u32_at(0),
        seq: u32_at(4) as u64,
        sent_ns: u64::from_le_bytes(payload[8..16].try_into().unwrap()),
    };
    filler_matches(
        &payload[COMPACT_BROADCAST_HEADER..],
        COMPACT_BROADCAST_HEADER,
    )
    .then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trip_and_every_byte_checked() {
        for size in [0usize, 1, 8, 20, 24, 25, 1024] {
            let mut scratch = Scratch::new(size);
            let mut payload = scratch.echo(7, 123_456).to_vec();
            assert!(echo_matches(&payload, 7, 123_456, size));
            assert_eq!(echo_matches(&payload, 7, 123_457, size), size == 0);
            assert_eq!(echo_matches(&payload, 8, 123_456, size), size <= 16);
            for i in 0..size {
                payload[i] ^= 1;
                assert!(
                    !echo_matches(&payload, 7, 123_456, size),
                    "size {size} byte {i}"
                );
                payload[i] ^= 1;
            }
            assert!(
                !echo_matches(&payload[..size.saturating_sub(1)], 7, 123_456, size) || size == 0
            );
        }
    }

    #[test]
    fn filler_check_matches_the_byte_loop_at_every_offset() {
        let expected: Vec<u8> = (0..5000).map(filler).collect();
        for start in [0usize, 1, 24, 25, 41, 1000] {
            for len in [0usize, 1, 25, 26, 1637, 1638, 1639, 1700, 3300] {
                let slice = &expected[start..start + len];
                assert!(filler_matches(slice, start), "start {start} len {len}");
                if len > 0 {
                    let mut bad = slice.to_vec();
                    bad[len - 1] ^= 0x20;
                    assert!(!filler_matches(&bad, start), "start {start} len {len}");
                }
            }
        }
    }

    #[test]
    fn publish_commands() {
        let mut out = Vec::new();
        publish_command(&mut out, MessageKind::Text, "a/b", b"Pxyz");
        assert_eq!(out, br#"{"op":"pub","topic":"a/b","data":"Pxyz"}"#);
        publish_command(&mut out, MessageKind::Binary, "a/b", b"Pxyz");
        assert_eq!(out, b"\x03\x03a/bPxyz");
    }

    #[test]
    fn broadcast_round_trip() {
        let mut scratch = Scratch::new(64);
        let mut payload = scratch.broadcast(3, 99, 1_234_567_890).to_vec();
        assert_eq!(
            parse_broadcast(&payload, 64),
            Some(Stamp {
                publisher: 3,
                seq: 99,
                sent_ns: 1_234_567_890
            })
        );
        payload[50] = b'!';
        assert_eq!(parse_broadcast(&payload, 64), None);
        assert_eq!(parse_broadcast(&payload[..63], 64), None);
    }

    #[test]
    fn compact_broadcast_round_trip() {
        for size in [16usize, 17, 40] {
            let mut scratch = Scratch::new(size);
            let mut payload = scratch.broadcast(70_000, 5, 987_654_321_012).to_vec();
            assert_eq!(payload.len(), size);
            assert_eq!(
                parse_broadcast(&payload, size),
                Some(Stamp {
                    publisher: 70_000,
                    seq: 5,
                    sent_ns: 987_654_321_012
                })
            );
            assert_eq!(parse_broadcast(&payload[..size - 1], size), None);
            if size > 16 {
                payload[size - 1] = b'!';
                assert_eq!(parse_broadcast(&payload, size), None);
            }
        }
        assert_eq!(parse_broadcast(&[0u8; 15], 15), None);
    }
}
