//! Families 12 and 13, permessage-deflate (RFC 7692), in the shape of Autobahn's 12.* and 13.*: compressed
//! messages of several data sets and sizes (16 B to 128 KiB), whole and fragmented, each sent twice (a
//! server keeping a context it agreed to drop, or dropping one it kept, fails the second), under the offer
//! Chrome sends (family 12) and under many offers (family 13: window bits 9 and 15 both ways, no context
//! takeover, several offers at once, offers to decline), and the violations (RSV1 misplaced: 1002; a
//! corrupt stream: 1007; a message over the limit once inflated: 1009). The echo must inflate (with the
//! window the server agreed to) to exactly what was sent; whether the server compresses it is its choice.

use super::{ascii_payload, binary_payload, size_label, utf8_payload};
use crate::suite::cases::Family;
use crate::suite::wire::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT};

/// Chrome's offer.
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

const SIZES: [usize; 8] = [16, 64, 256, 1024, 4096, 16_384, 65_536, 131_072];

/// JSON text of exactly `len` bytes, deterministic for `seed`.
fn json_payload(len: usize, seed: &str) -> Vec<u8> {
    let words = ascii_payload(64, seed);
    let mut text = String::with_capacity(len + 64);
    let mut i = 0usize;
    while text.len() < len {
        let word = &words[i % 48..i % 48 + 8];
        text.push_str(&format!(
            "{{\"id\":{i},\"kind\":\"{}\",\"ok\":{}}},",
            String::from_utf8_lossy(word).replace(['"', '\\'], "_"),
            i.is_multiple_of(3)
        ));
        i += 1;
    }
    text.truncate(len);
    text.into_bytes()
}

/// A binary payload made of a few repeated 64-byte records.
fn records_payload(len: usize, seed: &str) -> Vec<u8> {
    let records = binary_payload(256, seed);
    (0..len)
        .map(|i| records[(i / 64 % 4) * 64 + i % 64])
        .collect()
}

/// A random 2 KiB block, repeated to `len` bytes.
fn repeated_block(len: usize, seed: &str) -> Vec<u8> {
    let block = binary_payload(2048, seed);
    (0..len).map(|i| block[i % 2048]).collect()
}

