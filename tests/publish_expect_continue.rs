//! `Expect: 100-continue` on `POST /publish` (RFC 9110 section 10.1.1): a head that passes every check
//! the body is not needed for gets `100 Continue` before the client sends the body, then the 200 and the
//! delivery; a head that fails one gets its final answer at once (401, 413, 400) without any body sent,
//! and the connection is closed; another expectation gets 417, counted. A WebSocket upgrade ignores
//! `100-continue` (the 101 comes straight) and answers another expectation 417. And a real curl, which
//! sends `Expect: 100-continue` for bodies over 1 KiB, publishes without its one-second wait.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "continue-token";

/// `ringws serve --mode pubsub --workers 1` on an ephemeral loopback port with the publish token set.
fn start() -> ServerProcess {
    start_with(&["--max-publish-body", "64KiB"])
}

fn start_with(args: &[&str]) -> ServerProcess {
    let mut command = Command::new(ringws_binary());
    command
        .arg("serve")
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(["--mode", "pubsub", "--workers", "1"])
        .args(args)
        .env("RINGWS_PUBLISH_TOKEN", TOKEN)
        .stdin(Stdio::null());
    if std::env::var_os("RINGWS_TEST_LOG").is_some() {
        command.stderr(Stdio::inherit());
    } else {
        command.stderr(Stdio::null());
    }
    ServerProcess::from_command(command)
}

/// A publish head on `path` with `lines` (full header lines) and `Expect: 100-continue`.
fn expecting_head(path: &str, lines: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{lines}Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
    )
}

