//! A client that comes back resumes its TLS session instead of paying a full handshake: the server issues
//! stateless session tickets (TLS 1.3 NewSessionTicket after the handshake, TLS 1.2 RFC 5077 tickets) and
//! accepts them on the next connection, so a reconnect storm skips the certificate signature. The client
//! here is rustls with its in-memory session cache; `HandshakeKind::Resumed` is rustls's own report that
//! the server accepted the ticket.

mod common;

use std::sync::Arc;

use common::ringws_binary;
use common::tls::TlsServer;
use rustls::client::Resumption;
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion};

/// One WebSocket upgrade and echo over a fresh TLS connection with `config`; returns how the handshake
/// went. The echo is read, so that the ticket sent with the 101 has reached the client's cache.
fn connect_and_echo(
    server: &TlsServer,
    config: &Arc<ClientConfig>,
) -> (HandshakeKind, ProtocolVersion) {
    let stream = server.connect_with(Arc::clone(config));
    let kind = stream.conn.handshake_kind().expect("handshake done");
    let version = stream.conn.protocol_version().expect("version");
    let (mut ws, response) = tungstenite::client::client("ws://localhost/", stream)
        .expect("WebSocket handshake over TLS");
    assert_eq!(response.status(), 101);
    ws.send(tungstenite::Message::text("again")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("again"));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    (kind, version)
}

fn second_connection_resumes(versions: &[&'static rustls::SupportedProtocolVersion]) {
    let server = TlsServer::start(ringws_binary(), &[]);
    let mut config = (*server.cert.client_config_versions(versions)).clone();
    config.resumption = Resumption::in_memory_sessions(16);
    let config = Arc::new(config);
    let (first, version) = connect_and_echo(&server, &config);
    assert_eq!(first, HandshakeKind::Full, "nothing to resume yet");
    for round in 0..3 {
        let (kind, again) = connect_and_echo(&server, &config);
        assert_eq!(again, version);
        assert_eq!(
            kind,
            HandshakeKind::Resumed,
            "reconnection {round} ({version:?})"
        );
    }
}

#[test]
fn tls13_second_connection_resumes() {
    second_connection_resumes(&[&rustls::version::TLS13]);
}

#[test]
fn tls12_second_connection_resumes() {
    second_connection_resumes(&[&rustls::version::TLS12]);
}

/// A ticket the server cannot decrypt (another server's, or from before a restart) falls back to a full
/// handshake, never to a failure.
#[test]
fn a_ticket_from_another_server_gets_a_full_handshake() {
    let first = TlsServer::start(ringws_binary(), &[]);
    let mut config = (*first
        .cert
        .client_config_versions(&[&rustls::version::TLS13]))
    .clone();
    config.resumption = Resumption::in_memory_sessions(16);
    let config = Arc::new(config);
    assert_eq!(connect_and_echo(&first, &config).0, HandshakeKind::Full);
    assert_eq!(connect_and_echo(&first, &config).0, HandshakeKind::Resumed);
    // The same certificate and name, a fresh process: its ticket key is new.
    let second = TlsServer::start_with(
        ringws_binary(),
        common::tls::TestCert::write(
            std::fs::read_to_string(&first.cert.cert_path).unwrap(),
            std::fs::read_to_string(&first.cert.key_path).unwrap(),
            first.cert.cert_der.clone(),
        ),
        &[],
    );
    assert_eq!(connect_and_echo(&second, &config).0, HandshakeKind::Full);
    assert_eq!(connect_and_echo(&second, &config).0, HandshakeKind::Resumed);
}
