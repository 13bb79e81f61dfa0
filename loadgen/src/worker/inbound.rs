//! What arrives on a connection: bytes from the engine (for wss://, decrypted first), handed to the
//! handshake check while the upgrade is under way and to the connection's message reader once it is open;
//! then each decoded message is checked against what the connection expects (echo payload and order,
//! broadcast stamp and per-publisher sequence, the verify message), pings are answered, and a close or a
//! protocol violation ends the connection.
//!
//! This is the hot path: no allocation per message (the reader, the in-flight queue, the output buffer
//! and the worker's plaintext buffer keep their capacity; a subscriber's per-publisher tracks are made
//! at its first delivery), no lock, no log line (the first TLS failure of the process is described once, the rest are
//! counted). A message counts as received only after every byte of it was checked. The engine's receive
//! buffer is given back before any handler returns.

use super::traffic::queue_echo_during_feed;
use super::{Behaviour, Ctx, State, Traffic, Worker, VERIFY_PAYLOAD};
use crate::engine::{Chunk, Engine};
use crate::payload;
use crate::plan::Phase;
use crate::stats::{self, Counter, Counters};
use crate::tls::TlsFailure;
use crate::wire::{self, Event, OpCode};
use ringws::protocol::message::Inflating;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a TLS failure was described on stderr (one line per process; the rest are counted).
static TLS_FAILURE_ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// Delivery bookkeeping of one subscriber for one publisher: the next sequence number expected and the
/// ranges skipped so far (a later arrival inside a range is out of order, elsewhere a duplicate).
#[derive(Default)]
pub(super) struct Track {
    next: u64,
    gaps: Vec<(u64, u64)>,
}

impl Track {
    /// Returns whether `seq` is a first delivery, and counts duplicates and reordering.
    fn deliver(&mut self, seq: u64, counters: &mut Counters) -> bool {
        if seq == self.next {
            self.next += 1;
            true
        } else if seq > self.next {
            self.gaps.push((self.next, seq));
            self.next = seq + 1;
            true
        } else if let Some(i) = self.gaps.iter().position(|&(lo, hi)| lo <= seq && seq < hi) {
            let (lo, hi) = self.gaps[i];
            self.gaps.swap_remove(i);
            if lo < seq {
                self.gaps.push((lo, seq));
            }
            if seq + 1 < hi {
                self.gaps.push((seq + 1, hi));
            }
            counters.inc(Counter::OutOfOrder);
            true
        } else {
            counters.inc(Counter::Duplicates);
            false
        }
    }
}

/// What the message handler asks the loop to do once `feed` returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    /// The server sent a close frame.
    PeerClosed,
    /// Churn: all echoes of the cycle came back; send our close.
    CloseCycle,
}

impl<E: Engine> Worker<E> {
    /// Bytes arrived on connection `i`; the engine's buffer is given back before this returns.
    pub(super) fn on_data(&mut self, i: usize, chunk: Chunk, now: u64) {
        self.counters.add(Counter::BytesReceived, chunk.len as u64);
        if self.conns[i].tls.is_some() {
            self.on_tls_data(i, chunk, now);
            return;
        }
        match self.conns[i].state {
            State::Handshaking => {
                let bytes = self.io.bytes(chunk);
                if let Some(handshake) = self.conns[i].handshake.as_mut() {
                    handshake.response.extend_from_slice(bytes);
                }
                self.io.recycle(chunk);
                self.check_handshake_response(i, now);
            }
            State::Open | State::Closing => self.on_frames(i, Some(chunk), &mut [], now),
            _ => self.io.recycle(chunk),
        }
    }

