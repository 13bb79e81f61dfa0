//! The client side of RFC 6455 as the load generator uses it, on top of `ringws::protocol`: the opening
//! handshake (request, response check), masked frame encoding and the message reader in the client role.
//!
//! Everything about the wire format lives in `ringws::protocol`; this module only adapts it to the load
//! generator (random keys, error reasons for reports). It must never grow a codec of its own.

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
    pub response: Vec<u8>,
}

/// Why a handshake failed, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The server answered with an HTTP status other than 101.
    Status(u16),
    /// The answer was not a valid 101 for our key.
    Invalid,
}

/// Appends the upgrade request to `out` and returns the state needed to check the answer.
pub fn start_handshake(
    out: &mut Vec<u8>,
    host: &str,
    path: &str,
    rng: &mut Rng,
) -> ClientHandshake {
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
    random[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
    let key = handshake::encode_key(random);
    let key_b64 = std::str::from_utf8(&key).expect("base64 is ASCII");
    handshake::build_client_request(out, host, path, key_b64, &[]);
    ClientHandshake {
        expected_accept: handshake::accept_key(&key),
        response: Vec::new(),
    }
}

impl ClientHandshake {
    /// Checks the bytes received so far. `Ok(Some(n))`: the first `n` bytes of `self.response` were the 101
    /// answer (the rest are frames). `Ok(None)`: need more bytes.
    pub fn check(&self) -> Result<Option<usize>, HandshakeFailure> {
        match handshake::validate_server_response(&self.response, &self.expected_accept, &[]) {
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

/// Appends a masked close frame with `code` and no reason.
pub fn encode_close(out: &mut Vec<u8>, code: u16, mask: [u8; 4]) {
    let (payload, len) = close::encode_close_payload(close::CloseCode(code), "");
    encode_frame(out, OpCode::Close, &payload[..len], mask);
}

#[cfg(test)]
mod tests {
    use super::*;

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
