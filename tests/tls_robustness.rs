//! Bad clients on the TLS port: a plain ws:// client, garbage bytes, a truncated ClientHello, a TLS
//! slowloris (the handshake timeout covers the TLS handshake and the HTTP request after it). Each is
//! ended on its own, counted in /metrics, and an established wss:// client keeps being served meanwhile.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::tls::{metrics, TlsServer};
use common::{metric, ringws_binary, rss_kib};
use rustls::pki_types::ServerName;
use tungstenite::Message;

/// Reads until EOF or reset; panics on a timeout (the server must end the connection).
fn expect_closed_within(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("connection not closed by the server: {e} (read {got:?})"),
        }
    }
}

/// A real ClientHello, as a TLS client would send it first.
fn client_hello(server: &TlsServer) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(server.cert.client_config(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100 && hello[0] == 0x16, "{hello:?}");
    hello
}

fn still_serves(ws: &mut tungstenite::WebSocket<common::tls::TlsStream>, round: usize) {
    let text = format!("still here {round}");
    ws.send(Message::text(text.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

#[test]
fn plain_clients_and_garbage_are_refused_without_harm() {
    let server = TlsServer::start(ringws_binary(), &["--workers", "1"]);
    let mut ws = server.ws("/");
    still_serves(&mut ws, 0);

    // A plain ws:// client: never upgraded, the connection is ended (with an alert, never a 101).
    let mut plain = common::connect(server.addr());
    plain
        .write_all(common::upgrade_request("/").as_bytes())
        .unwrap();
    let answer = expect_closed_within(&mut plain, Duration::from_secs(5));
    assert!(!answer.starts_with(b"HTTP/1.1 101"), "{answer:?}");
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "only a TLS alert may come back: {answer:?}"
    );
    still_serves(&mut ws, 1);

    // Plain HTTP.
    let mut plain = common::connect(server.addr());
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let answer = expect_closed_within(&mut plain, Duration::from_secs(5));
    assert!(!answer.starts_with(b"HTTP/1.1"), "{answer:?}");

    // Garbage of several shapes.
    let cases: Vec<Vec<u8>> = vec![
        vec![0u8; 64],
        (0..2000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
        // A handshake record header announcing an oversized record.
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3],
        // An application-data record before any handshake.
        vec![0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5],
    ];
    let count = cases.len();
    for (i, bytes) in cases.into_iter().enumerate() {
        let mut bad = common::connect(server.addr());
        bad.write_all(&bytes).unwrap();
        let answer = expect_closed_within(&mut bad, Duration::from_secs(5));
        assert!(
            answer.is_empty() || answer[0] == 0x15,
            "case {i}: {answer:?}"
        );
        still_serves(&mut ws, 2 + i);
    }

    // A ClientHello with a corrupted body.
    let mut hello = client_hello(&server);
    for b in hello.iter_mut().skip(9).take(40) {
        *b ^= 0x5a;
    }
    let mut bad = common::connect(server.addr());
    bad.write_all(&hello).unwrap();
    expect_closed_within(&mut bad, Duration::from_secs(5));
    still_serves(&mut ws, 100);

    let text = metrics(&server);
    let failures = metric(&text, "ringws_tls_handshake_failures_total");
    assert!(
        failures as usize == 2 + count + 1,
        "every refused client counted ({failures}): {text}"
    );
    assert_eq!(metric(&text, "ringws_websockets_open"), 1, "{text}");
}

#[test]
fn tls_slowloris_hits_the_handshake_timeout() {
    let server = TlsServer::start(
        ringws_binary(),
        &["--workers", "1", "--handshake-timeout", "1s"],
    );
    let mut ws = server.ws("/");
    let started = Instant::now();

    // Half a ClientHello, then silence.
    let hello = client_hello(&server);
    let mut truncated = common::connect(server.addr());
    truncated.write_all(&hello[..hello.len() / 2]).unwrap();

    // A whole ClientHello, then silence (the server's flight is never answered).
    let mut stalled = common::connect(server.addr());
    stalled.write_all(&hello).unwrap();

    // The TLS handshake completed, but no HTTP request follows.
    let mut no_request = server.connect();

    // A ClientHello dripped one byte every 100 ms: activity does not extend the deadline.
    let mut drip = common::connect(server.addr());
    let drip_hello = client_hello(&server);
    let mut dripped = 0;
    let drip_until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < drip_until && dripped < drip_hello.len() {
        if drip.write_all(&drip_hello[dripped..dripped + 1]).is_err() {
            break;
        }
        dripped += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        dripped < drip_hello.len(),
        "the drip must still be in its ClientHello"
    );

    for (_name, stream) in [
        ("truncated", &mut truncated),
        ("stalled", &mut stalled),
        ("drip", &mut drip),
    ] {
        expect_closed_within(stream, Duration::from_secs(5));
    }
    // The TLS client without a request: its stream ends (close_notify or EOF), not a timeout.
    no_request
        .sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    match no_request.read_to_end(&mut buf) {
        Ok(_) => assert!(buf.is_empty()),
        Err(e) => assert!(
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
            "not closed: {e}"
        ),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed before the timeout: {elapsed:?}"
    );

    // The established connection is past its handshake: untouched.
    still_serves(&mut ws, 0);
    let text = metrics(&server);
    assert!(
        text.lines()
            .any(|l| l.contains("ringws_handshake_failures_total")
                && l.contains("timeout")
                && !l.ends_with(" 0")),
        "{text}"
    );
}

#[test]
fn capacity_503_is_delivered_over_tls() {
    // One connection per worker: the next one is accepted into the table's reserve and answered 503,
    // which over TLS means completing its handshake first.
    let server = TlsServer::start(
        ringws_binary(),
        &["--workers", "1", "--max-connections-per-worker", "1"],
    );
    let mut ws = server.ws("/");
    still_serves(&mut ws, 0);
    let mut refused = server.connect();
    refused
        .write_all(common::upgrade_request("/").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    match refused.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) => panic!("no close_notify after the 503: {e}"),
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    still_serves(&mut ws, 1);

    // --max-connections: the upgrade itself is refused with 503 after the TLS handshake.
    let server = TlsServer::start(
        ringws_binary(),
        &["--workers", "1", "--max-connections", "1"],
    );
    let mut ws = server.ws("/");
    let mut refused = server.connect();
    refused
        .write_all(common::upgrade_request("/").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    refused
        .read_to_end(&mut answer)
        .expect("close_notify after the 503");
    assert!(
        answer.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    still_serves(&mut ws, 2);
}

#[test]
fn bytes_after_close_notify_are_dropped_unread() {
    let server = TlsServer::start(ringws_binary(), &["--workers", "1"]);
    let mut ws = server.ws("/");
    still_serves(&mut ws, 0);
    let mut closing = server.ws("/");
    still_serves(&mut closing, 1);
    let before = rss_kib(server.server.pid());
    // close_notify, then 16 MiB of record-shaped bytes the server must neither parse nor keep.
    let stream = closing.get_mut();
    stream.conn.send_close_notify();
    stream.conn.write_tls(&mut stream.sock).unwrap();
    let mut record = vec![0x17, 0x03, 0x03, 0x40, 0x00];
    record.resize(5 + 0x4000, 0xab);
    for _ in 0..1024 {
        stream.sock.write_all(&record).unwrap();
    }
    // Let the server read it all (the echo of the other connection is ordered after it on one worker).
    std::thread::sleep(Duration::from_millis(300));
    still_serves(&mut ws, 2);
    let grown = rss_kib(server.server.pid()).saturating_sub(before);
    assert!(
        grown < 4096,
        "server RSS grew by {grown} KiB after close_notify"
    );
    let text = metrics(&server);
    assert_eq!(
        metric(&text, "ringws_tls_handshake_failures_total"),
        0,
        "{text}"
    );
}

/// Opens a WebSocket over TLS by hand and sends an unmasked frame (a protocol error); returns the stream
/// once the server's close frame (1002) was read whole.
fn protocol_error_over_tls(server: &TlsServer) -> common::tls::TlsStream {
    let mut stream = server.connect();
    stream
        .write_all(common::upgrade_request("/").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let head_end = loop {
        let n = stream.read(&mut buf).expect("the 101");
        assert!(n > 0, "EOF before the 101");
        got.extend_from_slice(&buf[..n]);
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    assert!(got.starts_with(b"HTTP/1.1 101"), "{got:?}");
    got.drain(..head_end);
    // Unmasked text "hi": RFC 6455 section 5.1, the server fails the connection with 1002.
    stream.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    while got.len() < 4 {
        let n = stream.read(&mut buf).expect("the close frame");
        assert!(n > 0, "EOF before the close frame");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got[0], 0x88, "{got:?}");
    let len = 2 + got[1] as usize;
    while got.len() < len {
        let n = stream.read(&mut buf).expect("the close frame");
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got[2..4], &1002u16.to_be_bytes(), "{got:?}");
    assert_eq!(got.len(), len, "nothing after the close frame");
    stream
}

/// Whether the server sent anything (close_notify, FIN) within `wait`.
fn server_speaks_within(stream: &mut common::tls::TlsStream, wait: Duration) -> bool {
    stream.sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    let spoke = match stream.read(&mut buf) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    stream
        .sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    spoke
}

#[test]
fn after_a_protocol_error_the_client_can_still_send_its_close_reply() {
    let server = TlsServer::start(ringws_binary(), &["--workers", "1"]);
    let mut stream = protocol_error_over_tls(&server);
    // close_notify waits for the client's reply: sent with the close frame, it ends the session before a
    // client (OpenSSL) can write the reply.
    assert!(
        !server_speaks_within(&mut stream, Duration::from_millis(300)),
        "close_notify or FIN before the client's close reply"
    );
    // The reply (masked, echoing 1002) goes through; then close_notify and EOF, cleanly.
    let mask = [1u8, 2, 3, 4];
    let code = 1002u16.to_be_bytes();
    stream
        .write_all(&[0x88, 0x82, 1, 2, 3, 4, code[0] ^ mask[0], code[1] ^ mask[1]])
        .unwrap();
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("close_notify after the client's close reply");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn after_a_protocol_error_a_client_that_never_replies_is_closed_at_the_close_timeout() {
    let server = TlsServer::start(
        ringws_binary(),
        &["--workers", "1", "--close-timeout", "1s"],
    );
    let started = Instant::now();
    let mut stream = protocol_error_over_tls(&server);
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("close_notify at the close timeout");
    assert!(rest.is_empty(), "{rest:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
}
