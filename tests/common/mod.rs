//! Helpers for the root crate's integration tests: the shared kit (`ringws-testkit`: the server launcher,
//! the raw-TCP client, `/metrics`) with the `ringws` binary cargo built for these tests, and the TLS
//! client helpers.
//!
//! Set `RINGWS_TEST_LOG=1` to see the server's stderr (its logs) in the test output.
#![allow(dead_code)]

pub use ringws_testkit::*;

/// The `ringws` binary cargo built for these tests.
pub fn ringws_binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringws")
}

pub mod tls {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
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
