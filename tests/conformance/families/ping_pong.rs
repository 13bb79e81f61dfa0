//! Family 2, ping and pong: pongs echo the ping's payload for every size up to the 125-byte limit, a
//! bigger or fragmented ping is a protocol error, unsolicited pongs are ignored, and pings are answered in
//! the middle of a fragmented message.

use super::{ascii_payload, binary_payload};
use crate::suite::cases::Family;
use crate::suite::script::{spec, with_length};
use crate::suite::wire::{LengthField, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use std::time::Duration;

const PING_SIZES: &[usize] = &[0, 1, 2, 3, 8, 16, 64, 100, 124, 125];

pub fn cases() -> Family {
    let mut family = Family::new(2);

    // 2.1 pong payload equals the ping payload, text-like and binary.
    family.group();
    for &len in PING_SIZES {
        for binary in [false, true] {
            let kind = if binary { "binary" } else { "text" };
            family.case(
                format!("ping with a {len}-byte {kind} payload gets a pong with the same payload"),
                move |s| {
                    let seed = format!("2.1-{len}-{kind}");
                    let payload = if binary {
                        binary_payload(len, &seed)
                    } else {
                        ascii_payload(len, &seed)
                    };
                    s.ping(&payload);
                    s.expect_pong(&payload);
                    s.close_normally();
                },
            );
        }
    }

    // 2.2 the 125-byte limit for control frames.
    family.group();
    family.case(
        "ping with a 126-byte payload is a protocol error (1002)",
        |s| {
            s.ping(&ascii_payload(126, "2.2"));
            s.expect_failure(1002);
        },
    );
    family.case(
        "ping with a 1000-byte payload is a protocol error (1002)",
        |s| {
            s.ping(&ascii_payload(1000, "2.2"));
            s.expect_failure(1002);
        },
    );
    family.case(
        "ping whose 7-bit length field says 126 (a 16-bit length follows) is a protocol error (1002)",
        |s| {
            let key = s.rng.mask_key();
            s.raw_frame(
                with_length(spec(true, 0, OP_PING, Some(key)), LengthField::Medium(126)),
                &ascii_payload(126, "2.2"),
            );
            s.expect_failure(1002);
        },
    );
    family.case(
        "ping with a 64-bit length field of 200 bytes is a protocol error (1002)",
        |s| {
            let key = s.rng.mask_key();
            s.raw_frame(
                with_length(spec(true, 0, OP_PING, Some(key)), LengthField::Long(200)),
                &ascii_payload(200, "2.2"),
            );
            s.expect_failure(1002);
        },
    );
    family.case(
        "pong with a 126-byte payload is a protocol error (1002)",
        |s| {
            s.pong(&ascii_payload(126, "2.2"));
            s.expect_failure(1002);
        },
    );
    family.case("ping without FIN is a protocol error (1002)", |s| {
        s.frame(false, 0, OP_PING, b"fragment");
        s.expect_failure(1002);
    });

    // 2.3 chopped pings.
    family.group();
    for &(chunk, pause_ms) in &[(1usize, 0u64), (1, 1), (2, 0), (7, 1), (50, 2)] {
        family.case(
            format!("125-byte ping written in chunks of {chunk} bytes"),
            move |s| {
                let payload = ascii_payload(125, "2.3");
                s.ping(&payload);
                s.flush_chopped(chunk, Duration::from_millis(pause_ms));
                s.expect_pong(&payload);
                s.close_normally();
            },
        );
    }

    // 2.4 unsolicited pongs are ignored (the sync ping proves nothing came before its pong).
    family.group();
    for &len in &[0usize, 1, 10, 125] {
        family.case(
            format!("unsolicited pong with {len} bytes is ignored"),
            move |s| {
                s.pong(&ascii_payload(len, "2.4"));
                s.sync();
                s.close_normally();
            },
        );
    }
    family.case(
        "unsolicited pong, then a ping: only the ping is answered",
        |s| {
            s.pong(b"unsolicited");
            s.ping(b"solicited");
            s.expect_pong(b"solicited");
            s.sync();
            s.close_normally();
        },
    );
    family.case("ten unsolicited pongs are ignored", |s| {
        for i in 0..10u8 {
            s.pong(&[i; 5]);
        }
        s.sync();
        s.close_normally();
    });

    // 2.5 many pings: every one answered, in order.
    family.group();
    for &(count, chunk) in &[(2usize, 0usize), (10, 0), (10, 1), (50, 0), (10, 3)] {
        family.case(
            format!(
                "{count} pings in a row{} each get their pong, in order",
                if chunk > 0 {
                    format!(" written in {chunk}-byte chunks")
                } else {
                    String::new()
                }
            ),
            move |s| {
                let payloads: Vec<Vec<u8>> = (0..count)
                    .map(|i| format!("ping number {i}").into_bytes())
                    .collect();
                for payload in &payloads {
                    s.ping(payload);
                }
                if chunk > 0 {
                    s.flush_chopped(chunk, Duration::ZERO);
                }
                for payload in &payloads {
                    s.expect_pong(payload);
                }
                s.close_normally();
            },
        );
    }

    // 2.6 pings and pongs in the middle of a fragmented message.
    family.group();
    family.case(
        "ping between two fragments: pong, then the whole message",
        |s| {
            s.frame(false, 0, OP_TEXT, b"fragment one, ");
            s.ping(b"in between");
            s.frame(true, 0, OP_CONTINUATION, b"fragment two");
            s.expect_pong(b"in between");
            s.expect_text(b"fragment one, fragment two");
            s.close_normally();
        },
    );
    family.case(
        "ping between two fragments, answered before the message is finished",
        |s| {
            s.frame(false, 0, OP_TEXT, b"fragment one, ");
            s.ping(b"early");
            s.expect_pong(b"early");
            s.frame(true, 0, OP_CONTINUATION, b"fragment two");
            s.expect_text(b"fragment one, fragment two");
            s.close_normally();
        },
    );
    family.case("pings between each of five fragments", |s| {
        let mut whole = Vec::new();
        for i in 0..5u8 {
            let piece = format!("part {i};").into_bytes();
            whole.extend_from_slice(&piece);
            let opcode = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
            s.frame(i == 4, 0, opcode, &piece);
            if i < 4 {
                s.ping(&[b'p', i]);
            }
        }
        for i in 0..4u8 {
            s.expect_pong(&[b'p', i]);
        }
        s.expect_text(&whole);
        s.close_normally();
    });
    family.case("unsolicited pong between two fragments is ignored", |s| {
        s.frame(false, 0, OP_TEXT, b"before ");
        s.frame(true, 0, OP_PONG, b"ignored");
        s.frame(true, 0, OP_CONTINUATION, b"after");
        s.expect_text(b"before after");
        s.sync();
        s.close_normally();
    });
    family.case(
        "ping right after a message in the same write: echo and pong",
        |s| {
            s.text(b"message");
            s.frame(true, 0, OP_PING, b"after");
            s.expect_message_and_pong(OP_TEXT, b"message", b"after");
            s.close_normally();
        },
    );
    family
}
