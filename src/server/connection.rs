//! One connection's state: where it is in its life (handshake, open, closing), what is in flight on the
//! ring for it, its protocol reader and its send queue.
//!
//! Kept small on purpose (see `docs/ARCHITECTURE.md` for `size_of` and measured RSS): an idle open
//! connection holds no buffer, no queue and no timer besides its one wheel entry. This module must not
//! know how an operation is submitted; the worker drives it.

use std::sync::Arc;

use crate::protocol::deflate::{ContextCompressor, DeflateConfig, Inflater};
use crate::protocol::{MessageReader, Role};
use crate::reactor::SendQueue;

use super::metrics::WorkerMetrics;
use super::tls::TlsState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Waiting for (the rest of) the HTTP request.
    Handshake,
    /// WebSocket open.
    Open,
    /// A close frame or an HTTP answer was sent or received: draining, then the TCP close.
    Closing,
}

/// Flag bits of [`Connection::flags`].
///
/// Legal combinations, true whenever the worker is between two completions (checked by
/// [`Connection::broken_flag_rule`], after every completion in debug builds):
/// - `ABORT`, `CANCEL_SENT` and `FD_CLOSING` only on an `ENDING` connection, and `ENDING` only in
///   [`State::Closing`] (the teardown steps run in this order: `ENDING` -> cancels -> `FD_CLOSING` ->
///   released);
/// - `FD_CLOSING` with no receive armed, no shutdown and no send in flight (the close of the direct
///   descriptor is the last operation of a connection);
/// - `SHUTDOWN_IN_FLIGHT` only with `WRITE_SHUT`, and `WRITE_SHUT` only with `SHUT_AFTER_FLUSH` (FIN is
///   sent once, after the queue);
/// - `CLOSE_SENT`, `CLOSE_RECEIVED`, `DISCARD_INPUT` and `REJECTED` only in [`State::Closing`] (sending or
///   receiving a close frame, an error, or an HTTP answer leaves the open or handshake state at once);
/// - `WAITING_BODY` never in [`State::Open`] (it belongs to an HTTP request);
/// - [`fanout_flags::SENDER_PAUSED`] (in [`Connection::fanout`]) only with `RECV_PAUSED` (a sender paused for
///   its fanout reads nothing);
/// - [`fanout_flags::EVENT_STREAM`] never in [`State::Handshake`] and never with `SENDER_PAUSED` or
///   `HOLDS_INPUT` (an event stream sends nothing the worker reads).
///
/// `RECV_ARMED`, `RECV_PAUSED`, `AWAITING_PONG` and `DIRTY` combine freely with the others.
pub mod flags {
    /// A multishot receive is armed.
    pub const RECV_ARMED: u16 = 1 << 0;
    /// A shutdown(2) is in flight.
    pub const SHUTDOWN_IN_FLIGHT: u16 = 1 << 1;
    /// Our write side is shut (FIN sent after everything queued).
    pub const WRITE_SHUT: u16 = 1 << 2;
    /// We sent a close frame: nothing else may be sent.
    pub const CLOSE_SENT: u16 = 1 << 3;
    /// The peer's close frame arrived.
    pub const CLOSE_RECEIVED: u16 = 1 << 4;
    /// A server ping is waiting for any sign of life.
    pub const AWAITING_PONG: u16 = 1 << 5;
    /// Reads are paused: the send queue is over the backpressure cap.
    pub const RECV_PAUSED: u16 = 1 << 6;
    /// Shut the write side once the queue is flushed.
    pub const SHUT_AFTER_FLUSH: u16 = 1 << 7;
    /// The connection is ending: release it once nothing is in flight.
    pub const ENDING: u16 = 1 << 8;
    /// Ending without waiting for the queue to flush (cancel in-flight operations).
    pub const ABORT: u16 = 1 << 9;
    /// The close of the direct descriptor is in flight.
    pub const FD_CLOSING: u16 = 1 << 10;
    /// In the worker's list of connections to flush at the end of this batch.
    pub const DIRTY: u16 = 1 << 11;
    /// Input after a protocol error or an HTTP answer is read and dropped.
    pub const DISCARD_INPUT: u16 = 1 << 12;
    /// Cancels for in-flight operations were submitted.
    pub const CANCEL_SENT: u16 = 1 << 13;
    /// Refused at accept (answered 503 from the table's reserve): does not count against the limit.
    pub const REJECTED: u16 = 1 << 14;
    /// A `POST /publish` head arrived; waiting for the rest of its body (in `pending`).
    pub const WAITING_BODY: u16 = 1 << 15;
}

