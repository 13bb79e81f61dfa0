//! The worker's side of the run's phases (ramp, run, verify, drain) and what it tells the coordinator:
//! what changes when a phase begins, when the drain is over, the closing of everything at the end, the
//! counters published every few milliseconds, the ramp's progress and the latency histogram handed over
//! once a second.
//!
//! Runs once per phase change or once per publish period, never per message; it must never block on the
//! coordinator (the only lock, the histogram's, is taken once a second and skipped if poisoned).

use super::{Conn, State, Worker, VERIFY_PAYLOAD};
use crate::cli::Scenario;
use crate::engine::{Engine, NO_SOCK};
use crate::plan::Phase;
use crate::stats::Counter;
use crate::wire;
use std::sync::atomic::Ordering;

/// Broadcast drain: subscribers stop once nothing arrived for this long (unless the coordinator, which
/// knows how many messages were published, says earlier that everything arrived).
const QUIET_NS: u64 = 1_000_000_000;
/// Longest wait at the end for the engine's cancelled operations to complete.
const FINISH_TIMEOUT_NS: u64 = 2_000_000_000;

impl<E: Engine> Worker<E> {
    /// Moves the worker from its current phase to the coordinator's `phase` (never backwards).
    pub(super) fn enter_phase(&mut self, phase: Phase, now: u64) {
        let previous = self.phase;
        self.phase = phase;
        if previous < Phase::Run && phase >= Phase::Run {
            self.start_run(now);
        }
        if previous < Phase::Verify && phase >= Phase::Verify && self.plan.verify_broadcast {
            self.send_verify_message();
        }
        if phase == Phase::Drain && previous != Phase::Drain {
            self.start_drain(now);
        }
    }

