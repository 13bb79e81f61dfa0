//! Family 5, fragmentation: messages in many fragments (including empty ones) are reassembled exactly;
//! control frames may interleave; fragmented control frames, a continuation without a start and a new
//! start inside a message are protocol errors (1002).

use super::{ascii_payload, binary_payload};
use crate::suite::cases::Family;
use crate::suite::script::CloseReply;
use crate::suite::wire::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use std::time::Duration;

pub fn cases() -> Family {
    let mut family = Family::new(5);

    // 5.1 fragmented control frames.
    family.group();
    for (opcode, kind, first) in [
        (OP_PING, "ping", b"ping ".to_vec()),
        (OP_PONG, "pong", b"pong ".to_vec()),
        (OP_CLOSE, "close", 1000u16.to_be_bytes().to_vec()),
    ] {
        family.case(
            format!("{kind} fragmented into two frames is a protocol error (1002)"),
            move |s| {
                s.frame(false, 0, opcode, &first);
                s.frame(true, 0, OP_CONTINUATION, b"rest");
                s.expect_failure(1002);
            },
        );
    }

    // 5.2 messages in N fragments, sent in one write, frame by frame, and byte by byte.
    family.group();
    for &(len, fragments) in &[
        (20usize, 2usize),
        (21, 3),
        (100, 5),
        (1000, 16),
        (100, 100),
        (70_000, 7),
    ] {
        for (opcode, kind) in [(OP_TEXT, "text"), (OP_BINARY, "binary")] {
            family.case(
                format!("{kind} message of {len} bytes in {fragments} fragments"),
                move |s| {
                    let seed = format!("5.2-{len}-{fragments}-{kind}");
                    let payload = if opcode == OP_TEXT {
                        ascii_payload(len, &seed)
                    } else {
                        binary_payload(len, &seed)
                    };
                    s.fragmented(opcode, &payload, len.div_ceil(fragments));
                    s.expect_message(opcode, &payload);
                    s.close_normally();
                },
            );
        }
    }
    for (mode, chunk, pause_ms) in [("frame by frame", 0usize, 10u64), ("byte by byte", 1, 0)] {
        family.case(
            format!("text message in two fragments written {mode}"),
            move |s| {
                s.frame(false, 0, OP_TEXT, b"fragment1");
                if chunk == 0 {
                    s.pause(Duration::from_millis(pause_ms));
                }
                s.frame(true, 0, OP_CONTINUATION, b"fragment2");
                if chunk == 1 {
                    s.flush_chopped(1, Duration::ZERO);
                }
                s.expect_text(b"fragment1fragment2");
                s.close_normally();
            },
        );
    }

    // 5.3 empty fragments.
    family.group();
    for (opcode, kind) in [(OP_TEXT, "text"), (OP_BINARY, "binary")] {
        for (shape, pieces) in [
            ("empty first fragment", vec![&b""[..], b"abc", b"def"]),
            ("empty middle fragment", vec![&b"abc"[..], b"", b"def"]),
            ("empty last fragment", vec![&b"abc"[..], b"def", b""]),
            ("three empty fragments", vec![&b""[..], b"", b""]),
        ] {
            let pieces: Vec<Vec<u8>> = pieces.into_iter().map(<[u8]>::to_vec).collect();
            family.case(format!("{kind} message with an {shape}"), move |s| {
                let whole: Vec<u8> = pieces.concat();
                for (index, piece) in pieces.iter().enumerate() {
                    let op = if index == 0 { opcode } else { OP_CONTINUATION };
                    s.frame(index + 1 == pieces.len(), 0, op, piece);
                }
                s.expect_message(opcode, &whole);
                s.close_normally();
            });
        }
    }

    // 5.4 continuation without a start.
    family.group();
    for fin in [true, false] {
        family.case(
            format!("continuation (fin={fin}) with nothing to continue is a protocol error (1002)"),
            move |s| {
                s.frame(fin, 0, OP_CONTINUATION, b"continuation");
                s.expect_failure(1002);
            },
        );
        family.case(
            format!("a whole message, then a continuation (fin={fin}), then a ping: echo, then 1002 only"),
            move |s| {
                s.text(b"whole");
                s.frame(fin, 0, OP_CONTINUATION, b"continuation");
                s.ping(b"must not be answered");
                s.expect_text(b"whole");
                s.expect_failure(1002);
            },
        );
        family.case(
            format!("a fragmented message, then a stray continuation (fin={fin}): echo, then 1002"),
            move |s| {
                s.frame(false, 0, OP_TEXT, b"fragment1");
                s.frame(true, 0, OP_CONTINUATION, b"fragment2");
                s.frame(fin, 0, OP_CONTINUATION, b"stray");
                s.text(b"never echoed");
                s.expect_text(b"fragment1fragment2");
                s.expect_failure(1002);
            },
        );
        family.case(
            format!("continuation (fin={fin}) without a start, written byte by byte: 1002"),
            move |s| {
                s.frame(fin, 0, OP_CONTINUATION, b"continuation");
                s.flush_chopped(1, Duration::ZERO);
                s.expect_failure(1002);
            },
        );
    }
    family.case(
        "continuation fin=false, text fin=false, continuation fin=true: 1002 at the first frame",
        |s| {
            s.frame(false, 0, OP_CONTINUATION, b"fragment1");
            s.frame(false, 0, OP_TEXT, b"fragment2");
            s.frame(true, 0, OP_CONTINUATION, b"fragment3");
            s.expect_failure(1002);
        },
    );

    // 5.5 a new message starting inside a fragmented one.
    family.group();
    for (first, second, fin) in [
        (OP_TEXT, OP_TEXT, true),
        (OP_TEXT, OP_TEXT, false),
        (OP_TEXT, OP_BINARY, true),
        (OP_BINARY, OP_TEXT, true),
        (OP_BINARY, OP_BINARY, false),
    ] {
        let name = |op: u8| if op == OP_TEXT { "text" } else { "binary" };
        family.case(
            format!(
                "{} fragment, then a new {} frame (fin={fin}) inside the message: 1002",
                name(first),
                name(second)
            ),
            move |s| {
                s.frame(false, 0, first, b"started");
                s.frame(fin, 0, second, b"new start");
                s.ping(b"must not be answered");
                s.expect_failure(1002);
            },
        );
    }

    // 5.6 pings and pongs between fragments, with pauses.
    family.group();
    for (pause_ms, chopped) in [(0u64, false), (20, false), (0, true)] {
        family.case(
            format!(
                "text in five fragments with a ping and a pong between each{}{}",
                if pause_ms > 0 { ", paused" } else { "" },
                if chopped {
                    ", written byte by byte"
                } else {
                    ""
                }
            ),
            move |s| {
                let mut whole = Vec::new();
                for i in 0..5u8 {
                    let piece = format!("fragment{i}").into_bytes();
                    whole.extend_from_slice(&piece);
                    let op = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
                    s.frame(i == 4, 0, op, &piece);
                    if i < 4 {
                        s.frame(true, 0, OP_PING, &[b'p', i]);
                        s.frame(true, 0, OP_PONG, &[b'u', i]);
                    }
                    if pause_ms > 0 {
                        s.pause(Duration::from_millis(pause_ms));
                    }
                }
                if chopped {
                    s.flush_chopped(1, Duration::ZERO);
                }
                for i in 0..4u8 {
                    s.expect_pong(&[b'p', i]);
                }
                s.expect_text(&whole);
                s.close_normally();
            },
        );
    }

    // 5.7 sequences of messages and the close in the middle of one.
    family.group();
    family.case(
        "a fragmented text message, then a fragmented binary message",
        |s| {
            s.fragmented(OP_TEXT, b"first message", 4);
            s.fragmented(OP_BINARY, &[9u8; 33], 10);
            s.expect_text(b"first message");
            s.expect_binary(&[9u8; 33]);
            s.close_normally();
        },
    );
    family.case("1000 one-byte fragments of a binary message", |s| {
        let payload = binary_payload(1000, "5.7");
        s.fragmented(OP_BINARY, &payload, 1);
        s.expect_binary(&payload);
        s.close_normally();
    });
    family.case(
        "close in the middle of a fragmented message: close answered, the message dropped",
        |s| {
            s.frame(false, 0, OP_TEXT, b"never finished");
            s.close(&1000u16.to_be_bytes());
            s.expect_close_reply(CloseReply::Code(1000));
        },
    );
    family.case(
        "fragmented message left unfinished: no echo (sync ping answered), then finished",
        |s| {
            s.frame(false, 0, OP_BINARY, b"first half ");
            s.sync();
            s.frame(true, 0, OP_CONTINUATION, b"second half");
            s.expect_binary(b"first half second half");
            s.close_normally();
        },
    );
    family
}
