//! `ringws-loadgen connect` opens and holds exactly the requested connections (also split over child
//! processes and source addresses), pings them, and checks that one broadcast reaches every connection, on
//! both I/O engines.

mod common;
use common::{loadgen_on, ringws_binary, ServerProcess, ENGINES};

#[test]
fn connect_reaches_the_target_and_reports_it() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "2"]);
    let url = server.url();
    for engine in ENGINES {
        let run = loadgen_on(
            engine,
            &[
                "connect",
                "--url",
                &url,
                "-c",
                "1000",
                "--hold",
                "0.5",
                "--ping-interval",
                "0.2",
            ],
        );
        assert!(
            run.success,
            "{engine}: errors reported: {}",
            run.report["errors"]
        );
        assert_eq!(run.u64_at("/connect/open_after_hold"), 1000);
        assert_eq!(run.u64_at("/ramp/connected"), 1000);
        assert_eq!(run.report["ramp"]["complete"], true);
        // About two pings per connection are due during the hold; at least one for every other
        // connection even when a loaded machine runs the timers late (seen under 1,000 once).
        assert!(run.counter("pings_sent") >= 500);
        assert_eq!(run.counter("pongs_received"), run.counter("pings_sent"));
    }
}

#[test]
fn child_processes_and_source_addresses_add_up() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "2"]);
    let url = server.url();
    for engine in ENGINES {
        let run = loadgen_on(
            engine,
            &[
                "connect",
                "--url",
                &url,
                "-c",
                "600",
                "--hold",
                "0.3",
                "--procs",
                "3",
                "--source-ips",
                "3",
            ],
        );
        assert!(
            run.success,
            "{engine}: errors reported: {}",
            run.report["errors"]
        );
        assert_eq!(run.u64_at("/connect/open_after_hold"), 600);
        assert_eq!(run.u64_at("/procs"), 3);
    }
}

#[test]
fn one_broadcast_reaches_every_connection() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "2", "--mode", "broadcast"]);
    let url = server.url();
    for engine in ENGINES {
        let run = loadgen_on(
            engine,
            &[
                "connect",
                "--url",
                &url,
                "-c",
                "500",
                "--hold",
                "0.2",
                "--verify-broadcast",
            ],
        );
        assert!(
            run.success,
            "{engine}: errors reported: {}",
            run.report["errors"]
        );
        assert_eq!(run.u64_at("/connect/verify_received"), 500);
        assert_eq!(run.report["connect"]["verify_ok"], true);
    }
}

#[test]
fn an_echo_server_fails_the_broadcast_check() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let url = server.url();
    for engine in ENGINES {
        let run = loadgen_on(
            engine,
            &[
                "connect",
                "--url",
                &url,
                "-c",
                "20",
                "--hold",
                "0.1",
                "--verify-broadcast",
                "--drain-timeout",
                "0.5",
            ],
        );
        assert_eq!(run.u64_at("/connect/verify_received"), 1);
        assert_eq!(run.report["connect"]["verify_ok"], false);
    }
}
