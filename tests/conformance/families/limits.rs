//! Family 9, limits: large messages (up to 16 MiB, whole, in fragments, in small writes) and many small
//! messages. Each case asserts the exact echo; its duration is printed, never asserted.

use super::{binary_payload, size_label, utf8_payload};
use crate::suite::cases::Family;
use crate::suite::script::{spec, with_length};
use crate::suite::wire::{LengthField, OP_BINARY, OP_TEXT};
use std::time::Duration;

const MIB: usize = 1 << 20;

fn payload(opcode: u8, len: usize, seed: &str) -> Vec<u8> {
    if opcode == OP_TEXT {
        utf8_payload(len, seed)
    } else {
        binary_payload(len, seed)
    }
}

pub fn cases() -> Family {
    let mut family = Family::new(9).timed();
    let kinds = [(OP_TEXT, "text"), (OP_BINARY, "binary")];

    // 9.1 text, 9.2 binary: one big unfragmented message.
    for (opcode, kind) in kinds {
        family.group();
        for len in [64 * 1024, 256 * 1024, MIB, 4 * MIB, 8 * MIB, 16 * MIB] {
            family.case(format!("{kind} message of {}", size_label(len)), move |s| {
                let payload = payload(opcode, len, &format!("9-{kind}-{len}"));
                s.frame(true, 0, opcode, &payload);
                s.expect_message(opcode, &payload);
                s.close_normally();
            });
        }
    }

    // 9.3 text, 9.4 binary: a 4 MiB message in fragments of 64 B .. 4 MiB.
    for (opcode, kind) in kinds {
        family.group();
        for fragment in [
            64,
            256,
            1024,
            4096,
            16 * 1024,
            64 * 1024,
            256 * 1024,
            MIB,
            4 * MIB,
        ] {
            family.case(
                format!(
                    "{kind} message of 4 MiB in fragments of {}",
                    size_label(fragment)
                ),
                move |s| {
                    let payload = payload(opcode, 4 * MIB, &format!("9.3-{kind}"));
                    s.fragmented(opcode, &payload, fragment);
                    s.expect_message(opcode, &payload);
                    s.close_normally();
                },
            );
        }
    }

    // 9.5 text, 9.6 binary: a 1 MiB message written in chunks of 64 B .. 4 KiB.
    for (opcode, kind) in kinds {
        family.group();
        for chunk in [64, 128, 256, 512, 1024, 2048, 4096] {
            family.case(
                format!("{kind} message of 1 MiB written in chunks of {chunk} bytes"),
                move |s| {
                    let payload = payload(opcode, MIB, &format!("9.5-{kind}"));
                    s.frame(true, 0, opcode, &payload);
                    s.flush_chopped(chunk, Duration::ZERO);
                    s.expect_message(opcode, &payload);
                    s.close_normally();
                },
            );
        }
    }

    // 9.7 text, 9.8 binary: 1000 round trips of small messages, one at a time.
    for (opcode, kind) in kinds {
        family.group();
        for len in [0usize, 16, 64, 256, 1024, 4096] {
            family.case(
                format!("1000 {kind} messages of {len} bytes, each echoed before the next"),
                move |s| {
                    let payload = payload(opcode, len, &format!("9.7-{kind}-{len}"));
                    s.round_trips(opcode, payload, 1000);
                    s.close_normally();
                },
            );
        }
    }

    // 9.9 many messages written at once by a writer thread while the echoes are read (a pipelining
    // client that keeps reading, so socket buffers never decide the outcome).
    family.group();
    for (count, len) in [(10_000usize, 10usize), (1000, 1000), (200, 64 * 1024)] {
        family.case(
            format!("{count} binary messages of {len} bytes pipelined"),
            move |s| {
                let payloads: Vec<Vec<u8>> = (0..count)
                    .map(|i| binary_payload(len, &format!("9.9-{i}")))
                    .collect();
                for message in &payloads {
                    s.binary(message);
                }
                s.flush_in_background();
                for message in &payloads {
                    s.expect_binary(message);
                }
                s.close_normally();
            },
        );
    }
    // 9.10 the message size limit (16 MiB, as the runner starts ringws; RINGWS_CONFORMANCE_MAX_MESSAGE for another
    // target): a message one byte over it fails with 1009, whole or in fragments, and a header that
    // announces it is refused without the payload.
    let limit = max_message_size();
    family.group();
    family.case(
        format!(
            "fragmented binary message of exactly the limit ({}) is echoed",
            size_label(limit)
        ),
        move |s| {
            let payload = binary_payload(limit, "9.10-limit");
            s.fragmented(OP_BINARY, &payload, limit / 2 + 1);
            s.flush_in_background();
            s.expect_binary(&payload);
            s.close_normally();
        },
    );
    for (opcode, kind) in kinds {
        family.case(
            format!("{kind} message of the limit + 1 byte in one frame fails with 1009"),
            move |s| {
                let payload = payload(opcode, limit + 1, &format!("9.10-{kind}"));
                s.frame(true, 0, opcode, &payload);
                s.flush_in_background();
                s.expect_failure(1009);
            },
        );
    }
    family.case(
        "two fragments adding up to the limit + 1 byte fail with 1009",
        move |s| {
            let payload = binary_payload(limit + 1, "9.10-fragments");
            s.fragmented(OP_BINARY, &payload, limit / 2 + 1);
            s.flush_in_background();
            s.expect_failure(1009);
        },
    );
    family.case(
        "a header announcing the limit + 1 byte fails with 1009 before any payload",
        move |s| {
            let key = s.rng.mask_key();
            let header = with_length(
                spec(true, 0, OP_BINARY, Some(key)),
                LengthField::Long(limit as u64 + 1),
            );
            s.raw_frame(header, b"");
            s.expect_failure(1009);
        },
    );
    family
}

/// The target's largest message: `RINGWS_CONFORMANCE_MAX_MESSAGE` bytes, or the 16 MiB the runner starts
/// ringws with.
fn max_message_size() -> usize {
    std::env::var("RINGWS_CONFORMANCE_MAX_MESSAGE")
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(16 * MIB)
}
