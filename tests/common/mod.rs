//! Shared helpers for the integration tests: start the real `ringws` binary on an ephemeral port and stop it
//! by PID.
//!
//! Set `RINGWS_TEST_LOG=1` to see the server's stderr (its logs) in the test output.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A `ringws serve` process started for one test. Dropping it kills the process (by PID) and reaps it.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `ringws serve --bind 127.0.0.1 --port 0 <extra_args>` and waits (up to 20 s) for the
    /// `ringws listening on IP:PORT` line on stdout.
    pub fn start(extra_args: &[&str]) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringws"));
        command
            .arg("serve")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if std::env::var_os("RINGWS_TEST_LOG").is_some() {
            command.stderr(Stdio::inherit());
        } else {
            command.stderr(Stdio::null());
        }
        let mut child = command.spawn().expect("spawn ringws");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("ringws listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("ringws did not report its listening address (exit: {status:?})");
            }
        };
        ServerProcess { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name such as `"TERM"` or `"INT"`) to the server process, by its PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
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

/// Reads an HTTP response head byte by byte (so no byte after it is consumed).
pub fn read_response_head(stream: &mut TcpStream) -> (u16, String) {
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

/// One server frame: (fin, opcode, payload). `None` on EOF or timeout.
pub fn read_server_frame(stream: &mut TcpStream) -> Option<(bool, u8, Vec<u8>)> {
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
