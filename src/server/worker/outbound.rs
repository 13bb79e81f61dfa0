//! Outbound bytes: each connection's send queue (owned frames, shared broadcast frames, HTTP answers), the
//! end-of-batch flush as one send per connection, and backpressure on a connection whose own replies pile up.
//!
//! Hot path: a frame is queued by appending to a pooled buffer or by referencing a shared frame; one send
//! is in flight per connection and continues from its offset after a short send. Must never copy a shared
//! frame per subscriber, never submit a second send while one is in flight, and never free a buffer the
//! kernel may still read. A message a handler sends (echo included) at or above `--compression-threshold`
//! to a connection that agreed permessage-deflate is compressed with the worker's compressor for its
//! window (reset per message, output buffer reused) and goes with RSV1 set, or plain when it does not
//! shrink; a connection that keeps the server's context (`--compression context`) uses its own compressor
//! instead, made at its first compressed message.

use std::sync::Arc;

use crate::protocol::close::encode_close_payload;
use crate::protocol::frame::{encode_header, OpCode};
use crate::protocol::{CloseCode, MessageKind};
use crate::reactor::{Completion, Op, UserData};
use crate::server::metrics::{DEFLATE_OUT_COMPRESSED, DEFLATE_OUT_PLAIN};

use super::Core;
use crate::reactor::NO_CONNECTION;
use crate::server::connection::{fanout_flags, flags::*, State};
use crate::server::handler::ConnId;

/// The largest HTTP answer copied into a pooled buffer (every refusal, `/healthz`); larger ones are sent
/// from their own allocation (see [`Core::answer_http`]).
const POOLED_ANSWER_MAX: usize = 1024;

/// RSV1 in a frame's first byte: permessage-deflate's "this message is compressed" (RFC 7692 section 6).
const RSV1: u8 = 0x40;

/// One Server-Sent Events event carrying `payload` (text): `data: ` before each of its lines (LF, CRLF or
/// CR end a line, as the event-stream format reads them) and a blank line after it.
pub(crate) fn write_data_event(out: &mut Vec<u8>, payload: &[u8]) {
    let mut rest = payload;
    loop {
        out.extend_from_slice(b"data: ");
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(end) => {
                out.extend_from_slice(&rest[..end]);
                out.push(b'\n');
                let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[end + skip..];
            }
            None => {
                out.extend_from_slice(rest);
                out.extend_from_slice(b"\n\n");
                return;
            }
        }
    }
}

/// The last event of an event stream the server ends: `event: close` with `{"code":N,"reason":"..."}`
/// (the close code a WebSocket would have got: 1001 at shutdown, 1008 for a slow consumer, 4001 for an
/// expired token).
fn write_close_event(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    out.extend_from_slice(b"event: close\ndata: ");
    let reason = serde_json::to_string(reason).unwrap_or_else(|_| "\"\"".into());
    out.extend_from_slice(format!("{{\"code\":{},\"reason\":{reason}}}\n\n", code.0).as_bytes());
}

