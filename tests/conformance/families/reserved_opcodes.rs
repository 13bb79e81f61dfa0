//! Family 4, reserved opcodes: data opcodes 0x3-0x7 and control opcodes 0xB-0xF are protocol errors
//! (1002), with or without payload, after valid traffic, and in the middle of a fragmented message.

use crate::suite::cases::Family;
use crate::suite::wire::OP_TEXT;

pub fn cases() -> Family {
    let mut family = Family::new(4);
    for (range, kind) in [(3u8..=7, "data"), (0xB..=0xF, "control")] {
        family.group();
        for opcode in range {
            family.case(
                format!("reserved {kind} opcode {opcode:#x} without payload: 1002"),
                move |s| {
                    s.frame(true, 0, opcode, b"");
                    s.expect_failure(1002);
                },
            );
            family.case(
                format!("reserved {kind} opcode {opcode:#x} with payload: 1002"),
                move |s| {
                    s.frame(true, 0, opcode, b"reserved opcode payload");
                    s.expect_failure(1002);
                },
            );
            family.case(
                format!("text, reserved {kind} opcode {opcode:#x}, ping: echo, then 1002 only"),
                move |s| {
                    s.text(b"hello");
                    s.frame(true, 0, opcode, b"payload");
                    s.ping(b"must not be answered");
                    s.expect_text(b"hello");
                    s.expect_failure(1002);
                },
            );
            family.case(
                format!("reserved {kind} opcode {opcode:#x} between two fragments: 1002"),
                move |s| {
                    s.frame(false, 0, OP_TEXT, b"start ");
                    s.frame(true, 0, opcode, b"x");
                    s.frame(true, 0, 0x0, b"end");
                    s.expect_failure(1002);
                },
            );
        }
    }
    family
}
