//! What an open connection sends during the run, by behaviour: echoes (closed loop: `--depth` in flight,
//! the next queued as each reply arrives; open loop: on a schedule), publishes on a schedule, pings of
//! idle connections, and the timing of churn cycles; with `--window`, publishes whenever the window
//! (`window.rs`) has room. Frames are only queued in the connection's output here; `outbound.rs` hands
//! them to the engine.
//!
//! On the hot path (queueing the next echo, a due publish): no allocation in steady state (payloads are
//! written into the worker's reused scratch and command buffers, compressed into the worker's compressor's
//! buffer on connections that agreed permessage-deflate, frames into the connection's output),
//! no lock (a closed-loop publish takes its place in the window with one atomic add), no log line. A
//! schedule never lets a connection hold more than `MAX_BACKLOG` unsent bytes: it pauses and keeps its
//! intended send times, so that the wait shows in the latencies; a closed-loop publisher with a full
//! backlog waits like one with a full window.

use super::{Behaviour, Ctx, State, Traffic, Worker};
use crate::deflate::MessageCompressor;
use crate::engine::Engine;
use crate::payload;
use crate::plan::Phase;
use crate::stats::{Counter, Counters};
use crate::wire::{self, OpCode};
use std::sync::atomic::Ordering;

/// Open loop and publishers: most unsent bytes queued per connection. Past it, sending pauses (the
/// schedule's intended times are kept, so the wait shows in the latencies) instead of growing memory.
const MAX_BACKLOG: usize = 4 << 20;
/// How soon a schedule paused by a full backlog looks again.
const BACKLOG_RETRY_NS: u64 = 1_000_000;
/// Broadcast closed loop with several worker threads: how soon a worker whose publishers wait for room
/// in the window looks again (room made by another worker's subscribers wakes no one here): at first
/// after this long, twice as long after each look that found the window still full...
pub(super) const WINDOW_RECHECK_MIN_NS: u64 = 100_000;
/// ...up to this (a stalled server costs a waiting worker at most 100 wake-ups a second).
const WINDOW_RECHECK_MAX_NS: u64 = 10_000_000;

/// The wait before the next look at a full window, after a look that waited `last_ns`: the first look
/// after a publish waits the least, each look that found the window full again twice as long, up to the
/// largest.
fn next_window_recheck(last_ns: u64, published: bool) -> u64 {
    if published {
        WINDOW_RECHECK_MIN_NS
    } else {
        (last_ns * 2).clamp(WINDOW_RECHECK_MIN_NS, WINDOW_RECHECK_MAX_NS)
    }
}

/// Whether a connection with `backlog` unsent bytes may queue another scheduled message.
fn backlog_has_room(backlog: usize) -> bool {
    backlog < MAX_BACKLOG
}

/// When to look at a schedule again: when its next message is due, or, while the connection's unsent
/// output is full, soon (the schedule keeps its intended times; they are sent, late, once the socket
/// drains).
fn schedule_check_at(next_due_ns: u64, backlog: usize, now: u64) -> u64 {
    if backlog_has_room(backlog) {
        next_due_ns
    } else {
        next_due_ns.max(now + BACKLOG_RETRY_NS)
    }
}

impl<E: Engine> Worker<E> {
    /// A connection is open and the measured phase runs: start its scenario traffic.
    pub(super) fn start_traffic(&mut self, i: usize, now: u64) {
        let run_start = self
            .shared
            .run_start_ns
            .load(Ordering::Acquire)
            .max(now.min(1));
        match self.conns[i].behaviour {
            Behaviour::Echo | Behaviour::Churn => match self.plan.echo_interval_ns {
                Some(interval) if self.conns[i].behaviour == Behaviour::Echo => {
                    let offset = self.rng.below(interval);
                    self.conns[i].traffic.next_due_ns = now.max(run_start) + offset;
                    let due = self.conns[i].traffic.next_due_ns;
                    self.set_timer(i, due);
                }
                _ => {
                    let depth = if self.conns[i].behaviour == Behaviour::Churn {
                        1
                    } else {
                        self.plan.depth
                    };
                    for _ in 0..depth {
                        if !self.may_queue_echo(i) {
                            break;
                        }
                        self.queue_echo(i, now);
                    }
                    self.mark_dirty(i);
                }
            },
            Behaviour::Publisher if self.window.is_some() => {
                // Closed loop: publishes whenever the window has room (`publish_in_window`).
                if !self.window_publishers.contains(&(i as u32)) {
                    self.window_publishers.push(i as u32);
                }
            }
            Behaviour::Publisher => {
                let interval = self.plan.publish_interval_ns;
                let offset = self.rng.below(interval);
                self.conns[i].traffic.next_due_ns = now.max(run_start) + offset;
                let due = self.conns[i].traffic.next_due_ns;
                self.set_timer(i, due);
            }
            Behaviour::Idle => {
                if self.plan.ping_interval_ns > 0 {
                    let offset = self.rng.below(self.plan.ping_interval_ns);
                    self.set_timer(i, now + offset);
                }
            }
            Behaviour::Subscriber => {}
        }
    }

