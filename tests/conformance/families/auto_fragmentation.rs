//! Family 10, automatic fragmentation: messages the client splits into fixed-size frames (the way a
//! client with an automatic fragment size sends them) come back whole, including text whose code points
//! straddle frame boundaries. Whatever fragmentation the server applies to its own replies must be valid
//! (checked by the client's frame reader).

use super::{binary_payload, utf8_payload};
use crate::suite::cases::Family;
use crate::suite::wire::{OP_BINARY, OP_TEXT};

pub fn cases() -> Family {
    let mut family = Family::new(10);
    family.group();
    for &(opcode, len, fragment) in &[
        (OP_TEXT, 65_536usize, 1300usize),
        (OP_BINARY, 65_536, 1300),
        (OP_TEXT, 65_536, 1301),
        (OP_TEXT, 200_000, 4093),
        (OP_BINARY, 1 << 20, 4096),
        (OP_BINARY, 1 << 20, 65_535),
        (OP_TEXT, 3000, 1),
        (OP_TEXT, 10_000, 3),
        (OP_TEXT, 10_000, 7),
        (OP_BINARY, 100_000, 125),
        (OP_BINARY, 100_000, 126),
    ] {
        let kind = if opcode == OP_TEXT {
            "multi-byte text"
        } else {
            "binary"
        };
        family.case(
            format!("{kind} message of {len} bytes in frames of {fragment} bytes"),
            move |s| {
                let seed = format!("10-{len}-{fragment}");
                let payload = if opcode == OP_TEXT {
                    utf8_payload(len, &seed)
                } else {
                    binary_payload(len, &seed)
                };
                s.fragmented(opcode, &payload, fragment);
                s.expect_message(opcode, &payload);
                s.close_normally();
            },
        );
    }
    family
}
