//! The server's floor for echo benchmarks: a raw TCP echo through ringws's own reactor, with no WebSocket
//! work. It answers the opening handshake with a 101 (so that `ringws-loadgen echo --floor` drives it like
//! any WebSocket server), then sends back every received byte as it came: the client's masked frames
//! return masked, and `--floor` reads them in the server role (unmasking) and checks them as echoes.
//!
//! What it shares with `ringws serve` is everything below the protocol: one ring set up by
//! [`Ring::new`] (same flags, same queue sizes as a worker), connections accepted by a multishot accept
//! into the fixed-file table, a multishot receive per connection into the provided buffer ring
//! ([`BufRing`], same buffer size and count as the server's defaults, `--recv-buffer-size` and
//! `--recv-buffers` as the server's), one copy of each received buffer into the connection's
//! [`SendQueue`] (the server's echo also copies once: it unmasks in place and frames the payload into the
//! queue), and one send per connection per batch, submitted at the end of the batch. What it leaves out
//! is the WebSocket work: frame parsing, unmasking, UTF-8 checks, message assembly, the handler call, the
//! frame header, and the server's timers, metrics and per-connection bookkeeping. No backpressure: an echo
//! client keeps a bounded number of messages in flight.
//!
//! Usage: `tcp_echo_floor [--port P] [--recv-buffer-size BYTES] [--recv-buffers N]`; prints
//! `tcp_echo_floor listening on 127.0.0.1:PORT` and runs until killed. Loopback only.

use ringws::protocol::handshake::{parse_request, write_101, DEFAULT_MAX_HEADER_BYTES};
use ringws::reactor::buf_ring::BufRing;
use ringws::reactor::ring::Ring;
use ringws::reactor::sys::{local_addr, reuseport_listener, PortShare};
use ringws::reactor::{BufferPool, Completion, Op, SendQueue, UserData, NO_CONNECTION};
use ringws::server::ServerConfig;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Fixed-file table slots (one per connection).
const TABLE_SIZE: u32 = 4096;
const BUF_GROUP: u16 = 0;

struct Conn {
    /// Handshake bytes until the request head is complete; then unused.
    head: Vec<u8>,
    open: bool,
    queue: SendQueue,
    /// Marked for a send at the end of the batch.
    dirty: bool,
    /// The receive ended (EOF or error): close once no send is in flight.
    ended: bool,
}

struct Floor {
    ring: Ring,
    bufs: BufRing,
    pool: BufferPool,
    conns: Vec<Option<Conn>>,
    dirty: Vec<u32>,
}

fn ud(key: u32, op: Op) -> u64 {
    UserData::new(key, 0, op).encode()
}

impl Floor {
    fn on_accept(&mut self, completion: &Completion, listener: i32) {
        if !completion.more() {
            self.ring
                .accept_multishot(listener, ud(NO_CONNECTION, Op::AcceptMulti));
        }
        if completion.result < 0 {
            return;
        }
        let key = completion.result as u32;
        self.conns[key as usize] = Some(Conn {
            head: Vec::new(),
            open: false,
            queue: SendQueue::new(),
            dirty: false,
            ended: false,
        });
        self.ring.recv_multishot(key, BUF_GROUP, ud(key, Op::Recv));
    }

    fn on_recv(&mut self, key: u32, mut completion: Completion) {
        let Some(conn) = self.conns[key as usize].as_mut() else {
            if let Some(buf) = self.bufs.take(&mut completion) {
                self.bufs.recycle(buf);
            }
            return;
        };
        let result = completion.result;
        if result > 0 {
            let Some(mut buf) = self.bufs.take(&mut completion) else {
                return;
            };
            let bytes = buf.bytes_mut();
            if conn.open {
                conn.queue.push_owned(&mut self.pool, bytes.len(), |out| {
                    out.extend_from_slice(bytes)
                });
            } else {
                conn.head.extend_from_slice(bytes);
                answer_upgrade(conn, &mut self.pool);
            }
            self.bufs.recycle(buf);
            if !conn.dirty && !conn.queue.is_empty() {
                conn.dirty = true;
                self.dirty.push(key);
            }
        } else if result == -libc::ENOBUFS {
            self.bufs.ran_dry();
        } else {
            // End of stream or an error: the receive is over.
            conn.ended = true;
        }
        if !completion.more() && !conn.ended {
            self.ring.recv_multishot(key, BUF_GROUP, ud(key, Op::Recv));
        }
        self.close_if_done(key);
    }

