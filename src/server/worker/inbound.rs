//! Inbound bytes: the multishot receive of each connection, what arrives in it (handshake bytes, TLS
//! records, WebSocket frames) and the protocol events that come out of the reader.
//!
//! Hot path: a received buffer is lent from the buffer ring for one completion, unmasked and validated in
//! place by the protocol reader, and given back at once; a message contained in one buffer reaches the
//! handler without a copy. Must never allocate, lock, log or make a syscall per message, and never keep a
//! provided buffer past the completion that carried it. A connection that agreed permessage-deflate is fed
//! with the worker's inflaters lent for the call (`InflatePool`); the inflater of a compressed message
//! spanning receives is held by the connection only while the message is in progress, counted
//! (`INFLATER_STATE_BYTES` each) with the assembly buffers against `--max-assembly-memory`. An event
//! stream's input (`GET /sse`: receive-only) is counted and dropped, never fed to a reader. A message that
//! spans receives is assembled in one of the worker's spare assembly buffers (`Core::spare_assemblies`: at most
//! `SPARE_COUNT` of at most `SPARE_MAX` bytes, 4 MiB, given back when the message completes), so their pages
//! are reused from one large message to the next instead of being faulted in and handed back to the system
//! for each.

use crate::protocol::deflate::INFLATER_STATE_BYTES;
use crate::protocol::frame::OpCode;
use crate::protocol::message::Inflating;
use crate::protocol::{CloseCode, Event, MessageReader, ProtocolError, Role};
use crate::reactor::{Completion, Op, RecvBuf, UserData, NO_CONNECTION};
use crate::server::metrics::{
    DEFLATE_IN_COMPRESSED, DEFLATE_IN_INFLATED, INFLATE_CORRUPT, INFLATE_TOO_BIG,
};

use super::{Core, Worker, INPUT_SLICE_BYTES};
use crate::server::connection::fanout_flags::{
    EVENT_STREAM, HOLDS_INPUT, RECV_LIMITED, SENDER_PAUSED,
};
use crate::server::connection::{flags::*, State};
use crate::server::handler::{ConnId, Ctx, Handler};

