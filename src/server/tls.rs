//! TLS for `wss://` and `https://`: loading the certificate and key (and loading them again while
//! serving: [`TlsCertificate::reload`] swaps the certificate new handshakes present, never one a
//! connection already has), and the per-connection TLS state (a rustls unbuffered server connection)
//! that turns received ciphertext into plaintext and queued plaintext into ciphertext.
//!
//! The worker owns the I/O: it hands this module the ciphertext of each receive (the provided buffer,
//! processed in place; only the start of a record that spans receives is kept, in a buffer freed once
//! it is consumed) and gets the plaintext back in a reused per-worker scratch buffer, which then takes
//! exactly the path plain bytes take. At flush time the connection's plaintext queue (owned frames and
//! shared broadcast frames alike) is encrypted into the ciphertext queue that the send writes, in records
//! as full as what is queued allows (small chunks queued together share a record). Plain
//! connections never reach this module. It must never block, never touch a socket and never log per
//! record; an idle TLS connection holds no buffer here, only the rustls state. Loading reads files and
//! runs on the main thread only (at startup, and on SIGHUP in `ringws serve`), never on a worker.
//!
//! Kernel TLS (kTLS) is not used: the kernels this runs on may lack `CONFIG_TLS` (see
//! `docs/ARCHITECTURE.md`), and user-space records keep one code path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, UnbufferedServerConnection};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, WriteTraffic,
};

use crate::reactor::{BufferPool, SendQueue};
use crate::server::metrics::TLS_CERTIFICATE;

/// Plaintext encrypted per call of [`WriteTraffic::encrypt`] (four full records).
const ENCRYPT_SLICE: usize = 64 * 1024;
/// Ciphertext kept queued ahead of the send: encryption stops here until the send catches up, so a large
/// message is encrypted as it goes out rather than all at once.
pub const CIPHERTEXT_AHEAD: usize = 256 * 1024;
/// Upper bound of the bytes a record adds to its plaintext (header, explicit nonce, content type, tag),
/// with margin; the exact size is asked for again if it is ever short.
const RECORD_OVERHEAD: usize = 64;
/// Largest plaintext per record.
const MAX_FRAGMENT: usize = 16 * 1024;
/// TLS 1.3 session tickets sent after each handshake (see `load_server_config`).
const TLS13_TICKETS: usize = 1;

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!("ringws needs a crypto provider for rustls: the feature `aws-lc-rs` or `ring`");

/// The rustls crypto provider the server is built with: aws-lc-rs (feature `aws-lc-rs`), else ring.
#[cfg(feature = "aws-lc-rs")]
use rustls::crypto::aws_lc_rs as provider;
#[cfg(not(feature = "aws-lc-rs"))]
use rustls::crypto::ring as provider;

/// The server's crypto provider: the one it is built with, its cipher suites in the server's order of
/// preference, which handshakes follow whatever the client's order (`ignore_client_order`): AES-128-GCM
/// before AES-256-GCM before ChaCha20-Poly1305, in TLS 1.3 and in TLS 1.2. AES-128-GCM is the cheapest of
/// the three with AES instructions (10 rounds against 14, and SHA-256 for the TLS 1.3 key schedule
/// instead of SHA-384), 128-bit secure, and the one suite every TLS 1.3 client must implement (RFC 8446,
/// 9.1); browsers already put it first. Key exchange groups and signature algorithms are the provider's.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    use provider::cipher_suite::*;
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..provider::default_provider()
    }
}

/// Loads a PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1) into a server configuration
/// for TLS 1.2 and 1.3 ([`crypto_provider`]: the server's suite order, no client authentication, no ALPN,
/// resumption by stateless tickets only). The error names the file at fault. The certificate cannot be replaced later: for that, keep the
/// [`TlsCertificate`] this is built on.
pub fn load_server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    TlsCertificate::load(cert_path, key_path)
        .map(|certificate| certificate.server_config())
        .map_err(|e| e.to_string())
}

/// A certificate or key that could not be loaded: the file at fault and why (the whole sentence, the
/// file named in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsLoadError {
    /// The file at fault (the key file for a key that does not match its certificate).
    pub file: PathBuf,
    pub message: String,
}

impl std::fmt::Display for TlsLoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TlsLoadError {}

/// What the loaded certificate says of itself, for the log line and the expiry gauge; `None` where the
/// leaf certificate does not parse as X.509 (rustls accepted it, so it is served anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// The leaf certificate's subject (RFC 4514 text).
    pub subject: Option<String>,
    /// The leaf certificate's notAfter, in seconds since the Unix epoch.
    pub not_after_unix: Option<u64>,
    /// The same as an RFC 3339 UTC time.
    pub not_after: Option<String>,
}

impl CertificateSummary {
    fn of(leaf: &CertificateDer<'_>) -> CertificateSummary {
        use x509_cert::der::Decode;
        match x509_cert::Certificate::from_der(leaf) {
            Ok(cert) => {
                let not_after = cert.tbs_certificate().validity().not_after;
                CertificateSummary {
                    subject: Some(cert.tbs_certificate().subject().to_string()),
                    not_after_unix: Some(not_after.to_unix_duration().as_secs()),
                    not_after: Some(not_after.to_date_time().to_string()),
                }
            }
            Err(_) => CertificateSummary {
                subject: None,
                not_after_unix: None,
                not_after: None,
            },
        }
    }
}