impl Core {
    /// Queues an HTTP answer and closes the connection after it (no keep-alive). Returns the status.
    ///
    /// The answer is written into a buffer of its own: one of at most [`POOLED_ANSWER_MAX`] bytes is
    /// then copied into the connection's queue like any frame, a larger one (a `/metrics` page, the demo
    /// page) is queued as it is and freed once sent. A larger answer must never be written into a pooled
    /// buffer: the pool keeps each buffer at the largest capacity it ever grew to, so every scrape that
    /// happened to draw a small buffer would leave one more page-sized buffer in the pool, until every
    /// buffer of a busy worker's pool had grown (the soak's RSS drift, docs/RELIABILITY.md).
    pub(super) fn answer_http<R>(
        &mut self,
        key: usize,
        write: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> R {
        let mut answer = Vec::with_capacity(512);
        let result = write(&mut answer);
        self.deliver_run();
        if answer.len() <= POOLED_ANSWER_MAX {
            self.push_bytes(key, answer.len(), |out| out.extend_from_slice(&answer));
        } else {
            let conn = &mut self.conns[key];
            let queue = conn.queue.get_or_insert_with(|| self.pool.take_queue());
            queue.push_shared(Arc::from(answer));
            self.mark_dirty(key);
        }
        let conn = &mut self.conns[key];
        conn.clear_pending();
        conn.set(DISCARD_INPUT);
        self.enter_closing(key);
        self.shut_after_flush(key);
        result
    }

    /// Appends raw bytes to a connection's queue and marks it for flushing.
    pub(super) fn push_bytes(
        &mut self,
        key: usize,
        size_hint: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        // Broadcasts held for joining go first (`fanout.rs`).
        self.deliver_run();
        let conn = &mut self.conns[key];
        let queue = conn.queue.get_or_insert_with(|| self.pool.take_queue());
        queue.push_owned(&mut self.pool, size_hint, write);
        self.mark_dirty(key);
    }

    pub(super) fn mark_dirty(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.has(DIRTY) {
            conn.set(DIRTY);
            self.dirty.push(key as u32);
        }
    }

    /// Queues one unfragmented frame (server frames are unmasked).
    pub(super) fn queue_frame(&mut self, key: usize, opcode: OpCode, payload: &[u8]) {
        self.queue_frame_rsv1(key, opcode, payload, false);
    }

    /// Queues one unfragmented frame, with RSV1 set for a compressed message (permessage-deflate).
    fn queue_frame_rsv1(&mut self, key: usize, opcode: OpCode, payload: &[u8], rsv1: bool) {
        let mut header = [0u8; 14];
        let header_len = encode_header(&mut header, true, opcode, payload.len() as u64, None);
        if rsv1 {
            header[0] |= RSV1;
        }
        self.push_bytes(key, header_len + payload.len(), |out| {
            out.extend_from_slice(&header[..header_len]);
            out.extend_from_slice(payload);
        });
    }

    pub(super) fn send_close(&mut self, key: usize, code: CloseCode, reason: &str) {
        if self.conns[key].has(CLOSE_SENT) {
            return;
        }
        if !self.conns[key].has(CLOSE_RECEIVED) {
            self.metrics.close_sent(code.0);
        }
        if self.conns[key].has_fanout(fanout_flags::EVENT_STREAM) {
            // No close frame on an event stream: a last event says why, and the stream ends once it is
            // sent (its client never answers a close).
            self.push_bytes(key, 64 + reason.len(), |out| {
                write_close_event(out, code, reason)
            });
            self.conns[key].set(CLOSE_SENT);
            self.shut_after_flush(key);
            return;
        }
        let (payload, len) = encode_close_payload(code, reason);
        self.queue_frame(key, OpCode::Close, &payload[..len]);
        self.conns[key].set(CLOSE_SENT);
    }

    /// Whether `id` is an open event stream (`GET /sse`).
    pub(crate) fn is_event_stream(&self, id: ConnId) -> bool {
        self.live_open(id)
            .is_some_and(|key| self.conns[key].has_fanout(fanout_flags::EVENT_STREAM))
    }

    pub(super) fn on_send(&mut self, key: usize, mut completion: Completion) {
        let conn = &mut self.conns[key];
        // What was sent: the ciphertext queue of a TLS connection, else the queue itself.
        let sent_queue = match conn.tls_mut() {
            Some(tls) => tls.out.as_mut(),
            None => conn.queue.as_mut(),
        };
        if let Some(queue) = sent_queue {
            queue.complete_send(&mut completion, &mut self.pool);
        }
        if completion.result < 0 {
            if let Some(queue) = conn.queue.as_mut() {
                queue.clear(&mut self.pool);
            }
            if let Some(queue) = conn.tls_mut().and_then(|tls| tls.out.as_mut()) {
                queue.clear(&mut self.pool);
            }
            self.lost(key);
            return;
        }
        let conn = &mut self.conns[key];
        // A sender paused for its fanout is resumed when its receivers drain (`fanout.rs`), never by its
        // own sends.
        if conn.has(RECV_PAUSED)
            && !conn.has_fanout(fanout_flags::SENDER_PAUSED)
            && conn.queued_cost() <= self.config.max_backpressure / 2
        {
            conn.clear(RECV_PAUSED);
            if !conn.has(RECV_ARMED) && !conn.has(ENDING) {
                self.arm_recv(key);
            }
        }
        self.receiver_sent(key);
        self.mark_dirty(key);
        self.try_release(key);
    }

    /// Pauses reading from a connection whose own replies pile up (a client that sends but does not
    /// read): TCP flow control then slows the client down.
    pub(super) fn check_backpressure(&mut self, key: usize) {
        self.deliver_run();
        let recv_ud = self.ud(key, Op::Recv);
        let conn = &mut self.conns[key];
        if conn.has(RECV_PAUSED)
            || conn.has(ENDING)
            || conn.queued_cost() <= self.config.max_backpressure
        {
            return;
        }
        conn.set(RECV_PAUSED);
        self.metrics.backpressure_pauses.inc();
        if conn.has(RECV_ARMED) {
            self.ring.cancel(
                recv_ud,
                UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
            );
        }
    }

    /// Submits sends (and shutdowns after the last send) for every connection touched in this batch.
    pub(super) fn flush_dirty(&mut self) {
        self.deliver_run();
        loop {
            let next = self.dirty.pop_marked(|key| {
                self.conns.get_mut(key).is_some_and(|conn| {
                    let marked = conn.has(DIRTY);
                    conn.clear(DIRTY);
                    marked
                })
            });
            let Some(key) = next else {
                break;
            };
            // Only a live, marked connection gets here (a released one's entry was skipped).
            self.flush_one(key);
        }
    }

    /// One touched connection at the end of a batch: drop its queues if it is aborting, else encrypt (TLS)
    /// and submit a send; once nothing is queued or in flight, the drained steps; then release if due.
    fn flush_one(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.has(FD_CLOSING) {
            return;
        }
        if conn.has(ABORT) {
            if !conn.send_in_flight() {
                self.give_queues_back(key);
            }
        } else {
            if self.conns[key].is_tls() {
                self.encrypt_queued(key);
            }
            self.submit_send(key);
        }
        let conn = &self.conns[key];
        if !conn.send_in_flight() && conn.queued_bytes() == 0 {
            self.after_drained(key);
        }
        self.try_release(key);
    }

    /// Submits one send of what the connection has ready (its ciphertext queue for TLS, else its queue),
    /// unless a send is in flight or nothing is queued.
    fn submit_send(&mut self, key: usize) {
        let send_ud = self.ud(key, Op::Send);
        let conn = &mut self.conns[key];
        if conn.tls_away() {
            // Its TLS state is on the handshake thread: what it makes is sent once it is back.
            return;
        }
        let file_index = conn.file_index;
        // A TLS 1.3 session ticket waits for the first plaintext, unless the connection is ending.
        let ending = conn.has(ENDING) || conn.has(SHUT_AFTER_FLUSH);
        let ready = match conn.tls_mut() {
            Some(tls) if tls.hold_output && !ending => None,
            Some(tls) => tls.out.as_mut(),
            None => conn.queue.as_mut(),
        };
        if let Some(queue) = ready {
            if !queue.send_in_flight() && !queue.is_empty() {
                self.ring.send_queue(file_index, queue, send_ud);
            }
        }
    }

    /// The connection's queues go back to the pool (an idle connection holds none).
    fn give_queues_back(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if let Some(queue) = conn.queue.take() {
            self.pool.give_queue(queue);
        }
        if let Some(queue) = conn.tls_mut().and_then(|tls| tls.out.take()) {
            self.pool.give_queue(queue);
        }
    }

    /// Everything queued is sent: give the queues back, shut the write side if asked (FIN after the last
    /// byte), and an ending connection stops reading too, so that it can be released.
    fn after_drained(&mut self, key: usize) {
        self.give_queues_back(key);
        let shutdown_ud = self.ud(key, Op::Shutdown);
        let conn = &mut self.conns[key];
        if conn.has(SHUT_AFTER_FLUSH)
            && !conn.has(WRITE_SHUT)
            && !conn.has(SHUTDOWN_IN_FLIGHT)
            && !conn.has(ABORT)
        {
            conn.set(WRITE_SHUT | SHUTDOWN_IN_FLIGHT);
            self.ring
                .shutdown(conn.file_index, libc::SHUT_WR, shutdown_ud);
        }
        let conn = &mut self.conns[key];
        if conn.has(ENDING)
            && !conn.has(ABORT)
            && conn.has(RECV_ARMED)
            && !conn.has(CANCEL_SENT)
            && !conn.has(SHUTDOWN_IN_FLIGHT)
        {
            conn.set(CANCEL_SENT);
            let recv_ud = self.ud(key, Op::Recv);
            self.ring.cancel(
                recv_ud,
                UserData::new(NO_CONNECTION, 0, Op::Ignore).encode(),
            );
        }
    }

    pub(super) fn live_open(&self, id: ConnId) -> Option<usize> {
        let key = id.key as usize;
        let conn = self.conns.get(key)?;
        (conn.generation == id.generation && conn.state == State::Open && !conn.has(CLOSE_SENT))
            .then_some(key)
    }

    pub(crate) fn send_message(&mut self, id: ConnId, kind: MessageKind, payload: &[u8]) -> bool {
        let Some(key) = self.live_open(id) else {
            return false;
        };
        if self.conns[key].has_fanout(fanout_flags::EVENT_STREAM) {
            if kind == MessageKind::Binary {
                return false;
            }
            self.metrics.messages_out.inc();
            self.metrics.bytes_out.add(payload.len() as u64);
            self.push_bytes(key, payload.len() + 16, |out| {
                write_data_event(out, payload)
            });
            return true;
        }
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        self.metrics.messages_out.inc();
        self.metrics.bytes_out.add(payload.len() as u64);
        let negotiated = self.conns[key].reader.deflate();
        if negotiated.is_on() && payload.len() >= self.config.compression.threshold {
            let compressed = if negotiated.server_context_takeover() {
                // The connection's own compressor, which keeps its window between messages.
                match self.conns[key].context_compressor(
                    &self.config.compression,
                    negotiated.compress_window_bits(),
                    &self.metrics,
                ) {
                    Some(compressor) => self.compressors.compress_context(compressor, payload),
                    None => false,
                }
            } else {
                self.compressors.compress(negotiated, payload)
            };
            let deflate = &self.metrics.deflate;
            if compressed {
                deflate.messages_out.inc();
                deflate.bytes[DEFLATE_OUT_PLAIN].add(payload.len() as u64);
                deflate.bytes[DEFLATE_OUT_COMPRESSED].add(self.compressors.out.len() as u64);
                // Moved out for the call (the queue is another part of `self`); its capacity comes back.
                let compressed = std::mem::take(&mut self.compressors.out);
                self.queue_frame_rsv1(key, opcode, &compressed, true);
                self.compressors.out = compressed;
                return true;
            }
            deflate.not_smaller.inc();
        }
        self.queue_frame(key, opcode, payload);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open_connection, test_core};
    use super::*;

    #[test]
    fn a_data_event_has_one_data_line_per_payload_line() {
        let event = |payload: &[u8]| {
            let mut out = Vec::new();
            write_data_event(&mut out, payload);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(event(b"{\"a\":1}"), "data: {\"a\":1}\n\n");
        assert_eq!(event(b""), "data: \n\n");
        assert_eq!(
            event(b"a\nb\r\nc\rd"),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(event(b"a\n"), "data: a\ndata: \n\n");
        let mut out = Vec::new();
        write_close_event(&mut out, CloseCode::GOING_AWAY, "server \"down\"");
        assert_eq!(
            out,
            b"event: close\ndata: {\"code\":1001,\"reason\":\"server \\\"down\\\"\"}\n\n"
        );
    }

    /// A busy worker answers a `/metrics` scrape now and then while its other connections' replies hold
    /// pooled buffers: however many scrapes, its pool's free buffers hold no more than those small
    /// replies needed. (A scrape that drew a small pooled buffer grew it to the page's size and the pool
    /// kept it: one more page-sized buffer for many of the scrapes.)
    #[test]
    fn large_http_answers_do_not_grow_pooled_buffers() {
        let mut core = test_core();
        let replies: Vec<usize> = (0..8).map(|i| open_connection(&mut core, i)).collect();
        let page = vec![b'#'; 14 * 1024];
        for round in 0..64 {
            // Replies queued on some connections (each takes a pooled buffer), a scrape meanwhile...
            let busy = &replies[..1 + round % replies.len()];
            for &key in busy {
                core.queue_frame(key, OpCode::Text, &[b'x'; 128]);
            }
            let scrape = open_connection(&mut core, 15);
            core.answer_http(scrape, |out| out.extend_from_slice(&page));
            let answer = core.conns[scrape]
                .queue
                .as_ref()
                .expect("the answer is queued");
            assert_eq!(answer.queued_bytes(), page.len());
            assert_eq!(answer.front(), Some(&page[..]));
            // ... then all of it sent and the queues given back, the replies' first.
            for &key in busy {
                core.give_queues_back(key);
            }
            core.give_queues_back(scrape);
            core.conns.remove(scrape);
        }
        let (buffers, _) = core.pool.pooled();
        assert!(buffers >= replies.len(), "the replies' buffers are pooled");
        assert!(
            core.pool.pooled_buffer_capacity() <= buffers * POOLED_ANSWER_MAX,
            "{} bytes in {buffers} pooled buffers",
            core.pool.pooled_buffer_capacity()
        );
    }
}
