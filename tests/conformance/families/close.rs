//! Family 7, the close handshake: the server answers a close with a close and then closes TCP; it
//! ignores everything after a close; close payloads of 1 byte or over 125 bytes, invalid codes and
//! invalid UTF-8 reasons fail the connection (1002, 1007).

use super::{ascii_payload, binary_payload};
use crate::suite::cases::Family;
use crate::suite::script::{spec, with_length, CloseReply};
use crate::suite::wire::{LengthField, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_TEXT};
use std::time::Duration;

/// Codes a client may send (RFC 6455 section 7.4.1 and the IANA registry's 1012-1014).
const VALID_CODES: &[u16] = &[
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3001, 3999, 4000,
    4001, 4500, 4999,
];

/// Codes that must never appear in a close frame: unassigned, reserved for local use (1004-1006,
/// 1015), or outside 1000-4999.
const INVALID_CODES: &[u16] = &[
    0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 10_000, 65_535,
];

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

pub fn cases() -> Family {
    let mut family = Family::new(7);

    // 7.1 what comes after a close is ignored.
    family.group();
    family.case("text, then close: echo, then the close answer", |s| {
        s.text(b"Hello");
        s.close(&close_payload(1000, b""));
        s.expect_text(b"Hello");
        s.expect_close_reply(CloseReply::Code(1000));
    });
    family.case(
        "two closes in one write: one answer, then TCP closed",
        |s| {
            s.close(&close_payload(1000, b""));
            s.close(&close_payload(1001, b""));
            s.expect_close_reply(CloseReply::Code(1000));
        },
    );
    family.case("close, then a ping: no pong", |s| {
        s.close(&close_payload(1000, b""));
        s.ping(b"after close");
        s.expect_close_reply(CloseReply::Code(1000));
    });
    family.case("close, then a text message: no echo", |s| {
        s.close(&close_payload(1000, b""));
        s.text(b"after close");
        s.expect_close_reply(CloseReply::Code(1000));
    });
    family.case(
        "fragment, close, last fragment: close answered, the message never echoed",
        |s| {
            s.frame(false, 0, OP_TEXT, b"fragment1");
            s.close(&close_payload(1000, b""));
            s.frame(true, 0, OP_CONTINUATION, b"fragment2");
            s.expect_close_reply(CloseReply::Code(1000));
        },
    );
    family.case(
        "256 KiB message, close, ping in one write: the whole echo, then the close answer",
        |s| {
            let payload = binary_payload(256 * 1024, "7.1.6");
            s.binary(&payload);
            s.close(&close_payload(1000, b""));
            s.ping(b"after close");
            s.expect_binary(&payload);
            s.expect_close_reply(CloseReply::Code(1000));
        },
    );
    family.case("close, then garbage bytes: the close answer only", |s| {
        s.close(&close_payload(1000, b""));
        s.bytes(&[0xFF; 32]);
        s.expect_close_reply(CloseReply::Code(1000));
    });
    family.case(
        "close after the close answer arrived: TCP closed, nothing more",
        |s| {
            s.close(&close_payload(1000, b""));
            s.expect_close_reply(CloseReply::Code(1000));
        },
    );

    // 7.2 close payload shapes.
    family.group();
    family.case(
        "close without payload: answered with no code or 1000",
        |s| {
            s.close(b"");
            s.expect_close_reply(CloseReply::EmptyOrNormal);
        },
    );
    family.case(
        "close with a 1-byte payload is a protocol error (1002)",
        |s| {
            s.close(&[0x03]);
            s.expect_failure(1002);
        },
    );
    family.case("close with code 1000 and no reason", |s| {
        s.close(&close_payload(1000, b""));
        s.expect_close_reply(CloseReply::Code(1000));
    });
    family.case("close with code 1000 and a short reason", |s| {
        s.close(&close_payload(1000, b"Hello World!"));
        s.expect_close_reply(CloseReply::Code(1000));
    });
    family.case(
        "close with code 1000 and a 123-byte reason (125 in all)",
        |s| {
            s.close(&close_payload(1000, &ascii_payload(123, "7.3")));
            s.expect_close_reply(CloseReply::Code(1000));
        },
    );
    family.case(
        "close with a 126-byte payload is a protocol error (1002)",
        |s| {
            s.close(&close_payload(1000, &ascii_payload(124, "7.3")));
            s.expect_failure(1002);
        },
    );
    family.case(
        "close with a 200-byte payload (64-bit length field) is a protocol error (1002)",
        |s| {
            let key = s.rng.mask_key();
            s.raw_frame(
                with_length(spec(true, 0, OP_CLOSE, Some(key)), LengthField::Long(200)),
                &close_payload(1000, &ascii_payload(198, "7.3")),
            );
            s.expect_failure(1002);
        },
    );
    family.case("close with a multi-byte UTF-8 reason", |s| {
        s.close(&close_payload(
            1000,
            "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5} \u{1f600}".as_bytes(),
        ));
        s.expect_close_reply(CloseReply::Code(1000));
    });
    family.case("close frame written one byte per write", |s| {
        s.close(&close_payload(1000, "bye \u{20ac}".as_bytes()));
        s.flush_chopped(1, Duration::ZERO);
        s.expect_close_reply(CloseReply::Code(1000));
    });
    family.case("close without FIN is a protocol error (1002)", |s| {
        s.frame(false, 0, OP_CLOSE, &close_payload(1000, b""));
        s.expect_failure(1002);
    });

    // 7.3 close reasons that are not UTF-8.
    family.group();
    for (name, reason) in [
        ("surrogate", vec![0xED, 0xA0, 0x80]),
        ("lone continuation", vec![0x80]),
        ("overlong", vec![0xC0, 0xAF]),
        ("truncated at the end", b"bye\xE2\x82".to_vec()),
        ("impossible byte", vec![0xFF]),
        ("above U+10FFFF", vec![0xF4, 0x90, 0x80, 0x80]),
        (
            "kosme then a surrogate",
            [
                "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes(),
                &[0xED, 0xA0, 0x80],
                b"edited",
            ]
            .concat(),
        ),
    ] {
        family.case(
            format!("close reason with invalid UTF-8 ({name}) fails with 1007"),
            move |s| {
                s.close(&close_payload(1000, &reason));
                s.expect_failure(1007);
            },
        );
    }

    // 7.4 valid codes are answered (echoed, or 1000).
    family.group();
    for &code in VALID_CODES {
        family.case(
            format!("close with valid code {code} is answered"),
            move |s| {
                s.close(&close_payload(code, b""));
                s.expect_close_reply(CloseReply::EchoOrNormal(code));
            },
        );
        family.case(
            format!("close with valid code {code} and a reason is answered"),
            move |s| {
                s.close(&close_payload(code, b"reason"));
                s.expect_close_reply(CloseReply::EchoOrNormal(code));
            },
        );
    }

    // 7.5 invalid codes fail with 1002.
    family.group();
    for &code in INVALID_CODES {
        family.case(
            format!("close with invalid code {code} fails with 1002"),
            move |s| {
                s.close(&close_payload(code, b""));
                s.expect_failure(1002);
            },
        );
    }

    // 7.6 messages right before a close are all echoed before the close answer.
    family.group();
    for (opcode, kind) in [(OP_TEXT, "text"), (OP_BINARY, "binary")] {
        family.case(
            format!("ten {kind} messages, then close, in one write: ten echoes, then the answer"),
            move |s| {
                let messages: Vec<Vec<u8>> = (0..10)
                    .map(|i| ascii_payload(i * 10, &format!("7.11-{i}")))
                    .collect();
                for message in &messages {
                    s.frame(true, 0, opcode, message);
                }
                s.close(&close_payload(1000, b""));
                for message in &messages {
                    s.expect_message(opcode, message);
                }
                s.expect_close_reply(CloseReply::Code(1000));
            },
        );
    }
    family
}
