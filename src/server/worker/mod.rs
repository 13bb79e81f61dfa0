//! One worker: a thread with its own ring, listener, buffer ring, slab of connections, timer wheel and
//! handler, driving every connection through handshake -> open -> closing -> released.
//!
//! The loop: submit and wait, drain completions, dispatch each by its `user_data` (stale generations are
//! dropped), then flush the send queues touched in this batch (one vectored send per connection) and ring
//! other workers' doorbells once per batch. Hot path (recv -> parse -> handler -> queue -> send): no
//! allocation per message in steady state (pooled buffers and queues), no lock, no syscall besides
//! `io_uring_enter`, no log line. Teardown order: a connection is released (slot freed, generation
//! bumped) only after its receive, send and shutdown have completed and its direct descriptor is closed.

mod accept;
mod inbound;
mod timers;
mod tls_io;
mod upgrade;
mod outbound;
mod lifecycle;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::protocol::frame::{encode_header, OpCode};
use crate::protocol::{
    CloseCode, MessageKind, ReaderLimits,
};
use crate::reactor::{BufRing, BufferPool, Completion, Op, Ring, UserData};

use super::config::ServerConfig;
use super::connection::{flags::*, Connection, State};
use super::handler::{ConnId, Ctx, Handler};
use super::metrics::WorkerMetrics;
use super::timer::{TimerEntry, TimerWheel};
use super::Shared;

use timers::ticks;

/// Buffer group id of every worker's provided buffer ring.
const BUF_GROUP: u16 = 0;
/// `user_data` slot for operations that belong to no connection (accept, tick, doorbell).
const NO_SLOT: u32 = u32::MAX;

/// A frame handed from one worker to another: encoded once, shared.
pub struct Handoff {
    /// The complete frame bytes.
    pub frame: Arc<[u8]>,
    /// The sending connection, if it must not receive it (worker index, id).
    pub except: Option<(usize, ConnId)>,
    /// `None`: for every open connection (broadcast); `Some(topic)`: for the handler's subscribers of it.
    pub topic: Option<Arc<str>>,
}

/// Encodes one unfragmented server frame (unmasked) into a shared buffer.
pub(crate) fn encode_shared(kind: MessageKind, payload: &[u8]) -> Arc<[u8]> {
    let opcode = match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    };
    let mut header = [0u8; 14];
    let header_len = encode_header(&mut header, true, opcode, payload.len() as u64, None);
    let mut frame = Vec::with_capacity(header_len + payload.len());
    frame.extend_from_slice(&header[..header_len]);
    frame.extend_from_slice(payload);
    frame.into()
}

/// Everything of a worker except its handler (so that the handler can act on it through `Ctx`).
pub struct Core {
    pub(crate) index: usize,
    pub(crate) conns: Slab<Connection>,
    ring: Ring,
    bufs: BufRing,
    pool: BufferPool,
    wheel: TimerWheel,
    timer_scratch: Vec<TimerEntry>,
    config: Arc<ServerConfig>,
    limits: ReaderLimits,
    shared: Arc<Shared>,
    metrics: Arc<WorkerMetrics>,
    listener: Option<OwnedFd>,
    /// The multishot accept is armed (used while below `max_conns`).
    accept_armed: bool,
    /// A cancel of the multishot accept is in flight.
    accept_cancelling: bool,
    /// Single-shot accepts in flight (used from `max_conns` on, one per free slot at most).
    single_accepts: usize,
    accept_error_logged: bool,
    /// Connections this worker serves; beyond it (until the table's reserve is used up), new
    /// connections are answered 503.
    max_conns: usize,
    /// Fixed-file table slots.
    table_size: usize,
    /// Connections refused at accept and still being answered (they use the table's reserve).
    rejected_in_reserve: usize,
    next_generation: u32,
    /// Connections touched in this batch, flushed at its end.
    dirty: Vec<u32>,
    /// Connections that left the open state, for the handler's `on_close`.
    closed: Vec<(ConnId, Option<CloseCode>)>,
    /// Frames published on a topic, for the handler's `on_published` (after the current event).
    published: Vec<(Arc<str>, Arc<[u8]>)>,
    /// Workers to wake at the end of this batch (bit per worker).
    doorbells: Vec<bool>,
    handshake_ticks: u32,
    idle_ticks: u32,
    ping_ticks: u32,
    close_ticks: u32,
    /// Ticks without output activity (about one second) before the pools are cut back.
    pool_quiet_ticks: u32,
    shutting_down: bool,
    shutdown_deadline: Option<Instant>,
    /// Plaintext decrypted from one TLS receive (reused; TLS connections only).
    tls_plain: Vec<u8>,
}

