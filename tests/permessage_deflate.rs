//! permessage-deflate (RFC 7692) on by default: an offer is answered without context takeover, compressed
//! messages of every size come back compressed (RSV1) when that makes them smaller (over wss:// too), a
//! client that does not
//! offer never sees RSV1, RSV1 on a continuation or control frame is 1002, and a decompression bomb is
//! closed 1009 without the server's memory growing. Raw TCP with hand-made frames; the codec under test
//! compresses and inflates on the client side too (its unit tests check it against RFC 7692's examples).

mod common;

use common::tls::TlsServer;
use common::*;
use ringws::protocol::deflate::{Compressor, Inflater};
use std::io::{Read, Write};
use std::net::TcpStream;

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Opens a WebSocket offering `offer`; returns the stream and the 101's head.
fn open(server: &ServerProcess, offer: Option<&str>) -> (TcpStream, String) {
    websocket_offering(server.addr, offer)
}

/// One server frame: (first byte, payload).
fn read_frame(stream: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).ok()?;
    Some((head[0], payload))
}

/// A compressed payload for `input`: deflated, or one stored block when that does not shrink it (a valid
/// payload all the same: RFC 7692 section 7.2.3.3).
fn deflate(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if !Compressor::new(6, 15, false).compress(input, &mut out) {
        let len = input.len() as u16;
        out = vec![0x00];
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(input);
    }
    out
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut inflater = Inflater::new();
    let mut out = Vec::new();
    inflater.inflate(payload, &mut out, 1 << 24).unwrap();
    inflater.finish(&mut out, 1 << 24).unwrap();
    out
}

/// JSON-like text of `len` bytes.
fn json(len: usize) -> Vec<u8> {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < len {
        text.push_str(&format!("{{\"seq\":{i},\"name\":\"user{}\"}},", i % 13));
        i += 1;
    }
    text.truncate(len);
    text.into_bytes()
}

/// Reads the echo of a message: (compressed on the wire, its content).
fn read_message(stream: &mut impl Read) -> (bool, u8, Vec<u8>) {
    let (first, payload) = read_frame(stream).expect("an echo");
    assert_eq!(first & 0x80, 0x80, "the server sends messages whole");
    assert_eq!(first & 0x30, 0, "RSV2/RSV3 never set");
    let compressed = first & 0x40 != 0;
    let content = if compressed {
        inflate(&payload)
    } else {
        payload
    };
    (compressed, first & 0x0f, content)
}

#[test]
fn compressed_messages_of_every_size_are_echoed_compressed() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let (mut stream, head) = open(&server, Some(OFFER));
    let head_lower = head.to_ascii_lowercase();
    assert!(
        head_lower.contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ),
        "{head}"
    );
    for len in [16, 127, 128, 1000, 4096, 65_535, 65_536, 128 * 1024] {
        let message = json(len);
        let payload = deflate(&message);
        // Whole, then in three fragments (RSV1 on the first only).
        stream
            .write_all(&client_frame(true, 0b100, 0x1, &payload, true))
            .unwrap();
        let (a, b) = payload.split_at(payload.len() / 3);
        let (b, c) = b.split_at(b.len() / 2);
        let mut fragments = client_frame(false, 0b100, 0x2, a, true);
        fragments.extend(client_frame(false, 0, 0x0, b, true));
        fragments.extend(client_frame(true, 0, 0x9, b"between", true));
        fragments.extend(client_frame(true, 0, 0x0, c, true));
        stream.write_all(&fragments).unwrap();
        let (compressed, opcode, content) = read_message(&mut stream);
        assert_eq!((opcode, content.len()), (0x1, len));
        assert_eq!(content, message, "{len} bytes");
        // At or above the 128-byte threshold JSON shrinks: sent compressed; below it, plain.
        assert_eq!(compressed, len >= 128, "{len} bytes");
        let (first, pong) = read_frame(&mut stream).unwrap();
        assert_eq!((first, pong.as_slice()), (0x8a, b"between".as_slice()));
        let (compressed, opcode, content) = read_message(&mut stream);
        assert_eq!((compressed, opcode), (len >= 128, 0x2));
        assert_eq!(content, message, "{len} bytes fragmented");
    }
    // An uncompressed message on the same connection is fine too, and comes back compressed.
    stream
        .write_all(&client_frame(true, 0, 0x1, &json(2000), true))
        .unwrap();
    assert_eq!(read_message(&mut stream), (true, 0x1, json(2000)));
    let text = metrics_text(server.addr);
    assert!(
        metric(&text, "ringws_deflate_messages_total") >= 17,
        "{text}"
    );
}

