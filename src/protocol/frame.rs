//! The RFC 6455 frame header (section 5.2): decoding from a possibly incomplete slice and encoding for both
//! roles.
//!
//! Owns `OpCode`, `FrameHeader`, `decode_header`, `encode_header` and `encode_frame`. Decoding rejects what
//! is wrong in a header by itself (reserved opcode, fragmented or oversized control frame, 64-bit length with
//! the top bit set); rules that depend on the connection (masking by role, RSV without extension,
//! fragmentation order, size limits) belong to `message`. Encoding never chooses a mask key: the caller
//! supplies it. Nothing here allocates except `encode_frame`, which appends to the caller's `Vec`.

use super::error::ProtocolError;
use super::mask::apply_mask;

/// Frame opcode. Reserved opcodes are not representable: decoding them is `ProtocolError::ReservedOpcode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit value, or None if it is reserved.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        match value {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Close, Ping and Pong.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Largest header: 2 bytes + 8-byte extended length + 4-byte mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as the low 3 bits (RSV1 = 0b100).
    pub rsv: u8,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// Decodes a frame header from the start of `buf`. `Ok(None)`: `buf` holds only part of a header, feed
/// more bytes. `Ok(Some((header, header_len)))`: the payload starts at `buf[header_len]`.
pub fn decode_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x7;
    let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode)?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if len7 as usize > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    let (payload_len, mut pos) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(b);
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    let mask = if masked {
        match buf.get(pos..pos + 4) {
            Some(b) => {
                pos += 4;
                Some([b[0], b[1], b[2], b[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        },
        pos,
    )))
}

/// Writes a header (RSV bits clear) into `out` using the shortest length encoding; returns its length.
/// `payload_len` must be below 2^63.
pub fn encode_header(
    out: &mut [u8; 14],
    fin: bool,
    opcode: OpCode,
    payload_len: u64,
    mask: Option<[u8; 4]>,
) -> usize {
    debug_assert!(payload_len >> 63 == 0, "payload length must be below 2^63");
    out[0] = (if fin { 0x80 } else { 0 }) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut pos = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if payload_len <= u16::MAX as u64 {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    };
    if let Some(key) = mask {
        out[pos..pos + 4].copy_from_slice(&key);
        pos += 4;
    }
    pos
}

/// Length of the header `encode_header` writes for this payload length and masking.
pub fn header_len(payload_len: u64, masked: bool) -> usize {
    let base = if payload_len < 126 {
        2
    } else if payload_len <= u16::MAX as u64 {
        4
    } else {
        10
    };
    base + if masked { 4 } else { 0 }
}

/// Appends a whole frame to `out`: header, then `payload` (masked with `mask` if given, for the client role;
/// `payload` itself is not modified).
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, fin, opcode, payload.len() as u64, mask);
    out.reserve(n + payload.len());
    out.extend_from_slice(&header[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples_decode() {
        // RFC 6455 5.7: single-frame unmasked text "Hello".
        let (h, n) = decode_header(b"\x81\x05Hello").unwrap().unwrap();
        assert_eq!(
            (h.fin, h.rsv, h.opcode, h.mask, h.payload_len, n),
            (true, 0, OpCode::Text, None, 5, 2)
        );
        // Masked "Hello".
        let (h, n) = decode_header(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.mask, h.payload_len, n),
            (Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6)
        );
        // Fragmented text: first frame FIN=0, then a continuation.
        let (h, _) = decode_header(b"\x01\x03Hel").unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (false, OpCode::Text));
        let (h, _) = decode_header(b"\x80\x02lo").unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (true, OpCode::Continuation));
        // 256 bytes binary (16-bit length) and 64 KiB (64-bit length).
        let (h, n) = decode_header(b"\x82\x7e\x01\x00").unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Binary, 256, 4));
        let (h, n) = decode_header(b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00")
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn incomplete_headers_need_more() {
        let full = b"\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00\x01\x02\x03\x04";
        for len in 0..full.len() {
            assert_eq!(decode_header(&full[..len]), Ok(None), "prefix {len}");
        }
        assert_eq!(decode_header(full).unwrap().unwrap().1, 14);
    }

    #[test]
    fn header_rules() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                decode_header(&[0x80 | op, 0x80]),
                Err(ProtocolError::ReservedOpcode),
                "opcode {op}"
            );
        }
        assert_eq!(
            decode_header(b"\x09\x80"),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            decode_header(b"\x89\xfe"),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert_eq!(
            decode_header(b"\x89\xff"),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert!(
            decode_header(b"\x89\xfd\0\0\0\0").unwrap().is_some(),
            "125 is allowed"
        );
        assert_eq!(
            decode_header(b"\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00"),
            Err(ProtocolError::InvalidLength)
        );
        let (h, _) = decode_header(b"\xf2\x00").unwrap().unwrap();
        assert_eq!(
            h.rsv, 0b111,
            "RSV bits are reported; the reader rejects them"
        );
        let (h, _) = decode_header(b"\xc2\x00").unwrap().unwrap();
        assert_eq!(h.rsv, 0b100);
    }

    #[test]
    fn encode_picks_the_shortest_length_and_round_trips() {
        for (len, expect) in [
            (0u64, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            ((1 << 63) - 1, 10),
        ] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let mut out = [0u8; 14];
                let n = encode_header(&mut out, len % 2 == 0, OpCode::Binary, len, mask);
                assert_eq!(n, expect + if mask.is_some() { 4 } else { 0 });
                assert_eq!(n, header_len(len, mask.is_some()));
                let (h, m) = decode_header(&out[..n]).unwrap().unwrap();
                assert_eq!(m, n);
                assert_eq!(
                    (h.fin, h.rsv, h.opcode, h.mask, h.payload_len),
                    (len % 2 == 0, 0, OpCode::Binary, mask, len)
                );
            }
        }
    }

    #[test]
    fn encode_frame_masks_a_copy() {
        let mut out = Vec::new();
        encode_frame(
            &mut out,
            true,
            OpCode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(out, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
        out.clear();
        encode_frame(&mut out, true, OpCode::Text, b"Hello", None);
        assert_eq!(out, b"\x81\x05Hello");
    }
}
