//! One worker: a thread with its own ring, listener, buffer ring, slab of connections, timer wheel and
//! handler, driving every connection through handshake -> open -> closing -> released.
//!
//! The loop: submit and wait, drain completions, dispatch each by its `user_data` (stale generations are
//! dropped), then ring other workers' doorbells once per batch and flush the send queues touched in this
//! batch (one vectored send per connection); a batch that received more than a slice of input
//! (`INPUT_SLICE_BYTES`) also does so after each slice, so that one connection's large input does not
//! hold back the others' replies for the whole batch. Hot path (recv -> parse -> handler -> queue ->
//! send): no allocation per message in steady state (pooled buffers and queues), no lock, no syscall
//! besides `io_uring_enter`, no log line. Teardown order: a connection is released (slot freed, generation
//! bumped) only after its receive, send and shutdown have completed and its direct descriptor is closed.

mod accept;
mod dirty;
mod fanout;
mod handshakes;
mod inbound;
mod lifecycle;
mod outbound;
mod shutdown;
#[cfg(feature = "sim-ring")]
pub mod sim;
mod timers;
mod tls_io;
mod upgrade;

use std::os::fd::OwnedFd;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::protocol::{CloseCode, MessageReader, ReaderLimits};
use crate::reactor::{BufRing, BufferPool, Completion, Op, Ring, UserData, NO_CONNECTION};

use super::config::ServerConfig;
use super::connection::Connection;
use super::handler::{ConnId, Ctx, Handler};
use super::http::refusals;
use super::inbox::WorkerMessage;
use super::metrics::WorkerMetrics;
use super::shared_message::SharedMessage;
use super::timer::TimerWheel;
use super::Shared;

use accept::LogRateLimit;
use timers::{ticks, Deadlines, TickClock};

/// Buffer group id of every worker's provided buffer ring.
const BUF_GROUP: u16 = 0;

/// WebSocket bytes a worker feeds to its readers before it sends what it has queued so far. One batch
/// can hold a megabyte or more of one connection's input, and assembling that into a message (copying
/// it, faulting in fresh pages) takes a millisecond or more: the batch is cut into slices of this many
/// bytes, and the replies queued in one slice are submitted before the next is processed, so that one
/// connection's large input delays the others' replies by a slice, not a batch. 256 KiB is 0.2-0.5 ms
/// of assembly; the extra submit per slice (one `io_uring_enter`, no wait, and replies sent in more
/// pieces) costs about 4 % of the server's CPU per echoed 16-64 KiB message at this size (6 % at 64
/// KiB slices) and nothing for messages far smaller than a slice (docs/RELIABILITY.md).
const INPUT_SLICE_BYTES: usize = 256 * 1024;

/// Most completions one batch takes from the ring (the rest wait in the completion queue for the next
/// batch, which follows at once). The batch's vector is made with this capacity and never grows: a burst
/// of completions (a ramp of handshakes, the sends of a broadcast to every connection) would otherwise
/// leave it, for the worker's life, at the size of the largest batch ever drained (up to the completion
/// queue's 32,768 entries, 1.5 MiB a worker; 400 KiB after a ramp of 17,000 handshakes). Large enough that
/// the end of a batch (sends submitted, doorbells rung) stays rare under load.
const BATCH_COMPLETIONS: usize = 1024;

/// Times a batch's second pass reaps the completions that arrived meanwhile (see [`Worker::run_batch`]):
/// with input arriving without end, the batch still ends (after about this many slices of it).
const REAPS_PER_BATCH: usize = 16;

/// Everything of a worker except its handler (so that the handler can act on it through `Ctx`).
pub struct Core {
    /// TLS handshake work off the worker's thread (`handshakes`), started at the first TLS first flight.
    /// First among the fields: it is dropped (its thread ended) before the ring its doorbell rings.
    handshake_thread: Option<handshakes::HandshakeThread>,
    /// Whether first flights go to the handshake thread (off in unit tests and the simulation, which
    /// process them on the worker, and after the thread could not start).
    offload_handshakes: bool,
    /// The first flights waiting can only wait for the handshake thread: the loop may wait for its ring.
    first_flights_wait: bool,
    pub(crate) index: usize,
    /// Made with room for every slot of the fixed-file table (`table_size`, the most connections a worker
    /// can hold): one reservation of address space whose pages are touched only as slots are first used,
    /// so a ramp from a cold start never regrows it (each doubling copied the slab and left the old copy
    /// in the heap, and left up to half the new one reserved for connections that never came). The timer
    /// wheel's node table is reserved the same way.
    pub(crate) conns: Slab<Connection>,
    ring: Ring,
    bufs: BufRing,
    pool: BufferPool,
    wheel: TimerWheel,
    /// Keys whose timer entry came due on this tick (keeps its capacity from tick to tick).
    timer_scratch: Vec<u32>,
    config: Arc<ServerConfig>,
    limits: ReaderLimits,
    /// Heap held by the readers of this worker's connections for messages being assembled (the sum of
    /// their `buffered_capacity()`), kept under `config.max_assembly_memory`.
    assembly_bytes: usize,
    /// WebSocket bytes fed to the readers since the queued sends were last submitted (see
    /// [`INPUT_SLICE_BYTES`]).
    input_since_flush: usize,
    /// Readers of messages dropped unfinished in this batch, handed at its end, after its sends are
    /// submitted, to the release thread that frees their assembly buffers (the vector keeps its capacity).
    retired_readers: Vec<MessageReader>,
    /// Spare assembly buffers, in their boxes, lent to the readers of messages that span receives
    /// (`MessageReader::feed_reusing`): at most `SPARE_COUNT` of at most `SPARE_MAX` bytes, so that the
    /// pages of large messages are reused rather than faulted in afresh for each.
    spare_assemblies: crate::protocol::message::SpareAssemblies,
    /// permessage-deflate: the worker's inflaters (lent to one feed at a time) and compressors.
    inflate_pool: crate::protocol::deflate::InflatePool,
    compressors: crate::protocol::deflate::Compressors,
    pub(crate) shared: Arc<Shared>,
    /// The node's history (`Shared::history`), held here too so that a publish reaches it without
    /// touching the shared reference count (taken out for the call and put back).
    history: Option<Arc<crate::channels::History<SharedMessage>>>,
    metrics: Arc<WorkerMetrics>,
    listener: Option<OwnedFd>,
    /// The multishot accept is armed (used while below `max_conns`).
    accept_armed: bool,
    /// A cancel of the multishot accept is in flight.
    accept_cancelling: bool,
    /// Single-shot accepts in flight (used from `max_conns` on, one per free slot at most).
    single_accepts: usize,
    /// At most one accept-error log line a second.
    accept_error_log: LogRateLimit,
    /// The last `Shared::accept_rearms` this worker acted on.
    accept_rearms_seen: usize,
    /// Connections this worker serves; beyond it (until the table's reserve is used up), new
    /// connections are answered 503.
    max_conns: usize,
    /// Fixed-file table slots.
    table_size: usize,
    /// Connections refused at accept and still being answered (they use the table's reserve).
    rejected_in_reserve: usize,
    next_generation: u32,
    /// Connections touched in this batch, flushed at its end.
    dirty: dirty::DirtyList,
    /// Connections that left the open state, for the handler's `on_close`.
    closed: Vec<(ConnId, Option<CloseCode>)>,
    /// Messages published on a topic, for the handler's `on_published` (after the current event).
    published: Vec<(Arc<str>, SharedMessage)>,
    /// Workers to wake at the end of this batch (bit per worker).
    doorbells: Vec<bool>,
    /// The connection timeouts, in ticks.
    deadlines: Deadlines,
    /// The periodic tick.
    tick: TickClock,
    /// Ticks without output activity (about one second) before the pools are cut back.
    pool_quiet_ticks: u32,
    shutting_down: bool,
    shutdown_deadline: Option<Instant>,
    /// The drain after a handover to another process (`shutdown.rs`), once begun.
    drain: Option<shutdown::Drain>,
    /// Plaintext decrypted from one TLS receive (reused; TLS connections only).
    tls_plain: Vec<u8>,
    /// TLS first flights waiting for handshake work (`tls_io`).
    first_flights: tls_io::FirstFlights,
    /// Connections (key, generation) whose receives wait for this batch's second pass: those assembling
    /// a message of at least a slice (see [`Worker::run_batch`]).
    heavy: Vec<(u32, u32)>,
    /// Their receive completions, in arrival order (empty between batches; keeps its capacity).
    later: std::collections::VecDeque<Completion>,
    /// Completions reaped between slices of the second pass (empty between uses).
    fresh: Vec<Completion>,
    /// Broadcasting connections paused for their fanout, and what resumes them.
    sender_budget: fanout::SenderBudget,
    /// The large delivery being timed (debug level only).
    fanout_timing: fanout::FanoutTiming,
    /// Refusal lines waiting for their connection's peer address (an `Op::PeerName` in flight each).
    peer_lookups: Vec<refusals::WaitingLine>,
}

