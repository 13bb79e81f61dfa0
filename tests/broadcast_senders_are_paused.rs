//! `--mode broadcast` with default flags (`--sender-budget pause`): a sender whose fanout outruns its
//! readers is paused (its reads stop until the readers' queues drain), so that reading clients are never
//! closed as slow consumers because of it and get every message in order; a non-reading sender of large
//! messages does not get readers closed either. Receivers that do not read at all are marked slow once a
//! pause waited 500 ms for them: the sender goes on and the slow-consumer policy closes them, readers
//! untouched.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const READERS: usize = 8;

/// Opens `READERS` reading clients and the sender, and waits until all are open on the server.
fn open_clients(server: &ServerProcess) -> (Vec<TcpStream>, TcpStream) {
    let readers: Vec<_> = (0..READERS).map(|_| raw_websocket(server.addr)).collect();
    let sender = raw_websocket(server.addr);
    wait_open(
        || metrics_text(server.addr),
        READERS as u64 + 1,
        Duration::from_secs(5),
    );
    (readers, sender)
}

/// A client that never reads, with a small receive buffer so that the server's queue, not the kernel,
/// holds what it does not read.
fn non_reader(server: &ServerProcess) -> TcpStream {
    let stream = raw_websocket(server.addr);
    socket2::SockRef::from(&stream)
        .set_recv_buffer_size(4096)
        .expect("SO_RCVBUF");
    stream
}

/// A reader thread: reads messages numbered `0..` in order (each payload starts with its number as 8
/// big-endian bytes) until `expected` arrived or nothing came for `quiet`; returns how many arrived.
/// Panics on a close frame, a wrong type or a message out of order.
fn spawn_reader(mut stream: TcpStream, expected: u64, quiet: Duration) -> JoinHandle<u64> {
    stream.set_read_timeout(Some(quiet)).unwrap();
    std::thread::spawn(move || {
        let mut next = 0u64;
        while next < expected {
            let Some((fin, opcode, payload)) = read_server_frame(&mut stream) else {
                break;
            };
            assert_ne!(
                opcode, 0x8,
                "reader closed after {next} messages: {payload:?}"
            );
            assert!(fin && opcode == 0x2, "opcode {opcode}");
            let number = u64::from_be_bytes(payload[..8].try_into().unwrap());
            assert_eq!(number, next, "out of order");
            next += 1;
        }
        next
    })
}

/// One binary client frame carrying `number` and `size - 8` filler bytes.
fn numbered_frame(number: u64, size: usize) -> Vec<u8> {
    let mut payload = vec![0x5a; size];
    payload[..8].copy_from_slice(&number.to_be_bytes());
    client_frame(true, 0, 0x2, &payload, true)
}

#[test]
fn a_fast_sender_is_paused_and_readers_get_every_message() {
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "broadcast",
            "--workers",
            "1",
            "--broadcast-include-sender",
            "false",
        ],
    );
    let (readers, mut sender) = open_clients(&server);
    // Paced, the sender's writes may wait for seconds.
    sender
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    const MESSAGES: u64 = 300_000;
    let threads: Vec<_> = readers
        .into_iter()
        .map(|r| spawn_reader(r, MESSAGES, Duration::from_secs(10)))
        .collect();
    // As fast as the socket takes it, in large writes.
    let mut batch = Vec::new();
    for number in 0..MESSAGES {
        batch.extend_from_slice(&numbered_frame(number, 32));
        if batch.len() >= 256 * 1024 {
            sender.write_all(&batch).unwrap();
            batch.clear();
        }
    }
    sender.write_all(&batch).unwrap();
    let results: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    let text = metrics_text(server.addr);
    for (i, result) in results.into_iter().enumerate() {
        let received = result.unwrap_or_else(|_| panic!("reader {i} failed; metrics:\n{text}"));
        assert_eq!(received, MESSAGES, "reader {i}");
    }
    assert_eq!(metric(&text, "ringws_slow_consumer_closes_total"), 0);
    let pauses = metric(&text, "ringws_sender_pauses_total");
    assert!(pauses > 0, "the sender was never paused");
}

#[test]
fn a_non_reading_sender_of_large_messages_gets_no_reader_closed() {
    let server = ServerProcess::start(ringws_binary(), &["--mode", "broadcast", "--workers", "1"]);
    let (readers, mut sender) = open_clients(&server);
    const MESSAGES: u64 = 400;
    let threads: Vec<_> = readers
        .into_iter()
        .map(|r| spawn_reader(r, MESSAGES, Duration::from_secs(2)))
        .collect();
    // The sender never reads: its own copy of each broadcast piles up and, later, its writes block.
    sender
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let started = Instant::now();
    let mut written = 0u64;
    for number in 0..MESSAGES {
        if sender
            .write_all(&numbered_frame(number, 64 * 1024))
            .is_err()
        {
            break;
        }
        written += 1;
    }
    let received: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // No reader saw a close (checked in its thread), and all got the same prefix: nothing skipped for
    // one of them. (The sender itself, never reading, may be closed as a slow consumer.)
    assert!(
        received.iter().all(|&n| n == received[0] && n > 0),
        "received {received:?} of {written} written in {:?}",
        started.elapsed()
    );
    drop(sender);
}

#[test]
fn receivers_that_never_read_are_left_to_the_policy_and_the_sender_goes_on() {
    const SLOW: usize = 5;
    const FAST: usize = 3;
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "broadcast",
            "--workers",
            "1",
            "--broadcast-include-sender",
            "false",
        ],
    );
    // Most receivers never read: they hold the sender back only while the kernel still takes their bytes
    // and for one wait of 500 ms after; then they are slow receivers, left to the policy.
    let slow: Vec<_> = (0..SLOW).map(|_| non_reader(&server)).collect();
    let readers: Vec<_> = (0..FAST).map(|_| raw_websocket(server.addr)).collect();
    let mut sender = raw_websocket(server.addr);
    // Paced, the sender's writes may wait for seconds.
    sender
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    wait_open(
        || metrics_text(server.addr),
        (SLOW + FAST) as u64 + 1,
        Duration::from_secs(5),
    );
    let threads: Vec<_> = readers
        .into_iter()
        .map(|r| spawn_reader(r, u64::MAX, Duration::from_secs(3)))
        .collect();
    let started = Instant::now();
    let mut written = 0u64;
    let mut batch = Vec::new();
    while metric_sum(server.addr, "ringws_slow_consumer_closes_total") < SLOW as u64 {
        // 2 to 6 s here: until the kernel stops taking their bytes (megabytes each, at the readers'
        // pace), then one wait of 500 ms and the time to reach the cap.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the receivers that never read were not closed within 20 s ({written} messages written)"
        );
        batch.clear();
        for _ in 0..4096 {
            batch.extend_from_slice(&numbered_frame(written, 16));
            written += 1;
        }
        sender.write_all(&batch).unwrap();
    }
    let closed_after = started.elapsed();
    let received: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        received.iter().all(|&n| n == written),
        "readers got {received:?} of {written}"
    );
    let text = metrics_text(server.addr);
    assert_eq!(
        metric(&text, "ringws_slow_consumer_closes_total"),
        SLOW as u64,
        "a reader was closed"
    );
    assert!(metric(&text, "ringws_slow_receivers_total") >= SLOW as u64);
    eprintln!(
        "closed after {closed_after:?}, {written} messages, {} pauses",
        metric(&text, "ringws_sender_pauses_total")
    );
    drop(slow);
}
