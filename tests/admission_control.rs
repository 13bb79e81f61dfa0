//! A worker whose connection table is full refuses new clients cleanly (HTTP 503, then close) and
//! serves again once slots free; `--max-connections` caps upgrades over all workers with 503.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn full_table_refuses_with_503_and_recovers() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "1", "--max-connections-per-worker", "8"],
    );
    let mut held: Vec<_> = (0..8).map(|_| ws_client(server.addr)).collect();
    // The 9th connection is answered 503 from the table's reserve.
    let mut extra = connect(server.addr);
    let (status, head) = http_exchange(&mut extra, &upgrade_request("/"));
    assert_eq!(status, 503, "{head}");
    // The answer's body, then the server closes the connection.
    assert_eq!(read_to_end(&mut extra), b"server at capacity\n");
    // Free one slot: a new client is served again.
    let mut gone = held.pop().unwrap();
    gone.close(None).unwrap();
    while gone.read().is_ok() {}
    drop(gone);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect(server.addr);
        let (status, _) = http_exchange(&mut s, &upgrade_request("/"));
        if status == 101 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The held ones still work.
    for ws in &mut held {
        ws.send(tungstenite::Message::text("ok")).unwrap();
        assert_eq!(ws.read().unwrap(), tungstenite::Message::text("ok"));
    }
}

#[test]
fn max_connections_caps_upgrades_over_all_workers() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "2", "--max-connections", "5"],
    );
    let _held: Vec<_> = (0..5).map(|_| ws_client(server.addr)).collect();
    let mut extra = connect(server.addr);
    let (status, head) = http_exchange(&mut extra, &upgrade_request("/"));
    assert_eq!(status, 503, "{head}");
    // Plain HTTP still works.
    let mut h = connect(server.addr);
    let (status, _) = http_exchange(&mut h, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
}

#[test]
fn exhausted_reserve_stops_accepting_without_spinning_and_resumes() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "1", "--max-connections-per-worker", "8"],
    );
    let mut held: Vec<_> = (0..8).map(|_| ws_client(server.addr)).collect();
    // Fill the reserve (4 slots for this size) with refused connections we keep open.
    let refused: Vec<_> = (0..4)
        .map(|_| {
            let mut s = connect(server.addr);
            let (status, _) = http_exchange(&mut s, &upgrade_request("/"));
            assert_eq!(status, 503);
            s
        })
        .collect();
    // The table is full: the next client waits in the listen backlog, unanswered.
    let mut waiting = connect(server.addr);
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    std::io::Write::write_all(&mut waiting, upgrade_request("/").as_bytes()).unwrap();
    let mut byte = [0u8; 1];
    let early = std::io::Read::read(&mut waiting, &mut byte);
    assert!(
        early.is_err(),
        "expected no answer while the table is full, got {early:?}"
    );
    // The server stays responsive to its open connections meanwhile.
    held[0].send(tungstenite::Message::text("ping")).unwrap();
    assert_eq!(held[0].read().unwrap(), tungstenite::Message::text("ping"));
    // Free a slot: the waiting client is accepted and served.
    let mut gone = held.pop().unwrap();
    gone.close(None).unwrap();
    while gone.read().is_ok() {}
    drop(gone);
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (status, head) = read_response_head(&mut waiting);
    assert_eq!(status, 101, "{head}");
    drop(refused);
}