/// Runs worker `index` until shutdown completes. `ready` is called once the worker accepts connections.
pub(crate) fn run_worker<H: Handler>(
    index: usize,
    listener: OwnedFd,
    shared: Arc<Shared>,
    inbox: Receiver<Handoff>,
    mut handler: H,
    ready: impl FnOnce(Result<String, String>),
) {
    let config = Arc::clone(&shared.config);
    let max_conns = config.effective_connections_per_worker();
    let table_size = max_conns + super::config::admission_reserve(max_conns);
    let cq_entries = (table_size as u32 * 2)
        .next_power_of_two()
        .clamp(4096, 32768);
    let ring = match Ring::new(2048, cq_entries, table_size as u32) {
        Ok(ring) => ring,
        Err(e) => return ready(Err(format!("worker {index}: io_uring setup failed: {e}"))),
    };
    let bufs = match BufRing::new(
        &ring,
        BUF_GROUP,
        config.recv_buffers,
        config.recv_buffer_size,
    ) {
        Ok(bufs) => bufs,
        Err(e) => {
            return ready(Err(format!(
                "worker {index}: buffer ring setup failed: {e}"
            )))
        }
    };
    let tick = config.tick();
    let mut core = Core {
        index,
        conns: Slab::new(),
        ring,
        bufs,
        pool: BufferPool::default(),
        wheel: TimerWheel::new(),
        timer_scratch: Vec::new(),
        limits: ReaderLimits {
            max_frame_size: config.max_frame_size,
            max_message_size: config.max_message_size,
        },
        metrics: Arc::clone(&shared.metrics[index]),
        listener: Some(listener),
        accept_armed: false,
        accept_cancelling: false,
        single_accepts: 0,
        accept_error_logged: false,
        max_conns,
        table_size,
        rejected_in_reserve: 0,
        next_generation: 1,
        dirty: Vec::new(),
        closed: Vec::new(),
        published: Vec::new(),
        doorbells: vec![false; shared.metrics.len()],
        handshake_ticks: ticks(config.handshake_timeout, tick),
        idle_ticks: ticks(config.idle_timeout, tick),
        ping_ticks: ticks(config.ping_timeout, tick),
        close_ticks: ticks(config.close_timeout, tick),
        pool_quiet_ticks: ticks(Duration::from_secs(1), tick),
        shutting_down: false,
        shutdown_deadline: None,
        tls_plain: Vec::new(),
        config,
        shared,
    };
    core.shared.ring_fds[index].store(core.ring.fd(), Ordering::Release);
    core.arm_accept();
    core.ring
        .tick_every(tick, UserData::new(NO_SLOT, 0, Op::Tick).encode());
    if let Err(e) = core.ring.submit_and_wait(0) {
        return ready(Err(format!("worker {index}: submit failed: {e}")));
    }
    let setup = core.ring.setup();
    if let Some((sq, cq)) = setup.shrunk_from {
        tracing::warn!(
            worker = index,
            "not enough memory for an io_uring with sq={sq} cq={cq}; running with {setup}"
        );
    }
    if !(setup.single_issuer && setup.defer_taskrun && setup.submit_all) {
        tracing::warn!(
            worker = index,
            "the kernel refused some io_uring setup flags; running with {setup}"
        );
    }
    ready(Ok(format!("{setup}")));

    let mut completions = Vec::with_capacity(1024);
    let mut worker = Worker {
        core,
        handler: &mut handler,
        inbox,
    };
    loop {
        if let Err(e) = worker.core.ring.submit_and_wait(1) {
            tracing::error!(worker = index, "io_uring_enter failed: {e}");
            break;
        }
        completions.clear();
        worker.core.ring.drain_completions(&mut completions);
        for completion in &completions {
            worker.dispatch(*completion);
        }
        worker.end_of_batch();
        if worker.core.shutting_down {
            if worker.core.conns.is_empty() {
                break;
            }
            if let Some(deadline) = worker.core.shutdown_deadline {
                if Instant::now() >= deadline {
                    // Out of patience: abort whatever is left, then give the closes a moment.
                    worker.core.shutdown_deadline = None;
                    let keys: Vec<usize> = worker.core.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        worker.core.doom(key, true);
                    }
                    worker.end_of_batch();
                    worker.core.shutdown_deadline = None;
                    let hard_deadline = Instant::now() + Duration::from_secs(1);
                    while !worker.core.conns.is_empty() && Instant::now() < hard_deadline {
                        if worker.core.ring.submit_and_wait(1).is_err() {
                            break;
                        }
                        completions.clear();
                        worker.core.ring.drain_completions(&mut completions);
                        for completion in &completions {
                            worker.dispatch(*completion);
                        }
                        worker.end_of_batch();
                    }
                    break;
                }
            }
        }
    }
    tracing::debug!(worker = index, "worker stopped");
}

