//! Family 3, reserved bits: with no extension negotiated, any RSV bit set on any frame is a protocol
//! error (1002), and the server answers nothing after it (not the pings that follow).

use crate::suite::cases::Family;
use crate::suite::wire::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use std::time::Duration;

pub fn cases() -> Family {
    let mut family = Family::new(3);

    // 3.1 every RSV combination on every kind of frame.
    family.group();
    for rsv in 1..=7u8 {
        for (opcode, kind) in [
            (OP_TEXT, "text"),
            (OP_BINARY, "binary"),
            (OP_PING, "ping"),
            (OP_PONG, "pong"),
            (OP_CLOSE, "close"),
            (OP_CONTINUATION, "continuation"),
        ] {
            family.case(
                format!("{kind} frame with RSV bits {rsv:03b} is a protocol error (1002)"),
                move |s| {
                    match opcode {
                        OP_CONTINUATION => {
                            s.frame(false, 0, OP_TEXT, b"start ");
                            s.frame(true, rsv, OP_CONTINUATION, b"end");
                        }
                        OP_CLOSE => {
                            s.frame(true, rsv, OP_CLOSE, &1000u16.to_be_bytes());
                        }
                        _ => {
                            s.frame(true, rsv, opcode, b"reserved");
                        }
                    }
                    s.expect_failure(1002);
                },
            );
        }
    }

    // 3.2 a valid message, a frame with RSV bits, a ping: echo, then 1002 and nothing else (no pong),
    // with the three frames written at once, frame by frame, and byte by byte.
    family.group();
    for rsv in [1u8, 2, 4, 3, 7] {
        for (mode, chunk, pause) in [
            ("in one write", 0usize, 0u64),
            ("frame by frame", usize::MAX, 10),
            ("byte by byte", 1, 0),
        ] {
            family.case(
                format!(
                    "text, text with RSV {rsv:03b}, ping, written {mode}: echo, then 1002 only"
                ),
                move |s| {
                    let frames = [
                        (0u8, OP_TEXT, b"hello".as_slice()),
                        (rsv, OP_TEXT, b"reserved".as_slice()),
                        (0, OP_PING, b"must not be answered".as_slice()),
                    ];
                    for (frame_rsv, opcode, payload) in frames {
                        s.frame(true, frame_rsv, opcode, payload);
                        if chunk == usize::MAX {
                            s.pause(Duration::from_millis(pause));
                        }
                    }
                    if chunk == 1 {
                        s.flush_chopped(1, Duration::ZERO);
                    }
                    s.expect_text(b"hello");
                    s.expect_failure(1002);
                },
            );
        }
    }
    family
}
