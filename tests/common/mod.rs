//! Helpers for the root crate's integration tests: the shared kit (`ringws-testkit`: the server launcher)
//! with the `ringws` binary cargo built for these tests, and the raw-TCP and TLS client helpers.
//!
//! Set `RINGWS_TEST_LOG=1` to see the server's stderr (its logs) in the test output.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

pub use ringws_testkit::ServerProcess;

/// The `ringws` binary cargo built for these tests.
pub fn ringws_binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringws")
}

// ---- Raw-TCP WebSocket helpers, written independently of `ringws::protocol`, for malformed input. ----

use std::io::{Read, Write};
use std::net::TcpStream;

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

/// TLS helpers: a self-signed certificate made at test time, a `ringws serve --tls-cert --tls-key`
/// process, and rustls clients trusting only that certificate.
/// The value of counter `name` summed over workers in a Prometheus text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let base = key.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok())?
        })
        .map(|v| v as u64)
        .sum()
}

/// Fetches `/metrics` from a plain server and returns counter `name` summed over workers.
pub fn metric_sum(addr: SocketAddr, name: &str) -> u64 {
    let mut stream = connect(addr);
    http_exchange(&mut stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    metric(&String::from_utf8_lossy(&read_to_end(&mut stream)), name)
}

pub mod tls {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

    pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

    /// A self-signed certificate for `localhost` and its key, written as PEM files in a directory of
    /// its own (removed on drop).
    pub struct TestCert {
        pub dir: PathBuf,
        pub cert_path: PathBuf,
        pub key_path: PathBuf,
        pub cert_der: CertificateDer<'static>,
    }

    impl TestCert {
        /// An ECDSA P-256 certificate (rcgen's default; the key file is PKCS#8).
        pub fn new() -> TestCert {
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .expect("generate certificate");
            TestCert::write(
                certified.cert.pem(),
                certified.key_pair.serialize_pem(),
                certified.cert.der().clone(),
            )
        }

        /// Writes `cert_pem` and `key_pem` into a fresh directory.
        pub fn write(
            cert_pem: String,
            key_pem: String,
            cert_der: CertificateDer<'static>,
        ) -> TestCert {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ringws-tls-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create cert dir");
            let cert_path = dir.join("cert.pem");
            let key_path = dir.join("key.pem");
            std::fs::write(&cert_path, cert_pem).expect("write cert");
            std::fs::write(&key_path, key_pem).expect("write key");
            TestCert {
                dir,
                cert_path,
                key_path,
                cert_der,
            }
        }

        pub fn args(&self) -> Vec<String> {
            vec![
                "--tls-cert".to_string(),
                self.cert_path.display().to_string(),
                "--tls-key".to_string(),
                self.key_path.display().to_string(),
            ]
        }

        /// A client configuration trusting only this certificate (TLS 1.3 and 1.2).
        pub fn client_config(&self) -> Arc<ClientConfig> {
            self.client_config_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        }

        pub fn client_config_versions(
            &self,
            versions: &[&'static rustls::SupportedProtocolVersion],
        ) -> Arc<ClientConfig> {
            let mut roots = RootCertStore::empty();
            roots.add(self.cert_der.clone()).expect("add root");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(versions)
                    .expect("versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        }
    }

    impl Drop for TestCert {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A TLS server process with its certificate.
    pub struct TlsServer {
        pub server: ServerProcess,
        pub cert: TestCert,
    }

    impl TlsServer {
        pub fn start(extra_args: &[&str]) -> TlsServer {
            let cert = TestCert::new();
            let mut args: Vec<String> = cert.args();
            args.extend(extra_args.iter().map(|s| s.to_string()));
            let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let server = ServerProcess::start(ringws_binary(), &refs);
            TlsServer { server, cert }
        }

        pub fn addr(&self) -> SocketAddr {
            self.server.addr
        }

        /// A TLS stream to the server (handshake done), with 5 s timeouts.
        pub fn connect(&self) -> TlsStream {
            self.connect_with(self.cert.client_config())
        }

        pub fn connect_with(&self, config: Arc<ClientConfig>) -> TlsStream {
            let tcp = connect(self.addr());
            let name = ServerName::try_from("localhost").unwrap();
            let conn = ClientConnection::new(config, name).expect("client connection");
            let mut stream = StreamOwned::new(conn, tcp);
            while stream.conn.is_handshaking() {
                stream
                    .conn
                    .complete_io(&mut stream.sock)
                    .expect("TLS handshake");
            }
            stream
        }

        /// A tungstenite client over TLS (path `path`).
        pub fn ws(&self, path: &str) -> tungstenite::WebSocket<TlsStream> {
            let stream = self.connect();
            let (ws, response) =
                tungstenite::client::client(format!("ws://localhost{path}"), stream)
                    .expect("WebSocket handshake over TLS");
            assert_eq!(response.status(), 101);
            ws
        }
    }

    /// The server's `/metrics` text, fetched over https.
    pub fn metrics(server: &TlsServer) -> String {
        let mut stream = server.connect();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    }
}