impl<H: Handler> Worker<'_, H> {
    pub(super) fn on_recv(&mut self, key: usize, mut completion: Completion) {
        let more = completion.more();
        if !more {
            self.core.conns[key].clear(RECV_ARMED);
        }
        let result = completion.result;
        if result > 0 {
            match self.core.bufs.take(&mut completion) {
                Some(buf) => self.on_input(key, buf),
                None => self.core.abort(key),
            }
        } else if result == 0 {
            self.core.on_peer_eof(key);
        } else if result == -libc::ENOBUFS {
            // The ring provides its buffers as receives need them: one that found it dry adds some.
            self.core.bufs.ran_dry();
            self.core.metrics.recv_buffers_exhausted.inc();
        } else if result != -libc::ECANCELED {
            tracing::debug!(
                worker = self.core.index,
                "recv error: {}",
                std::io::Error::from_raw_os_error(-result)
            );
            self.core.lost(key);
        }
        // Re-arm a multishot receive that ended without the connection ending (buffer ring ran dry: the
        // data waits in the socket; cancelled for backpressure and since resumed).
        let conn = &self.core.conns[key];
        if !conn.has(RECV_ARMED) && result != 0 && !conn.has(ENDING) && !conn.has(RECV_PAUSED) {
            self.core.arm_recv(key);
        }
        self.core.try_release(key);
    }

    pub(super) fn on_input(&mut self, key: usize, mut buf: RecvBuf) {
        // A broadcast made outside any input (a handler's `on_close`, say) is no sender's fanout.
        self.core.forget_fanout();
        let now = self.core.wheel.now();
        let conn = &mut self.core.conns[key];
        conn.last_activity = now;
        conn.clear(AWAITING_PONG);
        if conn.is_tls() {
            self.on_tls_input(key, buf.bytes_mut());
        } else if conn.has(DISCARD_INPUT) || conn.has(ENDING) {
            // Lingering after an answer or an error: drop what the peer still sends.
        } else if conn.state == State::Handshake {
            self.on_handshake_bytes(key, buf.bytes_mut());
        } else {
            self.feed(key, buf.bytes_mut());
        }
        self.core.bufs.recycle(buf);
        self.core.check_backpressure(key);
        // After the whole buffer: a pause stops the receives that follow, never this buffer's frames.
        self.core.check_sender_budget(key);
        self.core.limit_receives(key);
    }

    /// Feeds WebSocket bytes to the connection's reader and acts on its events. Those of a connection paused
    /// as a sender (the receive completions already waiting when its receive was cancelled), or still
    /// holding such input, are kept instead and read when it resumes (`fanout.rs`).
    pub(super) fn feed(&mut self, key: usize, bytes: &mut [u8]) {
        let conn = &mut self.core.conns[key];
        if conn.has_fanout(EVENT_STREAM) {
            // Receive-only: whatever its client sends is read and dropped (its EOF still ends it).
            self.core
                .metrics
                .event_stream_input_discarded
                .add(bytes.len() as u64);
            return;
        }
        if conn.has_fanout(SENDER_PAUSED | HOLDS_INPUT) {
            conn.hold_input(bytes);
            return;
        }
        let id = ConnId {
            key: key as u32,
            generation: conn.generation,
        };
        // The reader is moved out for the call, so that events can act on the worker (including this
        // connection's queue) while it runs.
        // The placeholder keeps the agreement: replies sent from the events are compressed by it.
        let mut placeholder = MessageReader::new(Role::Server);
        placeholder.set_deflate(conn.reader.deflate());
        let mut reader = std::mem::replace(&mut conn.reader, placeholder);
        let (held_before, mid_before) = (reader.buffered_capacity(), reader.is_mid_message());
        let limits = self.core.limits;
        // Only input into a message already a slice large counts: ordinary messages never end a slice
        // (counting every byte cost about 4 % of the CPU per echoed 16-64 KiB message).
        if held_before >= INPUT_SLICE_BYTES {
            self.core.input_since_flush += bytes.len();
        }
        let result = if reader.deflate().is_on() {
            // permessage-deflate: the worker's inflaters are lent for the call, with this connection's
            // inflater of a compressed message in progress (if any).
            let mut held = self.core.conns[key].take_inflater();
            let mut pool = std::mem::take(&mut self.core.inflate_pool);
            let inflating = Inflating {
                pool: &mut pool,
                held: &mut held,
                // Never today: the answer always asks the client not to keep its context.
                keep: reader.deflate().client_context_takeover(),
            };
            let result =
                reader.feed_deflate(bytes, &limits, inflating, |event| self.on_event(id, event));
            let (messages, compressed, inflated) = pool.take_counts();
            self.core.inflate_pool = pool;
            let deflate = &self.core.metrics.deflate;
            deflate.messages_in.add(messages);
            deflate.bytes[DEFLATE_IN_COMPRESSED].add(compressed);
            deflate.bytes[DEFLATE_IN_INFLATED].add(inflated);
            match result {
                Err(ProtocolError::InflatedTooBig) => {
                    deflate.inflate_failures[INFLATE_TOO_BIG].inc()
                }
                Err(ProtocolError::InvalidCompressedData) => {
                    deflate.inflate_failures[INFLATE_CORRUPT].inc()
                }
                _ => {}
            }
            if let Some(inflater) = held {
                let metrics = std::sync::Arc::clone(&self.core.metrics);
                self.core.conns[key].hold_inflater(inflater, &metrics);
            }
            result
        } else {
            // Taken out for the feed and put back after it: a feed reached from inside another (held input
            // read from an event) finds none and allocates.
            let mut spare = std::mem::take(&mut self.core.spare_assemblies);
            let result =
                reader.feed_reusing(bytes, &limits, &mut spare, |event| self.on_event(id, event));
            self.core.spare_assemblies = spare;
            result
        };
        let (held_after, mid_after) = (reader.buffered_capacity(), reader.is_mid_message());
        self.core.conns[key].reader = reader;
        // The placeholder reader held nothing, so the running total moves by this reader's change.
        self.core.assembly_bytes = self.core.assembly_bytes - held_before + held_after;
        // Inflaters held by messages in progress count against the same budget.
        let inflaters = self.core.metrics.deflate.inflaters_held.get() as usize;
        let assembly = self.core.assembly_bytes + inflaters * INFLATER_STATE_BYTES;
        if let Err(error) = result {
            self.core.protocol_error(key, error);
        } else if (held_after > 0 || self.core.conns[key].holds_inflater())
            && assembly > self.core.config.max_assembly_memory
        {
            self.core.over_assembly_budget(key);
        } else if mid_after && !mid_before {
            self.core.message_started(key);
        }
    }

    pub(super) fn on_event(&mut self, id: ConnId, event: Event<'_>) {
        let key = id.key as usize;
        let core = &mut self.core;
        let conn = &mut core.conns[key];
        let open = conn.state == State::Open && !conn.has(CLOSE_SENT);
        match event {
            Event::Message { kind, payload } => {
                if open {
                    core.metrics.messages_in.inc();
                    core.metrics.bytes_in.add(payload.len() as u64);
                    self.handler.on_message(
                        &mut Ctx {
                            core: &mut self.core,
                        },
                        id,
                        kind,
                        payload,
                    );
                }
            }
            Event::Ping(payload) => {
                if open {
                    core.queue_frame(key, OpCode::Pong, payload);
                }
            }
            Event::Pong(_) => {}
            Event::Close { code, reason: _ } => {
                conn.set(CLOSE_RECEIVED);
                core.metrics.close_code(code.map_or(1005, |c| c.0));
                if conn.has(CLOSE_SENT) {
                    // The reply to our close: the handshake is complete, close TCP once flushed.
                    core.shut_after_flush(key);
                } else {
                    let reply = code.unwrap_or(CloseCode::NORMAL);
                    core.send_close(key, reply, "");
                    core.leave_open(key, Some(code.unwrap_or(CloseCode::NO_STATUS)));
                    core.shut_after_flush(key);
                }
            }
        }
    }
}