    /// wss://: decrypts the engine's `chunk` (given back at once), then hands the plaintext to the
    /// handshake check or the message reader, and acts on TLS errors.
    fn on_tls_data(&mut self, i: usize, chunk: Chunk, now: u64) {
        let sock = self.conns[i].sock;
        let result = {
            let Worker {
                io, conns, plain, ..
            } = self;
            let bytes = io.bytes(chunk);
            match conns[i].tls.as_deref_mut() {
                Some(tls) => tls.receive(bytes, plain),
                None => Ok(()),
            }
        };
        self.io.recycle(chunk);
        if let Some(tls) = self.conns[i].tls.as_deref_mut() {
            if !tls.established && !tls.handshaking() {
                tls.established = true;
                match tls.version() {
                    Some(rustls::ProtocolVersion::TLSv1_2) => {
                        self.counters.inc(Counter::TlsHandshakes12)
                    }
                    Some(rustls::ProtocolVersion::TLSv1_3) => {
                        self.counters.inc(Counter::TlsHandshakes13)
                    }
                    _ => {}
                }
            }
        }
        if !self.plain.is_empty() {
            let mut plain = std::mem::take(&mut self.plain);
            match self.conns[i].state {
                State::Handshaking => {
                    if let Some(handshake) = self.conns[i].handshake.as_mut() {
                        handshake.response.extend_from_slice(&plain);
                    }
                    self.check_handshake_response(i, now);
                }
                State::Open | State::Closing => self.on_frames(i, None, &mut plain, now),
                _ => {}
            }
            plain.clear();
            self.plain = plain;
        }
        // What the plaintext did may have ended this connection.
        let conn = &self.conns[i];
        if conn.sock != sock || conn.tls.is_none() {
            return;
        }
        if result.is_err() && !TLS_FAILURE_ANNOUNCED.swap(true, Ordering::Relaxed) {
            let reason = conn.tls.as_ref().and_then(|t| t.error.as_deref());
            eprintln!(
                "ringws-loadgen: TLS failure (first of the run; all are counted): {}",
                reason.unwrap_or("unknown")
            );
        }
        match result {
            Err(TlsFailure::Handshake) => self.connection_ended(i, Counter::TlsHandshake, now),
            Err(TlsFailure::Session) => self.connection_ended(i, Counter::TlsError, now),
            Ok(()) => {
                if conn.tls.as_ref().is_some_and(|t| t.wants_write()) {
                    self.mark_dirty(i);
                }
            }
        }
    }

    /// Feeds the engine's `chunk` (or, without one, `extra`) to the connection's reader, gives the chunk
    /// back, and acts on what was decoded.
    pub(super) fn on_frames(&mut self, i: usize, chunk: Option<Chunk>, extra: &mut [u8], now: u64) {
        let delivered_before = self.counters.get(Counter::Delivered);
        let Worker {
            io,
            plan,
            conns,
            counters,
            hist,
            scratch,
            compressor,
            inflate_pool,
            rng,
            limits,
            phase,
            last_delivery_ns,
            ..
        } = self;
        let conn = &mut conns[i];
        let gid = conn.gid;
        let behaviour = conn.behaviour;
        let closing = conn.state == State::Closing;
        let deflate = conn.reader.deflate().is_on();
        let mut after = After::Nothing;
        let mut peer_code = None;
        let mut ctx = Ctx {
            plan,
            counters,
            hist,
            scratch,
            compressor: compressor.as_mut().filter(|_| deflate),
            rng,
            phase: *phase,
            now,
            last_delivery_ns,
        };
        let traffic = &mut conn.traffic;
        let out = &mut conn.out;
        let bytes = match chunk {
            Some(chunk) => io.bytes(chunk),
            None => extra,
        };
        let on_event = |event: Event<'_>| {
            if after == After::PeerClosed {
                return;
            }
            match event {
                Event::Message { kind, payload } => {
                    ctx.counters
                        .add(Counter::PayloadBytesReceived, payload.len() as u64);
                    if let Some(next) =
                        check_message(&mut ctx, behaviour, gid, traffic, out, kind, payload)
                    {
                        after = next;
                    }
                }
                Event::Ping(payload) => {
                    wire::encode_frame(out, OpCode::Pong, payload, ctx.rng.mask_key());
                    ctx.counters.inc(Counter::PingsAnswered);
                }
                Event::Pong(_) => ctx.counters.inc(Counter::PongsReceived),
                Event::Close { code, .. } => {
                    after = After::PeerClosed;
                    peer_code = code.map(|code| code.0);
                }
            }
        };
        let result = if deflate {
            let inflating = Inflating {
                pool: inflate_pool,
                held: &mut conn.inflating,
                // The server keeps its context (`--deflate-server-context`): so does this inflater.
                keep: conn.reader.deflate().server_context_takeover(),
            };
            let result = conn.reader.feed_deflate(bytes, limits, inflating, on_event);
            let (inflated, _, _) = inflate_pool.take_counts();
            counters.add(Counter::CompressedReceived, inflated);
            result
        } else {
            conn.reader.feed(bytes, limits, on_event)
        };
        if let Some(chunk) = chunk {
            self.io.recycle(chunk);
        }
        if let Some(window) = &self.window {
            // One add per received batch (`--window`): these deliveries make room for publishers.
            window.delivered(self.counters.get(Counter::Delivered) - delivered_before);
        }
        let wrote = !self.conns[i].out.is_empty();
        if let Err(err) = result {
            let code = err.close_code();
            let conn = &mut self.conns[i];
            wire::encode_close(&mut conn.out, code.0, self.rng.mask_key());
            self.connection_lost_sending_output(i, Counter::ProtocolViolation, now);
            return;
        }
        match after {
            After::Nothing => {
                if wrote {
                    self.mark_dirty(i);
                }
            }
            After::CloseCycle => {
                let conn = &mut self.conns[i];
                wire::encode_close(&mut conn.out, 1000, self.rng.mask_key());
                conn.state = State::Closing;
                self.mark_dirty(i);
                self.set_timer(i, now + self.plan.connect_timeout_ns);
            }
            After::PeerClosed => {
                if closing {
                    self.finish_closing(i, now, false);
                } else {
                    // Answer the close, then drop the connection (counted: the server ended it, with
                    // its close code).
                    self.counters.inc(Counter::server_close(peer_code));
                    let conn = &mut self.conns[i];
                    wire::encode_close(&mut conn.out, 1000, self.rng.mask_key());
                    self.connection_lost_sending_output(i, Counter::ClosedByServer, now);
                }
            }
        }
    }
}

