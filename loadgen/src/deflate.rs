//! permessage-deflate (RFC 7692) on the client side, for `--deflate`: the offer, the check of the server's
//! answer, and the compressor of what a worker sends. The codec itself is ringws's own
//! (`ringws::protocol::deflate`: flate2 on zlib-rs, the server's library); inflating what arrives is the
//! message reader's `feed_deflate` with the worker's inflater pool. This module must never grow a codec of
//! its own.
//!
//! The default offer asks for no context takeover either way, so one compressor per worker (reset per
//! message) and the worker's pooled inflaters serve every connection, as on the server; its answer is
//! honoured only if it keeps to that: one permessage-deflate element with `server_no_context_takeover`.
//! `--deflate-server-context` offers the server its context takeover instead (uWebSockets' dedicated
//! compressors, `ringws serve --compression context`): where the answer keeps it, the connection keeps its
//! own inflater, window and all, from message to message. Either way this client never keeps its own
//! context (always allowed) and offers no `client_max_window_bits`, so none may come back. Checking an
//! answer allocates nothing; compressing reuses one buffer per worker.

use crate::wire::{self, OpCode};
use ringws::protocol::deflate::{
    offers, ClientMaxWindowBits, Compressor, DeflateParams, Negotiated, EXTENSION_NAME,
};

/// The `Sec-WebSocket-Extensions` value `--deflate` sends.
pub const OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The value `--deflate --deflate-server-context` sends: the server may keep its context.
pub const OFFER_SERVER_CONTEXT: &str = "permessage-deflate; client_no_context_takeover";

/// What the plan says about permessage-deflate (`--deflate`).
#[derive(Debug, Clone, Copy)]
pub struct ClientDeflate {
    /// Compression level of what this client sends.
    pub level: u8,
    /// `--deflate-server-context`: the offer lets the server keep its context between messages.
    pub server_context: bool,
}

impl ClientDeflate {
    pub fn new(level: u8, server_context: bool) -> ClientDeflate {
        ClientDeflate {
            level,
            server_context,
        }
    }

    /// The `Sec-WebSocket-Extensions` value this client offers.
    pub fn offer(&self) -> &'static str {
        match self.server_context {
            false => OFFER,
            true => OFFER_SERVER_CONTEXT,
        }
    }
}

/// The server's answer to the offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// No `Sec-WebSocket-Extensions` in the answer: messages go plain.
    Declined,
    /// permessage-deflate as the answer agreed it (what a message reader is given).
    Agreed(Negotiated),
    /// An answer this client cannot honour (the handshake fails).
    Invalid,
}

/// Checks the values of every `Sec-WebSocket-Extensions` header of the server's 101 answer to the offer
/// (`server_context`: whether it let the server keep its context).
pub fn check_answer<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    server_context: bool,
) -> Answer {
    let mut elements = offers(values);
    let Some(first) = elements.next() else {
        return Answer::Declined;
    };
    let Ok(extension) = first else {
        return Answer::Invalid;
    };
    if !extension.is(EXTENSION_NAME) || elements.next().is_some() {
        return Answer::Invalid;
    }
    match DeflateParams::from_extension(&extension) {
        Ok(params)
            if (server_context || params.server_no_context_takeover)
                && params.client_max_window_bits == ClientMaxWindowBits::Absent =>
        {
            Answer::Agreed(Negotiated::from_answer(&params))
        }
        _ => Answer::Invalid,
    }
}

/// A worker's compressor for the data messages it sends on connections that agreed.
pub struct MessageCompressor {
    compressor: Compressor,
    /// The compressed payload of the message being framed (reused).
    buf: Vec<u8>,
}

impl MessageCompressor {
    pub fn new(level: u8) -> MessageCompressor {
        MessageCompressor {
            // A 15-bit window (the offer does not bound it) and no context takeover: reset per message.
            compressor: Compressor::new(level, 15, false),
            buf: Vec::new(),
        }
    }

