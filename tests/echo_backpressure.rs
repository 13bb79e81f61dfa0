//! A client that sends without reading gets its reads paused (TCP flow control), not unbounded server
//! memory; it is served again once it reads. A tiny receive buffer ring (running dry, -ENOBUFS) loses
//! no data.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

#[test]
fn client_not_reading_is_paused_and_memory_stays_bounded() {
    let server = ServerProcess::start(
        ringws_binary(),
        &["--workers", "1", "--max-backpressure", "256KiB"],
    );
    let mut stream = raw_websocket(server.addr);
    let rss_before = rss_kib(server.pid());
    let frame = client_frame(true, 0, 0x2, &vec![0xabu8; 64 * 1024], true);
    // Write 64 MiB without reading, from a thread (the writes block once the server stops reading).
    let mut writer = stream.try_clone().unwrap();
    let sent = std::thread::spawn(move || {
        writer
            .set_write_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut sent = 0usize;
        for _ in 0..1024 {
            if writer.write_all(&frame).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let sent = sent.join().unwrap();
    assert!(
        sent < 1024,
        "the server kept reading without bound ({sent} frames of 64 KiB accepted)"
    );
    let rss_after = rss_kib(server.pid());
    assert!(
        rss_after < rss_before + 16 * 1024,
        "server RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Reading resumes the flow: every accepted frame comes back.
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = 0;
    while got < sent {
        let (_, opcode, payload) = read_server_frame(&mut stream).expect("echo after resume");
        assert_eq!((opcode, payload.len()), (0x2, 64 * 1024));
        got += 1;
    }
}

#[test]
fn tiny_buffer_ring_running_dry_loses_no_data() {
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--workers",
            "1",
            "--recv-buffers",
            "2",
            "--recv-buffer-size",
            "4KiB",
        ],
    );
    let addr = server.addr;
    let threads: Vec<_> = (0..20)
        .map(|t| {
            std::thread::spawn(move || {
                let mut s = raw_websocket(addr);
                for round in 0..5u8 {
                    let payload: Vec<u8> = (0..100_000u32).map(|i| (i as u8) ^ round ^ t).collect();
                    s.write_all(&client_frame(true, 0, 0x2, &payload, true))
                        .unwrap();
                    assert_eq!(read_server_frame(&mut s), Some((true, 0x2, payload)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }
    // The ring did run dry (and every byte still arrived).
    let body = metrics_text(addr);
    let line = body
        .lines()
        .find(|l| l.starts_with("ringws_recv_buffers_exhausted_total{worker=\"0\"}"))
        .expect("metric");
    let exhausted: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        exhausted > 0,
        "the buffer ring never ran dry: the test did not exercise -ENOBUFS"
    );
}