/// Exit status of a process whose worker ended unexpectedly (`EX_SOFTWARE`).
pub(crate) const WORKER_DIED_EXIT_STATUS: i32 = 70;

/// Why a worker ended before a shutdown finished it.
#[derive(Debug)]
pub(crate) enum WorkerDeath {
    /// `io_uring_enter` failed with an error that is not transient (EINTR, EAGAIN and EBUSY are retried).
    Ring(std::io::Error),
    /// The worker's thread panicked (in the worker or in the handler).
    Panic(String),
}

impl WorkerDeath {
    /// A panic's payload as text.
    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> WorkerDeath {
        let message = if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_string()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a panic without a message".to_string()
        };
        WorkerDeath::Panic(message)
    }
}

impl std::fmt::Display for WorkerDeath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerDeath::Ring(e) => write!(f, "io_uring_enter failed: {e}"),
            WorkerDeath::Panic(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// Runs worker `index` until shutdown completes. `ready` is called once the worker accepts connections
/// (or with the error that kept it from starting; then this returns `Ok`). An error is a worker that
/// ended before a shutdown: the caller ends the process.
pub(crate) fn run_worker<H: Handler>(
    index: usize,
    listener: OwnedFd,
    shared: Arc<Shared>,
    inbox: Receiver<WorkerMessage>,
    mut handler: H,
    ready: impl FnOnce(Result<String, String>),
) -> Result<(), WorkerDeath> {
    let config = Arc::clone(&shared.config);
    let max_conns = config.effective_connections_per_worker();
    let table_size = max_conns + super::config::admission_reserve(max_conns);
    let cq_entries = (table_size as u32 * 2)
        .next_power_of_two()
        .clamp(4096, 32768);
    let ring = match Ring::new(2048, cq_entries, table_size as u32) {
        Ok(ring) => ring,
        Err(e) => {
            ready(Err(format!("worker {index}: io_uring setup failed: {e}")));
            return Ok(());
        }
    };
    let bufs = match BufRing::new(
        &ring,
        BUF_GROUP,
        config.recv_buffers,
        config.recv_buffer_size,
    ) {
        Ok(bufs) => bufs,
        Err(e) => {
            ready(Err(format!(
                "worker {index}: buffer ring setup failed: {e}"
            )));
            return Ok(());
        }
    };
    let mut core = Core::new(
        index,
        ring,
        bufs,
        Some(listener),
        shared,
        max_conns,
        table_size,
    );
    core.shared.inboxes.set_ring_fd(index, core.ring.fd());
    // A TLS server's handshakes run on a thread of this worker's own, started now, so that the process's
    // threads and descriptors are all there from the start.
    core.offload_handshakes = !cfg!(feature = "sim-ring") && core.config.tls.is_some();
    if core.offload_handshakes {
        core.start_handshake_thread();
    }
    core.arm_accept();
    core.arm_tick();
    if let Err(e) = core.ring.submit_and_wait(0) {
        ready(Err(format!("worker {index}: submit failed: {e}")));
        return Ok(());
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

    let mut completions = Vec::with_capacity(BATCH_COMPLETIONS);
    let mut worker = Worker {
        core,
        handler: &mut handler,
        inbox,
    };
    loop {
        // Transient errors (EINTR, EAGAIN, EBUSY) come back as Ok and the loop retries after draining
        // completions; any other error ends the worker (and the process, see `Server::start`). With
        // TLS first flights still waiting for handshake work on this thread, it does not wait for a
        // completion (first flights waiting only for the handshake thread do not keep it awake).
        let entered = if worker.core.first_flights.is_empty() || worker.core.first_flights_wait {
            worker.core.ring.submit_and_wait(1)
        } else {
            worker.core.ring.submit_and_reap()
        };
        entered.map_err(WorkerDeath::Ring)?;
        worker.run_batch(&mut completions);
        if worker.core.shutting_down && worker.shutdown_finished(&mut completions) {
            break;
        }
    }
    tracing::debug!(worker = index, "worker stopped");
    Ok(())
}

struct Worker<'h, H: Handler> {
    core: Core,
    handler: &'h mut H,
    inbox: Receiver<WorkerMessage>,
}

impl<H: Handler> Worker<'_, H> {
    /// Handles every completion waiting in the ring, then ends the batch (deferred callbacks, flush,
    /// doorbells).
    ///
    /// In two passes: the receives of connections assembling a large message (holding a slice or more,
    /// [`INPUT_SLICE_BYTES`]) wait for the second pass, in their order, so that everything else in the
    /// batch (other connections' requests above all) is handled before a megabyte of copying and page
    /// faults. In the second pass, after each slice, the completions that arrived meanwhile are reaped
    /// (no wait) and handled the same way, at most [`REAPS_PER_BATCH`] times, so that a request arriving
    /// during a long batch waits for a slice, not for the batch.
    fn run_batch(&mut self, completions: &mut Vec<Completion>) {
        completions.clear();
        self.core
            .ring
            .drain_completions_up_to(completions, BATCH_COMPLETIONS);
        let mut later = std::mem::take(&mut self.core.later);
        for completion in completions.drain(..) {
            self.dispatch_or_defer(completion, &mut later);
            self.end_slice_if_due();
        }
        let mut reaps = 0;
        while let Some(completion) = later.pop_front() {
            self.dispatch(completion);
            if self.end_slice_if_due() && reaps < REAPS_PER_BATCH {
                reaps += 1;
                let mut fresh = std::mem::take(&mut self.core.fresh);
                self.core
                    .ring
                    .drain_completions_up_to(&mut fresh, BATCH_COMPLETIONS);
                for completion in fresh.drain(..) {
                    self.dispatch_or_defer(completion, &mut later);
                    self.end_slice_if_due();
                }
                self.core.fresh = fresh;
            }
        }
        self.core.heavy.clear();
        self.core.later = later;
        // After every other completion of the batch (see `tls_io`).
        self.run_first_flights();
        self.end_of_batch();
    }

    /// Mid-batch, once [`INPUT_SLICE_BYTES`] were fed to the readers: the sends and doorbells queued
    /// so far are submitted now, and the completions ready meanwhile are posted (no wait; the rest of
    /// the batch comes next). True when a slice ended.
    fn end_slice_if_due(&mut self) -> bool {
        if self.core.input_since_flush < INPUT_SLICE_BYTES {
            return false;
        }
        self.core.look_up_peers();
        // Doorbells first, as at the end of a batch.
        self.core.ring_doorbells();
        self.core.flush_dirty();
        self.core.fanout_flushed();
        self.core.input_since_flush = 0;
        self.core.submit_now();
        true
    }

    /// Handles `completion` now, or keeps it for the batch's second pass when it is a receive of a
    /// connection assembling a large message (or one whose receives already wait there: order is kept).
    fn dispatch_or_defer(
        &mut self,
        completion: Completion,
        later: &mut std::collections::VecDeque<Completion>,
    ) {
        if UserData::decode(completion.user_data).is_some_and(|ud| self.core.defers_receive(ud)) {
            later.push_back(completion);
            return;
        }
        self.dispatch(completion);
    }

    fn dispatch(&mut self, mut completion: Completion) {
        let Some(ud) = UserData::decode(completion.user_data) else {
            return;
        };
        match ud.op {
            Op::AcceptMulti => self.core.on_accept(false, completion),
            Op::AcceptOne => self.core.on_accept(true, completion),
            Op::Tick => self.on_tick(completion),
            Op::Doorbell => self.on_doorbell(),
            Op::DoorbellSent => self.core.on_doorbell_sent(ud, completion.result),
            Op::PeerName => self.core.on_peer_name(ud, completion.result),
            Op::Ignore => {}
            Op::Recv | Op::Send | Op::Shutdown | Op::Close => {
                let key = ud.key as usize;
                let live = self
                    .core
                    .conns
                    .get(key)
                    .is_some_and(|c| c.generation == ud.generation);
                if !live {
                    // A completion for an earlier incarnation of this slot: drop it (but give back any
                    // buffer it carries).
                    if let Some(buf) = self.core.bufs.take(&mut completion) {
                        self.core.bufs.recycle(buf);
                    }
                    return;
                }
                // A refusal line about a connection still in its opening handshake waits for its
                // peer's address (`http::refusals`).
                let handshaking = self.core.conns[key].state == super::connection::State::Handshake;
                if handshaking {
                    refusals::set_current_connection(Some(refusals::ConnRef {
                        key: ud.key,
                        generation: ud.generation,
                    }));
                }
                match ud.op {
                    Op::Recv => self.on_recv(key, completion),
                    Op::Send => self.core.on_send(key, completion),
                    Op::Shutdown => self.core.on_shutdown(key),
                    Op::Close => self.core.on_close_done(key),
                    _ => unreachable!(),
                }
                if handshaking {
                    refusals::set_current_connection(None);
                }
            }
        }
        self.run_deferred_callbacks();
        if cfg!(debug_assertions) {
            self.check_flag_rules(ud);
        }
    }

    /// Debug builds: the connection this completion was for still keeps the rules of
    /// [`super::connection::flags`] once the completion (and the handler's callbacks) are done.
    fn check_flag_rules(&self, ud: UserData) {
        if ud.key == NO_CONNECTION {
            return;
        }
        if let Some(conn) = self.core.conns.get(ud.key as usize) {
            if conn.generation == ud.generation {
                if let Some(rule) = conn.broken_flag_rule() {
                    panic!(
                        "worker {}: connection {} broke a flag rule after {:?}: {rule} (state {:?}, flags {:#06x})",
                        self.core.index, ud.key, ud.op, conn.state, conn.flags
                    );
                }
            }
        }
    }

    /// Runs the handler's deferred callbacks: `on_published` (in publish order) and `on_close`.
    fn run_deferred_callbacks(&mut self) {
        loop {
            if !self.core.published.is_empty() {
                let mut published = std::mem::take(&mut self.core.published);
                for (topic, message) in published.drain(..) {
                    self.handler.on_published(
                        &mut Ctx {
                            core: &mut self.core,
                        },
                        &topic,
                        &message,
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
        self.core.look_up_peers();
        self.run_deferred_callbacks();
        self.feed_resumed_senders();
        // The other workers' doorbells go ahead of this batch's sends in the submission queue: a large
        // fanout's sends fill it many times over, each time submitted (and run) before the batch ends, and
        // the other workers would wait for all of them before starting on their share. (The flush marks
        // no doorbell: only handlers hand messages on, and their deferred callbacks ran above.)
        self.core.ring_doorbells();
        self.core.flush_dirty();
        self.core.fanout_flushed();
        self.core.input_since_flush = 0;
        if !self.core.retired_readers.is_empty() {
            self.core.submit_now();
            for reader in self.core.retired_readers.drain(..) {
                release_in_background(reader);
            }
        }
    }
}

/// Readers waiting for the release thread: a few at a time (each is one dropped message's buffer); when
/// it falls behind, the worker frees them itself.
const RELEASE_QUEUE: usize = 64;

/// Frees a dropped message's assembly buffer on a thread of its own: giving megabytes back to the system
/// (`munmap` of a 16 MiB buffer) takes about a millisecond, during which the worker would serve no one.
/// One thread for the process, started on first use; if it cannot be started or its queue is full, the
/// caller frees the buffer (as before, just slower).
fn release_in_background(reader: MessageReader) {
    use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
    use std::sync::OnceLock;
    static RELEASER: OnceLock<Option<SyncSender<MessageReader>>> = OnceLock::new();
    let sender = RELEASER.get_or_init(|| {
        let (tx, rx) = sync_channel::<MessageReader>(RELEASE_QUEUE);
        std::thread::Builder::new()
            .name("ringws-release".into())
            .spawn(move || {
                for reader in rx {
                    drop(reader);
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(sender) = sender else {
        return;
    };
    if let Err(TrySendError::Full(reader) | TrySendError::Disconnected(reader)) =
        sender.try_send(reader)
    {
        drop(reader);
    }
}

impl Core {
    /// A worker's core with nothing in flight yet: no connection, nothing armed.
    fn new(
        index: usize,
        ring: Ring,
        bufs: BufRing,
        listener: Option<OwnedFd>,
        shared: Arc<Shared>,
        max_conns: usize,
        table_size: usize,
    ) -> Core {
        let config = Arc::clone(&shared.config);
        let tick = config.tick();
        let history = shared.history.clone();
        Core {
            handshake_thread: None,
            offload_handshakes: false,
            first_flights_wait: false,
            index,
            history,
            // Room for the whole table up front (see `conns`): no regrowth while connections ramp up.
            conns: Slab::with_capacity(table_size),
            ring,
            bufs,
            pool: BufferPool::default(),
            wheel: TimerWheel::with_capacity(table_size),
            timer_scratch: Vec::new(),
            limits: ReaderLimits {
                max_frame_size: config.max_frame_size,
                max_message_size: config.max_message_size,
            },
            assembly_bytes: 0,
            input_since_flush: 0,
            retired_readers: Vec::new(),
            spare_assemblies: crate::protocol::message::SpareAssemblies::new(),
            inflate_pool: Default::default(),
            compressors: crate::protocol::deflate::Compressors::new(config.compression.level),
            metrics: Arc::clone(&shared.metrics[index]),
            listener,
            accept_armed: false,
            accept_cancelling: false,
            single_accepts: 0,
            accept_error_log: LogRateLimit::new(accept::ACCEPT_ERROR_LOG_INTERVAL),
            accept_rearms_seen: 0,
            max_conns,
            table_size,
            rejected_in_reserve: 0,
            next_generation: 1,
            dirty: dirty::DirtyList::default(),
            closed: Vec::new(),
            published: Vec::new(),
            doorbells: vec![false; shared.metrics.len()],
            deadlines: Deadlines::new(&config, tick),
            tick: TickClock::start(tick),
            pool_quiet_ticks: ticks(Duration::from_secs(1), tick),
            shutting_down: false,
            shutdown_deadline: None,
            drain: None,
            tls_plain: Vec::new(),
            first_flights: tls_io::FirstFlights::default(),
            heavy: Vec::new(),
            later: std::collections::VecDeque::new(),
            fresh: Vec::new(),
            sender_budget: fanout::SenderBudget::default(),
            fanout_timing: fanout::FanoutTiming::default(),
            peer_lookups: Vec::new(),
            config,
            shared,
        }
    }

    /// Whether the completion `ud` waits for the batch's second pass: a receive of a connection
    /// assembling a message of a slice or more, or of one whose receives already wait there (marked in
    /// `heavy` until the batch ends, so that its receives keep their order).
    fn defers_receive(&mut self, ud: UserData) -> bool {
        if ud.op != Op::Recv {
            return false;
        }
        let entry = (ud.key, ud.generation);
        if self.heavy.contains(&entry) {
            return true;
        }
        let assembling_large = self.conns.get(ud.key as usize).is_some_and(|conn| {
            conn.generation == ud.generation && conn.reader.buffered_capacity() >= INPUT_SLICE_BYTES
        });
        if assembling_large {
            self.heavy.push(entry);
        }
        assembling_large
    }

    /// Submits what is queued without waiting for completions, posting those that are ready (mid-batch:
    /// the rest of the batch is processed next).
    fn submit_now(&mut self) {
        if let Err(e) = self.ring.submit_and_reap() {
            // Not a transient error (those come back as Ok): the loop's next submit meets it again and
            // ends the worker there.
            tracing::debug!(worker = self.index, "mid-batch submit failed: {e}");
        }
    }

    fn ud(&self, key: usize, op: Op) -> u64 {
        UserData::new(key as u32, self.conns[key].generation, op).encode()
    }

    // ---- used by handlers through `Ctx` ----
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::OpCode;
    use crate::server::connection::flags::{DIRTY, ENDING, FD_CLOSING, RECV_ARMED};
    use crate::server::inbox::Inboxes;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    /// A worker's core on a real (small) ring, with no listener and no connection.
    /// A worker on [`test_core`] with the echo handler, and its inboxes (the caller keeps them open).
    fn echo_worker(handler: &mut crate::app::Echo) -> (Inboxes, Worker<'_, crate::app::Echo>) {
        let (inboxes, mut receivers) = Inboxes::new(1, 4);
        let worker = Worker {
            core: test_core(),
            handler,
            inbox: receivers.remove(0),
        };
        (inboxes, worker)
    }

    pub(super) fn test_core() -> Core {
        test_core_of(1).0
    }

    /// The core of worker 0 of `workers` (on a real small ring, no listener, no connection), and every
    /// worker's inbox receiver (kept, so that hand-offs are queued).
    pub(super) fn test_core_of(workers: usize) -> (Core, Vec<Receiver<WorkerMessage>>) {
        let config = Arc::new(ServerConfig::default());
        let (inboxes, receivers) = Inboxes::new(workers, config.inbox_capacity);
        let shared = Arc::new(Shared {
            config: Arc::clone(&config),
            metrics: (0..workers)
                .map(|_| Arc::new(WorkerMetrics::default()))
                .collect(),
            inboxes,
            shutdown: AtomicBool::new(false),
            broker_stop: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            accepts_stopped: AtomicUsize::new(0),
            accept_rearms: AtomicUsize::new(0),
            websockets_open: AtomicUsize::new(0),
            broker: None,
            history: None,
            presence: None,
        });
        #[cfg(not(feature = "sim-ring"))]
        let ring = Ring::new(64, 128, 16).expect("io_uring");
        // Under `sim-ring` a simulated ring, every slot of its table holding a connection's descriptor.
        #[cfg(feature = "sim-ring")]
        let ring = {
            let mut ring = Ring::simulated(16);
            for _ in 0..16 {
                ring.accept_one(0, UserData::new(NO_CONNECTION, 0, Op::AcceptOne).encode());
                ring.kernel_accept(0, false);
            }
            ring.drain_completions(&mut Vec::new());
            ring
        };
        let bufs = BufRing::new(&ring, BUF_GROUP, 16, 4096).expect("buffer ring");
        (Core::new(0, ring, bufs, None, shared, 8, 16), receivers)
    }

    /// A broadcast's doorbell to another worker goes into the submission queue ahead of the sends of this
    /// worker's own deliveries, so that a large fanout's other workers start on their share before this
    /// worker's sends have run (they ran first: the doorbell came after the last of them, which a
    /// fanout of thousands submits in many full submission queues).
    #[cfg(feature = "sim-ring")]
    #[test]
    fn other_workers_are_woken_ahead_of_a_batchs_sends() {
        use crate::reactor::sim::{SimOp, SIM_RING_FD};
        let (core, mut receivers) = test_core_of(2);
        core.shared.inboxes.set_ring_fd(1, SIM_RING_FD);
        let mut handler = crate::app::Broadcast {
            include_sender: true,
        };
        // Worker 1's inbox stays open (`receivers` keeps it): the hand-off is queued there.
        let mut worker = Worker {
            core,
            handler: &mut handler,
            inbox: receivers.remove(0),
        };
        for file_index in 0..4 {
            open_connection(&mut worker.core, file_index);
        }
        worker
            .core
            .broadcast(crate::protocol::MessageKind::Text, b"to everyone", None);
        worker.end_of_batch();
        let pending = worker.core.ring.kernel_pending();
        let position = |wanted: fn(&SimOp) -> bool| pending.iter().position(|s| wanted(&s.op));
        let doorbell = position(|op| matches!(op, SimOp::MsgRing { .. })).expect("a doorbell");
        let first_send = position(|op| matches!(op, SimOp::Send { .. })).expect("the sends");
        assert_eq!(
            pending
                .iter()
                .filter(|s| matches!(s.op, SimOp::Send { .. }))
                .count(),
            4
        );
        assert!(
            doorbell < first_send,
            "the doorbell ({doorbell}) comes after this worker's sends ({first_send}..)"
        );
        assert!(matches!(
            receivers[0].try_recv(),
            Ok(WorkerMessage::Broadcast { .. })
        ));
    }

    /// An open connection of `core` (receive armed), as after its handshake.
    pub(super) fn open_connection(core: &mut Core, file_index: u32) -> usize {
        let generation = core.next_generation;
        core.next_generation += 1;
        let key = core
            .conns
            .insert(Connection::new(file_index, generation, 0));
        core.conns[key].state = crate::server::connection::State::Open;
        core.conns[key].set(RECV_ARMED);
        key
    }

    /// One connection's large input in one batch (a fragment being assembled, as in the
    /// incomplete-message attack) does not hold back a reply queued earlier in the batch for more than a
    /// slice: once `INPUT_SLICE_BYTES` were fed, the reply's send is submitted, before the rest of the
    /// batch is processed. (The input is fed as the receive completions of a batch feed it, with the
    /// check that follows each completion.)
    #[test]
    fn a_large_input_lets_queued_replies_go_out_after_each_slice() {
        let mut handler = crate::app::Echo;
        let (_inboxes, mut worker) = echo_worker(&mut handler);
        let bystander = open_connection(&mut worker.core, 0);
        let big = open_connection(&mut worker.core, 1);
        let ordinary = open_connection(&mut worker.core, 2);

        // Ordinary messages never count toward a slice: 64 whole 16 KiB messages (1 MiB) leave it at 0.
        let mut small = vec![0u8; 4 + 16384];
        small[..4].copy_from_slice(&[0x82, 126, 0x40, 0x00]);
        for _ in 0..64 {
            worker.feed(ordinary, &mut small.clone());
            worker.end_slice_if_due();
        }
        assert_eq!(worker.core.input_since_flush, 0);
        assert!(!worker.core.conns[ordinary].send_in_flight());

        // The big connection: a non-final binary fragment announcing 1 MiB (mask 0), in 4 KiB receives;
        // its input counts once the message being assembled holds a slice.
        const RECEIVE: usize = 4096;
        let mut first = vec![0u8; RECEIVE];
        first[..14].copy_from_slice(&[0x02, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]);
        let per_slice = INPUT_SLICE_BYTES / RECEIVE;
        let mut fed = 0;
        let receive = |worker: &mut Worker<'_, crate::app::Echo>, fed: &mut usize| {
            let mut bytes = if *fed == 0 {
                first.clone()
            } else {
                vec![0u8; RECEIVE]
            };
            *fed += 1;
            worker.feed(big, &mut bytes);
            worker.end_slice_if_due();
        };
        while worker.core.conns[big].reader.buffered_capacity() < INPUT_SLICE_BYTES {
            receive(&mut worker, &mut fed);
        }
        worker.core.input_since_flush = 0;
        worker.core.queue_frame(bystander, OpCode::Binary, b"reply");

        // A slice less one receive: nothing flushed yet (no submit per receive).
        for _ in 0..per_slice - 1 {
            receive(&mut worker, &mut fed);
        }
        assert!(worker.core.conns[big].reader.is_mid_message());
        assert!(worker.core.conns[bystander].has(DIRTY));
        assert!(!worker.core.conns[bystander].send_in_flight());
        // The slice's last receive: the reply is submitted mid-batch.
        receive(&mut worker, &mut fed);
        assert!(
            worker.core.conns[bystander].send_in_flight(),
            "the reply waits for the end of the batch"
        );
        assert!(!worker.core.conns[bystander].has(DIRTY));
        assert_eq!(worker.core.input_since_flush, 0);
    }

    /// The batch's two passes: a receive of a connection assembling a message of a slice or more waits for
    /// the second pass, and so does every later receive of that connection in the batch (order kept), even
    /// once its message is done; other connections' receives and other operations do not wait.
    #[test]
    fn receives_of_a_large_message_wait_for_the_second_pass_in_order() {
        let mut handler = crate::app::Echo;
        let (_inboxes, mut worker) = echo_worker(&mut handler);
        let big = open_connection(&mut worker.core, 0);
        let small = open_connection(&mut worker.core, 1);
        let ud = |core: &Core, key: usize, op: Op| {
            UserData::new(key as u32, core.conns[key].generation, op)
        };
        // A non-final fragment announcing 1 MiB (mask 0), a slice of it received.
        let mut input = vec![0u8; 14 + INPUT_SLICE_BYTES];
        input[..14].copy_from_slice(&[0x02, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]);
        let small_recv = ud(&worker.core, small, Op::Recv);
        assert!(!worker.core.defers_receive(small_recv));
        let big_recv = ud(&worker.core, big, Op::Recv);
        assert!(!worker.core.defers_receive(big_recv), "nothing held yet");
        worker.feed(big, &mut input);
        assert!(worker.core.conns[big].reader.buffered_capacity() >= INPUT_SLICE_BYTES);
        assert!(worker.core.defers_receive(big_recv));
        assert!(!worker.core.defers_receive(small_recv));
        assert!(!worker.core.defers_receive(ud(&worker.core, big, Op::Send)));
        // Its message dropped (nothing held any more): its receives still wait, behind the first.
        worker
            .core
            .close_unfinished(big, CloseCode::TRY_AGAIN_LATER, "assembly memory budget");
        assert_eq!(worker.core.conns[big].reader.buffered_capacity(), 0);
        assert!(
            worker.core.defers_receive(big_recv),
            "order kept within the batch"
        );
        // A stale generation of the slot is not that connection.
        let stale = UserData::new(big as u32, big_recv.generation.wrapping_add(1), Op::Recv);
        assert!(!worker.core.defers_receive(stale));
        // The next batch starts afresh.
        worker.core.heavy.clear();
        assert!(!worker.core.defers_receive(big_recv));
    }

    /// A connection assembling a message of a slice or more is read one receive buffer per turn: its
    /// multishot receive is cancelled once its message holds a slice, and from then on each turn of the
    /// worker (submit and wait, then the batch) carries at most one of its receives, however much input
    /// waits in its socket. When the message is done, a multishot receive takes over again.
    #[cfg(not(feature = "sim-ring"))]
    #[test]
    fn a_connection_assembling_a_large_message_gets_one_receive_per_turn() {
        use crate::server::connection::fanout_flags::RECV_LIMITED;
        use std::io::Write;
        let mut handler = crate::app::Echo;
        let (_inboxes, mut worker) = echo_worker(&mut handler);
        let (_ours, mut peer) =
            crate::reactor::ring::testing::socket_in_slot_zero(&worker.core.ring);
        peer.set_nonblocking(true).unwrap();
        let key = open_connection(&mut worker.core, 0);
        worker.core.conns[key].clear(RECV_ARMED);
        worker.core.arm_recv(key);
        // A final binary frame of 1 MiB (the default largest message; mask 0), written as the socket
        // takes it.
        const MESSAGE: usize = 1 << 20;
        let mut input = vec![0u8; 14 + MESSAGE];
        input[..14].copy_from_slice(&[0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]);
        let mut written = 0;
        let mut completions = Vec::new();
        let mut most_before = 0;
        let mut most_after = 0;
        let mut turns_limited = 0;
        let mut reply = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while reply.len() < 10 + MESSAGE {
            assert!(
                std::time::Instant::now() < deadline,
                "stuck after {written} bytes"
            );
            while written < input.len() {
                match peer.write(&input[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            let limited = worker.core.conns[key].has_fanout(RECV_LIMITED);
            worker.core.ring.submit_and_wait(1).unwrap();
            completions.clear();
            worker.core.ring.drain_completions(&mut completions);
            let receives = completions
                .iter()
                .filter(|c| {
                    UserData::decode(c.user_data).is_some_and(|ud| ud.op == Op::Recv)
                        && c.result > 0
                })
                .count();
            if limited {
                most_after = most_after.max(receives);
                turns_limited += 1;
            } else if worker.core.conns[key].reader.buffered_capacity() < INPUT_SLICE_BYTES {
                most_before = most_before.max(receives);
            }
            for completion in completions.drain(..) {
                worker.dispatch(completion);
            }
            worker.end_of_batch();
            let mut chunk = [0u8; 65536];
            loop {
                match std::io::Read::read(&mut peer, &mut chunk) {
                    Ok(0) => panic!("the worker closed the connection"),
                    Ok(n) => reply.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
        assert_eq!(worker.core.metrics.receives_limited.get(), 1);
        assert!(
            most_before > 1,
            "a multishot receive took {most_before} buffers a turn at most"
        );
        assert_eq!(most_after, 1, "at most one receive per turn once limited");
        assert!(turns_limited > 100, "{turns_limited} limited turns");
        // The echo came back whole (a 10-byte header, the payload), and the receive is multishot again.
        assert_eq!(&reply[..2], &[0x82, 127]);
        assert!(reply[10..].iter().all(|&b| b == 0));
        assert!(!worker.core.conns[key].has_fanout(RECV_LIMITED));
        assert!(worker.core.conns[key].has(RECV_ARMED));
    }

    /// A message dropped unfinished (1013 over the assembly budget, 1008 at its deadline) leaves the
    /// budget at once, but its buffer is freed only at the end of the batch, after the batch's sends
    /// (here, the close frame) are submitted.
    #[test]
    fn an_unfinished_message_is_freed_after_the_batch_sends() {
        let mut handler = crate::app::Echo;
        let (_inboxes, mut worker) = echo_worker(&mut handler);
        let key = open_connection(&mut worker.core, 0);
        // A non-final fragment announcing 1 MiB (mask 0), of which 100,000 bytes arrive.
        let mut input = vec![0u8; 14 + 100_000];
        input[..14].copy_from_slice(&[0x02, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]);
        worker.feed(key, &mut input);
        let held = worker.core.conns[key].reader.buffered_capacity();
        assert!(held >= 100_000);
        assert_eq!(worker.core.assembly_bytes, held);

        worker
            .core
            .close_unfinished(key, CloseCode::TRY_AGAIN_LATER, "assembly memory budget");
        assert_eq!(worker.core.assembly_bytes, 0);
        assert_eq!(worker.core.conns[key].reader.buffered_capacity(), 0);
        let parked: usize = worker
            .core
            .retired_readers
            .iter()
            .map(MessageReader::buffered_capacity)
            .sum();
        assert_eq!(parked, held, "freed before the batch's sends");

        worker.end_of_batch();
        assert!(worker.core.conns[key].send_in_flight());
        assert!(worker.core.retired_readers.is_empty());
        assert!(worker.core.retired_readers.capacity() > 0);
    }

    /// A server configuration for `localhost` (a throwaway self-signed certificate).
    fn tls_server_config() -> Arc<rustls::ServerConfig> {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        Arc::new(config)
    }

    /// A client's first flight (its ClientHello) for `localhost`.
    fn client_hello() -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
                .unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        assert!(hello.len() > 100);
        hello
    }

    /// A TLS connection of `core` before any of its input was processed, as after its accept.
    fn tls_connection(
        core: &mut Core,
        file_index: u32,
        config: &Arc<rustls::ServerConfig>,
    ) -> usize {
        let generation = core.next_generation;
        core.next_generation += 1;
        let key = core
            .conns
            .insert(Connection::new(file_index, generation, 0));
        core.conns[key].set(RECV_ARMED);
        let tls = crate::server::tls::TlsState::new(config).unwrap();
        core.conns[key].put_tls(Box::new(tls));
        key
    }

    fn tls_of(core: &Core, key: usize) -> &crate::server::tls::TlsState {
        core.conns[key].tls().unwrap()
    }

    /// A first flight is not processed when it arrives but after the batch's other completions: a client
    /// that left meanwhile (its end-of-file in the same batch) costs no handshake work and is counted as
    /// abandoned; one that stays is answered (the server's flight queued) at the end of the batch.
    #[test]
    fn a_first_flight_waits_for_the_batch_and_a_client_that_left_costs_no_handshake() {
        let mut handler = crate::app::Echo;
        let (_inboxes, mut worker) = echo_worker(&mut handler);
        let config = tls_server_config();
        let gone = tls_connection(&mut worker.core, 0, &config);
        let stays = tls_connection(&mut worker.core, 1, &config);

        worker.on_tls_input(gone, &mut client_hello());
        // The one that stays sends its ClientHello in two receives: both wait, in order.
        let hello = client_hello();
        let (first, second) = hello.split_at(hello.len() / 2);
        worker.on_tls_input(stays, &mut first.to_vec());
        worker.on_tls_input(stays, &mut second.to_vec());
        assert_eq!(
            worker.core.first_flights.waiting_bytes(),
            2 * hello.len(),
            "the first flights wait"
        );
        for key in [gone, stays] {
            assert!(!tls_of(&worker.core, key).input_seen);
            assert_eq!(tls_of(&worker.core, key).queued_bytes(), 0);
        }
        assert_eq!(tls_of(&worker.core, stays).deferred_inputs, 2);

        // Later in the batch: the first client's end-of-file.
        worker.core.on_peer_eof(gone);
        worker.run_first_flights();

        assert!(worker.core.first_flights.is_empty());
        assert_eq!(worker.core.metrics.tls_abandoned.get(), 1);
        assert!(
            !tls_of(&worker.core, gone).input_seen,
            "no handshake work for a client that left"
        );
        assert_eq!(tls_of(&worker.core, gone).queued_bytes(), 0);
        let answered = tls_of(&worker.core, stays);
        assert!(answered.input_seen && answered.deferred_inputs == 0);
        assert!(
            answered.queued_bytes() > 100,
            "the server's flight is queued for the client that stayed"
        );
        assert_eq!(worker.core.metrics.tls_failures.get(), 0);
    }

    /// An echo worker whose first flights go to its handshake thread, its TLS configuration, and one TLS
    /// connection before any input.
    fn offloading_worker(
        handler: &mut crate::app::Echo,
    ) -> (
        Inboxes,
        Worker<'_, crate::app::Echo>,
        Arc<rustls::ServerConfig>,
        usize,
    ) {
        let (inboxes, mut worker) = echo_worker(handler);
        worker.core.offload_handshakes = true;
        let config = tls_server_config();
        let key = tls_connection(&mut worker.core, 0, &config);
        (inboxes, worker, config, key)
    }

    /// Connection `key`'s state is here, all its input read, the server's flight queued, no TLS failure.
    fn assert_flight_queued(worker: &Worker<'_, crate::app::Echo>, key: usize) {
        assert!(!worker.core.conns[key].tls_away());
        let answered = tls_of(&worker.core, key);
        assert!(answered.input_seen && answered.deferred_inputs == 0);
        assert!(
            answered.queued_bytes() > 100,
            "the server's flight is queued"
        );
        assert_eq!(worker.core.metrics.tls_failures.get(), 0);
    }

    /// Runs the worker's first-flight turns until no TLS state is away on the handshake thread (at most
    /// 5 s).
    fn until_handshakes_back(worker: &mut Worker<'_, crate::app::Echo>) {
        let started = Instant::now();
        while worker
            .core
            .handshake_thread
            .as_ref()
            .is_some_and(|thread| thread.away() > 0)
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the handshake thread answers"
            );
            std::thread::sleep(Duration::from_millis(1));
            worker.run_first_flights();
        }
    }

    /// With the handshake thread, a first flight leaves the worker with its connection's TLS state (the
    /// worker may wait for its ring meanwhile) and comes back answered: the server's flight queued, the
    /// handshake work done off the worker's thread.
    #[test]
    fn a_first_flight_is_answered_on_the_handshake_thread() {
        let mut handler = crate::app::Echo;
        let (_inboxes, mut worker, _config, key) = offloading_worker(&mut handler);

        worker.on_tls_input(key, &mut client_hello());
        worker.run_first_flights();
        assert!(worker.core.conns[key].tls_away(), "the state is away");
        assert!(worker.core.conns[key].is_tls(), "still a TLS connection");
        assert!(worker.core.first_flights.is_empty());
        assert!(!worker.core.first_flights_wait);
        until_handshakes_back(&mut worker);

        assert_flight_queued(&worker, key);
        assert!(
            worker.core.conns[key].has(DIRTY),
            "the connection is flushed at the batch's end"
        );
    }

    /// A receive that arrives while its connection's state is away waits behind it and is handled after
    /// it, in order: a ClientHello in two receives, the second arriving while the first is away, is
    /// answered once both were read.
    #[test]
    fn input_arriving_while_the_state_is_away_waits_behind_it() {
        let mut handler = crate::app::Echo;
        let (_inboxes, mut worker, _config, key) = offloading_worker(&mut handler);
        let hello = client_hello();
        let (first, second) = hello.split_at(hello.len() / 2);

        worker.on_tls_input(key, &mut first.to_vec());
        worker.run_first_flights();
        assert!(worker.core.conns[key].tls_away());
        worker.on_tls_input(key, &mut second.to_vec());
        assert_eq!(worker.core.first_flights.waiting_bytes(), second.len());
        // Until the first half is back, the second waits (and only the thread can let it go on: the
        // worker may wait for its ring); then it goes away in its turn.
        let started = Instant::now();
        loop {
            worker.run_first_flights();
            if worker.core.first_flights.is_empty() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5));
            assert!(worker.core.conns[key].tls_away());
            assert!(worker.core.first_flights_wait);
            assert_eq!(worker.core.first_flights.waiting_bytes(), second.len());
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(worker.core.conns[key].tls_away(), "the second half is away");
        until_handshakes_back(&mut worker);
        assert!(worker.core.first_flights.is_empty());
        assert_flight_queued(&worker, key);
    }

    /// A connection whose slot is released and reused while its state is away: the state that comes
    /// back is dropped, and the slot's new connection is untouched.
    #[test]
    fn a_state_back_for_a_reused_slot_is_dropped() {
        let mut handler = crate::app::Echo;
        let (_inboxes, mut worker, config, key) = offloading_worker(&mut handler);
        worker.on_tls_input(key, &mut client_hello());
        worker.run_first_flights();
        assert!(worker.core.conns[key].tls_away());
        worker.core.conns.remove(key);
        let reused = tls_connection(&mut worker.core, 0, &config);
        assert_eq!(reused, key, "the slot is reused");

        until_handshakes_back(&mut worker);
        let conn = &worker.core.conns[key];
        assert!(!conn.tls_away());
        let fresh = tls_of(&worker.core, key);
        assert!(!fresh.input_seen, "the new connection's state is its own");
        assert_eq!(fresh.queued_bytes(), 0);
    }

    /// Past `FIRST_FLIGHT_BACKLOG_BYTES` of first flights waiting, a new client is closed unanswered and
    /// counted; the ones waiting are still answered.
    #[test]
    fn a_full_backlog_of_first_flights_closes_new_clients_unanswered() {
        let mut handler = crate::app::Echo;
        let (_inboxes, mut worker) = echo_worker(&mut handler);
        let config = tls_server_config();
        let waiting = tls_connection(&mut worker.core, 0, &config);
        let late = tls_connection(&mut worker.core, 1, &config);
        // A client sending its first flight in pieces until the backlog is full (it is not parsed
        // before its turn, so any bytes do).
        let piece = vec![0x16u8; 64 * 1024];
        for _ in 0..tls_io::FIRST_FLIGHT_BACKLOG_BYTES / piece.len() {
            worker.on_tls_input(waiting, &mut piece.clone());
        }
        assert_eq!(
            worker.core.first_flights.waiting_bytes(),
            tls_io::FIRST_FLIGHT_BACKLOG_BYTES
        );
        assert_eq!(worker.core.metrics.tls_backlog_refusals.get(), 0);
        worker.on_tls_input(late, &mut client_hello());
        assert_eq!(worker.core.metrics.tls_backlog_refusals.get(), 1);
        assert!(worker.core.conns[late].has(ENDING));
        assert_eq!(
            worker.core.first_flights.waiting_bytes(),
            16 * piece.len(),
            "the late one's bytes are not kept"
        );
    }

    /// A burst of completions is taken [`BATCH_COMPLETIONS`] at a time: the batch vector never grows past
    /// that (a ramp of handshakes once left it at the burst's size for the worker's life), and the rest
    /// waits in the completion queue for the next batch.
    #[cfg(not(feature = "sim-ring"))]
    #[test]
    fn a_burst_of_completions_is_taken_a_bounded_batch_at_a_time() {
        let mut handler = crate::app::Echo;
        let (_inboxes, mut worker) = echo_worker(&mut handler);
        worker.core.ring = Ring::new(64, 4096, 16).expect("io_uring");
        let burst = BATCH_COMPLETIONS + 500;
        let ignored = UserData::new(NO_CONNECTION, 0, Op::Ignore).encode();
        // Shutdowns of an empty slot: each completes at once (an error the worker ignores).
        for _ in 0..burst {
            worker.core.ring.shutdown(15, libc::SHUT_WR, ignored);
        }
        worker.core.ring.submit_and_wait(burst).expect("submit");
        assert_eq!(worker.core.ring.completions_waiting(), burst);
        let mut completions = Vec::with_capacity(BATCH_COMPLETIONS);
        worker.run_batch(&mut completions);
        assert_eq!(completions.capacity(), BATCH_COMPLETIONS);
        assert_eq!(worker.core.ring.completions_waiting(), 500);
        worker.run_batch(&mut completions);
        assert_eq!(worker.core.ring.completions_waiting(), 0);
        assert_eq!(completions.capacity(), BATCH_COMPLETIONS);
    }

    /// A released connection's timer entry goes with it: the next connection in its slot never gets a
    /// check it did not schedule.
    #[test]
    fn a_released_connection_leaves_no_timer_entry_for_its_slot() {
        let mut core = test_core();
        let key = open_connection(&mut core, 0);
        core.schedule(key, 50);
        assert_eq!(core.wheel.due(key as u32), Some(50));
        core.on_close_done(key);
        assert_eq!(core.wheel.due(key as u32), None);
        assert!(core.wheel.is_empty());
        let next = open_connection(&mut core, 1);
        assert_eq!(next, key, "the slab reuses the slot");
        let mut fired = Vec::new();
        core.wheel.advance_to(100, &mut fired);
        assert!(fired.is_empty(), "{fired:?}");
    }

    /// A connection marked dirty and released in the same batch (a close-deadline tick, then its close
    /// completion) is skipped by the flush, as is the stale entry of a slot reused in that batch.
    #[test]
    fn flush_skips_connections_released_after_being_marked_dirty() {
        let mut core = test_core();
        let key = core.conns.insert(Connection::new(0, 1, 0));
        core.conns[key].set(ENDING | FD_CLOSING);
        core.mark_dirty(key);
        core.conns.remove(key);
        core.flush_dirty();

        // The slot reused by a new connection that was not touched: the stale entry leaves it alone
        // (a flush would start releasing this ending connection, with nothing in flight).
        let old = core.conns.insert(Connection::new(0, 2, 0));
        core.mark_dirty(old);
        core.conns.remove(old);
        let new = core.conns.insert(Connection::new(1, 3, 0));
        assert_eq!(new, old, "the slab reuses the slot");
        core.conns[new].set(ENDING);
        core.flush_dirty();
        assert!(!core.conns[new].has(FD_CLOSING));

        // Marked itself, it is flushed (and released) once.
        core.mark_dirty(new);
        core.flush_dirty();
        assert!(core.conns[new].has(FD_CLOSING));
        assert!(!core.conns[new].has(DIRTY));
    }

    /// The connection table and the timer wheel are reserved for the whole fixed-file table when the
    /// worker starts, so filling the table never regrows (copies) them.
    #[test]
    fn the_connection_table_is_reserved_for_the_whole_fixed_file_table() {
        let mut core = test_core();
        let table = core.table_size;
        let (slab, wheel) = (core.conns.capacity(), core.wheel.capacity());
        assert!(slab >= table, "slab capacity {slab} < table {table}");
        assert!(wheel >= table, "wheel capacity {wheel} < table {table}");
        for i in 0..table {
            let key = core
                .conns
                .insert(Connection::new(i as u32, i as u32 + 1, 0));
            core.wheel.schedule(key as u32, 100);
        }
        assert_eq!(core.conns.capacity(), slab);
        assert_eq!(core.wheel.capacity(), wheel);
    }
}
