//! One module per family of cases, each generating its cases from tables.

pub mod auto_fragmentation;
pub mod close;
pub mod deflate;
pub mod fragmentation;
pub mod framing;
pub mod limits;
pub mod ping_pong;
pub mod reserved_bits;
pub mod reserved_opcodes;
pub mod utf8;

use crate::suite::wire::Rng;

/// Printable ASCII of `len` bytes (a valid text payload), deterministic for `seed`.
pub fn ascii_payload(len: usize, seed: &str) -> Vec<u8> {
    let mut rng = Rng::seeded(seed);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes);
    for byte in &mut bytes {
        *byte = b' ' + (*byte % 95);
    }
    bytes
}

/// Arbitrary bytes of `len`, deterministic for `seed`.
pub fn binary_payload(len: usize, seed: &str) -> Vec<u8> {
    let mut rng = Rng::seeded(seed);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes);
    bytes
}

/// Valid UTF-8 of exactly `len` bytes mixing 1-, 2-, 3- and 4-byte code points, deterministic for `seed`.
/// Beyond 64 KiB a random 64 KiB block is repeated (whole code points), so that multi-MiB payloads are
/// cheap to build in a debug binary.
pub fn utf8_payload(len: usize, seed: &str) -> Vec<u8> {
    const BLOCK: usize = 64 * 1024;
    if len > 2 * BLOCK {
        let block = utf8_payload(BLOCK, seed);
        let mut out = Vec::with_capacity(len);
        while out.len() + BLOCK <= len {
            out.extend_from_slice(&block);
        }
        let rest = len - out.len();
        out.extend_from_slice(&utf8_payload(rest, &format!("{seed}-rest")));
        return out;
    }
    let mut rng = Rng::seeded(seed);
    let mut out = Vec::with_capacity(len);
    let samples = [
        "a",
        "Z",
        "~",
        "\u{e9}",
        "\u{3ba}",
        "\u{20ac}",
        "\u{ffe1}",
        "\u{1f600}",
        "\u{10ffff}",
    ];
    while out.len() < len {
        let sample = samples[(rng.next_u64() % samples.len() as u64) as usize].as_bytes();
        if out.len() + sample.len() <= len {
            out.extend_from_slice(sample);
        } else {
            out.push(b'.');
        }
    }
    out
}

/// A human-readable byte count for descriptions.
pub fn size_label(len: usize) -> String {
    if len >= 1 << 20 && len.is_multiple_of(1 << 20) {
        format!("{} MiB", len >> 20)
    } else if len >= 1 << 10 && len.is_multiple_of(1 << 10) {
        format!("{} KiB", len >> 10)
    } else {
        format!("{len} bytes")
    }
}
