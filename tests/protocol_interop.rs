//! Interoperability of the protocol layer with an independent RFC 6455 implementation (tungstenite), over
//! an in-memory stream: our server side against its client, and our client side against its server.

use ringws::protocol::frame::{encode_frame, OpCode};
use ringws::protocol::fuzz_support::OwnedEvent;
use ringws::protocol::handshake::{
    accept_key, build_client_request, encode_key, parse_request, validate_server_response,
    validate_upgrade, write_101, HandshakePolicy, DEFAULT_MAX_HEADER_BYTES,
};
use ringws::protocol::{CloseCode, MessageKind, MessageReader, ReaderLimits, Role};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use tungstenite::handshake::HandshakeError as TError;
use tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

/// A byte pipe: reads what the test pushed into `incoming` (WouldBlock when empty), records writes.
#[derive(Default)]
struct Pipe {
    incoming: VecDeque<u8>,
    written: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.incoming.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.incoming.len());
        for (slot, byte) in buf.iter_mut().zip(self.incoming.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn feed_all(reader: &mut MessageReader, bytes: &mut [u8]) -> Vec<OwnedEvent> {
    let mut events = Vec::new();
    reader
        .feed(bytes, &ReaderLimits::default(), |ev| {
            events.push(OwnedEvent::from_event(ev))
        })
        .expect("valid frames");
    events
}

#[test]
fn our_server_side_with_a_tungstenite_client() {
    let request =
        tungstenite::client::IntoClientRequest::into_client_request("ws://localhost:9001/chat?x=1")
            .unwrap();
    let mut request = request;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "v1, v2".parse().unwrap());
    let mut mid = match tungstenite::client(request, Pipe::default()) {
        Err(TError::Interrupted(mid)) => mid,
        Err(e) => panic!("handshake failed early: {e}"),
        Ok(_) => panic!("handshake cannot finish without a response"),
    };
    let sent = std::mem::take(&mut mid.get_mut().get_mut().written);
    let (req, consumed) = parse_request(&sent, DEFAULT_MAX_HEADER_BYTES)
        .unwrap()
        .expect("complete request");
    assert_eq!(consumed, sent.len());
    assert_eq!(req.path(), "/chat?x=1");
    let ours = vec!["v2".to_string()];
    let upgrade = validate_upgrade(
        &req,
        &HandshakePolicy {
            allowed_origins: &[],
            subprotocols: &ours,
        },
    )
    .unwrap();
    assert_eq!(upgrade.protocol, Some("v2"));
    let mut response = Vec::new();
    write_101(&mut response, upgrade.key, upgrade.protocol);
    mid.get_mut().get_mut().incoming.extend(response);
    let (mut client, resp) = mid
        .handshake()
        .map_err(|e| format!("{e}"))
        .expect("tungstenite accepts our 101");
    assert_eq!(resp.headers().get("Sec-WebSocket-Protocol").unwrap(), "v2");

    // Client -> our server reader.
    let big = "ü".repeat(40_000);
    client.send(Message::text("hello")).unwrap();
    client.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    client
        .send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    client.send(Message::text(big.clone())).unwrap();
    client
        .send(Message::Close(Some(CloseFrame {
            code: TCloseCode::Away,
            reason: "bye".into(),
        })))
        .unwrap();
    let mut wire = std::mem::take(&mut client.get_mut().written);
    let mut server = MessageReader::new(Role::Server);
    // Feed in uneven pieces, as a socket would deliver them.
    let mut events = Vec::new();
    for piece in wire.chunks_mut(1000) {
        events.extend(feed_all(&mut server, piece));
    }
    assert_eq!(
        events,
        vec![
            OwnedEvent::Message(MessageKind::Text, b"hello".to_vec()),
            OwnedEvent::Message(MessageKind::Binary, vec![1, 2, 3]),
            OwnedEvent::Ping(b"are you there".to_vec()),
            OwnedEvent::Message(MessageKind::Text, big.into_bytes()),
            OwnedEvent::Close(Some(CloseCode::GOING_AWAY), "bye".into()),
        ]
    );

    // Our server frames -> the tungstenite client.
    let mut frames = Vec::new();
    encode_frame(&mut frames, true, OpCode::Text, "κόσμε".as_bytes(), None);
    encode_frame(&mut frames, false, OpCode::Binary, b"ab", None);
    encode_frame(&mut frames, true, OpCode::Pong, b"", None);
    encode_frame(
        &mut frames,
        true,
        OpCode::Continuation,
        &[7u8; 70_000],
        None,
    );
    encode_frame(&mut frames, true, OpCode::Close, b"\x03\xe9", None);
    client.get_mut().incoming.extend(frames);
    assert_eq!(client.read().unwrap(), Message::text("κόσμε"));
    assert_eq!(client.read().unwrap(), Message::Pong(Vec::new().into()));
    let mut expected = b"ab".to_vec();
    expected.extend_from_slice(&[7u8; 70_000]);
    assert_eq!(client.read().unwrap(), Message::binary(expected));
    match client.read().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected close, got {other:?}"),
    }
}

#[test]
#[allow(clippy::result_large_err)] // the callback's error type is tungstenite's `ErrorResponse`
fn our_client_side_with_a_tungstenite_server() {
    let key = encode_key(*b"sixteen byte key");
    let key_str = std::str::from_utf8(&key).unwrap();
    let mut pipe = Pipe::default();
    let mut request = Vec::new();
    build_client_request(&mut request, "localhost:9001", "/echo", key_str, &["chat"]);
    pipe.incoming.extend(request);
    let callback = |_req: &tungstenite::handshake::server::Request,
                    mut resp: tungstenite::handshake::server::Response| {
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", "chat".parse().unwrap());
        Ok(resp)
    };
    let mut server = tungstenite::accept_hdr(pipe, callback)
        .map_err(|e| format!("{e}"))
        .expect("tungstenite accepts our request");
    let answer = std::mem::take(&mut server.get_mut().written);
    let accept = accept_key(&key);
    let (consumed, protocol) = validate_server_response(&answer, &accept, &["chat"])
        .unwrap()
        .expect("complete");
    assert_eq!(
        (consumed, protocol.as_deref()),
        (answer.len(), Some("chat"))
    );

    // Our masked client frames -> the tungstenite server.
    let mut frames = Vec::new();
    encode_frame(
        &mut frames,
        false,
        OpCode::Text,
        "hal".as_bytes(),
        Some([1, 2, 3, 4]),
    );
    encode_frame(&mut frames, true, OpCode::Ping, b"p", Some([9, 9, 9, 9]));
    encode_frame(
        &mut frames,
        true,
        OpCode::Continuation,
        "lo €".as_bytes(),
        Some([0xde, 0xad, 0xbe, 0xef]),
    );
    server.get_mut().incoming.extend(frames);
    assert_eq!(server.read().unwrap(), Message::Ping(b"p".to_vec().into()));
    assert_eq!(server.read().unwrap(), Message::text("hallo €"));

    // The tungstenite server's frames -> our client reader (which requires them unmasked).
    server.send(Message::binary(vec![5u8; 300])).unwrap();
    server.send(Message::text("done")).unwrap();
    let mut wire = std::mem::take(&mut server.get_mut().written);
    // The Pong answering our ping comes first.
    let mut client = MessageReader::new(Role::Client);
    let events = feed_all(&mut client, &mut wire);
    assert_eq!(
        events,
        vec![
            OwnedEvent::Pong(b"p".to_vec()),
            OwnedEvent::Message(MessageKind::Binary, vec![5u8; 300]),
            OwnedEvent::Message(MessageKind::Text, b"done".to_vec()),
        ]
    );
}