    /// Appends one masked data frame carrying `payload`: compressed (RSV1) when that makes it smaller,
    /// plain otherwise. Returns whether it went compressed.
    pub fn encode(
        &mut self,
        out: &mut Vec<u8>,
        opcode: OpCode,
        payload: &[u8],
        mask: [u8; 4],
    ) -> bool {
        self.buf.clear();
        if self.compressor.compress(payload, &mut self.buf) {
            wire::encode_compressed_frame(out, opcode, &self.buf, mask);
            true
        } else {
            wire::encode_frame(out, opcode, payload, mask);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringws::protocol::deflate::Inflater;

    /// What ringws's own negotiation answers to an offer, as the answer's parameters.
    fn ringws_answer(offer: &str, mode: ringws::protocol::deflate::DeflateMode) -> String {
        let config = ringws::protocol::deflate::DeflateConfig {
            mode,
            ..Default::default()
        };
        let agreed = ringws::protocol::deflate::negotiate([offer.as_bytes()], &config).unwrap();
        let mut value = Vec::new();
        agreed.write_value(&mut value);
        String::from_utf8(value).unwrap()
    }

    #[test]
    fn the_offers_are_ones_ringws_agrees_to() {
        use ringws::protocol::deflate::DeflateMode;
        for server_context in [false, true] {
            let offer = ClientDeflate::new(1, server_context).offer();
            let answer = ringws_answer(offer, DeflateMode::NoContext);
            let Answer::Agreed(negotiated) = check_answer([answer.as_bytes()], server_context)
            else {
                panic!("{offer} -> {answer}");
            };
            assert!(!negotiated.server_context_takeover(), "{answer}");
            assert!(!negotiated.client_context_takeover(), "{answer}");
        }
        // The server-context offer to a server keeping its context: the reader keeps its inflater.
        let answer = ringws_answer(OFFER_SERVER_CONTEXT, DeflateMode::Context);
        let Answer::Agreed(negotiated) = check_answer([answer.as_bytes()], true) else {
            panic!("{answer}");
        };
        assert!(negotiated.server_context_takeover(), "{answer}");
        // The default offer never lets it.
        let answer = ringws_answer(OFFER, DeflateMode::Context);
        assert!(
            matches!(check_answer([answer.as_bytes()], false), Answer::Agreed(n) if !n.server_context_takeover()),
            "{answer}"
        );
    }

    #[test]
    fn answers() {
        let check = |values: &[&str]| check_answer(values.iter().map(|v| v.as_bytes()), false);
        assert_eq!(check(&[]), Answer::Declined);
        for agreed in [
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate;server_no_context_takeover",
            "Permessage-Deflate; server_no_context_takeover; server_max_window_bits=10",
        ] {
            assert!(
                matches!(check(&[agreed]), Answer::Agreed(n) if !n.server_context_takeover()),
                "{agreed}"
            );
        }
        for invalid in [
            // The server would keep its context: our per-message inflater could not follow.
            "permessage-deflate",
            "permessage-deflate; client_no_context_takeover",
            // Not offered, so not allowed back (RFC 7692 section 7.1.2.2).
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
            // Several elements, an extension never offered, a malformed header.
            "permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_no_context_takeover; bogus",
            "permessage-deflate; =",
        ] {
            assert_eq!(check(&[invalid]), Answer::Invalid, "{invalid}");
        }
        assert_eq!(
            check(&[
                "permessage-deflate; server_no_context_takeover",
                "permessage-deflate; server_no_context_takeover"
            ]),
            Answer::Invalid
        );
    }

    #[test]
    fn answers_to_the_server_context_offer() {
        let check = |value: &str| check_answer([value.as_bytes()], true);
        for (answer, keeps) in [
            ("permessage-deflate", true),
            ("permessage-deflate; client_no_context_takeover", true),
            ("permessage-deflate; server_max_window_bits=10", true),
            ("permessage-deflate; server_no_context_takeover", false),
        ] {
            assert!(
                matches!(check(answer), Answer::Agreed(n) if n.server_context_takeover() == keeps),
                "{answer}"
            );
        }
        for invalid in [
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; bogus",
        ] {
            assert_eq!(check(invalid), Answer::Invalid, "{invalid}");
        }
    }

    #[test]
    fn compressed_frames_carry_rsv1_and_inflate_back() {
        let payload = crate::payload::filler(crate::payload::PayloadKind::Json, 1024);
        let mut compressor = MessageCompressor::new(1);
        let mask = [1, 2, 3, 4];
        for _ in 0..3 {
            let mut out = Vec::new();
            assert!(compressor.encode(&mut out, OpCode::Text, &payload, mask));
            // FIN, RSV1, text; masked, 16-bit length.
            assert_eq!(out[0], 0x80 | 0x40 | 0x1);
            assert_eq!(out[1], 0x80 | 126);
            let len = u16::from_be_bytes([out[2], out[3]]) as usize;
            assert!(len < payload.len() / 2, "{len}");
            let mut body = out[8..].to_vec();
            assert_eq!(body.len(), len);
            ringws::protocol::mask::apply_mask(&mut body, mask, 0);
            let mut inflater = Inflater::new();
            let mut inflated = Vec::new();
            inflater.inflate(&body, &mut inflated, 1 << 20).unwrap();
            inflater.finish(&mut inflated, 1 << 20).unwrap();
            assert_eq!(inflated, payload);
        }
        // Not smaller: sent plain, RSV1 clear.
        let mut out = Vec::new();
        assert!(!compressor.encode(&mut out, OpCode::Binary, b"xy", mask));
        assert_eq!(out[0], 0x80 | 0x2);
    }
}
