//! Bodies of the fuzz targets in `fuzz/`, callable from ordinary tests so every crash found becomes a
//! regression test that runs on stable. Each function panics only when an invariant is broken.
//!
//! Not part of the API: hidden from the docs, used by `fuzz/fuzz_targets/*` and `tests/protocol_*.rs`.

use super::close::CloseCode;
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
