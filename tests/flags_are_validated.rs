//! Every `ringws serve` flag is checked at startup: a value out of its range (or contradicting another
//! flag) stops the server with exit status 2, nothing on stdout, and an error line that names the flag.
//! List flags (`--allowed-origins`, `--subprotocols`) take `a, b` as `a` and `b`. The startup line logs
//! the effective configuration.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

#[test]
fn nonsense_values_exit_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--recv-buffer-size", "0"], "--recv-buffer-size"),
        (&["--recv-buffer-size", "1GiB"], "--recv-buffer-size"),
        (&["--recv-buffers", "3"], "--recv-buffers"),
        (&["--max-message-size", "0"], "--max-message-size"),
        (&["--workers", "0"], "--workers"),
        (
            &["--max-message-size", "64KiB", "--max-frame-size", "1MiB"],
            "--max-frame-size",
        ),
        (
            &[
                "--max-message-size",
                "2MiB",
                "--max-assembly-memory",
                "1MiB",
            ],
            "--max-assembly-memory",
        ),
        (&["--max-header-bytes", "0"], "--max-header-bytes"),
        (
            &["--max-pending-request-memory", "1KiB"],
            "--max-pending-request-memory",
        ),
        (&["--handshake-timeout", "0"], "--handshake-timeout"),
        (&["--ping-timeout", "0"], "--ping-timeout"),
        (&["--idle-timeout", "100000000m"], "--idle-timeout"),
        (&["--max-backpressure", "0"], "--max-backpressure"),
        (&["--max-subscriptions", "0"], "--max-subscriptions"),
        (
            &["--max-connections-per-worker", "0"],
            "--max-connections-per-worker",
        ),
        (
            &["--allowed-origins", "https://a.example,,https://b.example"],
            "--allowed-origins",
        ),
        (&["--subprotocols", "chat,v 2"], "--subprotocols"),
    ];
    for (args, flag) in cases {
        let (code, stderr) = ServerProcess::start_expect_failure(ringws_binary(), args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{flag}: ")),
            "{args:?}: the error names {flag}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn list_flags_trim_the_spaces_after_commas() {
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--workers",
            "1",
            "--allowed-origins",
            "http://a.example, https://b.example",
            "--subprotocols",
            "chat, v2",
        ],
    );
    let mut stream = connect(server.addr);
    let request = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Origin: https://b.example\r\nSec-WebSocket-Protocol: v2\r\n\r\n";
    let (status, head) = http_exchange(&mut stream, request);
    assert_eq!(status, 101, "the second origin is allowed: {head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: v2"),
        "the second subprotocol is picked: {head}"
    );
}

#[test]
fn the_startup_line_shows_the_effective_configuration() {
    let mut child = Command::new(ringws_binary())
        .arg("serve")
        .args(["--bind", "127.0.0.1", "--port", "0", "--workers", "1"])
        .args([
            "--no-pin",
            "--recv-buffer-size",
            "4KiB",
            "--subprotocols",
            "chat, v2",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringws");
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with(server::LISTENING_PREFIX), "{line}");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    let started = stderr
        .lines()
        .find(|line| line.contains("ringws started"))
        .unwrap_or_else(|| panic!("no startup line: {stderr}"));
    for field in [
        "workers=1",
        "recv_buffer_size=4096",
        "recv_buffers=256",
        "subprotocols=[\"chat\", \"v2\"]",
        "inbox_capacity=",
        "slow_consumer=Close",
        "shutdown_timeout=5s",
        "max_subscriptions=64",
    ] {
        assert!(started.contains(field), "{field} in {started}");
    }
}
