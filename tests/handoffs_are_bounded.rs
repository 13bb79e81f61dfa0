//! Cross-worker handoffs are bounded and never lose a message silently. With a small inbox, a flood of
//! publishes from clients on both workers overflows the receiving worker's inbox: every message either
//! reaches each worker's handler or is counted in `ringws_handoff_drops_total` for that worker. With a
//! large inbox and a worker slowed by its handler, a flood is taken a batch at a time, so another
//! connection's echo is answered between batches instead of after the whole flood.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringws::app::{ConnId, Ctx, Handler};
use ringws::protocol::MessageKind;
use ringws::server::{Server, ServerConfig, ServerHandle, SharedMessage};
use tungstenite::Message;

const TOPIC: &str = "flood";

/// Publishes every `pub` message on [`TOPIC`], echoes every other one; counts what each worker's handler
/// gets published, spinning `per_published` on each.
struct Counting {
    received: Arc<[AtomicU64; 2]>,
    per_published: Duration,
}

impl Handler for Counting {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]) {
        if payload.starts_with(b"pub") {
            ctx.publish(TOPIC, kind, payload);
        } else {
            ctx.send(conn, kind, payload);
        }
    }

    fn on_published(&mut self, ctx: &mut Ctx<'_>, topic: &str, _message: &SharedMessage) {
        assert_eq!(topic, TOPIC);
        self.received[ctx.worker()].fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        while started.elapsed() < self.per_published {
            std::hint::spin_loop();
        }
    }
}

fn start(inbox_capacity: usize, per_published: Duration) -> (ServerHandle, Arc<[AtomicU64; 2]>) {
    let received = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let config = ServerConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        workers: 2,
        inbox_capacity,
        ..ServerConfig::default()
    };
    let counts = Arc::clone(&received);
    let server = Server::start(config, move |_| Counting {
        received: Arc::clone(&counts),
        per_published,
    })
    .expect("start");
    (server, received)
}

fn drops(server: &ServerHandle) -> u64 {
    common::metric(&server.render_metrics(), "ringws_handoff_drops_total")
}

/// Waits until every published message is accounted for on both workers (received or counted as
/// dropped), or `timeout` passes; returns (received, dropped).
fn settle(
    server: &ServerHandle,
    received: &[AtomicU64; 2],
    published: u64,
    timeout: Duration,
) -> (u64, u64) {
    let deadline = Instant::now() + timeout;
    loop {
        let got: u64 = received.iter().map(|r| r.load(Ordering::Relaxed)).sum();
        let dropped = drops(server);
        if got + dropped >= published * 2 || Instant::now() > deadline {
            return (got, dropped);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn client(addr: SocketAddr) -> tungstenite::WebSocket<std::net::TcpStream> {
    let stream = common::connect(addr);
    tungstenite::client::client(format!("ws://{addr}/"), stream)
        .unwrap()
        .0
}

#[test]
fn a_flood_past_a_small_inbox_is_dropped_and_counted_never_lost_silently() {
    let (server, received) = start(16, Duration::ZERO);
    let addr = server.local_addr();
    // Enough publishers that both workers almost surely hold some; the invariant holds either way.
    const CLIENTS: usize = 6;
    const PER_CLIENT: u64 = 3000;
    let mut publishers: Vec<_> = (0..CLIENTS).map(|_| client(addr)).collect();
    for round in 0..PER_CLIENT / 500 {
        for ws in publishers.iter_mut() {
            // 500 frames in one write: one receive completion publishes hundreds of messages at once.
            for i in 0..500 {
                ws.write(Message::text(format!("pub {round} {i}"))).unwrap();
            }
            ws.flush().unwrap();
        }
    }
    let published = CLIENTS as u64 * PER_CLIENT;
    let (got, dropped) = settle(&server, &received, published, Duration::from_secs(30));
    assert_eq!(
        got + dropped,
        published * 2,
        "received {got} and dropped {dropped} of {published} messages for each of 2 workers"
    );
    assert!(
        dropped > 0,
        "an inbox of 16 took {published} publishes without dropping one"
    );
    // Nothing comes later: what was not delivered was dropped, not held.
    std::thread::sleep(Duration::from_millis(200));
    let late: u64 = received.iter().map(|r| r.load(Ordering::Relaxed)).sum();
    assert_eq!(late, got);
    for mut ws in publishers {
        let _ = ws.close(None);
        while ws.read().is_ok() {}
    }
    server.shutdown();
    server.join();
}

#[test]
fn a_flood_is_taken_a_batch_at_a_time_so_other_connections_are_served() {
    // Each published message holds its worker for 50 us: a whole flood of 40,000 is two seconds of work
    // per worker, a batch of 1024 about 50 ms.
    const FLOOD: u64 = 40_000;
    let (server, received) = start(1 << 16, Duration::from_micros(50));
    let addr = server.local_addr();
    let mut echo = client(addr);
    echo.send(Message::text("warm")).unwrap();
    assert_eq!(echo.read().unwrap(), Message::text("warm"));

    let mut worst = Duration::ZERO;
    std::thread::scope(|scope| {
        let server = &server;
        let flood = scope.spawn(move || {
            for i in 0..FLOOD {
                server.publish(
                    Some(TOPIC),
                    MessageKind::Text,
                    format!("pub {i}").as_bytes(),
                );
            }
        });
        // Round trips while the workers are taking the flood.
        std::thread::sleep(Duration::from_millis(50));
        for i in 0..10 {
            let text = format!("echo {i}");
            let started = Instant::now();
            echo.send(Message::text(text.clone())).unwrap();
            assert_eq!(echo.read().unwrap(), Message::text(text));
            worst = worst.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        flood.join().unwrap();
    });
    let (got, dropped) = settle(&server, &received, FLOOD, Duration::from_secs(60));
    assert_eq!(
        got + dropped,
        FLOOD * 2,
        "received {got}, dropped {dropped}"
    );
    // Unbounded draining kept an echo waiting 2.1-3.3 s here; bounded, 75-185 ms. The bound leaves room
    // for a loaded machine and still tells the two apart.
    assert!(
        worst < Duration::from_millis(1500),
        "an echo took {worst:?} while the flood was taken"
    );
    let _ = echo.close(None);
    while echo.read().is_ok() {}
    server.shutdown();
    server.join();
}
