//! One worker thread: an event loop driving its share of the connections through connect, handshake,
//! the scenario's traffic, and close, on an I/O engine (`engine.rs`: io_uring or epoll) it talks to in
//! completions (connected, bytes received, send done, end of stream, error).
//!
//! This file holds the types every room shares (`State`, `Behaviour`, `Traffic`, `Conn`, `Ctx`,
//! `Worker`), `run_worker`, the loop, the per-connection timers and the dispatch of the engine's events.
//! Each job has a room of its own: `phases.rs` (phase changes, drain, the end, what the coordinator is
//! told), `connect.rs` (connect queue, backoff, TLS and upgrade request, the 101 check), `inbound.rs`
//! (received bytes, frames, message checks), `traffic.rs` (what open connections send, the backlog
//! bound), `outbound.rs` (the dirty list and the sends) and `teardown.rs` (how connections end).
//!
//! Hot path (bytes received -> `MessageReader::feed` -> check -> queue next frame -> one send per
//! connection per loop iteration, all of a loop's sends submitted together; with `--deflate`, inflating
//! and compressing with the worker's pooled inflaters and one compressor): no allocation in steady state
//! (each connection's output buffers and in-flight queue keep their capacity; receive buffers belong to the
//! engine), no lock, no log line. Counters are plain integers published to the coordinator every few
//! milliseconds; the latency histogram is handed over once a second. A message is counted as received only
//! after every byte of it was checked. No part of the worker makes a socket call itself.
//!
//! `wss://` connections hold a TLS state (`tls.rs`) between the engine and the WebSocket layer: received
//! ciphertext is decrypted into the worker's reused plaintext buffer, which then takes the path plain bytes
//! take; gathered frames are encrypted when the engine can take a send. Plain connections only test that
//! the state is absent.

mod connect;
mod inbound;
mod outbound;
mod phases;
mod teardown;
mod traffic;

use crate::cli::Scenario;
use crate::clock::now_ns;
use crate::deflate::MessageCompressor;
use crate::engine::{Engine, EngineConfig, EngineKind, EpollEngine, IoEvent, NO_SOCK};
use crate::payload::Scratch;
use crate::plan::{Phase, Plan, Shared};
use crate::stats::{self, Counter, Counters};
use crate::tls::TlsConn;
use crate::uring::UringEngine;
use crate::window::Window;
use crate::wire::{ClientHandshake, MessageReader, ReaderLimits, Rng};
use hdrhistogram::Histogram;
use ringws::protocol::deflate::{InflatePool, Inflater};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The payload of the connect scenario's verification message.
pub const VERIFY_PAYLOAD: &[u8] = b"ringws-loadgen verify";

/// How often the counters are published to the coordinator.
const COUNTER_PUBLISH_NS: u64 = 5_000_000;
/// How often the latency histogram is handed over to the coordinator.
const HISTOGRAM_HANDOVER_NS: u64 = 1_000_000_000;
/// Longest engine wait, so that phase changes are seen within this time.
const MAX_WAIT_NS: u64 = 10_000_000;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not connected; waiting in the connect queue or for a timer (backoff, next churn cycle).
    Waiting,
    Connecting,
    Handshaking,
    Open,
    /// We sent a close frame and wait for the server's.
    Closing,
    /// Finished for this run.
    Dead,
}

/// What a connection does once open, fixed by the scenario and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Echo: sends messages and checks that each comes back.
    Echo,
    /// Broadcast: receives every publisher's messages.
    Subscriber,
    /// Broadcast: publishes on a schedule.
    Publisher,
    /// Connect: holds the connection (pings, the verify message).
    Idle,
    /// Churn: connects, echoes `--messages`, closes, again every cycle.
    Churn,
}

/// Per-connection traffic state.
#[derive(Default)]
struct Traffic {
    /// Echo: send time (intended send time in open loop) of each message not yet echoed, oldest first.
    in_flight: VecDeque<u64>,
    next_send_seq: u64,
    next_recv_seq: u64,
    /// Open loop / publisher: when the next message is due.
    next_due_ns: u64,
    /// Subscriber: one track per publisher.
    tracks: Vec<inbound::Track>,
    verified: bool,
    cycle_start_ns: u64,
}