#[test]
fn a_client_that_does_not_offer_never_gets_rsv1() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let (mut stream, head) = open(&server, None);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    for len in [200, 4096, 100_000] {
        stream
            .write_all(&client_frame(true, 0, 0x1, &json(len), true))
            .unwrap();
        let (compressed, _, content) = read_message(&mut stream);
        assert!(!compressed, "{len}");
        assert_eq!(content, json(len));
    }
    // And with compression off, an offer is declined.
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1", "--compression", "off"]);
    let (mut stream, head) = open(&server, Some(OFFER));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    stream
        .write_all(&client_frame(true, 0, 0x1, &json(4096), true))
        .unwrap();
    assert_eq!(read_message(&mut stream), (false, 0x1, json(4096)));
    // RSV1 is then a reserved bit: 1002.
    stream
        .write_all(&client_frame(true, 0b100, 0x1, &deflate(&json(500)), true))
        .unwrap();
    assert_eq!(expect_close(&mut stream), Some(1002));
}

#[test]
fn rsv1_on_a_continuation_or_control_frame_is_1002() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let payload = deflate(&json(1000));
    let (a, b) = payload.split_at(10);
    let cases = [
        [
            client_frame(false, 0b100, 0x1, a, true),
            client_frame(true, 0b100, 0x0, b, true),
        ]
        .concat(),
        client_frame(true, 0b100, 0x9, b"ping", true),
        client_frame(true, 0b100, 0xa, b"", true),
        client_frame(true, 0b100, 0x8, &1000u16.to_be_bytes(), true),
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let (mut stream, _) = open(&server, Some(OFFER));
        stream.write_all(bytes).unwrap();
        assert_eq!(expect_close(&mut stream), Some(1002), "case {i}");
        expect_eof(&mut stream);
    }
    // A corrupt stream: 1007.
    let (mut stream, _) = open(&server, Some(OFFER));
    stream
        .write_all(&client_frame(true, 0b100, 0x2, &[0xff, 0xff, 0xff], true))
        .unwrap();
    assert_eq!(expect_close(&mut stream), Some(1007));
    expect_eof(&mut stream);
}

#[test]
fn a_decompression_bomb_is_closed_1009_without_the_memory() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "1", "--max-message-size", "1MiB"],
    );
    // Warm up: one message of the largest allowed size, so that the baseline holds what a legitimate
    // message costs.
    let (mut stream, _) = open(&server, Some(OFFER));
    let big = json(1 << 20);
    stream
        .write_all(&client_frame(true, 0b100, 0x2, &deflate(&big), true))
        .unwrap();
    assert_eq!(read_message(&mut stream).2.len(), 1 << 20);
    let baseline = rss_kib(server.pid());
    // 20 bombs at once: 256 MiB of zeros each, about 256 KiB compressed, sent in 64 KiB writes.
    let zeros = vec![0u8; 256 << 20];
    let bomb = deflate(&zeros);
    drop(zeros);
    assert!(bomb.len() < 512 * 1024, "{}", bomb.len());
    let frame = client_frame(true, 0b100, 0x2, &bomb, true);
    let mut streams: Vec<TcpStream> = (0..20).map(|_| open(&server, Some(OFFER)).0).collect();
    for stream in &mut streams {
        // The server closes as soon as the limit is passed: the rest of the write may be refused.
        for chunk in frame.chunks(64 * 1024) {
            if stream.write_all(chunk).is_err() {
                break;
            }
        }
    }
    for stream in &mut streams {
        assert_eq!(expect_close(stream), Some(1009));
    }
    let grown = rss_kib(server.pid()).saturating_sub(baseline);
    // Each bomb may take its connection to the 1 MiB limit before it is refused, one at a time.
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
    let text = metrics_text(server.addr);
    assert_eq!(metric(&text, "ringws_inflaters_held"), 0, "{text}");
    assert!(text.contains("kind=\"too_big\"} 20"), "{text}");
    // The server still serves.
    let (mut stream, _) = open(&server, Some(OFFER));
    stream
        .write_all(&client_frame(true, 0b100, 0x1, &deflate(&json(300)), true))
        .unwrap();
    assert_eq!(read_message(&mut stream), (true, 0x1, json(300)));
}

