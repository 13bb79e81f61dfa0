//! TLS on a connection (`wss://`, `https://`): received records go through rustls before the plaintext takes
//! the path plain bytes take, and a TLS failure ends only that connection.
//!
//! Queued plaintext (shared broadcast frames included) is encrypted here at flush time (`encrypt_queued`,
//! called by `outbound`'s flush); this room owns the receive side, the encryption and the failure path. Must never block on the TLS handshake (everything is driven by
//! the ring's completions) and never let one connection's TLS error touch another connection.
//!
//! A client's first flight (its ClientHello) costs the server a key exchange and a signature, far more than
//! anything an established connection asks for, and a client can send one for nothing and leave. So first
//! flights are not processed as they arrive: they wait in the worker's [`FirstFlights`] until the batch's
//! other completions are handled (the established connections' input first, and the end-of-file of a
//! client that already left, whose handshake is then never started: it could never finish it, having not
//! seen the server's reply). Then they go, with their connection's TLS state, to the worker's handshake
//! thread (`handshakes`), a few at a time, and come back answered; without that thread they get at most
//! [`FIRST_FLIGHT_SLICE`] of handshake work per turn of the loop here, the rest waiting for the next turn
//! (which does not wait for completions). The backlog is bounded ([`FIRST_FLIGHT_BACKLOG_BYTES`]): past
//! it a new client is closed unanswered and counted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::CloseCode;

use super::{handshakes, Core, Worker};
use crate::server::connection::{flags::*, State};
use crate::server::handler::Handler;
use crate::server::http::refusals;

/// Handshake work (first flights processed) per turn of the worker's loop, before the worker turns back
/// to its ring: about five to ten handshakes, so that an established connection's input waits at most
/// this long behind a flood of new ones.
pub(super) const FIRST_FLIGHT_SLICE: Duration = Duration::from_micros(500);

/// Bytes of first flights a worker keeps waiting for handshake work: about 2,000 ClientHellos, a quarter
/// to half a second of handshake work on one core. A first flight beyond it closes its connection
/// unanswered (`ringws_tls_backlog_refusals_total`): the server is past what it can answer in time anyway.
pub(super) const FIRST_FLIGHT_BACKLOG_BYTES: usize = 1 << 20;

/// The worker's first flights waiting for handshake work, in arrival order, their bytes in one buffer.
#[derive(Debug, Default)]
pub(super) struct FirstFlights {
    /// (connection key, generation, end of its bytes in `bytes`), oldest first; each starts where the one
    /// before it ends (the first at `start`).
    entries: VecDeque<(u32, u32, usize)>,
    bytes: Vec<u8>,
    /// Bytes before this offset were processed (or skipped).
    start: usize,
}

