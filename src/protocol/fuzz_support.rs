//! Bodies of the fuzz targets in `fuzz/`, callable from ordinary tests so every crash found becomes a
//! regression test that runs on stable. Each function panics only when an invariant is broken.
//!
//! Not part of the API: hidden from the docs, used by `fuzz/fuzz_targets/*` and `tests/protocol_*.rs`.

use super::close::CloseCode;
use super::deflate::{
    negotiate, offers, ClientMaxWindowBits, DeflateConfig, DeflateMode, DeflateParams,
    EXTENSION_NAME,
};
use super::deflate::{Compressor, Inflater};
use super::frame::decode_header;
use super::handshake::{
    accept_key, parse_request, validate_server_response, validate_upgrade, write_101,
    HandshakePolicy,
};
use super::message::{Event, MessageKind, MessageReader, ProtocolError, ReaderLimits, Role};
use super::utf8::Utf8Validator;

/// An `Event` with owned payloads, for comparing runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedEvent {
    Message(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<CloseCode>, String),
}

impl OwnedEvent {
    pub fn from_event(event: Event<'_>) -> OwnedEvent {
        match event {
            Event::Message { kind, payload } => OwnedEvent::Message(kind, payload.to_vec()),
            Event::Ping(p) => OwnedEvent::Ping(p.to_vec()),
            Event::Pong(p) => OwnedEvent::Pong(p.to_vec()),
            Event::Close { code, reason } => OwnedEvent::Close(code, reason.to_string()),
        }
    }
}

/// Feeds `stream` to a fresh reader in pieces ending at `cuts` (ascending, each <= len); returns the events
/// and the first error.
pub fn run_reader(
    role: Role,
    limits: &ReaderLimits,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<OwnedEvent>, Result<(), ProtocolError>) {
    let mut reader = MessageReader::new(role);
    let mut events = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let end = end.clamp(start, stream.len());
        let mut piece = stream[start..end].to_vec();
        start = end;
        if let Err(e) = reader.feed(&mut piece, limits, |ev| {
            events.push(OwnedEvent::from_event(ev))
        }) {
            assert!(reader.is_closed(), "an error must close the reader");
            assert_eq!(
                reader.buffered_capacity(),
                0,
                "an error must release the assembly buffer"
            );
            return (events, Err(e));
        }
    }
    (events, Ok(()))
}

/// Fuzz target `frame_reader`: byte 0 picks the role and limits, bytes 1..3 seed the chunking, the rest is
/// the stream. The stream is fed whole and in pieces; both must give the same events and the same error, and
/// every event must respect the rules (text is UTF-8, sizes within limits, close codes valid).
pub fn frame_reader(data: &[u8]) {
    let (control, seed, stream) = match data {
        [c, s0, s1, rest @ ..] => (*c, u16::from_le_bytes([*s0, *s1]), rest),
        _ => return,
    };
    let role = if control & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let limits = match (control >> 1) & 3 {
        0 => ReaderLimits::default(),
        1 => ReaderLimits {
            max_frame_size: 64,
            max_message_size: 200,
        },
        2 => ReaderLimits {
            max_frame_size: 0,
            max_message_size: 0,
        },
        _ => ReaderLimits {
            max_frame_size: 1 << 20,
            max_message_size: 100,
        },
    };
    // Frame headers alone must never panic.
    let _ = decode_header(stream);

    let (whole, whole_result) = run_reader(role, &limits, stream, &[]);
    let mut cuts = Vec::new();
    let mut state = seed as u32 | 1;
    let mut pos = 0usize;
    let max_piece = 1 + (control as usize >> 3) * 4;
    while pos < stream.len() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        pos += 1 + state as usize % max_piece;
        cuts.push(pos.min(stream.len()));
    }
    let (pieces, pieces_result) = run_reader(role, &limits, stream, &cuts);
    assert_eq!(whole, pieces, "events differ with chunking");
    assert_eq!(whole_result, pieces_result, "result differs with chunking");
    let (bytewise, bytewise_result) = run_reader(
        role,
        &limits,
        stream,
        &(1..stream.len()).collect::<Vec<_>>(),
    );
    assert_eq!(whole, bytewise, "events differ when fed byte by byte");
    assert_eq!(
        whole_result, bytewise_result,
        "result differs when fed byte by byte"
    );

    for (i, event) in whole.iter().enumerate() {
        match event {
            OwnedEvent::Message(kind, payload) => {
                assert!(payload.len() <= limits.max_message_size);
                if *kind == MessageKind::Text {
                    assert!(
                        std::str::from_utf8(payload).is_ok(),
                        "text message must be UTF-8"
                    );
                }
            }
            OwnedEvent::Ping(p) | OwnedEvent::Pong(p) => assert!(p.len() <= 125),
            OwnedEvent::Close(code, reason) => {
                assert!(code.is_none_or(|c| c.is_valid_on_wire()));
                assert!(reason.len() <= 123);
                assert_eq!(i, whole.len() - 1, "nothing may follow a close");
            }
        }
    }
}

