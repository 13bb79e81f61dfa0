//! Open loop against a server that stops reading: the load generator pauses sending once a connection has
//! 4 MiB queued (keeping the schedule's intended times) instead of buffering without bound, and counts
//! every unanswered message as lost.

mod common;
use common::{loadgen_on, stalled_server, ENGINES};

#[test]
fn open_loop_against_a_stalled_server_stops_queueing() {
    for engine in ENGINES {
        let url = stalled_server();
        // Intended: 2000 messages of 64 KiB per second for 2 s = 250 MiB. Queued at most: 4 MiB per connection
        // plus what the kernel's socket buffers took.
        let run = loadgen_on(
            engine,
            &[
                "echo",
                "--url",
                &url,
                "-c",
                "2",
                "-r",
                "2000",
                "-s",
                "65536",
                "-d",
                "2",
                "--drain-timeout",
                "0.5",
            ],
        );
        assert!(!run.success, "{engine}");
        let sent = run.u64_at("/sent");
        assert!(sent > 64, "sent {sent}");
        assert!(sent < 1000, "sent {sent}: output was not bounded");
        assert_eq!(run.u64_at("/received"), 0);
        assert_eq!(run.counter("lost_in_flight"), sent);
    }
}
