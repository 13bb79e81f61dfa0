//! Close codes (RFC 6455 section 7.4) and close frame payloads.
//!
//! Owns `CloseCode`, the rule for which codes may appear on the wire, parsing of a received close payload
//! (code + UTF-8 reason) and encoding of the payload we send. It must never allocate and never produce a
//! payload over 125 bytes.

use super::error::ProtocolError;

/// A close status code: a `u16` with the RFC 6455 / IANA registry names as constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// Never on the wire: "no status code was present".
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// Never on the wire: "the connection was closed without a close frame".
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY: CloseCode = CloseCode(1008);
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    pub const INTERNAL: CloseCode = CloseCode(1011);
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// Never on the wire: TLS handshake failure.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// May this code appear in a close frame? 1000-1003, 1007-1014 (the registered codes; 1004, 1005, 1006
    /// and 1015 are reserved for local use), and 3000-4999 (libraries, frameworks and applications).
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> CloseCode {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

/// Longest close reason that fits a control frame (125 bytes minus the 2-byte code).
pub const MAX_REASON_LEN: usize = 123;

/// Parses a received close payload: empty (no code), or a valid code followed by a UTF-8 reason.
/// 1 byte or an invalid code -> 1002; a reason that is not UTF-8 -> 1007.
pub fn parse_close_payload(payload: &[u8]) -> Result<(Option<CloseCode>, &str), ProtocolError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(ProtocolError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode);
            }
            let reason = simdutf8::basic::from_utf8(reason)
                .map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok((Some(code), reason))
        }
    }
}

/// Longest prefix of `reason` that is at most `max` bytes and ends on a char boundary.
pub fn truncate_reason(reason: &str, max: usize) -> &str {
    if reason.len() <= max {
        return reason;
    }
    let mut end = max;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Builds a close payload: the code in network order, then `reason` truncated at a char boundary to fit
/// 123 bytes. Returns the buffer and the used length.
pub fn encode_close_payload(code: CloseCode, reason: &str) -> ([u8; 125], usize) {
    let mut out = [0u8; 125];
    out[..2].copy_from_slice(&code.0.to_be_bytes());
    let reason = truncate_reason(reason, MAX_REASON_LEN);
    out[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
    (out, 2 + reason.len())
}

/// Appends a close payload (see `encode_close_payload`) to `out`.
pub fn encode_close_payload_into(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    let (payload, len) = encode_close_payload(code, reason);
    out.extend_from_slice(&payload[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_follows_the_registry() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn parses_payloads() {
        assert_eq!(parse_close_payload(b""), Ok((None, "")));
        assert_eq!(
            parse_close_payload(b"\x03\xe8"),
            Ok((Some(CloseCode::NORMAL), ""))
        );
        assert_eq!(
            parse_close_payload(b"\x03\xe8bye \xc3\xa9"),
            Ok((Some(CloseCode::NORMAL), "bye é"))
        );
        assert_eq!(
            parse_close_payload(b"\x03"),
            Err(ProtocolError::CloseTooShort)
        );
        assert_eq!(
            parse_close_payload(b"\x03\xed"),
            Err(ProtocolError::InvalidCloseCode)
        ); // 1005
        assert_eq!(
            parse_close_payload(b"\x00\x00"),
            Err(ProtocolError::InvalidCloseCode)
        );
        assert_eq!(
            parse_close_payload(b"\x03\xe8\xff"),
            Err(ProtocolError::InvalidCloseReason)
        );
        assert_eq!(
            ProtocolError::CloseTooShort.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
        assert_eq!(
            ProtocolError::InvalidCloseCode.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
        assert_eq!(
            ProtocolError::InvalidCloseReason.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn encodes_and_truncates_at_a_char_boundary() {
        let (p, n) = encode_close_payload(CloseCode::GOING_AWAY, "bye");
        assert_eq!(&p[..n], b"\x03\xe9bye");
        // 61 two-byte chars = 122 bytes, plus a 2-byte char that would end at 124 > 123.
        let long = "é".repeat(62);
        let (p, n) = encode_close_payload(CloseCode::NORMAL, &long);
        assert_eq!(n, 2 + 122);
        assert_eq!(parse_close_payload(&p[..n]).unwrap().1, "é".repeat(61));
        let ascii = "x".repeat(200);
        let (_, n) = encode_close_payload(CloseCode::NORMAL, &ascii);
        assert_eq!(n, 125);
        let mut v = Vec::new();
        encode_close_payload_into(&mut v, CloseCode::TOO_BIG, "big");
        assert_eq!(v, b"\x03\xf1big");
    }
}
