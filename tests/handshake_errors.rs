//! Each opening-handshake error gets its HTTP status (and the connection is closed); subprotocol and
//! origin policies; plain HTTP routes on the same port.

mod common;

use common::*;

fn request(server: &ServerProcess, text: &str) -> (u16, String, Vec<u8>) {
    let mut stream = connect(server.addr);
    let (status, head) = http_exchange(&mut stream, text);
    let body = read_to_end(&mut stream);
    (status, head, body)
}

fn upgrade_with(extra: &str, version: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    )
}

#[test]
fn handshake_errors_get_their_status() {
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--max-header-bytes",
            "2KiB",
            "--allowed-origins",
            "https://good.example",
        ],
    );
    let cases: Vec<(String, u16, &str)> = vec![
        (upgrade_with("", "8"), 426, "unsupported version"),
        (
            format!("POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"),
            405,
            "POST upgrade",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n".to_string(),
            400,
            "bad key",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".to_string(),
            400,
            "missing key",
        ),
        (
            format!("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"),
            400,
            "missing Host",
        ),
        (
            format!("GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"),
            400,
            "HTTP/1.0",
        ),
        (upgrade_with(&format!("X-Big: {}\r\n", "a".repeat(3000)), "13"), 431, "header block over the limit"),
        (upgrade_with("Origin: https://evil.example\r\n", "13"), 403, "origin not allowed"),
        ("NOT HTTP AT ALL\r\n\r\n".to_string(), 400, "garbage"),
    ];
    for (text, status, what) in cases {
        let (got, head, _) = request(&server, &text);
        assert_eq!(got, status, "{what}: {head}");
        if status == 426 {
            assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
        }
    }
    // The allowed origin upgrades.
    let (got, head, _) = {
        let mut stream = connect(server.addr);
        let (s, h) = http_exchange(
            &mut stream,
            &upgrade_with("Origin: https://good.example\r\n", "13"),
        );
        (s, h, ())
    };
    assert_eq!(got, 101, "{head}");
}

#[test]
fn subprotocol_is_one_the_client_offered() {
    let server = ServerProcess::start(ringws_binary(), &["--subprotocols", "chat.v2,chat.v1"]);
    let mut stream = connect(server.addr);
    let (status, head) = http_exchange(
        &mut stream,
        &upgrade_with("Sec-WebSocket-Protocol: other, chat.v1\r\n", "13"),
    );
    assert_eq!(status, 101);
    assert!(
        head.contains("Sec-WebSocket-Protocol: chat.v1\r\n"),
        "{head}"
    );
    let mut stream = connect(server.addr);
    let (status, head) = http_exchange(
        &mut stream,
        &upgrade_with("Sec-WebSocket-Protocol: other\r\n", "13"),
    );
    assert_eq!(status, 101);
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
}

#[test]
fn plain_http_routes() {
    let server = ServerProcess::start(ringws_binary(), &[]);
    let (status, _, body) = request(&server, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    let (status, head, body) = request(&server, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain"), "{head}");
    let body = String::from_utf8(body).unwrap();
    for name in [
        "ringws_connections_open",
        "ringws_messages_in_total",
        "ringws_closes_total",
        "ringws_rejected_total",
    ] {
        assert!(body.contains(name), "missing {name}");
    }
    let (status, head, _) = request(&server, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/html; charset=utf-8"),
        "{head}"
    );
    let (status, _, _) = request(&server, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 404);
    let (status, head, _) = request(&server, "DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 405, "{head}");
}

#[test]
fn metrics_count_messages_and_closes() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let mut ws = ws_client(server.addr);
    for _ in 0..3 {
        ws.send(tungstenite::Message::binary(vec![7u8; 10]))
            .unwrap();
        ws.read().unwrap();
    }
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    // The close may still be in progress on the server: poll briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, _, body) = request(&server, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let body = String::from_utf8(body).unwrap();
        let ok = body.contains("ringws_messages_in_total{worker=\"0\"} 3")
            && body.contains("ringws_bytes_in_total{worker=\"0\"} 30")
            && body.contains("ringws_closes_total{worker=\"0\",code=\"1005\"} 1");
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never matched:\n{body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