/// One connection of the worker (kept for the whole run; its socket comes and goes).
struct Conn {
    /// The connection's id over the whole run (all workers and processes).
    gid: u32,
    /// The engine's socket handle (`NO_SOCK` between attempts).
    sock: u32,
    state: State,
    behaviour: Behaviour,
    /// On the worker's list of connections to flush.
    dirty: bool,
    /// Counted in the ramp until it first opens or fails for good.
    in_ramp: bool,
    /// When the connection's one live timer fires (0: none; older heap entries are stale).
    timer_due: u64,
    /// Reconnects since the connection last opened (the backoff grows with them).
    attempts: u32,
    reader: MessageReader,
    /// permessage-deflate: the inflater of a compressed message that spans receives (from the worker's
    /// pool, only while that message is in progress), or, where the server keeps its context, the
    /// connection's own inflater from its first compressed message on.
    inflating: Option<Box<Inflater>>,
    handshake: Option<Box<ClientHandshake>>,
    /// Frames gathered for the next send (the engine holds the one in flight). Plaintext for wss://.
    out: Vec<u8>,
    /// wss://: the connection's TLS state (from TCP connect to close).
    tls: Option<Box<TlsConn>>,
    traffic: Traffic,
}

/// Context the message handler needs besides the connection (disjoint borrows of the worker).
struct Ctx<'a> {
    plan: &'a Plan,
    counters: &'a mut Counters,
    hist: &'a mut Histogram<u64>,
    scratch: &'a mut Scratch,
    /// The worker's compressor when the connection agreed permessage-deflate.
    compressor: Option<&'a mut MessageCompressor>,
    rng: &'a mut Rng,
    phase: Phase,
    now: u64,
    last_delivery_ns: &'a mut u64,
}

/// One worker's connections, engine, timers and counters.
pub struct Worker<E: Engine> {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    index: usize,
    io: E,
    conns: Vec<Conn>,
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    connect_queue: VecDeque<(u64, u32)>,
    pending_connects: usize,
    ramp_remaining: usize,
    active_cycles: usize,
    dirty: Vec<u32>,
    scratch: Scratch,
    /// `--deflate`: the compressor of every data message sent on a connection that agreed, and the
    /// inflaters of what such connections receive (no context takeover: shared, reset per message).
    compressor: Option<MessageCompressor>,
    inflate_pool: InflatePool,
    /// Pub/sub publish command being built (publishers with `--topic`).
    command: Vec<u8>,
    /// wss://: plaintext decrypted from one receive (reused).
    plain: Vec<u8>,
    rng: Rng,
    counters: Counters,
    hist: Histogram<u64>,
    limits: ReaderLimits,
    phase: Phase,
    drain_deadline_ns: u64,
    last_delivery_ns: u64,
    /// Broadcast with `--window`: the process's window, this worker's open publishers (they publish
    /// whenever it has room), the most messages in flight this worker saw after a take, and with
    /// several workers the wait before it looks at a full window again.
    window: Option<Arc<Window>>,
    window_publishers: Vec<u32>,
    max_in_flight: u64,
    window_recheck_ns: u64,
}

/// What connection `gid` does in the plan's scenario: in broadcast the first `subscribers` ids
/// subscribe and the rest publish.
fn behaviour_of(plan: &Plan, gid: u64) -> Behaviour {
    match plan.scenario {
        Scenario::Echo => Behaviour::Echo,
        Scenario::Broadcast if gid < plan.subscribers => Behaviour::Subscriber,
        Scenario::Broadcast => Behaviour::Publisher,
        Scenario::Connect => Behaviour::Idle,
        Scenario::Churn => Behaviour::Churn,
    }
}

/// The plan of `ringws-loadgen ARGS` (scenario first) against a URL nothing needs to listen on, for
/// unit tests of the worker's pure parts.
#[cfg(test)]
fn test_plan(args: &[&str]) -> Plan {
    use clap::Parser;
    let options = crate::cli::Options::try_parse_from(
        std::iter::once("ringws-loadgen").chain(args.iter().copied()),
    )
    .expect("valid arguments");
    let target = crate::cli::parse_url("ws://127.0.0.1:9/").expect("valid URL");
    Plan::new(&options, vec![target], 1)
}

/// Tells the coordinator which engine worker `index` runs on.
fn set_engine(shared: &Shared, index: usize, description: String) {
    if let Ok(mut engine) = shared.workers[index].engine.lock() {
        *engine = description;
    }
}