/// Flag bits of [`Connection::fanout`]: the connection as a broadcasting sender and as a receiver of
/// broadcasts (the sender budget, `server::worker::fanout`), and how its input is received.
pub mod fanout_flags {
    /// Reads are paused because this connection's broadcasts found most of its worker's receivers over the
    /// fanout budget (always with `RECV_PAUSED`); resumed by the worker, never by this connection.
    pub const SENDER_PAUSED: u8 = 1 << 0;
    /// As a receiver, it did not drain within a sender's pause: it no longer counts against any sender's
    /// fanout until it drains to half the fanout budget (the slow-consumer policy meets it instead).
    pub const SLOW_RECEIVER: u8 = 1 << 1;
    /// Input received while paused as a sender is kept (`Connection::take_held_input`) and read before
    /// anything received after it.
    pub const HOLDS_INPUT: u8 = 1 << 2;
    /// An event stream (`GET /sse`, Server-Sent Events) rather than a WebSocket: from its `200` on it is
    /// [`super::State::Open`] and gets stream bytes, never frames; its input is discarded. Set once, at
    /// its opening, for its whole life.
    pub const EVENT_STREAM: u8 = 1 << 3;
    /// Holds a frame of the fanout being timed (debug level only, `worker/fanout.rs`): cleared when its
    /// queue has drained, and then counted as delivered.
    pub const TIMED_DELIVERY: u8 = 1 << 4;
    /// Its input is taken one receive buffer per turn (`Ring::recv_once`), not by a multishot receive: it
    /// is assembling a message of a slice or more (`worker/inbound.rs`). Set when its multishot receive is
    /// cancelled for that, or a single receive armed; cleared when a multishot receive is armed again.
    pub const RECV_LIMITED: u8 = 1 << 5;
}

/// The rarely used parts of a connection, boxed together so that [`Connection`] stays small: a plain open
/// connection has none of them, nor does one with permessage-deflate agreed between messages (its
/// agreement is a byte in its reader).
#[derive(Default)]
struct Extras {
    /// The start of an HTTP request that did not fit one receive (handshake only).
    pending: Option<PendingRequest>,
    /// TLS state of a `wss://` connection (`None` for plain ones); `queue` then holds plaintext, encrypted
    /// at flush time into the ciphertext queue inside it.
    tls: Option<Box<TlsState>>,
    /// The TLS state is away on the worker's handshake thread (`worker::handshakes`): how many receives
    /// arrived meanwhile (they wait in the worker's backlog of first flights, behind it).
    tls_away: Option<u16>,
    /// WebSocket bytes that arrived while the connection was paused as a sender (the receive completions
    /// already waiting when its receive was cancelled), read in order once it resumes.
    held_input: Option<Vec<u8>>,
    /// The inflater of a compressed message that spans receives, from the worker's pool, only while that
    /// message is in progress.
    inflater: Option<HeldInflater>,
    /// The compressor of a connection that keeps the server's context (`--compression context`), from its
    /// first compressed message to its release.
    compressor: Option<HeldCompressor>,
}

/// A context-takeover connection's compressor, counted in the worker's `context_compressors` gauge for as
/// long as it lives (dropped with the connection).
struct HeldCompressor {
    compressor: ContextCompressor,
    metrics: Arc<WorkerMetrics>,
}

impl Drop for HeldCompressor {
    fn drop(&mut self) {
        self.metrics.deflate.context_compressors.sub(1);
    }
}

