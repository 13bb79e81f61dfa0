//! Random bytes, before and after the handshake, on many connections at once: every connection gets a
//! specified answer (an HTTP error or a close frame) or is closed, the server stays up, serves others, and
//! releases every connection (no leak).

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_get_answers_and_every_connection_is_released() {
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--workers",
            "2",
            "--close-timeout",
            "500ms",
            "--handshake-timeout",
            "1s",
        ],
    );
    let addr = server.addr;
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                for i in 0..40 {
                    let mut stream = if i % 2 == 0 {
                        connect(addr)
                    } else {
                        raw_websocket(addr)
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(3)))
                        .unwrap();
                    let len = 1 + (rng.next() % 4000) as usize;
                    let garbage = rng.bytes(len);
                    let _ = stream.write_all(&garbage);
                    // Whatever the answer, the server ends the connection within its timeouts.
                    let mut sink = Vec::new();
                    match stream.read_to_end(&mut sink) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                        Err(e) => {
                            panic!("thread {t} connection {i}: not closed by the server: {e}")
                        }
                    }
                }
            })
        })
        .collect();
    // Meanwhile a normal client is served.
    let mut ws = ws_client(addr);
    for i in 0..50 {
        ws.send(tungstenite::Message::text(format!("still fine {i}")))
            .unwrap();
        assert_eq!(
            ws.read().unwrap(),
            tungstenite::Message::text(format!("still fine {i}"))
        );
    }
    for t in threads {
        t.join().expect("garbage thread");
    }
    drop(ws);
    // Every connection is released: only the metrics request itself remains.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = metric_sum(addr, "ringws_connections_open");
        if open == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} connections still held");
        std::thread::sleep(Duration::from_millis(50));
    }
}
