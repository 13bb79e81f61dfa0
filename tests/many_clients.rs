//! 5000 concurrent clients, all open at once over both workers, each gets its own messages back.

mod common;

use common::*;
use std::io::Write;

#[test]
fn five_thousand_concurrent_clients_echo_correctly() {
    raise_open_file_limit(5000 + 100);
    let server = ServerProcess::start(ringws_binary(), &["--workers", "2"]);
    let addr = server.addr;
    const THREADS: usize = 10;
    const PER_THREAD: usize = 500;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut streams: Vec<_> = (0..PER_THREAD).map(|_| raw_websocket(addr)).collect();
                // Every client of every thread is open before anyone sends.
                barrier.wait();
                for round in 0..2 {
                    for (i, s) in streams.iter_mut().enumerate() {
                        let text = format!("client {t}/{i} round {round}");
                        s.write_all(&client_frame(true, 0, 0x1, text.as_bytes(), true))
                            .unwrap();
                    }
                    for (i, s) in streams.iter_mut().enumerate() {
                        let text = format!("client {t}/{i} round {round}");
                        assert_eq!(read_server_frame(s), Some((true, 0x1, text.into_bytes())));
                    }
                }
                streams.len()
            })
        })
        .collect();
    let total: usize = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .sum();
    assert_eq!(total, THREADS * PER_THREAD);
    // Both workers took a share (SO_REUSEPORT balances).
    let body = metrics_text(addr);
    for worker in 0..2 {
        let line = body
            .lines()
            .find(|l| l.starts_with(&format!("ringws_websockets_total{{worker=\"{worker}\"}}")))
            .expect("websockets_total line");
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 500, "worker {worker} took only {n} connections");
    }
}

/// Raises this process's soft open-file limit to its hard limit; fails clearly if that is below `needed`.
fn raise_open_file_limit(needed: u64) {
    let (soft, hard) = rlimit::Resource::NOFILE
        .get()
        .expect("getrlimit(RLIMIT_NOFILE)");
    if soft < hard {
        rlimit::Resource::NOFILE
            .set(hard, hard)
            .expect("setrlimit(RLIMIT_NOFILE)");
    }
    assert!(
        hard >= needed,
        "this test needs {needed} open files; the hard limit is {hard}"
    );
}
