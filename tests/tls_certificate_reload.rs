//! SIGHUP reloads the TLS certificate from the same files without dropping a connection: a connection
//! opened before the reload still echoes, a new one is served the new certificate (its DER compared in
//! the client), and `ringws_tls_cert_not_after_seconds` follows it. A reload that fails (a file that is
//! not a certificate, a key that does not match) keeps the certificate in use, is counted in
//! `ringws_tls_reloads_total{result="error"}`, and the server stays up. Handshakes made while the
//! certificate is swapped back and forth all succeed. A server without TLS takes a SIGHUP and goes on
//! serving.

mod common;

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{write_pem_files, TestCert, TlsServer, TlsStream};
use common::{metric, ringws_binary, ServerProcess};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::Message;

/// 2030-01-01T00:00:00Z, the notAfter of certificate B.
const B_NOT_AFTER: u64 = 1_893_456_000;

/// A self-signed certificate for `localhost` with common name `cn`, valid until `not_after` (if given):
/// (certificate PEM, key PEM, certificate DER).
fn certificate(
    cn: &str,
    not_after: Option<(i32, u8, u8)>,
) -> (String, String, CertificateDer<'static>) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    if let Some((y, m, d)) = not_after {
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// A client configuration trusting `roots` only.
fn trusting(roots: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

/// A TLS handshake with `config`: the stream, or the handshake's error.
fn handshake(server: &TlsServer, config: Arc<ClientConfig>) -> Result<TlsStream, rustls::Error> {
    let tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            let inner = e.into_inner().expect("a TLS error");
            return Err(*inner.downcast::<rustls::Error>().expect("a rustls error"));
        }
    }
    Ok(stream)
}

/// The leaf certificate a new connection is served (trusting any of `roots`).
fn served_certificate(
    server: &TlsServer,
    roots: &[&CertificateDer<'static>],
) -> CertificateDer<'static> {
    let stream = handshake(server, trusting(roots)).expect("TLS handshake");
    stream.conn.peer_certificates().expect("a certificate")[0].clone()
}