fn refusals(addr: SocketAddr, reason: &str) -> u64 {
    let label = format!("reason=\"{reason}\"");
    metrics_text(addr)
        .lines()
        .filter(|l| l.starts_with("ringws_publish_refusals_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// Sends `head` alone (no body) and reads the answer head, which must come within 2 s.
fn head_alone(addr: SocketAddr, head: &str) -> (TcpStream, u16, String) {
    let mut stream = connect(addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let (status, text) = read_response_head(&mut stream);
    (stream, status, text)
}

#[test]
fn continue_comes_before_the_body_then_the_publish_is_answered_and_delivered() {
    let server = start();
    let mut subscriber = ws_at(server.addr, "/?topic=news");
    wait_open(|| metrics_text(server.addr), 1, Duration::from_secs(5));
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let (mut stream, status, text) = head_alone(
        server.addr,
        &expecting_head("/publish?topic=news", &auth, 5),
    );
    assert_eq!(status, 100, "{text:?}");
    assert_eq!(text, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").unwrap();
    let (status, head) = read_response_head(&mut stream);
    assert_eq!(status, 200, "{head}");
    assert_eq!(read_text(&mut subscriber), "hello");

    // With the body sent right behind the head, no 100 is needed: the 200 is the first answer.
    let mut stream = connect(server.addr);
    let mut request = expecting_head("/publish?topic=news", &auth, 5).into_bytes();
    request.extend_from_slice(b"world");
    stream.write_all(&request).unwrap();
    let (status, head) = read_response_head(&mut stream);
    assert_eq!(status, 200, "{head}");
    assert_eq!(read_text(&mut subscriber), "world");
}

#[test]
fn a_refused_head_is_answered_without_waiting_for_its_body() {
    let server = start();
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let wrong = "Authorization: Bearer wrong\r\n";
    let cases: [(&str, &str, usize, u16, &str); 4] = [
        ("/publish?topic=news", "", 10, 401, "unauthorized"),
        ("/publish?topic=news", wrong, 10, 401, "unauthorized"),
        ("/publish?topic=news", &auth, 1 << 20, 413, "too_large"),
        ("/publish?topic=a%20b", &auth, 10, 400, "invalid_topic"),
    ];
    for (path, lines, length, want, reason) in cases {
        let before = refusals(server.addr, reason);
        let started = Instant::now();
        let (mut stream, status, head) =
            head_alone(server.addr, &expecting_head(path, lines, length));
        assert_eq!(status, want, "{path} {lines:?}: {head}");
        assert!(head.contains("Connection: close"), "{head}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // The answer's body, then the end of the connection (no body was ever sent).
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("closed by the server");
        assert_eq!(refusals(server.addr, reason), before + 1, "{reason}");
    }
}

#[test]
fn another_expectation_is_417_on_publish_and_on_an_upgrade() {
    let server = start();
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let head = format!(
        "POST /publish?topic=news HTTP/1.1\r\nHost: x\r\n{auth}Expect: 200-ok\r\nContent-Length: 5\r\n\r\n"
    );
    let (_stream, status, text) = head_alone(server.addr, &head);
    assert_eq!(status, 417, "{text}");
    assert!(text.contains("Expectation Failed"), "{text}");
    assert_eq!(refusals(server.addr, "expectation"), 1);

    // A WebSocket upgrade: 100-continue is ignored (the 101 comes first), another expectation is 417.
    let upgrade = upgrade_request("/?topic=news");
    let with_expect =
        |value: &str| upgrade.replacen("\r\n", &format!("\r\nExpect: {value}\r\n"), 1);
    let mut ws = connect(server.addr);
    let (status, head) = http_exchange(&mut ws, &with_expect("100-continue"));
    assert_eq!(status, 101, "{head}");
    send_text(&mut ws, r#"{"op":"sub","topic":"t"}"#);
    assert_eq!(read_text(&mut ws), r#"{"ok":"sub","topic":"t"}"#);
    let mut refused = connect(server.addr);
    let (status, head) = http_exchange(&mut refused, &with_expect("200-ok"));
    assert_eq!(status, 417, "{head}");
    let failures = metrics_text(server.addr)
        .lines()
        .filter(|l| {
            l.starts_with("ringws_handshake_failures_total{")
                && l.contains("reason=\"expectation\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum::<u64>();
    assert_eq!(failures, 1);
}

/// Runs curl posting `body` (from its stdin) to `/publish?topic=news` with `extra` arguments; returns
/// its `--verbose` trace, after checking that it got a 200 within 900 ms (curl waits a second for a 100
/// that does not come before sending the body anyway).
fn curl_publish(addr: SocketAddr, body: &[u8], extra: &[&str]) -> String {
    let started = Instant::now();
    let mut child = Command::new("curl")
        .args(["--silent", "--show-error", "--verbose", "--max-time", "5"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--header", "Content-Type: text/plain"])
        .args(extra)
        .args(["--data-binary", "@-"])
        .args(["--write-out", "%{http_code}"])
        .arg(format!("http://{addr}/publish?topic=news"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().expect("curl ends");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.ends_with("200"), "{stdout}");
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
    stderr
}

/// curl sends `Expect: 100-continue` on its own for bodies over 1 MiB (over 1 KiB before 7.73), or when
/// told to; it waits up to a second for the 100 before sending the body: with the 100 answered, the
/// publish is done well within that second, and curl's trace shows the 100.
#[test]
fn curl_publishes_after_100_continue() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!(
            "curl is not installed: skipping the curl check (the raw-TCP tests cover 100-continue)"
        );
        return;
    }
    let server = start_with(&["--max-message-size", "2MiB", "--max-publish-body", "2MiB"]);
    let mut subscriber = ws_at(server.addr, "/?topic=news");
    wait_open(|| metrics_text(server.addr), 1, Duration::from_secs(5));
    for (body, extra) in [
        (vec![b'c'; 4096], &["--header", "Expect: 100-continue"][..]),
        (vec![b'd'; 1536 << 10], &[][..]),
    ] {
        let trace = curl_publish(server.addr, &body, extra);
        assert!(trace.contains("> Expect: 100-continue"), "{trace}");
        assert!(trace.contains("< HTTP/1.1 100 Continue"), "{trace}");
        let (_, opcode, payload) = read_server_frame(&mut subscriber).expect("the publish");
        assert_eq!(opcode, 0x1);
        assert!(
            payload == body,
            "{} bytes delivered of {}",
            payload.len(),
            body.len()
        );
    }
}
