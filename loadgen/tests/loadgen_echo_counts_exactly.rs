//! `ringws-loadgen echo` reports exactly the messages it sent and got back, with zero errors, against the
//! real server (closed and open loop) and against an independent tungstenite server, on both I/O engines.

mod common;
use common::{loadgen_on, ringws_binary, tungstenite_echo, ServerProcess, Tamper, ENGINES};

#[test]
fn closed_loop_against_ringws_counts_every_message() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "2"]);
    let url = server.url();
    for engine in ENGINES {
        let run = loadgen_on(
            engine,
            &[
                "echo", "--url", &url, "-c", "20", "-m", "50", "--depth", "4", "-d", "20",
            ],
        );
        assert!(run.success, "{engine}: errors: {}", run.report["errors"]);
        assert_eq!(run.u64_at("/sent"), 20 * 50, "{engine}");
        assert_eq!(run.u64_at("/received"), 20 * 50, "{engine}");
        assert_eq!(run.u64_at("/errors_total"), 0, "{engine}");
        assert_eq!(run.u64_at("/latency/count"), 20 * 50, "{engine}");
    }
}

#[test]
fn open_loop_against_ringws_counts_every_message() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let url = server.url();
    for engine in ENGINES {
        let run = loadgen_on(
            engine,
            &[
                "echo", "--url", &url, "-c", "10", "-r", "2000", "-d", "1", "-s", "1024", "--kind",
                "text",
            ],
        );
        assert!(run.success, "{engine}: errors: {}", run.report["errors"]);
        let sent = run.u64_at("/sent");
        // About 2000 messages in one second (the schedule starts at a random offset per connection; the
        // end of the second is seen a few milliseconds late on a loaded machine).
        assert!((1600..=2400).contains(&sent), "{engine}: sent {sent}");
        assert_eq!(run.u64_at("/received"), sent, "{engine}");
        assert_eq!(run.counter("lost_in_flight"), 0, "{engine}");
    }
}

#[test]
fn large_messages_against_ringws_are_checked_whole() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let url = server.url();
    for engine in ENGINES {
        let run = loadgen_on(
            engine,
            &["echo", "--url", &url, "-c", "2", "-m", "20", "-s", "300000"],
        );
        assert!(run.success, "{engine}: errors: {}", run.report["errors"]);
        assert_eq!(run.u64_at("/received"), 40, "{engine}");
    }
}

#[test]
fn closed_loop_against_tungstenite_counts_every_message() {
    for engine in ENGINES {
        let url = tungstenite_echo(Tamper::None);
        let run = loadgen_on(
            engine,
            &[
                "echo", "--url", &url, "-c", "5", "-m", "40", "--kind", "text", "-s", "20",
            ],
        );
        assert!(run.success, "{engine}: errors: {}", run.report["errors"]);
        assert_eq!(run.u64_at("/sent"), 200, "{engine}");
        assert_eq!(run.u64_at("/received"), 200, "{engine}");
    }
}