struct Worker<'h, H: Handler> {
    core: Core,
    handler: &'h mut H,
    inbox: Receiver<Handoff>,
}

impl<H: Handler> Worker<'_, H> {
    fn dispatch(&mut self, completion: Completion) {
        let Some(ud) = UserData::decode(completion.user_data) else {
            return;
        };
        match ud.op {
            Op::Accept => self.core.on_accept(ud.generation == 1, completion),
            Op::Tick => self.on_tick(),
            Op::Doorbell => self.on_doorbell(),
            Op::Cancel => {}
            Op::Recv | Op::Send | Op::Shutdown | Op::Close => {
                let key = ud.slot as usize;
                let live = self
                    .core
                    .conns
                    .get(key)
                    .is_some_and(|c| c.generation == ud.generation);
                if !live {
                    // A completion for an earlier incarnation of this slot: drop it (but give back any
                    // buffer it carries).
                    if let Some(bid) = completion.buffer_id() {
                        self.core.bufs.recycle_id(bid);
                    }
                    return;
                }
                match ud.op {
                    Op::Recv => self.on_recv(key, completion),
                    Op::Send => self.core.on_send(key, completion),
                    Op::Shutdown => self.core.on_shutdown(key),
                    Op::Close => self.core.on_close_done(key),
                    _ => unreachable!(),
                }
            }
        }
        self.notify_closed();
    }

    /// Runs the handler's deferred callbacks: `on_published` (in publish order) and `on_close`.
    fn notify_closed(&mut self) {
        loop {
            if !self.core.published.is_empty() {
                let mut published = std::mem::take(&mut self.core.published);
                for (topic, frame) in published.drain(..) {
                    self.handler.on_published(
                        &mut Ctx {
                            core: &mut self.core,
                        },
                        &topic,
                        &frame,
                    );
                }
                if self.core.published.is_empty() {
                    // Keep the vector's capacity for the next batch.
                    self.core.published = published;
                }
            } else if let Some((id, code)) = self.core.closed.pop() {
                self.handler.on_close(
                    &mut Ctx {
                        core: &mut self.core,
                    },
                    id,
                    code,
                );
            } else {
                break;
            }
        }
    }

    fn end_of_batch(&mut self) {
        self.notify_closed();
        self.core.flush_dirty();
        self.core.ring_doorbells();
    }

    fn on_doorbell(&mut self) {
        while let Ok(handoff) = self.inbox.try_recv() {
            match handoff.topic {
                None => {
                    // Topic frames received before it go out first (in handoff order).
                    self.notify_closed();
                    self.core.deliver_shared(&handoff.frame, handoff.except)
                }
                Some(topic) => self.core.published.push((topic, handoff.frame)),
            }
        }
        if !self.core.shutting_down && self.core.shared.shutdown.load(Ordering::Acquire) {
            self.core.begin_shutdown();
        }
    }

}

impl Core {
    fn ud(&self, key: usize, op: Op) -> u64 {
        UserData::new(key as u32, self.conns[key].generation, op).encode()
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.shutdown_deadline = Some(Instant::now() + self.config.shutdown_timeout);
        if self.accept_armed {
            self.ring.cancel(
                UserData::new(NO_SLOT, 0, Op::Accept).encode(),
                UserData::new(NO_SLOT, 0, Op::Cancel).encode(),
            );
        }
        if let Some(listener) = self.listener.take() {
            let fd = listener.as_raw_fd();
            std::mem::forget(listener);
            self.ring
                .close_fd(fd, UserData::new(NO_SLOT, 0, Op::Cancel).encode());
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            match self.conns[key].state {
                State::Handshake => self.doom(key, true),
                State::Open => {
                    self.send_close(key, CloseCode::GOING_AWAY, "server shutting down");
                    self.leave_open(key, Some(CloseCode::GOING_AWAY));
                }
                State::Closing => {}
            }
        }
        tracing::info!(
            worker = self.index,
            connections = self.conns.len(),
            "shutting down"
        );
    }

    // ---- used by handlers through `Ctx` ----

    pub(crate) fn broadcast(&mut self, kind: MessageKind, payload: &[u8], except: Option<ConnId>) {
        let frame = encode_shared(kind, payload);
        self.metrics.frames_encoded.inc();
        let except = except.map(|id| (self.index, id));
        self.hand_off(&frame, except, None);
        self.deliver_shared(&frame, except);
    }

