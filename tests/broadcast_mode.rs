//! `--mode broadcast`: every message reaches every client on both workers, in order, from a frame encoded
//! once; a slow consumer is closed with 1008 (or skipped) without holding up the others.

mod common;

use common::*;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Blocks until every reader has received message `sent - ahead` (so the writer is at most `ahead`
/// messages ahead of the slowest reader).
fn wait_for_readers(progress: &[std::sync::Arc<AtomicUsize>], sent: usize, ahead: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress
        .iter()
        .any(|p| p.load(Ordering::Acquire) + ahead < sent + 1)
    {
        assert!(Instant::now() < deadline, "a reader stopped receiving");
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[test]
fn every_client_on_both_workers_gets_every_message_in_order() {
    let server = ServerProcess::start(ringws_binary(), &["--mode", "broadcast", "--workers", "2"]);
    let mut clients: Vec<_> = (0..40).map(|_| raw_websocket(server.addr)).collect();
    // Wait until all 40 are open on the server (the metrics connection itself is not a WebSocket).
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_sum(server.addr, "ringws_websockets_open") < 40 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    const M: usize = 50;
    for i in 0..M {
        clients[0]
            .write_all(&client_frame(
                true,
                0,
                0x1,
                format!("msg {i}").as_bytes(),
                true,
            ))
            .unwrap();
    }
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..M {
            assert_eq!(
                read_server_frame(client),
                Some((true, 0x1, format!("msg {i}").into_bytes())),
                "client {c} message {i}"
            );
        }
    }
    // One encoded frame per message, however many recipients and workers.
    assert_eq!(
        metric_sum(server.addr, "ringws_frames_encoded_total"),
        M as u64
    );
    assert_eq!(
        metric_sum(server.addr, "ringws_deliveries_total"),
        (M * 40) as u64
    );
    let handoffs = metric_sum(server.addr, "ringws_handoffs_total");
    assert!((1..=M as u64).contains(&handoffs), "handoffs {handoffs}");
}

#[test]
fn sender_can_be_excluded() {
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
    let mut a = raw_websocket(server.addr);
    let mut b = raw_websocket(server.addr);
    a.write_all(&client_frame(true, 0, 0x1, b"from a", true))
        .unwrap();
    assert_eq!(
        read_server_frame(&mut b),
        Some((true, 0x1, b"from a".to_vec()))
    );
    b.write_all(&client_frame(true, 0, 0x1, b"from b", true))
        .unwrap();
    // a gets b's message and never its own.
    assert_eq!(
        read_server_frame(&mut a),
        Some((true, 0x1, b"from b".to_vec()))
    );
}

#[test]
fn slow_consumer_is_closed_with_1008_and_others_get_everything() {
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "broadcast",
            "--workers",
            "2",
            "--broadcast-include-sender",
            "false",
            "--max-backpressure",
            "256KiB",
            "--close-timeout",
            "500ms",
        ],
    );
    // The slow clients shrink their receive buffer and never read.
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let s = raw_websocket(server.addr);
            set_small_rcvbuf(&s);
            s
        })
        .collect();
    const M: usize = 4000;
    const SIZE: usize = 4096; // 16 MiB in total: far over what the slow clients' sockets and cap hold

    // Each fast client reports its progress; the writer never runs more than 32 messages (128 KiB)
    // ahead of the slowest of them, so their queues stay under the cap however loaded the machine is.
    let progress: Vec<_> = (0..2)
        .map(|_| std::sync::Arc::new(AtomicUsize::new(0)))
        .collect();
    let fast: Vec<_> = progress
        .iter()
        .map(|done| {
            let done = done.clone();
            let mut client = raw_websocket(server.addr);
            std::thread::spawn(move || {
                for i in 0..M {
                    let (_, opcode, data) = read_server_frame(&mut client)
                        .unwrap_or_else(|| panic!("fast client lost at {i}"));
                    assert_eq!(
                        (opcode, data.len(), data[..8].to_vec()),
                        (0x2, SIZE, (i as u64).to_be_bytes().to_vec())
                    );
                    done.store(i + 1, Ordering::Release);
                }
            })
        })
        .collect();
    let mut writer = raw_websocket(server.addr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_sum(server.addr, "ringws_websockets_open") < 8 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..M {
        let mut payload = vec![0u8; SIZE];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        writer
            .write_all(&client_frame(true, 0, 0x2, &payload, true))
            .unwrap();
        wait_for_readers(&progress, i, 32);
    }
    for f in fast {
        f.join()
            .expect("fast clients received everything, in order");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_sum(server.addr, "ringws_slow_consumer_closes_total") < 5 {
        assert!(Instant::now() < deadline, "slow consumers were not closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        metric_sum(server.addr, "ringws_slow_consumer_closes_total"),
        5
    );
    drop(slow);
}

fn set_small_rcvbuf(stream: &std::net::TcpStream) {
    socket2::SockRef::from(stream)
        .set_recv_buffer_size(4096)
        .expect("SO_RCVBUF");
}

#[test]
fn hundred_subscribers_that_never_read_keep_server_memory_bounded() {
    const CAP_KIB: u64 = 256;
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "broadcast",
            "--workers",
            "2",
            "--broadcast-include-sender",
            "false",
            "--max-backpressure",
            "256KiB",
            "--close-timeout",
            "300ms",
        ],
    );
    let slow: Vec<_> = (0..100)
        .map(|_| {
            let s = raw_websocket(server.addr);
            set_small_rcvbuf(&s);
            s
        })
        .collect();
    const M: usize = 12_000;
    const SIZE: usize = 4096; // 48 MiB published: far more than the caps allow to pile up
    let progress = vec![std::sync::Arc::new(AtomicUsize::new(0))];
    let done = progress[0].clone();
    let mut fast = raw_websocket(server.addr);
    let reader = std::thread::spawn(move || {
        for i in 0..M {
            let (_, _, data) =
                read_server_frame(&mut fast).unwrap_or_else(|| panic!("fast client lost at {i}"));
            assert_eq!(data[..8], (i as u64).to_be_bytes());
            done.store(i + 1, Ordering::Release);
        }
    });
    let mut writer = raw_websocket(server.addr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_sum(server.addr, "ringws_websockets_open") < 102 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let rss_before = rss_kib(server.pid());
    let mut rss_peak = rss_before;
    for i in 0..M {
        let mut payload = vec![0u8; SIZE];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        writer
            .write_all(&client_frame(true, 0, 0x2, &payload, true))
            .unwrap();
        wait_for_readers(&progress, i, 32);
        if i % 1000 == 0 {
            rss_peak = rss_peak.max(rss_kib(server.pid()));
        }
    }
    reader
        .join()
        .expect("the fast subscriber received everything, in order");
    rss_peak = rss_peak.max(rss_kib(server.pid()));
    println!("server RSS: {rss_before} KiB before, {rss_peak} KiB peak");
    // Bounded by the caps (100 x 256 KiB of queued references at most) plus slack, not by the 48 MiB sent.
    let bound = 100 * CAP_KIB + 8 * 1024;
    assert!(
        rss_peak - rss_before < bound,
        "server RSS grew by {} KiB (bound {bound} KiB)",
        rss_peak - rss_before
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_sum(server.addr, "ringws_slow_consumer_closes_total") < 100 {
        assert!(
            Instant::now() < deadline,
            "slow subscribers were not all closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(slow);
}

/// Idle connections own no output buffers after activity either: after one broadcast to 3000 idle
/// connections has drained, the worker's pools are cut back and their memory handed back, so the
/// server's RSS returns close to its idle level (each drained queue with its iovec array would hold
/// over 1 KiB, about 3.5 MiB for these connections).
#[test]
fn memory_is_released_after_a_broadcast_to_idle_connections() {
    const N: usize = 3000;
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "broadcast",
            "--workers",
            "1",
            "--idle-timeout",
            "0",
        ],
    );
    let mut conns: Vec<_> = (0..N).map(|_| raw_websocket(server.addr)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(server.addr, "ringws_websockets_open") < N as u64 {
        assert!(Instant::now() < deadline, "connections did not open");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = rss_kib(server.pid());
    conns[0]
        .write_all(&client_frame(true, 0, 0x2, &[7u8; 100], true))
        .unwrap();
    for (i, c) in conns.iter_mut().enumerate() {
        let (_, opcode, data) =
            read_server_frame(c).unwrap_or_else(|| panic!("connection {i} got no broadcast"));
        assert_eq!((opcode, data.len()), (0x2, 100));
    }
    // The pools are cut back after about a second without output.
    std::thread::sleep(Duration::from_millis(2500));
    let rss_after = rss_kib(server.pid());
    println!("server RSS: {rss_idle} KiB idle, {rss_after} KiB after the broadcast");
    let grown = rss_after.saturating_sub(rss_idle);
    assert!(
        grown < 1024,
        "server RSS grew by {grown} KiB after one broadcast to {N} idle connections"
    );
}