#[test]
fn compression_works_unchanged_over_wss() {
    let server = TlsServer::start(ringws_binary(), &["--workers", "1"]);
    let mut stream = server.connect();
    let request = upgrade_request("/").replacen(
        "\r\n\r\n",
        &format!("\r\nSec-WebSocket-Extensions: {OFFER}\r\n\r\n"),
        1,
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.flush().unwrap();
    let (status, head) = read_response_head(&mut stream);
    assert_eq!(status, 101, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("permessage-deflate"),
        "{head}"
    );
    for len in [16, 1000, 65_536, 128 * 1024] {
        let message = json(len);
        stream
            .write_all(&client_frame(true, 0b100, 0x1, &deflate(&message), true))
            .unwrap();
        stream.flush().unwrap();
        let (compressed, opcode, content) = read_message(&mut stream);
        assert_eq!((compressed, opcode), (len >= 128, 0x1), "{len}");
        assert_eq!(content, message, "{len}");
    }
    stream
        .write_all(&client_frame(true, 0b100, 0x9, b"x", true))
        .unwrap();
    stream.flush().unwrap();
    let (first, payload) = read_frame(&mut stream).unwrap();
    assert_eq!((first, &payload[..2]), (0x88, &1002u16.to_be_bytes()[..]));
}

#[test]
fn compression_flags_are_validated() {
    for (args, flag) in [
        (&["--compression-level", "10"][..], "--compression-level"),
        (
            &["--compression-window-bits", "8"][..],
            "--compression-window-bits",
        ),
        (
            &["--compression-window-bits", "16"][..],
            "--compression-window-bits",
        ),
        (
            &["--compression", "context", "--compression-window-bits", "8"][..],
            "--compression-window-bits",
        ),
        (
            &["--compression", "context", "--compression-mem-level", "0"][..],
            "--compression-mem-level",
        ),
        (
            &["--compression-mem-level", "10"][..],
            "--compression-mem-level",
        ),
        (&["--compression", "maybe"][..], "--compression"),
    ] {
        let (code, stderr) = ServerProcess::start_expect_failure(ringws_binary(), args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    // The threshold flag takes effect (and a level of 1 serves).
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--workers",
            "1",
            "--compression-threshold",
            "1KiB",
            "--compression-level",
            "1",
        ],
    );
    // A 600-byte message is under the threshold: sent plain to a client that agreed.
    let (mut stream, _) = open(&server, Some(OFFER));
    stream
        .write_all(&client_frame(true, 0b100, 0x1, &deflate(&json(600)), true))
        .unwrap();
    assert_eq!(read_message(&mut stream), (false, 0x1, json(600)));
    stream
        .write_all(&client_frame(true, 0b100, 0x1, &deflate(&json(1024)), true))
        .unwrap();
    assert_eq!(read_message(&mut stream), (true, 0x1, json(1024)));
}