/// Fuzz target `handshake`: the bytes as a request (server side) and as a response (client side). Nothing
/// may panic; an accepted upgrade must have a valid key, a subprotocol the client offered and one of ours,
/// and every answer must be a complete, parsable HTTP response.
pub fn handshake(data: &[u8]) {
    let origins = vec!["https://ok.example".to_string()];
    let protocols = vec!["chat".to_string(), "superchat".to_string()];
    for (limit, policy) in [
        (8192, HandshakePolicy::default()),
        (
            64,
            HandshakePolicy {
                allowed_origins: &origins,
                subprotocols: &protocols,
            },
        ),
    ] {
        match parse_request(data, limit) {
            Ok(None) => assert!(data.len() < limit, "a full buffer must not wait for more"),
            Ok(Some((request, consumed))) => {
                assert!(consumed <= data.len() && consumed <= limit);
                // A complete head: every strict prefix still needs more (or is already over the limit).
                let prefix = parse_request(&data[..consumed - 1], limit);
                assert!(
                    matches!(prefix, Ok(None)),
                    "prefix of a complete head: {prefix:?}"
                );
                let _ = request.content_length();
                let _ = request.path_only();
                match validate_upgrade(&request, &policy) {
                    Ok(upgrade) => {
                        assert_eq!(upgrade.key.len(), 24);
                        if let Some(chosen) = upgrade.protocol {
                            assert!(policy.subprotocols.iter().any(|p| p == chosen));
                            assert!(request.header_has_token("sec-websocket-protocol", chosen));
                        }
                        let mut out = Vec::new();
                        write_101(&mut out, upgrade.key, upgrade.protocol);
                        let accept = accept_key(upgrade.key);
                        let offered: Vec<&str> = upgrade.protocol.into_iter().collect();
                        let checked = validate_server_response(&out, &accept, &offered);
                        assert_eq!(
                            checked,
                            Ok(Some((out.len(), upgrade.protocol.map(str::to_string))))
                        );
                    }
                    Err(e) => check_error_response(e),
                }
            }
            Err(e) => check_error_response(e),
        }
    }
    let _ = validate_server_response(data, &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), &["chat"]);
}

fn check_error_response(error: super::handshake::HandshakeError) {
    let mut out = Vec::new();
    error.write_response(&mut out);
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(&out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("error response does not parse: {other:?}"),
    };
    assert_eq!(response.code, Some(error.status()));
    assert_eq!(out.len() - head, error.reason().len() + 1);
}

/// Fuzz target `utf8`: incremental validation over pieces chosen by the first byte must agree with
/// `std::str::from_utf8` on the whole input.
pub fn utf8_pieces(data: &[u8]) {
    let (step, text) = match data {
        [s, rest @ ..] => (1 + *s as usize % 17, rest),
        _ => return,
    };
    let mut validator = Utf8Validator::new();
    let mut ok = true;
    for piece in text.chunks(step) {
        if validator.feed(piece).is_err() {
            ok = false;
            break;
        }
    }
    let ok = ok && validator.finish().is_ok();
    assert_eq!(ok, std::str::from_utf8(text).is_ok());
}

/// Fuzz target `extensions`: byte 0 picks the `DeflateConfig` (bits 0-1 the mode, 2-4 and 5-7 the two
/// windows, 16 bits meaning out of range), the rest is `Sec-WebSocket-Extensions`, split at `\n` into header
/// values and also taken whole. Nothing may panic; `negotiate` must agree with a plain reading of the rules
/// (declined when off or when any header is malformed, else the first permessage-deflate offer the config
/// accepts); an agreement must obey RFC 7692 against its offer, and its response value must re-parse to
/// exactly its parameters.
pub fn extensions(data: &[u8]) {
    let (control, header) = match data {
        [c, rest @ ..] => (*c, rest),
        _ => return,
    };
    let config = DeflateConfig {
        mode: match control & 3 {
            1 => DeflateMode::Context,
            2 => DeflateMode::Off,
            _ => DeflateMode::NoContext,
        },
        max_window_bits: 9 + ((control >> 2) & 7),
        context_window_bits: 9 + (control >> 5),
        ..DeflateConfig::default()
    };
    check_extensions(header.split(|b| *b == b'\n'), &config);
    check_extensions(std::iter::once(header), &config);
}

