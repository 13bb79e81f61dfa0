//! Helpers for the load generator's integration tests: run `ringws-loadgen` with `--json -` and parse the
//! report, find the real `ringws` binary (beside the load generator's, same profile) for the shared launcher of
//! `ringws-testkit`, and small tungstenite servers (echo, corrupting echo, broadcast) on threads for
//! behaviour the real server must never show.
#![allow(dead_code)]

use serde_json::Value;
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tungstenite::{Message, WebSocket};

#[allow(unused_imports)] // each test file uses its own part of the kit
pub use ringws_testkit::*;

/// The outcome of one load generator run.
pub struct Run {
    pub success: bool,
    pub report: Value,
    /// The table and any diagnostics (stderr), kept out of the test output.
    pub stderr: String,
}

impl Run {
    pub fn counter(&self, name: &str) -> u64 {
        self.report["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {}", self.report))
    }

    pub fn u64_at(&self, pointer: &str) -> u64 {
        self.report
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no {pointer} in {}", self.report))
    }
}

/// The I/O engines every scenario test runs on.
pub const ENGINES: [&str; 2] = ["uring", "epoll"];

/// Runs `ringws-loadgen <args> --json - -q` (bounded by a 60 s timeout) and parses its report.
pub fn loadgen(args: &[&str]) -> Run {
    run_loadgen(args, &[], None).0
}

/// `loadgen_on`, run under an open-file limit of `nofile` (soft and hard, with util-linux `prlimit`).
pub fn loadgen_limited(engine: &str, nofile: u32, args: &[&str]) -> Run {
    let limit = format!("--nofile={nofile}:{nofile}");
    let mut all = vec![
        "--prlimit-wrapper",
        &limit[..],
        env!("CARGO_BIN_EXE_ringws-loadgen"),
    ];
    all.extend(with_engine(engine, args));
    let run = run_loadgen(&all, &[], None).0;
    check_engine(engine, &run);
    run
}

/// `loadgen` with `--engine engine`; checks that the run really used that engine (no silent fallback).
pub fn loadgen_on(engine: &str, args: &[&str]) -> Run {
    let run = run_loadgen(&with_engine(engine, args), &[], None).0;
    check_engine(engine, &run);
    run
}

fn with_engine<'a>(engine: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--engine", engine]);
    all
}

fn check_engine(engine: &str, run: &Run) {
    let used = run.report["engine"].as_str().unwrap_or_default();
    let expected = if engine == "uring" {
        "io_uring"
    } else {
        engine
    };
    assert!(
        used.starts_with(expected),
        "asked for {engine}, ran on {used:?}\n{}",
        run.stderr
    );
}

/// Resources of a running load generator process, sampled from /proc.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub elapsed_s: f64,
    pub fds: usize,
    pub rss_kib: u64,
}

/// `loadgen_on`, also sampling the process's open descriptors and resident memory every `every`.
pub fn loadgen_sampled(engine: &str, args: &[&str], every: Duration) -> (Run, Vec<Sample>) {
    let (run, samples) = run_loadgen(&with_engine(engine, args), &[], Some(every));
    check_engine(engine, &run);
    (run, samples)
}

/// `loadgen` with extra environment variables.
pub fn loadgen_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_loadgen(args, env, None).0
}

