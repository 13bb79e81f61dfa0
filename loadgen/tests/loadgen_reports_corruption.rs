//! A server that changes echoed messages makes `ringws-loadgen` report each changed message as an error
//! (and never count it as received), and exit with status 1; refused connects are counted, on both I/O
//! engines.

mod common;
use common::{closed_port_url, loadgen_on, tungstenite_echo, Tamper, ENGINES};

#[test]
fn flipped_bytes_are_counted_as_mismatches() {
    for engine in ENGINES {
        let url = tungstenite_echo(Tamper::FlipByteEvery(5));
        // One connection, so the server's message numbering is the loadgen's: messages 0, 5, ..., 95 are
        // hit.
        let run = loadgen_on(
            engine,
            &["echo", "--url", &url, "-c", "1", "-m", "100", "-s", "64"],
        );
        assert!(!run.success, "{engine}: corruption must fail the run");
        assert_eq!(run.u64_at("/sent"), 100, "{engine}");
        assert_eq!(run.counter("payload_mismatch"), 20, "{engine}");
        assert_eq!(run.u64_at("/received"), 80, "{engine}");
        assert_eq!(run.u64_at("/errors_total"), 20, "{engine}");
    }
}

#[test]
fn wrong_message_type_is_counted() {
    for engine in ENGINES {
        let url = tungstenite_echo(Tamper::WrongTypeEvery(10));
        let run = loadgen_on(
            engine,
            &[
                "echo", "--url", &url, "-c", "1", "-m", "50", "-s", "20", "--kind", "binary",
            ],
        );
        assert!(!run.success, "{engine}");
        assert_eq!(run.counter("wrong_message_type"), 5, "{engine}");
        assert_eq!(run.u64_at("/received"), 45, "{engine}");
    }
}

#[test]
fn nothing_listening_is_a_connect_error_not_a_hang() {
    for engine in ENGINES {
        let url = closed_port_url();
        let run = loadgen_on(
            engine,
            &[
                "echo",
                "--url",
                &url,
                "-c",
                "3",
                "-d",
                "1",
                "--ramp-timeout",
                "2",
            ],
        );
        assert!(!run.success, "{engine}");
        assert_eq!(run.counter("connect_refused"), 3, "{engine}");
        assert_eq!(run.u64_at("/received"), 0, "{engine}");
    }
}
