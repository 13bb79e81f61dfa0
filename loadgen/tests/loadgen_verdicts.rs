//! The load generator's verdicts can be trusted: a failed `connect --verify-broadcast` check is an error
//! in the JSON, the table and the exit status, and connections the server closed show its close codes
//! (a 1009 as such, not only as `closed_by_server`). The engine is described once however many workers
//! share it, and "1 publisher" is singular.

mod common;
use common::{loadgen_on, ringws_binary, ServerProcess};

#[test]
fn a_failed_broadcast_check_is_an_error() {
    // An echo server: the check message comes back to its sender only.
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1", "--no-pin"]);
    let url = server.url();
    let run = loadgen_on(
        "uring",
        &[
            "connect",
            "--url",
            &url,
            "-c",
            "5",
            "--hold",
            "0.2",
            "--verify-broadcast",
            "--drain-timeout",
            "0.5",
            "-t",
            "2",
        ],
    );
    let engine = run.report["engine"].as_str().unwrap();
    assert!(
        engine.matches("io_uring").count() == 1,
        "two workers on one engine: one description, {engine}"
    );
    assert_eq!(run.report["connect"]["verify_ok"], false, "{}", run.report);
    assert!(!run.success, "a failed check exits non-zero");
    assert_eq!(run.u64_at("/errors/broadcast_check_missing"), 4);
    assert_eq!(run.u64_at("/errors_total"), 4);
    assert!(run.stderr.contains("FAILED"), "{}", run.stderr);
    assert!(
        run.stderr.contains("broadcast_check_missing"),
        "the table lists the error: {}",
        run.stderr
    );
}

#[test]
fn server_close_codes_are_reported() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "1", "--no-pin", "--max-message-size", "1KiB"],
    );
    let url = server.url();
    let run = loadgen_on(
        "uring",
        &[
            "echo", "--url", &url, "-c", "3", "-s", "2048", "-m", "1", "-d", "5",
        ],
    );
    assert!(!run.success);
    assert_eq!(run.counter("closed_by_server"), 3, "{}", run.report);
    assert_eq!(run.counter("server_close_1009"), 3, "{}", run.report);
    assert!(
        run.stderr.contains("server close codes") && run.stderr.contains("3 x 1009"),
        "{}",
        run.stderr
    );
}

#[test]
fn one_publisher_is_singular() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "1", "--no-pin", "--mode", "broadcast"],
    );
    let url = server.url();
    let run = loadgen_on(
        "uring",
        &[
            "broadcast",
            "--url",
            &url,
            "-c",
            "2",
            "-d",
            "0.5",
            "--size",
            "64",
            "-r",
            "1000",
        ],
    );
    assert!(run.success, "{}", run.report["errors"]);
    let mode = run.report["mode"].as_str().unwrap();
    assert!(mode.starts_with("1 publisher at "), "{mode}");
}