fn sample(pid: u32, started: std::time::Instant) -> Option<Sample> {
    Some(Sample {
        fds: proc::open_fds(pid)?,
        rss_kib: proc::try_rss_kib(pid)?,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

fn run_loadgen(
    args: &[&str],
    env: &[(&str, &str)],
    sample_every: Option<Duration>,
) -> (Run, Vec<Sample>) {
    let started = std::time::Instant::now();
    // `--prlimit-wrapper LIMIT EXE` (test-only marker): run EXE under `prlimit LIMIT`.
    let (program, args): (&str, Vec<&str>) = match args {
        ["--prlimit-wrapper", limit, exe, rest @ ..] => {
            let mut all = vec![*limit, "--", *exe];
            all.extend_from_slice(rest);
            ("prlimit", all)
        }
        _ => (env!("CARGO_BIN_EXE_ringws-loadgen"), args.to_vec()),
    };
    let mut child = Command::new(program)
        .args(&args)
        .args(["--json", "-", "-q"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringws-loadgen");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut text);
        let _ = tx.send(text);
    });
    let mut samples = Vec::new();
    let deadline = started + Duration::from_secs(60);
    let poll = sample_every.unwrap_or(Duration::from_millis(100));
    let text = loop {
        match rx.recv_timeout(poll) {
            Ok(text) => break text,
            Err(mpsc::RecvTimeoutError::Timeout) if std::time::Instant::now() < deadline => {
                if sample_every.is_some() {
                    samples.extend(sample(child.id(), started));
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ringws-loadgen {args:?} did not finish within 60 s");
            }
        }
    };
    let status = child.wait().expect("wait ringws-loadgen");
    let stderr = stderr_reader.join().unwrap_or_default();
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("report of {args:?} is not JSON ({e}): {text}\n{stderr}"));
    (
        Run {
            success: status.success(),
            report,
            stderr,
        },
        samples,
    )
}

/// The `ringws` binary: `RINGWS_BIN` if set, else `ringws` beside this package's own binary, which
/// Cargo put in the target directory of the profile these tests were built with (`target/debug/`,
/// `target/release/`, or under `CARGO_TARGET_DIR` and a `--target` triple), so a `--release` test run
/// starts the release server and never depends on a debug build being there.
pub fn ringws_binary() -> PathBuf {
    let binary: PathBuf = match std::env::var_os("RINGWS_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::path::Path::new(env!("CARGO_BIN_EXE_ringws-loadgen")).with_file_name("ringws"),
    };
    assert!(
        binary.exists(),
        "{} is missing: build the workspace with the same profile first (cargo build --workspace, with \
         --release for a release test run)",
        binary.display()
    );
    binary
}

/// What a test server does to each echoed message (numbered from 0 over the whole server).
#[derive(Clone, Copy)]
pub enum Tamper {
    None,
    /// Flip one payload byte of every `n`th message.
    FlipByteEvery(u64),
    /// Send every `n`th message back as text instead of binary.
    WrongTypeEvery(u64),
}

/// A tungstenite echo server on a thread (one thread per connection). Returns its ws:// URL.
pub fn tungstenite_echo(tamper: Tamper) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counter = Arc::new(Mutex::new(0u64));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                while let Ok(message) = ws.read() {
                    let message = match message {
                        Message::Binary(_) | Message::Text(_) => {
                            let n = {
                                let mut c = counter.lock().unwrap();
                                *c += 1;
                                *c - 1
                            };
                            tamper_message(message, tamper, n)
                        }
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(message).is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("ws://{addr}/")
}

fn tamper_message(message: Message, tamper: Tamper, n: u64) -> Message {
    match tamper {
        Tamper::FlipByteEvery(every) if n.is_multiple_of(every) => {
            let mut bytes = message.into_data().to_vec();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x01;
            Message::Binary(bytes.into())
        }
        Tamper::WrongTypeEvery(every) if n.is_multiple_of(every) => {
            let bytes = message.into_data().to_vec();
            Message::Text(String::from_utf8(bytes).expect("ASCII payload").into())
        }
        _ => message,
    }
}

/// A tungstenite broadcast server: every message goes to every connection (the sender included), except
/// that every `drop_every`th message (if set) is withheld from the connection accepted first.
pub fn tungstenite_broadcast(drop_every: Option<u64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    type Writers = Arc<Mutex<Vec<(usize, WebSocket<TcpStream>)>>>;
    let writers: Writers = Arc::new(Mutex::new(Vec::new()));
    let published = Arc::new(Mutex::new(0u64));
    std::thread::spawn(move || {
        for (id, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            let Ok(mut reader) = tungstenite::accept(stream) else {
                continue;
            };
            let Ok(write_half) = reader.get_ref().try_clone() else {
                continue;
            };
            let writer =
                WebSocket::from_raw_socket(write_half, tungstenite::protocol::Role::Server, None);
            writers.lock().unwrap().push((id, writer));
            let writers = writers.clone();
            let published = published.clone();
            std::thread::spawn(move || {
                while let Ok(message) = reader.read() {
                    if !(message.is_binary() || message.is_text()) {
                        continue;
                    }
                    let mut all = writers.lock().unwrap();
                    let n = {
                        let mut p = published.lock().unwrap();
                        *p += 1;
                        *p - 1
                    };
                    for (conn, writer) in all.iter_mut() {
                        if *conn == 0 && drop_every.is_some_and(|every| n % every == 0) {
                            continue;
                        }
                        let _ = writer.send(message.clone());
                    }
                }
            });
        }
    });
    format!("ws://{addr}/")
}

/// A tungstenite echo server that, on every connection, echoes `messages` messages, then sends a close
/// frame and drops the connection. Returns its ws:// URL.
pub fn closing_echo_server(messages: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                let mut echoed = 0;
                while echoed < messages {
                    match ws.read() {
                        Ok(m @ (Message::Binary(_) | Message::Text(_))) => {
                            if ws.send(m).is_err() {
                                return;
                            }
                            echoed += 1;
                        }
                        Ok(_) => continue,
                        Err(_) => return,
                    }
                }
                let _ = ws.close(None);
                let _ = ws.flush();
            });
        }
    });
    format!("ws://{addr}/")
}

/// A listening socket that never accepts (backlog 0): past the first connection the kernel drops the
/// SYNs, so connects hang until the client gives up. Keep the listener alive while testing.
pub fn unaccepting_listener() -> (TcpListener, String) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any.into()).expect("bind");
    socket.listen(0).expect("listen");
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr().expect("addr");
    (listener, format!("ws://{addr}/"))
}

/// A server that completes the handshake and then never reads: the client's output backs up.
pub fn stalled_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Ok(ws) = tungstenite::accept(stream) {
                held.push(ws);
            }
        }
    });
    format!("ws://{addr}/")
}
