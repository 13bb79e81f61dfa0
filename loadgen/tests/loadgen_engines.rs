//! What the io_uring engine adds: `--engine` parses (and a bad value is a usage error), the fallback to
//! epoll when io_uring cannot be set up (one stderr line, same exact counts), connect timeouts and
//! refused connects, a server that closes mid-stream (the drop counted, the connection reopened), and
//! io_uring's direct descriptors holding more connections than the process's open-file limit.

mod common;
use common::{
    closed_port_url, closing_echo_server, loadgen_env, loadgen_limited, loadgen_on, ringws_binary,
    unaccepting_listener, ServerProcess, ENGINES,
};
use std::process::Command;
use std::time::Instant;

#[test]
fn engine_flag_parses_and_rejects_unknown_engines() {
    let exe = env!("CARGO_BIN_EXE_ringws-loadgen");
    for engine in ENGINES {
        let help = Command::new(exe)
            .args(["echo", "--engine", engine, "--depth", "0"])
            .output()
            .expect("run ringws-loadgen");
        // The engine is accepted; the run is refused for --depth 0 (a usage error after parsing).
        let stderr = String::from_utf8_lossy(&help.stderr);
        assert_eq!(help.status.code(), Some(2), "{engine}: {stderr}");
        assert!(stderr.contains("--depth"), "{engine}: {stderr}");
    }
    let bad = Command::new(exe)
        .args(["echo", "--engine", "kqueue"])
        .output()
        .expect("run ringws-loadgen");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("kqueue"));
}

#[test]
fn without_io_uring_the_run_falls_back_to_epoll_and_says_so_once() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let url = server.url();
    let run = loadgen_env(
        &[
            "echo",
            "--url",
            &url,
            "-c",
            "8",
            "-m",
            "30",
            "--depth",
            "2",
            "--threads",
            "2",
        ],
        &[("RINGWS_LOADGEN_FAIL_URING", "1")],
    );
    assert!(run.success, "errors: {}", run.report["errors"]);
    assert_eq!(run.report["engine"], "epoll");
    assert_eq!(run.u64_at("/received"), 8 * 30);
    let lines: Vec<_> = run
        .stderr
        .lines()
        .filter(|l| l.contains("io_uring unavailable"))
        .collect();
    assert_eq!(lines.len(), 1, "stderr: {}", run.stderr);
    assert!(lines[0].contains("using epoll"), "{}", lines[0]);
}

