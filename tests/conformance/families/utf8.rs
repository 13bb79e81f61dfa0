//! Family 6, UTF-8 in text messages: valid sequences (boundaries, noncharacters, every length) are
//! echoed whole, fragmented at every byte and split between two fragments at every position; invalid
//! sequences (lone continuations, lonely starts, truncations, overlongs, surrogates, beyond U+10FFFF,
//! impossible bytes) close with 1007, and the close comes right after the first fragment that is
//! certainly invalid, without waiting for the rest of the message.
//!
//! Where a byte sequence becomes certainly invalid is computed with `std::str::from_utf8` (the shortest
//! prefix whose error has a length), never with the code under test.

use crate::suite::cases::Family;
use crate::suite::wire::{OP_CONTINUATION, OP_TEXT};
use std::time::Duration;

/// Valid text payloads: (name, bytes).
fn valid_table() -> Vec<(&'static str, Vec<u8>)> {
    let mut table: Vec<(&'static str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("ASCII", b"Hello, world".to_vec()),
        (
            "Latin-1 letters",
            "Hello-\u{b5}@\u{df}\u{f6}\u{e4}\u{fc}\u{e0}\u{e1}-UTF-8!!".into(),
        ),
        (
            "Greek word kosme",
            "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".into(),
        ),
        ("U+0000", vec![0x00]),
        ("U+007F", vec![0x7F]),
        ("U+0080", vec![0xC2, 0x80]),
        ("U+07FF", vec![0xDF, 0xBF]),
        ("U+0800", vec![0xE0, 0xA0, 0x80]),
        ("U+D7FF", vec![0xED, 0x9F, 0xBF]),
        ("U+E000", vec![0xEE, 0x80, 0x80]),
        ("U+FFFD", vec![0xEF, 0xBF, 0xBD]),
        ("U+FFFE noncharacter", vec![0xEF, 0xBF, 0xBE]),
        ("U+FFFF noncharacter", vec![0xEF, 0xBF, 0xBF]),
        ("U+10000", vec![0xF0, 0x90, 0x80, 0x80]),
        ("U+1F600", vec![0xF0, 0x9F, 0x98, 0x80]),
        ("U+10FFFF", vec![0xF4, 0x8F, 0xBF, 0xBF]),
        ("U+1FFFE noncharacter", vec![0xF0, 0x9F, 0xBF, 0xBE]),
        (
            "mixed widths",
            "a\u{e9}\u{20ac}\u{1f600}b\u{10348}\u{3ba}\u{fffd}z".into(),
        ),
    ];
    table.push(("every ASCII byte", (0u8..0x80).collect()));
    // The 66 noncharacters (U+FDD0..U+FDEF and the last two code points of each plane) are valid UTF-8.
    let noncharacters: String = (0xFDD0u32..=0xFDEF)
        .chain((0..=16u32).flat_map(|plane| [plane << 16 | 0xFFFE, plane << 16 | 0xFFFF]))
        .map(|code| char::from_u32(code).expect("noncharacters are scalar values"))
        .collect();
    table.push(("all 66 noncharacters", noncharacters.into_bytes()));
    // The first and last code point of every plane.
    let plane_edges: String = (0..=16u32)
        .flat_map(|plane| [plane << 16, plane << 16 | 0xFFFD])
        .filter_map(char::from_u32)
        .collect();
    table.push((
        "first and last code points of every plane",
        plane_edges.into_bytes(),
    ));
    table
}

