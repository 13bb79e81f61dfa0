//! TLS for tests: a self-signed certificate made at test time (rcgen, ECDSA P-256, PKCS#8 key) written as
//! PEM files into a directory of its own, a `ringws serve --tls-cert --tls-key` process with it, and rustls
//! clients that trust only that certificate.
//!
//! Owns certificates and TLS client streams; the server process itself is `server::ServerProcess`. Never
//! trusts anything but the certificate it made, and removes its files on drop.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::raw::connect;
use crate::server::ServerProcess;

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A self-signed certificate and its key, written as PEM files (`cert.pem`, `key.pem`) in a directory of
/// its own (removed on drop).
pub struct TestCert {
    pub dir: PathBuf,
    pub cert_path: String,
    pub key_path: String,
    pub cert_der: CertificateDer<'static>,
}

impl TestCert {
    /// A certificate for `localhost`.
    pub fn new() -> TestCert {
        TestCert::for_names(&["localhost"])
    }

    /// A certificate for `names` (DNS names or IP addresses).
    pub fn for_names(names: &[&str]) -> TestCert {
        let (cert_pem, key_pem, cert_der) = self_signed(names);
        TestCert::write(cert_pem, key_pem, cert_der)
    }

    /// Writes `cert_pem` and `key_pem` into a fresh directory.
    pub fn write(cert_pem: String, key_pem: String, cert_der: CertificateDer<'static>) -> TestCert {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringws-test-cert-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create cert dir");
        let (cert_path, key_path) = write_pem_files(&dir, &cert_pem, &key_pem);
        TestCert {
            dir,
            cert_path: cert_path.display().to_string(),
            key_path: key_path.display().to_string(),
            cert_der,
        }
    }

    /// `--tls-cert CERT --tls-key KEY`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".to_string(),
            self.cert_path.clone(),
            "--tls-key".to_string(),
            self.key_path.clone(),
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

impl Default for TestCert {
    fn default() -> Self {
        TestCert::new()
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed ECDSA P-256 certificate for `names` (rcgen's default; the key is PKCS#8):
/// (certificate PEM, key PEM, certificate DER).
pub fn self_signed(names: &[&str]) -> (String, String, CertificateDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("generate certificate");
    (
        certified.cert.pem(),
        certified.key_pair.serialize_pem(),
        certified.cert.der().clone(),
    )
}

/// Writes `DIR/cert.pem` and `DIR/key.pem` (DIR must exist); returns their paths.
pub fn write_pem_files(dir: &Path, cert_pem: &str, key_pem: &str) -> (PathBuf, PathBuf) {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert_pem).expect("write cert");
    std::fs::write(&key_path, key_pem).expect("write key");
    (cert_path, key_path)
}

/// A TLS server process with its certificate.
pub struct TlsServer {
    pub server: ServerProcess,
    pub cert: TestCert,
}

impl TlsServer {
    /// `BINARY serve ... --tls-cert --tls-key <extra_args>` with a certificate for `localhost`.
    pub fn start(binary: impl AsRef<OsStr>, extra_args: &[&str]) -> TlsServer {
        TlsServer::start_with(binary, TestCert::new(), extra_args)
    }

    /// The same with a certificate for `names` (DNS names or IP addresses).
    pub fn start_for_names(
        binary: impl AsRef<OsStr>,
        names: &[&str],
        extra_args: &[&str],
    ) -> TlsServer {
        TlsServer::start_with(binary, TestCert::for_names(names), extra_args)
    }

    /// The same with a given certificate.
    pub fn start_with(binary: impl AsRef<OsStr>, cert: TestCert, extra_args: &[&str]) -> TlsServer {
        let mut args: Vec<String> = cert.args();
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let server = ServerProcess::start(binary, &refs);
        TlsServer { server, cert }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `wss://HOST:PORT/` with the server's port.
    pub fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/", self.server.addr.port())
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
        let (ws, response) = tungstenite::client::client(format!("ws://localhost{path}"), stream)
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
