//! Echo mode against the real server with an independent client (tungstenite): every message comes back
//! with its type and content, whatever its size or fragmentation; ping gets pong; close is echoed.

mod common;

use common::*;
use std::io::Write;
use tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

#[test]
fn text_and_binary_echo_at_boundary_sizes() {
    let server = ServerProcess::start(ringws_binary(), &[]);
    let mut ws = ws_client(server.addr);
    for size in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
        let binary: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        ws.send(Message::binary(binary.clone())).unwrap();
        assert_eq!(
            ws.read().unwrap(),
            Message::binary(binary),
            "binary of {size} bytes"
        );
        let text: String = (0..size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(
            ws.read().unwrap(),
            Message::text(text),
            "text of {size} bytes"
        );
    }
}

#[test]
fn many_small_messages_in_flight_come_back_in_order() {
    let server = ServerProcess::start(ringws_binary(), &[]);
    let mut ws = ws_client(server.addr);
    for i in 0..2000 {
        ws.write(Message::text(format!("message {i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..2000 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("message {i}")));
    }
}

#[test]
fn fragmented_message_is_reassembled_with_interleaved_ping() {
    let server = ServerProcess::start(ringws_binary(), &[]);
    let mut stream = raw_websocket(server.addr);
    let mut bytes = client_frame(false, 0, 0x1, "héllo ".as_bytes(), true);
    bytes.extend(client_frame(true, 0, 0x9, b"ping!", true));
    bytes.extend(client_frame(false, 0, 0x0, "wörld".as_bytes(), true));
    bytes.extend(client_frame(true, 0, 0x0, b"!", true));
    // One byte at a time: the server must not care how the bytes are chunked.
    for b in &bytes {
        stream.write_all(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(
        read_server_frame(&mut stream),
        Some((true, 0xA, b"ping!".to_vec()))
    );
    assert_eq!(
        read_server_frame(&mut stream),
        Some((true, 0x1, "héllo wörld!".as_bytes().to_vec()))
    );
}

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let server = ServerProcess::start(ringws_binary(), &[]);
    let mut ws = ws_client(server.addr);
    ws.send(Message::Ping(b"are you there"[..].into())).unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Pong(b"are you there"[..].into())
    );
}

#[test]
fn close_is_echoed_with_the_same_code_then_tcp_closes() {
    let server = ServerProcess::start(ringws_binary(), &[]);
    for code in [1000u16, 1001, 3000, 4999] {
        let mut stream = raw_websocket(server.addr);
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        stream
            .write_all(&client_frame(true, 0, 0x8, &payload, true))
            .unwrap();
        assert_eq!(expect_close(&mut stream), Some(code));
        expect_eof(&mut stream);
    }
    // An empty close is answered with 1000.
    let mut stream = raw_websocket(server.addr);
    stream
        .write_all(&client_frame(true, 0, 0x8, b"", true))
        .unwrap();
    assert_eq!(expect_close(&mut stream), Some(1000));
    expect_eof(&mut stream);
}

#[test]
fn tungstenite_close_handshake_completes() {
    let server = ServerProcess::start(ringws_binary(), &[]);
    let mut ws = ws_client(server.addr);
    ws.close(Some(CloseFrame {
        code: TCloseCode::Normal,
        reason: "done".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, TCloseCode::Normal),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

#[test]
fn frames_pipelined_behind_the_handshake_are_processed() {
    let server = ServerProcess::start(ringws_binary(), &[]);
    let mut stream = connect(server.addr);
    let mut bytes = upgrade_request("/chat?room=1").into_bytes();
    bytes.extend(client_frame(true, 0, 0x2, b"\x00\x01\x02", true));
    stream.write_all(&bytes).unwrap();
    let (status, _) = read_response_head(&mut stream);
    assert_eq!(status, 101);
    assert_eq!(
        read_server_frame(&mut stream),
        Some((true, 0x2, vec![0, 1, 2]))
    );
}
