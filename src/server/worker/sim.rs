//! The whole-worker simulation (feature `sim-ring`): one real `Worker` with a real handler (the echo or
//! the pub/sub app) on the simulated ring of [`crate::reactor::sim`], driven by a byte string: each event
//! the input picks completes one of the operations the worker has pending, in any order (accepts, receives
//! split anywhere, `ENOBUFS`, EOF, resets, short and failed sends, shutdowns, closes, cancels, ticks with
//! and without `MORE`, the clock, a full completion queue, doorbells, a shutdown), with simulated clients
//! that write a valid handshake and masked frames built from the input, or garbage.
//!
//! After every batch and at the end it checks the worker's invariants and panics, naming the one broken:
//! the fixed-file table and the slab agree, every provided buffer is back, the counters match the slab, the
//! assembly total matches the readers, a send queue stays within its cap plus what arrived before reading
//! paused; at the end (every client closes, time runs past every timeout) the slab is empty with nothing
//! in flight, and every echo client that closed cleanly got each of its messages back, in order (any
//! client got a prefix of them). Plain TCP only: TLS is out of its scope. It must never be compiled into a
//! serving build: it exists only under the feature.
//!
//! Input: byte 0 chooses the configuration ([`SimConfig::from_byte`]), then each event is an op byte
//! (low 5 bits: the event, bit 7: run a batch after it) followed by the bytes that event reads; a read past
//! the end reads zeros.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::app::{Echo, PubSub};
use crate::protocol::frame::{encode_header, OpCode};
use crate::protocol::mask::apply_mask;
use crate::protocol::{Event, MessageKind, MessageReader, ReaderLimits, Role};
use crate::reactor::sim::{self, SimOp, SIM_RING_FD};
use crate::reactor::{BufRing, Op, Ring, UserData, NO_CONNECTION};
use crate::server::config::{admission_reserve, PublishConfig, ServerConfig};
use crate::server::connection::{flags::*, State};
use crate::server::handler::Handler;
use crate::server::inbox::{Inboxes, Sent, WorkerMessage};
use crate::server::metrics::WorkerMetrics;
use crate::server::{Shared, SharedMessage};

use super::{Core, Worker, BUF_GROUP};

/// The `POST /publish` token of a pub/sub run.
const PUBLISH_TOKEN: &str = "sim-token";

/// The application the simulated worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimApp {
    Echo,
    PubSub,
}

/// The knobs one input sets.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    pub app: SimApp,
    pub recv_buffers: u16,
    pub recv_buffer_size: usize,
    pub max_backpressure: usize,
    pub max_message_size: usize,
    pub max_assembly_memory: usize,
    pub max_connections_per_worker: usize,
}

impl SimConfig {
    /// Bit 0: pub/sub (else echo); bits 1-2: 2, 4, 8 or 16 receive buffers; bits 3-4: buffers of 64, 256,
    /// 1024 or 16384 bytes; bit 5: a 512-byte send cap (else 64 KiB); bit 6: 256-byte messages and a
    /// 1 KiB assembly budget (else 64 KiB and 1 MiB); bit 7: 2 connections (else 8).
    pub fn from_byte(b: u8) -> SimConfig {
        SimConfig {
            app: if b & 1 == 0 {
                SimApp::Echo
            } else {
                SimApp::PubSub
            },
            recv_buffers: 2 << ((b >> 1) & 3),
            recv_buffer_size: [64, 256, 1024, 16384][((b >> 3) & 3) as usize],
            max_backpressure: if b & 0x20 != 0 { 512 } else { 64 << 10 },
            max_message_size: if b & 0x40 != 0 { 256 } else { 64 << 10 },
            max_assembly_memory: if b & 0x40 != 0 { 1024 } else { 1 << 20 },
            max_connections_per_worker: if b & 0x80 != 0 { 2 } else { 8 },
        }
    }

    fn server_config(&self) -> ServerConfig {
        // `POST /publish` only beside pub/sub: in echo mode a publish would reach clients as messages they
        // never sent.
        let publish = (self.app == SimApp::PubSub).then(|| PublishConfig {
            max_body: 200,
            ..PublishConfig::new(PUBLISH_TOKEN)
        });
        ServerConfig {
            publish,
            workers: 1,
            pin_workers: false,
            recv_buffers: self.recv_buffers,
            recv_buffer_size: self.recv_buffer_size,
            max_backpressure: self.max_backpressure,
            max_message_size: self.max_message_size,
            max_frame_size: self.max_message_size as u64,
            max_assembly_memory: self.max_assembly_memory,
            max_connections_per_worker: self.max_connections_per_worker,
            subprotocols: vec![crate::app::V1.to_string()],
            ..ServerConfig::default()
        }
    }
}

