//! `--mode broadcast`: every message reaches every client on both workers, in order, from a frame encoded
//! once; a slow consumer is closed with 1008 (or skipped) without holding up the others.

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

fn metric_sum(addr: std::net::SocketAddr, name: &str) -> u64 {
    let mut m = connect(addr);
    http_exchange(&mut m, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let body = String::from_utf8(read_to_end(&mut m)).unwrap();
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn every_client_on_both_workers_gets_every_message_in_order() {
    let server = ServerProcess::start(&["--mode", "broadcast", "--workers", "2"]);
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
    let server = ServerProcess::start(&[
        "--mode",
        "broadcast",
        "--workers",
        "1",
        "--broadcast-include-sender",
        "false",
    ]);
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
    let server = ServerProcess::start(&[
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
    ]);
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
    let fast: Vec<_> = (0..2)
        .map(|_| {
            let mut client = raw_websocket(server.addr);
            std::thread::spawn(move || {
                for i in 0..M {
                    let (_, opcode, data) = read_server_frame(&mut client)
                        .unwrap_or_else(|| panic!("fast client lost at {i}"));
                    assert_eq!(
                        (opcode, data.len(), data[..8].to_vec()),
                        (0x2, SIZE, (i as u64).to_be_bytes().to_vec())
                    );
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
        if i % 16 == 15 {
            // Pace the publisher so that readers that do read keep up.
            std::thread::sleep(Duration::from_millis(1));
        }
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
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket fd and a c_int option value of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
