//! TLS for `wss://` targets: the client configuration (roots from `--ca-cert`, or `--insecure`; TLS 1.2
//! and/or 1.3; session resumption only with `--tls-resume`) built once per process, and the per-connection TLS state that sits
//! between the engine and the WebSocket reader/writer: received ciphertext in, plaintext out to the
//! message reader; gathered frames in, ciphertext out to the engine's send buffer.
//!
//! It uses rustls's buffered `ClientConnection` over byte slices only: it never touches a socket (the
//! engines move every byte) and never blocks. It allocates nothing per message itself: ciphertext goes
//! into a per-connection buffer that circulates with the engine's send buffer, plaintext into the
//! worker's reused scratch buffer (rustls keeps its own record buffers). Plain `ws://` connections never
//! reach this module.

use crate::cli::{Options, Target, TlsVersion};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// What every wss:// connection of a run shares.
#[derive(Debug)]
pub struct TlsPlan {
    pub config: Arc<ClientConfig>,
    /// The URL's host as a TLS server name (a DNS name is sent as SNI; an IP address is not).
    pub server_name: ServerName<'static>,
    /// For the report: versions offered and how the server is trusted.
    pub description: String,
}

/// Sessions `--tls-resume` keeps (rustls keeps up to 8 TLS 1.3 tickets for each server name).
const RESUMPTION_CACHE: usize = 256;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client side of a `wss://` run from the options (already validated: exactly one of
/// `--ca-cert` and `--insecure`). The error names the file or value at fault.
pub fn plan(options: &Options, target: &Target) -> Result<TlsPlan, String> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match options.tls_version {
        TlsVersion::V12 => &[&rustls::version::TLS12],
        TlsVersion::V13 => &[&rustls::version::TLS13],
        TlsVersion::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS setup: {e}"))?;
    let (mut config, trust) = match (&options.ca_cert, options.insecure) {
        (_, true) => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
                .with_no_client_auth(),
            "INSECURE: any certificate accepted".to_string(),
        ),
        (Some(path), false) => {
            let roots = load_roots(path)?;
            (
                builder.with_root_certificates(roots).with_no_client_auth(),
                format!("roots from {path}"),
            )
        }
        (None, false) => {
            return Err("wss:// needs --ca-cert FILE or --insecure".into());
        }
    };
    // By default every connection makes a full handshake (what a connection ramp measures) and no
    // session cache is shared between worker threads. `--tls-resume`: one in-memory cache for the
    // process (rustls's, behind a lock; a handshake takes a ticket and the server's answer brings a new
    // one), as many reconnecting clients would hold.
    config.resumption = if options.tls_resume {
        rustls::client::Resumption::in_memory_sessions(RESUMPTION_CACHE)
    } else {
        rustls::client::Resumption::disabled()
    };
    let server_name = ServerName::try_from(target.hostname.clone())
        .map_err(|e| format!("{}: not a TLS server name: {e}", target.hostname))?;
    let version = match options.tls_version {
        TlsVersion::V12 => "TLS 1.2",
        TlsVersion::V13 => "TLS 1.3",
        TlsVersion::Any => "TLS 1.2/1.3",
    };
    let sni = match &server_name {
        ServerName::DnsName(name) => format!("SNI {}", name.as_ref()),
        _ => "no SNI (IP address)".to_string(),
    };
    let resumption = if options.tls_resume {
        "sessions resumed"
    } else {
        "full handshakes"
    };
    Ok(TlsPlan {
        config: Arc::new(config),
        server_name,
        description: format!("{version}, {sni}, {trust}, {resumption}"),
    })
}

/// Reads every PEM certificate of `path` into an otherwise empty root store.
fn load_roots(path: &str) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--ca-cert {path}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--ca-cert {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "--ca-cert {path}: no PEM certificate (BEGIN CERTIFICATE) found"
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("--ca-cert {path}: unusable certificate: {e}"))?;
    }
    Ok(roots)
}

/// `--insecure`: accepts any certificate chain for any name. The handshake signature is still checked
/// against the presented certificate, so the peer must hold its key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why received ciphertext could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The TLS handshake had not completed (bad certificate, wrong name, no common version, not TLS...).
    Handshake,
    /// A TLS error after the handshake (bad record, alert).
    Session,
}

/// The TLS state of one connection (boxed; plain connections hold `None`).
pub struct TlsConn {
    session: ClientConnection,
    /// Ciphertext ready for the engine (swapped with the engine's send buffer, so its capacity
    /// circulates).
    pub cipher: Vec<u8>,
    /// The handshake completed once (its version was counted).
    pub established: bool,
    /// What the last failure was (for one diagnostic line per run).
    pub error: Option<String>,
}