#[test]
fn connects_that_hang_time_out_and_end_the_ramp() {
    for engine in ENGINES {
        let (_listener, url) = unaccepting_listener();
        let started = Instant::now();
        let run = loadgen_on(
            engine,
            &[
                "echo",
                "--url",
                &url,
                "-c",
                "6",
                "-d",
                "0.2",
                "--connect-timeout",
                "0.5",
                "--ramp-timeout",
                "5",
                "--drain-timeout",
                "0.2",
            ],
        );
        // Each connect either hangs (SYN dropped: accept queue full) or completes without a handshake
        // answer: both are timeouts.
        assert!(!run.success, "{engine}");
        assert_eq!(
            run.counter("connect_timeout"),
            6,
            "{engine}: {}",
            run.report
        );
        assert_eq!(run.counter("connected"), 0, "{engine}");
        assert_eq!(run.u64_at("/ramp/connected"), 0, "{engine}");
        assert!(
            started.elapsed().as_secs_f64() < 8.0,
            "{engine}: took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn refused_connects_with_reconnect_are_retried_and_counted() {
    for engine in ENGINES {
        let url = closed_port_url();
        let run = loadgen_on(
            engine,
            &[
                "echo",
                "--url",
                &url,
                "-c",
                "2",
                "-d",
                "0.3",
                "--reconnect",
                "--ramp-timeout",
                "0.6",
            ],
        );
        assert!(!run.success, "{engine}");
        let refused = run.counter("connect_refused");
        // Two connections, each refused, retried after 50-100 ms, then 100-200 ms, ... until the end.
        assert!(refused >= 4, "{engine}: refused {refused}");
        assert_eq!(run.counter("reconnects"), refused, "{engine}");
        assert_eq!(run.counter("connected"), 0, "{engine}");
    }
}

#[test]
fn a_server_closing_mid_stream_is_counted_and_reconnected() {
    for engine in ENGINES {
        let url = closing_echo_server(25);
        let run = loadgen_on(
            engine,
            &[
                "echo",
                "--url",
                &url,
                "-c",
                "2",
                "--depth",
                "1",
                "-d",
                "1.5",
                "--reconnect",
            ],
        );
        assert!(!run.success, "{engine}: a dropped connection is an error");
        let closed = run.counter("closed_by_server");
        let reconnects = run.counter("reconnects");
        assert!(closed >= 4, "{engine}: closed_by_server {closed}");
        assert!(reconnects >= closed, "{engine}: reconnects {reconnects}");
        // Every connection (first or reopened) got its 25 echoes, all checked, before the server closed it.
        let connected = run.counter("connected");
        assert!(connected >= closed, "{engine}: connected {connected}");
        assert!(
            run.u64_at("/received") >= closed * 25,
            "{engine}: received {}",
            run.u64_at("/received")
        );
        assert_eq!(run.counter("payload_mismatch"), 0, "{engine}");
        // A message the server read but did not answer before closing is lost, never mismatched.
        assert!(run.counter("lost_in_flight") <= closed, "{engine}");
    }
}

#[test]
fn io_uring_holds_more_connections_than_the_open_file_limit() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let url = server.url();
    // Open-file limit 256 for the load generator: 300 connections fit with io_uring (150 per worker
    // thread in each ring's direct-descriptor table), not with epoll (one descriptor each).
    let args = [
        "connect",
        "--url",
        &url,
        "-c",
        "300",
        "--hold",
        "0.3",
        "--threads",
        "2",
    ];
    let run = loadgen_limited("uring", 256, &args);
    assert!(
        run.success,
        "errors: {}\n{}",
        run.report["errors"], run.stderr
    );
    assert_eq!(run.u64_at("/connect/open_after_hold"), 300);
    assert_eq!(run.counter("fd_limit"), 0);
    let mut all = args.to_vec();
    all.extend(["--engine", "epoll", "--json", "-"]);
    let epoll = Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(env!("CARGO_BIN_EXE_ringws-loadgen"))
        .args(&all)
        .output()
        .expect("run prlimit (util-linux)");
    assert_eq!(
        epoll.status.code(),
        Some(2),
        "epoll must refuse 300 connections"
    );
    assert!(String::from_utf8_lossy(&epoll.stderr).contains("--procs 2"));
}

#[test]
fn io_uring_counts_exactly_with_buffers_and_queues_too_small() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let url = server.url();
    // 4 receive buffers and an 8-entry completion queue for 50 connections with 8 messages in flight
    // each: receives stop for want of buffers (re-armed) and completions overflow the queue (kept by the
    // kernel), and still every message is counted once and checked.
    let run = loadgen_env(
        &[
            "echo", "--url", &url, "-c", "50", "-m", "200", "--depth", "8", "-d", "30", "--engine",
            "uring",
        ],
        &[
            ("RINGWS_LOADGEN_URING_BUFFERS", "4"),
            ("RINGWS_LOADGEN_URING_SQ", "4"),
            ("RINGWS_LOADGEN_URING_CQ", "8"),
        ],
    );
    assert!(
        run.success,
        "errors: {}\n{}",
        run.report["errors"], run.stderr
    );
    let engine = run.report["engine"].as_str().unwrap_or_default();
    assert!(engine.contains("cq 8,"), "{engine}");
    assert!(engine.contains(" 4 x 16 KiB"), "{engine}");
    assert_eq!(run.u64_at("/sent"), 50 * 200);
    assert_eq!(run.u64_at("/received"), 50 * 200);
    assert!(
        run.counter("recv_no_buffers") > 0,
        "4 buffers for 50 connections never ran out"
    );
}
