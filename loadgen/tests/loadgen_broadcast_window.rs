//! `ringws-loadgen broadcast --window N` (closed loop): never more than N messages in flight over all
//! publishers, every message counted exactly as with `--rate`; a server that delivers nothing stops the
//! publishers after N messages without them spinning; `--window` and `--rate` exclude each other, and
//! broadcast needs one of them.

mod common;
use common::{loadgen_on, ringws_binary, ServerProcess};
use std::process::Command;

#[test]
fn a_window_bounds_messages_in_flight_and_every_one_is_counted() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "2", "--mode", "broadcast"]);
    let url = server.url();
    // One thread on each engine; two threads share the window through its atomics.
    for (engine, threads) in [("uring", "1"), ("epoll", "1"), ("uring", "2")] {
        let run = loadgen_on(
            engine,
            &[
                "broadcast",
                "--url",
                &url,
                "-c",
                "20",
                "--publishers",
                "2",
                "--window",
                "64",
                "-d",
                "1",
                "-s",
                "64",
                "-t",
                threads,
            ],
        );
        let what = format!("{engine} -t {threads}");
        assert!(
            run.success,
            "{what}: errors reported: {}\n{}",
            run.report["errors"], run.stderr
        );
        let published = run.u64_at("/broadcast/published");
        // Thousands a second here even in a debug build; far fewer on a loaded machine still pass.
        assert!(published >= 200, "{what}: published {published}");
        assert_eq!(run.u64_at("/broadcast/delivered"), published * 20, "{what}");
        assert_eq!(run.u64_at("/broadcast/missing"), 0, "{what}");
        assert_eq!(run.u64_at("/broadcast/duplicates"), 0, "{what}");
        assert_eq!(run.u64_at("/broadcast/out_of_order"), 0, "{what}");
        assert_eq!(run.u64_at("/latency/count"), published * 20, "{what}");
        assert_eq!(run.u64_at("/broadcast/window"), 64, "{what}");
        let max_in_flight = run.u64_at("/broadcast/max_in_flight");
        assert!(
            (1..=64).contains(&max_in_flight),
            "{what}: max_in_flight {max_in_flight}"
        );
        let mode = run.report["mode"].as_str().unwrap();
        assert!(mode.contains("window of 64 messages"), "{what}: {mode}");
        assert!(
            run.stderr.contains(&format!(
                "64 messages, at most {max_in_flight} seen in flight"
            )),
            "{what}: the table shows the window:\n{}",
            run.stderr
        );
    }
}

#[test]
fn a_full_window_stops_the_publishers_without_spinning() {
    // An echo server: publishes come back to their publishers only, no subscriber gets anything, so
    // the first 64 messages stay in flight for the whole run.
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1", "--no-pin"]);
    let url = server.url();
    let run = loadgen_on(
        "uring",
        &[
            "broadcast",
            "--url",
            &url,
            "-c",
            "20",
            "--publishers",
            "2",
            "--window",
            "64",
            "-d",
            "1",
            "-s",
            "64",
            "-t",
            "2",
            "--drain-timeout",
            "0.5",
        ],
    );
    assert!(!run.success, "missing deliveries fail the run");
    assert_eq!(run.u64_at("/broadcast/published"), 64, "{}", run.report);
    assert_eq!(run.u64_at("/broadcast/max_in_flight"), 64);
    assert_eq!(run.u64_at("/broadcast/missing"), 64 * 20);
    assert_eq!(run.counter("publisher_echoes"), 64);
    // Waiting publishers cost wake-ups, not a core: a spinning worker would burn the whole second.
    let cpu = run.report["cpu"]["user_s"].as_f64().unwrap()
        + run.report["cpu"]["sys_s"].as_f64().unwrap();
    assert!(cpu < 0.25, "load generator CPU {cpu:.3} s for a 1 s run");
}

#[test]
fn broadcast_takes_either_a_rate_or_a_window() {
    let refusals: [(&[&str], &str); 5] = [
        (
            &["broadcast", "--window", "64", "--rate", "100"],
            "broadcast: --rate (open loop) and --window (closed loop) exclude each other; give one",
        ),
        (
            &["broadcast", "-c", "5"],
            "broadcast needs --rate R (publishes per second over all publishers, open loop) or \
             --window N (messages in flight, closed loop)",
        ),
        (
            &["broadcast", "--window", "0"],
            "--window must be at least 1",
        ),
        (
            &["echo", "--window", "8"],
            "--window applies to broadcast only",
        ),
        (
            &["broadcast", "--window", "8", "--procs", "2"],
            "--window counts the messages in flight in one process",
        ),
    ];
    for (args, message) in refusals {
        let out = Command::new(env!("CARGO_BIN_EXE_ringws-loadgen"))
            .args(args)
            .output()
            .expect("run ringws-loadgen");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("ringws-loadgen: {message}")),
            "{args:?}: {stderr}"
        );
    }
}