/// The certificate rustls presents in full handshakes: one slot per server, read by every worker's
/// handshakes and replaced whole by [`TlsCertificate::reload`]. A handshake takes the certificate once
/// (an `ArcSwap` load: no lock, no syscall) and keeps it; a replacement never touches a handshake or a
/// connection that already has one.
#[derive(Debug)]
struct SwappableCertificate(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for SwappableCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The server's certificate and key, loaded from two PEM files and reloadable from the same files while
/// serving (`SIGHUP` in `ringws serve`).
///
/// The rustls configuration is built once and never replaced: only the certificate its resolver hands
/// to full handshakes is swapped. So the accept path is untouched (no per-accept read of a shared slot,
/// no message to workers), connections already open keep the certificate they were made with, and the
/// session ticket key stays (tickets issued before a reload still resume after it; a resumed session
/// keeps the identity it was made under).
pub struct TlsCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Arc<SwappableCertificate>,
    config: Arc<rustls::ServerConfig>,
    summary: CertificateSummary,
}

impl TlsCertificate {
    /// Loads the certificate and key and builds the server configuration (see [`load_server_config`]).
    /// Sets the process's certificate metrics (`ringws_tls_cert_not_after_seconds`).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsCertificate, TlsLoadError> {
        let provider = Arc::new(crypto_provider());
        let (certified, summary) = load_certified_key(cert_path, key_path, &provider)?;
        let current = Arc::new(SwappableCertificate(ArcSwap::from_pointee(certified)));
        let setup_error = |e: rustls::Error| TlsLoadError {
            file: cert_path.to_path_buf(),
            message: format!("TLS setup: {e}"),
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(setup_error)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // The server's suite order (AES-128-GCM first), not the client's: rustls and OpenSSL clients put
        // AES-256-GCM first, which costs the server more per record for no security a client needs.
        config.ignore_client_order = true;
        // No server-side session cache (it would be a lock and memory shared by every handshake).
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        // One stateless TLS 1.3 ticket, sent right after the client's Finished: besides offering resumption,
        // it is what the server sends at that point. Without it a client that does not set TCP_NODELAY
        // writes its first request right behind its Finished, Nagle holds that write until the Finished is
        // acknowledged, and the acknowledgement waits for the server's delayed ACK (about 40 ms per
        // connection). The ticketer is shared (a read lock per ticket issued) and its key rotates every
        // 6 hours; a connection holds nothing for it once the ticket is sent.
        config.ticketer = provider::Ticketer::new().map_err(setup_error)?;
        config.send_tls13_tickets = TLS13_TICKETS;
        TLS_CERTIFICATE.loaded(summary.not_after_unix);
        Ok(TlsCertificate {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current,
            config: Arc::new(config),
            summary,
        })
    }

    /// The configuration to serve with (`ServerConfig::tls`); it follows every successful reload.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// What the certificate in use says of itself.
    pub fn summary(&self) -> &CertificateSummary {
        &self.summary
    }

    /// Loads the certificate and key again from the same files; on success new full handshakes present
    /// the new certificate. On failure (a file missing or unparsable, a key that does not match) the
    /// certificate in use stays. Either way the result is counted (`ringws_tls_reloads_total{result}`).
    /// Not for the hot path: it reads two files.
    pub fn reload(&mut self) -> Result<&CertificateSummary, TlsLoadError> {
        match load_certified_key(
            &self.cert_path,
            &self.key_path,
            self.config.crypto_provider(),
        ) {
            Ok((certified, summary)) => {
                self.current.0.store(Arc::new(certified));
                TLS_CERTIFICATE.reloaded(summary.not_after_unix);
                self.summary = summary;
                Ok(&self.summary)
            }
            Err(e) => {
                TLS_CERTIFICATE.reload_failed();
                Err(e)
            }
        }
    }
}