/// Invalid text payloads: (name, bytes).
fn invalid_table() -> Vec<(&'static str, Vec<u8>)> {
    let mut table: Vec<(&'static str, Vec<u8>)> = vec![
        ("lone continuation 0x80", vec![0x80]),
        ("lone continuation 0xBF", vec![0xBF]),
        ("two continuations", vec![0x80, 0xBF]),
        ("three continuations", vec![0x80, 0xBF, 0x80]),
        ("continuation after ASCII", b"abc\x80def".to_vec()),
        ("lonely start 0xC0", vec![0xC0, 0x20]),
        ("lonely start 0xDF", vec![0xDF, 0x20]),
        ("lonely start 0xE0", vec![0xE0, 0x20]),
        ("lonely start 0xEF", vec![0xEF, 0x20]),
        ("lonely start 0xF0", vec![0xF0, 0x20]),
        ("lonely start 0xF4", vec![0xF4, 0x20]),
        ("lonely start 0xF7", vec![0xF7, 0x20]),
        ("lonely start 0xF8", vec![0xF8, 0x20]),
        ("lonely start 0xFC", vec![0xFC, 0x20]),
        ("truncated 2-byte at end", vec![0xDF]),
        ("truncated 3-byte at end", vec![0xEF, 0xBF]),
        ("truncated 4-byte at end", vec![0xF4, 0x8F, 0xBF]),
        ("ASCII then truncated 3-byte", b"hello\xE2\x82".to_vec()),
        ("truncated sequence then ASCII", b"\xE2\x82hello".to_vec()),
        ("impossible byte 0xFE", vec![0xFE]),
        ("impossible byte 0xFF", vec![0xFF]),
        ("impossible bytes FE FE FF FF", vec![0xFE, 0xFE, 0xFF, 0xFF]),
        ("overlong '/' in 2 bytes", vec![0xC0, 0xAF]),
        ("overlong '/' in 3 bytes", vec![0xE0, 0x80, 0xAF]),
        ("overlong '/' in 4 bytes", vec![0xF0, 0x80, 0x80, 0xAF]),
        (
            "overlong '/' in 5 bytes",
            vec![0xF8, 0x80, 0x80, 0x80, 0xAF],
        ),
        ("overlong NUL in 2 bytes", vec![0xC0, 0x80]),
        ("overlong NUL in 3 bytes", vec![0xE0, 0x80, 0x80]),
        ("largest overlong 2-byte", vec![0xC1, 0xBF]),
        ("largest overlong 3-byte", vec![0xE0, 0x9F, 0xBF]),
        ("largest overlong 4-byte", vec![0xF0, 0x8F, 0xBF, 0xBF]),
        ("surrogate U+D800", vec![0xED, 0xA0, 0x80]),
        ("surrogate U+DB7F", vec![0xED, 0xAD, 0xBF]),
        ("surrogate U+DBFF", vec![0xED, 0xAF, 0xBF]),
        ("surrogate U+DC00", vec![0xED, 0xB0, 0x80]),
        ("surrogate U+DFFF", vec![0xED, 0xBF, 0xBF]),
        (
            "surrogate pair U+D800 U+DC00",
            vec![0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80],
        ),
        (
            "surrogate pair U+DBFF U+DFFF",
            vec![0xED, 0xAF, 0xBF, 0xED, 0xBF, 0xBF],
        ),
        ("above U+10FFFF (F4 90)", vec![0xF4, 0x90, 0x80, 0x80]),
        ("start byte 0xF5", vec![0xF5, 0x80, 0x80, 0x80]),
        ("start byte 0xF7", vec![0xF7, 0xBF, 0xBF, 0xBF]),
        ("6-byte form", vec![0xFC, 0x84, 0x80, 0x80, 0x80, 0x80]),
        (
            "kosme, surrogate, 'edited'",
            [
                "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes(),
                &[0xED, 0xA0, 0x80],
                b"edited",
            ]
            .concat(),
        ),
        (
            "kosme, above U+10FFFF, 'edited'",
            [
                "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes(),
                &[0xF4, 0x90, 0x80, 0x80],
                b"edited",
            ]
            .concat(),
        ),
        (
            "valid then 0xFF after 100 bytes",
            [vec![b'x'; 100], vec![0xFF], vec![b'y'; 20]].concat(),
        ),
    ];
    table.push(("all 64 continuation bytes", (0x80u8..=0xBF).collect()));
    table
}

/// The length of the shortest prefix of `bytes` that is certainly invalid UTF-8, whatever follows it;
/// `None` if the bytes are only incomplete at the end (invalid only because the message ends there).
fn certainly_invalid_prefix(bytes: &[u8]) -> Option<usize> {
    (1..=bytes.len()).find(|&len| {
        matches!(std::str::from_utf8(&bytes[..len]), Err(error) if error.error_len().is_some())
    })
}

