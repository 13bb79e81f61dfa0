//! The client side of RFC 6455 as the load generator uses it, on top of `ringws::protocol`: the opening
//! handshake (request, response check), masked frame encoding and the message reader in the client role.
//!
//! Everything about the wire format lives in `ringws::protocol`; this module only adapts it to the load
//! generator (random keys, error reasons for reports). It must never grow a codec of its own.

use ringws::protocol::deflate::Negotiated;
use ringws::protocol::{close, frame, handshake, message};

pub use frame::OpCode;
pub use message::{Event, MessageKind, MessageReader, ReaderLimits, Role};

/// A small, fast pseudo-random generator (xorshift64*) for mask keys and jitter. Not for secrets.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn mask_key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }

    /// A value uniformly spread over `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() >> 32) * bound) >> 32
    }
}

/// An opening handshake in progress: what the server's answer must carry.
pub struct ClientHandshake {
    expected_accept: [u8; 28],
    /// permessage-deflate was offered (`--deflate`): the answer may carry it. `Some(true)`: the offer let
    /// the server keep its context (`--deflate-server-context`).
    offered_deflate: Option<bool>,
    pub response: Vec<u8>,
}

/// A valid 101 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Length of the answer in the bytes received (the rest are frames).
    pub consumed: usize,
    /// permessage-deflate as the server agreed it (`NONE`: not agreed).
    pub deflate: Negotiated,
}

/// Why a handshake failed, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The server answered with an HTTP status other than 101.
    Status(u16),
    /// The answer was not a valid 101 for our key.
    Invalid,
}

/// Appends the upgrade request to `out` (offering permessage-deflate with `deflate`) and returns the
/// state needed to check the answer.
pub fn start_handshake(
    out: &mut Vec<u8>,
    host: &str,
    path: &str,
    deflate: Option<&crate::deflate::ClientDeflate>,
    rng: &mut Rng,
) -> ClientHandshake {
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
    random[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
    let key = handshake::encode_key(random);
    let key_b64 = std::str::from_utf8(&key).expect("base64 is ASCII");
    handshake::build_client_request(out, host, path, key_b64, &[]);
    if let Some(deflate) = deflate {
        // The request ends with its empty line: the offer goes before it.
        out.truncate(out.len() - 2);
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(deflate.offer().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }
    ClientHandshake {
        expected_accept: handshake::accept_key(&key),
        offered_deflate: deflate.map(|d| d.server_context),
        response: Vec::new(),
    }
}

const EXTENSIONS_HEADER: &[u8] = b"sec-websocket-extensions";

/// The header name of one line of an HTTP head, if it is `Sec-WebSocket-Extensions`: its value.
fn extensions_value(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    line[..colon]
        .eq_ignore_ascii_case(EXTENSIONS_HEADER)
        .then(|| line[colon + 1..].trim_ascii())
}

impl ClientHandshake {
    /// Checks the bytes received so far. `Ok(Some(opened))`: the start of `self.response` was a valid 101
    /// answer (the rest are frames). `Ok(None)`: need more bytes.
    ///
    /// With permessage-deflate offered, the answer's `Sec-WebSocket-Extensions` lines are checked here
    /// (`deflate::check_answer`) and the rest of the head by ringws's client handshake, which accepts no
    /// extension (it offers none).
    pub fn check(&self) -> Result<Option<Opened>, HandshakeFailure> {
        let head_end = self
            .response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4);
        let (Some(head_end), Some(server_context)) = (head_end, self.offered_deflate) else {
            return self.validate(&self.response).map(|opened| {
                opened.map(|consumed| Opened {
                    consumed,
                    deflate: Negotiated::NONE,
                })
            });
        };
        let head = &self.response[..head_end];
        let lines = || head.split(|&b| b == b'\n');
        let mut rest = Vec::with_capacity(head.len());
        for line in lines().filter(|line| extensions_value(line).is_none()) {
            rest.extend_from_slice(line);
            rest.push(b'\n');
        }
        rest.pop(); // the split's last piece is empty: no newline after it
        if self.validate(&rest)?.is_none() {
            return Err(HandshakeFailure::Invalid);
        }
        let answer =
            crate::deflate::check_answer(lines().filter_map(extensions_value), server_context);
        let deflate = match answer {
            crate::deflate::Answer::Declined => Negotiated::NONE,
            crate::deflate::Answer::Agreed(negotiated) => negotiated,
            crate::deflate::Answer::Invalid => return Err(HandshakeFailure::Invalid),
        };
        Ok(Some(Opened {
            consumed: head_end,
            deflate,
        }))
    }

    fn validate(&self, response: &[u8]) -> Result<Option<usize>, HandshakeFailure> {
        match handshake::validate_server_response(response, &self.expected_accept, &[]) {
            Ok(Some((consumed, _protocol))) => Ok(Some(consumed)),
            Ok(None) => Ok(None),
            Err(handshake::ResponseError::Status(status)) => Err(HandshakeFailure::Status(status)),
            Err(_) => Err(HandshakeFailure::Invalid),
        }
    }
}

/// Appends one complete, masked client frame.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    frame::encode_frame(out, true, opcode, payload, Some(mask));
}

