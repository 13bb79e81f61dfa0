//! A TLS 1.3 client that leaves Nagle on (no TCP_NODELAY) writes its Finished and then its first request;
//! the kernel holds the request until the Finished is acknowledged. If that acknowledgement were the
//! server's delayed ACK, each connection would wait about 40 ms: the server acknowledges the Finished at
//! once (TCP_QUICKACK through the ring).
//!
//! Its TLS 1.3 session ticket is held until the server's first answer (the 101) and goes out with it: a
//! ticket arriving while the client writes its request made a client that reads and writes one TLS session
//! from two threads (Python websockets' sync client on OpenSSL) lose the request now and then.
//!
//! The tests assert what the server sends and when relative to the request (tickets received over real
//! connections); the time per connection is measured in docs/BENCHMARKS.md.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::ringws_binary;
use common::tls::TlsServer;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

const CONNECTIONS: usize = 20;

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// Handshake and upgrade over a socket without TCP_NODELAY; returns the TLS 1.3 tickets the client got
/// by the time the 101 arrived.
fn upgrade_without_nodelay(server: &TlsServer, quiet_before_request: Option<Duration>) -> u32 {
    let tcp = TcpStream::connect(server.addr()).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(!tcp.nodelay().unwrap(), "the client must leave Nagle on");
    let config = server
        .cert
        .client_config_versions(&[&rustls::version::TLS13]);
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).expect("client connection");
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    assert_eq!(
        stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    if let Some(wait) = quiet_before_request {
        // Nothing comes before the request: the ticket waits for the 101.
        stream.sock.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        match stream.sock.read(&mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("the server sent something before the request: {other:?}"),
        }
        stream
            .sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }
    stream.write_all(UPGRADE).expect("send the upgrade request");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).expect("read the upgrade response");
        assert!(n > 0, "the server closed before answering the upgrade");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream.conn.tls13_tickets_received()
}

#[test]
fn tls13_server_sends_a_ticket_after_the_clients_finished() {
    let server = TlsServer::start(ringws_binary(), &["--workers", "2"]);
    for i in 0..CONNECTIONS {
        let tickets = upgrade_without_nodelay(&server, None);
        assert!(
            tickets >= 1,
            "connection {i}: the server sent nothing after the client's Finished (no ticket), \
             so a client with Nagle on waits for the server's delayed ACK"
        );
    }
}

#[test]
fn the_ticket_waits_for_the_first_answer() {
    let server = TlsServer::start(ringws_binary(), &["--workers", "1"]);
    for i in 0..3 {
        let tickets = upgrade_without_nodelay(&server, Some(Duration::from_millis(300)));
        assert!(tickets >= 1, "connection {i}: no ticket with the 101");
    }
}
