//! Every refused connection gets one log line (`connection refused`) with its status, its reason (the
//! metrics label: `origin`, `bad_request`, `not_found`, ...) and the value at fault (path, header and
//! value) and the peer's address; with `--log-format json` each line is one JSON object with those fields at the top level. The
//! lines are rate-limited per worker, the ones left out counted in a summary line. Failed handshakes are
//! counted by named reasons (`ringws_handshake_failures_total{reason="origin"}`), and a plain 404 is not
//! one of them.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A server on 127.0.0.1 (one worker) whose stderr goes to a file of its own, read after it stopped.
struct LoggedServer {
    server: ServerProcess,
    log: PathBuf,
}

impl LoggedServer {
    fn start(name: &str, extra_args: &[&str]) -> LoggedServer {
        let log =
            std::env::temp_dir().join(format!("ringws-refusals-{name}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(ringws_binary());
        command
            .arg("serve")
            .args(["--bind", "127.0.0.1", "--port", "0", "--workers", "1"])
            .args(extra_args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stderr(Stdio::from(file));
        LoggedServer {
            server: ServerProcess::from_command(command),
            log,
        }
    }

    /// Stops the server (SIGTERM) and returns what it logged.
    fn stop(mut self) -> String {
        self.server.signal("TERM");
        assert!(self.server.wait_exit(Duration::from_secs(10)).is_some());
        let text = std::fs::read_to_string(&self.log).unwrap();
        let _ = std::fs::remove_file(&self.log);
        text
    }
}

/// Sends `request` on a new connection and returns the status of the answer.
fn refused(addr: std::net::SocketAddr, request: &str) -> u16 {
    let mut stream = connect(addr);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let head = String::from_utf8_lossy(&answer);
    head.split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

fn upgrade_with(path: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}\r\n"
    )
}

#[test]
fn each_refusal_is_one_json_line_with_its_reason_and_the_value_at_fault() {
    let server = LoggedServer::start(
        "json",
        &[
            "--log-format",
            "json",
            "--allowed-origins",
            "https://good.example",
        ],
    );
    let addr = server.server.addr;
    let origin = upgrade_with(
        "/chat?room=1",
        "Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n",
    );
    assert_eq!(refused(addr, &origin), 403);
    assert_eq!(
        refused(addr, &upgrade_with("/", "Sec-WebSocket-Version: 8\r\n")),
        426
    );
    assert_eq!(
        refused(addr, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"),
        404
    );
    assert_eq!(refused(addr, "NOT HTTP AT ALL\r\n\r\n"), 400);
    let metrics = metrics_text(addr);
    let log = server.stop();

    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .filter(|line| line["message"] == "connection refused")
        .collect();
    let by_reason = |reason: &str| {
        lines
            .iter()
            .find(|line| line["reason"] == reason)
            .unwrap_or_else(|| panic!("no {reason} line in {log}"))
    };
    let origin = by_reason("origin");
    assert_eq!(origin["status"], 403);
    assert_eq!(origin["level"], "INFO");
    assert_eq!(origin["path"], "/chat?room=1");
    assert_eq!(origin["field"], "origin");
    assert_eq!(origin["value"], "https://evil.example");
    assert_eq!(origin["worker"], 0);
    let peer = origin["peer"]
        .as_str()
        .unwrap_or_else(|| panic!("no peer in {origin}"));
    let peer: std::net::SocketAddr = peer.parse().unwrap();
    assert_eq!(peer.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(
        peer.port(),
        addr.port(),
        "the client's port, not the server's"
    );
    let version = by_reason("version");
    assert_eq!(version["status"], 426);
    assert_eq!(version["field"], "sec-websocket-version");
    assert_eq!(version["value"], "8");
    let not_found = by_reason("not_found");
    assert_eq!(not_found["status"], 404);
    assert_eq!(not_found["path"], "/nowhere");
    assert_eq!(not_found["method"], "GET");
    assert_eq!(by_reason("bad_request")["status"], 400);
    for line in &lines {
        assert!(line["peer"].is_string(), "every line has the peer: {line}");
    }
    assert_eq!(lines.len(), 4, "one line per refusal: {log}");

    // Failed handshakes by named reasons; the plain 404 is not one of them.
    let failures = |reason: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("ringws_handshake_failures_total{")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {reason} failures in {metrics}"))
    };
    assert_eq!(failures("origin"), 1);
    assert_eq!(failures("version"), 1);
    assert_eq!(failures("bad_request"), 1);
    assert_eq!(failures("not_found"), 0);
    assert_eq!(metric(&metrics, "ringws_handshake_failures_total"), 3);
    assert!(
        !metrics.contains("reason=\"40"),
        "no status as a reason: {metrics}"
    );
}

#[test]
fn refusal_lines_are_rate_limited_and_the_rest_counted() {
    let server = LoggedServer::start("limit", &[]);
    let addr = server.server.addr;
    let burst = 60;
    for _ in 0..burst {
        assert_eq!(
            refused(addr, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"),
            404
        );
    }
    // After the window, the next refusal is logged after the count of those left out.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(refused(addr, "GET /last HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
    let log = server.stop();

    let logged = log
        .lines()
        .filter(|l| l.contains("connection refused"))
        .count();
    let left_out: usize = log
        .lines()
        .filter(|l| l.contains("refused connections not logged"))
        .map(|l| {
            let count = l.split("left_out=").nth(1).expect("left_out field");
            count
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert!(logged < burst, "rate-limited: {logged} lines logged");
    assert!(left_out > 0, "{log}");
    assert_eq!(
        logged + left_out,
        burst + 1,
        "every refusal accounted: {log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("connection refused") && l.contains("path=\"/last\"")),
        "the refusal after the window is logged: {log}"
    );
}

#[test]
fn refusals_below_the_log_level_are_neither_logged_nor_counted_as_left_out() {
    let server = LoggedServer::start("warn", &["--log-level", "warn"]);
    let addr = server.server.addr;
    for _ in 0..30 {
        assert_eq!(
            refused(addr, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"),
            404
        );
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(refused(addr, "GET /last HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
    let log = server.stop();
    assert!(!log.contains("connection refused"), "{log}");
    assert!(!log.contains("not logged"), "{log}");
}

/// Refusals outside the request path get their line too: a connection answered 503 from the table's
/// reserve (`table_full`, at `warn`: a server limit) and one dropped at its handshake deadline
/// (`timeout`, no status: nothing was answered).
#[test]
fn a_full_table_and_a_handshake_deadline_are_logged() {
    let server = LoggedServer::start(
        "limits",
        &[
            "--log-format",
            "json",
            "--max-connections-per-worker",
            "1",
            "--handshake-timeout",
            "300ms",
        ],
    );
    let addr = server.server.addr;
    // Holds the one slot (no request: it reaches its deadline), then a second is answered 503.
    let _held = connect(addr);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        refused(addr, &upgrade_with("/", "Sec-WebSocket-Version: 13\r\n")),
        503
    );
    std::thread::sleep(Duration::from_millis(600));
    let log = server.stop();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "connection refused")
        .collect();
    let full = lines
        .iter()
        .find(|line| line["reason"] == "table_full")
        .unwrap_or_else(|| panic!("no table_full line in {log}"));
    assert_eq!(full["status"], 503);
    assert_eq!(full["level"], "WARN");
    assert!(
        full["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{full}"
    );
    let timeout = lines
        .iter()
        .find(|line| line["reason"] == "timeout")
        .unwrap_or_else(|| panic!("no timeout line in {log}"));
    assert!(timeout["status"].is_null(), "{timeout}");
    assert!(
        timeout["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{timeout}"
    );
}

#[test]
fn credentials_in_a_refused_request_are_not_logged() {
    let server = LoggedServer::start("secrets", &["--allowed-origins", "https://good.example"]);
    let addr = server.server.addr;
    // Refused before any token is read (the origin check): the path with its `?token=` is logged.
    let request = upgrade_with(
        "/ws?token=eyJSECRET.PAYLOAD.SIG&topic=a",
        "Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n",
    );
    assert_eq!(refused(addr, &request), 403);
    // A header at fault that holds a credential: two Authorization headers make a bad request.
    let doubled = upgrade_with(
        "/ws",
        "Sec-WebSocket-Version: 13\r\nOrigin: https://good.example\r\n\
         Authorization: Bearer SECRET-ONE\r\nAuthorization: Bearer SECRET-TWO\r\n",
    );
    let status = refused(addr, &doubled);
    let log = server.stop();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("connection refused"))
        .collect();
    assert!(
        refusals
            .iter()
            .any(|line| line.contains("token=[redacted]&topic=a")),
        "{log}"
    );
    assert!(
        !log.contains("SECRET"),
        "a credential in the log (status {status}):\n{log}"
    );
}