    /// The measured phase begins: churn slots get their first cycle's timer (spread over one cycle
    /// interval), and every open connection starts its traffic.
    fn start_run(&mut self, now: u64) {
        let run_start = self.shared.run_start_ns.load(Ordering::Acquire).max(1);
        if self.plan.scenario == Scenario::Churn {
            let slots = self.conns.len().max(1) as u64;
            for i in 0..self.conns.len() {
                // Spread the slots' first cycles over one cycle interval.
                let due = run_start + self.plan.churn_interval_ns * i as u64 / slots;
                self.set_timer(i, due);
            }
        }
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Open {
                self.start_traffic(i, now);
            }
        }
    }

    /// Connect scenario, verify phase: connection 0 (if this worker holds it and it is open) sends the
    /// message every connection must receive.
    fn send_verify_message(&mut self) {
        if let Some(i) = self
            .conns
            .iter()
            .position(|c| c.gid == 0 && c.state == State::Open)
        {
            let mask = self.rng.mask_key();
            let conn = &mut self.conns[i];
            let compressor = self
                .compressor
                .as_mut()
                .filter(|_| conn.reader.deflate().is_on());
            super::traffic::encode_data(
                &mut conn.out,
                self.plan.opcode,
                VERIFY_PAYLOAD,
                mask,
                compressor,
                &mut self.counters,
            );
            self.counters.inc(Counter::Sent);
            self.mark_dirty(i);
        }
    }

    /// The drain begins: its deadline starts, and the send counts, final from here on, are published.
    fn start_drain(&mut self, now: u64) {
        self.drain_deadline_ns = now + self.plan.drain_timeout_ns;
        self.last_delivery_ns = now;
        // Nothing new is sent from here on: these counts are final.
        let me = &self.shared.workers[self.index];
        me.counters.publish(&self.counters);
        me.draining.store(true, Ordering::Release);
    }

    /// Whether the drain phase is over for this worker.
    pub(super) fn drain_over(&self, now: u64) -> bool {
        if now >= self.drain_deadline_ns {
            return true;
        }
        match self.plan.scenario {
            Scenario::Echo => self
                .conns
                .iter()
                .all(|c| c.traffic.in_flight.is_empty() || c.state != State::Open),
            Scenario::Broadcast => now - self.last_delivery_ns >= QUIET_NS,
            Scenario::Churn => self.active_cycles == 0,
            // Every ping answered (a pong still on its way is not an error).
            Scenario::Connect => {
                self.counters.get(Counter::PongsReceived) >= self.counters.get(Counter::PingsSent)
            }
        }
    }

    /// Closes every connection, counts what never came back, and hands over the last figures.
    pub(super) fn close_all_and_hand_over(&mut self) {
        for i in 0..self.conns.len() {
            let lost = self.conns[i].traffic.in_flight.len() as u64;
            self.counters.add(Counter::Lost, lost);
            self.conns[i].traffic.in_flight.clear();
            let conn = &mut self.conns[i];
            if conn.sock != NO_SOCK {
                conn.out.clear();
                if conn.state == State::Open {
                    // A polite close, best effort: nothing is waited for.
                    wire::encode_close(&mut conn.out, 1000, self.rng.mask_key());
                    self.counters.dec(Counter::Open);
                } else if matches!(conn.state, State::Connecting | State::Handshaking) {
                    self.pending_connects -= 1;
                } else if conn.state == State::Closing {
                    self.counters.dec(Counter::Open);
                }
                self.close_socket(i);
            }
            self.conns[i].state = State::Dead;
        }
        // Every cancelled operation must complete before the engine's memory may go.
        self.io.finish(FINISH_TIMEOUT_NS);
        let left = self.io.sockets() as u64;
        self.counters.add(Counter::SocketsLeft, left);
        self.hand_over_histogram();
        let me = &self.shared.workers[self.index];
        me.counters.publish(&self.counters);
        me.done.store(true, Ordering::Release);
    }

    /// Publishes the counters to the coordinator (with the engine's count of receives that found no
    /// buffer), and, for echo with `--messages`, whether every connection is through with its messages.
    pub(super) fn publish_counters(&mut self) {
        let no_buffers = self.io.take_no_buffer_count();
        self.counters.add(Counter::RecvNoBuffers, no_buffers);
        self.shared.workers[self.index]
            .counters
            .publish(&self.counters);
        let finished = self.plan.scenario == Scenario::Echo
            && self.plan.messages.is_some()
            && self.phase >= Phase::Run
            && self.conns.iter().all(|c| self.connection_finished(c));
        if finished {
            self.shared.workers[self.index]
                .finished
                .store(true, Ordering::Release);
        }
    }

    /// Echo with `--messages`: the connection is gone for good, or sent all its messages and got every
    /// one back.
    fn connection_finished(&self, conn: &Conn) -> bool {
        match conn.state {
            State::Dead => true,
            State::Open => {
                conn.traffic.in_flight.is_empty()
                    && conn.traffic.next_send_seq >= self.plan.messages.unwrap_or(u64::MAX)
            }
            _ => false,
        }
    }

    /// Connection `i` opened or failed for good: it no longer holds up the ramp.
    pub(super) fn leave_ramp(&mut self, i: usize) {
        if self.conns[i].in_ramp {
            self.conns[i].in_ramp = false;
            self.ramp_remaining -= 1;
            self.publish_ramped_if_done();
        }
    }

    /// Tells the coordinator that every connection of this worker opened or failed for good, once that
    /// is so.
    pub(super) fn publish_ramped_if_done(&self) {
        if self.ramp_remaining == 0 {
            // Counters first, so that the coordinator's snapshot at the end of the ramp is exact.
            self.shared.workers[self.index]
                .counters
                .publish(&self.counters);
            self.shared.workers[self.index]
                .ramped
                .store(true, Ordering::Release);
        }
    }

    /// Adds the latencies recorded since the last hand-over to the coordinator's histogram.
    pub(super) fn hand_over_histogram(&mut self) {
        if self.hist.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.shared.workers[self.index].histogram.lock() {
            let _ = shared.add(&self.hist);
        }
        self.hist.reset();
    }
}