fn check_extensions<'a>(values: impl Iterator<Item = &'a [u8]> + Clone, config: &DeflateConfig) {
    let agreed = negotiate(values.clone(), config);

    // The rules, read plainly.
    let mut expected = None;
    if config.mode != DeflateMode::Off {
        for element in offers(values.clone()) {
            let Ok(extension) = element else {
                expected = None;
                break;
            };
            if expected.is_none() && extension.is(EXTENSION_NAME) {
                expected = DeflateParams::from_extension(&extension)
                    .ok()
                    .and_then(|params| config.accept(&params).ok());
            }
        }
    }
    assert_eq!(agreed, expected, "negotiate disagrees with the rules");

    let Some(agreed) = agreed else { return };
    let (offer, response) = (agreed.offer(), agreed.response());
    assert!(values.clone().any(|v| v
        .windows(EXTENSION_NAME.len())
        .any(|w| w.eq_ignore_ascii_case(EXTENSION_NAME.as_bytes()))));
    // RFC 7692 section 7.1, against the accepted offer.
    if offer.server_no_context_takeover || config.mode == DeflateMode::NoContext {
        assert!(response.server_no_context_takeover);
    }
    if config.mode == DeflateMode::NoContext {
        assert!(response.client_no_context_takeover);
    }
    match (
        offer.server_max_window_bits,
        response.server_max_window_bits,
    ) {
        (None, None) => {}
        (Some(offered), Some(answered)) => assert!((9..=offered).contains(&answered)),
        other => panic!("server_max_window_bits answered wrongly: {other:?}"),
    }
    match (
        offer.client_max_window_bits,
        response.client_max_window_bits,
    ) {
        (_, ClientMaxWindowBits::Absent) => {}
        (ClientMaxWindowBits::NoValue, ClientMaxWindowBits::Bits(answered)) => {
            assert!((8..=15).contains(&answered))
        }
        (ClientMaxWindowBits::Bits(offered), ClientMaxWindowBits::Bits(answered)) => {
            assert!((8..=offered).contains(&answered))
        }
        other => panic!("client_max_window_bits answered without an offer: {other:?}"),
    }
    let compress = agreed.compress_window_bits();
    assert!((9..=offer.server_max_window_bits.unwrap_or(15)).contains(&compress));
    assert!((9..=15).contains(&agreed.inflate_window_bits()));
    if let ClientMaxWindowBits::Bits(answered) = response.client_max_window_bits {
        assert!(agreed.inflate_window_bits() >= answered);
    }
    assert_eq!(
        agreed.client_context_takeover(),
        !response.client_no_context_takeover
    );

    // The answer re-parses to exactly its parameters.
    let mut value = Vec::new();
    agreed.write_value(&mut value);
    let mut answer = offers(std::iter::once(&value[..]));
    let element = answer
        .next()
        .expect("an answer has one element")
        .expect("an answer follows the grammar");
    assert!(answer.next().is_none(), "an answer has one element");
    assert!(element.is(EXTENSION_NAME));
    assert_eq!(
        DeflateParams::from_extension(&element).as_ref(),
        Ok(response)
    );
}

/// Fuzz target `inflate`: byte 0 picks the output limit (2^(b % 21) bytes) and the compressor's window
/// (9 + b % 7 bits), byte 1 the piece size (1 to 64 bytes); the rest is taken twice: as a compressed
/// payload (fed in pieces, then whole: neither may panic, the output may never pass the limit in length or
/// capacity, and both must give the same message when they succeed), and as a message to compress (the
/// payload must be shorter and inflate back to it).
pub fn inflate(data: &[u8]) {
    let (limit, bits, step, rest) = match data {
        [a, b, rest @ ..] => (1usize << (a % 21), 9 + a % 7, 1 + (*b as usize % 64), rest),
        _ => return,
    };
    let run = |pieces: usize| {
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        let mut result = Ok(());
        for piece in rest.chunks(pieces.max(1)) {
            result = inflater.inflate(piece, &mut out, limit);
            assert!(out.len() <= limit && out.capacity() <= limit);
            if result.is_err() {
                break;
            }
        }
        let result = result.and_then(|()| inflater.finish(&mut out, limit));
        assert!(out.len() <= limit && out.capacity() <= limit);
        result.map(|()| out)
    };
    let pieces = run(step);
    let whole = run(rest.len());
    if let (Ok(a), Ok(b)) = (&pieces, &whole) {
        assert_eq!(a, b, "same message however the payload is cut");
    }
    let mut payload = Vec::new();
    if Compressor::new(6, bits, false).compress(rest, &mut payload) {
        assert!(payload.len() < rest.len());
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        inflater.inflate(&payload, &mut out, rest.len()).unwrap();
        inflater.finish(&mut out, rest.len()).unwrap();
        assert_eq!(out, rest);
    }
}