/// Appends one complete, masked client frame whose payload is compressed (RSV1 set: RFC 7692 section 6).
pub fn encode_compressed_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    let start = out.len();
    encode_frame(out, opcode, payload, mask);
    out[start] |= 0x40;
}

/// Appends a masked close frame with `code` and no reason.
pub fn encode_close(out: &mut Vec<u8>, code: u16, mask: [u8; 4]) {
    let (payload, len) = close::encode_close_payload(close::CloseCode(code), "");
    encode_frame(out, OpCode::Close, &payload[..len], mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 101 answer to `request` with `extra` header lines, then `frames`.
    fn answer(request: &[u8], extra: &str, frames: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(request).unwrap();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = handshake::accept_key(key.as_bytes());
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
            std::str::from_utf8(&accept).unwrap()
        )
        .into_bytes();
        out.extend_from_slice(frames);
        out
    }

    #[test]
    fn handshake_offers_deflate_and_reads_the_answer() {
        let mut rng = Rng::new(3);
        let mut request = Vec::new();
        let offer = crate::deflate::ClientDeflate::new(1, false);
        let mut hs = start_handshake(&mut request, "h:1", "/", Some(&offer), &mut rng);
        let text = std::str::from_utf8(&request).unwrap();
        assert!(text.ends_with(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n\r\n"
        ));
        let cases = [
            ("", Ok(false)),
            (
                "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n",
                Ok(true),
            ),
            // The default offer does not let the server keep its context.
            (
                "Sec-WebSocket-Extensions: permessage-deflate\r\n",
                Err(HandshakeFailure::Invalid),
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\
                 Sec-WebSocket-Extensions: x-other\r\n",
                Err(HandshakeFailure::Invalid),
            ),
        ];
        for (extra, expected) in cases {
            hs.response = answer(&request, extra, b"\x81\x00");
            let head = hs.response.len() - 2;
            assert_eq!(
                hs.check(),
                expected.map(|deflate| Some(Opened {
                    consumed: head,
                    deflate: match deflate {
                        true => agreed(false),
                        false => Negotiated::NONE,
                    },
                })),
                "{extra}"
            );
            // Cut short: more bytes needed.
            hs.response.truncate(head - 3);
            assert_eq!(hs.check(), Ok(None), "{extra}");
        }
        // The rest of the answer is still checked.
        hs.response = answer(&request, "", b"");
        hs.response[60] ^= 1;
        assert!(hs.check().is_err());
        // Not offered: not in the request, and an answer with the extension fails.
        let mut request = Vec::new();
        let mut plain = start_handshake(&mut request, "h:1", "/", None, &mut rng);
        assert!(!std::str::from_utf8(&request)
            .unwrap()
            .contains("Extensions"));
        plain.response = answer(&request, "", b"");
        assert!(matches!(
            plain.check(),
            Ok(Some(Opened { deflate, .. })) if !deflate.is_on()
        ));
        plain.response = answer(
            &request,
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
            b"",
        );
        assert_eq!(plain.check(), Err(HandshakeFailure::Invalid));
    }

    /// The agreement of an answer without parameters beyond the no-context-takeover ones.
    fn agreed(server_context: bool) -> Negotiated {
        Negotiated::from_answer(&ringws::protocol::deflate::DeflateParams {
            server_no_context_takeover: !server_context,
            client_no_context_takeover: true,
            ..Default::default()
        })
    }

    #[test]
    fn the_server_context_offer_lets_the_answer_keep_it() {
        let mut rng = Rng::new(4);
        let mut request = Vec::new();
        let offer = crate::deflate::ClientDeflate::new(1, true);
        let mut hs = start_handshake(&mut request, "h:1", "/", Some(&offer), &mut rng);
        let text = std::str::from_utf8(&request).unwrap();
        assert!(text.ends_with(
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n\r\n"
        ));
        for (extra, server_context) in [
            ("Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n", true),
            ("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n", false),
        ] {
            hs.response = answer(&request, extra, b"");
            let Ok(Some(opened)) = hs.check() else {
                panic!("{extra}");
            };
            assert_eq!(opened.deflate, agreed(server_context), "{extra}");
            assert_eq!(opened.deflate.server_context_takeover(), server_context);
        }
    }

    #[test]
    fn rng_below_stays_in_range() {
        let mut rng = Rng::new(7);
        for bound in [1u64, 2, 3, 1000, u32::MAX as u64] {
            for _ in 0..1000 {
                assert!(rng.below(bound) < bound);
            }
        }
    }
}