/// An inflater held by a connection, counted in the worker's `inflaters_held` gauge for as long as it is
/// held (given back when taken out, or dropped with the connection), like [`PendingRequest`].
struct HeldInflater {
    /// Always `Some` until `into_inner` takes it.
    inflater: Option<Box<Inflater>>,
    metrics: Arc<WorkerMetrics>,
}

impl HeldInflater {
    fn new(inflater: Box<Inflater>, metrics: &Arc<WorkerMetrics>) -> HeldInflater {
        metrics.deflate.inflaters_held.inc();
        HeldInflater {
            inflater: Some(inflater),
            metrics: Arc::clone(metrics),
        }
    }

    fn into_inner(mut self) -> Option<Box<Inflater>> {
        // Drop gives the gauge back.
        self.inflater.take()
    }
}

impl Drop for HeldInflater {
    fn drop(&mut self) {
        self.metrics.deflate.inflaters_held.sub(1);
    }
}

/// The bytes of an HTTP request kept across receives (a head not yet complete, or a head and part of its
/// body), counted in the worker's `request_memory` gauge by their heap capacity for as long as they are
/// kept: the count is given back when they are taken out, cleared, or dropped with the connection, so no
/// path that ends a connection can leak it.
struct PendingRequest {
    bytes: Vec<u8>,
    metrics: Arc<WorkerMetrics>,
}

impl PendingRequest {
    fn new(bytes: Vec<u8>, metrics: &Arc<WorkerMetrics>) -> PendingRequest {
        metrics.request_memory.add(bytes.capacity() as u64);
        PendingRequest {
            bytes,
            metrics: Arc::clone(metrics),
        }
    }

    fn into_bytes(mut self) -> Vec<u8> {
        // Drop gives back the (now zero) capacity left in `self`.
        let bytes = std::mem::take(&mut self.bytes);
        self.metrics.request_memory.sub(bytes.capacity() as u64);
        bytes
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        self.metrics
            .request_memory
            .sub(self.bytes.capacity() as u64);
    }
}

pub struct Connection {
    /// Frame reader (no buffer while idle).
    pub reader: MessageReader,
    /// Bytes waiting to be sent; `None` while nothing is queued (the box goes back to the pool).
    pub queue: Option<Box<SendQueue>>,
    /// What few connections use, in one box: `None` for a plain connection past its handshake.
    extras: Option<Box<Extras>>,
    /// Index of the connection's direct descriptor in the ring's fixed-file table (not its slab key).
    pub file_index: u32,
    /// Incarnation of this slab slot, carried in every `user_data`.
    pub generation: u32,
    /// Tick of the last received byte (the idle deadline follows it; every other deadline is the
    /// connection's timer-wheel entry itself, see `worker::timers::timer_action`).
    pub last_activity: u32,
    pub flags: u16,
    /// [`fanout_flags`] bits (in the padding after `flags`: no size cost).
    pub fanout: u8,
    pub state: State,
}

impl Connection {
    pub fn new(file_index: u32, generation: u32, now: u32) -> Connection {
        Connection {
            reader: MessageReader::new(Role::Server),
            queue: None,
            extras: None,
            file_index,
            generation,
            last_activity: now,
            flags: 0,
            fanout: 0,
            state: State::Handshake,
        }
    }

    #[inline]
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    #[inline]
    pub fn set(&mut self, flag: u16) {
        self.flags |= flag;
    }

    #[inline]
    pub fn clear(&mut self, flag: u16) {
        self.flags &= !flag;
    }

    #[inline]
    pub fn has_fanout(&self, flag: u8) -> bool {
        self.fanout & flag != 0
    }

    #[inline]
    pub fn set_fanout(&mut self, flag: u8) {
        self.fanout |= flag;
    }