impl FirstFlights {
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes waiting.
    pub(super) fn waiting_bytes(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Keeps `input` for connection `key`; false when the backlog is full.
    fn push(&mut self, key: usize, generation: u32, input: &[u8]) -> bool {
        if self.waiting_bytes() + input.len() > FIRST_FLIGHT_BACKLOG_BYTES {
            return false;
        }
        self.bytes.extend_from_slice(input);
        self.entries
            .push_back((key as u32, generation, self.bytes.len()));
        true
    }

    /// Keeps `input` of connection `key` for a later turn (it was taken from a backlog within the bound,
    /// so it fits).
    fn keep(&mut self, key: usize, generation: u32, input: &[u8]) {
        self.bytes.extend_from_slice(input);
        self.entries
            .push_back((key as u32, generation, self.bytes.len()));
    }

    /// The next entry, or `None` when none waits: its key, generation and byte range.
    fn pop(&mut self) -> Option<(usize, u32, std::ops::Range<usize>)> {
        let (key, generation, end) = self.entries.pop_front()?;
        let range = self.start..end;
        self.start = end;
        Some((key as usize, generation, range))
    }

    /// After a turn: the processed bytes are dropped (what waits moves to the front); an empty backlog
    /// keeps its buffer unless it grew past a quarter of the bound.
    fn compact(&mut self) {
        if self.entries.is_empty() {
            self.bytes.clear();
            self.start = 0;
            if self.bytes.capacity() > FIRST_FLIGHT_BACKLOG_BYTES / 4 {
                self.bytes = Vec::new();
            }
        } else if self.start > 0 {
            self.bytes.drain(..self.start);
            for entry in &mut self.entries {
                entry.2 -= self.start;
            }
            self.start = 0;
        }
    }
}

impl<H: Handler> Worker<'_, H> {
    /// Received ciphertext of a TLS connection. A first flight (no input processed yet, or earlier input
    /// still waiting) waits in the worker's [`FirstFlights`]; anything else is processed now.
    pub(super) fn on_tls_input(&mut self, key: usize, input: &mut [u8]) {
        let core = &mut self.core;
        let conn = &mut core.conns[key];
        if conn.has(ENDING) {
            return;
        }
        let generation = conn.generation;
        if conn.tls_away() {
            // Behind its state, which is on the handshake thread: waits for it, in order.
            if core.first_flights.push(key, generation, input) {
                conn.count_input_while_away();
            } else {
                core.metrics.tls_backlog_refusals.inc();
                core.end_after_flush(key);
            }
            return;
        }
        if let Some(tls) = conn.tls_mut() {
            if !tls.failed && (!tls.input_seen || tls.deferred_inputs > 0) {
                if core.first_flights.push(key, generation, input) {
                    tls.deferred_inputs += 1;
                } else {
                    core.metrics.tls_backlog_refusals.inc();
                    crate::server::http::refusals::log_refusal(
                        &crate::server::http::refusals::Refusal {
                            severity: crate::server::http::refusals::Severity::Limit,
                            ..crate::server::http::refusals::Refusal::unanswered(
                                core.index,
                                "tls_backlog",
                            )
                        },
                    );
                    core.end_after_flush(key);
                }
                return;
            }
        }
        self.process_tls_input(key, input);
    }

    /// Handshake work: the states back from the handshake thread first, then the first flights waiting,
    /// oldest first. A first flight of a handshake goes to the handshake thread (`handshakes`) while it has
    /// room; without the thread (tests, or a thread that could not start) it is processed here, for at most
    /// [`FIRST_FLIGHT_SLICE`] (and at least one). Whatever cannot run now keeps its place for the next
    /// turn: input of a connection whose state is away, first flights beyond the thread's room, and input
    /// beyond the slice. A connection that ended meanwhile (its client left, its deadline passed) is
    /// skipped; one whose client left before any of its input was processed counts as abandoned.
    pub(super) fn run_first_flights(&mut self) {
        self.take_back_handshakes();
        self.core.first_flights_wait = false;
        if self.core.first_flights.is_empty() {
            return;
        }
        if self.core.offload_handshakes && self.core.handshake_thread.is_none() {
            self.core.start_handshake_thread();
        }
        let mut flights = std::mem::take(&mut self.core.first_flights);
        let mut kept = FirstFlights::default();
        let started = Instant::now();
        let mut worked = false;
        let mut sliced = false;
        while let Some((key, generation, range)) = flights.pop() {
            let Some(conn) = self.core.conns.get_mut(key) else {
                continue;
            };
            if conn.generation != generation {
                continue;
            }
            if conn.tls_away() {
                kept.keep(key, generation, &flights.bytes[range]);
                continue;
            }
            let ending = conn.has(ENDING);
            let Some(tls) = conn.tls_mut() else {
                continue;
            };
            if ending {
                tls.deferred_inputs -= 1;
                if !tls.input_seen && tls.deferred_inputs == 0 {
                    self.core.metrics.tls_abandoned.inc();
                }
                continue;
            }
            // Handshake input of a connection that has sent nothing yet (no ciphertext queue, so no
            // send in flight): its first flight, or the rest of it.
            let handshake = !tls.handshake_done && !tls.failed && tls.out.is_none();
            if handshake {
                if let Some(thread) = self.core.handshake_thread.as_mut() {
                    if !thread.has_room() {
                        kept.keep(key, generation, &flights.bytes[range]);
                        continue;
                    }
                    tls.deferred_inputs -= 1;
                    // (`handshake` above: the state is here and has no ciphertext queue.)
                    let moving = conn.send_tls_away().map(handshakes::Moving::new);
                    let sent = match moving {
                        Some(Ok(tls)) => thread
                            .send(handshakes::Job {
                                key: key as u32,
                                generation,
                                tls,
                                input: flights.bytes[range.clone()].to_vec(),
                            })
                            .map_err(|job| Some(job.tls.into_inner())),
                        Some(Err(tls)) => Err(Some(tls)),
                        None => Err(None),
                    };
                    if let Err(back) = sent {
                        // Not taken (the thread ended): the state stays, and this worker does the work.
                        let conn = &mut self.core.conns[key];
                        if let Some(tls) = back {
                            conn.tls_back(tls);
                        }
                        if let Some(tls) = conn.tls_mut() {
                            tls.deferred_inputs += 1;
                        }
                        self.handshake_thread_lost();
                        kept.keep(key, generation, &flights.bytes[range]);
                    }
                    continue;
                }
            }
            if sliced || (worked && started.elapsed() >= FIRST_FLIGHT_SLICE) {
                sliced = true;
                kept.keep(key, generation, &flights.bytes[range]);
                continue;
            }
            tls.deferred_inputs -= 1;
            worked = true;
            refusals::set_current_connection(Some(refusals::ConnRef {
                key: key as u32,
                generation,
            }));
            self.process_tls_input(key, &mut flights.bytes[range]);
            refusals::set_current_connection(None);
        }
        flights.compact();
        debug_assert!(self.core.first_flights.is_empty());
        // Nothing left that this worker could do now: it may wait for its ring (the thread's doorbell
        // wakes it when a state comes back).
        self.core.first_flights_wait =
            !kept.is_empty() && !sliced && self.core.handshake_thread.is_some();
        self.core.first_flights = if kept.is_empty() { flights } else { kept };
    }