/// What a run did (for tests that want to see that the input reached somewhere).
#[derive(Debug, Default, Clone, Copy)]
pub struct SimReport {
    pub events: usize,
    pub batches: usize,
    pub accepted: usize,
    pub upgraded: usize,
    pub messages_in: u64,
    /// Shared frames (publishes, broadcasts) queued to connections.
    pub deliveries: u64,
    /// Data messages echo clients got back.
    pub echoed: usize,
    /// Echo clients that closed cleanly and got every message back.
    pub clean_closes: usize,
}

/// Runs one input through a fresh worker; panics when an invariant breaks.
pub fn run(input: &[u8]) -> SimReport {
    let config = SimConfig::from_byte(input.first().copied().unwrap_or(0));
    let events = input.get(1..).unwrap_or(&[]);
    match config.app {
        SimApp::Echo => run_with(Echo, config, events),
        SimApp::PubSub => run_with(
            PubSub::new(config.server_config().max_subscriptions),
            config,
            events,
        ),
    }
}

fn run_with<H: Handler>(mut handler: H, config: SimConfig, events: &[u8]) -> SimReport {
    let server_config = Arc::new(config.server_config());
    let (inboxes, mut receivers) = Inboxes::new(1, server_config.inbox_capacity);
    let shared = Arc::new(Shared {
        config: Arc::clone(&server_config),
        metrics: vec![Arc::new(WorkerMetrics::default())],
        inboxes,
        shutdown: AtomicBool::new(false),
        broker_stop: AtomicBool::new(false),
        handed_over: AtomicBool::new(false),
        accepts_stopped: AtomicUsize::new(0),
        accept_rearms: AtomicUsize::new(0),
        websockets_open: AtomicUsize::new(0),
        broker: None,
        // History and presence on, so that their paths run under the simulation too.
        history: Some(Arc::new(crate::channels::History::new(
            crate::channels::HistoryConfig {
                size: 64,
                ttl: std::time::Duration::from_secs(60),
                max_bytes: 1 << 20,
            },
            1,
        ))),
        presence: Some(Arc::new(crate::channels::Presence::new())),
    });
    let max_conns = server_config.effective_connections_per_worker();
    let table_size = max_conns + admission_reserve(max_conns);
    let ring = Ring::simulated(table_size as u32);
    let bufs = BufRing::new(
        &ring,
        BUF_GROUP,
        server_config.recv_buffers,
        server_config.recv_buffer_size,
    )
    .expect("simulated buffer ring");
    // A real descriptor for the listener (the worker closes it through the ring at shutdown).
    let listener = OwnedFd::from(std::fs::File::open("/dev/null").expect("open /dev/null"));
    let mut core = Core::new(0, ring, bufs, Some(listener), shared, max_conns, table_size);
    core.shared.inboxes.set_ring_fd(0, core.ring.fd());
    core.arm_accept();
    core.arm_tick();
    let mut driver = Driver {
        worker: Worker {
            core,
            handler: &mut handler,
            inbox: receivers.pop().expect("one inbox"),
        },
        config,
        peers: Vec::new(),
        completions: Vec::with_capacity(64),
        report: SimReport::default(),
    };
    driver.events(events);
    driver.drain();
    driver.final_checks();
    driver.report
}

/// A simulated client of one accepted connection.
#[derive(Default)]
struct Peer {
    file_index: u32,
    /// Its descriptor is installed (not closed yet).
    live: bool,
    /// Bytes written and not yet received by the server.
    to_server: VecDeque<u8>,
    /// Bytes the server sent it.
    from_server: Vec<u8>,
    /// Data messages written after a valid upgrade request, in order.
    sent: Vec<(MessageKind, Vec<u8>)>,
    /// Its request was a valid upgrade.
    upgrading: bool,
    /// It wrote something that is not a valid WebSocket stream (a bad request, garbage).
    garbage: bool,
    /// A fault ended its connection (reset, failed send).
    faulted: bool,
    close_written: bool,
    eof_written: bool,
    /// The server shut its write side.
    server_shut: bool,
    /// Receives completed while the server had paused reading (queue growth the cap cannot stop).
    late_receives: usize,
}