pub fn cases() -> Family {
    let mut family = Family::new(6);
    let valid = valid_table();
    let invalid = invalid_table();
    for (name, bytes) in &valid {
        assert!(
            std::str::from_utf8(bytes).is_ok(),
            "table error: {name} is not valid"
        );
    }
    for (name, bytes) in &invalid {
        assert!(
            std::str::from_utf8(bytes).is_err(),
            "table error: {name} is valid"
        );
    }

    // 6.1 valid sequences: whole, one byte per fragment, one write per byte.
    family.group();
    for (name, bytes) in &valid {
        let bytes = bytes.clone();
        family.case(format!("valid {name}: one frame, echoed"), {
            let bytes = bytes.clone();
            move |s| {
                s.text(&bytes);
                s.expect_text(&bytes);
                s.close_normally();
            }
        });
        family.case(format!("valid {name}: one byte per fragment, echoed"), {
            let bytes = bytes.clone();
            move |s| {
                s.fragmented(OP_TEXT, &bytes, 1);
                s.expect_text(&bytes);
                s.close_normally();
            }
        });
        family.case(
            format!("valid {name}: one frame written one byte per write, echoed"),
            move |s| {
                s.text(&bytes);
                s.flush_chopped(1, Duration::ZERO);
                s.expect_text(&bytes);
                s.close_normally();
            },
        );
    }

    // 6.2 valid sequences split into two fragments at every position; when the split falls inside a
    // code point the server must wait (a sync ping is answered) and not close.
    family.group();
    for (name, bytes) in &valid {
        if !(2..=12).contains(&bytes.len()) {
            continue;
        }
        for split in 1..bytes.len() {
            let bytes = bytes.clone();
            let inside_code_point = std::str::from_utf8(&bytes[..split]).is_err();
            family.case(
                format!(
                    "valid {name}: split after byte {split}{}",
                    if inside_code_point {
                        " (inside a code point), sync between"
                    } else {
                        ""
                    }
                ),
                move |s| {
                    s.frame(false, 0, OP_TEXT, &bytes[..split]);
                    if inside_code_point {
                        s.sync();
                    }
                    s.frame(true, 0, OP_CONTINUATION, &bytes[split..]);
                    s.expect_text(&bytes);
                    s.close_normally();
                },
            );
        }
    }

    // 6.3 invalid sequences in one frame, one byte per fragment, and written one byte per write.
    family.group();
    for (name, bytes) in &invalid {
        let bytes = bytes.clone();
        family.case(format!("invalid {name}: one frame, 1007"), {
            let bytes = bytes.clone();
            move |s| {
                s.text(&bytes);
                s.expect_failure(1007);
            }
        });
        family.case(format!("invalid {name}: one byte per fragment, 1007"), {
            let bytes = bytes.clone();
            move |s| {
                s.fragmented(OP_TEXT, &bytes, 1);
                s.expect_failure(1007);
            }
        });
        family.case(
            format!("invalid {name}: written one byte per write, 1007"),
            move |s| {
                s.text(&bytes);
                s.flush_chopped(1, Duration::ZERO);
                s.expect_failure(1007);
            },
        );
    }

    // 6.4 fail fast: the first fragment ends right after the first certainly-invalid byte, FIN clear,
    // and nothing more is sent: the close must come anyway.
    family.group();
    for (name, bytes) in &invalid {
        let Some(prefix) = certainly_invalid_prefix(bytes) else {
            continue;
        };
        let bytes = bytes.clone();
        family.case(
            format!(
                "invalid {name}: 1007 right after the fragment holding byte {prefix}, before FIN"
            ),
            {
                let bytes = bytes.clone();
                move |s| {
                    s.frame(false, 0, OP_TEXT, &bytes[..prefix]);
                    s.expect_failure(1007);
                }
            },
        );
        family.case(
            format!("invalid {name}: valid fragment, then the invalid fragment, before FIN: 1007"),
            move |s| {
                s.frame(
                    false,
                    0,
                    OP_TEXT,
                    "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes(),
                );
                s.frame(false, 0, OP_CONTINUATION, &bytes[..prefix]);
                s.expect_failure(1007);
            },
        );
    }
    // Incomplete at the end of the message (not earlier) is invalid too, and only then.
    for (name, bytes) in &invalid {
        if certainly_invalid_prefix(bytes).is_some() {
            continue;
        }
        let bytes = bytes.clone();
        family.case(
            format!(
                "invalid {name}: no close while incomplete (sync), 1007 at the empty FIN frame"
            ),
            move |s| {
                s.frame(false, 0, OP_TEXT, &bytes);
                s.sync();
                s.frame(true, 0, OP_CONTINUATION, b"");
                s.expect_failure(1007);
            },
        );
    }

    // 6.5 a large text message with an invalid byte at its very end, and in its first fragment.
    family.group();
    for &len in &[1000usize, 65_536, 200_000] {
        family.case(
            format!("text of {len} bytes whose last byte is invalid: 1007"),
            move |s| {
                let mut bytes = super::utf8_payload(len - 1, "6.5");
                bytes.push(0xC0);
                s.text(&bytes);
                s.expect_failure(1007);
            },
        );
        family.case(
            format!(
                "first fragment of a {len}-byte message ends in an overlong: 1007 before the rest"
            ),
            move |s| {
                let mut bytes = super::utf8_payload(len, "6.5");
                bytes.extend_from_slice(&[0xE0, 0x80]);
                s.frame(false, 0, OP_TEXT, &bytes);
                s.expect_failure(1007);
            },
        );
    }
    family
}