    /// The handshake thread ended (it never does unless it panicked): handshakes run on the worker from
    /// now on; the states it still held are lost with their connections (their deadlines end them).
    fn handshake_thread_lost(&mut self) {
        tracing::error!(
            worker = self.core.index,
            "the TLS handshake thread ended: handshakes run on the worker"
        );
        self.core.offload_handshakes = false;
        self.core.handshake_thread = None;
    }

    /// The TLS states back from the handshake thread: each goes back to its connection (dropped if the
    /// connection ended and its slot was released meanwhile), then what rustls made of the input takes
    /// the path it takes after an inline receive.
    fn take_back_handshakes(&mut self) {
        let Some(thread) = self.core.handshake_thread.as_mut() else {
            return;
        };
        if thread.away() == 0 {
            return;
        }
        thread.answer_doorbell();
        while let Some(done) = self
            .core
            .handshake_thread
            .as_mut()
            .and_then(|thread| thread.take_done())
        {
            let key = done.key as usize;
            let live = self
                .core
                .conns
                .get(key)
                .is_some_and(|conn| conn.generation == done.generation && conn.tls_away());
            if !live {
                continue;
            }
            let conn = &mut self.core.conns[key];
            let arrived = conn.tls_back(done.tls.into_inner());
            if let Some(tls) = conn.tls_mut() {
                tls.deferred_inputs += arrived;
            }
            if conn.has(ENDING) {
                continue;
            }
            self.core.mark_dirty(key);
            refusals::set_current_connection(Some(refusals::ConnRef {
                key: done.key,
                generation: done.generation,
            }));
            let mut plain = done.plain;
            self.after_tls_receive(key, done.result, &mut plain);
            refusals::set_current_connection(None);
        }
    }

    /// Received ciphertext through rustls, then the plaintext takes the path plain bytes take. After an
    /// HTTP answer or a protocol error the records are still processed (so that a handshake in progress
    /// completes and the answer can be sent) and the plaintext is dropped.
    fn process_tls_input(&mut self, key: usize, input: &mut [u8]) {
        let conn = &mut self.core.conns[key];
        if conn.has(ENDING) {
            return;
        }
        let Some(mut tls) = conn.take_tls() else {
            return;
        };
        if tls.failed {
            conn.put_tls(tls);
            return;
        }
        let mut plain = std::mem::take(&mut self.core.tls_plain);
        plain.clear();
        let result = tls.receive(input, &mut self.core.pool, &mut plain);
        self.core.conns[key].put_tls(tls);
        self.core.mark_dirty(key);
        self.after_tls_receive(key, result, &mut plain);
        plain.clear();
        if plain.capacity() > 4 * crate::server::tls::CIPHERTEXT_AHEAD {
            plain = Vec::new();
        }
        self.core.tls_plain = plain;
    }

