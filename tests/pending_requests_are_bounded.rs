//! HTTP requests not yet complete cannot pin memory: what a worker holds for them (heads spanning
//! receives, `POST /publish` bodies still arriving, counted by capacity in `ringws_request_memory_bytes`)
//! stays under `--max-pending-request-memory`. The request that would pass it is answered 503 with
//! `Retry-After` and closed, counted as `ringws_rejected_total{reason="request_memory"}`, while the requests
//! already held complete and an open WebSocket is served; the memory comes back when requests complete or
//! hit the handshake timeout (which runs from the accept, so a body trickled byte by byte does not extend
//! it), and an open WebSocket holds none.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "budget-token";
const KIB: u64 = 1024;

/// `ringws serve --mode pubsub --workers 1` on an ephemeral loopback port with the publish token set and
/// `args` added.
fn start(args: &[&str]) -> ServerProcess {
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

/// The head of an authorized publish on `topic` announcing a body of `length` bytes.
fn publish_head(topic: &str, length: usize) -> String {
    format!(
        "POST /publish?topic={topic} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

fn held(addr: SocketAddr) -> u64 {
    metric_sum(addr, "ringws_request_memory_bytes")
}

fn refused(addr: SocketAddr) -> u64 {
    metrics_text(addr)
        .lines()
        .filter(|l| {
            l.starts_with("ringws_rejected_total{") && l.contains("reason=\"request_memory\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// Polls `/metrics` until `done` holds for it (every 10 ms); panics after 5 s.
fn wait_for(addr: SocketAddr, what: &str, mut done: impl FnMut(u64, u64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (h, r) = (held(addr), refused(addr));
        if done(h, r) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: held {h} bytes, {r} refused"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether nothing arrives on `stream` within `wait` (the server is still waiting for the request).
fn silent_for(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    let silent = matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    silent
}

#[test]
fn partial_publish_bodies_stay_under_the_budget_and_the_rest_get_503() {
    const BODY: usize = 64 * 1024;
    const CLIENTS: usize = 10;
    let server = start(&[
        "--max-publish-body",
        "64KiB",
        "--max-pending-request-memory",
        "256KiB",
    ]);
    let addr = server.addr;
    let mut bystander = ws_at(addr, "/?topic=news");
    wait_open(|| metrics_text(addr), 1, Duration::from_secs(5));
    assert_eq!(held(addr), 0, "an open WebSocket holds no request memory");

    // Each client sends an authorized head and the first KiB of a 64 KiB body, then stalls.
    let mut held_clients = Vec::new();
    let mut refused_clients = 0;
    for i in 0..CLIENTS {
        let mut stream = connect(addr);
        let before = (held(addr), refused(addr));
        let mut request = publish_head("news", BODY).into_bytes();
        request.extend_from_slice(&[b'a'; 1024]);
        stream.write_all(&request).unwrap();
        wait_for(addr, "the request was kept or refused", |h, r| {
            h > before.0 || r > before.1
        });
        if refused(addr) > before.1 {
            let (status, head) = read_response_head(&mut stream);
            assert_eq!(status, 503, "client {i}: {head}");
            assert!(head.contains("Retry-After: 1"), "{head}");
            assert!(head.contains("Connection: close"), "{head}");
            let rest = read_to_end(&mut stream);
            assert!(
                String::from_utf8_lossy(&rest).contains("too many requests in progress"),
                "{rest:?}"
            );
            refused_clients += 1;
        } else {
            held_clients.push(stream);
        }
        assert!(
            held(addr) <= 256 * KIB,
            "client {i}: {} bytes held",
            held(addr)
        );
    }
    // Each kept request holds room for its whole body: 3 fit in 256 KiB, the other 7 were refused.
    assert_eq!(held_clients.len(), 3, "{refused_clients} refused");
    assert_eq!(refused(addr), (CLIENTS - 3) as u64);
    assert!(held(addr) >= 3 * BODY as u64, "{}", held(addr));

    // The held requests are untouched by the refusals: each still waits for its body, and completes.
    for stream in &mut held_clients {
        assert!(silent_for(stream, Duration::from_millis(100)));
    }
    let mut first = held_clients.remove(0);
    first.write_all(&[b'a'; BODY - 1024]).unwrap();
    let (status, head) = read_response_head(&mut first);
    assert_eq!(status, 200, "{head}");
    assert_eq!(read_text(&mut bystander), "a".repeat(BODY));

    // Its memory came back: a new request is kept again.
    wait_for(
        addr,
        "the completed request gave its memory back",
        |h, _| h < 3 * BODY as u64,
    );
    let mut late = connect(addr);
    let refusals = refused(addr);
    late.write_all(publish_head("news", BODY).as_bytes())
        .unwrap();
    assert!(silent_for(&mut late, Duration::from_millis(200)));
    assert_eq!(refused(addr), refusals);

    // The bystander is served throughout, and once every client is gone nothing is held.
    send_text(&mut bystander, r#"{"op":"sub","topic":"other"}"#);
    assert_eq!(read_text(&mut bystander), r#"{"ok":"sub","topic":"other"}"#);
    drop(held_clients);
    drop(late);
    wait_for(addr, "nothing held once every client left", |h, _| h == 0);
}

#[test]
fn split_request_heads_count_against_the_budget_too() {
    // Heads that never end (slowloris with large heads): each keeps what it sent.
    let server = start(&["--max-pending-request-memory", "64KiB"]);
    let addr = server.addr;
    let part = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}", "p".repeat(4000));
    let mut kept = Vec::new();
    for _ in 0..40 {
        let mut stream = connect(addr);
        let before = (held(addr), refused(addr));
        stream.write_all(part.as_bytes()).unwrap();
        wait_for(addr, "the head was kept or refused", |h, r| {
            h > before.0 || r > before.1
        });
        assert!(held(addr) <= 64 * KIB, "{}", held(addr));
        if refused(addr) > before.1 {
            assert_eq!(read_response_head(&mut stream).0, 503);
        }
        kept.push(stream);
    }
    assert!(refused(addr) >= 20, "{} refused", refused(addr));
    // A WebSocket upgrade split across receives is kept, then holds nothing once open.
    drop(kept);
    wait_for(addr, "the heads' memory is back", |h, _| h == 0);
    let mut ws = connect(addr);
    let request = upgrade_request("/");
    let (start, end) = request.split_at(20);
    ws.write_all(start.as_bytes()).unwrap();
    wait_for(addr, "the split head is kept", |h, _| h > 0);
    let (status, head) = http_exchange(&mut ws, end);
    assert_eq!(status, 101, "{head}");
    wait_for(addr, "an open WebSocket holds nothing", |h, _| h == 0);
}

#[test]
fn a_trickled_body_is_cut_at_the_handshake_timeout_and_its_memory_returned() {
    let server = start(&["--handshake-timeout", "1s"]);
    let addr = server.addr;
    let mut stream = connect(addr);
    let started = Instant::now();
    stream
        .write_all(publish_head("news", 1000).as_bytes())
        .unwrap();
    wait_for(addr, "the request is kept", |h, _| h >= 1000);
    // One byte every 100 ms: activity does not extend the deadline, which runs from the accept.
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(4) {
        if stream.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => panic!("an answer to an incomplete request"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "still open after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "closed after {:?}",
        started.elapsed()
    );
    wait_for(addr, "the memory is returned", |h, _| h == 0);
    let timeouts = metrics_text(addr)
        .lines()
        .filter(|l| {
            l.starts_with("ringws_handshake_failures_total{") && l.contains("reason=\"timeout\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum::<u64>();
    assert_eq!(timeouts, 1);
}
