//! Timers: slowloris connections that never finish the handshake are closed at the handshake timeout
//! while other clients keep working; idle connections get a server ping and are dropped if nothing
//! comes back; a live client answering pings stays.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[test]
fn slowloris_is_closed_at_the_handshake_timeout_while_others_work() {
    let server = ServerProcess::start(ringws_binary(), &["--handshake-timeout", "400ms"]);
    let started = Instant::now();
    let mut slow: Vec<_> = (0..50)
        .map(|_| {
            let mut s = connect(server.addr);
            s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: webso")
                .unwrap();
            s
        })
        .collect();
    // A well-behaved client works meanwhile, for longer than the timeout.
    let mut ws = ws_client(server.addr);
    while started.elapsed() < Duration::from_millis(700) {
        ws.send(tungstenite::Message::text("alive")).unwrap();
        assert_eq!(ws.read().unwrap(), tungstenite::Message::text("alive"));
        std::thread::sleep(Duration::from_millis(50));
    }
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("slowloris connection should be closed, got {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "closed too late: {elapsed:?}"
    );
    ws.send(tungstenite::Message::text("still")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("still"));
}

#[test]
fn idle_connection_is_pinged_then_dropped_without_an_answer() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--idle-timeout", "300ms", "--ping-timeout", "300ms"],
    );
    let mut stream = raw_websocket(server.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let started = Instant::now();
    let frame = read_server_frame(&mut stream).expect("a ping");
    assert_eq!(frame.1, 0x9, "expected a ping, got {frame:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "pinged too early"
    );
    // No answer: the server drops the connection.
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to be dropped, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn client_answering_pings_stays_open() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--idle-timeout", "200ms", "--ping-timeout", "200ms"],
    );
    let mut stream = raw_websocket(server.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for _ in 0..4 {
        let (_, opcode, payload) = read_server_frame(&mut stream).expect("a ping");
        assert_eq!(opcode, 0x9);
        stream
            .write_all(&client_frame(true, 0, 0xA, &payload, true))
            .unwrap();
    }
    stream
        .write_all(&client_frame(true, 0, 0x1, b"hello", true))
        .unwrap();
    loop {
        let (_, opcode, payload) = read_server_frame(&mut stream).expect("echo");
        if opcode == 0x1 {
            assert_eq!(payload, b"hello");
            break;
        }
        assert_eq!(opcode, 0x9);
    }
}

#[test]
fn peer_that_never_closes_its_side_is_released_at_the_close_timeout() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "1", "--close-timeout", "300ms"],
    );
    let mut stream = raw_websocket(server.addr);
    // A protocol error makes the server close; we never answer and never close our side.
    stream
        .write_all(&client_frame(true, 0, 0x1, b"x", false))
        .unwrap();
    assert_eq!(expect_close(&mut stream), Some(1002));
    expect_eof(&mut stream);
    // The server lingers (reading and dropping) until the close timeout, then releases the connection:
    // only the metrics request itself remains open.
    let started = Instant::now();
    loop {
        let body = metrics_text(server.addr);
        if body.contains("ringws_connections_open{worker=\"0\"} 1\n") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "connection not released:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "released before the close timeout"
    );
    drop(stream);
}