impl Core {
    /// This connection's input took the worker's assembly memory over its budget: closed with 1013, a
    /// condition of the server's load that a later retry may not meet.
    fn over_assembly_budget(&mut self, key: usize) {
        self.metrics.assembly_budget_closes.inc();
        tracing::debug!(
            worker = self.index,
            held = self.conns[key].reader.buffered_capacity(),
            "assembly memory budget exceeded"
        );
        self.close_unfinished(key, CloseCode::TRY_AGAIN_LATER, "assembly memory budget");
    }

    /// Closes a connection with `code` because of its message in progress: the partial message is dropped
    /// (its memory goes to the release thread at the end of this batch, not at release) and further input is discarded.
    pub(super) fn close_unfinished(&mut self, key: usize, code: CloseCode, reason: &str) {
        let conn = &mut self.conns[key];
        self.assembly_bytes -= conn.reader.buffered_capacity();
        let deflate = conn.reader.deflate();
        let mut fresh = MessageReader::new(Role::Server);
        fresh.set_deflate(deflate);
        let unfinished = std::mem::replace(&mut conn.reader, fresh);
        if let Some(inflater) = conn.take_inflater() {
            self.inflate_pool.give(inflater);
        }
        if unfinished.buffered_capacity() > 0 {
            // Handed to the release thread at the end of the batch, once its sends are submitted: giving
            // megabytes back to the system takes about a millisecond, which no connection need wait.
            self.retired_readers.push(unfinished);
        }
        self.send_close(key, code, reason);
        self.conns[key].set(DISCARD_INPUT);
        self.leave_open(key, Some(code));
        self.shut_after_close_reply(key);
    }

    /// Arms the connection's receive: a multishot receive, or, while it assembles a message of a slice or
    /// more, one receive of one buffer, re-armed by its completion. Such a connection then gets a buffer's
    /// worth of input per turn of the worker, so that a peer streaming a large message cannot fill a whole
    /// turn: with a multishot receive one `io_uring_enter` runs every receive the provided buffers allow
    /// (megabytes, with the kernel's copy and the loopback ACKs), and every other connection waits for
    /// that turn to end.
    pub(super) fn arm_recv(&mut self, key: usize) {
        let ud = self.ud(key, Op::Recv);
        let conn = &mut self.conns[key];
        conn.set(RECV_ARMED);
        let file_index = conn.file_index;
        if conn.reader.buffered_capacity() >= INPUT_SLICE_BYTES {
            conn.set_fanout(RECV_LIMITED);
            self.ring.recv_once(file_index, self.bufs.group(), ud);
        } else {
            conn.clear_fanout(RECV_LIMITED);
            self.ring.recv_multishot(file_index, self.bufs.group(), ud);
        }
    }

    /// After a connection's input was read: if it now assembles a message of a slice or more while its
    /// multishot receive is armed, that receive is cancelled, and its last completion re-arms it as one
    /// receive per turn ([`Core::arm_recv`]).
    pub(super) fn limit_receives(&mut self, key: usize) {
        let conn = &self.conns[key];
        if !conn.has(RECV_ARMED)
            || conn.has(ENDING)
            || conn.has_fanout(RECV_LIMITED)
            || conn.reader.buffered_capacity() < INPUT_SLICE_BYTES
        {
            return;
        }
        let ud = self.ud(key, Op::Recv);
        self.conns[key].set_fanout(RECV_LIMITED);
        self.metrics.receives_limited.inc();
        self.ring
            .cancel(ud, UserData::new(NO_CONNECTION, 0, Op::Ignore).encode());
    }
}