    /// Publishes on `topic`: one encoded frame, handed to every other worker; every worker's handler
    /// (this one's after the current event) gets it in `on_published`.
    pub(crate) fn publish(&mut self, topic: &str, kind: MessageKind, payload: &[u8]) {
        let frame = encode_shared(kind, payload);
        self.metrics.frames_encoded.inc();
        let topic: Arc<str> = Arc::from(topic);
        self.hand_off(&frame, None, Some(&topic));
        self.published.push((topic, frame));
    }

    fn hand_off(
        &mut self,
        frame: &Arc<[u8]>,
        except: Option<(usize, ConnId)>,
        topic: Option<&Arc<str>>,
    ) {
        for (worker, sender) in self.shared.inboxes.iter().enumerate() {
            if worker == self.index {
                continue;
            }
            let handoff = Handoff {
                frame: Arc::clone(frame),
                except,
                topic: topic.cloned(),
            };
            if sender.send(handoff).is_ok() {
                self.doorbells[worker] = true;
            }
        }
    }

    /// Queues a shared frame to one connection, applying the slow-consumer policy. Returns whether it was
    /// queued.
    pub(crate) fn send_frame(&mut self, id: ConnId, frame: &Arc<[u8]>) -> bool {
        let Some(key) = self.live_open(id) else {
            return false;
        };
        let conn = &mut self.conns[key];
        if conn.queued_bytes() > self.config.max_backpressure {
            match self.config.slow_consumer {
                super::config::SlowConsumerPolicy::Drop => self.metrics.slow_consumer_drops.inc(),
                super::config::SlowConsumerPolicy::Close => {
                    self.metrics.slow_consumer_closes.inc();
                    self.send_close(key, CloseCode::POLICY, "slow consumer");
                    self.leave_open(key, Some(CloseCode::POLICY));
                }
            }
            return false;
        }
        let queue = conn.queue.get_or_insert_with(|| self.pool.take_queue());
        queue.push_shared(Arc::clone(frame));
        self.metrics.deliveries.inc();
        self.metrics.messages_out.inc();
        self.metrics.bytes_out.add(frame.len() as u64);
        self.mark_dirty(key);
        true
    }

    /// Queues a shared frame to every open connection of this worker (a reference each, no copy),
    /// applying the slow-consumer policy to those over the backpressure cap.
    fn deliver_shared(&mut self, frame: &Arc<[u8]>, except: Option<(usize, ConnId)>) {
        let skip = except
            .filter(|(worker, _)| *worker == self.index)
            .map(|(_, id)| id);
        let cap = self.config.max_backpressure;
        let policy = self.config.slow_consumer;
        let mut slow: Vec<usize> = Vec::new();
        let mut delivered = 0u64;
        for (key, conn) in self.conns.iter_mut() {
            if conn.state != State::Open || conn.has(CLOSE_SENT) {
                continue;
            }
            if skip.is_some_and(|id| id.key as usize == key && id.generation == conn.generation) {
                continue;
            }
            if conn.queued_bytes() > cap {
                match policy {
                    super::config::SlowConsumerPolicy::Drop => {
                        self.metrics.slow_consumer_drops.inc();
                    }
                    super::config::SlowConsumerPolicy::Close => slow.push(key),
                }
                continue;
            }
            let queue = conn.queue.get_or_insert_with(|| self.pool.take_queue());
            queue.push_shared(Arc::clone(frame));
            delivered += 1;
            if !conn.has(DIRTY) {
                conn.set(DIRTY);
                self.dirty.push(key as u32);
            }
        }
        self.metrics.deliveries.add(delivered);
        self.metrics.messages_out.add(delivered);
        self.metrics.bytes_out.add(delivered * frame.len() as u64);
        for key in slow {
            self.metrics.slow_consumer_closes.inc();
            self.send_close(key, CloseCode::POLICY, "slow consumer");
            self.leave_open(key, Some(CloseCode::POLICY));
        }
    }

    fn ring_doorbells(&mut self) {
        for worker in 0..self.doorbells.len() {
            if !std::mem::take(&mut self.doorbells[worker]) {
                continue;
            }
            let fd = self.shared.ring_fds[worker].load(Ordering::Acquire);
            if fd >= 0 {
                self.metrics.handoffs.inc();
                self.ring.ring_doorbell(
                    fd,
                    0,
                    UserData::new(NO_SLOT, 0, Op::Doorbell).encode(),
                    UserData::new(NO_SLOT, 0, Op::Cancel).encode(),
                );
            }
        }
    }
}
