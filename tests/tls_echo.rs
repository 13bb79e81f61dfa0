//! wss:// against the real binary: echo of text and binary messages of every size class up to 1 MiB,
//! fragmented messages, ping/pong, protocol violations answered with their close codes, https routes,
//! and TLS 1.2 as well as 1.3.

mod common;

use std::io::{Read, Write};

use common::client_frame;
use common::tls::{TlsServer, TlsStream};
use common::{metric, ringws_binary};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + len) as u8).collect()
}

#[test]
fn echoes_text_and_binary_of_all_sizes() {
    let server = TlsServer::start(ringws_binary(), &["--workers", "2"]);
    let mut ws = server.ws("/");
    for len in [
        0usize,
        1,
        125,
        126,
        127,
        1000,
        16 * 1024 - 1,
        16 * 1024 + 7,
        65535,
        65536,
        200_000,
        1 << 20,
    ] {
        let data = payload(len);
        ws.send(Message::binary(data.clone())).unwrap();
        match ws.read().unwrap() {
            Message::Binary(got) => assert_eq!(&got[..], &data[..], "binary of {len} bytes"),
            other => panic!("expected binary of {len}, got {other:?}"),
        }
        let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        ws.send(Message::text(text.clone())).unwrap();
        match ws.read().unwrap() {
            Message::Text(got) => assert_eq!(got.as_str(), text, "text of {len} bytes"),
            other => panic!("expected text of {len}, got {other:?}"),
        }
    }
    // Many small messages written back to back (several frames per record and per receive).
    for i in 0..200 {
        ws.write(Message::text(format!("message {i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..200 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("message {i}")));
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => break,
            Ok(_) => {}
            Err(e) => panic!("close: {e}"),
        }
    }
}

#[test]
fn fragmented_messages_and_ping_pong() {
    let server = TlsServer::start(ringws_binary(), &[]);
    let mut ws = server.ws("/");
    // A text message in three fragments with a ping in between.
    let parts: [&[u8]; 3] = [b"Hello, ", b"fragmented ", b"world"];
    ws.write(Message::Frame(Frame::message(
        parts[0].to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .unwrap();
    ws.write(Message::Ping(b"in-between".to_vec().into()))
        .unwrap();
    ws.write(Message::Frame(Frame::message(
        parts[1].to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .unwrap();
    ws.write(Message::Frame(Frame::message(
        parts[2].to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    ws.flush().unwrap();
    let mut got_pong = false;
    let mut got_text = false;
    while !(got_pong && got_text) {
        match ws.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"in-between");
                got_pong = true;
            }
            Message::Text(t) => {
                assert_eq!(t.as_str(), "Hello, fragmented world");
                got_text = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // A large binary message in 64 KiB fragments (spans many records and receives).
    let data = payload(600_000);
    let chunks: Vec<&[u8]> = data.chunks(65536).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        ws.write(Message::Frame(Frame::message(
            chunk.to_vec(),
            opcode,
            i + 1 == chunks.len(),
        )))
        .unwrap();
    }
    ws.flush().unwrap();
    match ws.read().unwrap() {
        Message::Binary(got) => assert_eq!(&got[..], &data[..]),
        other => panic!("unexpected {other:?}"),
    }
}

fn raw_wss(server: &TlsServer) -> TlsStream {
    let mut stream = server.connect();
    stream
        .write_all(common::upgrade_request("/").as_bytes())
        .unwrap();
    stream.flush().unwrap();
    let (status, head) = common::read_response_head(&mut stream);
    assert_eq!(status, 101, "{head}");
    assert!(head.contains(common::SAMPLE_ACCEPT), "{head}");
    stream
}

#[test]
fn protocol_violations_get_their_close_codes_over_tls() {
    let server = TlsServer::start(ringws_binary(), &["--max-message-size", "64KiB"]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked frame",
            client_frame(true, 0, 0x1, b"hi", false),
            1002,
        ),
        (
            "RSV bits",
            client_frame(true, 0b100, 0x1, b"hi", true),
            1002,
        ),
        (
            "reserved opcode",
            client_frame(true, 0, 0x3, b"", true),
            1002,
        ),
        (
            "fragmented ping",
            client_frame(false, 0, 0x9, b"", true),
            1002,
        ),
        (
            "invalid UTF-8",
            client_frame(true, 0, 0x1, &[0xff, 0xfe], true),
            1007,
        ),
        (
            "too large",
            client_frame(true, 0, 0x2, &vec![0u8; 70_000], true),
            1009,
        ),
        (
            "close 1000",
            client_frame(true, 0, 0x8, &1000u16.to_be_bytes(), true),
            1000,
        ),
    ];
    for (name, bytes, code) in cases {
        let mut stream = raw_wss(&server);
        stream.write_all(&bytes).unwrap();
        stream.flush().unwrap();
        match common::read_server_frame(&mut stream) {
            Some((true, 0x8, p)) => {
                assert!(p.len() >= 2, "{name}: close without code");
                assert_eq!(u16::from_be_bytes([p[0], p[1]]), code, "{name}");
            }
            other => panic!("{name}: expected a close frame, got {other:?}"),
        }
        if name != "close 1000" {
            // The server started this close: the client's reply (RFC 6455 section 5.5.1), which the
            // server waits for before close_notify.
            stream
                .write_all(&client_frame(true, 0, 0x8, &code.to_be_bytes(), true))
                .unwrap();
            stream.flush().unwrap();
        }
        // Then the server ends TLS (close_notify) and TCP: a clean EOF, not a timeout.
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{name}: bytes after the close frame"),
            Err(e) => panic!("{name}: no close_notify and EOF after the close frame: {e}"),
        }
    }
}

#[test]
fn https_routes_on_the_tls_port() {
    let server = TlsServer::start(ringws_binary(), &["--workers", "1"]);
    let mut stream = server.connect();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    stream.flush().unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok\n"), "{text}");
    // A WebSocket echo, then /metrics counts the TLS handshakes.
    let mut ws = server.ws("/");
    ws.send(Message::text("x")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("x"));
    let mut stream = server.connect();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(metric(&text, "ringws_tls_handshakes_total"), 3, "{text}");
    assert_eq!(metric(&text, "ringws_tls_handshake_failures_total"), 0);
    assert_eq!(metric(&text, "ringws_messages_in_total"), 1);
}

#[test]
fn tls12_clients_are_served() {
    let server = TlsServer::start(ringws_binary(), &[]);
    let config = server
        .cert
        .client_config_versions(&[&rustls::version::TLS12]);
    let stream = server.connect_with(config);
    assert_eq!(
        stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (mut ws, _) = tungstenite::client::client("ws://localhost/", stream).unwrap();
    for len in [5usize, 20_000, 300_000] {
        let data = payload(len);
        ws.send(Message::binary(data.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(data));
    }
    let stream = server.connect();
    assert_eq!(
        stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[test]
fn idle_connections_get_pinged_over_tls() {
    let server = TlsServer::start(
        ringws_binary(),
        &["--idle-timeout", "500ms", "--ping-timeout", "2s"],
    );
    let mut ws = server.ws("/");
    ws.get_mut()
        .sock
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    match ws.read().unwrap() {
        Message::Ping(p) => assert!(p.is_empty()),
        other => panic!("expected the idle ping, got {other:?}"),
    }
    // tungstenite answers the ping; the connection stays usable.
    ws.send(Message::text("after ping")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("after ping"));
}
