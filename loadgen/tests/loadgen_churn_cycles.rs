//! `ringws-loadgen churn` completes connect / echo / close cycles at the requested rate and counts them,
//! on both I/O engines, and many cycles leave no descriptor or memory behind.

mod common;
use common::{loadgen_on, loadgen_sampled, ringws_binary, ServerProcess, ENGINES};
use std::time::Duration;

#[test]
fn churn_completes_cycles_without_errors() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let url = server.url();
    for engine in ENGINES {
        let run = loadgen_on(
            engine,
            &[
                "churn", "--url", &url, "-c", "10", "-r", "200", "-m", "3", "-d", "1",
            ],
        );
        assert!(run.success, "{engine}: errors: {}", run.report["errors"]);
        let cycles = run.counter("churn_cycles");
        // 200 cycles are scheduled; a loaded machine may finish fewer (behind schedule), never more. What
        // is tested is that cycles complete and are counted exactly: at least one per slot (a full test
        // run beside other work on two cores was seen at 16-51).
        assert!((10..=210).contains(&cycles), "{engine}: cycles {cycles}");
        assert_eq!(run.u64_at("/received"), run.u64_at("/sent"), "{engine}");
        assert_eq!(run.u64_at("/received"), cycles * 3, "{engine}");
    }
}

#[test]
fn many_churn_cycles_leak_no_descriptors_or_memory() {
    let server = ServerProcess::start(ringws_binary(), &["--workers", "1"]);
    let url = server.url();
    for engine in ENGINES {
        let (run, samples) = loadgen_sampled(
            engine,
            &[
                "churn",
                "--url",
                &url,
                "-c",
                "20",
                "-r",
                "800",
                "-d",
                "4",
                "--threads",
                "1",
            ],
            Duration::from_millis(200),
        );
        assert!(run.success, "{engine}: errors: {}", run.report["errors"]);
        let cycles = run.counter("churn_cycles");
        assert!(cycles >= 1000, "{engine}: only {cycles} cycles");
        // Sockets held at once (io_uring's direct descriptors are not in /proc/PID/fd): the 20 slots
        // plus those whose close is still completing.
        let sockets = run.counter("sockets_max");
        assert!(
            (1..=40).contains(&sockets),
            "{engine}: {sockets} sockets at once"
        );
        assert_eq!(run.counter("sockets_left_at_exit"), 0, "{engine}");
        // Samples taken while cycles run (after the first second, before the last half second).
        let during: Vec<_> = samples
            .iter()
            .filter(|s| s.elapsed_s >= 1.0 && s.elapsed_s <= 4.0)
            .collect();
        assert!(during.len() >= 5, "{engine}: too few samples: {samples:?}");
        // Descriptors: 20 slots' sockets at most, plus the process's own (stdio, ring or epoll, threads).
        let max_fds = during.iter().map(|s| s.fds).max().unwrap();
        assert!(max_fds <= 20 + 32, "{engine}: {max_fds} descriptors open");
        // Memory: flat once warm (thousands of cycles must not each leave something behind).
        let first = during.first().unwrap().rss_kib;
        let last = during.last().unwrap().rss_kib;
        assert!(
            last <= first + 2048,
            "{engine}: resident memory grew from {first} KiB to {last} KiB: {samples:?}"
        );
    }
}
