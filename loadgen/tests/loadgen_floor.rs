//! `--floor`: against a raw TCP echo that answers the upgrade and sends back the bytes it received (what
//! `examples/tcp_echo_floor.rs` does through ringws's reactor), every echo is this client's own masked
//! frame; with `--floor` each is read in the server role and counted as an exact echo, without it each is
//! a protocol violation (a client must refuse masked frames), on both I/O engines.

mod common;
use common::{loadgen_on, ENGINES};
use ringws::protocol::handshake::{parse_request, write_101, DEFAULT_MAX_HEADER_BYTES};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// A raw TCP echo on a thread: a 101 for each upgrade request, then every byte back as it came.
fn raw_echo() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || echo_raw(stream));
        }
    });
    url
}

fn echo_raw(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let consumed = loop {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            return;
        }
        head.extend_from_slice(&chunk[..n]);
        if let Ok(Some((request, consumed))) = parse_request(&head, DEFAULT_MAX_HEADER_BYTES) {
            let mut answer = Vec::new();
            write_101(
                &mut answer,
                request.header("sec-websocket-key").unwrap_or_default(),
                None,
            );
            if stream.write_all(&answer).is_err() {
                return;
            }
            break consumed;
        }
    };
    if stream.write_all(&head[consumed..]).is_err() {
        return;
    }
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&chunk[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn raw_echoes_count_as_echoes_only_with_floor() {
    for engine in ENGINES {
        let url = raw_echo();
        for size in ["20", "70000"] {
            let run = loadgen_on(
                engine,
                &[
                    "echo", "--floor", "--url", &url, "-c", "3", "-m", "40", "--depth", "2", "-s",
                    size,
                ],
            );
            assert!(run.success, "{engine} {size}: {}", run.stderr);
            assert_eq!(run.u64_at("/received"), 120, "{engine} {size}");
            assert_eq!(run.u64_at("/errors_total"), 0, "{engine} {size}");
        }
        let run = loadgen_on(
            engine,
            &["echo", "--url", &url, "-c", "3", "-m", "40", "-s", "20"],
        );
        assert!(!run.success, "{engine}: masked echoes without --floor");
        assert_eq!(run.u64_at("/received"), 0, "{engine}");
        assert_eq!(run.counter("protocol_violation"), 3, "{engine}");
    }
}

#[test]
fn floor_is_refused_outside_echo() {
    for args in [
        &["broadcast", "--floor"][..],
        &["echo", "--floor", "--deflate"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringws-loadgen"))
            .args(args)
            .output()
            .expect("run ringws-loadgen");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--floor applies to echo"),
            "{args:?}: {stderr}"
        );
    }
}
