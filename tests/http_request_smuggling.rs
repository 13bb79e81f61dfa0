//! A request with both `Content-Length` and `Transfer-Encoding` (the shape of request smuggling) is answered
//! 400 and the connection closes, on every route: `POST /publish`, a plain `GET /healthz` and a WebSocket
//! upgrade. Nothing is published and no WebSocket opens.

mod common;

use std::io::{Read, Write};

use common::*;

/// Sends `request`, reads the whole answer and checks that the server then closed the connection (EOF or
/// reset, never a read timeout). Returns (status, head text, body).
fn exchange_and_close(server: &ServerProcess, request: &str) -> (u16, String, Vec<u8>) {
    let mut stream = connect(server.addr);
    stream.write_all(request.as_bytes()).expect("write request");
    let (status, head) = read_response_head(&mut stream);
    let mut body = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection was not closed after {status}: {e} ({head})"),
        }
    }
    (status, head, body)
}

#[test]
fn content_length_with_transfer_encoding_is_400_and_closes_on_every_route() {
    let server = ServerProcess::start(ringws_binary(), &[]);
    let chunked_body = "5\r\nhello\r\n0\r\n\r\n";
    let cases = [
        (
            "POST /publish",
            format!(
                "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{chunked_body}",
                chunked_body.len()
            ),
        ),
        (
            "GET /healthz",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: {}\r\n\r\n{chunked_body}",
                chunked_body.len()
            ),
        ),
        (
            "upgrade",
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\
                 Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
    ];
    for (route, request) in &cases {
        let (status, head, body) = exchange_and_close(&server, request);
        assert_eq!(status, 400, "{route}: {head}");
        assert!(
            head.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{route}: {head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{route}: {head}"
        );
        assert_eq!(
            body, b"both Content-Length and Transfer-Encoding\n",
            "{route}"
        );
    }
    // The same routes without the conflict are still served.
    let mut stream = connect(server.addr);
    let (status, head) = http_exchange(&mut stream, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    let _websocket = raw_websocket(server.addr);
    let text = metrics_text(server.addr);
    assert_eq!(metric(&text, "ringws_websockets_total"), 1, "{text}");
    assert_eq!(
        metric(&text, "ringws_handshake_failures_total"),
        3,
        "{text}"
    );
}