    #[inline]
    pub fn clear_fanout(&mut self, flag: u8) {
        self.fanout &= !flag;
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Drops the box once nothing is in it.
    fn trim_extras(&mut self) {
        if self.extras.as_ref().is_some_and(|e| {
            e.pending.is_none()
                && e.tls.is_none()
                && e.tls_away.is_none()
                && e.held_input.is_none()
                && e.inflater.is_none()
                && e.compressor.is_none()
        }) {
            self.extras = None;
        }
    }

    /// The TLS state of a `wss://` connection.
    #[inline]
    pub fn tls(&self) -> Option<&TlsState> {
        self.extras.as_ref()?.tls.as_deref()
    }

    #[inline]
    pub fn tls_mut(&mut self) -> Option<&mut TlsState> {
        self.extras.as_mut()?.tls.as_deref_mut()
    }

    /// The plaintext queue and the TLS state at once (TLS encrypts from one into the other).
    pub fn queue_and_tls_mut(&mut self) -> (&mut Option<Box<SendQueue>>, Option<&mut TlsState>) {
        let tls = self.extras.as_mut().and_then(|e| e.tls.as_deref_mut());
        (&mut self.queue, tls)
    }

    /// Whether this is a `wss://` connection (its TLS state may be taken out for a call, or be away on
    /// the handshake thread).
    #[inline]
    pub fn is_tls(&self) -> bool {
        self.extras
            .as_ref()
            .is_some_and(|e| e.tls.is_some() || e.tls_away.is_some())
    }

    /// Whether the TLS state is away on the worker's handshake thread: nothing may be sent or processed
    /// for this connection until it is back ([`Self::tls_back`]).
    #[inline]
    pub fn tls_away(&self) -> bool {
        self.extras.as_ref().is_some_and(|e| e.tls_away.is_some())
    }

    /// Takes the TLS state out for the handshake thread; the connection stays a TLS one meanwhile.
    pub fn send_tls_away(&mut self) -> Option<Box<TlsState>> {
        let extras = self.extras.as_mut()?;
        let tls = extras.tls.take()?;
        extras.tls_away = Some(0);
        Some(tls)
    }

    /// A receive arrived while the TLS state is away (it waits in the worker's backlog).
    pub fn count_input_while_away(&mut self) {
        if let Some(count) = self.extras.as_mut().and_then(|e| e.tls_away.as_mut()) {
            *count = count.saturating_add(1);
        }
    }

    /// The TLS state is back from the handshake thread; returns the receives that arrived meanwhile.
    pub fn tls_back(&mut self, tls: Box<TlsState>) -> u16 {
        let extras = self.extras_mut();
        extras.tls = Some(tls);
        extras.tls_away.take().unwrap_or(0)
    }

    /// Takes the TLS state out for a call that also needs the worker (put it back with [`Self::put_tls`]).
    pub fn take_tls(&mut self) -> Option<Box<TlsState>> {
        self.extras.as_mut()?.tls.take()
    }

    pub fn put_tls(&mut self, tls: Box<TlsState>) {
        self.extras_mut().tls = Some(tls);
    }

    /// The start of a request kept from earlier receives (no longer counted in `request_memory`).
    pub fn take_pending(&mut self) -> Option<Vec<u8>> {
        let pending = self.extras.as_mut()?.pending.take();
        self.trim_extras();
        pending.map(PendingRequest::into_bytes)
    }

    pub fn has_pending(&self) -> bool {
        self.extras.as_ref().is_some_and(|e| e.pending.is_some())
    }

    /// Keeps the start of a request for the next receive, its capacity counted in `metrics.request_memory`
    /// until it is taken, cleared or dropped (the worker checks its budget before).
    pub fn set_pending(&mut self, bytes: Vec<u8>, metrics: &Arc<WorkerMetrics>) {
        self.extras_mut().pending = Some(PendingRequest::new(bytes, metrics));
    }

    pub fn clear_pending(&mut self) {
        if let Some(extras) = self.extras.as_mut() {
            extras.pending = None;
        }
        self.trim_extras();
    }

    /// Keeps input that arrived while paused as a sender, after what is kept already.
    pub fn hold_input(&mut self, bytes: &[u8]) {
        self.set_fanout(fanout_flags::HOLDS_INPUT);
        self.extras_mut()
            .held_input
            .get_or_insert_with(Vec::new)
            .extend_from_slice(bytes);
    }

    /// The input kept by [`Self::hold_input`], taken out (`HOLDS_INPUT` stays set until it is read:
    /// give back what is left with [`Self::unread_held_input`], or clear the flag).
    pub fn take_held_input(&mut self) -> Option<Vec<u8>> {
        let held = self.extras.as_mut()?.held_input.take();
        self.trim_extras();
        held
    }

    /// Puts back the unread rest of the kept input.
    pub fn unread_held_input(&mut self, rest: Vec<u8>) {
        self.extras_mut().held_input = Some(rest);
    }

    /// The inflater of this connection's compressed message in progress, taken out for a feed (no longer
    /// counted in `inflaters_held`).
    pub fn take_inflater(&mut self) -> Option<Box<Inflater>> {
        let held = self.extras.as_mut()?.inflater.take();
        self.trim_extras();
        held.and_then(HeldInflater::into_inner)
    }

    /// Whether an inflater of a compressed message in progress is held.
    pub fn holds_inflater(&self) -> bool {
        self.extras.as_ref().is_some_and(|e| e.inflater.is_some())
    }

    /// Keeps the inflater of a compressed message that continues in a later receive, counted in
    /// `metrics.deflate.inflaters_held` until it is taken or dropped with the connection.
    pub fn hold_inflater(&mut self, inflater: Box<Inflater>, metrics: &Arc<WorkerMetrics>) {
        self.extras_mut().inflater = Some(HeldInflater::new(inflater, metrics));
    }

    /// This connection's own compressor (context takeover), made on first use with `config`'s level and
    /// memory level and the agreed `window_bits`, counted in `metrics.deflate.context_compressors` until the
    /// connection is dropped. `None` when zlib cannot make one (out of memory): the message goes plain.
    pub fn context_compressor(
        &mut self,
        config: &DeflateConfig,
        window_bits: u8,
        metrics: &Arc<WorkerMetrics>,
    ) -> Option<&mut ContextCompressor> {
        let extras = self.extras_mut();
        if extras.compressor.is_none() {
            match ContextCompressor::new(config.level, window_bits, config.context_mem_level) {
                Ok(compressor) => {
                    metrics.deflate.context_compressors.inc();
                    extras.compressor = Some(HeldCompressor {
                        compressor,
                        metrics: Arc::clone(metrics),
                    });
                }
                Err(_) => {
                    self.trim_extras();
                    return None;
                }
            }
        }
        self.extras
            .as_mut()
            .and_then(|e| e.compressor.as_mut())
            .map(|held| &mut held.compressor)
    }

    /// The first rule of [`flags`] this connection breaks, if any.
    pub fn broken_flag_rule(&self) -> Option<&'static str> {
        use flags::*;
        let closing = self.state == State::Closing;
        let rules: [(bool, &'static str); 12] = [
            (
                !self.has(ENDING) && self.has(ABORT | CANCEL_SENT | FD_CLOSING),
                "ABORT, CANCEL_SENT or FD_CLOSING without ENDING",
            ),
            (self.has(ENDING) && !closing, "ENDING outside Closing"),
            (
                self.has(FD_CLOSING) && self.has(RECV_ARMED | SHUTDOWN_IN_FLIGHT),
                "FD_CLOSING with a receive or shutdown in flight",
            ),
            (
                self.has(FD_CLOSING) && self.send_in_flight(),
                "FD_CLOSING with a send in flight",
            ),
            (
                self.has(SHUTDOWN_IN_FLIGHT) && !self.has(WRITE_SHUT),
                "SHUTDOWN_IN_FLIGHT without WRITE_SHUT",
            ),
            (
                self.has(WRITE_SHUT) && !self.has(SHUT_AFTER_FLUSH),
                "WRITE_SHUT without SHUT_AFTER_FLUSH",
            ),
            (
                self.has(CLOSE_SENT | CLOSE_RECEIVED) && !closing,
                "a close frame sent or received outside Closing",
            ),
            (
                self.has(DISCARD_INPUT) && !closing,
                "DISCARD_INPUT outside Closing",
            ),
            (self.has(REJECTED) && !closing, "REJECTED outside Closing"),
            (
                self.has_fanout(fanout_flags::SENDER_PAUSED) && !self.has(RECV_PAUSED),
                "SENDER_PAUSED without RECV_PAUSED",
            ),
            (
                self.has(WAITING_BODY) && self.state == State::Open,
                "WAITING_BODY on an open connection",
            ),
            (
                self.has_fanout(fanout_flags::EVENT_STREAM)
                    && (self.state == State::Handshake
                        || self
                            .has_fanout(fanout_flags::SENDER_PAUSED | fanout_flags::HOLDS_INPUT)),
                "EVENT_STREAM in the handshake or paused as a sender",
            ),
        ];
        rules
            .into_iter()
            .find_map(|(broken, rule)| broken.then_some(rule))
    }

    pub fn send_in_flight(&self) -> bool {
        match self.tls() {
            None => self.queue.as_ref().is_some_and(|q| q.send_in_flight()),
            Some(tls) => tls.send_in_flight(),
        }
    }

    /// Bytes queued and not yet sent (for TLS: plaintext not yet encrypted plus ciphertext not yet sent).
    pub fn queued_bytes(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.queued_bytes())
            + self.tls().map_or(0, |t| t.queued_bytes())
    }

