//! The `Handler` trait: what an application does with the upgrade requests and messages of its
//! connections, and the `Ctx` it acts through (send, close, broadcast, publish).
//!
//! One handler value lives on each worker thread (created there by the server's factory), so it needs no
//! lock and need not be `Send`. Handlers run on the hot path: they must not block, sleep or make
//! syscalls; everything they send goes through the worker's queues and ring.

use std::borrow::Cow;
use std::sync::Arc;

use crate::channels::{History, Position, Presence};

use crate::protocol::handshake::Request;
use crate::protocol::{CloseCode, MessageKind};

use super::inbox::Fetched;
pub use super::metrics::AuthFailure;
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

/// A WebSocket upgrade request that passed the protocol's checks (method, version, key, origin), or an
/// event-stream request (`GET /sse`, [`UpgradeRequest::is_event_stream`]), shown to
/// [`Handler::on_upgrade`] before the server answers 101 (or 200).
pub struct UpgradeRequest<'r> {
    pub(crate) request: &'r Request<'r>,
    pub(crate) subprotocol: Option<&'r str>,
    pub(crate) event_stream: bool,
}

impl<'r> UpgradeRequest<'r> {
    /// The request target with its query string (`/chat?room=a`).
    pub fn path(&self) -> &'r str {
        self.request.path()
    }

    /// The request target without its query string.
    pub fn path_only(&self) -> &'r str {
        self.request.path_only()
    }

    /// The first value of query parameter `name`, undecoded.
    pub fn query_param<'s>(&'s self, name: &'s str) -> Option<&'s str> {
        super::http::query_param(self.request.path(), name)
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'r [u8]> {
        self.request.header(name)
    }

    /// Every header, in request order.
    pub fn headers(&self) -> impl Iterator<Item = (&'r str, &'r [u8])> + '_ {
        self.request.headers()
    }

    /// The subprotocol the server will answer with, if any (never for an event stream).
    pub fn subprotocol(&self) -> Option<&'r str> {
        self.subprotocol
    }

    /// Whether this asks for an event stream (`GET /sse`, Server-Sent Events: receive-only, offered only
    /// by a handler whose [`Handler::serves_event_streams`] is true) rather than a WebSocket.
    pub fn is_event_stream(&self) -> bool {
        self.event_stream
    }
}

/// A handler's answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeDecision {
    /// Answer 101 and open the connection.
    Accept,
    /// Answer `status` (400-599; anything else is sent as 403) with `reason` as a one-line text body, and
    /// close. Nothing is allocated for the connection; counted in `ringws_handshake_failures_total` with
    /// `reason="handler"`.
    Refuse {
        status: u16,
        reason: Cow<'static, str>,
    },
    /// Answer `401 Unauthorized` with `WWW-Authenticate: Bearer` and the failure's one-line reason, and
    /// close (a bearer token was missing or not valid). Nothing is allocated for the connection; counted
    /// in `ringws_auth_failures_total{reason}` (not in `ringws_handshake_failures_total`).
    Unauthorized(AuthFailure),
}

/// What an application implements. The built-in modes (`echo`, `broadcast`, `pubsub`) implement it in
/// `app`.
pub trait Handler: 'static {
    /// Whether `GET /sse` opens an event stream (Server-Sent Events) for this handler (else it is an
    /// unknown path, 404). An event stream goes through [`Handler::on_upgrade`] (with
    /// [`UpgradeRequest::is_event_stream`]) and [`Handler::on_open`] like a WebSocket and is open until
    /// it closes; the handler writes whole events to it with [`Ctx::send`] (each payload becomes one
    /// `data:` event) and [`Ctx::send_shared`] (a message made with [`SharedMessage::stream`]); what its
    /// client sends is discarded. Asked once, when the worker starts.
    fn serves_event_streams(&self) -> bool {
        false
    }

    /// A WebSocket upgrade request passed the protocol's checks: accept it (the default) or refuse it with
    /// an HTTP status before the 101 (authentication, path routing). Runs on the worker's thread; it must
    /// not block.
    fn on_upgrade(&mut self, request: &UpgradeRequest<'_>) -> UpgradeDecision {
        let _ = request;
        UpgradeDecision::Accept
    }

    /// A WebSocket connection completed its opening handshake on `path` (with its query string).
    ///
    /// When it is called, it follows the `on_upgrade` of the same request directly, on the same thread,
    /// with no other handler call in between (an accepted upgrade may still be refused for capacity, and
    /// then no `on_open` follows). A handler can so keep what `on_upgrade` learnt (an authenticated
    /// user) in one field of its own and take it here; the next `on_upgrade` overwrites it.
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

    /// Called on every tick of the worker's timer wheel (every 10 to 100 ms, a quarter of the shortest
    /// timeout): for the handler's own deadlines (a token's expiry). It must cost next to nothing when
    /// nothing is due.
    fn on_tick(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// A message published on `topic` (by [`Ctx::publish`] on any worker, by `POST /publish`, or by
    /// `ServerHandle::publish`), already encoded once: queue it to this worker's subscribers with
    /// [`Ctx::send_shared`] (a reference each, no copy; each connection gets the form it negotiated).
    /// Called on every worker, in publish order.
    fn on_published(&mut self, ctx: &mut Ctx<'_>, topic: &str, message: &SharedMessage) {
        let _ = (ctx, topic, message);
    }

    /// The answer to a history fetch this handler asked for with [`Ctx::fetch`] (across nodes, from
    /// Redis), after every publication this worker received before it.
    fn on_fetched(&mut self, ctx: &mut Ctx<'_>, fetched: Fetched) {
        let _ = (ctx, fetched);
    }
}

