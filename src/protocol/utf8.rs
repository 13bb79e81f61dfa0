//! Incremental UTF-8 validation of a text message that arrives in pieces (fragments, receive buffers).
//!
//! Owns `Utf8Validator`: 4 bytes of state (at most 3 bytes of an unfinished code point and their count). Each
//! piece is checked in one pass (`simdutf8`; an ASCII word check or `std` for pieces up to 64 bytes) after its
//! unfinished trailing code point is split off; only a code point straddling two pieces is stitched together
//! here. It fails as soon as the bytes seen so far can no longer start a valid string (fail fast), and accepts
//! a code point split anywhere. It must never allocate and never copy more than 4 bytes of a piece.

use std::fmt;

/// The bytes fed so far are not (the start of) valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

impl fmt::Display for Utf8Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid UTF-8")
    }
}

impl std::error::Error for Utf8Error {}

/// Streaming validator: `feed` every piece in order, then `finish` at the end of the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// Leading bytes of a code point whose remaining bytes have not arrived yet.
    partial: [u8; 3],
    /// How many bytes of `partial` are in use (0..=3).
    partial_len: u8,
}

/// Length of the code point a lead byte announces (0 for bytes that can never start one).
#[inline]
fn sequence_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// Pieces up to this length skip the SIMD validator (whose setup costs more than it saves on a few words):
/// an ASCII check by 8-byte words, then `std::str::from_utf8` for the rest.
const SMALL_TEXT: usize = 64;

/// True if every byte is ASCII, checked 8 bytes at a time.
#[inline]
fn is_ascii_words(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let mut high = 0u64;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        high |= u64::from_ne_bytes(word);
    }
    for &byte in chunks.remainder() {
        high |= byte as u64;
    }
    high & 0x8080_8080_8080_8080 == 0
}

/// Length of the unfinished code point at the end of `bytes`: the last lead byte within the final 3 bytes,
/// if it announces more bytes than follow it; else 0.
#[inline]
fn unfinished_tail_len(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xc0 != 0x80 {
            // Not a continuation byte: ASCII, a lead byte, or a byte that can never appear.
            let need = sequence_len(byte);
            return if need > back { back } else { 0 };
        }
    }
    0
}

impl Utf8Validator {
    pub const fn new() -> Utf8Validator {
        Utf8Validator {
            partial: [0; 3],
            partial_len: 0,
        }
    }