    /// The memory its send queues hold (what `--max-backpressure` counts; see `SendQueue::queued_cost`):
    /// for TLS, the plaintext queue plus the ciphertext queue.
    pub fn queued_cost(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.queued_cost())
            + self
                .tls()
                .and_then(|t| t.out.as_ref())
                .map_or(0, |q| q.queued_cost())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented bound (docs/ARCHITECTURE.md, "Memory per idle connection"): a connection, with its
    /// reader (32 bytes, its assembly buffer boxed), its queue pointer and the one box of rarely used parts,
    /// is 64 bytes (80 while the reader held its assembly `Vec` inline, 88 while the connection kept the
    /// tick its state started and its timer entry's due tick, now the wheel's), and its slab entry is no
    /// larger (the entry's tag lives in a niche of the connection).
    #[test]
    fn connection_is_small() {
        let size = std::mem::size_of::<Connection>();
        println!(
            "size_of::<Connection>() = {size}, MessageReader = {}",
            std::mem::size_of::<MessageReader>()
        );
        assert_eq!(size, 64);
        let mut slab = slab::Slab::with_capacity(2);
        let first = slab.insert(Connection::new(0, 1, 0));
        let second = slab.insert(Connection::new(1, 2, 0));
        let stride =
            std::ptr::addr_of!(slab[second]) as usize - std::ptr::addr_of!(slab[first]) as usize;
        assert_eq!(stride, size, "a slab entry is the connection's size");
    }

