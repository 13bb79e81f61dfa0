//! `--metrics-listen ADDR:PORT`: `/metrics` and `/healthz` on an operators' address of their own. The
//! address (port 0 resolved) is told by one log line on stderr, `metrics listening on IP:PORT` (stdout
//! keeps its one line). There `/metrics` has the workers' counters (a WebSocket echo is counted) and
//! nothing else is served; the WebSocket port answers `/metrics` 404 saying why and still `/healthz`
//! 200. SIGTERM still exits 0. An address already taken stops startup with exit 2 naming the flag and
//! the address.

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// The prefix of the log line that tells the operators' address.
const METRICS_LINE: &str = "metrics listening on ";

/// A server started with `--metrics-listen 127.0.0.1:0`, its stderr kept in a file to read the address.
struct Server {
    process: ServerProcess,
    metrics_addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Server {
    fn start() -> Server {
        let log = std::env::temp_dir().join(format!(
            "ringws-metrics-listen-{}-{}.log",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut command = Command::new(ringws_binary());
        command
            .arg("serve")
            .args(["--bind", "127.0.0.1", "--port", "0", "--workers", "2"])
            .args(["--no-pin", "--metrics-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let process = ServerProcess::from_command(command);
        let deadline = Instant::now() + Duration::from_secs(5);
        let metrics_addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let found = text.lines().find_map(|line| {
                let (_, rest) = line.split_once(METRICS_LINE)?;
                rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
            });
            if let Some(addr) = found {
                break addr;
            }
            assert!(
                Instant::now() < deadline,
                "no `{METRICS_LINE}` line on stderr: {text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Server {
            process,
            metrics_addr,
            log,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `GET path` over plain HTTP: (status, whole response).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = connect(addr);
    let (status, head) = http_exchange(
        &mut stream,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
    );
    let body = String::from_utf8_lossy(&read_to_end(&mut stream)).to_string();
    (status, head + &body)
}

#[test]
fn metrics_are_served_on_the_operators_address_only() {
    let mut server = Server::start();
    let (main, ops) = (server.process.addr, server.metrics_addr);
    assert_ne!(main.port(), ops.port());

    let mut ws = ws_client(main);
    ws.send(Message::text("counted")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("counted"));

    let (status, text) = get(ops, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert_eq!(metric(&text, "ringws_messages_in_total"), 1, "{text}");
    assert_eq!(metric(&text, "ringws_websockets_open"), 1, "{text}");
    assert_eq!(get(ops, "/healthz").0, 200);
    // Only the operators' routes there: no demo page, no publish, no WebSocket.
    assert_eq!(get(ops, "/").0, 404);

    let (status, text) = get(main, "/metrics");
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("--metrics-listen"), "{text}");
    assert!(!text.contains("ringws_"), "{text}");
    assert_eq!(get(main, "/healthz").0, 200);

    drop(ws);
    server.process.signal("TERM");
    let status = server
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_busy_metrics_address_stops_startup_with_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) =
        ServerProcess::start_expect_failure(ringws_binary(), &["--metrics-listen", &addr]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("--metrics-listen {addr}: cannot bind")),
        "{stderr}"
    );
}