/// Set once the io_uring fallback was announced (one line per process).
static FALLBACK_ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// Runs worker `index` for the connections with global ids `gids` on this thread, on the plan's engine
/// (created here: an io_uring ring belongs to the thread that submits to it). When io_uring cannot be set
/// up, the worker runs on epoll and one line on stderr says why.
pub fn run_worker(plan: Arc<Plan>, shared: Arc<Shared>, index: usize, gids: Vec<u64>, seed: u64) {
    let config = EngineConfig {
        targets: plan.targets.iter().map(|target| target.addr).collect(),
        connections: gids.len(),
    };
    if plan.engine == EngineKind::Uring {
        match UringEngine::new(&config) {
            Ok(io) => {
                set_engine(&shared, index, io.describe());
                return Worker::new(plan, shared, index, gids, seed, io).run();
            }
            Err(err) => {
                if !FALLBACK_ANNOUNCED.swap(true, Ordering::Relaxed) {
                    eprintln!("ringws-loadgen: io_uring unavailable ({err}); using epoll");
                }
            }
        }
    }
    match EpollEngine::new(&config) {
        Ok(io) => {
            set_engine(&shared, index, "epoll".to_string());
            Worker::new(plan, shared, index, gids, seed, io).run()
        }
        Err(err) => {
            eprintln!("ringws-loadgen: worker {index}: no I/O engine: {err}");
            let me = &shared.workers[index];
            me.ramped.store(true, Ordering::Release);
            me.draining.store(true, Ordering::Release);
            me.done.store(true, Ordering::Release);
        }
    }
}

impl<E: Engine> Worker<E> {
    /// A worker owning the connections with global ids `gids`.
    fn new(
        plan: Arc<Plan>,
        shared: Arc<Shared>,
        index: usize,
        gids: Vec<u64>,
        seed: u64,
        io: E,
    ) -> Worker<E> {
        let ramp = !matches!(plan.scenario, Scenario::Churn);
        let conns: Vec<Conn> = gids
            .iter()
            .map(|&gid| Conn {
                gid: gid as u32,
                sock: NO_SOCK,
                state: State::Waiting,
                behaviour: behaviour_of(&plan, gid),
                dirty: false,
                in_ramp: ramp,
                timer_due: 0,
                attempts: 0,
                reader: MessageReader::new(plan.reader_role),
                inflating: None,
                handshake: None,
                out: Vec::new(),
                tls: None,
                traffic: Traffic::default(),
            })
            .collect();
        let ramp_remaining = if ramp { conns.len() } else { 0 };
        Worker {
            io,
            timers: BinaryHeap::new(),
            connect_queue: VecDeque::with_capacity(conns.len()),
            pending_connects: 0,
            ramp_remaining,
            active_cycles: 0,
            dirty: Vec::with_capacity(conns.len()),
            scratch: Scratch::new(&plan.filler),
            compressor: plan.deflate.map(|d| MessageCompressor::new(d.level)),
            inflate_pool: InflatePool::default(),
            command: Vec::new(),
            plain: Vec::new(),
            rng: Rng::new(seed),
            counters: Counters::default(),
            hist: stats::new_histogram(),
            limits: ReaderLimits {
                max_frame_size: 1 << 30,
                max_message_size: 1 << 30,
            },
            phase: Phase::Ramp,
            drain_deadline_ns: u64::MAX,
            last_delivery_ns: 0,
            window: shared.window.clone(),
            window_publishers: Vec::new(),
            max_in_flight: 0,
            window_recheck_ns: traffic::WINDOW_RECHECK_MIN_NS,
            conns,
            plan,
            shared,
            index,
        }
    }

    /// Runs until the coordinator's drain phase is over, then closes everything.
    pub fn run(mut self) {
        let start = now_ns();
        if self.plan.scenario != Scenario::Churn {
            for i in 0..self.conns.len() {
                let due = start + i as u64 * self.plan.connect_interval_ns;
                self.connect_queue.push_back((due, i as u32));
            }
        }
        self.publish_ramped_if_done();
        let mut last_publish = start;
        let mut last_handover = start;
        loop {
            let now = now_ns();
            let phase = self.shared.phase();
            if phase != self.phase {
                self.enter_phase(phase, now);
            }
            self.fire_timers(now);
            self.start_due_connects(now);
            self.publish_in_window(now);
            self.flush_dirty(now);
            if self.phase == Phase::Drain
                && (self.shared.drain_complete.load(Ordering::Acquire) || self.drain_over(now))
            {
                break;
            }
            if now - last_publish >= COUNTER_PUBLISH_NS {
                self.publish_counters();
                last_publish = now;
            }
            if now - last_handover >= HISTOGRAM_HANDOVER_NS {
                self.hand_over_histogram();
                last_handover = now;
            }
            let wait = self.next_wake(now).saturating_sub(now).min(MAX_WAIT_NS);
            if let Err(err) = self.io.wait(wait) {
                eprintln!(
                    "ringws-loadgen: worker {}: waiting for I/O: {err}",
                    self.index
                );
                break;
            }
            let now = now_ns();
            while let Some(event) = self.io.next_event() {
                self.on_io(event, now);
            }
        }
        self.close_all_and_hand_over();
    }