    #[test]
    fn the_extras_box_exists_only_while_something_is_in_it() {
        let metrics = Arc::new(WorkerMetrics::default());
        let mut conn = Connection::new(3, 1, 0);
        assert!(conn.extras.is_none() && !conn.has_pending() && !conn.is_tls());
        conn.set_pending(b"GET / HT".to_vec(), &metrics);
        assert!(conn.has_pending() && conn.extras.is_some());
        let mut pending = conn.take_pending().expect("kept");
        assert!(conn.extras.is_none(), "an empty box is dropped");
        pending.extend_from_slice(b"TP/1.1\r\n");
        conn.set_pending(pending, &metrics);
        conn.clear_pending();
        assert!(conn.extras.is_none() && conn.take_pending().is_none());
        // Input held while paused as a sender: kept in order, and the box goes once it is taken.
        conn.hold_input(b"ab");
        conn.hold_input(b"cd");
        assert!(conn.has_fanout(fanout_flags::HOLDS_INPUT));
        let held = conn.take_held_input().expect("kept");
        assert_eq!(held, b"abcd");
        assert!(conn.extras.is_none(), "an empty box is dropped");
        conn.unread_held_input(held[2..].to_vec());
        assert_eq!(conn.take_held_input().as_deref(), Some(&b"cd"[..]));
    }

