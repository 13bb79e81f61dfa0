//! A TLS 1.3 client that leaves Nagle on (no TCP_NODELAY) writes its Finished and then its first request;
//! the kernel holds the request until the Finished is acknowledged. If the server sent nothing after the
//! client's Finished, that acknowledgement would be the server's delayed ACK (about 40 ms per connection).
//! The server answers the Finished with a session ticket, so the client's request leaves at once.
//!
//! The test asserts what the server sends (tickets received over real connections), not a time: the
//! timing is in docs/BENCHMARKS.md.

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
fn upgrade_without_nodelay(server: &TlsServer) -> u32 {
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
        let tickets = upgrade_without_nodelay(&server);
        assert!(
            tickets >= 1,
            "connection {i}: the server sent nothing after the client's Finished (no ticket), \
             so a client with Nagle on waits for the server's delayed ACK"
        );
    }
}