/// `/metrics` over https with a client trusting any of `roots`.
fn metrics(server: &TlsServer, roots: &[&CertificateDer<'static>]) -> String {
    use std::io::{Read, Write};
    let mut stream = handshake(server, trusting(roots)).expect("TLS handshake");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

/// A labelled sample's value (`name{labels} value`), if present.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/metrics` until `ringws_tls_reloads_total{result=RESULT}` reaches `n`; returns the text.
fn wait_reloads(
    server: &TlsServer,
    roots: &[&CertificateDer<'static>],
    result: &str,
    n: u64,
) -> String {
    let series = format!("ringws_tls_reloads_total{{result=\"{result}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(server, roots);
        if sample(&text, &series) == Some(n) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {n}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn echo(ws: &mut tungstenite::WebSocket<TlsStream>, text: &str) {
    ws.send(Message::text(text)).expect("send");
    assert_eq!(ws.read().expect("read"), Message::text(text));
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections_only() {
    let (a_pem, a_key, a_der) = certificate("ringws-reload-a", None);
    let cert = TestCert::write(a_pem, a_key, a_der.clone());
    let dir = cert.dir.clone();
    let server = TlsServer::start_with(ringws_binary(), cert, &[]);

    // A connection made with certificate A, kept open across the reloads.
    let stream = handshake(&server, trusting(&[&a_der])).expect("TLS handshake with A");
    let (mut kept, _) = tungstenite::client::client("ws://localhost/", stream).unwrap();
    echo(&mut kept, "before");
    assert_eq!(served_certificate(&server, &[&a_der]), a_der);
    let text = metrics(&server, &[&a_der]);
    assert_eq!(
        sample(&text, "ringws_tls_reloads_total{result=\"ok\"}"),
        Some(0),
        "{text}"
    );

    // Certificate B (another key, another name, another expiry) into the same files, then SIGHUP.
    let (b_pem, b_key, b_der) = certificate("ringws-reload-b", Some((2030, 1, 1)));
    write_pem_files(&dir, &b_pem, &b_key);
    server.server.signal("HUP");
    let both = [&a_der, &b_der];
    let text = wait_reloads(&server, &both, "ok", 1);
    assert_eq!(
        sample(&text, "ringws_tls_cert_not_after_seconds"),
        Some(B_NOT_AFTER),
        "{text}"
    );
    assert_eq!(served_certificate(&server, &both), b_der);
    // A client trusting only A is refused now, one trusting only B gets in.
    assert!(handshake(&server, trusting(&[&a_der])).is_err());
    assert_eq!(served_certificate(&server, &[&b_der]), b_der);
    // The connection made before the reload is untouched.
    echo(&mut kept, "after the reload");
    assert_eq!(
        kept.get_ref().conn.peer_certificates().unwrap()[0],
        a_der,
        "the open connection keeps its certificate"
    );

    // A certificate file that is not a certificate: the reload fails, B stays, the server stays up.
    std::fs::write(dir.join("cert.pem"), "not a certificate\n").unwrap();
    server.server.signal("HUP");
    let text = wait_reloads(&server, &both, "error", 1);
    assert_eq!(
        sample(&text, "ringws_tls_reloads_total{result=\"ok\"}"),
        Some(1)
    );
    assert_eq!(
        sample(&text, "ringws_tls_cert_not_after_seconds"),
        Some(B_NOT_AFTER)
    );
    assert_eq!(served_certificate(&server, &both), b_der);

    // A certificate with another certificate's key: refused as a mismatch, B stays.
    let (c_pem, _, _) = certificate("ringws-reload-c", None);
    write_pem_files(&dir, &c_pem, &b_key);
    server.server.signal("HUP");
    wait_reloads(&server, &both, "error", 2);
    assert_eq!(served_certificate(&server, &both), b_der);
    echo(&mut kept, "after two failed reloads");
    assert_eq!(
        metric(&metrics(&server, &both), "ringws_websockets_open"),
        1
    );
}

/// Handshakes keep succeeding while the certificate is swapped back and forth under them: each gets one
/// of the two whole, and every connection opened on the way still echoes at the end.
#[test]
fn handshakes_during_reloads_all_succeed() {
    let (a_pem, a_key, a_der) = certificate("ringws-reload-a", None);
    let (b_pem, b_key, b_der) = certificate("ringws-reload-b", None);
    let cert = TestCert::write(a_pem.clone(), a_key.clone(), a_der.clone());
    let dir = cert.dir.clone();
    let server = TlsServer::start_with(ringws_binary(), cert, &[]);
    // Full handshakes only: a resumed session keeps the certificate it was made under.
    let mut config = (*trusting(&[&a_der, &b_der])).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(config);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener = {
        let (stop, config, addr) = (stop.clone(), config.clone(), server.addr());
        std::thread::spawn(move || {
            let mut opened = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tcp = TcpStream::connect(addr).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                let conn = ClientConnection::new(config.clone(), name).unwrap();
                let mut stream = StreamOwned::new(conn, tcp);
                while stream.conn.is_handshaking() {
                    stream
                        .conn
                        .complete_io(&mut stream.sock)
                        .expect("TLS handshake");
                }
                let served = stream.conn.peer_certificates().unwrap()[0].clone();
                let (ws, _) = tungstenite::client::client("ws://localhost/", stream).unwrap();
                opened.push((ws, served));
            }
            opened
        })
    };
    for round in 0..10 {
        let (pem, key) = if round % 2 == 0 {
            (&b_pem, &b_key)
        } else {
            (&a_pem, &a_key)
        };
        write_pem_files(&dir, pem, key);
        server.server.signal("HUP");
        wait_reloads(&server, &[&a_der, &b_der], "ok", round + 1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut opened = opener.join().expect("every handshake succeeded");
    assert!(
        opened.len() >= 10,
        "only {} connections opened",
        opened.len()
    );
    let served_b = opened.iter().filter(|(_, served)| *served == b_der).count();
    println!(
        "{} connections, {served_b} of them with certificate B",
        opened.len()
    );
    assert!(served_b > 0, "no connection saw certificate B");
    for (i, (ws, served)) in opened.iter_mut().enumerate() {
        assert!(*served == a_der || *served == b_der);
        echo(ws, &format!("connection {i}"));
    }
}

#[test]
fn sighup_without_tls_changes_nothing() {
    let mut server = ServerProcess::start(ringws_binary(), &[]);
    let (mut ws, _) = tungstenite::connect(server.url()).expect("connect");
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        server.wait_exit(Duration::from_millis(100)).is_none(),
        "SIGHUP ended the server"
    );
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still here"));
    let (mut fresh, _) = tungstenite::connect(server.url()).expect("connect after SIGHUP");
    fresh.send(Message::text("new")).unwrap();
    assert_eq!(fresh.read().unwrap(), Message::text("new"));
}
