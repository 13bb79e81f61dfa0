//! The `Handler` trait: what an application does with the messages of its connections, and the `Ctx` it
//! acts through (send, close, broadcast).
//!
//! One handler value lives on each worker thread (created there by the server's factory), so it needs no
//! lock and need not be `Send`. Handlers run on the hot path: they must not block, sleep or make
//! syscalls; everything they send goes through the worker's queues and ring.

use crate::protocol::{CloseCode, MessageKind};

use super::shared_message::SharedMessage;
use super::worker::Core;

/// Identifies one connection of one worker: its slab key and the generation of that slot. An id kept
/// after the connection closed is recognised as stale (the slot's generation moved on) and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) key: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// The slab key (unique among this worker's open connections).
    pub fn key(self) -> u32 {
        self.key
    }
}

/// What an application implements. The built-in modes (`echo`, `broadcast`) implement it in `app`.
pub trait Handler: 'static {
    /// A WebSocket connection completed its opening handshake on `path` (with its query string).
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, path: &str) {
        let _ = (ctx, conn, path);
    }

    /// A complete text or binary message (reassembled if it was fragmented; text is valid UTF-8).
    /// `payload` is only borrowed for the call.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, payload: &[u8]);

    /// The connection left the open state: `code` is the peer's close code (`None` for a close without
    /// a code, `Some(CloseCode::ABNORMAL)` when the connection was lost or ended without a close frame,
    /// or the code the server closed with). No message can be sent to it any more.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, code: Option<CloseCode>) {
        let _ = (ctx, conn, code);
    }

    /// A message published on `topic` (by [`Ctx::publish`] on any worker, by `POST /publish`, or by
    /// `ServerHandle::publish`), already encoded once: queue it to this worker's subscribers with
    /// [`Ctx::send_shared`] (a reference each, no copy; each connection gets the form it negotiated).
    /// Called on every worker, in publish order.
    fn on_published(&mut self, ctx: &mut Ctx<'_>, topic: &str, message: &SharedMessage) {
        let _ = (ctx, topic, message);
    }
}

/// The handler's view of its worker: send to, close and broadcast to connections.
pub struct Ctx<'a> {
    pub(crate) core: &'a mut Core,
}

impl Ctx<'_> {
    /// Queues one message to `conn`. Returns false if the connection is no longer open.
    pub fn send(&mut self, conn: ConnId, kind: MessageKind, payload: &[u8]) -> bool {
        self.core.send_message(conn, kind, payload)
    }

    /// Starts the closing handshake with `code` and `reason` (truncated to fit a control frame).
    pub fn close(&mut self, conn: ConnId, code: CloseCode, reason: &str) {
        self.core.close_connection(conn, code, reason);
    }

    /// Sends one message to every open connection of every worker (except `except`): the frame is
    /// encoded once and shared by every send queue.
    pub fn broadcast(&mut self, kind: MessageKind, payload: &[u8], except: Option<ConnId>) {
        self.core.broadcast(kind, payload, except);
    }

    /// Publishes one message on `topic` to every worker's handler (`on_published`, this worker's after
    /// the current call): the frame is encoded once.
    pub fn publish(&mut self, topic: &str, kind: MessageKind, payload: &[u8]) {
        self.core.publish(topic, kind, payload);
    }

    /// Queues an already encoded, shared message (from `on_published`) to `conn`, applying the
    /// slow-consumer policy. Returns whether it was queued.
    pub fn send_shared(&mut self, conn: ConnId, message: &SharedMessage) -> bool {
        self.core.send_shared(conn, message)
    }

    /// This worker's index.
    pub fn worker(&self) -> usize {
        self.core.index
    }

    /// Number of connections this worker holds (any state).
    pub fn connections(&self) -> usize {
        self.core.conns.len()
    }
}