    /// Kept request bytes count their capacity (not their length) while kept, and every way out gives it
    /// back: taken, cleared, or dropped with the connection.
    #[test]
    fn kept_request_bytes_are_counted_by_capacity_until_released() {
        let metrics = Arc::new(WorkerMetrics::default());
        let held = || metrics.request_memory.get();
        let mut conn = Connection::new(3, 1, 0);
        let mut bytes = Vec::with_capacity(1000);
        bytes.extend_from_slice(b"POST /publish HTTP/1.1\r\n");
        conn.set_pending(bytes, &metrics);
        assert_eq!(held(), 1000);
        let mut bytes = conn.take_pending().unwrap();
        assert_eq!(held(), 0, "taken out: no longer counted");
        bytes.reserve_exact(5000 - bytes.len());
        let capacity = bytes.capacity() as u64;
        conn.set_pending(bytes, &metrics);
        assert_eq!(held(), capacity);
        conn.clear_pending();
        assert_eq!(held(), 0, "cleared");
        let mut other = Connection::new(4, 1, 0);
        conn.set_pending(Vec::with_capacity(300), &metrics);
        other.set_pending(Vec::with_capacity(200), &metrics);
        assert_eq!(held(), 500);
        drop(conn);
        assert_eq!(held(), 200, "dropped with its connection");
        drop(other);
        assert_eq!(held(), 0);
    }

    #[test]
    fn each_flag_rule_is_checked() {
        use flags::*;
        let at = |state: State, bits: u16| {
            let mut conn = Connection::new(0, 1, 0);
            conn.state = state;
            conn.flags = bits;
            conn.broken_flag_rule()
        };
        // Legal: a fresh connection, an open one reading and paused, a full teardown in order.
        assert_eq!(at(State::Handshake, 0), None);
        assert_eq!(
            at(
                State::Open,
                RECV_ARMED | RECV_PAUSED | AWAITING_PONG | DIRTY
            ),
            None
        );
        assert_eq!(
            at(
                State::Closing,
                CLOSE_SENT
                    | CLOSE_RECEIVED
                    | SHUT_AFTER_FLUSH
                    | WRITE_SHUT
                    | ENDING
                    | CANCEL_SENT
                    | FD_CLOSING
            ),
            None
        );
        assert_eq!(at(State::Handshake, WAITING_BODY | RECV_ARMED), None);
        assert_eq!(
            at(State::Closing, REJECTED | DISCARD_INPUT | SHUT_AFTER_FLUSH),
            None
        );
        // Each rule broken on its own.
        let broken = [
            (State::Closing, ABORT),
            (State::Closing, CANCEL_SENT),
            (State::Open, ENDING),
            (State::Closing, ENDING | FD_CLOSING | RECV_ARMED),
            (
                State::Closing,
                ENDING | FD_CLOSING | SHUT_AFTER_FLUSH | WRITE_SHUT | SHUTDOWN_IN_FLIGHT,
            ),
            (State::Closing, SHUTDOWN_IN_FLIGHT),
            (State::Closing, WRITE_SHUT),
            (State::Open, CLOSE_SENT),
            (State::Handshake, CLOSE_RECEIVED),
            (State::Open, DISCARD_INPUT),
            (State::Handshake, REJECTED),
            (State::Open, WAITING_BODY),
        ];
        for (state, bits) in broken {
            assert!(at(state, bits).is_some(), "{state:?} {bits:#06x} passed");
        }
        let mut sender = Connection::new(0, 1, 0);
        sender.state = State::Open;
        sender.flags = RECV_PAUSED;
        sender.set_fanout(fanout_flags::SENDER_PAUSED | fanout_flags::SLOW_RECEIVER);
        assert_eq!(sender.broken_flag_rule(), None);
        sender.clear(RECV_PAUSED);
        assert!(
            sender.broken_flag_rule().is_some(),
            "SENDER_PAUSED without RECV_PAUSED passed"
        );
    }
}
