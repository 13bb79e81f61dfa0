//! Deadlines follow the monotonic clock, not the count of tick completions: when a worker's batches run
//! long (here a handler that takes `STALL` per message, standing for a worker busy under load), its tick
//! completes about once per batch, yet a slowloris connection is still cut soon after the handshake
//! timeout instead of after as many batches as the timeout has ticks.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ringws::app::{ConnId, Ctx, Handler};
use ringws::protocol::MessageKind;
use ringws::server::{Server, ServerConfig};
use tungstenite::Message;

/// How long the handler holds the worker per message.
const STALL: Duration = Duration::from_millis(500);

/// Replies to each message after holding the worker for `STALL`.
struct Stalls;

impl Handler for Stalls {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]) {
        std::thread::sleep(STALL);
        ctx.send(conn, kind, payload);
    }
}

#[test]
fn a_slowloris_is_cut_on_time_while_the_worker_runs_long_batches() {
    // 100 ms handshake timeout: a 25 ms tick, 4 ticks to the deadline.
    let config = ServerConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        workers: 1,
        handshake_timeout: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    assert_eq!(config.tick(), Duration::from_millis(25));
    let server = Server::start(config, |_| Stalls).expect("start");
    let addr = server.local_addr();

    // A client keeps the worker busy: one message at a time, each a batch of `STALL`.
    let busy = common::connect(addr);
    let (mut ws, _) = tungstenite::client::client(format!("ws://{addr}/"), busy).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ws.send(Message::text("work")).unwrap();
                assert_eq!(ws.read().unwrap(), Message::text("work"));
            }
            ws
        })
    };
    std::thread::sleep(STALL / 2);

    let started = Instant::now();
    let mut slow = common::connect(addr);
    slow.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: webso")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 256];
    loop {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue, // a response before the close, if any
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the slowloris connection was not closed: {e}"),
        }
    }
    let cut_after = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ws = busy.join().unwrap();
    let _ = ws.close(None);
    while ws.read().is_ok() {}
    drop(ws);
    drop(slow);

    // By the clock: accepted at the end of the batch running when it connected, cut at the end of the
    // next one (the first tick after the deadline): under 3 batches. Counting tick completions it would
    // take one batch per tick, 4 more batches after the accept: 2.5 s or more.
    assert!(
        cut_after < STALL * 3,
        "the slowloris was cut after {cut_after:?}, with batches of {STALL:?}"
    );
    server.shutdown();
    server.join();
}