/// The handler's view of its worker: send to, close and broadcast to connections.
pub struct Ctx<'a> {
    pub(crate) core: &'a mut Core,
}

impl Ctx<'_> {
    /// Queues one message to `conn`. Returns false if the connection is no longer open. To an event stream
    /// ([`Ctx::is_event_stream`]) a text message goes as one event, `data: ` before each of its lines and a
    /// blank line after it; a binary one is not sent (false).
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
    /// the current call): the frame is encoded once. With the node's history (`ServerConfig::history`),
    /// returns the offset and epoch the publication got.
    pub fn publish(&mut self, topic: &str, kind: MessageKind, payload: &[u8]) -> Option<Position> {
        self.core.publish(topic, kind, payload)
    }

    /// Publishes a presence event (a text message) on `topic` to every worker's handler of this node
    /// (`on_published`, with [`SharedMessage::is_event`]); not kept in history.
    pub fn publish_event(&mut self, topic: &str, payload: &[u8]) {
        self.core.publish_event(topic, payload);
    }

    /// Encodes a message once for sending to several connections with [`Ctx::send_shared`]
    /// (compressed too where the server's compression applies).
    pub fn encode(&mut self, kind: MessageKind, payload: &[u8]) -> SharedMessage {
        self.core.encode_shared(kind, payload)
    }

    /// The server's cap on bytes queued to one connection (`--max-backpressure`): a handler that queues
    /// many messages at once to one connection (a replay) keeps well under it.
    pub fn max_backpressure(&self) -> usize {
        self.core.max_backpressure()
    }

    /// Asks the node's broker (`--broker` with history) for `topic`'s position in Redis and its
    /// publications after `after` (`None`: the position only), for `conn`: the answer comes to
    /// [`Handler::on_fetched`] with `tag`. Returns `false` when it was not asked (no broker with history,
    /// or its queue is full): then no answer comes.
    pub fn fetch(&mut self, conn: ConnId, topic: &str, after: Option<u64>, tag: u64) -> bool {
        self.core.fetch(conn, topic, after, tag, false)
    }

    /// Asks the node's broker (`--broker` with presence) for every member of `topic` on every node, for
    /// `conn`: the answer (`FetchedPage::members`) comes to [`Handler::on_fetched`] with `tag`. `false`:
    /// not asked, no answer comes.
    pub fn fetch_presence(&mut self, conn: ConnId, topic: &str, tag: u64) -> bool {
        self.core.fetch(conn, topic, None, tag, true)
    }

    /// Whether presence is shared across nodes (`--broker` with presence).
    pub fn presence_across_nodes(&self) -> bool {
        self.core.shared.broker.is_some() && self.core.shared.presence.is_some()
    }

    /// This node's name among the broker's nodes (16 hex digits), if it has a broker.
    pub fn node_name(&self) -> Option<String> {
        self.core
            .shared
            .broker
            .as_ref()
            .map(|broker| crate::broker::presence::node_name(broker.node()))
    }

    /// Across nodes: a member joined (`member`: its JSON) or left `topic`; `event` (its JSON text) goes to
    /// the other nodes' watchers. Nothing without a broker.
    pub(crate) fn presence_to_nodes(
        &mut self,
        topic: &str,
        client: &str,
        member: Option<&str>,
        event: &[u8],
    ) {
        if let Some(broker) = &self.core.shared.broker {
            let client: Arc<str> = Arc::from(client);
            let op = match member {
                Some(member) => crate::broker::presence::PresenceOp::Join {
                    client,
                    member: Arc::from(member),
                },
                None => crate::broker::presence::PresenceOp::Leave { client },
            };
            broker.presence(&Arc::from(topic), op, event);
        }
    }

    /// Whether publications get their offsets across nodes (`--broker` with history): the node's history
    /// is then a mirror of Redis's, and a position it has not seen must be fetched.
    pub fn history_across_nodes(&self) -> bool {
        self.core.shared.broker.is_some() && self.core.shared.history.is_some()
    }

    /// The node's per-topic history, if the server keeps one (`ServerConfig::history`).
    pub fn history(&self) -> Option<&Arc<History<SharedMessage>>> {
        self.core.shared.history.as_ref()
    }

    /// The node's per-topic presence, if the server keeps it (`ServerConfig::presence`).
    pub fn presence(&self) -> Option<&Arc<Presence>> {
        self.core.shared.presence.as_ref()
    }

    /// Queues an already encoded, shared message (from `on_published`) to `conn`, applying the
    /// slow-consumer policy. Returns whether it was queued.
    pub fn send_shared(&mut self, conn: ConnId, message: &SharedMessage) -> bool {
        self.core.send_shared(conn, message)
    }

    /// Whether `conn` is an event stream (`GET /sse`) rather than a WebSocket.
    pub fn is_event_stream(&self, conn: ConnId) -> bool {
        self.core.is_event_stream(conn)
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