    /// Whether connection `i` has echoes left to send under `--messages`.
    fn may_queue_echo(&self, i: usize) -> bool {
        self.plan
            .messages
            .is_none_or(|limit| self.conns[i].traffic.next_send_seq < limit)
    }

    /// Queues connection `i`'s next echo, counted as sent at `sent_ns`, in its output.
    fn queue_echo(&mut self, i: usize, sent_ns: u64) {
        let conn = &mut self.conns[i];
        let seq = conn.traffic.next_send_seq;
        conn.traffic.next_send_seq += 1;
        conn.traffic.in_flight.push_back(sent_ns);
        let payload = self.scratch.echo(conn.gid, seq);
        let compressor = self
            .compressor
            .as_mut()
            .filter(|_| conn.reader.deflate().is_on());
        encode_data(
            &mut conn.out,
            self.plan.opcode,
            payload,
            self.rng.mask_key(),
            compressor,
            &mut self.counters,
        );
        self.counters.inc(Counter::Sent);
    }

    /// When to look at connection `i`'s schedule again.
    fn next_schedule_check(&self, i: usize, now: u64) -> u64 {
        schedule_check_at(self.conns[i].traffic.next_due_ns, self.backlog(i), now)
    }

    /// An open connection's timer fired: during the run, queue what its schedule says is due.
    pub(super) fn on_traffic_timer(&mut self, i: usize, now: u64) {
        if self.phase != Phase::Run {
            return;
        }
        match self.conns[i].behaviour {
            Behaviour::Echo => {
                let Some(interval) = self.plan.echo_interval_ns else {
                    return;
                };
                self.queue_due_echoes(i, interval, now);
            }
            Behaviour::Publisher => self.queue_due_publishes(i, now),
            Behaviour::Idle => self.queue_ping(i, now),
            Behaviour::Subscriber | Behaviour::Churn => {}
        }
    }

    /// Echo open loop: queues every echo due by `now` (each stamped with its intended send time) while
    /// the backlog has room and `--messages` allows, then sets the timer for the next look.
    fn queue_due_echoes(&mut self, i: usize, interval: u64, now: u64) {
        while self.conns[i].traffic.next_due_ns <= now
            && self.may_queue_echo(i)
            && backlog_has_room(self.backlog(i))
        {
            let intended = self.conns[i].traffic.next_due_ns;
            self.queue_echo(i, intended);
            self.conns[i].traffic.next_due_ns += interval;
        }
        self.mark_dirty(i);
        if self.may_queue_echo(i) {
            let due = self.next_schedule_check(i, now);
            self.set_timer(i, due);
        }
    }

    /// Publisher: queues every publish due by `now` (stamped with its intended send time) while the
    /// backlog has room, then sets the timer for the next look.
    fn queue_due_publishes(&mut self, i: usize, now: u64) {
        let interval = self.plan.publish_interval_ns;
        while self.conns[i].traffic.next_due_ns <= now && backlog_has_room(self.backlog(i)) {
            // The stamp is the intended send time: delivery latency includes any sending delay.
            let intended = self.conns[i].traffic.next_due_ns;
            self.queue_publish(i, intended);
            self.conns[i].traffic.next_due_ns += interval;
        }
        self.mark_dirty(i);
        let due = self.next_schedule_check(i, now);
        self.set_timer(i, due);
    }