    /// What rustls made of a receive (here or on the handshake thread): counted, the client's Finished
    /// acknowledged at once, the plaintext on the path plain bytes take, a failure on the failure path.
    fn after_tls_receive(
        &mut self,
        key: usize,
        result: Result<crate::server::tls::RecvOutcome, rustls::Error>,
        plain: &mut [u8],
    ) {
        match result {
            Err(error) => self.core.tls_failed(key, &error),
            Ok(outcome) => {
                if outcome.handshake_completed {
                    self.core.metrics.tls_handshakes.inc();
                }
                if outcome.quick_ack {
                    let file_index = self.core.conns[key].file_index;
                    let ignore = crate::reactor::UserData::new(
                        crate::reactor::NO_CONNECTION,
                        0,
                        crate::reactor::Op::Ignore,
                    );
                    self.core.ring.quick_ack(file_index, ignore.encode());
                }
                let conn = &self.core.conns[key];
                if !plain.is_empty() && !conn.has(DISCARD_INPUT) && !conn.has(ENDING) {
                    if conn.state == State::Handshake {
                        self.on_handshake_bytes(key, plain);
                    } else {
                        self.feed(key, plain);
                    }
                } else if !plain.is_empty() || outcome.peer_closed {
                    self.core.close_reply_arrived(key);
                }
            }
        }
    }
}

impl Core {
    /// Starts this worker's handshake thread; without it (the thread could not be made) first flights are
    /// processed here, as before.
    pub(super) fn start_handshake_thread(&mut self) {
        match handshakes::HandshakeThread::spawn(self.index, self.ring.fd()) {
            Ok(thread) => self.handshake_thread = Some(thread),
            Err(error) => {
                tracing::warn!(worker = self.index, %error, "no TLS handshake thread: handshakes run on the worker");
                self.offload_handshakes = false;
            }
        }
    }

    /// At flush time: encrypts what is queued (shared frames included) into the ciphertext queue, with
    /// close_notify before our FIN; a connection ending before its handshake completed drops its plaintext
    /// (it can never be sent). A TLS error takes the failure path (the alert, if any, then FIN).
    pub(super) fn encrypt_queued(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let close = conn.has(SHUT_AFTER_FLUSH) && !conn.has(WRITE_SHUT);
        let ending = conn.has(ENDING);
        let (plain, tls) = conn.queue_and_tls_mut();
        let Some(tls) = tls else {
            return;
        };
        if ending && (!tls.handshake_done || tls.failed) {
            if let Some(queue) = plain.as_mut() {
                queue.clear(&mut self.pool);
            }
        }
        if let Err(error) = tls.encrypt_queued(plain.as_deref_mut(), &mut self.pool, close) {
            self.tls_failed(key, &error);
        }
    }

    /// After a close the server sent because of the peer's input (`shut_after_close_reply`): the peer sent
    /// a record (its close reply, or data it sent before it read our close) or close_notify, so our
    /// close_notify and FIN may follow.
    pub(super) fn close_reply_arrived(&mut self, key: usize) {
        if let Some(tls) = self.conns[key].tls_mut() {
            if std::mem::take(&mut tls.await_close_reply) {
                self.shut_after_flush(key);
            }
        }
    }

    /// A TLS error (garbage, plain HTTP on the TLS port, bad record, failed handshake): the connection
    /// ends after the alert rustls queued (if any) is sent; its plaintext queue is dropped (it can no
    /// longer be encrypted). Other connections are not affected.
    pub(super) fn tls_failed(&mut self, key: usize, error: &rustls::Error) {
        tracing::debug!(worker = self.index, "TLS error: {error}");
        self.metrics.tls_failures.inc();
        if self.conns[key].state == State::Open {
            self.metrics.close_code(1006);
            self.leave_open(key, Some(CloseCode::ABNORMAL));
        }
        let conn = &mut self.conns[key];
        if let Some(tls) = conn.tls_mut() {
            tls.failed = true;
        }
        if let Some(mut queue) = conn.queue.take() {
            queue.clear(&mut self.pool);
            self.pool.give_queue(queue);
        }
        conn.clear_pending();
        if conn.state != State::Closing {
            self.enter_closing(key);
        }
        self.conns[key].set(DISCARD_INPUT);
        self.shut_after_flush(key);
    }
}
