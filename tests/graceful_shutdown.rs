//! SIGTERM/SIGINT: every open client receives close 1001, the server waits for the replies and exits 0;
//! new connections are no longer accepted.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

fn shutdown_with(signal: &str) {
    let mut server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "2", "--shutdown-timeout", "3s"],
    );
    let mut clients: Vec<_> = (0..40).map(|_| raw_websocket(server.addr)).collect();
    // Make sure every connection is open on the server (an echo round trip each).
    for c in &mut clients {
        c.write_all(&client_frame(true, 0, 0x2, b"x", true))
            .unwrap();
        assert_eq!(read_server_frame(c), Some((true, 0x2, b"x".to_vec())));
    }
    server.signal(signal);
    for c in &mut clients {
        assert_eq!(expect_close(c), Some(1001));
        c.write_all(&client_frame(true, 0, 0x8, &1001u16.to_be_bytes(), true))
            .unwrap();
        expect_eof(c);
    }
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("server exits after the close replies");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigterm_sends_close_1001_to_every_client_and_exits_zero() {
    shutdown_with("TERM");
}

#[test]
fn sigint_does_the_same() {
    shutdown_with("INT");
}

#[test]
fn clients_that_never_reply_do_not_hold_the_exit_past_the_timeout() {
    let mut server = ServerProcess::start(
        ringws_binary(),
        &["--shutdown-timeout", "500ms", "--close-timeout", "10s"],
    );
    let mut silent: Vec<_> = (0..10).map(|_| raw_websocket(server.addr)).collect();
    for c in &mut silent {
        c.write_all(&client_frame(true, 0, 0x2, b"x", true))
            .unwrap();
        read_server_frame(c).unwrap();
    }
    let started = std::time::Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    for c in &mut silent {
        assert_eq!(expect_close(c), Some(1001));
    }
}