/// The input, read byte by byte (zeros past its end).
struct Input<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

struct Driver<'h, H: Handler> {
    worker: Worker<'h, H>,
    config: SimConfig,
    peers: Vec<Peer>,
    completions: Vec<crate::reactor::Completion>,
    report: SimReport,
}

/// Events, by the low 5 bits of an op byte (modulo their count).
const EVENTS: u8 = 19;

impl<H: Handler> Driver<'_, H> {
    fn events(&mut self, bytes: &[u8]) {
        let mut input = Input { bytes, pos: 0 };
        let mut since_batch = 0;
        while !input.done() {
            let op = input.byte();
            self.event(op & 0x1f, &mut input);
            self.report.events += 1;
            since_batch += 1;
            if op & 0x80 != 0 || since_batch >= 4 {
                self.batch();
                since_batch = 0;
            }
        }
        self.batch();
    }

    fn ring(&mut self) -> &mut Ring {
        &mut self.worker.core.ring
    }

    /// The index in the ring's pending list of the first operation `matches` accepts.
    fn find(&self, matches: impl Fn(&SimOp) -> bool) -> Option<usize> {
        self.worker
            .core
            .ring
            .kernel_pending()
            .iter()
            .position(|p| matches(&p.op))
    }

    /// A live peer picked by `b`.
    fn pick_peer(&self, b: u8) -> Option<usize> {
        let live: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].live)
            .collect();
        (!live.is_empty()).then(|| live[b as usize % live.len()])
    }

    fn recv_of(&self, peer: usize) -> Option<usize> {
        let file_index = self.peers[peer].file_index;
        self.find(|op| matches!(op, SimOp::Recv { file_index: f, .. } if *f == file_index))
    }

    fn event(&mut self, event: u8, input: &mut Input<'_>) {
        match event % EVENTS {
            0 => self.accept(input),
            1 | 2 => self.write_message(input),
            3 => self.write_garbage(input),
            4..=6 => self.deliver(input),
            7 => self.end_recv(input),
            8 | 9 => self.complete_send(input),
            10 => self.complete_first(|op| matches!(op, SimOp::Shutdown { .. }), 0),
            11 => self.complete_first(
                |op| matches!(op, SimOp::CloseFixed { .. } | SimOp::CloseFd { .. }),
                0,
            ),
            12 => self.complete_first(|op| matches!(op, SimOp::Cancel { .. }), 0),
            13 => self.tick(input),
            14 => sim::advance_clock(Duration::from_millis(100) * u32::from(input.byte())),
            15 => self.full_completion_queue(),
            16 => self.doorbell(input),
            17 => self.inbox_messages(input),
            _ => {
                if input.byte() & 0x1f == 0x1d {
                    self.worker
                        .core
                        .shared
                        .shutdown
                        .store(true, Ordering::Release);
                }
            }
        }
    }

    fn accept(&mut self, input: &mut Input<'_>) {
        let b = input.byte();
        let Some(index) = self.find(|op| matches!(op, SimOp::AcceptMulti | SimOp::AcceptOne))
        else {
            return;
        };
        let Some(file_index) = self.ring().kernel_accept(index, b & 1 != 0) else {
            return;
        };
        self.report.accepted += 1;
        let mut peer = Peer {
            file_index,
            live: true,
            ..Peer::default()
        };
        let path = if self.config.app == SimApp::PubSub && b & 2 != 0 {
            "/ws?topic=t0"
        } else {
            "/"
        };
        let request = match (b >> 2) % 8 {
            4 if self.config.app == SimApp::PubSub => {
                // A publish, its body maybe over the route's limit (200 bytes), its token maybe wrong.
                let body = "b".repeat([0, 5, 50, 150, 250][(b >> 5) as usize % 5]);
                let token = if b & 0x80 != 0 {
                    "wrong"
                } else {
                    PUBLISH_TOKEN
                };
                format!(
                    "POST /publish?topic=t0 HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {token}\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            0..=4 => {
                peer.upgrading = true;
                // Pub/sub peers speak the structured protocol (`ringws.v1`) or the raw one.
                let protocol = if self.config.app == SimApp::PubSub && b & 0x20 != 0 {
                    "Sec-WebSocket-Protocol: ringws.v1\r\n"
                } else {
                    ""
                };
                format!(
                    "GET {path} HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
                )
            }
            5 => "GET /healthz HTTP/1.1\r\nHost: sim\r\n\r\n".to_string(),
            6 => String::new(), // says nothing: the handshake timeout ends it
            _ => {
                peer.garbage = true;
                "GET / HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 7\r\n\r\n"
                    .to_string()
            }
        };
        peer.to_server.extend(request.as_bytes());
        self.peers.push(peer);
    }

    /// A masked message (maybe fragmented, maybe with a ping between its fragments) from a peer.
    fn write_message(&mut self, input: &mut Input<'_>) {
        let Some(peer) = self.pick_peer(input.byte()) else {
            return;
        };
        let shape = input.byte();
        let kind = if shape & 1 == 0 {
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        let payload = if self.config.app == SimApp::PubSub && shape & 0x30 == 0x30 {
            // Any text as a command: the command parser meets whatever the input holds.
            let len = input.byte() as usize;
            let mut bytes = input.take(len);
            bytes.iter_mut().for_each(|b| *b = b' ' + (*b % 95));
            bytes
        } else if self.config.app == SimApp::PubSub && shape & 0x10 != 0 {
            let topic = input.byte() % 3;
            let n = input.byte();
            match input.byte() % 7 {
                0 => format!(r#"{{"op":"sub","topic":"t{topic}"}}"#),
                1 => format!(r#"{{"op":"unsub","topic":"t{topic}"}}"#),
                2 => format!(r#"{{"id":{n},"op":"pub","topic":"t{topic}","data":"m"}}"#),
                // Recover from an offset of the history's epoch or another; with presence events.
                3 => format!(
                    r#"{{"id":{n},"op":"sub","topic":"t{topic}","since":{{"offset":{},"epoch":"{}"}}}}"#,
                    n % 16,
                    if n & 1 == 0 { "00000000" } else { "ffffffff" }
                ),
                4 => format!(r#"{{"id":{n},"op":"sub","topic":"t{topic}","presence":true}}"#),
                5 => format!(r#"{{"id":{n},"op":"history","topic":"t{topic}","limit":{}}}"#, n % 8),
                _ => format!(r#"{{"id":{n},"op":"presence","topic":"t{topic}"}}"#),
            }
            .into_bytes()
        } else {
            let len = input.byte() as usize * if shape & 8 != 0 { 64 } else { 1 };
            let mut bytes = input.take(len);
            if kind == MessageKind::Text {
                // Printable ASCII: valid UTF-8.
                bytes.iter_mut().for_each(|b| *b = b' ' + (*b % 95));
            }
            bytes
        };
        let kind = if self.config.app == SimApp::PubSub && shape & 0x10 != 0 {
            MessageKind::Text
        } else {
            kind
        };
        let mask = [input.byte(), input.byte(), input.byte(), input.byte()];
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        let peer = &mut self.peers[peer];
        if shape & 2 != 0 && payload.len() >= 2 {
            let (first, rest) = payload.split_at(payload.len() / 2);
            write_frame(&mut peer.to_server, false, opcode, first, mask);
            if shape & 4 != 0 {
                write_frame(&mut peer.to_server, true, OpCode::Ping, b"p", mask);
            }
            write_frame(&mut peer.to_server, true, OpCode::Continuation, rest, mask);
        } else {
            write_frame(&mut peer.to_server, true, opcode, &payload, mask);
        }
        if peer.upgrading && !peer.garbage && !peer.close_written {
            peer.sent.push((kind, payload));
        }
    }

    fn write_garbage(&mut self, input: &mut Input<'_>) {
        let Some(peer) = self.pick_peer(input.byte()) else {
            return;
        };
        let len = 1 + input.byte() as usize % 16;
        let bytes = input.take(len);
        let peer = &mut self.peers[peer];
        peer.to_server.extend(bytes);
        peer.garbage = true;
    }

    /// Some of a peer's bytes, split where the input says, on its armed receive (`ENOBUFS` when every
    /// buffer is out: the bytes stay).
    fn deliver(&mut self, input: &mut Input<'_>) {
        let Some(peer) = self.pick_peer(input.byte()) else {
            return;
        };
        let split = input.byte();
        self.deliver_to(peer, split as usize, split & 1 == 0);
    }

    fn deliver_to(&mut self, peer: usize, split: usize, more: bool) {
        let Some(index) = self.recv_of(peer) else {
            return;
        };
        if self.peers[peer].to_server.is_empty() {
            return;
        }
        let buf_size = self.worker.core.bufs.buf_size();
        let len = if split == 0 { buf_size } else { split }
            .min(buf_size)
            .min(self.peers[peer].to_server.len());
        let bytes: Vec<u8> = self.peers[peer]
            .to_server
            .iter()
            .take(len)
            .copied()
            .collect();
        match self.worker.core.bufs.kernel_fill(&bytes) {
            Some(id) => {
                let paused = self.conn_flag(peer, RECV_PAUSED);
                self.ring()
                    .kernel_complete(index, len as i32, more, Some(id));
                self.peers[peer].to_server.drain(..len);
                if paused {
                    self.peers[peer].late_receives += 1;
                }
            }
            None => {
                self.ring()
                    .kernel_complete(index, -libc::ENOBUFS, false, None);
            }
        }
    }

    /// Whether the worker's connection on this peer's descriptor has `flag`.
    fn conn_flag(&self, peer: usize, flag: u16) -> bool {
        let file_index = self.peers[peer].file_index;
        self.worker
            .core
            .conns
            .iter()
            .any(|(_, c)| c.file_index == file_index && !c.has(FD_CLOSING) && c.has(flag))
    }

    /// A receive ends: `ENOBUFS`, EOF (once the peer has written everything), a reset, or a cancellation.
    fn end_recv(&mut self, input: &mut Input<'_>) {
        let Some(peer) = self.pick_peer(input.byte()) else {
            return;
        };
        let how = input.byte() % 4;
        let Some(index) = self.recv_of(peer) else {
            return;
        };
        let result = match how {
            0 => -libc::ENOBUFS,
            1 if self.peers[peer].to_server.is_empty() => {
                self.peers[peer].eof_written = true;
                0
            }
            1 => return,
            2 => {
                self.peers[peer].faulted = true;
                -libc::ECONNRESET
            }
            _ => -libc::ECANCELED,
        };
        self.ring().kernel_complete(index, result, false, None);
    }

    /// A peer's send in flight completes: in full, short, or failed.
    fn complete_send(&mut self, input: &mut Input<'_>) {
        let Some(peer) = self.pick_peer(input.byte()) else {
            return;
        };
        let how = input.byte();
        self.send_done(peer, how);
    }

    fn send_done(&mut self, peer: usize, how: u8) {
        let file_index = self.peers[peer].file_index;
        let Some(index) =
            self.find(|op| matches!(op, SimOp::Send { file_index: f, .. } if *f == file_index))
        else {
            return;
        };
        let SimOp::Send { bytes, .. } = &self.worker.core.ring.kernel_pending()[index].op else {
            unreachable!()
        };
        let sent = match how % 4 {
            0 | 1 => bytes.len(),
            2 if bytes.len() > 1 => 1 + (how as usize >> 2) % (bytes.len() - 1),
            2 => bytes.len(),
            _ => {
                self.peers[peer].faulted = true;
                self.ring()
                    .kernel_complete(index, -libc::EPIPE, false, None);
                return;
            }
        };
        self.peers[peer]
            .from_server
            .extend_from_slice(&bytes[..sent]);
        self.ring().kernel_complete(index, sent as i32, false, None);
    }

    /// Completes the first pending operation `matches` accepts (a close frees its descriptor's slot, a
    /// cancel ends its targets).
    fn complete_first(&mut self, matches: impl Fn(&SimOp) -> bool, result: i32) {
        let Some(index) = self.find(matches) else {
            return;
        };
        match self.worker.core.ring.kernel_pending()[index].op.clone() {
            SimOp::CloseFixed { file_index } => {
                for peer in self.peers.iter_mut().filter(|p| p.file_index == file_index) {
                    peer.live = false;
                }
                self.ring().kernel_close(index);
            }
            SimOp::CloseFd { .. } => self.ring().kernel_close(index),
            SimOp::Cancel { .. } => self.ring().kernel_cancel(index),
            SimOp::Shutdown { file_index } => {
                for peer in self
                    .peers
                    .iter_mut()
                    .filter(|p| p.file_index == file_index && p.live)
                {
                    peer.server_shut = true;
                }
                self.ring().kernel_complete(index, result, false, None);
            }
            _ => {
                self.ring().kernel_complete(index, result, false, None);
            }
        }
    }

    /// The tick expires (with or without `MORE`) after its interval, the clock moved by 1 to 4 intervals.
    fn tick(&mut self, input: &mut Input<'_>) {
        let b = input.byte();
        let Some(index) = self.find(|op| matches!(op, SimOp::Tick { .. })) else {
            return;
        };
        let SimOp::Tick { interval } = self.worker.core.ring.kernel_pending()[index].op else {
            unreachable!()
        };
        sim::advance_clock(interval * (1 + u32::from(b >> 1) % 4));
        self.ring()
            .kernel_complete(index, -libc::ETIME, b & 1 == 0, None);
    }

    /// The completion queue overflows: the tick's multishot ends, doorbells fail.
    fn full_completion_queue(&mut self) {
        if let Some(index) = self.find(|op| matches!(op, SimOp::Tick { .. })) {
            self.ring()
                .kernel_complete(index, -libc::ETIME, false, None);
        }
        while let Some(index) = self.find(|op| matches!(op, SimOp::MsgRing { .. })) {
            self.ring()
                .kernel_complete(index, -libc::EOVERFLOW, false, None);
        }
    }

    /// Pub/sub only: another thread (a worker, `ServerHandle::publish`) puts messages in the inbox (up to
    /// 2040, past one drain's worth) and rings the doorbell if it is its turn.
    fn inbox_messages(&mut self, input: &mut Input<'_>) {
        let b = input.byte();
        if self.config.app != SimApp::PubSub {
            return;
        }
        let count = 1 + usize::from(input.byte()) * 8;
        let message = SharedMessage::encode(MessageKind::Text, b"from another worker");
        let inboxes = &self.worker.core.shared.inboxes;
        for _ in 0..count {
            let sent = inboxes.send(
                0,
                if b & 1 == 0 {
                    WorkerMessage::Publish {
                        topic: format!("t{}", b % 3).into(),
                        message: message.clone(),
                    }
                } else {
                    WorkerMessage::Broadcast {
                        message: message.clone(),
                        except: None,
                    }
                },
            );
            if sent != Sent::Queued {
                break;
            }
        }
        if inboxes.claim_doorbell(0) {
            let doorbell = UserData::new(NO_CONNECTION, 0, Op::Doorbell).encode();
            self.ring().kernel_post(doorbell, 0);
        }
    }

    /// A doorbell the worker rang arrives (on its own ring), or fails.
    fn doorbell(&mut self, input: &mut Input<'_>) {
        let fail = input.byte() & 1 != 0;
        let Some(index) = self.find(|op| matches!(op, SimOp::MsgRing { .. })) else {
            return;
        };
        if fail {
            self.ring()
                .kernel_complete(index, -libc::EOVERFLOW, false, None);
            return;
        }
        let done = self.ring().kernel_finish_silently(index);
        if let SimOp::MsgRing {
            target_fd,
            user_data,
        } = done.op
        {
            if target_fd == SIM_RING_FD {
                self.ring().kernel_post(user_data, 0);
            }
        }
    }

    /// Runs the worker over everything posted, then checks the invariants.
    fn batch(&mut self) {
        self.report.batches += 1;
        self.worker.run_batch(&mut self.completions);
        // Past the shutdown timeout, the worker's loop aborts whatever is left (the sim ring ends its
        // wait for their completions at once; the driver completes them later).
        if self.worker.core.shutting_down
            && self
                .worker
                .core
                .shutdown_deadline
                .is_some_and(|deadline| sim::now() >= deadline)
        {
            self.worker.shutdown_finished(&mut self.completions);
        }
        self.check_batch();
    }

    fn check_batch(&self) {
        let core = &self.worker.core;
        assert_eq!(
            core.ring.kernel_posted(),
            0,
            "completions left after a batch"
        );
        assert_eq!(
            core.ring.kernel_files_in_use(),
            core.conns.len(),
            "fixed-file slots in use and connections held differ"
        );
        assert_eq!(
            core.bufs.kernel_out(),
            0,
            "a provided buffer is not back after its completion"
        );
        let count = |matches: fn(&SimOp) -> bool| {
            core.ring
                .kernel_pending()
                .iter()
                .filter(|p| matches(&p.op))
                .count()
        };
        assert_eq!(
            count(|op| matches!(op, SimOp::Tick { .. })),
            1,
            "the periodic tick is not armed exactly once"
        );
        assert!(
            count(|op| matches!(op, SimOp::AcceptMulti)) <= 1,
            "two multishot accepts"
        );
        assert!(
            count(|op| matches!(op, SimOp::AcceptOne)) <= 1,
            "two single accepts"
        );
        assert_eq!(core.metrics.connections_open.get(), core.conns.len() as u64);
        let open = core
            .conns
            .iter()
            .filter(|(_, c)| c.state == State::Open)
            .count();
        assert_eq!(core.metrics.websockets_open.get(), open as u64);
        assert_eq!(core.shared.websockets_open.load(Ordering::Acquire), open);
        let held: usize = core
            .conns
            .iter()
            .map(|(_, c)| c.reader.buffered_capacity())
            .sum();
        assert_eq!(
            core.assembly_bytes, held,
            "assembly total and readers differ"
        );
        let buf_size = self.config.recv_buffer_size;
        for (_, conn) in core.conns.iter() {
            let late = self
                .peers
                .iter()
                .find(|p| p.live && p.file_index == conn.file_index)
                .map_or(0, |p| p.late_receives);
            // The cap, plus what one receive (and a message it completes) adds before reading pauses,
            // plus the receives that completed while the pause's cancel was on its way.
            let bound = self.config.max_backpressure
                + self.config.max_message_size
                + (2 + late) * (buf_size + 1024);
            assert!(
                conn.queued_cost() <= bound,
                "a send queue holds {} bytes, over its bound {bound}",
                conn.queued_cost()
            );
        }
    }

    /// The end: every peer writes a close (echo clients after their messages), every operation completes
    /// in full, peers end their side once the server closed, and time runs past every timeout.
    fn drain(&mut self) {
        for peer in self.peers.iter_mut().filter(|p| p.live && !p.eof_written) {
            if peer.upgrading && !peer.close_written {
                let mut payload = [0u8; 2];
                payload.copy_from_slice(&1000u16.to_be_bytes());
                write_frame(
                    &mut peer.to_server,
                    true,
                    OpCode::Close,
                    &payload,
                    [1, 2, 3, 4],
                );
                peer.close_written = true;
            }
        }
        for round in 0..400 {
            let pending: Vec<SimOp> = self
                .worker
                .core
                .ring
                .kernel_pending()
                .iter()
                .map(|p| p.op.clone())
                .collect();
            for op in pending {
                match op {
                    SimOp::Send { file_index, .. } => {
                        if let Some(peer) = self.live_peer(file_index) {
                            self.send_done(peer, 0);
                        }
                    }
                    SimOp::Recv { file_index, .. } => {
                        let Some(peer) = self.live_peer(file_index) else {
                            continue;
                        };
                        if !self.peers[peer].to_server.is_empty() {
                            self.deliver_to(peer, 0, true);
                        } else if self.peer_done(peer) || round > 40 {
                            if let Some(index) = self.recv_of(peer) {
                                self.peers[peer].eof_written = true;
                                self.ring().kernel_complete(index, 0, false, None);
                            }
                        }
                    }
                    SimOp::Shutdown { .. } => {
                        self.complete_first(|op| matches!(op, SimOp::Shutdown { .. }), 0)
                    }
                    SimOp::CloseFixed { .. } | SimOp::CloseFd { .. } => self.complete_first(
                        |op| matches!(op, SimOp::CloseFixed { .. } | SimOp::CloseFd { .. }),
                        0,
                    ),
                    SimOp::Cancel { .. } => {
                        self.complete_first(|op| matches!(op, SimOp::Cancel { .. }), 0)
                    }
                    SimOp::MsgRing { .. } => {
                        let mut zero = Input { bytes: &[], pos: 0 };
                        self.doorbell(&mut zero);
                    }
                    SimOp::Tick { .. } => {
                        let mut once = Input {
                            bytes: &[2 * 3],
                            pos: 0,
                        };
                        self.tick(&mut once);
                    }
                    SimOp::AcceptMulti | SimOp::AcceptOne => {}
                }
            }
            self.batch();
            if self.worker.core.conns.is_empty()
                && self.worker.core.ring.kernel_pending().iter().all(|p| {
                    matches!(
                        p.op,
                        SimOp::AcceptMulti | SimOp::AcceptOne | SimOp::Tick { .. }
                    )
                })
            {
                return;
            }
        }
        let conns: Vec<String> = self
            .worker
            .core
            .conns
            .iter()
            .map(|(k, c)| format!("{k}: {:?} flags {:#06x}", c.state, c.flags))
            .collect();
        panic!(
            "the worker did not drain: connections {conns:?}, pending {:?}",
            self.worker.core.ring.kernel_pending()
        );
    }

    fn live_peer(&self, file_index: u32) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.live && p.file_index == file_index)
    }

    /// A peer ends its side once the server shut its own or sent a close.
    fn peer_done(&self, peer: usize) -> bool {
        let p = &self.peers[peer];
        p.server_shut || p.faulted || decode_server(&p.from_server).close.is_some()
    }

    fn final_checks(&mut self) {
        let core = &self.worker.core;
        assert!(core.conns.is_empty());
        assert_eq!(
            core.ring.kernel_files_in_use(),
            0,
            "descriptors left installed"
        );
        assert_eq!(core.bufs.kernel_out(), 0, "provided buffers not back");
        assert_eq!(core.assembly_bytes, 0);
        assert_eq!(core.metrics.connections_open.get(), 0);
        assert_eq!(core.metrics.websockets_open.get(), 0);
        let metrics = &core.metrics;
        self.report.messages_in = metrics.messages_in.get();
        self.report.deliveries = metrics.deliveries.get();
        self.report.upgraded = metrics.websockets_total.get() as usize;
        if self.config.app != SimApp::Echo {
            return;
        }
        assert_eq!(
            metrics.messages_in.get(),
            metrics.messages_out.get(),
            "echo: a message received was not queued back"
        );
        for (i, peer) in self.peers.iter().enumerate() {
            let got = decode_server(&peer.from_server);
            if peer.garbage {
                // Its garbage may hold valid frames: what it sent is not known.
                continue;
            }
            assert!(
                got.messages.len() <= peer.sent.len()
                    && got.messages.iter().zip(&peer.sent).all(|(a, b)| a == b),
                "echo client {i} got messages it did not send, or out of order: sent {:?}, got {:?}",
                summary(&peer.sent),
                summary(&got.messages)
            );
            self.report.echoed += got.messages.len();
            let clean = peer.upgrading && !peer.faulted && got.close == Some(1000);
            if clean {
                assert_eq!(
                    got.messages.len(),
                    peer.sent.len(),
                    "echo client {i} closed cleanly but lost messages"
                );
                self.report.clean_closes += 1;
            }
        }
    }
}

/// Kinds and lengths of messages, for a panic message.
fn summary(messages: &[(MessageKind, Vec<u8>)]) -> Vec<(MessageKind, usize)> {
    messages
        .iter()
        .map(|(kind, payload)| (*kind, payload.len()))
        .collect()
}

/// Appends one masked client frame.
fn write_frame(out: &mut VecDeque<u8>, fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    let mut header = [0u8; 14];
    let len = encode_header(&mut header, fin, opcode, payload.len() as u64, Some(mask));
    out.extend(&header[..len]);
    let mut masked = payload.to_vec();
    apply_mask(&mut masked, mask, 0);
    out.extend(masked);
}

/// What a client made of the server's bytes.
struct ServerOutput {
    messages: Vec<(MessageKind, Vec<u8>)>,
    /// The code of the server's close frame (1005 for one without a code).
    close: Option<u16>,
}

/// Reads the server's answer: a 101 head, then frames (anything else: no messages).
fn decode_server(bytes: &[u8]) -> ServerOutput {
    let mut out = ServerOutput {
        messages: Vec::new(),
        close: None,
    };
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return out;
    };
    if !bytes.starts_with(b"HTTP/1.1 101") {
        return out;
    }
    let mut frames = bytes[end + 4..].to_vec();
    let limits = ReaderLimits {
        max_frame_size: u64::MAX >> 1,
        max_message_size: usize::MAX >> 1,
    };
    let mut reader = MessageReader::new(Role::Client);
    let result = reader.feed(&mut frames, &limits, |event| match event {
        Event::Message { kind, payload } => out.messages.push((kind, payload.to_vec())),
        Event::Close { code, .. } => out.close = Some(code.map_or(1005, |c| c.0)),
        Event::Ping(_) | Event::Pong(_) => {}
    });
    assert!(
        result.is_ok(),
        "the server sent an invalid frame: {result:?}"
    );
    out
}