/// Reads and checks a certificate chain and its private key: the chain's leaf must match the key.
fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(CertifiedKey, CertificateSummary), TlsLoadError> {
    let cert_error = |message: String| TlsLoadError {
        file: cert_path.to_path_buf(),
        message,
    };
    let key_error = |message: String| TlsLoadError {
        file: key_path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| {
            cert_error(format!(
                "cannot read TLS certificate {}: {e}",
                cert_path.display()
            ))
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            cert_error(format!(
                "cannot parse TLS certificate {}: {e}",
                cert_path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(cert_error(format!(
            "no PEM certificate (BEGIN CERTIFICATE) found in {}",
            cert_path.display()
        )));
    }
    let key_pem = std::fs::read(key_path).map_err(|e| {
        key_error(format!(
            "cannot read TLS private key {}: {e}",
            key_path.display()
        ))
    })?;
    if is_encrypted_key(&key_pem) {
        return Err(key_error(format!(
            "the private key in {} is encrypted, and encrypted keys are not supported: \
             decrypt it first (openssl pkey -in {} -out plain.pem)",
            key_path.display(),
            key_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => key_error(format!(
            "no PEM private key (PKCS#8, PKCS#1 or SEC1) found in {}",
            key_path.display()
        )),
        e => key_error(format!(
            "cannot read TLS private key {}: {e}",
            key_path.display()
        )),
    })?;
    let summary = CertificateSummary::of(&certs[0]);
    let certified = CertifiedKey::from_der(certs, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => key_error(format!(
            "the private key in {} does not match the certificate in {}",
            key_path.display(),
            cert_path.display()
        )),
        e => key_error(format!(
            "unusable TLS key {} for certificate {}: {e}",
            key_path.display(),
            cert_path.display()
        )),
    })?;
    Ok((certified, summary))
}

/// Whether a PEM key file holds an encrypted private key: a PKCS#8 `ENCRYPTED PRIVATE KEY` block, or a
/// traditional OpenSSL block with a `Proc-Type: 4,ENCRYPTED` header. Neither parses as a key, and
/// without this check both would be reported as "no private key found".
fn is_encrypted_key(pem: &[u8]) -> bool {
    let contains = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    contains(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(b"Proc-Type: 4,ENCRYPTED")
}

/// What one receive did besides producing plaintext.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecvOutcome {
    /// The TLS handshake completed during this receive.
    pub handshake_completed: bool,
    /// It was a TLS 1.3 handshake: its session ticket waits in the ciphertext queue (`hold_output`), so
    /// the client's Finished must be acknowledged now (TCP_QUICKACK), not by a delayed ACK.
    pub quick_ack: bool,
    /// The peer sent close_notify.
    pub peer_closed: bool,
}

/// The TLS state of one connection (boxed; plain connections hold `None`).
pub struct TlsState {
    conn: UnbufferedServerConnection,
    /// The start of a record that spans receives (a pooled buffer; empty, without capacity, between
    /// records).
    incoming: Vec<u8>,
    /// Ciphertext waiting to be sent (handshake records, encrypted frames, alerts); `None` while empty.
    pub out: Option<Box<SendQueue>>,
    /// The handshake completed: application data may be encrypted.
    pub handshake_done: bool,
    /// close_notify was queued: nothing more is encrypted.
    pub close_notify_sent: bool,
    /// A TLS error ended the connection: nothing more is processed or encrypted.
    pub failed: bool,
    /// The peer sent close_notify: anything it sends after it is dropped unread.
    pub peer_closed: bool,
    /// Ciphertext was given to rustls (the client's first flight was processed).
    pub input_seen: bool,
    /// TLS 1.3: the session ticket rustls queued after the client's Finished waits in `out` until the first
    /// plaintext is encrypted (the 101 or an HTTP answer) or the connection ends, and goes with it. Sent at
    /// once, it reaches a client while the client writes its request, and a client that reads and writes
    /// one TLS session from two threads (Python websockets' sync client on OpenSSL) then sometimes loses
    /// its request: without this, about one run in three of the wss interop checks hung a connection.
    pub hold_output: bool,
    /// Receives of this connection waiting in its worker's list of first flights (see
    /// `worker::tls_io`); while any waits, later ones wait behind them, so that order is kept.
    pub deferred_inputs: u16,
    /// The server sent a close frame because of the peer's input (a protocol error, a limit) and waits
    /// for the peer's close reply before close_notify: a peer (OpenSSL) that reads close_notify first
    /// can no longer write its reply and reports an error instead of a clean close.
    pub await_close_reply: bool,
}

impl TlsState {
    pub fn new(config: &Arc<rustls::ServerConfig>) -> Result<TlsState, rustls::Error> {
        Ok(TlsState {
            conn: UnbufferedServerConnection::new(Arc::clone(config))?,
            incoming: Vec::new(),
            out: None,
            handshake_done: false,
            close_notify_sent: false,
            failed: false,
            peer_closed: false,
            input_seen: false,
            deferred_inputs: 0,
            hold_output: false,
            await_close_reply: false,
        })
    }

    /// Ciphertext queued and not yet sent.
    pub fn queued_bytes(&self) -> usize {
        self.out.as_ref().map_or(0, |q| q.queued_bytes())
    }

    pub fn send_in_flight(&self) -> bool {
        self.out.as_ref().is_some_and(|q| q.send_in_flight())
    }

    /// Bytes held for a record spanning receives (0 while idle).
    pub fn buffered_capacity(&self) -> usize {
        self.incoming.capacity()
    }

    /// Gives the buffers this connection holds back to the pool (at release).
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        recycle(pool, std::mem::take(&mut self.incoming));
        if let Some(queue) = self.out.take() {
            pool.give_queue(queue);
        }
    }

    /// Processes received ciphertext: appends the decrypted application data to `plain`, queues the
    /// handshake records to send. On error the connection is failed (an alert is queued if rustls has
    /// one) and must not be used further.
    pub fn receive(
        &mut self,
        input: &mut [u8],
        pool: &mut BufferPool,
        plain: &mut Vec<u8>,
    ) -> Result<RecvOutcome, rustls::Error> {
        let mut outcome = RecvOutcome::default();
        self.input_seen = true;
        // After our close_notify nothing the peer sends is needed (the write side is shut once it is
        // out, and the peer's EOF releases the connection), and rustls must not see more: it counts its
        // close_notify as the one alert a connection may send, so a bad record after it would make it
        // try to send a second (a debug assertion in rustls, a worker panic in debug builds).
        if self.peer_closed || self.close_notify_sent {
            return Ok(outcome);
        }
        let result = if self.incoming.is_empty() {
            // The usual case: whole records inside this receive, processed in place.
            match self.process(input, pool, plain, &mut outcome) {
                Ok(consumed) => {
                    if consumed < input.len() {
                        // A pooled buffer: records spanning receives (large messages) allocate
                        // nothing in steady state.
                        let mut incoming = pool.take_buffer();
                        incoming.extend_from_slice(&input[consumed..]);
                        self.incoming = incoming;
                    }
                    Ok(outcome)
                }
                Err(e) => Err(e),
            }
        } else if self.handshake_done {
            self.receive_after_partial_record(input, pool, plain, &mut outcome)
                .map(|_| outcome)
        } else {
            self.receive_appended(input, pool, plain, &mut outcome)
                .map(|_| outcome)
        };
        let mut result = result;
        if let Ok(done) = result.as_mut() {
            if done.handshake_completed
                && self.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
            {
                self.hold_output = true;
                done.quick_ack = true;
            }
        }
        if result.is_err() {
            self.fail(pool);
        } else if outcome.peer_closed {
            // Nothing after close_notify is read, so nothing is kept for it either.
            self.peer_closed = true;
            recycle(pool, std::mem::take(&mut self.incoming));
        }
        result
    }

    /// Input that follows the start of a record kept from an earlier receive (application data: at most
    /// one partial record is kept). Only the bytes that complete that record are copied behind it; the
    /// record is processed from the kept buffer and the rest of the input in place, like a receive that
    /// starts on a record boundary. (Appending the whole input and then moving the unconsumed tail to the
    /// front copied each byte of a large message up to twice more: with 16 KiB messages nearly every
    /// record spans two receives.)
    fn receive_after_partial_record(
        &mut self,
        input: &mut [u8],
        pool: &mut BufferPool,
        plain: &mut Vec<u8>,
        outcome: &mut RecvOutcome,
    ) -> Result<(), rustls::Error> {
        let mut rest = 0;
        // The header first (it may itself span receives), then the body it announces; a length over
        // the largest record goes to rustls at once, which refuses it.
        loop {
            let want = if self.incoming.len() < RECORD_HEADER {
                RECORD_HEADER
            } else {
                record_end(&self.incoming)
            };
            if self.incoming.len() >= want || want > MAX_RECORD {
                break;
            }
            let take = (want - self.incoming.len()).min(input.len() - rest);
            if take == 0 {
                return Ok(());
            }
            self.incoming.extend_from_slice(&input[rest..rest + take]);
            rest += take;
        }
        let mut incoming = std::mem::take(&mut self.incoming);
        let consumed = self.process(&mut incoming, pool, plain, outcome)?;
        if consumed < incoming.len() {
            // rustls kept part of the record (a post-handshake message it joins with the next record):
            // present it again with everything after it.
            self.incoming = incoming;
            return self.receive_appended(&input[rest..], pool, plain, outcome);
        }
        incoming.clear();
        if outcome.peer_closed || rest == input.len() {
            recycle(pool, incoming);
            return Ok(());
        }
        let consumed = rest + self.process(&mut input[rest..], pool, plain, outcome)?;
        if consumed < input.len() {
            // The start of the next record: kept in the same buffer.
            incoming.extend_from_slice(&input[consumed..]);
            self.incoming = incoming;
        } else {
            recycle(pool, incoming);
        }
        Ok(())
    }

    /// Input appended to what was kept from earlier receives and processed from there (the handshake,
    /// where rustls may keep several records until a message that spans them is complete).
    fn receive_appended(
        &mut self,
        input: &[u8],
        pool: &mut BufferPool,
        plain: &mut Vec<u8>,
        outcome: &mut RecvOutcome,
    ) -> Result<(), rustls::Error> {
        self.incoming.extend_from_slice(input);
        let mut incoming = std::mem::take(&mut self.incoming);
        let consumed = self.process(&mut incoming, pool, plain, outcome)?;
        if consumed < incoming.len() {
            incoming.drain(..consumed);
            self.incoming = incoming;
        } else {
            // Back to the pool: no buffer is kept between records.
            recycle(pool, incoming);
        }
        Ok(())
    }

    /// Runs rustls over `buf` until it needs more input; returns the bytes consumed (the rest is the
    /// start of a record, or handshake bytes rustls keeps for later, and must be presented again).
    fn process(
        &mut self,
        buf: &mut [u8],
        pool: &mut BufferPool,
        plain: &mut Vec<u8>,
        outcome: &mut RecvOutcome,
    ) -> Result<usize, rustls::Error> {
        let mut start = 0;
        loop {
            let status = self.conn.process_tls_records(&mut buf[start..]);
            let mut discard = status.discard;
            let state = status.state?;
            let done = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    false
                }
                ConnectionState::ReadEarlyData(mut early) => {
                    // 0-RTT is not enabled; anything offered is dropped (it could be a replay).
                    while let Some(record) = early.next_record() {
                        discard += record?.discard;
                    }
                    false
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut self.out, pool, |dst| encode.encode(dst))?;
                    false
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // The records are in the queue, in order: the send will carry them.
                    transmit.done();
                    false
                }
                ConnectionState::PeerClosed => {
                    outcome.peer_closed = true;
                    false
                }
                ConnectionState::WriteTraffic(_) => {
                    if !self.handshake_done {
                        self.handshake_done = true;
                        outcome.handshake_completed = true;
                    }
                    true
                }
                ConnectionState::BlockedHandshake | ConnectionState::Closed => true,
                _ => {
                    return Err(rustls::Error::General(
                        "unexpected TLS connection state".into(),
                    ))
                }
            };
            start += discard;
            if done {
                return Ok(start);
            }
        }
    }

    /// Marks the connection failed and queues the alert rustls prepared for the error, if any.
    fn fail(&mut self, pool: &mut BufferPool) {
        self.failed = true;
        recycle(pool, std::mem::take(&mut self.incoming));
        for _ in 0..4 {
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    if encode_into(&mut self.out, pool, |dst| encode.encode(dst)).is_err() {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    /// Encrypts queued plaintext from `plain` (front first) into the ciphertext queue, up to
    /// [`CIPHERTEXT_AHEAD`] queued; with `close`, once `plain` is empty, queues close_notify. Does nothing
    /// before the handshake completes (the plaintext waits) or after a failure.
    pub fn encrypt_queued(
        &mut self,
        plain: Option<&mut SendQueue>,
        pool: &mut BufferPool,
        close: bool,
    ) -> Result<(), rustls::Error> {
        if !self.handshake_done || self.failed || self.close_notify_sent {
            return Ok(());
        }
        let has_plain = plain.as_ref().is_some_and(|q| !q.is_empty());
        if !has_plain && !close {
            return Ok(());
        }
        // The held ticket goes out ahead of this plaintext.
        self.hold_output = false;
        if self.queued_bytes() >= CIPHERTEXT_AHEAD {
            return Ok(());
        }
        let mut plain = plain;
        for _ in 0..8 {
            let status = self.conn.process_tls_records(&mut self.incoming[..]);
            if status.discard != 0 {
                // Only a partial record is ever kept; a complete one here would be a bug.
                return Err(rustls::Error::General(
                    "unprocessed TLS record at flush".into(),
                ));
            }
            match status.state? {
                ConnectionState::WriteTraffic(mut traffic) => {
                    if let Some(plain) = plain.as_deref_mut() {
                        while self.out.as_ref().map_or(0, |q| q.queued_bytes()) < CIPHERTEXT_AHEAD {
                            let Some(bytes) = plain.front() else { break };
                            if bytes.len() < MAX_FRAGMENT && plain.queued_bytes() > bytes.len() {
                                // Several chunks queued, the first smaller than a record (shared
                                // broadcast frames, one chunk each): gathered into one record.
                                let mut gathered = pool.take_buffer();
                                while let Some(bytes) = plain.front() {
                                    let take = bytes.len().min(MAX_FRAGMENT - gathered.len());
                                    gathered.extend_from_slice(&bytes[..take]);
                                    plain.complete(take, pool);
                                    if gathered.len() == MAX_FRAGMENT {
                                        break;
                                    }
                                }
                                let result =
                                    encrypt_into(&mut self.out, pool, &mut traffic, &gathered);
                                recycle(pool, gathered);
                                result?;
                                continue;
                            }
                            let take = bytes.len().min(ENCRYPT_SLICE);
                            encrypt_into(&mut self.out, pool, &mut traffic, &bytes[..take])?;
                            plain.complete(take, pool);
                        }
                    }
                    if close && plain.as_ref().is_none_or(|q| q.is_empty()) {
                        encode_into(&mut self.out, pool, |dst| {
                            traffic.queue_close_notify(dst).map_err(encrypt_to_encode)
                        })?;
                        self.close_notify_sent = true;
                    }
                    return Ok(());
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut self.out, pool, |dst| encode.encode(dst))?;
                }
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Bytes of a TLS record header (content type, legacy version, length).
const RECORD_HEADER: usize = 5;
/// The largest record on the wire (TLS 1.2's ciphertext limit, 2^14 + 2048, and its header).
const MAX_RECORD: usize = RECORD_HEADER + MAX_FRAGMENT + 2048;

/// Where the record that starts `buf` ends (`buf` holds at least its header).
fn record_end(buf: &[u8]) -> usize {
    RECORD_HEADER + usize::from(u16::from_be_bytes([buf[3], buf[4]]))
}

/// Gives a buffer back to the pool unless it never allocated.
fn recycle(pool: &mut BufferPool, buf: Vec<u8>) {
    if buf.capacity() > 0 {
        pool.give_buffer(buf);
    }
}

fn encrypt_to_encode(e: EncryptError) -> EncodeError {
    match e {
        EncryptError::InsufficientSize(size) => EncodeError::InsufficientSize(size),
        // Only a size error is retried; any other failure ends the connection.
        _ => EncodeError::AlreadyEncoded,
    }
}

/// Appends what `encode` writes (a handshake record, an alert) to the ciphertext queue, asking first
/// for the size it needs.
fn encode_into(
    out: &mut Option<Box<SendQueue>>,
    pool: &mut BufferPool,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    let need = match encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Err(e) => return Err(rustls::Error::General(format!("TLS encode: {e}"))),
    };
    let queue = out.get_or_insert_with(|| pool.take_queue());
    let mut result = Ok(());
    queue.push_owned(pool, need, |buf| {
        let start = buf.len();
        buf.resize(start + need, 0);
        match encode(&mut buf[start..]) {
            Ok(n) => buf.truncate(start + n),
            Err(e) => {
                buf.truncate(start);
                result = Err(rustls::Error::General(format!("TLS encode: {e}")));
            }
        }
    });
    result
}

/// Encrypts `data` into the ciphertext queue (rustls cuts it into records).
fn encrypt_into(
    out: &mut Option<Box<SendQueue>>,
    pool: &mut BufferPool,
    traffic: &mut WriteTraffic<'_, rustls::server::ServerConnectionData>,
    data: &[u8],
) -> Result<(), rustls::Error> {
    let records = data.len().div_ceil(MAX_FRAGMENT).max(1);
    let bound = data.len() + records * RECORD_OVERHEAD;
    let queue = out.get_or_insert_with(|| pool.take_queue());
    let mut result = Ok(());
    queue.push_owned(pool, bound, |buf| {
        let start = buf.len();
        buf.resize(start + bound, 0);
        let written = match traffic.encrypt(data, &mut buf[start..]) {
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                buf.resize(start + required_size, 0);
                traffic.encrypt(data, &mut buf[start..])
            }
            other => other,
        };
        match written {
            Ok(n) => buf.truncate(start + n),
            Err(e) => {
                buf.truncate(start);
                result = Err(rustls::Error::General(format!("TLS encrypt: {e}")));
            }
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn server_config() -> (Arc<rustls::ServerConfig>, CertificateDer<'static>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "ringws-tls-unit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), certified.key_pair.serialize_pem()).unwrap();
        let config = load_server_config(&dir.join("c.pem"), &dir.join("k.pem")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (config, certified.cert.der().clone())
    }

    /// Throwaway P-256 keys (passphrase `x`) as `openssl pkey -aes256` (PKCS#8) and `openssl ec -aes256`
    /// (traditional, with a `Proc-Type` header) write them.
    const ENCRYPTED_PKCS8: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----\n\
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAgGcK3wjXc7TwICCAAw\n\
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEFNVYzMjPNb/OZmJKnraaGcEgZDq\n\
fQI5G82zMSuW0dK9jdqJDUJBAJHE0vwxiwbMgyfDV3LJ0dO6AogQ04RHqY5Ew08v\n\
qsoKj1DbsuOXP8WNAkUbBmU6HIZhelR7qWm3bdkNSBD0vgyymAFSfDLxzk5Zmwrx\n\
lmyec7CX8mGjD8B7tGzowX7celZORoRAY5BTeQE8CR53a4fknvyXwSo0ipNTPmo=\n\
-----END ENCRYPTED PRIVATE KEY-----";
    const ENCRYPTED_TRADITIONAL: &str = "-----BEGIN EC PRIVATE KEY-----\n\
Proc-Type: 4,ENCRYPTED\n\
DEK-Info: AES-256-CBC,02512F8B6C44F001253DC06BBB7D8A57\n\
\n\
3mO689yheaLUGkrV0KiAfxOM2Tfx8Cb0+5li8zIE+YQhwjBTuyT2L0FD+rQ/Jgb7\n\
yHg4QIVyH/ESgtCRKFLc9WlXQtBUTC3yttV71Wx9vj2dWaYdJDwepU6BidCdNWym\n\
sXGvzqSHFdaPC8SBa5Ni1XRFinsE6hqAvLtW1P3rZvE=\n\
-----END EC PRIVATE KEY-----";

    #[test]
    fn an_encrypted_key_is_refused_as_encrypted() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("ringws-tls-encrypted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.pem"), certified.cert.pem()).unwrap();
        for key in [ENCRYPTED_PKCS8, ENCRYPTED_TRADITIONAL] {
            std::fs::write(dir.join("k.pem"), key).unwrap();
            let error = load_server_config(&dir.join("c.pem"), &dir.join("k.pem")).unwrap_err();
            assert!(
                error.contains("is encrypted, and encrypted keys are not supported")
                    && error.contains("openssl pkey -in"),
                "{error}"
            );
        }
        // A plain key still loads, and a file with no key at all keeps its own message.
        std::fs::write(dir.join("k.pem"), certified.key_pair.serialize_pem()).unwrap();
        assert!(load_server_config(&dir.join("c.pem"), &dir.join("k.pem")).is_ok());
        std::fs::write(dir.join("k.pem"), certified.cert.pem()).unwrap();
        let error = load_server_config(&dir.join("c.pem"), &dir.join("k.pem")).unwrap_err();
        assert!(error.starts_with("no PEM private key"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A reload that fails names the file at fault and keeps the certificate in use; one that succeeds
    /// replaces the summary (subject, expiry) and the certificate handshakes get.
    #[test]
    fn a_reload_replaces_the_certificate_or_keeps_it() {
        let dir = std::env::temp_dir().join(format!("ringws-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("c.pem"), dir.join("k.pem"));
        let write = |names: &[&str]| {
            let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
            let certified = rcgen::generate_simple_self_signed(names).unwrap();
            std::fs::write(&cert_path, certified.cert.pem()).unwrap();
            std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
            certified
        };
        let first = write(&["a.example"]);
        let mut certificate = TlsCertificate::load(&cert_path, &key_path).unwrap();
        let served = |certificate: &TlsCertificate| certificate.current.0.load().cert[0].clone();
        assert_eq!(served(&certificate), *first.cert.der());
        let summary = certificate.summary().clone();
        assert_eq!(
            summary.subject.as_deref(),
            Some("CN=rcgen self signed cert")
        );
        // rcgen's default notAfter: 4096-01-01.
        assert_eq!(summary.not_after.as_deref(), Some("4096-01-01T00:00:00Z"));

        let second = write(&["b.example"]);
        certificate.reload().unwrap();
        assert_eq!(served(&certificate), *second.cert.der());

        // Another certificate with the key of `second`: a mismatch, blamed on the key file.
        let third = write(&["c.example"]);
        std::fs::write(&key_path, second.key_pair.serialize_pem()).unwrap();
        let error = certificate.reload().unwrap_err();
        assert_eq!(error.file, key_path);
        assert!(error.message.contains("does not match"), "{error}");
        assert_eq!(served(&certificate), *second.cert.der());
        std::fs::write(&cert_path, "garbage").unwrap();
        let error = certificate.reload().unwrap_err();
        assert_eq!(error.file, cert_path, "{error}");
        assert_eq!(served(&certificate), *second.cert.der());
        drop(third);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn client(cert: &CertificateDer<'static>, tls12: bool) -> rustls::ClientConnection {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap()
    }

    /// Moves the client's pending records to the server in receives of `chunk` bytes; returns the
    /// plaintext the server got.
    fn client_to_server(
        client: &mut rustls::ClientConnection,
        server: &mut TlsState,
        pool: &mut BufferPool,
        chunk: usize,
    ) -> Vec<u8> {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut plain = Vec::new();
        for piece in wire.chunks_mut(chunk) {
            server.receive(piece, pool, &mut plain).unwrap();
        }
        plain
    }

    /// Moves the server's queued ciphertext to the client; returns the plaintext the client read.
    fn server_to_client(
        server: &mut TlsState,
        client: &mut rustls::ClientConnection,
        pool: &mut BufferPool,
    ) -> Vec<u8> {
        let mut wire = Vec::new();
        if let Some(out) = server.out.as_mut() {
            while let Some(bytes) = out.front() {
                let n = bytes.len();
                wire.extend_from_slice(bytes);
                out.complete(n, pool);
            }
        }
        let mut rd = &wire[..];
        let mut plain = Vec::new();
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match client.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client read: {e}"),
                }
            }
        }
        plain
    }

    /// Runs the handshake (the client's records in pieces of `chunk` bytes), a few round trips at most;
    /// every record both ways must be accepted.
    fn handshake(
        client: &mut rustls::ClientConnection,
        server: &mut TlsState,
        pool: &mut BufferPool,
        chunk: usize,
    ) {
        for _ in 0..4 {
            assert!(client_to_server(client, server, pool, chunk).is_empty());
            assert!(server_to_client(server, client, pool).is_empty());
            if !client.is_handshaking() && server.handshake_done {
                break;
            }
        }
    }

    /// Handshake, data both ways and close_notify, with the client's bytes cut into receives of every
    /// size class (one byte, a few bytes, mid-record, whole): the plaintext is the same.
    #[test]
    fn any_chunking_gives_the_same_plaintext() {
        let (config, cert) = server_config();
        let message: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        for tls12 in [false, true] {
            for chunk in [1usize, 3, 1000, 16_389, usize::MAX] {
                let mut pool = BufferPool::default();
                let mut server = TlsState::new(&config).unwrap();
                let mut client = client(&cert, tls12);
                client.set_buffer_limit(None);
                handshake(&mut client, &mut server, &mut pool, chunk);
                assert!(
                    server.handshake_done && !client.is_handshaking(),
                    "chunk {chunk}"
                );
                client.writer().write_all(&message).unwrap();
                let got = client_to_server(&mut client, &mut server, &mut pool, chunk);
                assert_eq!(got, message, "chunk {chunk}, tls12 {tls12}");
                assert_eq!(
                    server.buffered_capacity(),
                    0,
                    "no buffer kept between records"
                );

                // Server to client: a plaintext queue (owned and shared chunks), encrypted at flush.
                let mut plain_queue = SendQueue::new();
                plain_queue.push_owned(&mut pool, 10, |b| b.extend_from_slice(b"0123456789"));
                plain_queue.push_shared(Arc::from(&message[..]));
                let mut received = Vec::new();
                while !plain_queue.is_empty() {
                    server
                        .encrypt_queued(Some(&mut plain_queue), &mut pool, false)
                        .unwrap();
                    assert!(server.queued_bytes() <= CIPHERTEXT_AHEAD + 2 * ENCRYPT_SLICE);
                    received.extend(server_to_client(&mut server, &mut client, &mut pool));
                }
                server
                    .encrypt_queued(Some(&mut plain_queue), &mut pool, true)
                    .unwrap();
                assert!(server.close_notify_sent);
                received.extend(server_to_client(&mut server, &mut client, &mut pool));
                // close_notify: the client's reader reports a clean end of stream.
                assert_eq!(client.reader().read(&mut [0u8; 1]).unwrap(), 0);
                assert_eq!(&received[..10], b"0123456789");
                assert_eq!(&received[10..], &message[..]);
            }
        }
    }

    /// A client that prefers AES-256-GCM (rustls's order, OpenSSL's too) gets AES-128-GCM, the server's
    /// first choice, over TLS 1.3 and TLS 1.2; a client offering only AES-256-GCM still gets it.
    #[test]
    fn the_server_order_of_suites_wins() {
        use rustls::CipherSuite;
        let (config, cert) = server_config();
        for (tls12, expected) in [
            (false, CipherSuite::TLS13_AES_128_GCM_SHA256),
            (true, CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
        ] {
            let mut pool = BufferPool::default();
            let mut server = TlsState::new(&config).unwrap();
            let mut client = client(&cert, tls12);
            handshake(&mut client, &mut server, &mut pool, usize::MAX);
            assert!(server.handshake_done);
            let suite = client.negotiated_cipher_suite().unwrap().suite();
            assert_eq!(suite, expected, "tls12 {tls12}");
            assert_eq!(
                server.conn.negotiated_cipher_suite().unwrap().suite(),
                expected
            );
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let only_256 = rustls::crypto::CryptoProvider {
            cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384],
            ..rustls::crypto::ring::default_provider()
        };
        let config_256 = rustls::ClientConfig::builder_with_provider(Arc::new(only_256))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(config_256), "localhost".try_into().unwrap())
                .unwrap();
        let mut pool = BufferPool::default();
        let mut server = TlsState::new(&config).unwrap();
        handshake(&mut client, &mut server, &mut pool, usize::MAX);
        assert!(server.handshake_done);
        assert_eq!(
            client.negotiated_cipher_suite().unwrap().suite(),
            CipherSuite::TLS13_AES_256_GCM_SHA384
        );
    }

    /// The configuration serves with the provider the build chose: aws-lc-rs with its feature (the
    /// default), ring with `--no-default-features --features ring`.
    #[test]
    fn the_provider_is_the_one_the_build_chose() {
        let (config, _) = server_config();
        let provider = config.crypto_provider();
        let name = format!("{:?}", provider.secure_random);
        let expected = if cfg!(feature = "aws-lc-rs") {
            "AwsLcRs"
        } else {
            "Ring"
        };
        assert_eq!(name, expected);
        assert_eq!(
            provider.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
    }

    /// After our close_notify, input is dropped without reaching rustls: a record that fails to decrypt
    /// (or any garbage) must not make rustls try to send a second alert (it panics in debug builds).
    #[test]
    fn input_after_our_close_notify_is_dropped() {
        let (config, cert) = server_config();
        let mut pool = BufferPool::default();
        let mut server = TlsState::new(&config).unwrap();
        let mut client = client(&cert, false);
        handshake(&mut client, &mut server, &mut pool, usize::MAX);
        assert!(server.handshake_done);
        let mut empty = SendQueue::new();
        server
            .encrypt_queued(Some(&mut empty), &mut pool, true)
            .unwrap();
        assert!(server.close_notify_sent);
        // An application data record whose body is not what was encrypted: a decrypt error.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        record.extend_from_slice(&[0xAB; 0x20]);
        let mut plain = Vec::new();
        let outcome = server.receive(&mut record, &mut pool, &mut plain).unwrap();
        assert!(plain.is_empty());
        assert!(!outcome.peer_closed && !server.failed);
    }

    /// A record header that spans receives and announces more than the largest record is refused when
    /// the header is complete, not after the announced bytes have been kept.
    #[test]
    fn an_oversized_record_spanning_receives_is_refused_at_its_header() {
        let (config, cert) = server_config();
        let mut pool = BufferPool::default();
        let mut server = TlsState::new(&config).unwrap();
        let mut client = client(&cert, false);
        handshake(&mut client, &mut server, &mut pool, usize::MAX);
        assert!(server.handshake_done);
        let mut plain = Vec::new();
        let mut start = [0x17, 0x03, 0x03];
        assert!(server.receive(&mut start, &mut pool, &mut plain).is_ok());
        let mut rest = [0xFF, 0xFF, 0x00, 0x00];
        assert!(server.receive(&mut rest, &mut pool, &mut plain).is_err());
        assert!(server.failed);
        assert_eq!(server.buffered_capacity(), 0);
    }

    /// Small chunks queued together (shared broadcast frames are one chunk each) go out in one record,
    /// not one record per chunk; a large chunk still fills whole records.
    #[test]
    fn small_chunks_queued_together_share_a_record() {
        let (config, cert) = server_config();
        let mut pool = BufferPool::default();
        let mut server = TlsState::new(&config).unwrap();
        let mut client = client(&cert, false);
        handshake(&mut client, &mut server, &mut pool, usize::MAX);
        assert!(server.handshake_done);
        // The held ticket goes out first: flush it.
        let mut queue = SendQueue::new();
        queue.push_owned(&mut pool, 1, |b| b.push(b'-'));
        server
            .encrypt_queued(Some(&mut queue), &mut pool, false)
            .unwrap();
        let _ = server_to_client(&mut server, &mut client, &mut pool);
        let frames: Vec<Arc<[u8]>> = (0..50u8).map(|i| Arc::from(&[i; 20][..])).collect();
        for frame in &frames {
            queue.push_shared(Arc::clone(frame));
        }
        let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        queue.push_shared(Arc::from(&big[..]));
        server
            .encrypt_queued(Some(&mut queue), &mut pool, false)
            .unwrap();
        assert!(queue.is_empty());
        let mut records = 0;
        let mut wire = Vec::new();
        while let Some(bytes) = server.out.as_ref().and_then(|q| q.front()) {
            wire.extend_from_slice(bytes);
            let n = bytes.len();
            server.out.as_mut().unwrap().complete(n, &mut pool);
        }
        let mut at = 0;
        while at < wire.len() {
            records += 1;
            at += record_end(&wire[at..]);
        }
        // 1,000 bytes of small frames and 40,000 bytes behind them: two full records and a third (one
        // record per frame before: 53).
        assert_eq!(records, 3, "{} bytes on the wire", wire.len());
        let mut rd = &wire[..];
        let mut received = Vec::new();
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n) = client.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
            }
        }
        let expected: Vec<u8> = frames
            .iter()
            .flat_map(|f| f.iter().copied())
            .chain(big)
            .collect();
        assert_eq!(received, expected);
    }

    #[test]
    fn garbage_fails_with_an_alert() {
        let (config, _) = server_config();
        let mut pool = BufferPool::default();
        let mut server = TlsState::new(&config).unwrap();
        let mut plain = Vec::new();
        let mut input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert!(server.receive(&mut input, &mut pool, &mut plain).is_err());
        assert!(server.failed);
        assert!(plain.is_empty());
        let alert = server
            .out
            .as_ref()
            .and_then(|q| q.front())
            .expect("an alert");
        assert_eq!(alert[0], 0x15, "{alert:?}");
    }

    /// What a TLS connection adds to a plain one before any heap the rustls state owns (the
    /// measured total per idle connection is in docs/BENCHMARKS.md).
    #[test]
    fn tls_state_size() {
        let size = std::mem::size_of::<TlsState>();
        println!(
            "size_of::<TlsState>() = {size}, UnbufferedServerConnection = {}",
            std::mem::size_of::<UnbufferedServerConnection>()
        );
        assert!(size <= 2048, "{size}");
    }
}