    /// When the loop must look again: the earliest timer, or the next queued connect if one may start.
    fn next_wake(&self, now: u64) -> u64 {
        let mut wake = now + MAX_WAIT_NS;
        if let Some(Reverse((due, _))) = self.timers.peek() {
            wake = wake.min(*due);
        }
        if self.pending_connects < self.plan.max_pending_connects {
            if let Some(&(due, _)) = self.connect_queue.front() {
                wake = wake.min(due);
            }
        }
        // A publisher waiting for room in the window wakes with its own worker's deliveries (they are
        // completions of this loop); room made by another worker's subscribers is looked for on a timer.
        if !self.window_publishers.is_empty() && self.shared.workers.len() > 1 {
            wake = wake.min(now + self.window_recheck_ns);
        }
        wake
    }

    /// Sets connection `i`'s one timer to `due`, replacing any earlier one.
    fn set_timer(&mut self, i: usize, due: u64) {
        let due = due.max(1);
        self.conns[i].timer_due = due;
        self.timers.push(Reverse((due, i as u32)));
    }

    /// Fires every live timer due by `now`, skipping replaced ones.
    fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((due, i))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let i = i as usize;
            if self.conns[i].timer_due != due {
                continue; // replaced by a later timer
            }
            self.conns[i].timer_due = 0;
            self.on_timer(i, now);
        }
    }

    /// Connection `i`'s timer fired: what that means depends on its state (connect again, an attempt or
    /// a close timed out, traffic is due).
    fn on_timer(&mut self, i: usize, now: u64) {
        match self.conns[i].state {
            State::Waiting => {
                if self.phase == Phase::Drain {
                    return;
                }
                if self.conns[i].behaviour == Behaviour::Churn && self.phase != Phase::Run {
                    return;
                }
                self.connect_queue.push_back((now, i as u32));
            }
            State::Connecting | State::Handshaking => {
                self.connect_failed(i, Counter::ConnectTimeout, now)
            }
            State::Closing => self.finish_closing(i, now, true),
            State::Open => self.on_traffic_timer(i, now),
            State::Dead => {}
        }
    }

    /// Hands one engine event to the room that deals with it.
    fn on_io(&mut self, event: IoEvent, now: u64) {
        match event {
            IoEvent::Connected(i) => {
                let i = i as usize;
                if self.conns[i].state == State::Connecting {
                    self.on_connected(i, now);
                }
            }
            IoEvent::ConnectFailed(i, errno) => {
                let i = i as usize;
                if self.conns[i].state == State::Connecting {
                    let err = io::Error::from_raw_os_error(errno);
                    self.connect_failed(i, connect::connect_error_counter(&err), now);
                }
            }
            IoEvent::Data(i, chunk) => self.on_data(i as usize, chunk, now),
            IoEvent::Sent { owner, bytes, idle } => {
                let i = owner as usize;
                self.counters.add(Counter::BytesSent, bytes as u64);
                let conn = &self.conns[i];
                if idle
                    && (!conn.out.is_empty() || conn.tls.as_ref().is_some_and(|t| t.wants_write()))
                {
                    self.mark_dirty(i);
                }
            }
            IoEvent::Eof(i) => self.connection_ended(i as usize, Counter::Eof, now),
            IoEvent::Failed(i, errno) => {
                let reason = teardown::io_error_counter(&io::Error::from_raw_os_error(errno));
                self.connection_ended(i as usize, reason, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_follows_the_scenario_and_broadcast_ids() {
        let echo = test_plan(&["echo", "-c", "4"]);
        assert!((0..4).all(|gid| behaviour_of(&echo, gid) == Behaviour::Echo));
        let connect = test_plan(&["connect"]);
        assert_eq!(behaviour_of(&connect, 0), Behaviour::Idle);
        let churn = test_plan(&["churn"]);
        assert_eq!(behaviour_of(&churn, 0), Behaviour::Churn);
        // Broadcast: ids 0..3 subscribe, ids 3 and 4 publish.
        let broadcast = test_plan(&["broadcast", "-c", "3", "--publishers", "2"]);
        let behaviours: Vec<Behaviour> = (0..5).map(|gid| behaviour_of(&broadcast, gid)).collect();
        use Behaviour::{Publisher, Subscriber};
        assert_eq!(
            behaviours,
            [Subscriber, Subscriber, Subscriber, Publisher, Publisher]
        );
    }
}