    /// Validates the next piece. Err as soon as the text fed so far cannot be valid UTF-8 whatever follows;
    /// an incomplete code point at the end of `bytes` is kept for the next piece.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Utf8Error> {
        if self.partial_len > 0 {
            let have = self.partial_len as usize;
            let need = sequence_len(self.partial[0]);
            let mut code_point = [0u8; 4];
            code_point[..have].copy_from_slice(&self.partial[..have]);
            let take = (need - have).min(bytes.len());
            code_point[have..have + take].copy_from_slice(&bytes[..take]);
            let stitched = &code_point[..have + take];
            match std::str::from_utf8(stitched) {
                Ok(_) => {}
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix and `bytes` is used up.
                    self.partial[..stitched.len()].copy_from_slice(stitched);
                    self.partial_len = stitched.len() as u8;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error),
            }
            self.partial_len = 0;
            bytes = &bytes[take..];
        }
        // Split off an unfinished code point at the end so the body is checked in one SIMD pass: the body
        // then ends on a char boundary (or right before a lead byte), so any error in it is certain.
        let (body, tail) = bytes.split_at(bytes.len() - unfinished_tail_len(bytes));
        let valid = if body.len() <= SMALL_TEXT {
            is_ascii_words(body) || std::str::from_utf8(body).is_ok()
        } else {
            simdutf8::basic::from_utf8(body).is_ok()
        };
        if !valid {
            return Err(Utf8Error);
        }
        if !tail.is_empty() {
            // A lead byte and fewer continuation bytes than it announces: keep it if it is still a valid
            // prefix (std reports `error_len() == None` exactly for that).
            match std::str::from_utf8(tail) {
                Err(e) if e.error_len().is_none() => {
                    self.partial[..tail.len()].copy_from_slice(tail);
                    self.partial_len = tail.len() as u8;
                }
                _ => return Err(Utf8Error),
            }
        }
        Ok(())
    }

    /// Ends the text: Err if a code point is left unfinished. Leaves the validator reset.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.partial_len == 0;
        self.reset();
        if complete {
            Ok(())
        } else {
            Err(Utf8Error)
        }
    }

    /// Forgets any unfinished code point, ready for a new text.
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }

    /// True when no unfinished code point is pending.
    pub fn is_complete(&self) -> bool {
        self.partial_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_split(bytes: &[u8], splits: &[usize]) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &s in splits {
            v.feed(&bytes[start..s])?;
            start = s;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn unfinished_tail_is_split_off_only_when_incomplete() {
        assert_eq!(unfinished_tail_len(b""), 0);
        assert_eq!(unfinished_tail_len(b"abc"), 0);
        assert_eq!(unfinished_tail_len(b"a\xe2"), 1);
        assert_eq!(unfinished_tail_len(b"a\xe2\x82"), 2);
        assert_eq!(
            unfinished_tail_len(b"a\xe2\x82\xac"),
            0,
            "complete euro sign"
        );
        assert_eq!(unfinished_tail_len(b"\xf0\x9f\x98"), 3);
        assert_eq!(
            unfinished_tail_len(b"\xf0\x9f\x98\x80"),
            0,
            "lead is 4 back: complete"
        );
        assert_eq!(
            unfinished_tail_len(b"a\xff"),
            0,
            "an impossible byte stays in the body and fails there"
        );
        assert_eq!(
            unfinished_tail_len(b"a\x80\x80\x80"),
            0,
            "stray continuation bytes stay in the body"
        );
        assert!(is_ascii_words(b"plain ascii text, 27 bytes!"));
        assert!(!is_ascii_words(b"plain ascii text\xc3\xa9 and more"));
        assert!(!is_ascii_words(b"\x80"));
    }

    #[test]
    fn state_is_tiny() {
        assert!(std::mem::size_of::<Utf8Validator>() <= 8);
    }

    #[test]
    fn accepts_code_points_split_at_every_position() {
        let text = "aé€𝄞z κόσμε 😀".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(validate_split(text, &[i, j]), Ok(()), "splits {i} {j}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let text = "𝄞€é".as_bytes();
        let mut v = Utf8Validator::new();
        for b in text {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn fails_fast_on_a_certainly_invalid_prefix() {
        // Autobahn 6.3.x style: 0xce 0xba 0xe1 0xbd 0xb9 0xcf 0x83 0xce 0xbc 0xce 0xb5 0xed 0xa0 0x80 ...
        // The surrogate lead 0xed 0xa0 is invalid as soon as the second byte is seen.
        let mut v = Utf8Validator::new();
        v.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")
            .unwrap();
        v.feed(b"\xed").unwrap();
        assert_eq!(v.feed(b"\xa0"), Err(Utf8Error));

        let mut v = Utf8Validator::new();
        assert_eq!(
            v.feed(b"ok\xf5"),
            Err(Utf8Error),
            "0xf5 can never start a code point"
        );
        let mut v = Utf8Validator::new();
        assert_eq!(
            v.feed(b"\xe0\x80"),
            Err(Utf8Error),
            "overlong prefix fails before the last byte"
        );
        let mut v = Utf8Validator::new();
        assert_eq!(
            v.feed(b"\xf4\x90"),
            Err(Utf8Error),
            "above U+10FFFF fails on the second byte"
        );
        let mut v = Utf8Validator::new();
        v.feed(b"\xf0\x90").unwrap();
        assert_eq!(
            v.feed(b"\x80a"),
            Err(Utf8Error),
            "a 4-byte sequence cut short by ASCII"
        );
    }

    #[test]
    fn finish_rejects_an_unfinished_code_point_and_resets() {
        let mut v = Utf8Validator::new();
        v.feed(b"abc\xe2\x82").unwrap();
        assert!(!v.is_complete());
        assert_eq!(v.finish(), Err(Utf8Error));
        assert!(v.is_complete());
        v.feed(b"fine").unwrap();
        v.finish().unwrap();
    }

    #[test]
    fn reset_forgets_pending_bytes() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xf0\x9f").unwrap();
        v.reset();
        v.feed(b"plain").unwrap();
        v.finish().unwrap();
    }
}