    /// Broadcast closed loop, once per loop iteration during the run: while the window has room, this
    /// worker's open publishers queue one message each in turn (stamped `now`), skipping those whose
    /// backlog is full. A full window costs one failed take; the publishers then wait for the loop's next
    /// wake-up (deliveries to this worker's subscribers, a send completing, a timer), never spinning.
    pub(super) fn publish_in_window(&mut self, now: u64) {
        if self.phase != Phase::Run || self.window_publishers.is_empty() {
            return;
        }
        // Taken out for the fill and put back (no reference count touched per loop iteration).
        let Some(window) = self.window.take() else {
            return;
        };
        let conns = &self.conns;
        self.window_publishers
            .retain(|&i| conns[i as usize].state == State::Open);
        let mut published = false;
        'fill: loop {
            let mut queued = false;
            for k in 0..self.window_publishers.len() {
                let i = self.window_publishers[k] as usize;
                if !backlog_has_room(self.backlog(i)) {
                    continue;
                }
                let Some(in_flight) = window.take() else {
                    break 'fill;
                };
                if in_flight > self.max_in_flight {
                    self.max_in_flight = in_flight;
                    window.record_in_flight(in_flight);
                }
                self.queue_publish(i, now);
                self.mark_dirty(i);
                queued = true;
                published = true;
            }
            if !queued {
                break;
            }
        }
        self.window = Some(window);
        self.window_recheck_ns = next_window_recheck(self.window_recheck_ns, published);
    }

    /// Queues one publish of publisher `i`, stamped `stamp_ns` (and wrapped in a publish command with
    /// `--topic`), and counts it.
    fn queue_publish(&mut self, i: usize, stamp_ns: u64) {
        let publisher = self.conns[i].gid;
        let conn = &mut self.conns[i];
        let seq = conn.traffic.next_send_seq;
        conn.traffic.next_send_seq += 1;
        let payload = self.scratch.broadcast(publisher, seq, stamp_ns);
        let message = match &self.plan.topic {
            Some(topic) => {
                payload::publish_command(&mut self.command, self.plan.kind, topic, payload);
                &self.command[..]
            }
            None => payload,
        };
        let compressor = self
            .compressor
            .as_mut()
            .filter(|_| conn.reader.deflate().is_on());
        encode_data(
            &mut conn.out,
            self.plan.opcode,
            message,
            self.rng.mask_key(),
            compressor,
            &mut self.counters,
        );
        self.counters.inc(Counter::Sent);
        self.counters.inc(Counter::Published);
    }

    /// Connect scenario with `--ping-interval`: queues a ping carrying the time, and the next one's timer.
    fn queue_ping(&mut self, i: usize, now: u64) {
        let conn = &mut self.conns[i];
        let stamp = now.to_be_bytes();
        wire::encode_frame(&mut conn.out, OpCode::Ping, &stamp, self.rng.mask_key());
        self.counters.inc(Counter::PingsSent);
        self.mark_dirty(i);
        self.set_timer(i, now + self.plan.ping_interval_ns);
    }

    /// Churn: slot `i` waits for its next cycle, one cycle interval after the last one started (at once,
    /// counted as behind, if that time has passed).
    pub(super) fn schedule_next_cycle(&mut self, i: usize, now: u64) {
        let start = self.conns[i].traffic.cycle_start_ns;
        let mut due = start + self.plan.churn_interval_ns;
        if due < now {
            self.counters.inc(Counter::ChurnBehind);
            due = now;
        }
        self.conns[i].state = State::Waiting;
        self.set_timer(i, due);
    }
}

/// Queues a connection's next echo, counted as sent at `sent_ns`, while its message reader is borrowed
/// (closed loop and churn: called for each reply as it is checked). Does what `Worker::queue_echo` does,
/// through the message handler's context.
pub(super) fn queue_echo_during_feed(
    ctx: &mut Ctx<'_>,
    gid: u32,
    traffic: &mut Traffic,
    out: &mut Vec<u8>,
    sent_ns: u64,
) {
    let seq = traffic.next_send_seq;
    traffic.next_send_seq += 1;
    traffic.in_flight.push_back(sent_ns);
    let payload = ctx.scratch.echo(gid, seq);
    encode_data(
        out,
        ctx.plan.opcode,
        payload,
        ctx.rng.mask_key(),
        ctx.compressor.as_deref_mut(),
        ctx.counters,
    );
    ctx.counters.inc(Counter::Sent);
}

/// Appends one data message to `out`, compressed with `compressor` (given when the connection agreed
/// permessage-deflate; plain when that would not make it smaller), and counts its payload bytes.
pub(super) fn encode_data(
    out: &mut Vec<u8>,
    opcode: OpCode,
    payload: &[u8],
    mask: [u8; 4],
    compressor: Option<&mut MessageCompressor>,
    counters: &mut Counters,
) {
    counters.add(Counter::PayloadBytesSent, payload.len() as u64);
    match compressor {
        Some(compressor) => {
            if compressor.encode(out, opcode, payload, mask) {
                counters.inc(Counter::CompressedSent);
            }
        }
        None => wire::encode_frame(out, opcode, payload, mask),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_bound_is_four_mebibytes() {
        assert!(backlog_has_room(0));
        assert!(backlog_has_room((4 << 20) - 1));
        assert!(!backlog_has_room(4 << 20));
        assert!(!backlog_has_room(usize::MAX));
    }

    #[test]
    fn a_full_window_is_looked_at_less_and_less_often() {
        assert_eq!(next_window_recheck(0, false), 100_000);
        assert_eq!(next_window_recheck(100_000, false), 200_000);
        assert_eq!(next_window_recheck(6_000_000, false), 10_000_000);
        assert_eq!(next_window_recheck(10_000_000, false), 10_000_000);
        assert_eq!(next_window_recheck(10_000_000, true), 100_000);
    }

    #[test]
    fn schedule_is_checked_when_due_unless_the_backlog_is_full() {
        let now = 10_000_000;
        // Room in the backlog: the next due time, even one already past (it is sent at once).
        assert_eq!(schedule_check_at(now + 500, 0, now), now + 500);
        assert_eq!(
            schedule_check_at(now - 500, MAX_BACKLOG - 1, now),
            now - 500
        );
        // Full: not before a millisecond from now, however late the schedule is...
        assert_eq!(
            schedule_check_at(now - 500, MAX_BACKLOG, now),
            now + 1_000_000
        );
        assert_eq!(schedule_check_at(0, MAX_BACKLOG + 1, now), now + 1_000_000);
        // ...and never earlier than the next due time.
        assert_eq!(
            schedule_check_at(now + 5_000_000, MAX_BACKLOG, now),
            now + 5_000_000
        );
    }
}
