//! Each protocol violation gets a close frame with the code RFC 6455 requires (and nothing else), then
//! the server closes TCP. Raw TCP with hand-made frames.

mod common;

use common::*;
use std::io::Write;

/// Sends `bytes` on a fresh WebSocket and expects exactly one close frame with `code`, then EOF.
fn expect_violation(server: &ServerProcess, bytes: &[u8], code: u16, what: &str) {
    let mut stream = raw_websocket(server.addr);
    stream.write_all(bytes).unwrap();
    match read_server_frame(&mut stream) {
        Some((true, 0x8, payload)) => {
            assert!(payload.len() >= 2, "{what}: close without code");
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code, "{what}");
            assert!(
                std::str::from_utf8(&payload[2..]).is_ok(),
                "{what}: reason must be UTF-8"
            );
        }
        other => panic!("{what}: expected a close frame, got {other:?}"),
    }
    expect_eof(&mut stream);
}

#[test]
fn each_violation_gets_its_close_code() {
    let server = ServerProcess::start(ringws_binary(), &["--max-message-size", "64KiB"]);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            client_frame(true, 0, 0x1, b"hi", false),
            1002,
            "unmasked client frame",
        ),
        (
            client_frame(true, 0b100, 0x1, b"hi", true),
            1002,
            "RSV1 without extension",
        ),
        (
            client_frame(true, 0b001, 0x2, b"hi", true),
            1002,
            "RSV3 without extension",
        ),
        (
            client_frame(true, 0, 0x3, b"hi", true),
            1002,
            "reserved data opcode",
        ),
        (
            client_frame(true, 0, 0xB, b"hi", true),
            1002,
            "reserved control opcode",
        ),
        (
            client_frame(false, 0, 0x9, b"hi", true),
            1002,
            "fragmented ping",
        ),
        (
            client_frame(true, 0, 0x9, &[b'x'; 126], true),
            1002,
            "ping over 125 bytes",
        ),
        (
            client_frame(true, 0, 0x0, b"hi", true),
            1002,
            "continuation without a start",
        ),
        (
            [
                client_frame(false, 0, 0x1, b"a", true),
                client_frame(true, 0, 0x1, b"b", true),
            ]
            .concat(),
            1002,
            "new message inside a fragmented one",
        ),
        (
            client_frame(true, 0, 0x1, &[0xce, 0xba, 0xff], true),
            1007,
            "invalid UTF-8 text",
        ),
        (
            [
                client_frame(false, 0, 0x1, b"ok", true),
                client_frame(false, 0, 0x0, &[0xc0, 0x80], true),
            ]
            .concat(),
            1007,
            "invalid UTF-8 in a fragment (fail fast, before the message ends)",
        ),
        (
            client_frame(true, 0, 0x8, &[0x03], true),
            1002,
            "close payload of 1 byte",
        ),
        (
            client_frame(true, 0, 0x8, &1005u16.to_be_bytes(), true),
            1002,
            "close code 1005 on the wire",
        ),
        (
            client_frame(true, 0, 0x8, &999u16.to_be_bytes(), true),
            1002,
            "close code 999",
        ),
        (
            client_frame(true, 0, 0x8, &5000u16.to_be_bytes(), true),
            1002,
            "close code 5000",
        ),
        (
            client_frame(true, 0, 0x8, &[0x03, 0xe8, 0xff, 0xfe], true),
            1007,
            "close reason not UTF-8",
        ),
        (
            client_frame(true, 0, 0x2, &vec![0u8; 70_000], true),
            1009,
            "message over --max-message-size",
        ),
        (
            [
                client_frame(false, 0, 0x2, &vec![0u8; 40_000], true),
                client_frame(true, 0, 0x0, &vec![0u8; 40_000], true),
            ]
            .concat(),
            1009,
            "fragments adding up over --max-message-size",
        ),
        (
            // 64-bit length with the top bit set.
            vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
            1002,
            "64-bit length with the most significant bit set",
        ),
    ];
    let mut sent = std::collections::HashMap::<u16, u64>::new();
    for (bytes, code, what) in cases {
        expect_violation(&server, &bytes, code, what);
        *sent.entry(code).or_default() += 1;
    }
    // Every close the server started is counted by the code it sent (summed over the workers).
    let text = metrics_text(server.addr);
    for (code, n) in sent {
        let label = format!("code=\"{code}\"");
        let counted: u64 = text
            .lines()
            .filter(|l| l.starts_with("ringws_server_closes_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum();
        assert_eq!(counted, n, "server-started closes with {code}:\n{text}");
    }
}

#[test]
fn oversized_frame_header_is_refused_before_its_payload_arrives() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--max-message-size", "1MiB", "--max-frame-size", "1KiB"],
    );
    // Only the header of a 2 KiB frame: the server answers 1009 without waiting for the payload.
    let mut header = client_frame(true, 0, 0x2, &vec![0u8; 2048], true);
    header.truncate(8);
    expect_violation(&server, &header, 1009, "frame over --max-frame-size");
}

#[test]
fn other_connections_are_unaffected_by_a_violation() {
    let server = ServerProcess::start(ringws_binary(), &[]);
    let mut good = ws_client(server.addr);
    expect_violation(
        &server,
        &client_frame(true, 0, 0x1, b"x", false),
        1002,
        "unmasked",
    );
    good.send(tungstenite::Message::text("still here")).unwrap();
    assert_eq!(
        good.read().unwrap(),
        tungstenite::Message::text("still here")
    );
}