    fn on_send(&mut self, key: u32, mut completion: Completion) {
        let Some(conn) = self.conns[key as usize].as_mut() else {
            return;
        };
        conn.queue.complete_send(&mut completion, &mut self.pool);
        if completion.result < 0 {
            conn.queue.clear(&mut self.pool);
            conn.ended = true;
        } else if !conn.dirty && !conn.queue.is_empty() {
            conn.dirty = true;
            self.dirty.push(key);
        }
        self.close_if_done(key);
    }

    fn close_if_done(&mut self, key: u32) {
        let done = self.conns[key as usize]
            .as_ref()
            .is_some_and(|c| c.ended && !c.queue.send_in_flight());
        if done {
            if let Some(mut conn) = self.conns[key as usize].take() {
                conn.queue.clear(&mut self.pool);
            }
            self.ring.close_fixed(key, ud(key, Op::Close));
        }
    }

    /// End of batch: one send per connection that has bytes queued and none in flight.
    fn flush(&mut self) {
        for key in self.dirty.drain(..) {
            if let Some(conn) = self.conns[key as usize].as_mut() {
                conn.dirty = false;
                self.ring
                    .send_queue(key, &mut conn.queue, ud(key, Op::Send));
            }
        }
    }
}

/// Answers a complete request head with a 101 for its key (a request without one gets a 101 for an
/// empty key: the client will refuse it). Bytes after the head are echoed like the rest.
fn answer_upgrade(conn: &mut Conn, pool: &mut BufferPool) {
    let Ok(Some((request, consumed))) = parse_request(&conn.head, DEFAULT_MAX_HEADER_BYTES) else {
        return;
    };
    let key = request.header("sec-websocket-key").unwrap_or_default();
    conn.queue
        .push_owned(pool, 160, |out| write_101(out, key, None));
    let rest = conn.head.len() - consumed;
    if rest > 0 {
        let head = &conn.head[consumed..];
        conn.queue
            .push_owned(pool, rest, |out| out.extend_from_slice(head));
    }
    conn.head = Vec::new();
    conn.open = true;
}

fn main() {
    let defaults = ServerConfig::default();
    let (mut port, mut buf_size, mut buf_count) =
        (0u16, defaults.recv_buffer_size, defaults.recv_buffers);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        let parsed = match arg.as_str() {
            "--port" => value.parse().map(|v| port = v).is_ok(),
            "--recv-buffer-size" => value.parse().map(|v| buf_size = v).is_ok(),
            "--recv-buffers" => value.parse().map(|v| buf_count = v).is_ok(),
            _ => false,
        };
        if !parsed {
            eprintln!(
                "usage: tcp_echo_floor [--port P] [--recv-buffer-size BYTES] [--recv-buffers N]"
            );
            std::process::exit(2);
        }
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = reuseport_listener(addr, 4096, PortShare::First).expect("listen");
    let bound = local_addr(&listener).expect("local address");
    // The worker's queue sizes (`server::worker::run_worker`) for a table of this size.
    let cq_entries = (TABLE_SIZE * 2).next_power_of_two().clamp(4096, 32768);
    let ring = Ring::new(2048, cq_entries, TABLE_SIZE).expect("io_uring");
    let bufs = BufRing::new(&ring, BUF_GROUP, buf_count, buf_size).expect("buffer ring");
    let mut floor = Floor {
        ring,
        bufs,
        pool: BufferPool::default(),
        conns: (0..TABLE_SIZE).map(|_| None).collect(),
        dirty: Vec::new(),
    };
    let fd = listener.as_raw_fd();
    floor
        .ring
        .accept_multishot(fd, ud(NO_CONNECTION, Op::AcceptMulti));
    println!("tcp_echo_floor listening on {bound}");
    let mut completions = Vec::with_capacity(1024);
    loop {
        floor.ring.submit_and_wait(1).expect("io_uring_enter");
        floor.ring.drain_completions(&mut completions);
        for completion in completions.drain(..) {
            let Some(user_data) = UserData::decode(completion.user_data) else {
                continue;
            };
            match user_data.op {
                Op::AcceptMulti => floor.on_accept(&completion, fd),
                Op::Recv => floor.on_recv(user_data.key, completion),
                Op::Send => floor.on_send(user_data.key, completion),
                _ => {}
            }
        }
        floor.flush();
    }
}
