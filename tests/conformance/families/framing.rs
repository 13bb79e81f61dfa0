//! Family 1, framing: text and binary messages of every length class (7-bit, 16-bit and 64-bit length
//! fields and their boundaries), frames chopped into small writes and split inside the header, mask keys,
//! unmasked client frames, impossible lengths, and many frames in one write.

use super::{ascii_payload, binary_payload, size_label};
use crate::suite::cases::Family;
use crate::suite::script::{spec, with_length};
use crate::suite::wire::{LengthField, OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT};
use std::time::Duration;

const SIZES: &[usize] = &[
    0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 63, 64, 65, 100, 124, 125, 126, 127, 128, 129, 255, 256, 257,
    1000, 1023, 1024, 1025, 4095, 4096, 4097, 8191, 8192, 8193, 16384, 32768, 65534, 65535, 65536,
    65537, 100_000, 131_072, 262_144, 1_048_576,
];

pub fn cases() -> Family {
    let mut family = Family::new(1);

    // 1.1 text, 1.2 binary: one unfragmented message of each size, echoed exactly.
    for (opcode, kind) in [(OP_TEXT, "text"), (OP_BINARY, "binary")] {
        family.group();
        for &len in SIZES {
            family.case(format!("{kind} message of {}", size_label(len)), move |s| {
                let seed = format!("1-{kind}-{len}");
                let payload = if opcode == OP_TEXT {
                    ascii_payload(len, &seed)
                } else {
                    binary_payload(len, &seed)
                };
                s.frame(true, 0, opcode, &payload);
                s.expect_message(opcode, &payload);
                s.close_normally();
            });
        }
    }

    // 1.3 frames chopped into small writes (each write its own TCP segment).
    family.group();
    for &(len, chunk, pause_ms) in &[
        (300usize, 1usize, 0u64),
        (300, 2, 0),
        (300, 3, 0),
        (300, 5, 0),
        (300, 7, 1),
        (300, 13, 0),
        (300, 64, 1),
        (65536, 997, 0),
        (65536, 1300, 0),
        (65536, 4096, 1),
        (70_000, 65535, 0),
        (131_072, 16384, 1),
    ] {
        for (opcode, kind) in [(OP_TEXT, "text"), (OP_BINARY, "binary")] {
            family.case(
                format!(
                    "{kind} message of {} written in chunks of {chunk} bytes{}",
                    size_label(len),
                    if pause_ms > 0 { " with pauses" } else { "" }
                ),
                move |s| {
                    let seed = format!("1.3-{kind}-{len}-{chunk}");
                    let payload = if opcode == OP_TEXT {
                        ascii_payload(len, &seed)
                    } else {
                        binary_payload(len, &seed)
                    };
                    s.frame(true, 0, opcode, &payload);
                    s.flush_chopped(chunk, Duration::from_millis(pause_ms));
                    s.expect_message(opcode, &payload);
                    s.close_normally();
                },
            );
        }
    }

    // 1.4 the frame header split at every position, with a pause so the halves arrive apart.
    family.group();
    for &(len, header_len) in &[(10usize, 6usize), (300, 8), (70_000, 14)] {
        for split in 1..=header_len {
            family.case(
                format!(
                    "binary message of {} with its {header_len}-byte header split after byte {split}",
                    size_label(len)
                ),
                move |s| {
                    let payload = binary_payload(len, &format!("1.4-{len}"));
                    s.frame(true, 0, OP_BINARY, &payload);
                    let bytes = s.take_pending();
                    s.bytes(&bytes[..split]);
                    s.pause(Duration::from_millis(20));
                    s.bytes(&bytes[split..]);
                    s.expect_binary(&payload);
                    s.close_normally();
                },
            );
        }
    }

    // 1.5 mask keys: zero and all-ones keys are as valid as any; an unmasked client frame is an error.
    family.group();
    for key in [[0u8; 4], [0xFF; 4], [0x80, 0, 0, 1]] {
        family.case(
            format!("text message masked with key {key:02x?}"),
            move |s| {
                let payload = ascii_payload(200, "1.5-key");
                s.raw_frame(spec(true, 0, OP_TEXT, Some(key)), &payload);
                s.expect_text(&payload);
                s.close_normally();
            },
        );
    }
    for (opcode, kind, payload) in [
        (OP_TEXT, "text", b"unmasked".to_vec()),
        (OP_BINARY, "binary", vec![1, 2, 3]),
        (OP_TEXT, "empty text", Vec::new()),
        (OP_PING, "ping", b"unmasked".to_vec()),
        (OP_CLOSE, "close", 1000u16.to_be_bytes().to_vec()),
    ] {
        family.case(
            format!("unmasked {kind} frame from the client is a protocol error (1002)"),
            move |s| {
                s.raw_frame(spec(true, 0, opcode, None), &payload);
                s.expect_failure(1002);
            },
        );
    }
    family.case(
        "valid text, then an unmasked text frame: echo, then 1002",
        |s| {
            s.text(b"first");
            s.raw_frame(spec(true, 0, OP_TEXT, None), b"second");
            s.expect_text(b"first");
            s.expect_failure(1002);
        },
    );

    // 1.6 impossible lengths: refused from the header alone, without waiting for a payload.
    family.group();
    family.case(
        "64-bit length with the most significant bit set is a protocol error (1002)",
        |s| {
            let key = s.rng.mask_key();
            let header = with_length(
                spec(true, 0, OP_BINARY, Some(key)),
                LengthField::Long(0x8000_0000_0000_0010),
            );
            s.raw_frame(header, &[0u8; 16]);
            s.expect_failure(1002);
        },
    );
    family.case(
        "frame announcing 1 TiB is refused as too big (1009) from its header",
        |s| {
            let key = s.rng.mask_key();
            let header = with_length(
                spec(true, 0, OP_BINARY, Some(key)),
                LengthField::Long(1 << 40),
            );
            s.raw_frame(header, &[0u8; 64]);
            s.expect_failure(1009);
        },
    );
    family.case(
        "text frame announcing 2^63-1 bytes is refused as too big (1009)",
        |s| {
            let key = s.rng.mask_key();
            let header = with_length(
                spec(true, 0, OP_TEXT, Some(key)),
                LengthField::Long(u64::MAX >> 1),
            );
            s.raw_frame(header, b"abc");
            s.expect_failure(1009);
        },
    );

    // 1.7 many frames in one write, echoed in order.
    family.group();
    for &(count, len) in &[
        (2usize, 5usize),
        (10, 1),
        (10, 200),
        (100, 0),
        (100, 17),
        (500, 64),
    ] {
        family.case(
            format!("{count} text messages of {len} bytes in one write, echoed in order"),
            move |s| {
                let messages: Vec<Vec<u8>> = (0..count)
                    .map(|i| ascii_payload(len, &format!("1.7-{count}-{len}-{i}")))
                    .collect();
                for message in &messages {
                    s.text(message);
                }
                s.flush();
                for message in &messages {
                    s.expect_text(message);
                }
                s.close_normally();
            },
        );
    }
    family.case(
        "alternating text and binary messages in one write keep their types",
        |s| {
            let mut expected = Vec::new();
            for i in 0..20usize {
                let opcode = if i % 2 == 0 { OP_TEXT } else { OP_BINARY };
                let payload = ascii_payload(i * 13, &format!("1.7-alt-{i}"));
                s.frame(true, 0, opcode, &payload);
                expected.push((opcode, payload));
            }
            s.flush();
            for (opcode, payload) in &expected {
                s.expect_message(*opcode, payload);
            }
            s.close_normally();
        },
    );
    family
}