/// A violation: what it is, the close code it gets, the frames that commit it.
type Violation = (&'static str, u16, fn(&mut crate::suite::script::Script));

type DataSet = (&'static str, u8, fn(usize, &str) -> Vec<u8>);

const DATA_SETS: [DataSet; 5] = [
    ("JSON text", OP_TEXT, json_payload),
    ("random ASCII text", OP_TEXT, ascii_payload),
    ("random binary (incompressible)", OP_BINARY, binary_payload),
    ("multi-byte UTF-8 text", OP_TEXT, utf8_payload),
    ("binary of repeated records", OP_BINARY, records_payload),
];

/// (offer, the window the client compresses with)
const OFFERS: [(&str, u8); 8] = [
    ("permessage-deflate", 15),
    ("permessage-deflate; client_no_context_takeover", 15),
    ("permessage-deflate; client_max_window_bits=9", 9),
    ("permessage-deflate; client_max_window_bits=15", 15),
    ("permessage-deflate; server_max_window_bits=9", 15),
    (
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=15; client_max_window_bits",
        15,
    ),
    (
        "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits=9; server_max_window_bits=10, permessage-deflate",
        9,
    ),
    ("permessage-deflate; x-unknown, permessage-deflate", 15),
];

pub fn cases() -> [Family; 2] {
    [data_sets(), offers()]
}

fn data_sets() -> Family {
    let mut family = Family::new(12);
    for (name, opcode, make) in DATA_SETS {
        family.group();
        for len in SIZES {
            for frames in [1usize, 3] {
                let how = if frames == 1 {
                    "whole".to_string()
                } else {
                    format!("in {frames} frames")
                };
                family.case(
                    format!(
                        "{name}, {} compressed ({how}), twice, offer {BROWSER_OFFER:?}",
                        size_label(len)
                    ),
                    move |s| {
                        let payload = make(len, &format!("12-{name}-{len}"));
                        s.offer(BROWSER_OFFER);
                        for _ in 0..2 {
                            s.compressed(opcode, &payload, frames, 15);
                            s.expect_message(opcode, &payload);
                        }
                        // Uncompressed messages stay valid on the same connection.
                        s.frame(true, 0, opcode, &payload);
                        s.expect_message(opcode, &payload);
                        s.close_normally();
                    },
                );
            }
        }
    }
    family.group();
    let violations: [Violation; 7] = [
        ("RSV1 on a continuation frame", 1002, |s| {
            let payload = json_payload(300, "12-cont");
            let compressed = crate::suite::script::deflate_payload(&payload, 15);
            let (a, b) = compressed.split_at(compressed.len() / 2);
            s.frame(false, 0b100, OP_TEXT, a);
            s.frame(true, 0b100, OP_CONTINUATION, b);
        }),
        ("RSV1 on a ping", 1002, |s| {
            s.frame(true, 0b100, OP_PING, b"ping");
        }),
        ("RSV1 on a close frame", 1002, |s| {
            s.frame(true, 0b100, OP_CLOSE, &1000u16.to_be_bytes());
        }),
        ("RSV1 and RSV2 on a text frame", 1002, |s| {
            s.frame(
                true,
                0b110,
                OP_TEXT,
                &crate::suite::script::deflate_payload(b"hello", 15),
            );
        }),
        ("a corrupt deflate stream (block type 3)", 1007, |s| {
            s.frame(true, 0b100, OP_BINARY, &[0xff, 0xff, 0xff]);
        }),
        (
            "compressed text that inflates to invalid UTF-8",
            1007,
            |s| {
                s.frame(
                    true,
                    0b100,
                    OP_TEXT,
                    &crate::suite::script::deflate_payload(b"ok \xc0\xaf", 15),
                );
            },
        ),
        (
            "17 MiB of zeros compressed to a few KiB (over the 16 MiB limit once inflated)",
            1009,
            |s| {
                s.compressed(OP_BINARY, &vec![0u8; 17 << 20], 1, 15);
            },
        ),
    ];
    for (what, code, build) in violations {
        family.case(format!("{what}: {code}"), move |s| {
            s.offer(BROWSER_OFFER);
            build(s);
            s.expect_failure(code);
        });
    }
    family
}

fn offers() -> Family {
    let mut family = Family::new(13);
    // The repeated block is random, so its only matches are a whole block (2 KiB) back: a server that
    // compresses with a wider window than the 9 bits it agreed to makes a stream a 9-bit inflater refuses.
    let kinds: [DataSet; 2] = [
        ("JSON", OP_TEXT, json_payload),
        ("a random 2 KiB block repeated", OP_BINARY, repeated_block),
    ];
    for (offer, client_bits) in OFFERS {
        family.group();
        for (kind, opcode, make) in kinds {
            for len in [16usize, 256, 4096, 65_536, 131_072] {
                for frames in [1usize, 3] {
                    family.case(
                        format!(
                            "offer {offer:?}: {kind} of {} compressed with a {client_bits}-bit window, {}, twice",
                            size_label(len),
                            if frames == 1 { "whole" } else { "in 3 frames" }
                        ),
                        move |s| {
                            let payload = make(len, &format!("13-{len}"));
                            s.offer(offer);
                            for _ in 0..2 {
                                s.compressed(opcode, &payload, frames, client_bits);
                                s.expect_message(opcode, &payload);
                            }
                            s.close_normally();
                        },
                    );
                }
            }
        }
    }
    family.group();
    for offer in [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "x-webkit-deflate-frame",
    ] {
        family.case(
            format!("offer {offer:?} declined; RSV1 then 1002"),
            move |s| {
                s.offer_declined(offer);
                s.text(b"plain");
                s.expect_text(b"plain");
                s.frame(
                    true,
                    0b100,
                    OP_TEXT,
                    &crate::suite::script::deflate_payload(b"hello", 15),
                );
                s.expect_failure(1002);
            },
        );
    }
    family
}