impl TlsConn {
    pub fn new(plan: &TlsPlan) -> Result<TlsConn, rustls::Error> {
        let mut session = ClientConnection::new(plan.config.clone(), plan.server_name.clone())?;
        // Plaintext written before the handshake completes is held until it does; the worker bounds
        // what it hands over (it encrypts only when the engine's previous send is done).
        session.set_buffer_limit(None);
        Ok(TlsConn {
            session,
            cipher: Vec::new(),
            established: false,
            error: None,
        })
    }

    /// Still in the TLS handshake.
    pub fn handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// The version negotiated (once the handshake is done).
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.session.protocol_version()
    }

    /// The handshake resumed a session (`--tls-resume` and a ticket the server accepted).
    #[cfg(test)]
    fn resumed(&self) -> bool {
        self.session.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Whether there is ciphertext to produce (handshake flight, alert, buffered records).
    pub fn wants_write(&self) -> bool {
        self.session.wants_write()
    }

    /// Processes the ciphertext `input`, appending the plaintext it carried to `plain`. On error the
    /// plaintext before the failing record is still in `plain`.
    pub fn receive(&mut self, mut input: &[u8], plain: &mut Vec<u8>) -> Result<(), TlsFailure> {
        while !input.is_empty() {
            let failure = if self.session.is_handshaking() {
                TlsFailure::Handshake
            } else {
                TlsFailure::Session
            };
            match self.session.read_tls(&mut input) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => {
                    self.error = Some(err.to_string());
                    return Err(failure);
                }
            }
            let state = match self.session.process_new_packets() {
                Ok(state) => state,
                Err(err) => {
                    self.error = Some(err.to_string());
                    // The alert rustls queued for the peer goes out with the close, best effort.
                    return Err(failure);
                }
            };
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                let start = plain.len();
                plain.resize(start + available, 0);
                if self
                    .session
                    .reader()
                    .read_exact(&mut plain[start..])
                    .is_err()
                {
                    plain.truncate(start);
                    return Err(TlsFailure::Session);
                }
            }
        }
        Ok(())
    }

    /// Encrypts the plaintext of `out` (emptied) and moves every pending record into `self.cipher`.
    pub fn seal(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if !out.is_empty() {
            self.session.writer().write_all(out)?;
            out.clear();
        }
        while self.session.wants_write() {
            if self.session.write_tls(&mut self.cipher)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// `seal`, then close_notify: the last bytes of a connection (best effort).
    pub fn seal_last(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if !self.session.is_handshaking() {
            self.session.send_close_notify();
        } else {
            out.clear(); // nothing may be sent in the clear, and it cannot be encrypted yet
        }
        self.seal(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_fails_the_handshake_without_panicking() {
        let options = <Options as clap::Parser>::parse_from([
            "ringws-loadgen",
            "echo",
            "--url",
            "wss://localhost:1/",
            "--insecure",
        ]);
        let target = crate::cli::parse_url(&options.urls[0]).unwrap();
        let plan = plan(&options, &target).unwrap();
        assert!(plan.description.contains("SNI localhost"));
        let mut tls = TlsConn::new(&plan).unwrap();
        let mut out = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        tls.seal(&mut out).unwrap();
        assert!(out.is_empty());
        // The ClientHello is a handshake record; the request waits for the handshake.
        assert_eq!(tls.cipher[0], 0x16);
        assert!(!tls.cipher.windows(3).any(|w| w == b"GET"));
        let mut plain = Vec::new();
        let reply = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        assert_eq!(tls.receive(reply, &mut plain), Err(TlsFailure::Handshake));
        assert!(plain.is_empty());
    }

    /// A rustls server in memory with a certificate for `localhost`, and a client plan trusting it.
    fn pair(version: &str) -> (rustls::ServerConnection, TlsConn) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir =
            std::env::temp_dir().join(format!("ringws-loadgen-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join(format!("ca-{version}.pem"));
        std::fs::write(&ca, certified.cert.pem()).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let server_config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        server.set_buffer_limit(None);
        let options = <Options as clap::Parser>::parse_from([
            "ringws-loadgen",
            "echo",
            "--url",
            "wss://localhost:1/",
            "--ca-cert",
            ca.to_str().unwrap(),
            "--tls-version",
            version,
        ]);
        let target = crate::cli::parse_url(&options.urls[0]).unwrap();
        let client = TlsConn::new(&plan(&options, &target).unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (server, client)
    }

    /// Feeds `cipher` to the server (all of it: `read_tls` may take less per call) and appends the
    /// plaintext to `plain`.
    fn server_input(server: &mut rustls::ServerConnection, mut cipher: &[u8], plain: &mut Vec<u8>) {
        while !cipher.is_empty() {
            server.read_tls(&mut cipher).unwrap();
            let state = server.process_new_packets().unwrap();
            let start = plain.len();
            plain.resize(start + state.plaintext_bytes_to_read(), 0);
            server.reader().read_exact(&mut plain[start..]).unwrap();
        }
    }

    /// Everything the server has to send, as ciphertext.
    fn server_output(server: &mut rustls::ServerConnection) -> Vec<u8> {
        let mut out = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn plaintext_survives_any_split_of_the_ciphertext_both_ways() {
        for version in ["1.2", "1.3"] {
            let (mut server, mut client) = pair(version);
            // The request is written before the handshake and leaves once it completes.
            let mut out = b"GET / HTTP/1.1\r\n\r\n".to_vec();
            let mut plain = Vec::new();
            let mut server_plain = Vec::new();
            client.seal(&mut out).unwrap();
            for _ in 0..4 {
                let cipher = std::mem::take(&mut client.cipher);
                server_input(&mut server, &cipher, &mut server_plain);
                // The server's flight, fed to the client one byte at a time.
                for byte in server_output(&mut server).chunks(1) {
                    client.receive(byte, &mut plain).unwrap();
                }
                client.seal(&mut Vec::new()).unwrap();
            }
            assert!(!client.handshaking(), "TLS {version}");
            let expected_version = match version {
                "1.2" => rustls::ProtocolVersion::TLSv1_2,
                _ => rustls::ProtocolVersion::TLSv1_3,
            };
            assert_eq!(client.version(), Some(expected_version));
            assert_eq!(server_plain, b"GET / HTTP/1.1\r\n\r\n", "TLS {version}");
            // 100 KB from the server (several records), in uneven pieces.
            let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            server.writer().write_all(&message).unwrap();
            let cipher = server_output(&mut server);
            plain.clear();
            for piece in cipher.chunks(7_001) {
                client.receive(piece, &mut plain).unwrap();
            }
            assert_eq!(plain, message, "TLS {version}");
            // And the other way: frames sealed in two batches arrive in order.
            let mut out = message[..60_000].to_vec();
            client.seal(&mut out).unwrap();
            assert!(out.is_empty());
            out.extend_from_slice(&message[60_000..]);
            client.seal(&mut out).unwrap();
            let cipher = std::mem::take(&mut client.cipher);
            let mut received = Vec::new();
            for piece in cipher.chunks(5_000) {
                server_input(&mut server, piece, &mut received);
            }
            assert_eq!(received, message, "TLS {version}");
            // A corrupted record after the handshake is a session error, not a panic.
            server.writer().write_all(b"more").unwrap();
            let mut cipher = server_output(&mut server);
            let last = cipher.len() - 1;
            cipher[last] ^= 1;
            assert_eq!(
                client.receive(&cipher, &mut plain),
                Err(TlsFailure::Session),
                "TLS {version}"
            );
        }
    }

    /// With `--tls-resume` the second connection of a plan resumes the session of the first with the
    /// ticket it received; without it every connection makes a full handshake.
    #[test]
    fn tls_resume_resumes_with_the_ticket_of_an_earlier_connection() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "ringws-loadgen-tls-resume-unit-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, certified.cert.pem()).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let server_config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![certified.cert.der().clone()], key)
                .unwrap(),
        );
        for resume in [false, true] {
            let mut args = vec![
                "ringws-loadgen",
                "churn",
                "--url",
                "wss://localhost:1/",
                "--ca-cert",
                ca.to_str().unwrap(),
            ];
            if resume {
                args.push("--tls-resume");
            }
            let options = <Options as clap::Parser>::parse_from(args);
            let target = crate::cli::parse_url(&options.urls[0]).unwrap();
            let plan = plan(&options, &target).unwrap();
            let mut kinds = Vec::new();
            for _ in 0..3 {
                let mut server = rustls::ServerConnection::new(Arc::clone(&server_config)).unwrap();
                let mut client = TlsConn::new(&plan).unwrap();
                let mut plain = Vec::new();
                client.seal(&mut Vec::new()).unwrap();
                for _ in 0..4 {
                    let cipher = std::mem::take(&mut client.cipher);
                    server_input(&mut server, &cipher, &mut Vec::new());
                    // The server's flight, then its tickets once the handshake is done.
                    client
                        .receive(&server_output(&mut server), &mut plain)
                        .unwrap();
                    client.seal(&mut Vec::new()).unwrap();
                }
                assert!(!client.handshaking());
                kinds.push(client.resumed());
            }
            assert_eq!(kinds, [false, resume, resume], "--tls-resume {resume}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_ca_file_is_named() {
        let options = <Options as clap::Parser>::parse_from([
            "ringws-loadgen",
            "echo",
            "--url",
            "wss://127.0.0.1:1/",
            "--ca-cert",
            "/nonexistent/ca.pem",
        ]);
        let target = crate::cli::parse_url(&options.urls[0]).unwrap();
        let err = plan(&options, &target).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