/// Checks one received message against what the connection expects; returns a follow-up for the loop.
fn check_message(
    ctx: &mut Ctx<'_>,
    behaviour: Behaviour,
    gid: u32,
    traffic: &mut Traffic,
    out: &mut Vec<u8>,
    kind: wire::MessageKind,
    payload: &[u8],
) -> Option<After> {
    match behaviour {
        Behaviour::Echo | Behaviour::Churn => {
            let Some(sent_ns) = traffic.in_flight.pop_front() else {
                ctx.counters.inc(Counter::Unexpected);
                return None;
            };
            let seq = traffic.next_recv_seq;
            traffic.next_recv_seq += 1;
            if kind != ctx.plan.kind {
                ctx.counters.inc(Counter::WrongType);
            } else if !payload::echo_matches(payload, gid, seq, &ctx.plan.filler) {
                ctx.counters.inc(Counter::Mismatch);
            } else {
                ctx.counters.inc(Counter::Received);
                if behaviour == Behaviour::Echo {
                    stats::record(ctx.hist, ctx.now.saturating_sub(sent_ns));
                }
            }
            let limit = ctx.plan.messages.unwrap_or(u64::MAX);
            if behaviour == Behaviour::Churn {
                if traffic.next_recv_seq >= limit {
                    return Some(After::CloseCycle);
                }
                if ctx.phase == Phase::Run || ctx.phase == Phase::Drain {
                    queue_echo_during_feed(ctx, gid, traffic, out, ctx.now);
                }
            } else if ctx.plan.echo_interval_ns.is_none()
                && ctx.phase == Phase::Run
                && traffic.next_send_seq < limit
            {
                queue_echo_during_feed(ctx, gid, traffic, out, ctx.now);
            }
            None
        }
        Behaviour::Subscriber => {
            match payload::parse_broadcast(payload, &ctx.plan.filler) {
                Some(stamp) if kind == ctx.plan.kind => {
                    let publisher = (stamp.publisher as u64).wrapping_sub(ctx.plan.subscribers);
                    if publisher >= ctx.plan.publishers {
                        ctx.counters.inc(Counter::Mismatch);
                        return None;
                    }
                    if traffic.tracks.is_empty() {
                        traffic
                            .tracks
                            .resize_with(ctx.plan.publishers as usize, Track::default);
                    }
                    *ctx.last_delivery_ns = ctx.now;
                    if traffic.tracks[publisher as usize].deliver(stamp.seq, ctx.counters) {
                        ctx.counters.inc(Counter::Delivered);
                        stats::record(ctx.hist, ctx.now.saturating_sub(stamp.sent_ns));
                    }
                }
                Some(_) => ctx.counters.inc(Counter::WrongType),
                None => ctx.counters.inc(Counter::Mismatch),
            }
            None
        }
        Behaviour::Publisher => {
            ctx.counters.inc(Counter::PublisherEchoes);
            None
        }
        Behaviour::Idle => {
            if payload == VERIFY_PAYLOAD && !traffic.verified {
                traffic.verified = true;
                *ctx.last_delivery_ns = ctx.now;
                ctx.counters.inc(Counter::VerifyReceived);
            } else {
                ctx.counters.inc(Counter::Unexpected);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_plan;
    use super::*;
    use crate::payload::Scratch;
    use crate::plan::Plan;
    use crate::wire::{MessageKind, Rng};
    use hdrhistogram::Histogram;

    #[test]
    fn track_counts_duplicates_and_reordering_exactly() {
        let mut counters = Counters::default();
        let mut track = Track::default();
        let mut firsts = 0;
        for seq in [0u64, 1, 4, 2, 2, 3, 5, 0, 7, 6] {
            if track.deliver(seq, &mut counters) {
                firsts += 1;
            }
        }
        assert_eq!(firsts, 8); // 0..=7 once each
        assert_eq!(counters.get(Counter::Duplicates), 2); // the second 2 and the second 0
        assert_eq!(counters.get(Counter::OutOfOrder), 3); // 2, 3 and 6 arrived after later numbers
        assert!(track.gaps.is_empty());
    }

    /// What `check_message` works on for one connection, outside any worker.
    struct Bench {
        plan: Plan,
        counters: Counters,
        hist: Histogram<u64>,
        scratch: Scratch,
        rng: Rng,
        last_delivery_ns: u64,
        traffic: Traffic,
        out: Vec<u8>,
    }

    const NOW: u64 = 5_000;

    impl Bench {
        fn new(args: &[&str]) -> Bench {
            let plan = test_plan(args);
            Bench {
                scratch: Scratch::new(&plan.filler),
                plan,
                counters: Counters::default(),
                hist: stats::new_histogram(),
                rng: Rng::new(1),
                last_delivery_ns: 0,
                traffic: Traffic::default(),
                out: Vec::new(),
            }
        }

        /// Checks one message that arrived at `NOW` during the run phase.
        fn check(
            &mut self,
            behaviour: Behaviour,
            gid: u32,
            kind: MessageKind,
            payload: &[u8],
        ) -> Option<After> {
            let mut ctx = Ctx {
                plan: &self.plan,
                counters: &mut self.counters,
                hist: &mut self.hist,
                scratch: &mut self.scratch,
                compressor: None,
                rng: &mut self.rng,
                phase: Phase::Run,
                now: NOW,
                last_delivery_ns: &mut self.last_delivery_ns,
            };
            check_message(
                &mut ctx,
                behaviour,
                gid,
                &mut self.traffic,
                &mut self.out,
                kind,
                payload,
            )
        }

        fn count(&self, counter: Counter) -> u64 {
            self.counters.get(counter)
        }
    }

    #[test]
    fn echo_replies_are_checked_in_order_and_the_closed_loop_sends_the_next() {
        let mut bench = Bench::new(&["echo", "-s", "20"]);
        let mut expected = Scratch::new(&bench.plan.filler);
        let gid = 3;
        // One echo in flight, sent at 1_000.
        bench.traffic.in_flight.push_back(1_000);
        bench.traffic.next_send_seq = 1;

        let reply = expected.echo(gid, 0).to_vec();
        assert!(bench
            .check(Behaviour::Echo, gid, MessageKind::Binary, &reply)
            .is_none());
        assert_eq!(bench.count(Counter::Received), 1);
        assert_eq!(bench.hist.len(), 1);
        assert!(bench.hist.equivalent(bench.hist.max(), NOW - 1_000));
        // The closed loop queued echo number 1, stamped now.
        assert_eq!(bench.count(Counter::Sent), 1);
        assert_eq!(bench.traffic.next_send_seq, 2);
        assert_eq!(bench.traffic.in_flight, [NOW]);
        assert!(!bench.out.is_empty());

        // Echo 1 comes back with one byte changed: a mismatch, not a receipt.
        let mut corrupted = expected.echo(gid, 1).to_vec();
        corrupted[19] ^= 1;
        bench.check(Behaviour::Echo, gid, MessageKind::Binary, &corrupted);
        assert_eq!(bench.count(Counter::Mismatch), 1);
        // Echo 2 as text while the run sends binary.
        let reply = expected.echo(gid, 2).to_vec();
        bench.check(Behaviour::Echo, gid, MessageKind::Text, &reply);
        assert_eq!(bench.count(Counter::WrongType), 1);
        // Echo 3, but for another connection's id.
        let reply = expected.echo(gid + 1, 3).to_vec();
        bench.check(Behaviour::Echo, gid, MessageKind::Binary, &reply);
        assert_eq!(bench.count(Counter::Mismatch), 2);
        assert_eq!(bench.count(Counter::Received), 1);
        assert_eq!(bench.hist.len(), 1);

        // A reply with nothing in flight is unexpected.
        bench.traffic.in_flight.clear();
        bench.check(Behaviour::Echo, gid, MessageKind::Binary, &reply);
        assert_eq!(bench.count(Counter::Unexpected), 1);
    }

    #[test]
    fn closed_loop_stops_sending_at_the_message_limit() {
        let mut bench = Bench::new(&["echo", "-m", "1"]);
        let reply = Scratch::new(&bench.plan.filler).echo(0, 0).to_vec();
        bench.traffic.in_flight.push_back(1_000);
        bench.traffic.next_send_seq = 1;
        bench.check(Behaviour::Echo, 0, MessageKind::Binary, &reply);
        assert_eq!(bench.count(Counter::Received), 1);
        assert_eq!(bench.count(Counter::Sent), 0);
        assert!(bench.traffic.in_flight.is_empty());
        assert!(bench.out.is_empty());
    }

    #[test]
    fn churn_cycle_closes_after_its_last_echo() {
        let mut bench = Bench::new(&["churn", "-m", "2"]);
        let mut expected = Scratch::new(&bench.plan.filler);
        bench.traffic.in_flight.push_back(1_000);
        bench.traffic.next_send_seq = 1;
        let first = expected.echo(7, 0).to_vec();
        assert!(bench
            .check(Behaviour::Churn, 7, MessageKind::Binary, &first)
            .is_none());
        assert_eq!(bench.count(Counter::Sent), 1);
        let second = expected.echo(7, 1).to_vec();
        let after = bench.check(Behaviour::Churn, 7, MessageKind::Binary, &second);
        assert!(after == Some(After::CloseCycle));
        assert_eq!(bench.count(Counter::Received), 2);
        assert_eq!(bench.count(Counter::Sent), 1);
        // Churn latency is the cycle's, recorded at its end, not each echo's.
        assert_eq!(bench.hist.len(), 0);
    }

    #[test]
    fn subscriber_counts_each_publishers_messages_once() {
        // Subscribers are ids 0 and 1, publishers 2 and 3.
        let mut bench = Bench::new(&["broadcast", "-c", "2", "--publishers", "2"]);
        let mut stamps = Scratch::new(&bench.plan.filler);
        let from_2 = stamps.broadcast(2, 0, 1_000).to_vec();
        bench.check(Behaviour::Subscriber, 0, MessageKind::Binary, &from_2);
        assert_eq!(bench.count(Counter::Delivered), 1);
        assert_eq!(bench.last_delivery_ns, NOW);
        assert_eq!(bench.hist.len(), 1);
        // The same sequence number from the other publisher is a first delivery too.
        let from_3 = stamps.broadcast(3, 0, 1_000).to_vec();
        bench.check(Behaviour::Subscriber, 0, MessageKind::Binary, &from_3);
        assert_eq!(bench.count(Counter::Delivered), 2);
        // From publisher 2 again: a duplicate.
        bench.check(Behaviour::Subscriber, 0, MessageKind::Binary, &from_2);
        assert_eq!(bench.count(Counter::Duplicates), 1);
        assert_eq!(bench.count(Counter::Delivered), 2);
        // A stamp naming a connection that is no publisher, and a message of the wrong type.
        let stranger = stamps.broadcast(9, 0, 1_000).to_vec();
        bench.check(Behaviour::Subscriber, 0, MessageKind::Binary, &stranger);
        assert_eq!(bench.count(Counter::Mismatch), 1);
        bench.check(Behaviour::Subscriber, 0, MessageKind::Text, &from_3);
        assert_eq!(bench.count(Counter::WrongType), 1);
        assert_eq!(bench.count(Counter::Delivered), 2);
    }

    #[test]
    fn verify_message_counts_once_per_connection() {
        let mut bench = Bench::new(&["connect", "--verify-broadcast"]);
        bench.check(Behaviour::Idle, 5, MessageKind::Binary, VERIFY_PAYLOAD);
        assert_eq!(bench.count(Counter::VerifyReceived), 1);
        assert_eq!(bench.last_delivery_ns, NOW);
        bench.check(Behaviour::Idle, 5, MessageKind::Binary, VERIFY_PAYLOAD);
        bench.check(Behaviour::Idle, 5, MessageKind::Binary, b"something else");
        assert_eq!(bench.count(Counter::VerifyReceived), 1);
        assert_eq!(bench.count(Counter::Unexpected), 2);
    }
}
