//! A raw-TCP WebSocket client written independently of `ringws::protocol`, so that tests can send what no
//! well-behaved client would (unmasked frames, bad RSV bits, truncated heads) and read exactly what the
//! server answered: connect with timeouts, the HTTP head reader, hand-encoded client frames, the server
//! frame reader, and the close/EOF expectations. Plus a tungstenite client for the well-behaved cases.
//!
//! Owns bytes on the wire only. The HTTP head and frame readers take any `Read`, so the same code reads
//! plain TCP and TLS streams. Never shares encoding code with the server it tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A fixed, valid client key and the accept value RFC 6455 section 1.3 gives for it.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Connects with read/write timeouts of 5 s.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends `request` and reads the response head (up to the blank line). Returns (status, head text).
pub fn http_exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).expect("write request");
    read_response_head(stream)
}

/// Reads an HTTP response head byte by byte (so no byte after it is consumed), from any stream.
pub fn read_response_head<S: Read>(stream: &mut S) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!(
                "reading response head: {e} (so far: {:?})",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Reads until EOF (with the stream's timeout) and returns everything.
pub fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// A valid upgrade request for `path`.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Opens a WebSocket over raw TCP offering `extensions` (a `Sec-WebSocket-Extensions` value) when given;
/// checks the 101 and returns the stream (10 s read timeout) and the answer's head.
pub fn websocket_offering(addr: SocketAddr, extensions: Option<&str>) -> (TcpStream, String) {
    let mut stream = connect(addr);
    let mut request = upgrade_request("/");
    if let Some(offer) = extensions {
        request = request.replacen(
            "\r\n\r\n",
            &format!("\r\nSec-WebSocket-Extensions: {offer}\r\n\r\n"),
            1,
        );
    }
    let (status, head) = http_exchange(&mut stream, &request);
    assert_eq!(status, 101, "{head}");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (stream, head)
}

/// Opens a WebSocket over raw TCP and checks the 101 answer.
pub fn raw_websocket(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    let (status, head) = http_exchange(&mut stream, &upgrade_request("/"));
    assert_eq!(status, 101, "{head}");
    assert!(head.contains(SAMPLE_ACCEPT), "{head}");
    stream
}

/// Encodes one client frame by hand. `masked` false produces an (invalid) unmasked client frame;
/// `rsv` sets the RSV bits (bits 4..7 of the first byte).
pub fn client_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | (rsv << 4) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(mask_bit | payload.len() as u8);
    } else if payload.len() <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// One server frame from any stream: (fin, opcode, payload). `None` on EOF or timeout.
pub fn read_server_frame<S: Read>(stream: &mut S) -> Option<(bool, u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
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
    Some((head[0] & 0x80 != 0, head[0] & 0x0f, payload))
}

/// Reads the next frame, which must be a close frame; returns its code (None for an empty close).
pub fn expect_close(stream: &mut TcpStream) -> Option<u16> {
    match read_server_frame(stream) {
        Some((_, 0x8, payload)) => {
            (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
        }
        Some((_, opcode, _)) => panic!("expected a close frame, got opcode {opcode:#x}"),
        None => panic!("connection ended without a close frame"),
    }
}

/// After the close exchange the server closes TCP: reading returns EOF (not a timeout).
pub fn expect_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} more bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

/// A tungstenite client connected to `addr` (path `/`).
pub fn ws_client(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let stream = connect(addr);
    let (ws, _) = tungstenite::client::client(format!("ws://{addr}/"), stream).expect("handshake");
    ws
}

/// A raw WebSocket on `path` (the upgrade must be answered 101).
pub fn ws_at(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = connect(addr);
    let (status, head) = http_exchange(&mut stream, &upgrade_request(path));
    assert_eq!(status, 101, "{head}");
    stream
}

/// A raw WebSocket on `path` that offers the subprotocol `ringws.v1` (the pub/sub structured protocol);
/// the 101 must choose it. 10 s read timeout.
pub fn ws_v1(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = connect(addr);
    let request = upgrade_request(path).replacen(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Protocol: ringws.v1\r\n\r\n",
        1,
    );
    let (status, head) = http_exchange(&mut stream, &request);
    assert_eq!(status, 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: ringws.v1"),
        "{head}"
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads one text frame as JSON.
pub fn read_json(stream: &mut TcpStream) -> serde_json::Value {
    let text = read_text(stream);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Sends one masked text frame.
pub fn send_text(stream: &mut TcpStream, text: &str) {
    stream
        .write_all(&client_frame(true, 0, 0x1, text.as_bytes(), true))
        .unwrap();
}

/// Reads one server frame, which must be a text frame, and returns its text.
pub fn read_text(stream: &mut TcpStream) -> String {
    let (_, opcode, payload) = read_server_frame(stream).expect("a frame");
    assert_eq!(opcode, 0x1, "{}", String::from_utf8_lossy(&payload));
    String::from_utf8(payload).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn an_unmasked_frame_reads_back_at_every_length_encoding() {
        for len in [0, 1, 125, 126, 127, 0xffff, 0x10000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let bytes = client_frame(false, 0, 0x2, &payload, false);
            let mut reader = Cursor::new(bytes);
            let (fin, opcode, got) = read_server_frame(&mut reader).expect("a frame");
            assert!(!fin, "len {len}");
            assert_eq!(opcode, 0x2, "len {len}");
            assert_eq!(got, payload, "len {len}");
            assert_eq!(
                reader.position() as usize,
                reader.get_ref().len(),
                "len {len}"
            );
        }
    }

    #[test]
    fn a_masked_frame_carries_the_mask_bit_key_and_masked_payload() {
        let bytes = client_frame(true, 0b100, 0x1, b"Hello", true);
        assert_eq!(bytes[0], 0x80 | 0x40 | 0x1);
        assert_eq!(bytes[1], 0x80 | 5);
        let key = &bytes[2..6];
        let unmasked: Vec<u8> = bytes[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(unmasked, b"Hello");
    }

    #[test]
    fn response_head_stops_at_the_blank_line() {
        let mut reader =
            Cursor::new(b"HTTP/1.1 101 Switching Protocols\r\nA: b\r\n\r\n\x81\x00".to_vec());
        let (status, head) = read_response_head(&mut reader);
        assert_eq!(status, 101);
        assert!(head.ends_with("A: b\r\n\r\n"), "{head:?}");
        assert_eq!(
            read_server_frame(&mut reader),
            Some((true, 0x1, Vec::new()))
        );
    }

    #[test]
    fn a_truncated_frame_is_none() {
        let mut bytes = client_frame(true, 0, 0x2, &[7; 300], false);
        bytes.truncate(100);
        assert_eq!(read_server_frame(&mut Cursor::new(bytes)), None);
    }
}
