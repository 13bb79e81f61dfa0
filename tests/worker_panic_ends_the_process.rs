//! A worker that ends unexpectedly ends the process: exit status 70 and one error log line naming the
//! worker and the cause. A worker failing during startup makes `Server::start` fail instead.
//!
//! The process test re-runs this test binary as a child (the `CHILD_ENV` variable selects the child's
//! role): the child serves with a handler that panics on the message "die" and prints its address; the
//! parent sends that message and waits for the child's exit.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringws::app::{ConnId, Ctx, Handler};
use ringws::protocol::MessageKind;
use ringws::server::{Server, ServerConfig};
use tungstenite::Message;

const CHILD_ENV: &str = "RINGWS_TEST_PANICKING_SERVER";
const CHILD_TEST: &str = "panicking_server_child";

/// Echoes, and panics on the message "die".
struct DiesOnRequest;

impl Handler for DiesOnRequest {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]) {
        if payload == b"die" {
            panic!("the handler was asked to die");
        }
        ctx.send(conn, kind, payload);
    }
}

fn local_config() -> ServerConfig {
    ServerConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        workers: 2,
        ..ServerConfig::default()
    }
}

/// The child's role (does nothing unless `CHILD_ENV` is set): serve, print the address, and outlive
/// the parent's patience unless the process is ended.
#[test]
fn panicking_server_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let server = Server::start(local_config(), |_| DiesOnRequest).expect("start");
    println!("ADDR {}", server.local_addr());
    std::thread::sleep(Duration::from_secs(30));
    server.shutdown();
    server.join();
}

#[test]
fn a_panicking_worker_ends_the_process_with_status_70_and_a_log_line() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let addr = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("the child ended before printing its address");
        }
        // The harness may print "test NAME ... " on the same line first.
        if let Some(at) = line.find("ADDR ") {
            break line[at + 5..].trim().to_string();
        }
    };

    // A connection that works, then the message that makes its worker panic.
    let stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client::client(format!("ws://{addr}/"), stream).unwrap();
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.send(Message::text("die")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // Stop the child by its own PID before failing.
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child (pid {pid}) still runs 5 s after its worker panicked");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr_reader.join().unwrap();
    assert_eq!(status.code(), Some(70), "exit status; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("ERROR") && line.contains("ended unexpectedly"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line; stderr:\n{stderr}");
    assert!(
        lines[0].contains("worker ") && lines[0].contains("the handler was asked to die"),
        "the line names the worker and the cause: {}",
        lines[0]
    );
}

struct NeverBuilt;

impl Handler for NeverBuilt {
    fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: MessageKind, _: &[u8]) {}
}

#[test]
fn a_worker_failing_during_startup_fails_start_with_the_cause() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = Server::start(local_config(), |index| -> NeverBuilt {
            if index == 1 {
                panic!("no handler for worker 1");
            }
            NeverBuilt
        });
        let _ = tx.send(result);
    });
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("Server::start returns within 10 s when a worker panics during startup");
    let error = match result {
        Ok(server) => {
            server.shutdown();
            server.join();
            panic!("Server::start succeeded with a worker that panicked");
        }
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("worker 1") && error.contains("no handler for worker 1"),
        "the error names the worker and the cause: {error}"
    );
}
